use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use cni::CniCode;
use datastore::memory::MemoryStore;
use datastore::Op;
use ipnetwork::IpNetwork;

use super::*;
use crate::pool;
use crate::report;

fn cidr(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn owner(id: &str) -> Owner {
    Owner {
        handle: format!("net.{id}"),
        network: "net".into(),
        container_id: id.into(),
        ifname: "eth0".into(),
        ..Default::default()
    }
}

fn v4(id: &str) -> Request {
    Request { owner: owner(id), v4: Some(vec![]), ..Default::default() }
}

fn add_pool(s: &dyn Datastore, c: &str, block: u8) {
    let mut p = Pool::new(cidr(c));
    p.block_size = block;
    pool::add(s, &p).unwrap();
}

fn ips(a: &[Assigned]) -> Vec<IpAddr> {
    a.iter().map(|a| a.ip).collect()
}

fn assert_clean(s: &dyn Datastore) {
    let r = report::check(s).unwrap();
    assert!(r.is_clean(), "ipam check: {:?}", r.problems);
}

#[test]
fn first_add_creates_default_pool_and_affine_block() {
    let s = MemoryStore::new();
    let ipam = Ipam::new(&s, "node1");
    let a = ipam.assign(&v4("c1")).unwrap();
    assert_eq!(ips(&a), vec!["192.168.0.0".parse::<IpAddr>().unwrap()]);
    assert!(a[0].pool.nat_outgoing);
    let affinity = s.get(&keys::affinity("node1", &cidr("192.168.0.0/26"))).unwrap();
    assert!(affinity.is_some());
    assert_clean(&s);
}

#[test]
fn a_failed_add_leaves_no_default_pool() {
    let s = MemoryStore::new();
    let ipam = Ipam::new(&s, "node1");
    let mut unknown = v4("c1");
    unknown.v4 = Some(vec![cidr("10.99.0.0/24")]);
    assert!(matches!(ipam.assign(&unknown), Err(Error::PoolNotFound { .. })));
    let outside = Request { owner: owner("c2"), ips: vec!["10.9.9.9".parse().unwrap()], ..Default::default() };
    assert!(matches!(ipam.assign(&outside), Err(Error::AddressNotInPool { .. })));
    // Dual-stack without an IPv6 pool: the IPv4 half (and the pool it created) is undone.
    let dual = Request { v6: Some(vec![]), ..v4("c3") };
    assert!(matches!(ipam.assign(&dual), Err(Error::NoPools { family: 6 })));
    assert!(pool::list(&s, None).unwrap().is_empty());
    assert!(s.list("/").unwrap().is_empty(), "nothing at all is left: {:?}", s.list("/").unwrap());
    // The next ADD that succeeds creates it.
    ipam.assign(&v4("c4")).unwrap();
    assert_eq!(pool::list(&s, None).unwrap(), vec![pool::default_v4()]);
    assert_clean(&s);
}

#[test]
fn repeated_add_returns_same_address_and_del_is_idempotent() {
    let s = MemoryStore::new();
    let ipam = Ipam::new(&s, "node1");
    let first = ipam.assign(&v4("c1")).unwrap();
    assert_eq!(ipam.assign(&v4("c1")).unwrap(), first);
    let other = ipam.assign(&v4("c2")).unwrap();
    assert_ne!(ips(&first), ips(&other));
    assert_eq!(ipam.release_handle("net.c1").unwrap(), ips(&first));
    assert!(ipam.release_handle("net.c1").unwrap().is_empty());
    assert!(ipam.release_handle("net.never").unwrap().is_empty());
    assert_clean(&s);
}

#[test]
fn exhaustion_names_the_pools() {
    let s = MemoryStore::new();
    add_pool(&s, "10.1.0.0/29", 29);
    let ipam = Ipam::new(&s, "node1");
    let mut seen = HashSet::new();
    for i in 0..8 {
        assert!(seen.insert(ipam.assign(&v4(&format!("c{i}"))).unwrap()[0].ip));
    }
    let err = ipam.assign(&v4("c8")).unwrap_err();
    assert!(matches!(err, Error::Exhausted { .. }), "{err}");
    assert!(err.to_string().contains("10.1.0.0/29"), "{err}");
    assert_eq!(err.cni_code(), crate::CODE_EXHAUSTED);
    assert!(s.get(&keys::handle("net.c8")).unwrap().is_none(), "a failed ADD leaves no handle");
    assert_clean(&s);
}

#[test]
fn borrows_from_another_hosts_block_when_no_block_is_free() {
    let s = MemoryStore::new();
    add_pool(&s, "10.1.0.0/29", 29);
    let a = Ipam::new(&s, "host-a").assign(&v4("a1")).unwrap();
    let b = Ipam::new(&s, "host-b").assign(&v4("b1")).unwrap();
    assert!(cidr("10.1.0.0/29").contains(b[0].ip));
    assert_ne!(a[0].ip, b[0].ip);
    assert!(s.list(&keys::affinity_prefix("host-b", 4)).unwrap().is_empty(), "borrowing claims nothing");
    Ipam::new(&s, "host-b").release_handle("net.b1").unwrap();
    assert_clean(&s);
}

#[test]
fn pool_selection_and_disabled_pools() {
    let s = MemoryStore::new();
    add_pool(&s, "10.1.0.0/24", 26);
    add_pool(&s, "10.2.0.0/24", 26);
    let mut off = Pool::new(cidr("10.3.0.0/24"));
    off.disabled = true;
    pool::add(&s, &off).unwrap();
    let ipam = Ipam::new(&s, "n");
    let mut req = v4("c1");
    req.v4 = Some(vec![cidr("10.2.0.0/24")]);
    assert!(cidr("10.2.0.0/24").contains(ipam.assign(&req).unwrap()[0].ip));
    req.owner = owner("c2");
    req.v4 = Some(vec![cidr("10.3.0.0/24")]);
    assert!(matches!(ipam.assign(&req), Err(Error::PoolDisabled { .. })));
    req.v4 = Some(vec![cidr("10.9.0.0/24")]);
    assert!(matches!(ipam.assign(&req), Err(Error::PoolNotFound { .. })));
    // Automatic selection never uses the disabled pool, even when others are full.
    for i in 0..600 {
        match ipam.assign(&v4(&format!("x{i}"))) {
            Ok(a) => assert!(!cidr("10.3.0.0/24").contains(a[0].ip)),
            Err(Error::Exhausted { pools, .. }) => {
                assert!(!pools.contains(&cidr("10.3.0.0/24")));
                assert_eq!(i, 511, "two /24 pools hold 512 addresses, one is taken");
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let mut ip_req = v4("c3");
    ip_req.ips = vec!["10.3.0.5".parse().unwrap()];
    assert!(matches!(ipam.assign(&ip_req), Err(Error::PoolDisabled { .. })));
    assert_clean(&s);
}

#[test]
fn specific_addresses() {
    let s = MemoryStore::new();
    add_pool(&s, "10.1.0.0/16", 26);
    let ipam = Ipam::new(&s, "n");
    let mut req = v4("c1");
    req.ips = vec!["10.1.7.9".parse().unwrap()];
    assert_eq!(ips(&ipam.assign(&req).unwrap()), req.ips);
    assert_eq!(ips(&ipam.assign(&req).unwrap()), req.ips, "repeat is idempotent");
    req.owner = owner("c2");
    let err = ipam.assign(&req).unwrap_err();
    assert!(matches!(err, Error::AddressInUse { .. }), "{err}");
    req.ips = vec!["172.16.0.1".parse().unwrap()];
    assert!(matches!(ipam.assign(&req), Err(Error::AddressNotInPool { .. })));
    assert_eq!(ipam.release_ips(&["10.1.7.9".parse().unwrap()]).unwrap()[0].1.as_deref(), Some("net.c1"));
    assert!(s.get(&keys::handle("net.c1")).unwrap().is_none());
    assert_clean(&s);
}

#[test]
fn dual_stack_never_leaves_half_an_allocation() {
    let s = MemoryStore::new();
    add_pool(&s, "10.1.0.0/24", 26);
    add_pool(&s, "fd00:1::/120", 122);
    let ipam = Ipam::new(&s, "n");
    let mut req = v4("c1");
    req.v6 = Some(vec![]);
    let a = ipam.assign(&req).unwrap();
    assert_eq!(a.len(), 2);
    assert!(a[0].ip.is_ipv4() && a[1].ip.is_ipv6());
    // Fill the IPv6 pool (256 addresses, one used), then a dual-stack ADD must fail whole.
    for i in 0..255 {
        let r = Request { owner: owner(&format!("six{i}")), v6: Some(vec![]), ..Default::default() };
        ipam.assign(&r).unwrap();
    }
    req.owner = owner("c2");
    assert!(matches!(ipam.assign(&req), Err(Error::Exhausted { family: 6, .. })));
    assert!(s.get(&keys::handle("net.c2")).unwrap().is_none());
    let used: usize = report::usage(&s).unwrap().iter().filter(|u| u.pool.cidr.is_ipv4()).map(|u| u.used).sum();
    assert_eq!(used, 1, "the IPv4 address of the failed ADD was given back");
    assert_clean(&s);
}

#[test]
fn conflicts_retry_then_give_up() {
    let s = MemoryStore::new();
    add_pool(&s, "10.1.0.0/24", 26);
    let ipam = Ipam::new(&s, "n");
    s.conflict_next_txns(3);
    ipam.assign(&v4("c1")).unwrap();
    s.conflict_next_txns(10_000);
    let err = ipam.assign(&v4("c2")).unwrap_err();
    assert!(matches!(err, Error::TooMuchContention { .. }), "{err}");
    assert_eq!(err.cni_code(), cni::code::TRY_AGAIN_LATER);
    s.conflict_next_txns(0);
    s.fail_next_txns(1);
    let err = ipam.assign(&v4("c3")).unwrap_err();
    assert_eq!(err.cni_code(), cni::code::TRY_AGAIN_LATER, "{err}");
    assert_clean(&s);
}

#[test]
fn steady_state_reads_one_block_however_many_are_full() {
    let s = MemoryStore::new();
    add_pool(&s, "10.0.0.0/16", 29);
    let ipam = Ipam::new(&s, "n");
    // 25 full /29 blocks and a 26th with room.
    for i in 0..203 {
        ipam.assign(&v4(&format!("c{i}"))).unwrap();
    }
    s.calls.store(0, Ordering::SeqCst);
    ipam.assign(&v4("probe")).unwrap();
    // One read_many (handle, pools, cursors), get the cursor's block, txn: no listing.
    assert_eq!(s.calls.load(Ordering::SeqCst), 3);
}

#[test]
fn a_missing_or_stale_cursor_falls_back_to_the_affine_blocks() {
    let s = MemoryStore::new();
    add_pool(&s, "10.0.0.0/16", 29);
    let ipam = Ipam::new(&s, "n");
    for i in 0..12 {
        ipam.assign(&v4(&format!("c{i}"))).unwrap();
    }
    // The second block (10.0.0.8/29) has 4 addresses left; point the cursor at the full
    // first block, then remove it: both times the host keeps filling its own block.
    let cursor = keys::cursor("n", 4);
    let full = cidr("10.0.0.0/29");
    s.txn(&[], &[datastore::Op::Put { key: cursor.clone(), value: serde_json::to_vec(&full).unwrap() }]).unwrap();
    assert!(cidr("10.0.0.8/29").contains(ipam.assign(&v4("stale")).unwrap()[0].ip));
    s.txn(&[], &[datastore::Op::Delete { key: cursor.clone() }]).unwrap();
    assert!(cidr("10.0.0.8/29").contains(ipam.assign(&v4("missing")).unwrap()[0].ip));
    assert_eq!(s.get(&cursor).unwrap().map(|kv| kv.value), Some(serde_json::to_vec(&cidr("10.0.0.8/29")).unwrap()));
    assert_eq!(blocks_of(&s, 4).unwrap().len(), 2, "no block claimed while the host's own had room");
    assert_clean(&s);
}

#[test]
fn gc_releases_only_invalid_attachments_of_this_network() {
    let s = MemoryStore::new();
    add_pool(&s, "10.1.0.0/24", 26);
    let ipam = Ipam::new(&s, "n");
    ipam.assign(&v4("keep")).unwrap();
    ipam.assign(&v4("stale")).unwrap();
    let mut other = v4("x");
    other.owner.network = "net.other".into();
    other.owner.handle = "net.other.x".into();
    ipam.assign(&other).unwrap();
    let valid = HashSet::from([("keep".to_string(), "eth0".to_string())]);
    assert_eq!(ipam.gc("net", &valid).unwrap(), vec!["net.stale".to_string()]);
    assert!(s.get(&keys::handle("net.keep")).unwrap().is_some());
    assert!(s.get(&keys::handle("net.other.x")).unwrap().is_some(), "other networks are untouched");
    assert_clean(&s);
}

#[test]
fn gc_leaves_other_nodes_and_unprovable_legacy_handles_alone() {
    let s = MemoryStore::new();
    add_pool(&s, "10.1.0.0/24", 26);
    let (n1, n2) = (Ipam::new(&s, "n1"), Ipam::new(&s, "n2"));
    n1.assign(&v4("mine")).unwrap();
    n2.assign(&v4("theirs")).unwrap();
    // Handles as older versions wrote them, without the node: one allocated by n1, one by n2.
    n1.assign(&v4("old-mine")).unwrap();
    n2.assign(&v4("old-theirs")).unwrap();
    for id in ["net.old-mine", "net.old-theirs"] {
        let kv = s.get(&keys::handle(id)).unwrap().unwrap();
        let mut h: Handle = store::decode(&kv).unwrap();
        h.attributes.remove(HANDLE_NODE);
        s.txn(&[], &[Op::Put { key: kv.key, value: store::encode(&h) }]).unwrap();
    }
    let none = HashSet::new();
    assert_eq!(n1.gc("net", &none).unwrap(), vec!["net.mine".to_string(), "net.old-mine".to_string()]);
    assert!(s.get(&keys::handle("net.theirs")).unwrap().is_some(), "another node's handle stays");
    assert!(s.get(&keys::handle("net.old-theirs")).unwrap().is_some(), "a legacy handle of another node stays");
    assert_eq!(n2.gc("net", &none).unwrap().len(), 2);
    assert_clean(&s);
}

#[test]
fn hosts_racing_on_one_store_never_share_an_address() {
    let s = Arc::new(MemoryStore::new());
    add_pool(&*s, "10.1.0.0/22", 28);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let ipam = Ipam::new(&*s, format!("host{}", t % 4));
                (0..40).map(|i| ipam.assign(&v4(&format!("t{t}-{i}"))).unwrap()[0].ip).collect::<Vec<_>>()
            })
        })
        .collect();
    let all: Vec<IpAddr> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 320);
    assert_clean(&*s);
    let blocks = blocks_of(&*s, 4).unwrap();
    for (b, _) in &blocks {
        let affine: Vec<_> =
            (0..4).filter(|h| s.get(&keys::affinity(&format!("host{h}"), &b.cidr)).unwrap().is_some()).collect();
        assert_eq!(affine.len(), 1, "block {} affine to {affine:?}", b.cidr);
    }
}

