//! Watching the embedded store: changes from another process within 100 ms, list-then-watch
//! without gaps, the change log's compaction, the migration of a version 2 store, and what an
//! idle watch costs.
//!
//! The writer process is this test binary run again with `--exact writer_role`.

use std::env;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use datastore::sqlite::{EmbeddedStore, CHANGE_LOG_REVISIONS};
use datastore::{Datastore, Error, Event, EventKind, Op, Read, Watch};

const ROLE: &str = "DATASTORE_WATCH_TEST_DB";

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process.
fn monotonic_ns() -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) }, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs only as the writer child: puts a key, then deletes it, printing the monotonic time
/// just before each commit.
#[test]
fn writer_role() {
    let Ok(db) = env::var(ROLE) else { return };
    let store = EmbeddedStore::open(Path::new(&db)).expect("writer opens the store");
    thread::sleep(Duration::from_millis(100));
    println!("PUT {}", monotonic_ns());
    store.create("/w/key", b"v1".to_vec()).expect("create");
    thread::sleep(Duration::from_millis(300));
    let kv = store.get("/w/key").expect("get").expect("key exists");
    println!("DEL {}", monotonic_ns());
    store.delete("/w/key", kv.mod_revision).expect("delete");
}

fn temp_store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("store.db")).expect("open");
    (dir, store)
}

fn put(key: &str, value: &str) -> Op {
    Op::Put { key: key.into(), value: value.into() }
}

/// Every event until `timeout` passes with none.
fn drain(w: &mut dyn Watch, timeout: Duration) -> Vec<Event> {
    let mut all = Vec::new();
    while let Some(events) = w.next(timeout).expect("watch") {
        assert!(!events.is_empty(), "a batch is never empty");
        all.extend(events);
    }
    all
}

#[test]
fn another_process_s_put_and_delete_arrive_within_100ms() {
    let (dir, store) = temp_store();
    let (_, revision) = store.list_at("/w/").unwrap();
    let mut w = store.watch(&["/w/".into()], revision + 1).unwrap();
    let writer = Command::new(env::current_exe().unwrap())
        .args(["--exact", "writer_role", "--nocapture", "--test-threads=1"])
        .env(ROLE, dir.path().join("store.db"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the writer");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 2 && Instant::now() < deadline {
        for event in w.next(Duration::from_secs(1)).unwrap().unwrap_or_default() {
            seen.push((event, monotonic_ns()));
        }
    }
    let out = writer.wait_with_output().unwrap();
    assert!(out.status.success(), "writer failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let before = |what: &str| -> i128 {
        // libtest may print "test writer_role ... " before it on the same line.
        let at = text.find(&format!("{what} ")).expect("writer's timestamp") + what.len() + 1;
        text[at..].split_whitespace().next().unwrap().parse().unwrap()
    };
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0.kind, EventKind::Put { value: b"v1".to_vec() });
    assert_eq!(seen[1].0.kind, EventKind::Delete);
    assert!(seen[1].0.mod_revision > seen[0].0.mod_revision);
    for ((event, at), what) in seen.iter().zip(["PUT", "DEL"]) {
        let latency = Duration::from_nanos((at - before(what)) as u64);
        println!("{what} {} seen {latency:?} after the writer started its commit", event.key);
        assert!(latency < Duration::from_millis(100), "{what} took {latency:?}");
    }
}

