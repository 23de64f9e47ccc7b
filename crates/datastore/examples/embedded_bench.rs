//! Measure the embedded store on this machine: open, reads, commits with `synchronous` NORMAL
//! and FULL, and a whole short-lived process doing what one calico-ipam call does.
//!
//! `cargo run --release -p datastore --example embedded_bench [DIR]` (DIR defaults to a fresh
//! directory under /tmp; pass one on the disk that will hold /var/lib/calico).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use datastore::sqlite::{EmbeddedOptions, EmbeddedStore, Synchronous};
use datastore::{Compare, Datastore, Op, TxnOutcome};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const CHILD: &str = "EMBEDDED_BENCH_CHILD";

fn main() -> Result<()> {
    if let Ok(db) = env::var(CHILD) {
        return child(Path::new(&db));
    }
    let dir = match env::args().nth(1) {
        Some(d) => PathBuf::from(d),
        None => env::temp_dir().join(format!("embedded-bench-{}", std::process::id())),
    };
    let db = dir.join("store.db");
    let store = EmbeddedStore::open(&db)?;
    for i in 0..100 {
        store.create(&format!("/calico/ipam/v2/handle/h{i:03}"), vec![7; 300])?;
    }

    let (opens, t) = timed(1000, |_| {
        let s = EmbeddedStore::open(&db)?;
        s.get("/calico/ipam/v2/handle/h000")?;
        Ok(())
    })?;
    report("open + first get (warm process)", opens, t);
    let (n, t) = timed(20_000, |_| store.get("/calico/ipam/v2/handle/h050").map(drop).map_err(Into::into))?;
    report("get", n, t);
    let (n, t) = timed(5_000, |_| store.list("/calico/ipam/v2/handle/").map(drop).map_err(Into::into))?;
    report("list of 100 keys", n, t);

    for (sync, count) in [(Synchronous::Normal, 5_000), (Synchronous::Full, 500)] {
        let s = EmbeddedStore::open_with(&db, EmbeddedOptions { synchronous: sync, ..Default::default() })?;
        let (n, t) = timed(count, |i| {
            let key = format!("/bench/{sync:?}/{i}");
            let ops = [Op::Put { key: key.clone(), value: vec![1; 200] }];
            match s.txn(&[Compare::Absent(key)], &ops)? {
                TxnOutcome::Committed { .. } => Ok(()),
                TxnOutcome::Conflict => Err("unexpected conflict".into()),
            }
        })?;
        report(&format!("txn commit, synchronous={sync:?}"), n, t);
    }

    // Whole processes: the same binary exec'd with and without the store work.
    let exe = env::current_exe()?;
    let spawn = |with_store: bool| -> Result<()> {
        let mut cmd = Command::new(&exe);
        cmd.env(CHILD, if with_store { db.as_os_str() } else { "".as_ref() });
        match cmd.status()?.success() {
            true => Ok(()),
            false => Err("child failed".into()),
        }
    };
    let (n, bare) = timed(300, |_| spawn(false))?;
    report("process exec, no store", n, bare);
    let (n, full) = timed(300, |_| spawn(true))?;
    report("process exec, open + 2 get + list + 2 txn", n, full);
    println!("store work in a fresh process: {:.1} us", (full.saturating_sub(bare)).as_secs_f64() * 1e6 / n as f64);

    drop(store);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// One calico-ipam-like call: open, read the handle and the block list, claim and release.
fn child(db: &Path) -> Result<()> {
    if db.as_os_str().is_empty() {
        return Ok(());
    }
    let s = EmbeddedStore::open(db)?;
    let handle = format!("/bench/handle/{}", std::process::id());
    s.get(&handle)?;
    s.get("/calico/ipam/v2/handle/h001")?;
    s.list("/calico/ipam/v2/handle/")?;
    let rev = s.create(&handle, vec![3; 200])?;
    s.delete(&handle, rev)?;
    Ok(())
}

fn timed(n: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<(usize, Duration)> {
    let start = Instant::now();
    for i in 0..n {
        f(i)?;
    }
    Ok((n, start.elapsed()))
}

fn report(what: &str, n: usize, total: Duration) {
    println!("{what:<45} {:>9.1} us/op  ({n} ops)", total.as_secs_f64() * 1e6 / n as f64);
}
