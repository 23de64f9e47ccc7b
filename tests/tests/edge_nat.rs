//! Outgoing NAT and port mapping through calico-cni, for real: a host netns whose uplink
//! leads to an "outside" netns (the internet), containers in a nat-outgoing pool and in a
//! plain one, TCP listeners that report who connected, and the `inet calico` table after
//! DEL. Traffic goes only between namespaces the test made.

use std::time::Duration;

use calico_tests::cni_host::CniHost;
use calico_tests::netns::{host, Netns, HOST_V4};
use calico_tests::tcp::{connect, peer_of};
use serde_json::{json, Value};

const NAT_POOL: &str = "10.124.0.0/24";
const PLAIN_POOL: &str = "10.125.0.0/24";
const OUTSIDE: &str = "10.255.255.2";

/// The host, with forwarding on as a node has it, its uplink's far end moved into an outside
/// netns holding the default gateway's address, the two pools (one nat-outgoing).
fn env() -> (CniHost, Netns) {
    let h = host();
    h.run_in(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")).unwrap();
    let outside = Netns::new("edge-out");
    h.ip(&["link", "set", "up1", "netns", &outside.name]);
    outside.ip(&["addr", "add", &format!("{OUTSIDE}/30"), "dev", "up1"]);
    outside.ip(&["link", "set", "up1", "up"]);
    // Only the plain pool is routed back: NATed traffic must come from the host's address.
    outside.ip(&["route", "add", PLAIN_POOL, "via", HOST_V4]);
    let cni = CniHost::new(h, &[PLAIN_POOL], json!({"name": "edgenet"}));
    // Profiles (issue 13): the network's profile admits anyone, so these tests see NAT alone.
    cni.store.ctl(&["profile", "add", "edgenet"]).success();
    cni.store.ctl(&["profile", "edgenet", "rule", "add", "inbound", "allow"]).success();
    cni.store.ctl(&["pool", "add", "--nat-outgoing", NAT_POOL]).success();
    (cni, outside)
}

fn conf(cni: &CniHost, pool: &str, mappings: Value) -> Vec<u8> {
    let mut c: Value = serde_json::from_slice(&cni.conf("1.0.0", json!({"ipv4_pools": [pool]}))).unwrap();
    c["capabilities"] = json!({"portMappings": true});
    c["runtimeConfig"] = json!({"portMappings": mappings});
    serde_json::to_vec(&c).unwrap()
}

/// `nft list table inet calico` of the host, elements only (the rules never change).
fn elements(h: &Netns) -> Vec<String> {
    let out = h.exec(&["nft", "list", "table", "inet", "calico"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("elements"))
        .map(|l| l.trim().to_owned())
        .collect()
}

fn ip_of(result: &Value) -> String {
    calico_tests::result_ips(result)[0].clone()
}

#[test]
fn nat_pool_is_masqueraded_to_the_uplink_and_plain_pool_is_not() {
    let (cni, outside) = env();
    let (nat, plain) = (Netns::new("edge-c"), Netns::new("edge-c"));
    let nat_conf = conf(&cni, NAT_POOL, json!([]));
    let plain_conf = conf(&cni, PLAIN_POOL, json!([]));
    let nat_add = cni.inv("ADD", "edge-nat", &nat);
    let plain_add = cni.inv("ADD", "edge-plain", &plain);
    cni.run(&nat_add, &nat_conf).expect_ok();
    let plain_ip = ip_of(&cni.run(&plain_add, &plain_conf).expect_ok());

    let peer = peer_of(&outside, &format!("{OUTSIDE}:7001"), || connect(&nat, &format!("{OUTSIDE}:7001")));
    assert_eq!(peer.ip().to_string(), HOST_V4, "a nat-outgoing pool leaves with the uplink's address");
    let peer = peer_of(&outside, &format!("{OUTSIDE}:7002"), || connect(&plain, &format!("{OUTSIDE}:7002")));
    assert_eq!(peer.ip().to_string(), plain_ip, "a plain pool keeps its address");

    let listing = cni.host.exec(&["nft", "list", "table", "inet", "calico"]);
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains(NAT_POOL) && listing.contains(PLAIN_POOL), "{listing}");

    cni.run(&nat_add.with_command("DEL"), &nat_conf).expect_ok();
    cni.run(&plain_add.with_command("DEL"), &plain_conf).expect_ok();
    cni.assert_nothing_left("after DEL");
}

/// NATed outgoing traffic obeys the profile too: it leaves only with an outbound allow (the
/// default profile has one; here a profile without it).
#[test]
fn nat_outgoing_needs_the_profiles_outbound_allow() {
    let (cni, outside) = env();
    cni.store.ctl(&["profile", "add", "edge-noout"]).success();
    cni.store.ctl(&["profile", "edge-noout", "rule", "remove", "outbound", "allow"]).success();
    let (allowed, denied) = (Netns::new("edge-c"), Netns::new("edge-c"));
    let with_profile = |profile: &str| {
        let mut c: Value = serde_json::from_slice(&conf(&cni, NAT_POOL, json!([]))).unwrap();
        c["profiles"] = json!([profile]);
        serde_json::to_vec(&c).unwrap()
    };
    let (allowed_conf, denied_conf) = (with_profile("edgenet"), with_profile("edge-noout"));
    let (allowed_add, denied_add) = (cni.inv("ADD", "edge-allowed", &allowed), cni.inv("ADD", "edge-denied", &denied));
    cni.run(&allowed_add, &allowed_conf).expect_ok();
    cni.run(&denied_add, &denied_conf).expect_ok();

    let to = format!("{OUTSIDE}:7005");
    let peer = peer_of(&outside, &to, || connect(&allowed, &to));
    assert_eq!(peer.ip().to_string(), HOST_V4, "the outbound allow lets NATed traffic out");
    let target: std::net::SocketAddr = format!("{OUTSIDE}:7006").parse().unwrap();
    let _listener = outside.run_in(|| std::net::TcpListener::bind(target).unwrap());
    let reached = denied.run_in(|| std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok());
    assert!(!reached, "a profile without an outbound allow let NATed traffic out");

    cni.run(&allowed_add.with_command("DEL"), &allowed_conf).expect_ok();
    cni.run(&denied_add.with_command("DEL"), &denied_conf).expect_ok();
    cni.assert_nothing_left("after DEL");
}

/// IPv6 mappings (the `ports6` map: the host's own IPv6 address to the container's) and an
/// SCTP one, on a dual-stack container; DEL removes them.
#[test]
fn ipv6_and_sctp_mappings_are_programmed_and_an_ipv6_one_is_reached() {
    use calico_tests::netns::HOST_V6;
    const POOL6: &str = "fd00:125::/112";
    let (cni, _outside) = env();
    cni.store.ctl(&["pool", "add", POOL6]).success();
    let ctr = Netns::new("edge-c6");
    let mut c: Value = serde_json::from_slice(&conf(
        &cni,
        PLAIN_POOL,
        json!([{"hostPort": 18500, "containerPort": 80, "protocol": "tcp"},
               {"hostPort": 18501, "containerPort": 9, "protocol": "sctp"}]),
    ))
    .unwrap();
    c["ipam"]["assign_ipv6"] = json!(true);
    c["ipam"]["ipv6_pools"] = json!([POOL6]);
    let c = serde_json::to_vec(&c).unwrap();
    let add = cni.inv("ADD", "edge-v6", &ctr);
    let result = cni.run(&add, &c).expect_ok();
    let ips = calico_tests::result_ips(&result);
    let v6 = ips.iter().find(|ip| ip.contains(':')).expect("an IPv6 address").clone();

    let table =
        || String::from_utf8_lossy(&cni.host.exec(&["nft", "list", "table", "inet", "calico"]).stdout).into_owned();
    let listed = table();
    assert!(listed.contains(&format!("tcp . 18500 comment \"edgenet/edge-v6/eth0\" : {v6} . 80")), "{listed}");
    assert!(listed.contains("sctp . 18501 "), "no SCTP mapping:\n{listed}");
    // From the host itself to its own IPv6 address: output DNAT to the container's.
    let peer = peer_of(&ctr, "[::]:80", || connect(&cni.host, &format!("[{HOST_V6}]:18500")));
    assert!(peer.is_ipv6(), "{peer}");

    cni.run(&add.with_command("DEL"), &c).expect_ok();
    let listed = table();
    assert!(!listed.contains("18500") && !listed.contains("18501"), "a mapping left after DEL:\n{listed}");
    cni.assert_nothing_left("after DEL");
}

#[test]
fn a_mapped_port_is_reached_from_outside_from_the_host_and_by_hairpin() {
    let (cni, outside) = env();
    let before = {
        // The table as the pools alone leave it, from a container without mappings.
        let ns = Netns::new("edge-c");
        let add = cni.inv("ADD", "edge-first", &ns);
        let c = conf(&cni, NAT_POOL, json!([]));
        cni.run(&add, &c).expect_ok();
        cni.run(&add.with_command("DEL"), &c).expect_ok();
        elements(&cni.host)
    };
    let ctr = Netns::new("edge-c");
    let mappings = json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
                          {"hostPort": 18081, "containerPort": 81, "protocol": "udp", "hostIP": HOST_V4}]);
    let c = conf(&cni, NAT_POOL, mappings);
    let add = cni.inv("ADD", "edge-mapped", &ctr);
    let result = cni.run(&add, &c).expect_ok();
    let ctr_ip = ip_of(&result);
    let mapped = format!("{HOST_V4}:18080");

    let peer = peer_of(&ctr, "0.0.0.0:80", || connect(&outside, &mapped));
    assert_eq!(peer.ip().to_string(), OUTSIDE, "DNAT from outside keeps the client's address");
    let peer = peer_of(&ctr, "0.0.0.0:80", || connect(&cni.host, &mapped));
    assert_eq!(peer.ip().to_string(), HOST_V4, "locally generated");
    let peer = peer_of(&ctr, "0.0.0.0:80", || connect(&cni.host, "127.0.0.1:18080"));
    assert_eq!(peer.ip().to_string(), HOST_V4, "from the host's localhost: masqueraded to the host's address");
    let peer = peer_of(&ctr, "0.0.0.0:80", || connect(&ctr, &mapped));
    assert_ne!(peer.ip().to_string(), ctr_ip, "hairpin is masqueraded so the reply comes back");

    // CHECK passes; a second container asking for the same port fails naming the first.
    let prev = calico_tests::with_prev(&c, &result);
    cni.run(&add.with_command("CHECK"), &prev).expect_ok();
    let other = Netns::new("edge-c");
    let err = cni.run(&cni.inv("ADD", "edge-second", &other), &c).expect_err(124);
    assert!(err["msg"].as_str().unwrap().contains("edge-mapped"), "{err}");
    assert_eq!(other.links(), ["lo"], "the failed ADD left nothing");

    // DEL with the netns gone: nothing of ours is left but the pools.
    drop(ctr);
    cni.run(&add.with_command("DEL"), &c).expect_ok();
    assert_eq!(elements(&cni.host), before);
    cni.assert_nothing_left("after DEL");
}

