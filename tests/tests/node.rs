//! calico-node for real: three hosts (network namespaces on one bridge), etcd in a namespace
//! of its own, a calico-node per host, containers added by calico-cni, traffic between hosts
//! in direct mode; drift repaired, other protocols' routes untouched, kill -9 and restart
//! without a flap, and bad input refused with a message.

mod node_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use calico_tests::netns::Netns;
use calico_tests::{bin, run_command, StoreDir};
use node_common::{wait_for, Lab, RouteMonitor};

/// The block (a /26 of the pool) holding `ip`.
fn block_of(ip: &str) -> String {
    let octets: Vec<u32> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    format!("{}.{}.{}.{}/26", octets[0], octets[1], octets[2], octets[3] & !63)
}

#[test]
fn three_hosts_route_to_each_other_directly() {
    let mut lab = Lab::new(3);
    lab.agent_flags = vec!["--resync-interval".into(), "2s".into()];
    lab.ctl(0, &["pool", "add", "10.201.0.0/16"]).success();
    lab.start_agents();

    let ips: Vec<String> = (0..3).map(|i| lab.add_container(i)).collect();
    let blocks: Vec<String> = ips.iter().map(|ip| block_of(ip)).collect();
    for (i, h) in lab.hosts.iter().enumerate() {
        let took = wait_for(&format!("{}'s routes", h.name), Duration::from_secs(5), || {
            let routes = h.our_routes();
            (0..3).all(|j| {
                if i == j {
                    routes.contains(&format!("blackhole {}", blocks[j]))
                } else {
                    routes.contains(&format!("{} via {} dev eth0 onlink", blocks[j], lab.hosts[j].ip))
                }
            })
        });
        eprintln!("{}: routes in place {took:?} after the last ADD", h.name);
    }
    for (a, b) in [(0, 1), (0, 2), (1, 2), (2, 0)] {
        assert!(lab.container(a).ping(&ips[b]), "container on host{} cannot ping {} on host{}", a + 1, ips[b], b + 1);
    }

    // calicoctl node show lists the three, with their addresses and blocks.
    let shown = lab.ctl(0, &["node", "show", "-o", "json"]).expect_ok();
    let names: Vec<&str> = shown.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["host1", "host2", "host3"], "{shown}");
    assert_eq!(shown[1]["ipv4"], "10.200.0.2/24", "{shown}");
    assert_eq!(shown[1]["blocks"], serde_json::json!([blocks[1]]), "{shown}");
    let table = lab.ctl(0, &["node", "show"]);
    assert!(
        table.stdout.lines().nth(3).is_some_and(|l| l.starts_with("host3") && l.contains(&blocks[2])),
        "{table:#?}"
    );

    // Routes of other protocols on host1: never touched, not even by a full resync.
    let h1 = &lab.hosts[0];
    h1.ns.ip(&["route", "add", "10.202.0.0/24", "via", "10.200.0.9", "dev", "eth0", "onlink", "proto", "static"]);
    h1.ns.ip(&["route", "add", "blackhole", "10.203.0.0/24", "proto", "boot"]);
    // A route deleted by hand comes back within the resync interval (2 s).
    h1.ns.ip(&["route", "del", &blocks[1], "proto", "80"]);
    let back = wait_for("the deleted route to come back", Duration::from_secs(5), || {
        h1.our_routes().contains(&format!("{} via {}", blocks[1], lab.hosts[1].ip))
    });
    eprintln!("deleted route restored after {back:?}");
    std::thread::sleep(Duration::from_millis(2500));
    let all = h1.ns.ip(&["route", "show"]);
    assert!(all.contains("10.202.0.0/24 via 10.200.0.9 dev eth0 proto static onlink"), "{all}");
    assert!(all.contains("blackhole 10.203.0.0/24"), "{all}");

    // kill -9 and restart host1's agent: a route monitor sees no deletion of our routes.
    let monitor = RouteMonitor::start(&h1.ns.name);
    lab.hosts[0].agent.kill();
    lab.start_agent(0);
    let h1 = &lab.hosts[0];
    wait_for("host1 ready again", Duration::from_secs(20), || h1.ready());
    std::thread::sleep(Duration::from_millis(2500)); // one more resync
    let deleted = monitor.deletions("proto 80");
    assert!(deleted.is_empty(), "routes deleted around the restart: {deleted:?}\n{}", h1.log());
    assert!(lab.container(0).ping(&ips[1]));
    let metrics = h1.metrics();
    assert!(metrics.contains("calico_node_routes 3"), "{metrics}");

    // Removing host3 (its agent stopped first) removes its routes everywhere.
    let unknown = lab.ctl(0, &["node", "remove", "host9"]);
    assert!(!unknown.ok() && unknown.stderr.contains("unknown node \"host9\""), "{unknown:#?}");
    lab.hosts[2].agent.kill();
    let refused = lab.ctl(0, &["node", "remove", "host3"]);
    assert!(!refused.ok() && refused.stderr.contains("--remove-endpoints"), "{refused:#?}");
    let removed = lab.ctl(0, &["node", "remove", "host3", "--remove-endpoints"]);
    assert!(removed.ok() && removed.stdout.contains("1 block(s) freed"), "{removed:#?}");
    for h in &lab.hosts[..2] {
        wait_for(&format!("{} to drop host3's route", h.name), Duration::from_secs(5), || {
            !h.our_routes().contains(&blocks[2])
        });
    }
    let shown = lab.ctl(0, &["node", "show", "-o", "json"]).expect_ok();
    assert_eq!(shown.as_array().unwrap().len(), 2, "{shown}");
    lab.ctl(0, &["ipam", "check"]).success();

    // Removing the pool removes every block route on every host.
    lab.ctl(0, &["pool", "remove", "10.201.0.0/16", "--force"]).success();
    for h in &lab.hosts[..2] {
        wait_for(&format!("{}'s routes gone", h.name), Duration::from_secs(5), || h.our_routes().trim().is_empty());
    }
}

