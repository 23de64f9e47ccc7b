//! Measure the embedded store on this machine: open, reads, commits with `synchronous` NORMAL
//! and FULL, and short-lived processes doing what calico-ipam ADD and DEL do. Prints medians
//! and 90th percentiles, which a shared, noisy machine disturbs less than means.
//!
//! `cargo run --release -p datastore --example embedded_bench [DIR]` (DIR defaults to a fresh
//! directory under /tmp; pass one on the disk that will hold /var/lib/calico).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use datastore::sqlite::{EmbeddedOptions, EmbeddedStore, Synchronous};
use datastore::{Compare, Datastore, Op, Read, TxnOutcome};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Set in a child: `add:<db>` or `del:<db>`, or empty for a process that does nothing.
const CHILD: &str = "EMBEDDED_BENCH_CHILD";
const HANDLES: &str = "/calico/ipam/v2/handle/";
const BLOCK: &str = "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26";

fn main() -> Result<()> {
    if let Ok(role) = env::var(CHILD) {
        return child(&role);
    }
    let dir = match env::args().nth(1) {
        Some(d) => PathBuf::from(d),
        None => env::temp_dir().join(format!("embedded-bench-{}", std::process::id())),
    };
    let db = dir.join("store.db");
    let store = EmbeddedStore::open(&db)?;
    for i in 0..100 {
        store.create(&format!("{HANDLES}h{i:03}"), vec![7; 300])?;
    }
    store.create(BLOCK, vec![5; 1500])?;

    let warm_open = sample(1000, |_| {
        let s = EmbeddedStore::open(&db)?;
        s.get(BLOCK)?;
        Ok(())
    })?;
    report("open + first get, in a warm process", &warm_open);
    report("get", &sample(20_000, |_| store.get(BLOCK).map(drop).map_err(Into::into))?);
    report("list of 100 keys", &sample(5_000, |_| store.list(HANDLES).map(drop).map_err(Into::into))?);
    for (synchronous, count) in [(Synchronous::Normal, 3_000), (Synchronous::Full, 300)] {
        let options = EmbeddedOptions { synchronous, ..Default::default() };
        let s = EmbeddedStore::open_with(&db, options)?;
        let commits = sample(count, |i| {
            let key = format!("/bench/{synchronous:?}/{i}");
            let ops = [Op::Put { key: key.clone(), value: vec![1; 200] }];
            match s.txn(&[Compare::Absent(key)], &ops)? {
                TxnOutcome::Committed { .. } => Ok(()),
                TxnOutcome::Conflict => Err("unexpected conflict".into()),
            }
        })?;
        report(&format!("txn commit, synchronous={synchronous:?}"), &commits);
    }
    drop(store);

    // Short-lived processes, with no other process holding the store open (as on a node).
    let exe = env::current_exe()?;
    let (mut add_inner, mut del_inner) = (Vec::new(), Vec::new());
    let bare = sample(300, |_| run_child(&exe, "").map(drop))?;
    let pairs = sample(300, |_| {
        add_inner.push(run_child(&exe, &format!("add:{}", db.display()))?);
        del_inner.push(run_child(&exe, &format!("del:{}", db.display()))?);
        Ok(())
    })?;
    report("process exec, nothing else", &bare);
    report("ADD + DEL: two processes, wall", &pairs);
    report("  ADD store work in the child (open..close)", &add_inner);
    report("  DEL store work in the child (open..close)", &del_inner);

    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// What calico-ipam does per call: open, one batch of reads, then one or two txns. Prints the
/// time from before open to after close, in nanoseconds.
fn child(role: &str) -> Result<()> {
    let Some((verb, db)) = role.split_once(':') else {
        return Ok(());
    };
    let start = Instant::now();
    let s = EmbeddedStore::open(Path::new(db))?;
    let handle = format!("{HANDLES}bench-{}", std::process::id());
    let reads = [
        Read::Key(handle.clone()),
        Read::Prefix("/calico/ipam/v2/pool/".into()),
        Read::Prefix("/calico/ipam/v2/host/bench/ipv4/block/".into()),
    ];
    s.read_many(&reads)?;
    let block = s.get(BLOCK)?.ok_or("no block")?;
    let mut ops = vec![Op::Put { key: BLOCK.into(), value: vec![6; 1500] }];
    ops.push(match verb {
        "add" => Op::Put { key: handle, value: vec![3; 200] },
        _ => Op::Delete { key: handle },
    });
    s.txn(&[Compare::Revision(BLOCK.into(), block.mod_revision)], &ops)?;
    drop(s);
    println!("{}", start.elapsed().as_nanos());
    Ok(())
}

fn run_child(exe: &Path, role: &str) -> Result<Duration> {
    let out = Command::new(exe).env(CHILD, role).stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        return Err("child failed".into());
    }
    let text = String::from_utf8(out.stdout)?;
    Ok(Duration::from_nanos(text.trim().parse().unwrap_or(0)))
}

/// Time `n` runs of `f`, one by one.
fn sample(n: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<Vec<Duration>> {
    (0..n)
        .map(|i| {
            let start = Instant::now();
            f(i).map(|()| start.elapsed())
        })
        .collect()
}

fn report(what: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted.get((q * (sorted.len() - 1) as f64) as usize).copied();
    let us = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64() * 1e6;
    println!("{what:<44} median {:>7.1} us  p90 {:>7.1} us  ({} runs)", us(at(0.5)), us(at(0.9)), sorted.len());
}
