//! Outgoing NAT kept by calico-node, for real: two hosts of the calico-node lab, an "outside"
//! netns on their bridge playing the internet, containers added by calico-cni, TCP listeners
//! that report who connected. NAT turned off in the datastore reaches every host's pool sets
//! within a second; a deleted `inet calico` table comes back at the next resync; between
//! containers of NAT pools on two hosts the source is never rewritten; the host's own
//! traffic into `vxlan.calico` leaves with the tunnel address.

mod node_common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use calico_tests::netns::Netns;
use calico_tests::tcp::{connect, peer_of};
use calico_tests::{run_command, Invocation};
use node_common::{wait_for, Lab};

const POOL: &str = "10.201.0.0/16";
const POOL_KEY: &str = "/calico/v1/ipam/v4/pool/10.201.0.0-16";
const OUTSIDE: &str = "10.200.0.200";

/// An outside netns on the lab's bridge, routing the pool back through host1 (so that,
/// without NAT, the container's own address can answer).
fn outside(lab: &Lab) -> Netns {
    let out = Netns::new("edout");
    let port = calico_tests::unique("edp");
    let port = &port[port.len().saturating_sub(15)..];
    lab.bridge.ip(&["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &out.name]);
    lab.bridge.ip(&["link", "set", port, "master", "br0", "up"]);
    out.ip(&["addr", "add", &format!("{OUTSIDE}/24"), "dev", "eth0"]);
    out.ip(&["link", "set", "eth0", "up"]);
    out.ip(&["route", "add", POOL, "via", &lab.hosts[0].ip]);
    out
}

/// `nft list table inet calico` in `ns` (empty when there is none).
fn table(ns: &Netns) -> String {
    String::from_utf8_lossy(&ns.exec(&["nft", "list", "table", "inet", "calico"]).stdout).into_owned()
}

/// The elements of one set in `ns`.
fn set(ns: &Netns, name: &str) -> String {
    let out = ns.exec(&["nft", "list", "set", "inet", "calico", name]);
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("elements")).collect()
}

/// The pool record written straight into etcd (calicoctl adds and removes pools only).
fn put_pool(lab: &Lab, nat: bool) {
    let value = format!(r#"{{"cidr":"{POOL}","block_size":26,"nat_outgoing":{nat}}}"#);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.etcd.ns.name, "etcdctl", "--endpoints", &lab.etcd.url(), "put", POOL_KEY, &value]);
    cmd.env("ETCDCTL_API", "3").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = run_command(cmd, b"");
    assert!(out.ok(), "etcdctl put: {out:#?}");
}

#[test]
fn nat_follows_the_pool_on_every_host_and_a_deleted_table_comes_back() {
    let mut lab = Lab::new(2);
    lab.agent_flags = vec!["--resync-interval".into(), "2s".into()];
    lab.ctl(0, &["pool", "add", POOL, "--nat-outgoing"]).success();
    // Profiles (issue 13): the network's profile admits anyone, so this test sees NAT alone.
    lab.ctl(0, &["profile", "add", "nodenet"]).success();
    lab.ctl(0, &["profile", "nodenet", "rule", "add", "inbound", "allow"]).success();
    lab.start_agents();
    let out = outside(&lab);
    let ips: Vec<String> = (0..2).map(|i| lab.add_container(i)).collect();
    for h in &lab.hosts {
        wait_for(&format!("{}'s pool sets", h.name), Duration::from_secs(5), || {
            set(&h.ns, "masq-pools4").contains(POOL) && set(&h.ns, "all-pools4").contains(POOL)
        });
        let t = table(&h.ns);
        for dev in ["tunl0", "vxlan.calico"] {
            let rule = format!("oifname \"{dev}\" fib saddr . oif type != local fib saddr type local masquerade");
            assert!(t.contains(&rule), "{rule:?} missing: {t}");
        }
    }

    // NAT on: the outside sees host1; between the pool's containers, never rewritten.
    let peer = peer_of(&out, &format!("{OUTSIDE}:7001"), || connect(lab.container(0), &format!("{OUTSIDE}:7001")));
    assert_eq!(peer.ip().to_string(), lab.hosts[0].ip, "a nat-outgoing pool leaves with the host's address");
    for (a, b) in [(0, 1), (1, 0)] {
        let to = format!("{}:7002", ips[b]);
        let peer = peer_of(lab.container(b), "0.0.0.0:7002", || connect(lab.container(a), &to));
        assert_eq!(peer.ip().to_string(), ips[a], "host{} -> host{}: the source is the container's", a + 1, b + 1);
    }

    // NAT off in the datastore: every host's masq set is empty within a second, and the
    // outside sees the container's own address.
    // Timed from etcdctl's return (the write is committed by then): its own start-up on a
    // loaded machine is not the agents' doing.
    put_pool(&lab, false);
    let start = Instant::now();
    for h in &lab.hosts {
        wait_for(
            &format!("{}'s masq set emptied", h.name),
            Duration::from_secs(1).saturating_sub(start.elapsed()),
            || !set(&h.ns, "masq-pools4").contains(POOL),
        );
    }
    let peer = peer_of(&out, &format!("{OUTSIDE}:7003"), || connect(lab.container(0), &format!("{OUTSIDE}:7003")));
    let took = start.elapsed();
    assert_eq!(peer.ip().to_string(), ips[0], "NAT off: the container's own address");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    eprintln!("NAT off seen from outside {took:?} after the write");
    assert!(set(&lab.hosts[0].ns, "all-pools4").contains(POOL), "the pool is still a pool");

    // A container on host1 with a mapped port, for the table's deletion below.
    let mapped = Netns::new("nnm");
    let mut conf: serde_json::Value = serde_json::from_slice(&lab.netconf(0)).unwrap();
    conf["runtimeConfig"] =
        serde_json::json!({"portMappings": [{"hostPort": 8089, "containerPort": 80, "protocol": "tcp"}]});
    let inv = Invocation::new("ADD", "nn-mapped").netns(&mapped.path()).path(&lab.bins.path());
    let conf = serde_json::to_vec(&conf).unwrap();
    inv.run_in(&lab.hosts[0].ns, &lab.bins.plugin("calico"), &conf).expect_ok();
    let ports = |ns: &Netns| {
        String::from_utf8_lossy(&ns.exec(&["nft", "list", "map", "inet", "calico", "ports4"]).stdout).into_owned()
    };
    assert!(ports(&lab.hosts[0].ns).contains("8089"), "{}", ports(&lab.hosts[0].ns));

    // Someone deletes our table: the next resync (2 s) makes it again, rules and all, with
    // the host's port mappings from the endpoint records, and NAT turned on again works
    // through it.
    let h1 = &lab.hosts[0];
    let deleted = h1.ns.exec(&["nft", "delete", "table", "inet", "calico"]);
    assert!(deleted.status.success(), "{deleted:?}");
    let took = wait_for("the table back", Duration::from_secs(5), || set(&h1.ns, "all-pools4").contains(POOL));
    eprintln!("table restored {took:?} after its deletion");
    assert!(table(&h1.ns).contains("masquerade fully-random"), "{}", table(&h1.ns));
    wait_for("the port mapping back", Duration::from_secs(1), || ports(&h1.ns).contains("8089"));
    inv.with_command("DEL").run_in(&h1.ns, &lab.bins.plugin("calico"), &conf).expect_ok();
    assert!(!ports(&h1.ns).contains("8089"), "DEL left the restored mapping: {}", ports(&h1.ns));
    put_pool(&lab, true);
    wait_for("the masq set refilled", Duration::from_secs(1), || set(&h1.ns, "masq-pools4").contains(POOL));
    let peer = peer_of(&out, &format!("{OUTSIDE}:7004"), || connect(lab.container(0), &format!("{OUTSIDE}:7004")));
    assert_eq!(peer.ip().to_string(), h1.ip, "NAT on again after the table came back");

    // The pool removed: gone from every host's sets within a second.
    lab.ctl(0, &["pool", "remove", POOL, "--force"]).success();
    let start = Instant::now();
    for h in &lab.hosts {
        wait_for(&format!("{}'s pool removed", h.name), Duration::from_secs(1).saturating_sub(start.elapsed()), || {
            !set(&h.ns, "all-pools4").contains(POOL) && !set(&h.ns, "masq-pools4").contains(POOL)
        });
    }
}

#[test]
fn host_traffic_into_vxlan_with_the_uplink_source_leaves_with_the_tunnel_address() {
    let mut lab = Lab::new(2);
    lab.ctl(0, &["pool", "add", POOL, "--vxlan"]).success();
    // Profiles (issue 13): the network's profile admits anyone, so this test sees NAT alone.
    lab.ctl(0, &["profile", "add", "nodenet"]).success();
    lab.ctl(0, &["profile", "nodenet", "rule", "add", "inbound", "allow"]).success();
    lab.start_agents();
    let ip2 = lab.add_container(1);
    let shown = lab.ctl(0, &["node", "show", "-o", "json"]).expect_ok();
    let tunnel1 = shown[0]["vxlan_tunnel_addr"].as_str().expect("host1's tunnel address").to_owned();
    let h1 = &lab.hosts[0];
    wait_for("host1's VXLAN route", Duration::from_secs(5), || h1.our_routes().contains("dev vxlan.calico"));
    // From host1, bound to its uplink address: the far container sees the tunnel address.
    let peer = peer_of(lab.container(0), "0.0.0.0:7005", || {
        let mut nc = h1.ns.command("nc");
        nc.args(["-N", "-w", "3", "-s", &h1.ip, &ip2, "7005"]);
        nc.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = run_command(nc, b"");
        assert!(out.ok(), "nc from host1: {out:#?}");
    });
    assert_eq!(peer.ip().to_string(), tunnel1, "masqueraded to host1's tunnel address");
}