/// Run calico-node with `args` in `host` against an embedded store.
fn agent_once(host: &Netns, store: &StoreDir, args: &[&str]) -> calico_tests::Outcome {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &host.name]).arg(bin("calico-node")).args(["--datastore-path", &store.db(), "--once"]);
    cmd.arg("--mtu-file").arg(store.dir.path().join(format!("mtu-{}", host.name)));
    cmd.args(args).env_remove("ETCD_ENDPOINTS").env_remove("CALICO_DATASTORE_PATH").env_remove("NODENAME");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    run_command(cmd, b"")
}

#[test]
fn bad_input_gets_a_message_and_a_failure() {
    // Two hosts on one link, sharing an embedded store.
    let (host, other) = (Netns::new("nodebad"), Netns::new("nodebad"));
    host.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &other.name]);
    for (ns, addr) in [(&host, "10.210.0.1/24"), (&other, "10.210.0.2/24")] {
        ns.ip(&["addr", "add", addr, "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }
    let store = StoreDir::new();
    let fails = |args: &[&str], code: i32, message: &str| {
        let out = agent_once(&host, &store, args);
        assert_eq!(out.code, code, "{args:?}: {out:#?}");
        assert!(out.stderr.contains(message), "{args:?}: wanted {message:?} in {out:#?}");
    };
    fails(&["--nodename", "a", "--ip", "10.210.0.1"], 2, "is not an IPv4 address with its prefix");
    fails(&["--nodename", "a", "--ip", "bogus/24"], 2, "is not an IPv4 address with its prefix");
    fails(&["--nodename", "a", "--ip", "10.210.0.9/24"], 1, "no interface of this host holds 10.210.0.9");
    fails(&["--nodename", "a", "--interface", "eth7"], 1, "unknown interface \"eth7\"");
    fails(&["--nodename", "a", "--resync-interval", "soon"], 2, "is not a duration");
    fails(&["--nodename", "a/b"], 1, "invalid node name");

    let out = agent_once(&host, &store, &["--nodename", "a", "--ip", "10.210.0.1/24"]);
    assert!(out.ok(), "{out:#?}");
    let out = agent_once(&other, &store, &["--nodename", "b", "--ip", "10.210.0.2/24"]);
    assert!(out.ok(), "{out:#?}");
    // b's address, claimed by a.
    host.ip(&["addr", "add", "10.210.0.2/24", "dev", "eth0"]);
    fails(&["--nodename", "a", "--ip", "10.210.0.2/24"], 1, "node \"b\" already claims 10.210.0.2");
    host.ip(&["addr", "del", "10.210.0.2/24", "dev", "eth0"]);

    // An IPIP pool on this kernel: the agent names CONFIG_NET_IPIP; other pools still work.
    let ctl = |args: &[&str]| calico_tests::calicoctl(&[("CALICO_DATASTORE_PATH".into(), store.db())], args);
    // A pool with both IPIP and VXLAN never reaches the store through calicoctl (the agent
    // names such a record if another tool writes one: routes.rs's unit test).
    let both = ctl(&["pool", "add", "10.213.0.0/16", "--ipip", "always", "--vxlan", "always"]);
    assert!(!both.ok() && both.stderr.contains("not both"), "{both:#?}");
    ctl(&["pool", "add", "10.211.0.0/16", "--ipip", "always"]).success();
    ctl(&["pool", "add", "10.212.0.0/16"]).success();
    for pool in ["10.211.0.0/16", "10.212.0.0/16"] {
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "calico-ipam", "nodename": "b",
            "datastore_path": store.db(), "ipam": {"type": "calico-ipam", "ipv4_pools": [pool]}});
        let inv = calico_tests::Invocation::new("ADD", &format!("c-{}", pool.replace('/', "-")));
        inv.run(&bin("calico-ipam"), &serde_json::to_vec(&conf).unwrap()).expect_ok();
    }
    let out = agent_once(&host, &store, &["--nodename", "a", "--ip", "10.210.0.1/24"]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("pool 10.211.0.0/16: IPIP needs") && out.stderr.contains("CONFIG_NET_IPIP"),
        "{out:#?}"
    );
    let routes = host.ip(&["route", "show", "proto", "80"]);
    assert!(routes.contains("10.212.0.0/26 via 10.210.0.2 dev eth0 onlink"), "{routes}");
}

