//! `calicoctl profile ...` with the real binary on both datastores: defaults of a new profile,
//! tags, rules by position and by their words, JSON out and in, removal refused while an
//! endpoint uses the profile, and malformed input refused clearly with nothing changed.

use calico_tests::Backend;
use datastore::Op;

fn state(backend: &Backend, p: &str) -> (String, String) {
    let rules = backend.ctl(&["profile", p, "rule", "json"]);
    let tags = backend.ctl(&["profile", p, "tag", "show"]);
    (rules.success().stdout.clone(), tags.success().stdout.clone())
}

#[test]
fn profile_commands_on_both_datastores() {
    for backend in Backend::all() {
        let name = backend.name();
        let ctl = |args: &[&str]| backend.ctl(args);
        ctl(&["pool", "add", "10.74.0.0/24"]).success();

        // Defaults, as Calico made them.
        assert!(ctl(&["profile", "add", "WEB"]).success().stdout.contains("Created profile WEB"));
        let again = ctl(&["profile", "add", "WEB"]);
        assert!(!again.ok() && again.stderr.contains("already exists"), "[{name}] {again:#?}");
        let show = ctl(&["profile", "WEB", "rule", "show"]);
        assert_eq!(
            show.success().stdout,
            "Inbound rules:\n   1 allow from tag WEB\nOutbound rules:\n   1 allow\n",
            "[{name}]"
        );
        assert_eq!(ctl(&["profile", "WEB", "tag", "show"]).stdout, "WEB\n");
        assert!(!ctl(&["profile", "add", "a/b"]).ok(), "[{name}] a bad profile name");

        // Tags.
        ctl(&["profile", "WEB", "tag", "add", "frontend"]).success();
        assert_eq!(ctl(&["profile", "WEB", "tag", "show"]).stdout, "WEB\nfrontend\n");
        ctl(&["profile", "WEB", "tag", "remove", "frontend"]).success();
        let absent = ctl(&["profile", "WEB", "tag", "remove", "frontend"]);
        assert!(!absent.ok() && absent.stderr.contains("not in profile WEB"), "[{name}] {absent:#?}");

        // Rules: appended, inserted at a position, removed by words and by position.
        ctl(&["profile", "WEB", "rule", "add", "inbound", "allow", "tcp", "to", "ports", "80,443"]).success();
        ctl(&["profile", "WEB", "rule", "add", "inbound", "--at=1", "deny", "tcp", "from", "cidr", "10.0.0.0/8"])
            .success();
        ctl(&["profile", "WEB", "rule", "add", "outbound", "--at", "1", "deny", "icmp", "type", "8"]).success();
        let show = ctl(&["profile", "WEB", "rule", "show"]);
        assert_eq!(
            show.stdout,
            "Inbound rules:\n   1 deny tcp from cidr 10.0.0.0/8\n   2 allow from tag WEB\n   3 allow tcp to ports 80,443\n\
             Outbound rules:\n   1 deny icmp type 8\n   2 allow\n",
            "[{name}]"
        );
        ctl(&["profile", "WEB", "rule", "remove", "inbound", "allow", "tcp", "to", "ports", "80,443"]).success();
        ctl(&["profile", "WEB", "rule", "remove", "outbound", "--at=1"]).success();
        let show = ctl(&["profile", "WEB", "rule", "show"]);
        assert_eq!(
            show.stdout,
            "Inbound rules:\n   1 deny tcp from cidr 10.0.0.0/8\n   2 allow from tag WEB\nOutbound rules:\n   1 allow\n",
            "[{name}]"
        );

        // The stored document is Calico's.
        let store = backend.open();
        let raw = store.get(&model::keys::profile_rules("WEB")).unwrap().expect("rules key");
        let doc: serde_json::Value = serde_json::from_slice(&raw.value).unwrap();
        assert_eq!(
            doc["inbound_rules"][0],
            serde_json::json!({"action": "deny", "protocol": "tcp", "src_net": "10.0.0.0/8"})
        );

        // Malformed input: a clear error, exit != 0, nothing changed.
        let before = state(&backend, "WEB");
        for (args, says) in [
            (&["profile", "WEB", "rule", "add", "inbound", "allow", "tcp", "to", "ports", "70000"][..], "invalid port"),
            (&["profile", "WEB", "rule", "add", "inbound", "allow", "icmp", "to", "ports", "80"][..], "ports need tcp"),
            (&["profile", "WEB", "rule", "add", "inbound", "allow", "from", "tag", "no/pe"][..], "invalid tag name"),
            (&["profile", "WEB", "rule", "add", "inbound", "--at=9", "allow"][..], "out of range"),
            (&["profile", "WEB", "rule", "add", "inbound", "--at=0", "allow"][..], "out of range"),
            (&["profile", "WEB", "rule", "add", "sideways", "allow"][..], "inbound or outbound"),
            (&["profile", "WEB", "rule", "remove", "inbound", "--at=5"][..], "out of range"),
            (&["profile", "WEB", "rule", "remove", "inbound", "allow", "udp"][..], "has no inbound rule"),
            (&["profile", "WEB", "tag", "add", "bad tag"][..], "invalid tag name"),
            (&["profile", "NOPE", "rule", "show"][..], "Profile NOPE not found"),
        ] {
            let out = ctl(args);
            assert!(!out.ok() && out.stderr.contains(says), "[{name}] {args:?}: {out:#?}");
            assert!(!out.stderr.contains("panicked"), "[{name}] {args:?}: {out:#?}");
        }
        let bad_json = backend.ctl_stdin(
            &["profile", "WEB", "rule", "update"],
            r#"{"inbound_rules":[{"protocol":"icmp","dst_ports":[1]}]}"#,
        );
        assert!(!bad_json.ok() && bad_json.stderr.contains("inbound rule 1"), "[{name}] {bad_json:#?}");
        let not_json = backend.ctl_stdin(&["profile", "WEB", "rule", "update"], "{");
        assert!(!not_json.ok(), "[{name}] {not_json:#?}");
        assert_eq!(state(&backend, "WEB"), before, "[{name}] a refused change changed the profile");

        // JSON out, edited, and back in.
        let json = ctl(&["profile", "WEB", "rule", "json"]).json();
        let mut rules = json.clone();
        rules["outbound_rules"] =
            serde_json::json!([{"action": "deny", "protocol": "udp", "dst_ports": ["53:54"]}, {"action": "allow"}]);
        backend.ctl_stdin(&["profile", "WEB", "rule", "update"], &rules.to_string()).success();
        let show = ctl(&["profile", "WEB", "rule", "show"]);
        assert!(
            show.stdout.ends_with("Outbound rules:\n   1 deny udp to ports 53:54\n   2 allow\n"),
            "[{name}] {show:#?}"
        );

        // Removal is refused while an endpoint uses the profile, and names it.
        ctl(&["profile", "add", "DB"]).success();
        let ep = serde_json::json!({"node": "node-1", "orchestrator": "cni", "workload_id": "w1", "container_id": "c1",
            "ifname": "eth0", "netns": "/x", "network": "net", "host_veth": "cali1", "mac": "ee:ee:ee:ee:ee:ee",
            "ips": ["10.74.0.5/32"], "result": {}, "profiles": ["DB", "WEB"]});
        let key = model::keys::endpoint("node-1", "cni", "w1", "eth0");
        store.txn(&[], &[Op::Put { key: key.clone(), value: ep.to_string().into_bytes() }]).unwrap();
        let refused = ctl(&["profile", "remove", "WEB"]);
        assert!(
            !refused.ok() && refused.stderr.contains("node-1/cni/w1/eth0") && refused.stderr.contains("--no-check"),
            "[{name}] {refused:#?}"
        );
        let detailed = ctl(&["profile", "show", "--detailed"]);
        assert!(
            detailed.stdout.lines().any(|l| l.starts_with("WEB") && l.contains("w1") && l.contains("10.74.0.5/32")),
            "[{name}] {detailed:#?}"
        );
        let listed = ctl(&["profile", "show", "-o", "json"]).json();
        let names: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(names, ["DB", "WEB"], "[{name}]");
        ctl(&["profile", "remove", "WEB", "--no-check"]).success();
        store.txn(&[], &[Op::Delete { key }]).unwrap();
        ctl(&["profile", "remove", "DB"]).success();
        assert!(store.list(model::keys::PROFILE_PREFIX).unwrap().is_empty(), "[{name}] keys left behind");
        let gone = ctl(&["profile", "remove", "DB"]);
        assert!(!gone.ok() && gone.stderr.contains("not found"), "[{name}] {gone:#?}");
    }
}

