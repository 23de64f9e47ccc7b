//! The etcd harness itself: writes, revisions and compaction through etcdctl, a member
//! stopped and started on its data, a 3-member cluster losing its leader, and a member inside
//! a netns that only that netns's neighbours reach.

use std::os::unix::fs::MetadataExt;

use testkit::etcd::{Etcd, EtcdCluster};
use testkit::netns::Fabric;

/// No etcd has the pid `pid` (the member was killed and reaped).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map_or(true, |comm| comm.trim() != "etcd")
}

fn netns_inode(pid: u32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/net")).expect("the member's netns").ino()
}

#[test]
fn one_member_keeps_its_data_across_a_restart_and_compacts() {
    let mut etcd = Etcd::start();
    assert!(etcd.client_url.starts_with("http://127.0.0.1:"), "{}", etcd.client_url);
    etcd.put("/t/a", "1");
    let first = etcd.revision();
    etcd.put("/t/b", "2");
    assert_eq!(etcd.revision(), first + 1);
    etcd.compact(first + 1);
    let old = etcd.etcdctl(&["get", "/t/a", &format!("--rev={first}")]);
    assert!(!old.status.success(), "history before the compaction is gone");
    assert!(String::from_utf8_lossy(&old.stderr).contains("compacted"), "{old:?}");

    let pid = etcd.members[0].pid().expect("running");
    etcd.stop();
    assert!(gone(pid), "the killed member is reaped");
    assert!(!etcd.etcdctl(&["get", "/t/a"]).status.success());
    etcd.restart();
    assert_eq!(etcd.keys("/t/"), ["/t/a", "/t/b"]);
}

#[test]
fn a_three_member_cluster_survives_its_leader() {
    let mut cluster = EtcdCluster::builder().members(3).fast_elections().start();
    assert_eq!(cluster.endpoints().split(',').count(), 3);
    cluster.put("/c/1", "x");
    let leader = cluster.leader();
    cluster.stop_member(leader);
    assert_eq!(cluster.running(), 2);
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);
    cluster.put("/c/2", "y");
    cluster.start_member(leader);
    assert_eq!(cluster.running(), 3);
    assert_eq!(cluster.keys("/c/"), ["/c/1", "/c/2"]);
}

#[test]
fn a_member_inside_a_netns_serves_the_hosts_of_its_fabric() {
    let fabric = Fabric::new();
    let host = fabric.join("tke");
    let etcd = Etcd::start_in(&fabric.ns, Fabric::V4);
    assert!(etcd.client_url.starts_with("http://198.18.0.254:"), "{}", etcd.client_url);
    let pid = etcd.members[0].pid().expect("running");
    assert_eq!(netns_inode(pid), std::fs::metadata(fabric.ns.path()).unwrap().ino(), "etcd runs in the fabric netns");

    let endpoints = format!("--endpoints={}", etcd.client_url);
    let put = host.exec(&["env", "ETCDCTL_API=3", "etcdctl", &endpoints, "put", "/n/from-host", "1"]);
    assert!(put.status.success(), "{put:?}");
    assert_eq!(etcd.keys("/n/"), ["/n/from-host"]);
    drop(etcd);
    assert!(gone(pid), "the member is killed on drop");
}
