//! IPIP for real, under Debian's kernel in a qemu VM: this machine's kernel has no
//! `CONFIG_NET_IPIP`, so the one test here boots a guest (`testkit::vm`, about 15 s) and runs
//! itself again inside it, where every scenario below runs in turn: one boot for them all.
//! A guest that cannot be booted fails the test; nothing is skipped.

mod node_common;

use std::time::{Duration, Instant};

use calico_tests::netns::{Fabric, FabricHost, Netns};
use testkit::vm::{self, Vm};

/// The scenarios, run in this order inside the guest.
const SCENARIOS: &[(&str, fn())] = &[
    ("two hosts ping over tunl0", two_hosts_ping_over_tunl0),
    ("three hosts, calico-node and calico-cni over IPIP", three_hosts_over_ipip_with_calico_node),
    ("IPIP cross-subnet across a router", ipip_cross_subnet_across_a_router),
];

#[test]
fn ipip_in_a_vm() {
    if !vm::in_guest() {
        let run = vm::run_this_test(&Vm::new().timeout(Duration::from_secs(600)), "ipip_in_a_vm");
        run.stdout
            .lines()
            .filter(|l| l.starts_with("scenario ") || l.starts_with("ipip: "))
            .for_each(|l| eprintln!("in the VM: {l}"));
        return;
    }
    // `modprobe ipip` makes tunl0 in every netns, those made later included.
    testkit::run("modprobe", &["ipip"]);
    let mut failed = Vec::new();
    for (name, scenario) in SCENARIOS {
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(scenario);
        let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
        // On a line of its own: libtest's "test ... " has no newline yet.
        println!("\nscenario {name}: {verdict} ({:.1} s)", started.elapsed().as_secs_f64());
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "scenarios failed in the VM: {failed:?}");
}

/// A counter of tunl0 in `ns`, from sysfs (`tx_packets`, `rx_packets`).
fn tunl0_counter(ns: &Netns, counter: &str) -> u64 {
    let out = ns.exec(&["cat", &format!("/sys/class/net/tunl0/statistics/{counter}")]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().unwrap_or_else(|_| panic!("tunl0 {counter} in {}: {text:?}", ns.name))
}

/// Two hosts on one bridge, each with a tunnel address on tunl0 and a route to the other's
/// block over it, as calico-node programs IPIP: pings cross, and both tunnels count them.
fn two_hosts_ping_over_tunl0() {
    let fabric = Fabric::new();
    let (a, b) = (fabric.join("vma"), fabric.join("vmb"));
    let tunnel = |h: &FabricHost, addr: &str, peer_block: &str, peer: &FabricHost| {
        h.ip(&["addr", "add", &format!("{addr}/32"), "dev", "tunl0"]);
        h.ip(&["link", "set", "tunl0", "up"]);
        h.ip(&["route", "add", peer_block, "via", &peer.v4, "dev", "tunl0", "onlink"]);
    };
    tunnel(&a, "10.244.1.1", "10.244.2.0/26", &b);
    tunnel(&b, "10.244.2.1", "10.244.1.0/26", &a);
    let route = a.ip(&["route", "get", "10.244.2.1"]);
    assert!(route.contains(&format!("via {} dev tunl0", b.v4)), "A routes B's block elsewhere: {route}");

    let (a_tx, b_rx) = (tunl0_counter(&a, "tx_packets"), tunl0_counter(&b, "rx_packets"));
    assert!(a.ping("10.244.2.1"), "A cannot ping B's tunnel address over tunl0");
    assert!(b.ping("10.244.1.1"), "B cannot ping A's tunnel address over tunl0");
    let (sent, received) = (tunl0_counter(&a, "tx_packets") - a_tx, tunl0_counter(&b, "rx_packets") - b_rx);
    assert!(sent >= 2 && received >= 2, "the pings did not go through tunl0: A sent {sent}, B received {received}");
}

/// The block (a /26 of the pool) holding `ip`.
fn block_of(ip: &str) -> String {
    let octets: Vec<u32> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    format!("{}.{}.{}.{}/26", octets[0], octets[1], octets[2], octets[3] & !63)
}

/// Three hosts on one bridge, etcd in a namespace of its own, a calico-node on each and an
/// IPIP pool: each agent sets tunl0 up (MTU 1480, its tunnel address from its own block,
/// stored in its node record), routes the others' blocks `via <host> dev tunl0 onlink`,
/// writes 1480 to its MTU file; containers added by calico-cni ping across hosts and tunl0
/// counts every packet. The pool going takes the routes and the addresses away.
fn three_hosts_over_ipip_with_calico_node() {
    let mut lab = node_common::Lab::new(3);
    lab.ctl(0, &["pool", "add", "10.201.0.0/16", "--ipip"]).success();
    let started = Instant::now();
    lab.start_agents();
    println!("\nipip: three agents ready in {:.2} s", started.elapsed().as_secs_f64());
    let ips: Vec<String> = (0..3).map(|i| lab.add_container(i)).collect();
    let shown = lab.ctl(0, &["node", "show", "-o", "json"]).expect_ok();
    let tunnel = |i: usize| shown[i]["ipip_tunnel_addr"].as_str().expect("an IPIP tunnel address").to_owned();
    for (i, h) in lab.hosts.iter().enumerate() {
        assert_eq!(block_of(&tunnel(i)), block_of(&ips[i]), "the tunnel address comes from the host's block");
        assert!(shown[i]["vxlan_tunnel_addr"].is_null(), "{shown}");
        let started = Instant::now();
        node_common::wait_for(&format!("{}'s IPIP routes", h.name), Duration::from_secs(5), || {
            let routes = h.our_routes();
            (0..3)
                .filter(|j| *j != i)
                .all(|j| routes.contains(&format!("{} via {} dev tunl0 onlink", block_of(&ips[j]), lab.hosts[j].ip)))
        });
        println!("ipip: {}'s routes in {:.2} s", h.name, started.elapsed().as_secs_f64());
        let link = h.ns.ip(&["link", "show", "tunl0"]);
        assert!(link.contains("mtu 1480") && link.contains(",UP"), "tunl0 in {}: {link}", h.name);
        let addresses = h.ns.ip(&["-4", "addr", "show", "dev", "tunl0"]);
        assert!(addresses.contains(&format!("inet {}/32", tunnel(i))), "tunl0 in {}: {addresses}", h.name);
        let mtu = std::fs::read_to_string(h.dir.path().join("mtu")).unwrap_or_default();
        assert_eq!(mtu, "1480\n", "{}'s MTU file", h.name);
        let route = h.ns.ip(&["route", "get", &ips[(i + 1) % 3]]);
        assert!(route.contains(" dev tunl0 "), "{}: {route}", h.name);
    }
    let counters = |lab: &node_common::Lab| -> Vec<(u64, u64)> {
        lab.hosts.iter().map(|h| (tunl0_counter(&h.ns, "tx_packets"), tunl0_counter(&h.ns, "rx_packets"))).collect()
    };
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        let before = counters(&lab);
        assert!(lab.container(a).ping(&ips[b]), "host{} -> host{} over IPIP", a + 1, b + 1);
        let after = counters(&lab);
        let (sent, received) = (after[a].0 - before[a].0, after[b].1 - before[b].1);
        assert!(sent >= 1 && received >= 1, "host{} -> host{}: tunl0 sent {sent}, received {received}", a + 1, b + 1);
        let (back_sent, back_received) = (after[b].0 - before[b].0, after[a].1 - before[a].1);
        assert!(back_sent >= 1 && back_received >= 1, "the replies did not come back over tunl0");
    }
    // From a host itself the source is its tunnel address, which the other end routes back
    // over its own tunl0.
    // Profiles (issue 13): another host is not a member of the network's profile; a rule
    // admits host1's tunnel address.
    lab.ctl(
        0,
        &["profile", "nodenet", "rule", "add", "inbound", "allow", "from", "cidr", &format!("{}/32", tunnel(0))],
    )
    .success();
    node_common::wait_for("host1 itself -> host2's container over IPIP", Duration::from_secs(5), || {
        lab.hosts[0].ns.ping(&ips[1])
    });
    // No IPIP pool left: every route goes, and each tunl0 loses its address (tunl0 stays).
    lab.ctl(0, &["pool", "remove", "10.201.0.0/16", "--force"]).success();
    for h in &lab.hosts {
        node_common::wait_for(&format!("{}'s IPIP gone", h.name), Duration::from_secs(5), || {
            h.our_routes().trim().is_empty() && !h.ns.ip(&["-4", "addr", "show", "dev", "tunl0"]).contains("inet ")
        });
    }
    let shown = lab.ctl(0, &["node", "show", "-o", "json"]).expect_ok();
    assert!((0..3).all(|i| shown[i]["ipip_tunnel_addr"].is_null()), "{shown}");
}

