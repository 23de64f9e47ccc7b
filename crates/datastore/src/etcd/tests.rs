//! The etcd backend against real etcd members: the trait's semantics (the memory store's
//! cases), concurrency, failures within the time bound, failover and TLS.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use testkit::etcd::{free_port, Certs, Etcd, EtcdCluster};

use super::testing::{store, store_on};
use super::EtcdStore;
use crate::{Compare, Config, Datastore, Error, Op, Read, TxnOutcome};

fn put(key: &str, value: &str) -> Op {
    Op::Put { key: key.into(), value: value.into() }
}

#[test]
fn create_update_delete_follow_revisions() {
    let etcd = Etcd::start();
    let s = store(&etcd);
    let r1 = s.create("/a", b"1".to_vec()).unwrap();
    assert!(matches!(s.create("/a", b"2".to_vec()), Err(Error::Conflict { .. })));
    let r2 = s.update("/a", b"2".to_vec(), r1).unwrap();
    assert!(r2 > r1);
    assert!(matches!(s.update("/a", b"3".to_vec(), r1), Err(Error::Conflict { .. })));
    let kv = s.get("/a").unwrap().expect("/a exists");
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"2"[..], r2));
    assert!(matches!(s.delete("/a", r1), Err(Error::Conflict { .. })));
    s.delete("/a", r2).unwrap();
    assert_eq!(s.get("/a").unwrap(), None);
}

#[test]
fn list_is_prefix_bounded_and_ordered() {
    let etcd = Etcd::start();
    let s = store(&etcd);
    for k in ["/b/2", "/a", "/b/1", "/c", "/b0"] {
        s.create(k, vec![]).unwrap();
    }
    let keys: Vec<_> = s.list("/b/").unwrap().into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, ["/b/1", "/b/2"]);
    assert!(s.list("/none/").unwrap().is_empty());
    assert_eq!(s.list("").unwrap().len(), 5);
}

#[test]
fn txn_applies_all_or_nothing_at_one_revision() {
    let etcd = Etcd::start();
    let s = store(&etcd);
    let r = s.create("/x", b"x".to_vec()).unwrap();
    let stale = [Compare::Revision("/x".into(), r), Compare::Revision("/y".into(), 1)];
    let outcome = s.txn(&stale, &[put("/x", "new"), put("/z", "z")]).unwrap();
    assert_eq!(outcome, TxnOutcome::Conflict);
    assert_eq!(s.get("/z").unwrap(), None, "a conflict writes nothing");

    let holds = [Compare::Revision("/x".into(), r), Compare::Absent("/z".into())];
    let ops = [put("/z", "z"), put("/w", "w"), Op::Delete { key: "/x".into() }];
    let TxnOutcome::Committed { revision } = s.txn(&holds, &ops).unwrap() else {
        panic!("compares held");
    };
    assert_eq!(s.get("/z").unwrap().unwrap().mod_revision, revision);
    assert_eq!(s.get("/w").unwrap().unwrap().mod_revision, revision);
    assert_eq!(s.get("/x").unwrap(), None);
    // Deleting an absent key is not an error.
    assert!(s.txn(&[], &[Op::Delete { key: "/nothing".into() }]).unwrap().committed());
}

#[test]
fn read_many_is_one_round_trip_and_round_trips_are_counted() {
    let etcd = Etcd::start();
    let s = store(&etcd);
    assert_eq!(s.round_trips(), 0);
    s.create("/p/1", b"1".to_vec()).unwrap();
    s.create("/p/2", b"2".to_vec()).unwrap();
    s.create("/k", b"k".to_vec()).unwrap();
    assert_eq!(s.round_trips(), 3);
    let reads = [Read::Key("/k".into()), Read::Key("/missing".into()), Read::Prefix("/p/".into())];
    let answers = s.read_many(&reads).unwrap();
    assert_eq!(s.round_trips(), 4);
    assert_eq!(answers[0].len(), 1);
    assert!(answers[1].is_empty());
    let keys: Vec<_> = answers[2].iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/p/1", "/p/2"]);
    s.ping().unwrap();
    assert_eq!(s.round_trips(), 5);
}