/// host2 cut off from etcd (a blackhole route to it, in host2 only) while host1 claims a
/// block: host2 keeps its routes, reports not ready, and programs the new block within 5 s
/// of reaching etcd again.
#[test]
fn a_host_cut_off_from_etcd_keeps_its_routes_and_catches_up() {
    let mut lab = Lab::new(2);
    lab.ctl(0, &["pool", "add", "10.201.0.0/16"]).success();
    lab.start_agents();
    let first = block_of(&lab.add_container(0));
    let h2 = &lab.hosts[1];
    wait_for("the first block's route", Duration::from_secs(5), || h2.our_routes().contains(&first));

    h2.ns.ip(&["route", "add", "blackhole", &format!("{}/32", node_common::ETCD_IP)]);
    // An idle watch notices a silent loss of its connection by its HTTP/2 pings (10 s + 5 s).
    let noticed = wait_for("host2 to report the outage", Duration::from_secs(30), || {
        node_common::http_get(&h2.ns, h2.health_port, "/readiness")
            .is_some_and(|(status, body)| status.contains(" 503") && body.contains("datastore unreachable"))
    });
    eprintln!("outage reported after {noticed:?}");
    // A second block for host1 (a container on a fresh netns claims one only when the first
    // is full, so ask for an address in another block).
    let h1 = &lab.hosts[0];
    let conf = {
        let mut c: serde_json::Value = serde_json::from_slice(&lab.netconf(0)).unwrap();
        c["ipam"]["ipv4_pools"] = serde_json::json!(["10.201.0.0/16"]);
        c["args"] = serde_json::json!({"cni": {"ips": ["10.201.3.7"]}});
        serde_json::to_vec(&c).unwrap()
    };
    let c = Netns::new("nodec");
    let inv = calico_tests::Invocation::new("ADD", "late").netns(&c.path()).path(&lab.bins.path());
    inv.run_in(&h1.ns, &lab.bins.plugin("calico"), &conf).expect_ok();
    std::thread::sleep(Duration::from_secs(3));
    assert!(h2.our_routes().contains(&first), "routes kept during the outage: {}", h2.our_routes());

    h2.ns.ip(&["route", "del", "blackhole", &format!("{}/32", node_common::ETCD_IP)]);
    let took = wait_for("host2 to program the block claimed meanwhile", Duration::from_secs(5), || {
        h2.our_routes().contains("10.201.3.0/26 via 10.200.0.1")
    });
    eprintln!("caught up {took:?} after etcd became reachable");
    wait_for("host2 ready again", Duration::from_secs(5), || h2.ready());
}

