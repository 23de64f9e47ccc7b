//! The embedded store in one process: the trait's semantics, persistence, file modes, and
//! the errors of unusable paths and of a store locked too long.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use datastore::sqlite::{EmbeddedOptions, EmbeddedStore, Synchronous};
use datastore::{Compare, Datastore, Error, Op, Read, TxnOutcome};

fn temp_store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("store.db")).expect("open");
    (dir, store)
}

fn put(key: &str, value: &[u8]) -> Op {
    Op::Put { key: key.to_owned(), value: value.to_vec() }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn create_update_delete_follow_revisions() {
    let (_dir, s) = temp_store();
    let r1 = s.create("/a", b"1".to_vec()).unwrap();
    assert_eq!(r1, 1);
    assert!(matches!(s.create("/a", b"2".to_vec()), Err(Error::Conflict { .. })));
    let r2 = s.update("/a", b"2".to_vec(), r1).unwrap();
    assert!(r2 > r1);
    assert!(matches!(s.update("/a", b"3".to_vec(), r1), Err(Error::Conflict { .. })));
    let kv = s.get("/a").unwrap().expect("present");
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"2"[..], r2));
    assert!(matches!(s.delete("/a", r1), Err(Error::Conflict { .. })));
    s.delete("/a", r2).unwrap();
    assert_eq!(s.get("/a").unwrap(), None);
    assert!(matches!(s.update("/a", vec![], r2), Err(Error::Conflict { .. })));
}

#[test]
fn revisions_are_store_wide() {
    let (_dir, s) = temp_store();
    assert_eq!(s.create("/a", vec![]).unwrap(), 1);
    assert_eq!(s.create("/b", vec![]).unwrap(), 2);
    assert_eq!(s.get("/a").unwrap().unwrap().mod_revision, 1);
    assert_eq!(s.update("/a", vec![1], 1).unwrap(), 3);
}

#[test]
fn list_is_prefix_bounded_and_ordered() {
    let (_dir, s) = temp_store();
    for k in ["/b/2", "/a", "/b/1", "/c"] {
        s.create(k, vec![]).unwrap();
    }
    let keys: Vec<_> = s.list("/b/").unwrap().into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, ["/b/1", "/b/2"]);
}

#[test]
fn list_boundaries_match_starts_with() {
    let (_dir, s) = temp_store();
    let keys = [
        "/a",
        "/a/",
        "/a/b",
        "/a/b/c",
        "/a/bc",
        "/a/c",
        "/a0",
        "/a.",
        "/a/~",
        "/a/\u{7f}",
        "/a/é",
        "/a/\u{D7FF}",
        "/a/\u{E000}",
        "/a/\u{10FFFF}",
        "/a/\u{10FFFF}x",
        "/b",
        "",
        "a\u{10FFFF}",
        "b",
    ];
    for k in keys {
        s.create(k, k.as_bytes().to_vec()).unwrap();
    }
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_unstable();
    let prefixes = [
        "",
        "/",
        "/a",
        "/a/",
        "/a/b",
        "/a/b/",
        "/a/\u{7f}",
        "/a/\u{D7FF}",
        "/a/\u{10FFFF}",
        "a\u{10FFFF}",
        "/z",
        "\u{10FFFF}",
    ];
    for prefix in prefixes {
        let got: Vec<String> = s.list(prefix).unwrap().into_iter().map(|kv| kv.key).collect();
        let want: Vec<&str> = sorted.iter().copied().filter(|k| k.starts_with(prefix)).collect();
        assert_eq!(got, want, "prefix {prefix:?}");
    }
}

#[test]
fn read_many_answers_like_get_and_list() {
    let (_dir, s) = temp_store();
    for k in ["/a/1", "/a/2", "/b", "/c/1"] {
        s.create(k, k.as_bytes().to_vec()).unwrap();
    }
    let reads =
        [Read::Key("/b".into()), Read::Key("/missing".into()), Read::Prefix("/a/".into()), Read::Prefix("/z/".into())];
    let got = s.read_many(&reads).unwrap();
    let want = vec![s.get("/b").unwrap().into_iter().collect(), vec![], s.list("/a/").unwrap(), vec![]];
    assert_eq!(got, want);
    assert_eq!(s.read_many(&[]).unwrap(), Vec::<Vec<_>>::new());
    // The read transaction is closed: writes still work.
    assert_eq!(s.create("/d", vec![]).unwrap(), 5);
}

#[test]
fn multi_key_txn_is_all_or_nothing() {
    let (_dir, s) = temp_store();
    let ry = s.create("/y", b"y".to_vec()).unwrap();
    let stale = ry - 1;
    let ops = [put("/x", b"x"), put("/y", b"y2"), put("/z", b"z")];

    let failing = [Compare::Absent("/x".into()), Compare::Revision("/y".into(), stale)];
    assert_eq!(s.txn(&failing, &ops).unwrap(), TxnOutcome::Conflict);
    assert_eq!(s.get("/x").unwrap(), None);
    assert_eq!(s.get("/y").unwrap().unwrap().value, b"y");
    assert_eq!(s.txn(&[Compare::Absent("/y".into())], &ops).unwrap(), TxnOutcome::Conflict);
    assert_eq!(s.txn(&[Compare::Revision("/nope".into(), 1)], &ops).unwrap(), TxnOutcome::Conflict);

    let holding = [Compare::Absent("/x".into()), Compare::Revision("/y".into(), ry)];
    let TxnOutcome::Committed { revision } = s.txn(&holding, &ops).unwrap() else { panic!("compares hold") };
    assert_eq!(revision, ry + 1, "a failed txn must not bump the revision");
    let all = s.list("/").unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|kv| kv.mod_revision == revision));

    // Put and delete in one txn, and a second put of a key within the same txn.
    let mixed = [Op::Delete { key: "/x".into() }, put("/z", b"1"), put("/z", b"2")];
    let outcome = s.txn(&[], &mixed).unwrap();
    assert_eq!(outcome, TxnOutcome::Committed { revision: revision + 1 });
    assert_eq!(s.get("/x").unwrap(), None);
    assert_eq!(s.get("/z").unwrap().unwrap().value, b"2");
}

