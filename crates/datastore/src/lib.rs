//! A small revisioned key-value store: the one datastore abstraction behind IPAM, calico-cni
//! and calicoctl.
//!
//! The model is etcd v3's, so that logic written against [`Datastore`] runs unchanged on the
//! embedded backend and on etcd:
//! - every successful write bumps one store-wide revision; a key remembers the revision of its
//!   last write (`mod_revision`);
//! - all conditional writes go through [`Datastore::txn`]: a list of compares that must all
//!   hold, and a list of writes applied atomically when they do.
//!
//! Backends implement `get`, `list` and `txn`; the single-key helpers are provided on top.
//!
//! # Watching
//! A long-lived caller (the per-host agent) lists once and then follows the changes:
//! [`Datastore::read_many_at`] reads in one snapshot and returns that snapshot's store
//! revision `r`; [`Datastore::watch`] from `r + 1` then delivers every later put and delete
//! under a set of prefixes, with no gap and no repeat, through [`Watch::next`] (blocking, with
//! a timeout). When the history it needs is gone (etcd compacted it; the embedded store keeps
//! a change log of the last [`sqlite::CHANGE_LOG_REVISIONS`] revisions), the watch fails with
//! [`Error::Compacted`] and the caller lists again. Details in [`watch`].
//!
//! ```no_run
//! # fn agent(store: &dyn datastore::Datastore) -> Result<(), datastore::Error> {
//! use std::time::Duration;
//! use datastore::{Error, Read};
//! let prefixes = vec!["/calico/v1/ipam/v4/pool/".to_owned()];
//! 'resync: loop {
//!     let (pools, revision) = store.read_many_at(&[Read::Prefix(prefixes[0].clone())])?;
//!     // ... apply `pools` in full ...
//!     let mut watch = store.watch(&prefixes, revision + 1)?;
//!     loop {
//!         match watch.next(Duration::from_secs(10)) {
//!             Ok(Some(events)) => { /* apply each event */ }
//!             Ok(None) => {}
//!             Err(Error::Compacted { .. }) => continue 'resync,
//!             Err(e) if e.is_unavailable() => {} // the watch resumes by itself
//!             Err(e) => return Err(e),
//!         }
//!     }
//! }
//! # }
//! ```

use std::fmt;

pub mod config;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;
pub mod sqlite;
pub mod watch;

pub use config::{open, Config, DEFAULT_DATASTORE_PATH};
pub use error::{redact_url, Error};
#[cfg(feature = "etcd")]
pub use etcd::EtcdStore;
pub use sqlite::EmbeddedStore;
pub use watch::{Event, EventKind, Watch};

/// A stored key with the revision of its last write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The store revision of the last write of this key (etcd's `mod_revision`). Always > 0.
    pub mod_revision: i64,
}

/// A precondition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist (etcd: `version == 0`).
    Absent(String),
    /// The key exists and was last written at this revision (etcd: `mod_revision == r`).
    Revision(String, i64),
}

/// A write of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
    },
    /// Deleting a key that does not exist is not an error (as in etcd).
    Delete {
        key: String,
    },
}

/// What a transaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every compare held; the writes were applied at this store revision.
    Committed { revision: i64 },
    /// At least one compare failed; nothing was written.
    Conflict,
}

impl TxnOutcome {
    pub fn committed(self) -> bool {
        matches!(self, TxnOutcome::Committed { .. })
    }
}

/// One read of a batch (see [`Datastore::read_many`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    Key(String),
    Prefix(String),
}

/// The datastore trait. Implementations must be safe to use from many processes at once:
/// `txn` is atomic and isolated across processes (and, for etcd, across hosts).
pub trait Datastore: Send + Sync {
    /// One key, or `None` when absent.
    fn get(&self, key: &str) -> Result<Option<KeyValue>, Error>;

    /// Every key starting with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, Error>;

    /// Apply `ops` atomically if every compare holds.
    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<TxnOutcome, Error>;