/// Three hosts over VXLAN: routes through vxlan.calico to each remote tunnel address, the
/// device as Calico makes it, the tunnel addresses in the node records, pings across.
#[test]
fn three_hosts_route_to_each_other_over_vxlan() {
    let mut lab = Lab::new(3);
    lab.ctl(0, &["pool", "add", "10.201.0.0/16", "--vxlan"]).success();
    lab.start_agents();
    let ips: Vec<String> = (0..3).map(|i| lab.add_container(i)).collect();
    let shown = lab.ctl(0, &["node", "show", "-o", "json"]).expect_ok();
    let tunnels: Vec<String> =
        (0..3).map(|i| shown[i]["vxlan_tunnel_addr"].as_str().expect("tunnel address").to_owned()).collect();
    for (i, n) in shown.as_array().unwrap().iter().enumerate() {
        assert!(n["vxlan_tunnel_mac"].as_str().is_some_and(|m| m.starts_with("66:")), "{shown}");
        assert_eq!(block_of(&tunnels[i]), block_of(&ips[i]), "the tunnel address comes from the host's block");
    }
    for (i, h) in lab.hosts.iter().enumerate() {
        wait_for(&format!("{}'s VXLAN routes", h.name), Duration::from_secs(5), || {
            let routes = h.our_routes();
            (0..3)
                .filter(|j| *j != i)
                .all(|j| routes.contains(&format!("{} via {} dev vxlan.calico onlink", block_of(&ips[j]), tunnels[j])))
        });
        let device = h.ns.ip(&["-d", "link", "show", "vxlan.calico"]);
        for part in ["mtu 1450", "vxlan id 4096", &format!("local {}", h.ip), "dev eth0", "dstport 4789", "nolearning"]
        {
            assert!(device.contains(part), "{part:?} missing: {device}");
        }
        let mut fdb = Command::new("ip");
        fdb.args(["netns", "exec", &h.ns.name, "bridge", "fdb", "show", "dev", "vxlan.calico"]);
        fdb.stdout(Stdio::piped()).stderr(Stdio::piped());
        let fdb = run_command(fdb, b"").stdout;
        assert_eq!(fdb.lines().filter(|l| l.contains(" dst 10.200.0.") && l.contains("permanent")).count(), 2, "{fdb}");
    }
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        assert!(lab.container(a).ping(&ips[b]), "host{} -> host{} over VXLAN", a + 1, b + 1);
    }
    // The pool going removes the device and every route.
    lab.ctl(0, &["pool", "remove", "10.201.0.0/16", "--force"]).success();
    for h in &lab.hosts {
        wait_for(&format!("{}'s VXLAN gone", h.name), Duration::from_secs(5), || {
            h.our_routes().trim().is_empty() && !h.ns.links().iter().any(|l| l == "vxlan.calico")
        });
    }
}

/// VXLAN cross-subnet with every host on one subnet: direct routes, no encapsulation.
#[test]
fn vxlan_cross_subnet_routes_one_subnet_directly() {
    let mut lab = Lab::new(2);
    lab.ctl(0, &["pool", "add", "10.201.0.0/16", "--vxlan", "cross-subnet"]).success();
    lab.start_agents();
    let ips: Vec<String> = (0..2).map(|i| lab.add_container(i)).collect();
    let h1 = &lab.hosts[0];
    wait_for("the direct route", Duration::from_secs(5), || {
        h1.our_routes().contains(&format!("{} via {} dev eth0 onlink", block_of(&ips[1]), lab.hosts[1].ip))
    });
    assert!(lab.container(0).ping(&ips[1]));
}