mod etcd_forward;

/// The real calico-cni ADD creates the network's profile (or the netconf's) with the
/// defaults, the endpoint record holds them, and `profile remove` is refused until DEL.
#[test]
fn add_creates_the_endpoints_profiles_and_remove_waits_for_del() {
    use calico_tests::netns::{host, CniBinDir, Netns};
    use calico_tests::Invocation;
    let bins = CniBinDir::new();
    for backend in Backend::all() {
        let name = backend.name();
        backend.ctl(&["pool", "add", "10.75.0.0/24"]).success();
        let node = host();
        let _reach = etcd_forward::forward_etcd(&node, &backend);
        let conf = |profiles: Option<serde_json::Value>| {
            let mut conf = serde_json::json!({"cniVersion": "1.0.0", "name": "pfnet", "type": "calico",
                "nodename": "node-1", "ipam": {"type": "calico-ipam"}});
            if let Some(p) = profiles {
                conf["profiles"] = p;
            }
            backend.apply(&mut conf);
            serde_json::to_vec(&conf).unwrap()
        };
        let run =
            |inv: &Invocation, conf: &[u8]| inv.clone().path(&bins.path()).run_in(&node, &bins.plugin("calico"), conf);
        let (c1, c2) = (Netns::new("pf"), Netns::new("pf"));
        let plain = conf(None);
        let named = conf(Some(serde_json::json!(["pf-a", "pf-b"])));
        let add1 = Invocation::new("ADD", "pf-one").netns(&c1.path());
        let add2 = Invocation::new("ADD", "pf-two").netns(&c2.path());
        run(&add1, &plain).expect_ok();
        run(&add2, &named).expect_ok();
        let listed = backend.ctl(&["profile", "show"]);
        assert_eq!(listed.stdout, "NAME\npf-a\npf-b\npfnet\n", "[{name}]");
        let rules = backend.ctl(&["profile", "pf-a", "rule", "show"]);
        assert_eq!(rules.stdout, "Inbound rules:\n   1 allow from tag pf-a\nOutbound rules:\n   1 allow\n", "[{name}]");
        let store = backend.open();
        let ep: model::endpoint::Endpoint = serde_json::from_slice(
            &store.get(&model::keys::endpoint("node-1", "cni", "pf-two", "eth0")).unwrap().unwrap().value,
        )
        .unwrap();
        assert_eq!(ep.profiles, ["pf-a", "pf-b"], "[{name}]");

        // `calicoctl container`: by a unique prefix of the id; profiles set, appended, removed.
        let shown = backend.ctl(&["container", "pf-tw", "endpoint", "show"]);
        assert!(shown.success().stdout.contains("pf-a,pf-b") && shown.stdout.contains("pf-two"), "[{name}] {shown:#?}");
        let ambiguous = backend.ctl(&["container", "pf-", "endpoint", "show"]);
        assert!(!ambiguous.ok() && ambiguous.stderr.contains("several"), "[{name}] {ambiguous:#?}");
        let unknown = backend.ctl(&["container", "nope", "endpoint", "show"]);
        assert!(
            !unknown.ok() && unknown.stderr.contains("Container nope is unknown to Calico."),
            "[{name}] {unknown:#?}"
        );
        let profiles_of = |id: &str| -> Vec<String> {
            let v = backend.ctl(&["container", id, "endpoint", "show", "-o", "json"]).json();
            serde_json::from_value(v[0]["profiles"].clone()).unwrap()
        };
        backend.ctl(&["container", "pf-two", "profile", "set", "pfnet"]).success();
        assert_eq!(profiles_of("pf-two"), ["pfnet"], "[{name}]");
        backend.ctl(&["container", "pf-two", "profile", "append", "pf-b", "pf-a"]).success();
        assert_eq!(profiles_of("pf-two"), ["pfnet", "pf-b", "pf-a"], "[{name}]");
        backend.ctl(&["container", "pf-two", "profile", "remove", "pfnet"]).success();
        assert_eq!(profiles_of("pf-two"), ["pf-b", "pf-a"], "[{name}]");
        for (args, says) in [
            (&["container", "pf-two", "profile", "append", "pf-a"][..], "already has profile pf-a"),
            (&["container", "pf-two", "profile", "remove", "pfnet"][..], "does not have profile pfnet"),
            (&["container", "pf-two", "profile", "set", "missing"][..], "Profile missing not found."),
            (&["container", "pf-two", "profile", "set", "a/b"][..], "invalid profile name"),
        ] {
            let out = backend.ctl(args);
            assert!(!out.ok() && out.stderr.contains(says), "[{name}] {args:?}: {out:#?}");
        }
        assert_eq!(profiles_of("pf-two"), ["pf-b", "pf-a"], "[{name}] a refused change changed it");

        let refused = backend.ctl(&["profile", "remove", "pfnet"]);
        assert!(!refused.ok() && refused.stderr.contains("pf-one"), "[{name}] {refused:#?}");
        run(&add1.with_command("DEL"), &plain).expect_ok();
        backend.ctl(&["profile", "remove", "pfnet"]).success();
        // A bad profile name is the netconf's error, and nothing is left.
        let bad = Invocation::new("ADD", "pf-bad").netns(&c1.path());
        run(&bad, &conf(Some(serde_json::json!(["no/pe"])))).expect_err(7);
        run(&add2.with_command("DEL"), &named).expect_ok();
        backend.assert_clean();
        assert_eq!(backend.used(), 0, "[{name}]");
    }
}
