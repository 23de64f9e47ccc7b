//! Watching etcd: one gRPC watch stream with one watcher per prefix, on a connection and a
//! current-thread runtime of the watch's own (the store's runtime only runs inside its calls).
//!
//! Each watcher remembers the first revision it has not delivered yet. When the stream breaks
//! (the member was stopped, the connection reset, no answer to HTTP/2 keep-alive pings), the
//! next [`Watch::next`] connects to the next member and creates every watcher again from its
//! own revision, so nothing is lost, and drops any event older than that, so nothing is
//! repeated. A watcher that etcd cancels for compaction ends the watch with
//! [`Error::Compacted`].

use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchClient, WatchOptions, WatchResponse, WatchStream};

use super::failover::etcd_error;
use super::target::Target;
use super::{EtcdStore, CONNECT_TIMEOUT, MAX_RESPONSE_BYTES, OPERATION_BUDGET};
use crate::watch::{self, Event, EventKind, Watch};
use crate::Error;

/// HTTP/2 pings on an idle watch stream: a member that vanished without closing the
/// connection is noticed within interval + timeout (while `next` runs). etcd accepts pings
/// every 5 s or more (`--grpc-keepalive-min-time`).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// After no member could be reached, how long `next` waits before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// A watch on an [`EtcdStore`].
pub(super) struct EtcdWatch {
    runtime: tokio::runtime::Runtime,
    targets: Vec<Target>,
    watchers: Vec<Watcher>,
    /// The stream and the member it is on; `None` after a failure.
    stream: Option<(usize, WatchStream)>,
    /// The member the next connection attempt starts with.
    next_member: usize,
    /// No connection attempt before this instant (after every member failed).
    retry_at: Option<Instant>,
    /// Set once a watcher was compacted: the watch is finished.
    compacted: Option<(i64, i64)>,
}

struct Watcher {
    prefix: String,
    /// The first revision not delivered yet.
    next: i64,
}

impl EtcdStore {
    pub(super) fn open_watch(&self, prefixes: &[String], from_revision: i64) -> Result<EtcdWatch, Error> {
        let prefixes = watch::normalize(prefixes, from_revision)?;
        not_in_runtime()?;
        let runtime = super::small_runtime("the etcd watch")?;
        let targets = self
            .targets
            .iter()
            .map(|t| Target {
                url: t.url.clone(),
                endpoint: t
                    .endpoint
                    .clone()
                    .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
                    .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
                    .keep_alive_while_idle(true),
            })
            .collect();
        let watchers = prefixes.into_iter().map(|prefix| Watcher { prefix, next: from_revision }).collect();
        let next_member = self.state().next;
        let mut watch =
            EtcdWatch { runtime, targets, watchers, stream: None, next_member, retry_at: None, compacted: None };
        watch.connect()?;
        Ok(watch)
    }
}

fn not_in_runtime() -> Result<(), Error> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::EtcdConfig {
            reason: "an etcd watch is synchronous: use it from a blocking thread, not from \
                     inside an async runtime"
                .into(),
        });
    }
    Ok(())
}