#[test]
fn list_then_watch_misses_nothing_and_repeats_nothing() {
    let (dir, store) = temp_store();
    let other = EmbeddedStore::open(&dir.path().join("store.db")).unwrap();
    store.txn(&[], &[put("/a/1", "1"), put("/b/1", "1")]).unwrap();
    let (listed, revision) = store.read_many_at(&[Read::Prefix("/a/".into()), Read::Key("/b/1".into())]).unwrap();
    assert_eq!((listed[0].len(), listed[1].len(), revision), (1, 1, 1));
    let mut w = store.watch(&["/a/".into(), "/b/".into()], revision + 1).unwrap();
    assert_eq!(w.next(Duration::ZERO).unwrap(), None);
    other.txn(&[], &[put("/a/2", "2"), put("/c/1", "ignored"), put("/b/1", "2")]).unwrap();
    other.txn(&[], &[Op::Delete { key: "/a/1".into() }, Op::Delete { key: "/a/nope".into() }]).unwrap();
    let events = drain(w.as_mut(), Duration::from_millis(200));
    let got: Vec<(&str, bool, i64)> =
        events.iter().map(|e| (e.key.as_str(), matches!(e.kind, EventKind::Put { .. }), e.mod_revision)).collect();
    assert_eq!(got, [("/a/2", true, 2), ("/b/1", true, 2), ("/a/1", false, 3)]);

    // Several changes of one key between two polls come as the last one, with its value.
    for i in 0..5 {
        let kv = other.get("/a/2").unwrap().unwrap();
        other.update("/a/2", format!("v{i}").into_bytes(), kv.mod_revision).unwrap();
    }
    let events = drain(w.as_mut(), Duration::from_millis(200));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::Put { value: b"v4".to_vec() });
    assert_eq!(events[0].mod_revision, 8);
}

#[test]
fn a_compacted_change_log_fails_the_watch_and_a_relist_carries_on() {
    let (_dir, store) = temp_store();
    for i in 0..5 {
        store.create(&format!("/k/{i}"), vec![]).unwrap();
    }
    let mut w = store.watch(&["/k/".into()], 3).unwrap();
    store.compact(4).unwrap();
    match w.next(Duration::ZERO) {
        Err(Error::Compacted { requested: 3, compact_revision: 4 }) => {}
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(matches!(store.watch(&["/k/".into()], 2), Err(Error::Compacted { .. })));
    let mut w = store.watch(&["/k/".into()], 4).unwrap();
    assert_eq!(drain(w.as_mut(), Duration::ZERO).len(), 2, "revisions 4 and 5 are kept");

    let (listed, revision) = store.list_at("/k/").unwrap();
    assert_eq!((listed.len(), revision), (5, 5));
    let mut w = store.watch(&["/k/".into()], revision + 1).unwrap();
    store.create("/k/5", b"x".to_vec()).unwrap();
    let events = drain(w.as_mut(), Duration::from_millis(100));
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].key.as_str(), events[0].mod_revision), ("/k/5", 6));
}

/// The store trims its change log by itself: a watch that falls more than
/// `CHANGE_LOG_REVISIONS` behind gets `Compacted`.
#[test]
fn the_change_log_keeps_the_last_revisions() {
    let (_dir, store) = temp_store();
    let mut w = store.watch(&["/n/".into()], 1).unwrap();
    let total = CHANGE_LOG_REVISIONS + 1_000;
    for i in 0..total {
        store.txn(&[], &[put(&format!("/n/{}", i % 10), "x")]).unwrap();
    }
    match w.next(Duration::ZERO) {
        Err(Error::Compacted { requested: 1, compact_revision }) => {
            assert_eq!(compact_revision, total - CHANGE_LOG_REVISIONS + 1)
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let mut w = store.watch(&["/n/".into()], total - CHANGE_LOG_REVISIONS + 1).unwrap();
    assert_eq!(drain(w.as_mut(), Duration::ZERO).len(), 10, "one event per key, coalesced");
}

#[test]
fn a_version_2_store_is_migrated_with_an_empty_change_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE kv (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, value BLOB NOT NULL,
                          mod_revision INTEGER NOT NULL);
         CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER NOT NULL);
         INSERT INTO meta (id, revision) VALUES (0, 7);
         INSERT INTO kv (key, value, mod_revision) VALUES ('/b', x'02', 5), ('/a', x'01', 7);
         PRAGMA user_version = 2;",
    )
    .unwrap();
    drop(raw);

    let s = EmbeddedStore::open(&path).unwrap();
    let (all, revision) = s.list_at("/").unwrap();
    assert_eq!((all.len(), revision), (2, 7));
    match s.watch(&["/".into()], 7) {
        Err(Error::Compacted { requested: 7, compact_revision: 8 }) => {}
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(_) => panic!("expected Compacted, got a watch"),
    }
    let mut w = s.watch(&["/".into()], revision + 1).unwrap();
    assert_eq!(s.update("/a", vec![9], 7).unwrap(), 8, "revisions continue");
    let events = drain(w.as_mut(), Duration::ZERO);
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].key.as_str(), events[0].mod_revision), ("/a", 8));
    drop(s);
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 4);
}

