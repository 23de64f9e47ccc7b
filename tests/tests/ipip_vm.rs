//! IPIP for real, under Debian's kernel in a qemu VM: this machine's kernel has no
//! `CONFIG_NET_IPIP`, so the one test here boots a guest (`testkit::vm`, about 15 s) and runs
//! itself again inside it, where every scenario below runs in turn: one boot for them all.
//! A guest that cannot be booted fails the test; nothing is skipped.

use std::time::{Duration, Instant};

use calico_tests::netns::{Fabric, FabricHost, Netns};
use testkit::vm::{self, Vm};

/// The scenarios, run in this order inside the guest.
const SCENARIOS: &[(&str, fn())] = &[("two hosts ping over tunl0", two_hosts_ping_over_tunl0)];

#[test]
fn ipip_in_a_vm() {
    if !vm::in_guest() {
        let run = vm::run_this_test(&Vm::new().timeout(Duration::from_secs(600)), "ipip_in_a_vm");
        run.stdout.lines().filter(|l| l.starts_with("scenario ")).for_each(|l| eprintln!("in the VM: {l}"));
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
