//! BGP, with figures: a block claimed on a host, timed from its commit in etcd to its route
//! on the ToR (a route monitor in the router); BIRD's reconfigurations per new block; and
//! with 200 global peers configured, one more rendered and loaded by BIRD. The bounds
//! asserted here are loose (debug builds on a shared machine); `bench/bgp.sh` runs this
//! against the release build with 20 trials and prints the FIGURE lines.

mod bgp_common;
mod node_common;

use std::time::{Duration, Instant};

use bgp_common::tor_lab;
use datastore::Op;
use node_common::{time_to_line, wait_for, RouteMonitor};

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn block_to_tor_and_reloads_with_200_peers() {
    let trials: usize = std::env::var("BGP_BENCH_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let (lab, tor) = tor_lab();
    let h = &lab.hosts[0];
    let reconf_before = metric(&h.metrics(), "calico_node_bird_reconfigurations");

    // A block claimed (its affinity committed) on host1, then its route on the ToR.
    let mut monitor = RouteMonitor::start(&tor.ns);
    let seen = monitor.lines();
    let url = lab.etcd.url();
    let mut latencies = h.ns.run_in(move || {
        let cfg = datastore::Config { etcd_endpoints: vec![url], ..datastore::Config::default() };
        let store = datastore::open(&cfg).expect("etcd from the host");
        let mut latencies = Vec::new();
        for t in 0..trials {
            let block = format!("10.201.{}.0", 100 + t);
            let key = format!("/calico/ipam/v2/host/host1/ipv4/block/{block}-26");
            let wanted = format!("{block}/26 via 10.200.0.1 ");
            latencies.push(time_to_line(&seen, &wanted, Duration::from_secs(10), || {
                store.txn(&[], &[Op::Put { key, value: b"{}".to_vec() }]).expect("commit");
            }));
        }
        latencies
    });
    drop(monitor);
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    eprintln!(
        "FIGURE block claim to route on the ToR over {trials} blocks: median {median:?}, max {:?}",
        latencies.last().unwrap()
    );
    let reconf = metric(&h.metrics(), "calico_node_bird_reconfigurations") - reconf_before;
    eprintln!("FIGURE BIRD reconfigurations for {trials} new blocks: {reconf}");
    assert_eq!(reconf, 0, "a new block must not reconfigure BIRD");
    assert!(median < Duration::from_secs(1), "median {median:?}");

    // 200 global peers (TEST-NET-3 addresses, never answering), then one more: the agent's
    // own time to render, check, write and load the config.
    let url = lab.etcd.url();
    h.ns.run_in(move || {
        let cfg = datastore::Config { etcd_endpoints: vec![url], ..datastore::Config::default() };
        let store = datastore::open(&cfg).expect("etcd from the host");
        let ops: Vec<Op> = (0..200)
            .map(|i| {
                let ip = format!("203.0.{}.{}", 113 + i / 250, 1 + i % 250);
                let value = format!(r#"{{"ip":"{ip}","as_num":65100}}"#).into_bytes();
                Op::Put { key: format!("/calico/bgp/v1/global/peer_v4/{ip}"), value }
            })
            .collect();
        for chunk in ops.chunks(100) {
            store.txn(&[], chunk).expect("commit");
        }
    });
    let protocols = || h.birdc(&["show", "protocols"]).lines().filter(|l| l.starts_with("Global_")).count();
    wait_for("200 peers in BIRD", Duration::from_secs(30), || protocols() == 200);
    let lines_before = h.log().lines().count();
    let url = lab.etcd.url();
    let started = Instant::now();
    h.ns.run_in(move || {
        let cfg = datastore::Config { etcd_endpoints: vec![url], ..datastore::Config::default() };
        let store = datastore::open(&cfg).expect("etcd from the host");
        let value = br#"{"ip":"203.0.114.1","as_num":65100}"#.to_vec();
        store.txn(&[], &[Op::Put { key: "/calico/bgp/v1/global/peer_v4/203.0.114.1".into(), value }]).expect("commit");
    });
    wait_for("the 201st peer in BIRD", Duration::from_secs(10), || protocols() == 201);
    let end_to_end = started.elapsed();
    let log = h.log();
    let ms: f64 = log
        .lines()
        .skip(lines_before)
        .filter(|l| l.contains("BIRD runs the new config"))
        .find_map(|l| l.split("ms=").nth(1)?.split_whitespace().next()?.parse().ok())
        .expect("the agent's timing in its log");
    eprintln!(
        "FIGURE with 200 global peers, one more: rendered, checked (bird -p), written and loaded in {ms:.1} ms \
         (commit to the session in BIRD's list: {end_to_end:?})"
    );
    assert!(ms < 1000.0, "{ms} ms");
}