/// kill -9 of the agent at 20 moments of its start and first sync, then a restart: the
/// routes end as wanted, and a route monitor saw no deletion of one of ours meanwhile.
#[test]
fn kill_9_during_syncs_never_deletes_a_wanted_route() {
    let mut lab = Lab::new(1);
    lab.ctl(0, &["pool", "add", node_common::BIG_POOL]).success();
    let blocks = lab.fake_nodes(100, 3);
    lab.start_agents();
    let h = &lab.hosts[0];
    wait_for("the fake nodes' routes", Duration::from_secs(10), || h.our_routes().lines().count() == blocks.len());
    let monitor = RouteMonitor::start(&h.ns.name);
    // Kill at moments spread over the start: process start, registration, listing, routes.
    let mut seed = std::process::id() as u64;
    let mut victims = Vec::new();
    for i in 0..20 {
        lab.hosts[0].agent.kill();
        // A few routes deleted by hand, so that some syncs have work to do when killed.
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let victim = &blocks[(i * 7919) % blocks.len()]; // distinct: 7919 is prime
        lab.hosts[0].ns.ip(&["route", "del", victim, "proto", "80"]);
        victims.push(victim.clone());
        lab.start_agent(0);
        std::thread::sleep(Duration::from_millis(5 + (seed >> 40) % 60));
    }
    lab.hosts[0].agent.kill();
    lab.start_agent(0);
    let h = &lab.hosts[0];
    wait_for("ready after the kills", Duration::from_secs(20), || h.ready());
    wait_for("every route back", Duration::from_secs(10), || h.our_routes().lines().count() == blocks.len());
    // The only deletions are the ones made by hand (`ip route del` shows as Deleted too).
    let deleted = monitor.deletions("proto 80");
    assert_eq!(deleted.len(), victims.len(), "{deleted:#?}");
    for line in deleted {
        assert!(victims.iter().any(|v| line.starts_with(&format!("Deleted {v} "))), "not deleted by hand: {line}");
    }
    let routes = h.our_routes();
    for block in &blocks {
        assert!(routes.contains(&format!("{block} via")), "{block} missing:\n{routes}");
    }
}

/// Two subnets joined by a router: VXLAN cross-subnet encapsulates towards the other
/// subnet (the router knows no pool route, so only the tunnel gets through) and routes
/// directly within a subnet; a pool without encapsulation leaves the other subnet to BGP.
#[test]
fn vxlan_cross_subnet_across_a_router() {
    let mut lab = Lab::with_subnets(&[2, 1]);
    lab.ctl(0, &["pool", "add", "10.201.0.0/16", "--vxlan", "cross-subnet"]).success();
    lab.start_agents();
    let ips: Vec<String> = (0..3).map(|i| lab.add_container(i)).collect();
    let shown = lab.ctl(0, &["node", "show", "-o", "json"]).expect_ok();
    let tunnel = |i: usize| shown[i]["vxlan_tunnel_addr"].as_str().expect("tunnel").to_owned();
    let (h1, h3) = (&lab.hosts[0], &lab.hosts[2]);
    wait_for("host1's routes", Duration::from_secs(5), || {
        let routes = h1.our_routes();
        routes.contains(&format!("{} via 10.200.0.2 dev eth0 onlink", block_of(&ips[1])))
            && routes.contains(&format!("{} via {} dev vxlan.calico onlink", block_of(&ips[2]), tunnel(2)))
    });
    wait_for("host3's routes", Duration::from_secs(5), || {
        let routes = h3.our_routes();
        (0..2).all(|j| routes.contains(&format!("{} via {} dev vxlan.calico onlink", block_of(&ips[j]), tunnel(j))))
    });
    for (a, b) in [(0, 1), (0, 2), (2, 1)] {
        assert!(lab.container(a).ping(&ips[b]), "host{} -> host{}", a + 1, b + 1);
    }
    let router = lab.router.as_ref().expect("router").ip(&["route", "show"]);
    assert!(!router.contains("10.201."), "the router knows no pool route: {router}");
}