#[test]
fn pool_removal_refuses_while_in_use_unless_forced() {
    let s = MemoryStore::new();
    add_pool(&s, "10.1.0.0/24", 26);
    let ipam = Ipam::new(&s, "n");
    ipam.assign(&v4("c1")).unwrap();
    assert!(matches!(pool::remove(&s, &cidr("10.1.0.0/24"), false), Err(Error::PoolInUse { in_use: 1, .. })));
    assert_eq!(pool::remove(&s, &cidr("10.1.0.0/24"), true).unwrap(), 1);
    assert!(s.dump().is_empty(), "{:?}", s.dump().keys().collect::<Vec<_>>());
}

#[test]
fn status_reports_exhaustion() {
    let s = MemoryStore::new();
    add_pool(&s, "10.1.0.0/30", 30);
    let ipam = Ipam::new(&s, "n");
    ipam.status(&[4]).unwrap();
    for i in 0..4 {
        ipam.assign(&v4(&format!("c{i}"))).unwrap();
    }
    assert!(matches!(ipam.status(&[4]), Err(Error::Exhausted { .. })));
    assert!(matches!(ipam.status(&[6]), Err(Error::NoPools { .. })));
}

/// Reading the right block ahead saves the round trip that would fetch it, for ADD and for
/// DEL; a wrong guess only costs that round trip back, and the addresses are the same.
#[test]
fn prefetching_the_right_block_saves_a_round_trip() {
    let s = MemoryStore::new();
    let plain = Ipam::new(&s, "node1");
    let first = plain.assign(&v4("c0")).unwrap(); // claims the block, sets the cursor
    let block = model::net::block_of(first[0].ip, first[0].pool.block_size);
    let cost = |f: &dyn Fn() -> Vec<IpAddr>| {
        let before = s.round_trips().unwrap();
        let out = f();
        (s.round_trips().unwrap() - before, out)
    };

    let (plain_add, a1) = cost(&|| ips(&plain.assign(&v4("c1")).unwrap()));
    let ahead = Ipam::new(&s, "node1").prefetch(vec![block]);
    let (ahead_add, a2) = cost(&|| ips(&ahead.assign(&v4("c2")).unwrap()));
    let wrong = Ipam::new(&s, "node1").prefetch(vec![cidr("10.99.0.0/26")]);
    let (wrong_add, a3) = cost(&|| ips(&wrong.assign(&v4("c3")).unwrap()));
    assert_eq!((plain_add, ahead_add, wrong_add), (3, 2, 3), "ADD round trips: plain, right guess, wrong guess");
    for ip in a1.iter().chain(&a2).chain(&a3) {
        assert!(block.contains(*ip), "{ip} from the host's block");
    }

    let (plain_del, r1) = cost(&|| plain.release_handle("net.c1").unwrap());
    let (ahead_del, r2) = cost(&|| ahead.release_handle("net.c2").unwrap());
    let (wrong_del, r3) = cost(&|| wrong.release_handle("net.c3").unwrap());
    assert_eq!((plain_del, ahead_del, wrong_del), (3, 2, 3), "DEL round trips: plain, right guess, wrong guess");
    assert_eq!((r1, r2, r3), (a1, a2, a3));
    assert!(ahead.release_handle("net.never").unwrap().is_empty(), "an unknown handle is still fine");
    plain.release_handle("net.c0").unwrap();
    assert_clean(&s);
}

