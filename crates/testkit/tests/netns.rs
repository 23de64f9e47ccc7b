//! The netns harness itself: namespaces are fresh, named uniquely, gone after a drop (also
//! a panicking test's), and a fabric joins its hosts on one subnet.

use std::os::unix::fs::MetadataExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use testkit::netns::{bare_host, host, Fabric, Netns, HOST_V4};

fn exists(name: &str) -> bool {
    testkit::ip(&["netns", "list"]).lines().any(|l| l.split_whitespace().next() == Some(name))
}

fn thread_netns_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net").expect("stat thread netns").ino()
}

#[test]
fn a_new_netns_is_fresh_unique_and_entered_by_run_in() {
    let (a, b) = (Netns::new("tka"), Netns::new("tka"));
    assert_ne!(a.name, b.name);
    assert!(a.name.starts_with("tka") && a.name.contains(&std::process::id().to_string()), "{}", a.name);
    assert!(a.ip(&["link", "show", "lo"]).contains("UP"));
    assert_eq!(a.sysctl("net/ipv4/ip_forward"), "0");
    assert_eq!(a.sysctl("net.ipv4.ip_forward"), "0", "the dotted form reads the same");
    assert_eq!(a.links(), ["lo"]);
    let ours = thread_netns_inode();
    let inside = a.run_in(thread_netns_inode);
    assert_eq!(inside, std::fs::metadata(a.path()).unwrap().ino());
    assert_ne!(inside, ours);
    assert_eq!(thread_netns_inode(), ours, "the calling thread never moves");
}

#[test]
fn drop_deletes_the_netns_also_when_the_test_panics() {
    let mut name = String::new();
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        let ns = Netns::new("tkp");
        name = ns.name.clone();
        assert!(exists(&name));
        ns.run_in(|| panic!("a failing test body"));
    }));
    let message = panicked.expect_err("the body panicked");
    assert_eq!(message.downcast_ref::<&str>(), Some(&"a failing test body"), "run_in keeps the message");
    assert!(!name.is_empty() && !exists(&name), "{name} is left behind");
}

#[test]
fn hosts_with_and_without_an_uplink() {
    let h = host();
    assert!(h.routes().contains("default via 10.255.255.2 dev up0"), "{}", h.routes());
    assert!(h.ping(HOST_V4));
    let bare = bare_host();
    assert!(!bare.routes().contains("default"), "{}", bare.routes());
}

#[test]
fn a_fabric_joins_hosts_on_one_subnet_and_takes_their_links_along() {
    let fabric = Fabric::new();
    let hosts: Vec<_> = (0..3).map(|_| fabric.join("tkh")).collect();
    assert_eq!((hosts[0].v4.as_str(), hosts[2].v4.as_str()), ("198.18.0.1", "198.18.0.3"));
    for (i, h) in hosts.iter().enumerate() {
        assert!(h.routes().contains(&format!("default via {}", Fabric::V4)), "{}", h.routes());
        assert!(h.ping(Fabric::V4) && h.ping(Fabric::V6), "host {i} cannot reach the fabric");
        let next = &hosts[(i + 1) % hosts.len()];
        assert!(h.ping(&next.v4) && h.ping(&next.v6), "host {i} cannot reach {}", next.v4);
    }
    assert_eq!(fabric.ns.links().iter().filter(|l| l.starts_with('h')).count(), 3);
    let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    drop(fabric);
    // The hosts live on, without their fabric link once the kernel has dismantled the fabric
    // (asynchronously, after the last reference to it went).
    let deadline = Instant::now() + Duration::from_secs(10);
    while hosts.iter().any(|h| h.links().contains(&"eth0".to_owned())) {
        assert!(Instant::now() < deadline, "the fabric's links outlive it");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(hosts);
    assert!(names.iter().all(|n| !exists(n)));
}