#[test]
fn deleting_a_missing_key_is_not_an_error() {
    let (_dir, s) = temp_store();
    let outcome = s.txn(&[], &[Op::Delete { key: "/missing".into() }]).unwrap();
    assert!(outcome.committed());
    assert_eq!(s.get("/missing").unwrap(), None);
}

#[test]
fn data_and_revision_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let s = EmbeddedStore::open(&path).unwrap();
        s.create("/a", b"1".to_vec()).unwrap();
        s.create("/b", b"2".to_vec()).unwrap();
    }
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(s.get("/a").unwrap().unwrap().value, b"1");
    assert_eq!(s.get("/b").unwrap().unwrap().mod_revision, 2);
    assert_eq!(s.create("/c", vec![]).unwrap(), 3);
    s.integrity_check().unwrap();
}

#[test]
fn the_wal_stays_short_across_short_lived_openers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let wal = dir.path().join("store.db-wal");
    let mut longest = 0;
    // Each round is one plugin process: open, read, write 3 pages or so, close.
    for i in 0..300 {
        let s = EmbeddedStore::open(&path).unwrap();
        s.list("/k/").unwrap();
        s.create(&format!("/k/{i}"), vec![7; 3000]).unwrap();
        drop(s);
        longest = longest.max(fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    // The threshold is 128 pages; one commit adds a few frames past it.
    assert!(longest < 140 * 4120, "the WAL grew to {longest} bytes");
    let options = EmbeddedOptions { synchronous: Synchronous::Full, ..Default::default() };
    let s = EmbeddedStore::open_with(&path, options).unwrap();
    assert_eq!(s.list("/k/").unwrap().len(), 300);
    s.integrity_check().unwrap();
}

#[test]
fn files_are_0600_in_a_0700_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("var/lib/calico");
    let path = sub.join("store.db");
    let s = EmbeddedStore::open(&path).unwrap();
    s.create("/a", vec![]).unwrap();
    assert_eq!(mode(&sub), 0o700);
    assert_eq!(mode(&dir.path().join("var")), 0o700);
    for file in ["store.db", "store.db-wal", "store.db-shm"] {
        assert_eq!(mode(&sub.join(file)), 0o600, "{file}");
    }
}

#[test]
fn an_existing_world_readable_file_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    fs::write(&path, b"").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    EmbeddedStore::open(&path).unwrap().create("/a", vec![]).unwrap();
    assert_eq!(mode(&path), 0o600);
}

fn open_err(path: &Path) -> Error {
    match EmbeddedStore::open(path) {
        Ok(_) => panic!("{} should not open", path.display()),
        Err(e) => e,
    }
}

#[test]
fn unusable_paths_give_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.db");
    fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    let paths: [PathBuf; 5] =
        [dir.path().to_owned(), "/proc/foo/x.db".into(), "/proc/self/x.db".into(), garbage, "/dev/null".into()];
    for path in &paths {
        let err = open_err(path);
        let shown = err.to_string();
        eprintln!("{shown}");
        assert!(shown.contains(&path.display().to_string()), "{shown}");
        assert!(!err.is_unavailable(), "{shown}");
    }
    assert!(matches!(open_err(Path::new("/proc/foo/x.db")), Error::CreateDir { .. }));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    drop(EmbeddedStore::open(&path).unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.pragma_update(None, "user_version", 99).unwrap();
    drop(raw);
    let err = open_err(&path);
    assert!(matches!(err, Error::Protocol(_)), "{err}");
    assert!(err.to_string().contains("99"), "{err}");
}

/// A store written by the first schema (a WITHOUT ROWID table keyed by `key`) is migrated on
/// open: same keys, values and revisions, and the revision counter goes on from where it was.
#[test]
fn a_version_1_store_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL,
                          mod_revision INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER NOT NULL);
         INSERT INTO meta (id, revision) VALUES (0, 7);
         INSERT INTO kv VALUES ('/b', x'02', 5), ('/a', x'01', 7);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(raw);

    let s = EmbeddedStore::open(&path).unwrap();
    let all = s.list("/").unwrap();
    let found: Vec<(&str, &[u8], i64)> =
        all.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision)).collect();
    assert_eq!(found, [("/a", &[1u8][..], 7), ("/b", &[2u8][..], 5)]);
    assert_eq!(s.create("/c", vec![3]).unwrap(), 8, "revisions continue");
    assert_eq!(s.update("/a", vec![9], 7).unwrap(), 9, "the old revision still compares");
    drop(s);
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 4);
}

#[test]
fn a_store_locked_too_long_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let s = EmbeddedStore::open(&path).unwrap();
    s.create("/a", b"1".to_vec()).unwrap();

    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let options = EmbeddedOptions { busy_timeout: Duration::from_millis(50), ..Default::default() };
    let waiter = EmbeddedStore::open_with(&path, options).unwrap();
    // WAL: readers are not blocked by the writer.
    assert_eq!(waiter.get("/a").unwrap().unwrap().value, b"1");
    let err = waiter.create("/b", vec![]).expect_err("the write lock is held");
    assert!(err.is_unavailable(), "{err}");
    assert!(matches!(err, Error::Unavailable { .. }));
    assert!(err.to_string().contains("store.db"), "{err}");

    holder.execute_batch("COMMIT").unwrap();
    assert_eq!(waiter.create("/b", vec![]).unwrap(), 2);
}