#[test]
fn invalid_mappings_are_error_7_naming_the_field() {
    let (cni, _outside) = env();
    for (m, field) in [
        (json!({"hostPort": 0, "containerPort": 80}), "hostPort"),
        (json!({"hostPort": 70000, "containerPort": 80}), "hostPort"),
        (json!({"hostPort": 80, "containerPort": 80, "protocol": "gre"}), "protocol"),
        (json!({"hostPort": 80, "containerPort": 80, "hostIP": "10.0.0"}), "hostIP"),
    ] {
        let ns = Netns::new("edge-c");
        let err = cni.run(&cni.inv("ADD", "edge-bad", &ns), &conf(&cni, NAT_POOL, json!([m]))).expect_err(7);
        let text = err.to_string();
        assert!(text.contains("portMappings[0]") && text.contains(field), "{field}: {err}");
    }
    cni.assert_nothing_left("after bad input");
}

#[test]
fn add_and_del_with_nat_and_two_mappings_exec_nothing() {
    let (cni, _outside) = env();
    let ctr = Netns::new("edge-c");
    let c = conf(
        &cni,
        NAT_POOL,
        json!([{"hostPort": 18090, "containerPort": 80}, {"hostPort": 18091, "containerPort": 81, "protocol": "udp"}]),
    );
    let add = cni.inv("ADD", "edge-exec", &ctr);
    for inv in [add.clone(), add.with_command("DEL")] {
        let trace = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = inv.command(std::path::Path::new("ip"));
        cmd.args(["netns", "exec", &cni.host.name, "strace", "-f", "-qq", "-e", "trace=execve", "-o"]);
        cmd.arg(trace.path()).arg(cni.bins.plugin("calico"));
        calico_tests::run_command(cmd, &c).expect_ok();
        let execs = std::fs::read_to_string(trace.path()).unwrap();
        let execs: Vec<&str> = execs.lines().filter(|l| l.contains("execve(")).collect();
        assert_eq!(execs.len(), 1, "only the plugin itself: {execs:#?}");
    }
    cni.assert_nothing_left("after DEL");
}

