//! How a call reaches etcd: one member at a time, failing over to the next, every step
//! bounded in time (see the parent module's doc).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};
use std::time::Instant;

use etcd_client::{Error as EtcdError, KvClient};
use tonic::transport::Endpoint;

use super::{
    convert, EtcdStore, State, CONNECT_TIMEOUT, HOLD_DOWN, MAX_RESPONSE_BYTES, OPERATION_BUDGET, REQUEST_TIMEOUT,
};
use crate::Error;

impl EtcdStore {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `request` against the current member, failing over as the module doc describes.
    /// `idempotent` requests may be resent after any unavailable failure.
    pub(super) fn call<T, F, Fut>(&self, idempotent: bool, request: F) -> Result<T, Error>
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
                let reason = match e {
                    Error::Unavailable { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                self.state().down = Some((Instant::now() + HOLD_DOWN, reason));
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
            let (index, kv, fresh) = self.client(deadline).await?;
            if !fresh {
                // The runtime only runs inside calls: let the connection task read what
                // arrived meanwhile (a member that went down), so that a dead connection is
                // noticed before a request is written to it rather than after.
                tokio::task::yield_now().await;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let url = &self.targets[index].url;
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            let limit = remaining.min(REQUEST_TIMEOUT);
            let err = match tokio::time::timeout(limit, request(kv)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) => {
                    let resend = idempotent || convert::never_sent(&e);
                    let local = !convert::from_server(&e);
                    let err = if fresh && url.starts_with("https://") && convert::closed_early(&e) {
                        tls_rejection(url, e)
                    } else {
                        etcd_error(url, e)
                    };
                    // A broken connection, or a member that cannot serve: use another one.
                    if local || err.is_unavailable() {
                        self.forget(index);
                    }
                    if !(err.is_unavailable() && resend) {
                        return Err(err);
                    }
                    err
                }
                Err(_elapsed) => {
                    self.forget(index);
                    let err =
                        Error::Unavailable { reason: format!("etcd {url}: no answer within {limit:?}"), source: None };
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

    /// The client of the member in use, connecting to the next reachable member if needed;
    /// `true` when the connection was made just now.
    async fn client(&self, deadline: Instant) -> Result<(usize, KvClient, bool), Error> {
        let start = {
            let state = self.state();
            if let Some((index, kv)) = &state.current {
                return Ok((*index, kv.clone(), false));
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
                    return Ok((index, kv, true));
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
        // The reason names every member's failure; repeating one of them as the source would
        // print it twice.
        let reasons: Vec<String> = failures.iter().map(ToString::to_string).collect();
        Err(Error::Unavailable { reason: format!("no etcd member reachable: {}", reasons.join("; ")), source: None })
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

pub(super) fn etcd_error(url: &str, cause: EtcdError) -> Error {
    Error::Etcd {
        endpoints: url.to_owned(),
        detail: convert::detail(&cause),
        unavailable: convert::is_unavailable(&cause),
        cause,
    }
}

/// A TLS 1.3 server checks the client certificate after the client has finished its side of
/// the handshake: a rejection shows as the connection closing before the first request, and
/// the server's alert may be lost in the race. Say what it most likely means.
fn tls_rejection(url: &str, cause: EtcdError) -> Error {
    let detail = format!(
        "{}: the server closed the TLS connection before the first request; it most likely \
         rejected the client certificate (check etcd_cert_file, etcd_key_file and that the \
         server trusts their CA)",
        convert::detail(&cause)
    );
    Error::Etcd { endpoints: url.to_owned(), detail, unavailable: false, cause }
}