/// Version 3 logged one row per key (`changes`) and counted revisions in `meta`: the
/// migration keeps the keys and the revision, and starts the new log at that revision.
#[test]
fn a_version_3_store_is_migrated_and_its_log_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE kv (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, value BLOB NOT NULL,
                          mod_revision INTEGER NOT NULL);
         CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER NOT NULL,
                            compact_revision INTEGER NOT NULL DEFAULT 0);
         INSERT INTO meta (id, revision, compact_revision) VALUES (0, 9, 1);
         CREATE TABLE changes (revision INTEGER NOT NULL, key TEXT NOT NULL, deleted INTEGER NOT NULL,
                               PRIMARY KEY (revision, key)) WITHOUT ROWID;
         INSERT INTO changes VALUES (8, '/a', 0), (9, '/b', 1);
         INSERT INTO kv (key, value, mod_revision) VALUES ('/a', x'01', 8);
         PRAGMA user_version = 3;",
    )
    .unwrap();
    drop(raw);

    let s = EmbeddedStore::open(&path).unwrap();
    let (all, revision) = s.list_at("/").unwrap();
    assert_eq!((all.len(), revision), (1, 9));
    assert!(matches!(s.watch(&["/".into()], 9), Err(Error::Compacted { requested: 9, compact_revision: 10 })));
    let mut w = s.watch(&["/".into()], 10).unwrap();
    assert_eq!(s.create("/c", vec![3]).unwrap(), 10, "revisions continue");
    s.delete("/a", 8).unwrap();
    let got: Vec<(String, bool, i64)> = drain(w.as_mut(), Duration::ZERO)
        .into_iter()
        .map(|e| (e.key, matches!(e.kind, EventKind::Put { .. }), e.mod_revision))
        .collect();
    assert_eq!(got, [("/c".to_owned(), true, 10), ("/a".to_owned(), false, 11)]);
    drop(s);
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 4);
    let tables: Vec<String> = raw
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["kv", "log"], "the old counter and log are gone");
}

/// A put and a delete of the same key in one txn come as one event, the delete; a delete of
/// a missing key is no event, but its txn still takes a revision.
#[test]
fn one_event_per_key_and_revision() {
    let (_dir, store) = temp_store();
    let mut w = store.watch(&["/".into()], 1).unwrap();
    store.txn(&[], &[put("/x", "1"), Op::Delete { key: "/x".into() }, put("/y", "1")]).unwrap();
    let outcome = store.txn(&[], &[Op::Delete { key: "/missing".into() }]).unwrap();
    assert_eq!(outcome, datastore::TxnOutcome::Committed { revision: 2 });
    store.txn(&[], &[put("/y", "2"), put("/y", "3")]).unwrap();
    let got: Vec<(String, EventKind, i64)> =
        drain(w.as_mut(), Duration::ZERO).into_iter().map(|e| (e.key, e.kind, e.mod_revision)).collect();
    assert_eq!(
        got,
        [("/x".to_owned(), EventKind::Delete, 1), ("/y".to_owned(), EventKind::Put { value: b"3".to_vec() }, 3)]
    );
}

/// An idle watch polls the store revision; measured here: its thread's CPU time over 2 s.
#[test]
fn an_idle_watch_costs_next_to_nothing() {
    let (_dir, store) = temp_store();
    store.create("/idle/x", vec![]).unwrap();
    let mut w = store.watch(&["/idle/".into()], 2).unwrap();
    let (cpu, wall) = (thread_cpu(), Instant::now());
    assert_eq!(w.next(Duration::from_secs(2)).unwrap(), None);
    let (cpu, wall) = (thread_cpu() - cpu, wall.elapsed());
    println!("idle watch: {cpu:?} of CPU in {wall:?}");
    assert!(wall >= Duration::from_secs(2));
    assert!(cpu < Duration::from_millis(50), "an idle watch used {cpu:?} of CPU in 2 s");
}