#[test]
fn releasing_an_address_that_is_not_allocated_is_not_in_use() {
    let s = MemoryStore::new();
    add_pool(&s, "10.1.0.0/24", 26);
    let ipam = Ipam::new(&s, "n");
    let held = ips(&ipam.assign(&v4("c1")).unwrap());
    // Free in a claimed block, and in a block nobody claimed.
    for free in ["10.1.0.9", "10.1.0.200"] {
        let free: IpAddr = free.parse().unwrap();
        let err = ipam.release_ips(&[free]).unwrap_err();
        assert!(matches!(err, Error::AddressNotAllocated { ip } if ip == free), "{err}");
        assert_eq!(err.cni_code(), crate::CODE_NOT_ALLOCATED);
        assert_ne!(err.cni_code(), crate::CODE_ADDRESS_IN_USE);
    }
    assert_eq!(ipam.release_ips(&held).unwrap(), vec![(held[0], Some("net.c1".to_owned()))]);
    assert_clean(&s);
}

#[test]
fn more_addresses_join_the_handle_and_leave_with_it() {
    let s = MemoryStore::new();
    add_pool(&s, "10.0.0.0/24", 28);
    add_pool(&s, "10.1.0.0/24", 28);
    let ipam = Ipam::new(&s, "node1");
    let first = ipam.assign(&v4("c1")).unwrap();
    let second = ipam.assign_more("net.c1", More::Family(4)).unwrap();
    assert_ne!(second.ip, first[0].ip, "always a new address, unlike a repeated assign");
    let third = ipam.assign_more("net.c1", More::Pool(cidr("10.1.0.0/24"))).unwrap();
    assert_eq!(third.pool.cidr, cidr("10.1.0.0/24"));
    let exact: IpAddr = "10.1.0.200".parse().unwrap();
    assert_eq!(ipam.assign_more("net.c1", More::Ip(exact)).unwrap().ip, exact);
    let mut held = ipam.ips_of_handle("net.c1").unwrap();
    held.sort();
    let mut want = vec![first[0].ip, second.ip, third.ip, exact];
    want.sort();
    assert_eq!(held, want);
    assert_clean(&s);

    assert!(matches!(ipam.assign_more("net.c1", More::Ip(exact)), Err(Error::AddressInUse { .. })));
    let outside = "172.16.0.1".parse().unwrap();
    assert!(matches!(ipam.assign_more("net.c1", More::Ip(outside)), Err(Error::AddressNotInPool { .. })));
    assert!(matches!(ipam.assign_more("net.c1", More::Pool(cidr("10.9.0.0/24"))), Err(Error::PoolNotFound { .. })));
    assert!(matches!(ipam.assign_more("net.c1", More::Family(6)), Err(Error::NoPools { family: 6 })));
    assert!(matches!(ipam.assign_more("net.nobody", More::Family(4)), Err(Error::HandleNotFound { .. })));
    assert_eq!(ipam.ips_of_handle("net.c1").unwrap().len(), 4, "a refused one changes nothing");

    // One released on its own, then the rest with the handle.
    ipam.release_ips(&[second.ip]).unwrap();
    assert_eq!(ipam.ips_of_handle("net.c1").unwrap().len(), 3);
    assert_eq!(ipam.release_handle("net.c1").unwrap().len(), 3);
    assert_clean(&s);
}
