//! The etcd v3 backend of [`Datastore`].
//!
//! The trait is synchronous, so [`EtcdStore`] owns a current-thread tokio runtime and blocks on
//! it: the IPAM code stays sync, no worker thread is started, and processes on the embedded
//! store never start tokio at all.
//!
//! Connections:
//! - [`EtcdStore::connect`] only checks the settings and reads the TLS files; it never touches
//!   the network. The first call connects (TCP, TLS, HTTP/2) to one member, eagerly and on a
//!   plain tonic channel, instead of etcd-client's balanced channel of lazy connections.
//! - One member is used at a time. When it fails, the call moves on to the next member, in the
//!   configured order. Reads are retried on any "unavailable" failure; writes only when the
//!   failure proves the request never left (it happened while connecting), so a transaction is
//!   never applied twice.
//! - Every call is bounded: [`CONNECT_TIMEOUT`] per connection attempt, [`REQUEST_TIMEOUT`]
//!   per request, [`OPERATION_BUDGET`] for the whole call with its failovers. When a call fails
//!   as unavailable, the calls of the next [`HOLD_DOWN`] fail at once, so a plugin whose etcd is
//!   down reports CNI code 11 within one budget however many calls it makes.
//!
//! Watches ([`Datastore::watch`]) have their own runtime and connection, and fail over and
//! resume by themselves: see `etcd/watch.rs`.
//!
//! Start-up cost (what a short-lived plugin pays on every ADD): with Nagle's algorithm on, the
//! first request's DATA frame waits behind its HEADERS frame for the server's delayed ACK
//! (~40 ms; etcd-client's `tls-openssl` connector leaves TCP_NODELAY off). With TCP_NODELAY
//! set, a current-thread runtime (no worker thread to hand off to) and an eager connection,
//! the first request takes about 1 ms on loopback (`examples/etcd_first_rpc.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{KvClient, TxnOpResponse};

use crate::config::Config;
use crate::{Compare, Datastore, Error, KeyValue, Op, Read, TxnOutcome, Watch};

mod convert;
mod failover;
mod target;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
mod watch;
#[cfg(test)]
mod watch_tests;

use target::Target;

/// How long one attempt to connect to one member may take (TCP, TLS and HTTP/2 handshakes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one request may wait for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The bound on one call of the trait, connection attempts and failovers included.
pub const OPERATION_BUDGET: Duration = Duration::from_secs(3);
/// After a call failed as unavailable, later calls fail at once for this long.
pub const HOLD_DOWN: Duration = Duration::from_secs(2);
/// The largest response accepted (tonic's default of 4 MiB is too small for big listings).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A [`Datastore`] on an etcd v3 cluster. Cheap to create; safe to share between threads.
pub struct EtcdStore {
    runtime: tokio::runtime::Runtime,
    targets: Vec<Target>,
    state: Mutex<State>,
    round_trips: AtomicU64,
}

#[derive(Default)]
struct State {
    /// The member in use and its client; `None` before the first call and after a failure.
    current: Option<(usize, KvClient)>,
    /// The member the next connection attempt starts with.
    next: usize,
    /// Until when calls fail at once, and why.
    down: Option<(Instant, String)>,
}

/// A current-thread tokio runtime for one client (`what` names it in the error). Only a host
/// name to resolve would start a thread: keep it to one, small.
pub(super) fn small_runtime(what: &str) -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(1)
        .thread_stack_size(256 * 1024)
        .build()
        .map_err(|e| Error::Unavailable { reason: format!("cannot start {what}'s runtime"), source: Some(Box::new(e)) })
}

impl EtcdStore {
    /// Check the etcd settings of `cfg` and read its TLS files. No connection is made here:
    /// the first call connects, within [`OPERATION_BUDGET`].
    pub fn connect(cfg: &Config) -> Result<EtcdStore, Error> {
        let targets = target::targets(cfg, CONNECT_TIMEOUT, REQUEST_TIMEOUT)?;
        let runtime = small_runtime("the etcd client")?;
        Ok(EtcdStore { runtime, targets, state: Mutex::default(), round_trips: AtomicU64::new(0) })
    }

    /// How many requests this store has sent to etcd (failed attempts included): the round
    /// trips an operation costs.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Compact etcd's history before `revision` (etcd's compact RPC): watches that still
    /// need it fail with [`Error::Compacted`].
    pub fn compact(&self, revision: i64) -> Result<(), Error> {
        self.call(true, |mut kv| async move { kv.compact(revision, None).await }).map(drop)
    }

    /// The member URLs, in the order they are tried.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(|t| t.url.as_str())
    }
}

impl Datastore for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        let resp = self.call(true, |mut kv| async move { kv.get(key, None).await })?;
        Ok(convert::key_values(resp)?.into_iter().next())
    }

    fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, Error> {
        let resp = self.call(true, |mut kv| async move { kv.get(prefix, Some(convert::prefix_options())).await })?;
        convert::key_values(resp)
    }

    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<TxnOutcome, Error> {
        let txn = convert::txn(compares, ops);
        let resp = self.call(false, |mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })?;
        if !resp.succeeded() {
            return Ok(TxnOutcome::Conflict);
        }
        let header = resp.header().ok_or_else(|| no_header("txn"))?;
        Ok(TxnOutcome::Committed { revision: header.revision() })
    }

    fn round_trips(&self) -> Option<u64> {
        Some(self.round_trips.load(Ordering::Relaxed))
    }

    /// All reads in one read-only etcd Txn: one round trip, one consistent revision.
    fn read_many(&self, reads: &[Read]) -> Result<Vec<Vec<KeyValue>>, Error> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        self.read_many_at(reads).map(|(found, _)| found)
    }

    /// As `read_many`; the revision is that of the Txn's header.
    fn read_many_at(&self, reads: &[Read]) -> Result<(Vec<Vec<KeyValue>>, i64), Error> {
        let txn = convert::read_txn(reads);
        let resp = self.call(true, |mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })?;
        let answers = resp.op_responses();
        if answers.len() != reads.len() {
            return Err(Error::Protocol(format!("etcd answered {} of {} reads", answers.len(), reads.len())));
        }
        let revision = resp.header().ok_or_else(|| no_header("read"))?.revision();
        let found = answers
            .into_iter()
            .map(|answer| match answer {
                TxnOpResponse::Get(range) => convert::key_values(range),
                other => Err(Error::Protocol(format!("etcd answered a read with {other:?}"))),
            })
            .collect::<Result<_, _>>()?;
        Ok((found, revision))
    }

    /// A watch stream of its own, on a connection of its own (see `etcd/watch.rs`).
    fn watch(&self, prefixes: &[String], from_revision: i64) -> Result<Box<dyn Watch>, Error> {
        Ok(Box::new(self.open_watch(prefixes, from_revision)?))
    }
}

fn no_header(what: &str) -> Error {
    Error::Protocol(format!("etcd {what} response without a header"))
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints().collect::<Vec<_>>())
            .field("round_trips", &self.round_trips())
            .finish_non_exhaustive()
    }
}
