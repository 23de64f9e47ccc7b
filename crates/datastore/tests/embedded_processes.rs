//! The embedded store shared by many processes: racing opens of a fresh file, compare-and-swap
//! increments, and `kill -9` at random moments.
//!
//! Children are this test binary run again with `--exact child_role`; the environment picks
//! their role. They report each commit on stdout as `COMMITTED <key> <revision>`, flushed
//! after the commit returns, so every reported line is a write that must survive.

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datastore::sqlite::EmbeddedStore;
use datastore::{Compare, Datastore, Op, TxnOutcome};

const ROLE: &str = "DATASTORE_TEST_ROLE";
const DB: &str = "DATASTORE_TEST_DB";
const ID: &str = "DATASTORE_TEST_ID";
const COUNTER: &str = "/counter";

/// Runs only as a child (with `ROLE` set); a no-op in the normal test run.
#[test]
fn child_role() {
    let Ok(role) = env::var(ROLE) else { return };
    let db = env::var(DB).expect("child needs DATASTORE_TEST_DB");
    let id = env::var(ID).expect("child needs DATASTORE_TEST_ID");
    let store =
        EmbeddedStore::open(Path::new(&db)).unwrap_or_else(|e| panic!("child open: {e} ({e:?})"));
    let mut out = std::io::stdout().lock();
    let mut report = |key: &str, revision: i64| {
        writeln!(out, "COMMITTED {key} {revision}").expect("stdout");
        out.flush().expect("stdout");
    };
    match role.as_str() {
        "open" => {
            let key = format!("/open/{id}");
            report(&key, store.create(&key, vec![]).expect("create"));
        }
        "increment" => {
            for _ in 0..100 {
                report(COUNTER, increment(&store));
            }
        }
        "write-forever" => {
            for seq in 0u64.. {
                let key = format!("/k/{id}/{seq}");
                let ops = [
                    Op::Put {
                        key: key.clone(),
                        value: vec![0x42; 200],
                    },
                    Op::Put {
                        key: format!("/last/{id}"),
                        value: seq.to_string().into_bytes(),
                    },
                ];
                let outcome = store
                    .txn(&[Compare::Absent(key.clone())], &ops)
                    .expect("txn");
                let TxnOutcome::Committed { revision } = outcome else {
                    panic!("{key} exists")
                };
                report(&key, revision);
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Read, add one, compare-and-swap; retry on conflict. Returns the committed revision.
fn increment(store: &EmbeddedStore) -> i64 {
    loop {
        let current = store.get(COUNTER).expect("get");
        let (n, compare) = match &current {
            None => (0, Compare::Absent(COUNTER.into())),
            Some(kv) => (
                parse(&kv.value),
                Compare::Revision(COUNTER.into(), kv.mod_revision),
            ),
        };
        let op = Op::Put {
            key: COUNTER.into(),
            value: (n + 1).to_string().into_bytes(),
        };
        match store.txn(&[compare], &[op]) {
            Ok(TxnOutcome::Committed { revision }) => return revision,
            Ok(TxnOutcome::Conflict) => continue,
            Err(e) => panic!("increment: {e}"),
        }
    }
}

fn parse(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("counter value")
}

fn spawn_child(role: &str, db: &Path, id: &str) -> Child {
    Command::new(env::current_exe().expect("current_exe"))
        .args([
            "--exact",
            "child_role",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env(ROLE, role)
        .env(DB, db)
        .env(ID, id)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// Every complete `COMMITTED key revision` line of a child's output.
fn committed(output: &str) -> Vec<(String, i64)> {
    output
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter_map(|line| {
            let mut words = line.strip_prefix("COMMITTED ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
        })
        .collect()
}

/// Start children and read their stdout concurrently (a full pipe would stall them).
fn run_children(role: &str, db: &Path, n: usize) -> Vec<(Child, thread::JoinHandle<String>)> {
    (0..n)
        .map(|i| {
            let mut child = spawn_child(role, db, &i.to_string());
            let mut stdout = child.stdout.take().expect("piped stdout");
            let reader = thread::spawn(move || {
                let mut s = String::new();
                // A child killed mid-write may leave invalid UTF-8; keep what was read.
                let mut bytes = Vec::new();
                let _ = stdout.read_to_end(&mut bytes);
                s.push_str(&String::from_utf8_lossy(&bytes));
                s
            });
            (child, reader)
        })
        .collect()
}

#[test]
fn many_processes_open_a_fresh_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh/store.db");
    let children = run_children("open", &db, 64);
    for (mut child, reader) in children {
        assert!(child.wait().unwrap().success());
        assert_eq!(committed(&reader.join().unwrap()).len(), 1);
    }
    let store = EmbeddedStore::open(&db).unwrap();
    assert_eq!(store.list("/open/").unwrap().len(), 64);
    store.integrity_check().unwrap();
}

#[test]
fn concurrent_cas_increments_are_not_lost() {
    const N: usize = 8;
    const M: u64 = 100; // as in the "increment" role
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    drop(EmbeddedStore::open(&db).unwrap());
    let mut all = BTreeSet::new();
    for (mut child, reader) in run_children("increment", &db, N) {
        assert!(child.wait().unwrap().success());
        let revisions: Vec<i64> = committed(&reader.join().unwrap())
            .into_iter()
            .map(|c| c.1)
            .collect();
        assert_eq!(revisions.len() as u64, M);
        assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
        all.extend(revisions);
    }
    assert_eq!(
        all.len() as u64,
        N as u64 * M,
        "every commit has its own revision"
    );
    let counter = EmbeddedStore::open(&db)
        .unwrap()
        .get(COUNTER)
        .unwrap()
        .expect("counter");
    assert_eq!(parse(&counter.value), N as u64 * M);
    assert_eq!(Some(&counter.mod_revision), all.last());
}

/// A small xorshift generator: random enough to vary kill moments, no dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos());
        Rng((nanos as u64 ^ u64::from(std::process::id())) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn kill_9_loses_no_committed_write() {
    const ROUNDS: usize = 6;
    const WRITERS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let mut rng = Rng::seeded();
    let mut revisions = BTreeSet::new();
    for round in 0..ROUNDS {
        let children = run_children("write-forever", &db, WRITERS);
        thread::sleep(Duration::from_millis(30 + rng.below(150)));
        let mut reported = Vec::new();
        for (mut child, reader) in children {
            thread::sleep(Duration::from_micros(rng.below(5_000)));
            child.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix.
            child.wait().expect("reap");
            reported.extend(committed(&reader.join().expect("reader")));
        }
        let store = EmbeddedStore::open(&db).unwrap();
        store.integrity_check().unwrap();
        let stored: BTreeMap<String, i64> = store
            .list("/k/")
            .unwrap()
            .into_iter()
            .map(|kv| (kv.key, kv.mod_revision))
            .collect();
        // Each reported key is there, at the revision it was committed at.
        for (key, revision) in &reported {
            assert_eq!(stored.get(key), Some(revision), "round {round}: {key}");
            assert!(
                revisions.insert(*revision),
                "revision {revision} reported twice"
            );
        }
        // The next round's writers reuse the ids: clear the keys in one txn.
        eprintln!(
            "round {round}: {} commits reported, {} stored",
            reported.len(),
            stored.len()
        );
        let ops: Vec<Op> = stored
            .keys()
            .map(|key| Op::Delete { key: key.clone() })
            .collect();
        store.txn(&[], &ops).unwrap();
    }
    assert!(
        revisions.len() > ROUNDS,
        "children committed too little: {}",
        revisions.len()
    );
    EmbeddedStore::open(&db).unwrap().integrity_check().unwrap();
}