    /// Several reads at once. Each result holds the matching keys (0 or 1 for `Read::Key`).
    /// Backends with a network hop answer this in one round trip (etcd: one Txn of ranges);
    /// the default simply reads one after the other.
    fn read_many(&self, reads: &[Read]) -> Result<Vec<Vec<KeyValue>>, Error> {
        reads
            .iter()
            .map(|r| match r {
                Read::Key(k) => self.get(k).map(|kv| kv.into_iter().collect()),
                Read::Prefix(p) => self.list(p),
            })
            .collect()
    }

    /// Like [`read_many`](Self::read_many), in one snapshot, with the store revision of that
    /// snapshot: a [`watch`](Self::watch) from that revision + 1 misses no later change and
    /// repeats none that the reads already show.
    fn read_many_at(&self, reads: &[Read]) -> Result<(Vec<Vec<KeyValue>>, i64), Error> {
        let _ = reads;
        Err(Error::WatchUnsupported)
    }

    /// Every key starting with `prefix`, with the store revision of the listing (see
    /// [`read_many_at`](Self::read_many_at)).
    fn list_at(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), Error> {
        let (mut found, revision) = self.read_many_at(&[Read::Prefix(prefix.to_owned())])?;
        Ok((found.pop().unwrap_or_default(), revision))
    }

    /// Follow the changes of every key under `prefixes`, starting with those of revision
    /// `from_revision` (1 or more). Fails with [`Error::Compacted`] when that history is no
    /// longer kept (now, or later from [`Watch::next`]). Backends that cannot watch return
    /// [`Error::WatchUnsupported`].
    fn watch(&self, prefixes: &[String], from_revision: i64) -> Result<Box<dyn Watch>, Error> {
        let _ = (prefixes, from_revision);
        Err(Error::WatchUnsupported)
    }

    /// How many requests this store has sent so far (failed attempts included), for backends
    /// with a network hop; `None` when the backend does not count them.
    fn round_trips(&self) -> Option<u64> {
        None
    }

    /// A cheap round trip that proves the store is reachable (used by STATUS).
    fn ping(&self) -> Result<(), Error> {
        self.get("/calico/ping").map(|_| ())
    }

    /// A cheap check that a write could succeed now (STATUS: an ADD must be able to write).
    /// Writes nothing. By default the [`Datastore::ping`]; the embedded store also checks that
    /// its file and file system take writes.
    fn check_writable(&self) -> Result<(), Error> {
        self.ping()
    }

    /// Create `key` if it does not exist. Returns the new revision, or `Err(Conflict)`.
    fn create(&self, key: &str, value: Vec<u8>) -> Result<i64, Error> {
        let outcome = self.txn(&[Compare::Absent(key.to_owned())], &[Op::Put { key: key.to_owned(), value }])?;
        revision_or_conflict(outcome, key)
    }

    /// Replace `key` if it was last written at `revision`. Returns the new revision.
    fn update(&self, key: &str, value: Vec<u8>, revision: i64) -> Result<i64, Error> {
        let outcome =
            self.txn(&[Compare::Revision(key.to_owned(), revision)], &[Op::Put { key: key.to_owned(), value }])?;
        revision_or_conflict(outcome, key)
    }

    /// Delete `key` if it was last written at `revision`.
    fn delete(&self, key: &str, revision: i64) -> Result<(), Error> {
        let outcome =
            self.txn(&[Compare::Revision(key.to_owned(), revision)], &[Op::Delete { key: key.to_owned() }])?;
        revision_or_conflict(outcome, key).map(|_| ())
    }
}

fn revision_or_conflict(outcome: TxnOutcome, key: &str) -> Result<i64, Error> {
    match outcome {
        TxnOutcome::Committed { revision } => Ok(revision),
        TxnOutcome::Conflict => Err(Error::Conflict { key: key.to_owned() }),
    }
}

impl fmt::Display for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compare::Absent(k) => write!(f, "{k} absent"),
            Compare::Revision(k, r) => write!(f, "{k} at revision {r}"),
        }
    }
}