/// Through our own driver, per spec version with capabilities: a TCP and a UDP mapping (the
/// UDP one on the host's address only) from ADD's runtimeConfig, reached from outside, the
/// CHECK of versions that have it, DEL leaving only the pools.
fn mapped_ports_by_version(v: &str) {
    let (cni, outside) = env();
    let ctr = Netns::new("edge-c");
    let mut c: Value = serde_json::from_slice(&cni.conf(v, json!({"ipv4_pools": [NAT_POOL]}))).unwrap();
    c["capabilities"] = json!({"portMappings": true});
    c["runtimeConfig"] = json!({"portMappings": [
        {"hostPort": 18200, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 18201, "containerPort": 81, "protocol": "udp", "hostIP": HOST_V4}]});
    let c = serde_json::to_vec(&c).unwrap();
    let add = cni.inv("ADD", "edge-v", &ctr);
    let result = cni.run(&add, &c).expect_ok();
    assert_eq!(result["cniVersion"], v, "{result}");
    let ctr_ip = ip_of(&result);
    let els = elements(&cni.host).join("\n");
    assert!(
        els.contains(&format!(": {ctr_ip} . 80")) && els.contains(&format!("{HOST_V4} . udp . 18201")),
        "{v}: {els}"
    );

    let peer = peer_of(&ctr, "0.0.0.0:80", || connect(&outside, &format!("{HOST_V4}:18200")));
    assert_eq!(peer.ip().to_string(), OUTSIDE, "{v}: DNAT from outside");
    // UDP: a datagram from outside to the host's address arrives at the container's port 81.
    let sock = ctr.run_in(|| std::net::UdpSocket::bind("0.0.0.0:81").unwrap());
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    outside.run_in(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"udp", format!("{HOST_V4}:18201")).unwrap();
    });
    let mut buf = [0; 8];
    let (n, from) = sock.recv_from(&mut buf).unwrap_or_else(|e| panic!("{v}: no UDP datagram: {e}"));
    assert_eq!((&buf[..n], from.ip().to_string()), (&b"udp"[..], OUTSIDE.to_owned()), "{v}");

    if v >= "0.4.0" {
        cni.run(&add.with_command("CHECK"), &calico_tests::with_prev(&c, &result)).expect_ok();
    }
    cni.run(&add.with_command("DEL"), &c).expect_ok();
    cni.run(&add.with_command("DEL"), &c).expect_ok();
    let left = elements(&cni.host).join("\n");
    assert!(!left.contains("edge-v") && !left.contains(&format!("{ctr_ip} . ")), "{v}: left: {left}");
    cni.assert_nothing_left(v);
}

