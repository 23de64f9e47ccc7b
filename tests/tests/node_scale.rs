//! calico-node at scale, with figures: a simulated cluster of 1,000 nodes × 4 blocks in etcd
//! (no real hosts needed), one real host's agent programming the 4,000 routes; then single
//! block changes timed from their commit to the route in the kernel, the agent's memory and
//! its idle CPU. The bounds asserted here are loose (debug builds on a shared machine);
//! `bench/node.sh` runs this against the release build and prints the figures.

mod node_common;

use std::time::{Duration, Instant};

use datastore::Op;
use node_common::{big_pool_block, time_to_line, wait_for, Lab, RouteMonitor, BIG_POOL};

fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn a_thousand_nodes_of_four_blocks() {
    let nodes: usize = std::env::var("NODE_SCALE_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let trials: usize = std::env::var("NODE_SCALE_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let idle_secs: u64 = std::env::var("NODE_SCALE_IDLE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let mut lab = Lab::new(1);
    lab.ctl(0, &["pool", "add", BIG_POOL]).success();
    let blocks = lab.fake_nodes(nodes, 4);
    let started = Instant::now();
    lab.start_agent(0);
    let h = &lab.hosts[0];
    let want = format!("calico_node_routes {}", blocks.len());
    wait_for("every route programmed", Duration::from_secs(60), || h.metrics().contains(&want));
    let first = started.elapsed();
    let sync_ms = h
        .log()
        .lines()
        .find(|l| l.contains("full sync"))
        .and_then(|l| l.split("ms=").nth(1))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert_eq!(h.our_routes().lines().count(), blocks.len());
    eprintln!(
        "FIGURE first sync: {} routes programmed {:?} after the start (the agent's own full sync: {sync_ms} ms)",
        blocks.len(),
        first
    );

    // One block change at a time: commit in etcd (from a client in the host's netns), then the
    // route seen by a route monitor in the host.
    let pid = h.agent.0.as_ref().expect("agent").id();
    let mut monitor = RouteMonitor::start(&h.ns.name);
    let seen = monitor.lines();
    let url = lab.etcd.url();
    let mut latencies = h.ns.run_in(move || {
        let cfg = datastore::Config { etcd_endpoints: vec![url], ..datastore::Config::default() };
        let store = datastore::open(&cfg).expect("etcd from the host");
        let mut latencies = Vec::new();
        for t in 0..trials {
            let block = big_pool_block(10_000 + t);
            let key = format!("/calico/ipam/v2/host/fake{}/ipv4/block/{block}-26", t % nodes);
            // Timed from the commit's start: the agents hear of it as the writer does, and the
            // route is often in before the writer has its answer.
            let wanted = format!("{block}/26 via");
            latencies.push(time_to_line(&seen, &wanted, Duration::from_secs(5), || {
                store.txn(&[], &[Op::Put { key, value: b"{}".to_vec() }]).expect("commit");
            }));
            std::thread::sleep(Duration::from_millis(20));
        }
        latencies
    });
    drop(monitor);
    latencies.sort();
    let (median, max) = (percentile(&latencies, 0.5), *latencies.last().expect("trials"));
    eprintln!(
        "FIGURE convergence over {trials} block changes, from the commit request to the route: median {median:?}, p90 {:?}, max {max:?}",
        percentile(&latencies, 0.9)
    );
    assert!(median < Duration::from_millis(250), "median {median:?}");

    // Memory and idle CPU.
    let hwm = proc_status(pid, "VmHWM:");
    let rss = proc_status(pid, "VmRSS:");
    let ticks = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(idle_secs));
    let idle = cpu_ticks(pid) - ticks;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let idle_pct = idle as f64 / hz / idle_secs as f64 * 100.0;
    eprintln!(
        "FIGURE agent memory: RSS {:.1} MiB (peak {:.1} MiB); idle CPU {idle_pct:.2}% over {idle_secs} s",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    assert!(idle_pct < 5.0, "idle CPU {idle_pct:.2}%");
}