impl EtcdWatch {
    /// Open a watch stream on the first member that answers, starting with `next_member`,
    /// and create every watcher from its own next revision.
    fn connect(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + OPERATION_BUDGET;
        let n = self.targets.len();
        let mut failures = Vec::new();
        for index in (0..n).map(|k| (self.next_member + k) % n) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let target = &self.targets[index];
            let limit = remaining.min(CONNECT_TIMEOUT * 2);
            // The timer needs the runtime's context: made inside `block_on`.
            let attempt =
                self.runtime.block_on(async { tokio::time::timeout(limit, open_stream(target, &self.watchers)).await });
            match attempt {
                Ok(Ok(stream)) => {
                    self.stream = Some((index, stream));
                    self.next_member = index;
                    self.retry_at = None;
                    return Ok(());
                }
                Ok(Err(e)) => failures.push(etcd_error(&target.url, e)),
                Err(_elapsed) => failures.push(Error::Unavailable {
                    reason: format!("etcd {}: no watch stream within {limit:?}", target.url),
                    source: None,
                }),
            }
        }
        self.retry_at = Some(Instant::now() + RETRY_PAUSE);
        if let Some(pos) = failures.iter().position(|e| !e.is_unavailable()) {
            return Err(failures.swap_remove(pos));
        }
        let reasons: Vec<String> = failures.iter().map(ToString::to_string).collect();
        Err(Error::Unavailable {
            reason: format!("no etcd member can be watched: {}", reasons.join("; ")),
            source: failures.pop().map(|e| Box::new(e) as _),
        })
    }

    /// After the stream broke: the next connection starts with the next member.
    fn drop_stream(&mut self) {
        if let Some((index, _)) = self.stream.take() {
            self.next_member = (index + 1) % self.targets.len();
        }
    }

    /// The events of one response, without those delivered already; moves the watcher on.
    fn accept(&mut self, resp: &WatchResponse) -> Result<Vec<Event>, Error> {
        let index = usize::try_from(resp.watch_id() - 1)
            .ok()
            .filter(|&i| i < self.watchers.len())
            .ok_or_else(|| Error::Protocol(format!("etcd answered for unknown watcher {}", resp.watch_id())))?;
        let watcher = &mut self.watchers[index];
        if resp.compact_revision() != 0 {
            let compacted = (watcher.next, resp.compact_revision());
            self.compacted = Some(compacted);
            return Err(compacted_error(compacted));
        }
        if resp.canceled() {
            // Not for compaction: e.g. the member lost its leader, or a permission changed.
            return Err(Error::Unavailable {
                reason: format!("etcd canceled the watch of {}: {}", watcher.prefix, resp.cancel_reason()),
                source: None,
            });
        }
        let mut events = Vec::with_capacity(resp.events().len());
        let mut last = None;
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let mod_revision = kv.mod_revision();
            if mod_revision < watcher.next {
                continue; // delivered before the reconnect
            }
            let key = String::from_utf8(kv.key().to_vec()).map_err(|e| {
                Error::Protocol(format!("etcd key {:?} is not UTF-8", String::from_utf8_lossy(e.as_bytes())))
            })?;
            let kind = match event.event_type() {
                EventType::Put => EventKind::Put { value: kv.value().to_vec() },
                EventType::Delete => EventKind::Delete,
            };
            last = Some(mod_revision);
            events.push(Event { key, kind, mod_revision });
        }
        // etcd never splits one revision between responses (no `fragment`): the watcher has
        // seen all of the last revision.
        if let Some(last) = last {
            watcher.next = last + 1;
        }
        Ok(events)
    }
}

fn compacted_error((requested, compact_revision): (i64, i64)) -> Error {
    Error::Compacted { requested, compact_revision }
}

/// Connect to one member and create a watcher per prefix (watch id = its index + 1).
async fn open_stream(target: &Target, watchers: &[Watcher]) -> Result<WatchStream, etcd_client::Error> {
    let channel = target.endpoint.connect().await?;
    let client = etcd_client::Client::from_channel(etcd_client::Channel::Tonic(channel), None).await?;
    let mut client: WatchClient = client.watch_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
    let options = |i: usize, w: &Watcher| {
        WatchOptions::new().with_prefix().with_start_revision(w.next).with_watch_id(i as i64 + 1)
    };
    let (first, rest) = watchers.split_first().expect("a watch has at least one prefix");
    let mut stream = client.watch(first.prefix.as_str(), Some(options(0, first))).await?;
    for (i, w) in rest.iter().enumerate() {
        stream.watch(w.prefix.as_str(), Some(options(i + 1, w))).await?;
    }
    Ok(stream)
}

impl Watch for EtcdWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<Vec<Event>>, Error> {
        not_in_runtime()?;
        if let Some(compacted) = self.compacted {
            return Err(compacted_error(compacted));
        }
        let deadline = Instant::now() + timeout;
        loop {
            if self.stream.is_none() {
                if let Some(at) = self.retry_at {
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at.min(deadline) - now);
                        if at > deadline {
                            return Ok(None);
                        }
                    }
                }
                self.connect()?;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some((index, stream)) = self.stream.as_mut() else { continue };
            let index = *index;
            let answer = self.runtime.block_on(async { tokio::time::timeout(remaining, stream.message()).await });
            match answer {
                Err(_elapsed) => return Ok(None),
                Ok(Ok(Some(resp))) => match self.accept(&resp) {
                    Ok(events) if events.is_empty() => {}
                    Ok(events) => return Ok(Some(events)),
                    Err(e) => {
                        if !matches!(e, Error::Compacted { .. }) {
                            self.drop_stream();
                        }
                        return Err(e);
                    }
                },
                // The member closed the stream or the connection broke: go on elsewhere.
                Ok(Ok(None)) => self.drop_stream(),
                Ok(Err(e)) => {
                    let err = etcd_error(&self.targets[index].url, e);
                    self.drop_stream();
                    if !err.is_unavailable() {
                        return Err(err);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}