calico_tests::spec_version_tests!(mapped_ports_by_version, capabilities);

/// The owned elements (map and hairpin) and the pool CIDRs of each pool set, from
/// `nft -j list table inet calico` in the host.
fn nft_json(h: &Netns) -> (Vec<String>, Vec<(String, String)>) {
    let out = h.exec(&["nft", "-j", "list", "table", "inet", "calico"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(json!({"nftables": []}));
    let (mut owned, mut pools) = (Vec::new(), Vec::new());
    for obj in v["nftables"].as_array().into_iter().flatten() {
        let Some(set) = obj.get("set").or_else(|| obj.get("map")) else { continue };
        let name = set["name"].as_str().unwrap_or_default().to_owned();
        for e in set["elem"].as_array().into_iter().flatten() {
            if name.contains("pools") {
                let p = &e["prefix"];
                pools.push((name.clone(), format!("{}/{}", p["addr"].as_str().unwrap_or("?"), p["len"])));
            } else {
                owned.push(format!("{name}: {e}"));
            }
        }
    }
    pools.sort();
    (owned, pools)
}

#[test]
fn kill_9_of_add_at_any_moment_then_del_leaves_no_element() {
    let (cni, _outside) = env();
    let c = conf(
        &cni,
        NAT_POOL,
        json!([{"hostPort": 18300, "containerPort": 80}, {"hostPort": 18301, "containerPort": 81, "protocol": "udp"}]),
    );
    // What the datastore says: both pools are pools, the NAT one masqueraded.
    let wanted = {
        let mut w = vec![
            ("all-pools4".to_owned(), NAT_POOL.to_owned()),
            ("all-pools4".to_owned(), PLAIN_POOL.to_owned()),
            ("masq-pools4".to_owned(), NAT_POOL.to_owned()),
        ];
        w.sort();
        w
    };
    // Killed before the end, and of those, killed after its mappings were in.
    let (mut killed, mut mid_way) = (0, 0);
    for i in 0..30u64 {
        let ctr = Netns::new("edge-c");
        let add = cni.inv("ADD", &format!("edge-kill{i}"), &ctr);
        let mut cmd = add.command(std::path::Path::new("ip"));
        cmd.args(["netns", "exec", &cni.host.name]).arg(cni.bins.plugin("calico"));
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write as _;
            let _ = child.stdin.take().unwrap().write_all(&c);
        }
        // Spread over an ADD's run time (10-40 ms here, with its profiles), in a scrambled
        // order.
        std::thread::sleep(Duration::from_micros((i * 7919) % 60_000));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        if !nft_json(&cni.host).0.is_empty() {
            mid_way += 1;
        }
        cni.run(&add.with_command("DEL"), &c).expect_ok();
        let (owned, pools) = nft_json(&cni.host);
        assert!(owned.is_empty(), "kill {i}: elements left after DEL: {owned:#?}");
        if !pools.is_empty() {
            // The table exists once an ADD got that far: then its pools are the datastore's.
            assert!(pools.iter().all(|p| wanted.contains(p)), "kill {i}: {pools:?} vs {wanted:?}");
        }
        assert_eq!(ctr.links(), ["lo"], "kill {i}: the container's side is gone");
    }
    eprintln!("{killed} of 30 ADDs killed before they finished, {mid_way} with their mappings in (or complete)");
    assert!(killed > 0 && mid_way > 0, "the delays miss ADD's run time");
    cni.assert_nothing_left("after kills and DELs");
}
