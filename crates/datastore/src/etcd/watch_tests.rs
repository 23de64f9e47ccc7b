//! The etcd watch against real etcd members: list then watch, resuming from a revision,
//! compaction, and a member stopped in the middle of a watch.

use std::thread;
use std::time::{Duration, Instant};

use testkit::etcd::{Etcd, EtcdCluster};

use super::testing::{store, store_on};
use super::EtcdStore;
use crate::{Datastore, Error, Event, EventKind, Op, Read, Watch};

fn put(key: &str, value: &str) -> Op {
    Op::Put { key: key.into(), value: value.into() }
}

/// Events until `count` have come, failing after 20 s.
fn collect(w: &mut dyn Watch, count: usize) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut all = Vec::new();
    while all.len() < count {
        assert!(Instant::now() < deadline, "only {} of {count} events: {all:?}", all.len());
        match w.next(Duration::from_secs(1)) {
            Ok(Some(events)) => all.extend(events),
            Ok(None) => {}
            Err(e) if e.is_unavailable() => {}
            Err(e) => panic!("watch failed: {e}"),
        }
    }
    all
}

fn keys_and_revisions(events: &[Event]) -> Vec<(String, bool, i64)> {
    events.iter().map(|e| (e.key.clone(), matches!(e.kind, EventKind::Put { .. }), e.mod_revision)).collect()
}

#[test]
fn list_then_watch_and_resume_from_a_revision() {
    let etcd = Etcd::start();
    let s = store(&etcd);
    s.txn(&[], &[put("/a/1", "1"), put("/b/1", "1")]).unwrap();
    let (listed, revision) = s.read_many_at(&[Read::Prefix("/a/".into()), Read::Prefix("/b/".into())]).unwrap();
    assert_eq!((listed[0].len(), listed[1].len()), (1, 1));
    assert_eq!(s.list_at("/a/").unwrap().1, revision);

    let mut w = s.watch(&["/a/".into(), "/b/".into(), "/a/x/".into()], revision + 1).unwrap();
    assert_eq!(w.next(Duration::from_millis(100)).unwrap(), None);
    let r1 = s.txn(&[], &[put("/a/2", "2"), put("/c/1", "ignored")]).unwrap();
    let r2 = s.txn(&[], &[put("/b/1", "2"), Op::Delete { key: "/a/1".into() }]).unwrap();
    let (r1, r2) = (revision_of(r1), revision_of(r2));
    let events = collect(w.as_mut(), 3);
    let mut got = keys_and_revisions(&events);
    got.sort_by_key(|(k, _, r)| (*r, k.clone()));
    assert_eq!(got, [("/a/2".into(), true, r1), ("/a/1".into(), false, r2), ("/b/1".into(), true, r2)]);
    assert_eq!(events.iter().find(|e| e.key == "/a/2").unwrap().kind, EventKind::Put { value: b"2".to_vec() });
    drop(w);

    // A new watch from a past revision replays history from there.
    let mut w = s.watch(&["/a/".into()], r2).unwrap();
    assert_eq!(keys_and_revisions(&collect(w.as_mut(), 1)), [("/a/1".into(), false, r2)]);
    assert_eq!(w.next(Duration::from_millis(100)).unwrap(), None);
}

fn revision_of(outcome: crate::TxnOutcome) -> i64 {
    match outcome {
        crate::TxnOutcome::Committed { revision } => revision,
        crate::TxnOutcome::Conflict => panic!("no compares, no conflict"),
    }
}

#[test]
fn compaction_fails_the_watch_and_a_relist_carries_on() {
    let etcd = Etcd::start();
    let s = store(&etcd);
    let first = s.create("/k/0", vec![]).unwrap();
    for i in 1..5 {
        s.create(&format!("/k/{i}"), vec![]).unwrap();
    }
    let compact_at = first + 3;
    // Another client compacts, as etcd's auto-compaction does.
    etcd.compact(compact_at);
    match watch_error(&s, first) {
        Error::Compacted { requested, compact_revision } => {
            assert_eq!((requested, compact_revision), (first, compact_at))
        }
        other => panic!("expected Compacted, got {other}"),
    }
    let (listed, revision) = s.list_at("/k/").unwrap();
    assert_eq!(listed.len(), 5);
    let mut w = s.watch(&["/k/".into()], revision + 1).unwrap();
    let r = s.create("/k/5", b"x".to_vec()).unwrap();
    assert_eq!(keys_and_revisions(&collect(w.as_mut(), 1)), [("/k/5".into(), true, r)]);

    // The store's own compaction is the same RPC.
    s.compact(r).unwrap();
    let err = watch_error(&s, revision);
    assert!(matches!(err, Error::Compacted { compact_revision, .. } if compact_revision == r), "{err}");
}

/// How a watch of `/k/` from `from` fails: at once, or at its first `next`.
fn watch_error(s: &EtcdStore, from: i64) -> Error {
    match s.watch(&["/k/".into()], from) {
        Err(e) => e,
        Ok(mut w) => w.next(Duration::from_secs(5)).expect_err("watching compacted history"),
    }
}

/// The watch is on a follower; the follower is killed while writes go on through the leader:
/// the watch moves to another member and delivers every write exactly once.
#[test]
fn a_member_stopped_during_a_watch_loses_and_repeats_nothing() {
    let mut etcd = EtcdCluster::builder().members(3).fast_elections().start();
    let leader = etcd.leader();
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let watcher_store = store_on(&etcd, &[followers[0], followers[1], leader]);
    let (_, revision) = watcher_store.list_at("/w/").unwrap();
    let mut w = watcher_store.watch(&["/w/".into()], revision + 1).unwrap();

    const WRITES: usize = 60;
    let writer_store = store_on(&etcd, &[leader]);
    let writer = thread::spawn(move || write_slowly(&writer_store, WRITES));
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stopped = false;
    while seen.len() < WRITES && Instant::now() < deadline {
        if !stopped && seen.len() >= WRITES / 3 {
            etcd.members[followers[0]].stop();
            stopped = true;
        }
        match w.next(Duration::from_millis(500)) {
            Ok(events) => seen.extend(events.unwrap_or_default()),
            Err(e) if e.is_unavailable() => {}
            Err(e) => panic!("watch failed: {e}"),
        }
    }
    let committed = writer.join().unwrap();
    assert!(stopped, "the follower was stopped during the watch");
    let seen: Vec<(String, i64)> = seen.into_iter().map(|e| (e.key, e.mod_revision)).collect();
    assert_eq!(seen, committed, "every write once, in order");
    assert_eq!(w.next(Duration::from_millis(200)).unwrap(), None, "and nothing more");
}

/// Create `/w/<i>` every 20 ms; the (key, revision) of each write.
fn write_slowly(store: &EtcdStore, count: usize) -> Vec<(String, i64)> {
    (0..count)
        .map(|i| {
            thread::sleep(Duration::from_millis(20));
            let key = format!("/w/{i:03}");
            (key.clone(), store.create(&key, vec![1]).expect("write through the leader"))
        })
        .collect()
}