/// A pool without encapsulation and a node on another subnet: no route, and a log line
/// that leaves it to BGP.
#[test]
fn another_subnet_without_encapsulation_is_left_to_bgp() {
    let mut lab = Lab::with_subnets(&[1, 1]);
    lab.ctl(0, &["pool", "add", "10.201.0.0/16"]).success();
    lab.start_agents();
    lab.add_container(1);
    let h1 = &lab.hosts[0];
    wait_for("the BGP log line", Duration::from_secs(5), || {
        h1.log().lines().any(|l| l.contains("left to BGP") && l.contains("host2"))
    });
    assert!(h1.our_routes().trim().is_empty(), "{}", h1.our_routes());
}

/// The MTU over VXLAN: the agent writes the uplink's MTU − 50 to its MTU file, calico-cni
/// gives it to containers whose netconf has no `mtu`; the largest ping with DF set passes
/// between hosts and one byte more is refused with a message, never dropped silently, also
/// when a container's own MTU is too large (the host answers "frag needed").
#[test]
fn vxlan_mtu_is_written_used_and_never_a_silent_drop() {
    let mut lab = Lab::new(2);
    lab.ctl(0, &["pool", "add", "10.201.0.0/16", "--vxlan"]).success();
    lab.start_agents();
    let mtu_file = lab.hosts[0].dir.path().join("mtu");
    wait_for("the MTU file", Duration::from_secs(5), || {
        std::fs::read_to_string(&mtu_file).is_ok_and(|t| t == "1450\n")
    });
    let conf_without_mtu = |lab: &Lab, i: usize| {
        let mut c: serde_json::Value = serde_json::from_slice(&lab.netconf(i)).unwrap();
        c.as_object_mut().unwrap().remove("mtu");
        c["mtu_file"] = serde_json::json!(lab.hosts[i].dir.path().join("mtu"));
        serde_json::to_vec(&c).unwrap()
    };
    let mut ips = Vec::new();
    for i in 0..2 {
        let c = Netns::new("nodec");
        let inv = calico_tests::Invocation::new("ADD", &format!("mtu-{i}")).netns(&c.path()).path(&lab.bins.path());
        let out = inv.run_in(&lab.hosts[i].ns, &lab.bins.plugin("calico"), &conf_without_mtu(&lab, i)).expect_ok();
        ips.push(calico_tests::result_ips(&out)[0].clone());
        assert!(c.ip(&["link", "show", "eth0"]).contains("mtu 1450"), "the MTU file's MTU");
        lab.containers.push(c);
    }
    // Each host's route to the other's block (host1's is the one the pings below take).
    for (h, other) in [(0, 1), (1, 0)] {
        let block = block_of(&ips[other]);
        let host = &lab.hosts[h];
        wait_for(&format!("{}'s VXLAN route to {block}", host.name), Duration::from_secs(5), || {
            host.our_routes().lines().any(|l| l.starts_with(&block) && l.contains("vxlan.calico"))
        });
    }
    let ping = |c: &Netns, size: &str, to: &str| {
        let out = c.exec(&["ping", "-c", "1", "-W", "2", "-M", "do", "-s", size, to]);
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, text) = ping(&lab.containers[0], "1422", &ips[1]);
    assert!(ok, "1450 bytes with DF: {text}");
    let (ok, text) = ping(&lab.containers[0], "1423", &ips[1]);
    assert!(!ok && text.contains("mtu=1450"), "one byte more: {text}");
    // A container whose MTU is the uplink's (netconf mtu 1500): the host says frag needed.
    let c = Netns::new("nodec");
    let mut conf: serde_json::Value = serde_json::from_slice(&lab.netconf(0)).unwrap();
    conf["mtu"] = serde_json::json!(1500);
    let inv = calico_tests::Invocation::new("ADD", "mtu-big").netns(&c.path()).path(&lab.bins.path());
    inv.run_in(&lab.hosts[0].ns, &lab.bins.plugin("calico"), &serde_json::to_vec(&conf).unwrap()).expect_ok();
    let (ok, text) = ping(&c, "1472", &ips[1]);
    assert!(!ok && text.contains("Frag needed") && text.contains("mtu = 1450"), "the host's answer: {text}");
    lab.containers.push(c);
}
