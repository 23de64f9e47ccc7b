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

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::{Error as EtcdError, KvClient, TxnOpResponse};
use tonic::transport::Endpoint;

use crate::config::Config;
use crate::{Compare, Datastore, Error, KeyValue, Op, Read, TxnOutcome};

mod convert;
mod target;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub(crate) use convert::is_unavailable;
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

impl EtcdStore {
    /// Check the etcd settings of `cfg` and read its TLS files. No connection is made here:
    /// the first call connects, within [`OPERATION_BUDGET`].
    pub fn connect(cfg: &Config) -> Result<EtcdStore, Error> {
        let targets = target::targets(cfg, CONNECT_TIMEOUT, REQUEST_TIMEOUT)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            // Only a host name to resolve would start a thread; keep it to one, small.
            .max_blocking_threads(1)
            .thread_stack_size(256 * 1024)
            .build()
            .map_err(|e| Error::Unavailable {
                reason: "cannot start the etcd client's runtime".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(EtcdStore { runtime, targets, state: Mutex::default(), round_trips: AtomicU64::new(0) })
    }

    /// How many requests this store has sent to etcd (failed attempts included): the round
    /// trips an operation costs.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// The member URLs, in the order they are tried.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(|t| t.url.as_str())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `request` against the current member, failing over as the module doc describes.
    /// `idempotent` requests may be resent after any unavailable failure.
    fn call<T, F, Fut>(&self, idempotent: bool, request: F) -> Result<T, Error>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = Result<T, EtcdError>>,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::EtcdConfig {
                reason: "EtcdStore is synchronous: call it from a blocking thread, not from \
                         inside an async runtime"
                    .into(),
            });
        }
        self.check_hold_down()?;
        let result = self.runtime.block_on(self.attempts(idempotent, request));
        if let Err(e) = &result {
            if e.is_unavailable() {
                self.state().down = Some((Instant::now() + HOLD_DOWN, e.to_string()));
            }
        }
        result
    }

    fn check_hold_down(&self) -> Result<(), Error> {
        let mut state = self.state();
        if let Some((until, reason)) = &state.down {
            if Instant::now() < *until {
                return Err(Error::Unavailable {
                    reason: format!("etcd failed less than {HOLD_DOWN:?} ago: {reason}"),
                    source: None,
                });
            }
            state.down = None;
        }
        Ok(())
    }

    async fn attempts<T, F, Fut>(&self, idempotent: bool, request: F) -> Result<T, Error>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = Result<T, EtcdError>>,
    {
        let deadline = Instant::now() + OPERATION_BUDGET;
        let mut last = None;
        // Each member once, plus one more so that a stale connection to the first can be
        // replaced.
        for _ in 0..=self.targets.len() {
            let (index, kv) = self.client(deadline).await?;
            // The runtime only runs inside calls: let the connection task read what arrived
            // while we were away (a member that went down), so that a dead connection is
            // noticed before a request is written to it rather than after.
            tokio::task::yield_now().await;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let url = &self.targets[index].url;
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            let err = match tokio::time::timeout(remaining.min(REQUEST_TIMEOUT), request(kv)).await
            {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) => {
                    let resend = idempotent || convert::never_sent(&e);
                    let err = etcd_error(url, e);
                    if !err.is_unavailable() {
                        return Err(err);
                    }
                    self.forget(index);
                    if !resend {
                        return Err(err);
                    }
                    err
                }
                Err(_elapsed) => {
                    self.forget(index);
                    let err = Error::Unavailable {
                        reason: format!("etcd {url}: no answer within {REQUEST_TIMEOUT:?}"),
                        source: None,
                    };
                    if !idempotent {
                        return Err(err);
                    }
                    err
                }
            };
            last = Some(err);
        }
        Err(last.unwrap_or_else(|| Error::Unavailable {
            reason: format!("etcd: no answer within {OPERATION_BUDGET:?}"),
            source: None,
        }))
    }

    /// The client of the member in use, connecting to the next reachable member if needed.
    async fn client(&self, deadline: Instant) -> Result<(usize, KvClient), Error> {
        let start = {
            let state = self.state();
            if let Some((index, kv)) = &state.current {
                return Ok((*index, kv.clone()));
            }
            state.next
        };
        let n = self.targets.len();
        let mut failures = Vec::new();
        for index in (0..n).map(|k| (start + k) % n) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let target = &self.targets[index];
            let limit = remaining.min(CONNECT_TIMEOUT);
            match tokio::time::timeout(limit, connect_one(&target.endpoint)).await {
                Ok(Ok(kv)) => {
                    self.state().current = Some((index, kv.clone()));
                    return Ok((index, kv));
                }
                Ok(Err(e)) => failures.push(etcd_error(&target.url, e)),
                Err(_elapsed) => failures.push(Error::Unavailable {
                    reason: format!("etcd {}: no connection within {limit:?}", target.url),
                    source: None,
                }),
            }
        }
        // A TLS or settings problem needs a fix, not a retry: report it as such.
        if let Some(pos) = failures.iter().position(|e| !e.is_unavailable()) {
            return Err(failures.swap_remove(pos));
        }
        let reasons: Vec<String> = failures.iter().map(ToString::to_string).collect();
        Err(Error::Unavailable {
            reason: format!("no etcd member reachable: {}", reasons.join("; ")),
            source: failures.pop().map(|e| Box::new(e) as _),
        })
    }

    /// Drop the connection to member `index` after a failure; the next call starts with the
    /// member after it.
    fn forget(&self, index: usize) {
        let mut state = self.state();
        if state.current.as_ref().is_some_and(|(i, _)| *i == index) {
            state.current = None;
            state.next = (index + 1) % self.targets.len();
        }
    }
}

/// Connect to one member now (TCP, TLS and HTTP/2 handshakes), rather than on first use.
async fn connect_one(endpoint: &Endpoint) -> Result<KvClient, EtcdError> {
    let channel = endpoint.connect().await?;
    let client = etcd_client::Client::from_channel(etcd_client::Channel::Tonic(channel), None).await?;
    Ok(client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES))
}

fn etcd_error(url: &str, source: EtcdError) -> Error {
    Error::Etcd { endpoints: url.to_owned(), detail: convert::detail(&source), source }
}

impl Datastore for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        let resp = self.call(true, |mut kv| async move { kv.get(key, None).await })?;
        Ok(convert::key_values(resp)?.into_iter().next())
    }

    fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, Error> {
        let resp = self.call(true, |mut kv| async move {
            kv.get(prefix, Some(convert::prefix_options())).await
        })?;
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

    /// All reads in one read-only etcd Txn: one round trip, one consistent revision.
    fn read_many(&self, reads: &[Read]) -> Result<Vec<Vec<KeyValue>>, Error> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let txn = convert::read_txn(reads);
        let resp = self.call(true, |mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })?;
        let answers = resp.op_responses();
        if answers.len() != reads.len() {
            return Err(Error::Protocol(format!(
                "etcd answered {} of {} reads",
                answers.len(),
                reads.len()
            )));
        }
        answers
            .into_iter()
            .map(|answer| match answer {
                TxnOpResponse::Get(range) => convert::key_values(range),
                other => Err(Error::Protocol(format!("etcd answered a read with {other:?}"))),
            })
            .collect()
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