/// Two subnets joined by a router that knows no pool route: with `--ipip cross-subnet`,
/// host1 reaches host2 (same subnet) directly and host3 (the other subnet) over tunl0, and
/// host3 reaches both over tunl0; only the tunnel gets through the router.
fn ipip_cross_subnet_across_a_router() {
    let mut lab = node_common::Lab::with_subnets(&[2, 1]);
    lab.ctl(0, &["pool", "add", "10.201.0.0/16", "--ipip", "cross-subnet"]).success();
    lab.start_agents();
    let ips: Vec<String> = (0..3).map(|i| lab.add_container(i)).collect();
    let (h1, h3) = (&lab.hosts[0], &lab.hosts[2]);
    node_common::wait_for("host1's routes", Duration::from_secs(5), || {
        let routes = h1.our_routes();
        routes.contains(&format!("{} via {} dev eth0 onlink", block_of(&ips[1]), lab.hosts[1].ip))
            && routes.contains(&format!("{} via {} dev tunl0 onlink", block_of(&ips[2]), h3.ip))
    });
    node_common::wait_for("host3's routes", Duration::from_secs(5), || {
        let routes = h3.our_routes();
        (0..2).all(|j| routes.contains(&format!("{} via {} dev tunl0 onlink", block_of(&ips[j]), lab.hosts[j].ip)))
    });
    for (a, b) in [(0, 1), (0, 2), (2, 1)] {
        let before = tunl0_counter(&lab.hosts[a].ns, "tx_packets");
        assert!(lab.container(a).ping(&ips[b]), "host{} -> host{}", a + 1, b + 1);
        let sent = tunl0_counter(&lab.hosts[a].ns, "tx_packets") - before;
        let across = (a == 2) != (b == 2);
        assert_eq!(sent >= 1, across, "host{} -> host{}: tunl0 sent {sent}", a + 1, b + 1);
    }
    let router = lab.router.as_ref().expect("router").ip(&["route", "show"]);
    assert!(!router.contains("10.201."), "the router knows no pool route: {router}");
}