#[test]
fn concurrent_cas_increments_lose_no_update() {
    let etcd = Etcd::start();
    let shared = Arc::new(store(&etcd));
    shared.create("/counter", b"0".to_vec()).unwrap();
    let (threads, per_thread) = (6, 20);
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            // Half the threads share one store (one connection), half have their own.
            let store: Arc<EtcdStore> = if i % 2 == 0 { shared.clone() } else { Arc::new(store(&etcd)) };
            thread::spawn(move || {
                for _ in 0..per_thread {
                    loop {
                        let kv = store.get("/counter").unwrap().expect("counter exists");
                        let n: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                        match store.update("/counter", (n + 1).to_string().into(), kv.mod_revision) {
                            Ok(_) => break,
                            Err(Error::Conflict { .. }) => continue,
                            Err(e) => panic!("increment failed: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker thread");
    }
    let value = shared.get("/counter").unwrap().unwrap().value;
    assert_eq!(String::from_utf8(value).unwrap(), (threads * per_thread).to_string());
}

/// The bound the plugin must meet: an ADD with etcd down fails with code 11 within 5 s.
const CNI_BOUND: Duration = Duration::from_secs(5);

#[test]
fn unreachable_endpoints_fail_as_unavailable_within_the_bound() {
    // Nothing listens on these ports: connections are refused.
    let endpoints = format!("http://127.0.0.1:{},http://127.0.0.1:{}", free_port(), free_port());
    let cfg = Config { etcd_endpoints: vec![endpoints], ..Config::default() };
    let started = Instant::now();
    let s = crate::open(&cfg).expect("open does not touch the network");
    let err = s.get("/k").unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("no etcd member reachable"), "{err}");
    // Later calls of the same process fail at once, so a whole ADD stays within the bound.
    let err = s.create("/k", vec![]).unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(started.elapsed() < CNI_BOUND, "took {:?}", started.elapsed());
}

#[test]
fn silent_endpoint_times_out_as_unavailable_within_the_bound() {
    // Accepts TCP connections (the kernel completes the handshake) but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let s = EtcdStore::connect(&Config { etcd_endpoints: vec![url], ..Config::default() }).unwrap();
    let started = Instant::now();
    let err = s.txn(&[], &[put("/k", "v")]).unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(s.get("/k").unwrap_err().is_unavailable());
    assert!(started.elapsed() < CNI_BOUND, "took {:?}", started.elapsed());
}

#[test]
fn three_member_cluster_fails_over_when_a_follower_stops() {
    let mut etcd = EtcdCluster::builder().members(3).fast_elections().start();
    let leader = etcd.leader();
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // The store talks to the first follower; stop it: writes and reads go on, at once.
    let s = store_on(&etcd, &[followers[0], followers[1], leader]);
    let r = s.create("/f", b"0".to_vec()).unwrap();
    etcd.members[followers[0]].stop();
    let r = s.update("/f", b"1".to_vec(), r).unwrap();
    assert_eq!(s.get("/f").unwrap().unwrap().mod_revision, r);
    s.create("/g", vec![]).unwrap();
    assert_eq!(s.list("/").unwrap().len(), 2);

    // A new store whose first endpoint is the dead member starts on the next one.
    let fresh = store(&etcd);
    assert_eq!(fresh.get("/f").unwrap().unwrap().value, b"1");
}

#[test]
fn three_member_cluster_recovers_when_the_leader_stops() {
    let mut etcd = EtcdCluster::builder().members(3).fast_elections().start();
    let leader = etcd.leader();
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let s = store_on(&etcd, &[leader, others[0], others[1]]);
    let mut r = s.create("/l", b"0".to_vec()).unwrap();
    etcd.members[leader].stop();
    // Until the survivors elect a leader, a write may fail, but only as "unavailable" (what a
    // plugin reports as "try again later"); then it goes through.
    let mut failures = 0;
    loop {
        match s.update("/l", b"1".to_vec(), r) {
            Ok(_) => break,
            Err(e) if e.is_unavailable() && failures < 20 => failures += 1,
            // A write whose fate was unknown may have been applied: re-read, as IPAM does.
            Err(Error::Conflict { .. }) => {
                r = s.get("/l").unwrap().unwrap().mod_revision;
                continue;
            }
            Err(e) => panic!("after {failures} failures: {e}"),
        }
        thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(s.get("/l").unwrap().unwrap().value, b"1");
}

#[test]
fn tls_with_client_certificates() {
    let certs = Certs::generate();
    let with_certs = Config {
        etcd_ca_cert_file: Some(certs.ca()),
        etcd_cert_file: Some(certs.client_cert()),
        etcd_key_file: Some(certs.client_key()),
        ..Config::default()
    };
    let etcd = Etcd::start_tls(&certs);
    let url = etcd.client_url.clone();
    assert!(url.starts_with("https://"));

    let s = EtcdStore::connect(&Config { etcd_endpoints: vec![url.clone()], ..with_certs }).unwrap();
    let r = s.create("/tls", b"1".to_vec()).unwrap();
    s.update("/tls", b"2".to_vec(), r).unwrap();
    assert_eq!(s.get("/tls").unwrap().unwrap().value, b"2");

    // The CA but no client certificate: the server refuses, and says so.
    let no_cert = Config {
        etcd_endpoints: vec![url.clone()],
        etcd_ca_cert_file: Some(certs.path("ca.crt")),
        ..Config::default()
    };
    let no_cert = EtcdStore::connect(&no_cert).unwrap();
    for err in [no_cert.get("/tls").unwrap_err(), no_cert.create("/t", vec![]).unwrap_err()] {
        let text = err.to_string();
        eprintln!("without a client certificate: {text}");
        assert!(text.contains(&url) && text.to_lowercase().contains("certificate"), "{text}");
        assert!(!err.is_unavailable(), "a TLS failure needs a fix, not a retry: {text}");
    }

    // No TLS settings at all for an https endpoint: a settings error before any connection.
    let bare = Config { etcd_endpoints: vec![url], ..Config::default() };
    let err = EtcdStore::connect(&bare).unwrap_err();
    assert!(matches!(err, Error::EtcdConfig { .. }), "{err}");
}

#[test]
fn settings_errors_are_reported_before_connecting() {
    let certs = Certs::generate();
    let ep = |s: &str| vec![s.to_owned()];
    let cases = [
        Config { etcd_endpoints: ep(" , "), ..Config::default() },
        Config { etcd_endpoints: ep("ftp://127.0.0.1:1"), ..Config::default() },
        Config { etcd_endpoints: ep("http://[bad"), ..Config::default() },
        Config {
            etcd_endpoints: ep("https://127.0.0.1:1"),
            etcd_ca_cert_file: Some(certs.path("ca.crt")),
            etcd_cert_file: Some(certs.path("client.crt")),
            ..Config::default()
        },
    ];
    for cfg in &cases {
        let err = EtcdStore::connect(cfg).unwrap_err();
        assert!(matches!(err, Error::EtcdConfig { .. } | Error::EtcdEndpoint { .. }), "{cfg:?}: {err}");
        assert_eq!(cni::CniCode::cni_code(&err), cni::code::INVALID_CONFIG, "{cfg:?}: {err}");
        assert!(!err.is_unavailable());
    }
    let missing = Config {
        etcd_endpoints: ep("127.0.0.1:1"),
        etcd_ca_cert_file: Some(certs.path("nope.crt")),
        ..Config::default()
    };
    let err = EtcdStore::connect(&missing).unwrap_err();
    assert!(matches!(err, Error::EtcdFile { .. }) && err.to_string().contains("nope.crt"), "{err}");
}
