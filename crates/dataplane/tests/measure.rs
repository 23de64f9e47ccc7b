//! Measures one workload's ADD (create_veth + setup_container + setup_host)
//! and DEL (teardown), and counts netlink requests. Prints figures; asserts
//! only the request counts, never timings. Not in the default suite
//! (`test = false` in Cargo.toml): `bench/dataplane.sh` runs it in release.

mod common;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use common::Lab;
use dataplane::{host_veth_name, setup_container, setup_host, teardown, ContainerConfig, Namespace, VethEnd};

const ROUNDS: usize = 20;

struct Sample {
    /// open netns + netlink, create_veth, setup_container, setup_host.
    steps: [Duration; 4],
    add: Duration,
    del: Duration,
    add_requests: u64,
}

fn one_round(host: &Namespace, path: &std::path::Path, addrs: &[IpAddr], gap: Duration) -> Sample {
    let veth = host_veth_name("measure");
    let host_before = host.netlink().request_count();
    let start = Instant::now();
    let container = Namespace::open(path).expect("open container");
    let opened = start.elapsed();
    let host_end = VethEnd::host(veth.clone(), Some(1450));
    let peer_end = VethEnd::container("eth0", None);
    host.netlink().create_veth(&host_end, &peer_end, container.netns()).expect("create veth");
    let created = start.elapsed();
    let config = ContainerConfig { ifname: "eth0", addresses: addrs, ip_forward: false };
    setup_container(&container, &config).expect("setup container");
    let configured = start.elapsed();
    setup_host(host, &veth, addrs).expect("setup host");
    let add = start.elapsed();
    let steps = [opened, created - opened, configured - created, add - configured];
    let add_requests = host.netlink().request_count() - host_before + container.netlink().request_count();
    drop(container);

    let start = Instant::now();
    teardown(host, &veth, Some(path), "eth0").expect("teardown");
    let del = start.elapsed();
    // Separate CNI calls are separate processes, not a tight loop: right
    // after a veth deletion, starting a thread was measured ~4 ms slower on
    // this 2-core machine. Pause (untimed) so each round starts quiet;
    // `gap` = 0 shows the back-to-back figure.
    std::thread::sleep(gap);
    Sample { steps, add, del, add_requests }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn measure(label: &str, addrs: &[IpAddr], gap: Duration, expected_requests: u64) {
    let lab = Lab::new(1);
    let path = std::path::PathBuf::from(lab.containers[0].path());
    let samples: Vec<Sample> = lab.in_host(|| {
        let host = Namespace::current().expect("host namespace");
        (0..ROUNDS).map(|_| one_round(&host, &path, addrs, gap)).collect()
    });
    let requests = samples[0].add_requests;
    assert!(samples.iter().all(|s| s.add_requests == requests));
    let add = median(samples.iter().map(|s| s.add).collect());
    let del = median(samples.iter().map(|s| s.del).collect());
    let total = median(samples.iter().map(|s| s.add + s.del).collect());
    let steps: Vec<Duration> = (0..4).map(|i| median(samples.iter().map(|s| s.steps[i]).collect())).collect();
    println!(
        "{label} (gap {gap:?}): ADD median {add:?} (open netns {:?}, create_veth {:?}, setup_container {:?}, \
         setup_host {:?}), DEL median {del:?}, ADD+DEL median {total:?} over {ROUNDS} rounds; \
         {requests} netlink requests per ADD",
        steps[0], steps[1], steps[2], steps[3]
    );
    assert_eq!(requests, expected_requests, "{label}");
}

#[test]
fn measure_ipv4_workload() {
    // create 1 + container (get link; one batch: up, 1 address, 2 routes, 1 neighbour) 2
    // + host (get link, up, 1 route) 3.
    let addrs = ["10.65.9.2".parse().expect("ip")];
    measure("ipv4", &addrs, Duration::from_millis(50), 6);
    measure("ipv4", &addrs, Duration::ZERO, 6);
}

#[test]
fn measure_dual_stack_workload() {
    // create 1 + container (get; one batch: up, 2 addresses, 3 routes, 2 neighbours) 2
    // + host (get, up, 2 routes) 4.
    let addrs = ["10.65.9.2".parse().expect("ip"), "fd00:65::9".parse().expect("ip")];
    measure("dual-stack", &addrs, Duration::from_millis(50), 7);
}
