//! Health and metrics: `/liveness`, `/readiness` and `/metrics` (OpenMetrics text, which
//! Prometheus reads), served over HTTP/1 by hyper on a thread of its own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::{Error, Result};

/// The agent is live while its loop has turned within this long.
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(60);

/// The agent's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Full syncs done (start, compaction, every resync interval).
    pub full_syncs: Counter,
    /// Routes added, replaced or deleted.
    pub route_writes: Counter,
    /// Routes of ours programmed now.
    pub routes: Gauge,
    /// How long the last full sync took.
    pub last_sync_seconds: Gauge<f64, AtomicU64>,
    /// Times the watch was opened again (after an error, a compaction or a resync).
    pub watch_reconnects: Counter,
    /// Datastore requests that failed.
    pub datastore_errors: Counter,
    /// Pools whose routes cannot be programmed here.
    pub pool_problems: Gauge,
    /// Times BIRD was started (0 with `--bgp=none`).
    pub bird_starts: Gauge,
    /// Times a running BIRD was told to load a new config (a new block never is).
    pub bird_reconfigurations: Gauge,
}

#[derive(Debug)]
struct Status {
    ready: bool,
    reason: String,
    /// Problems of other parts (BGP), each keeping the node not ready until cleared.
    problems: std::collections::BTreeMap<&'static str, String>,
    heartbeat: Instant,
}

/// What the endpoints report; the agent updates it.
#[derive(Debug)]
pub struct Health {
    /// The metrics, updated by the agent.
    pub metrics: Metrics,
    registry: Registry,
    status: Mutex<Status>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// Not ready ("starting"), live.
    pub fn new() -> Health {
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("calico_node");
        registry.register("full_syncs", "Full syncs of datastore and kernel", metrics.full_syncs.clone());
        registry.register("route_writes", "Routes added, replaced or deleted", metrics.route_writes.clone());
        registry.register("routes", "Routes of calico-node (proto 80) programmed", metrics.routes.clone());
        registry.register("last_sync_seconds", "Duration of the last full sync", metrics.last_sync_seconds.clone());
        registry.register("watch_reconnects", "Datastore watches opened again", metrics.watch_reconnects.clone());
        registry.register("datastore_errors", "Datastore requests that failed", metrics.datastore_errors.clone());
        registry.register("pool_problems", "Pools whose routes cannot be programmed", metrics.pool_problems.clone());
        registry.register("bird_starts", "Times BIRD was started", metrics.bird_starts.clone());
        registry.register(
            "bird_reconfigurations",
            "Times a running BIRD loaded a new config",
            metrics.bird_reconfigurations.clone(),
        );
        let status = Status {
            ready: false,
            reason: "starting: no full sync yet".into(),
            problems: Default::default(),
            heartbeat: Instant::now(),
        };
        Health { metrics, registry, status: Mutex::new(status) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The loop is turning.
    pub fn beat(&self) {
        self.lock().heartbeat = Instant::now();
    }

    /// Ready (after a full sync, with the datastore reachable).
    pub fn set_ready(&self) {
        let mut s = self.lock();
        s.ready = true;
        s.reason.clear();
    }

    /// Not ready, and why.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        let mut s = self.lock();
        s.ready = false;
        s.reason = reason.into();
    }

    /// Note (`Some`) or clear (`None`) a problem of `part` (e.g. `"bgp"`): not ready while
    /// any is noted.
    pub fn set_problem(&self, part: &'static str, problem: Option<String>) {
        let mut s = self.lock();
        match problem {
            Some(p) => s.problems.insert(part, p),
            None => s.problems.remove(part),
        };
    }

    /// `(ready, reason)`.
    pub fn readiness(&self) -> (bool, String) {
        let s = self.lock();
        if s.ready && !s.problems.is_empty() {
            return (false, s.problems.values().cloned().collect::<Vec<_>>().join("; "));
        }
        (s.ready, s.reason.clone())
    }

    fn live(&self) -> bool {
        self.lock().heartbeat.elapsed() < LIVENESS_WINDOW
    }

    /// The metrics in OpenMetrics text.
    pub fn encode_metrics(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The answer to `GET path`.
    pub fn respond(&self, path: &str) -> (StatusCode, &'static str, String) {
        const TEXT: &str = "text/plain; charset=utf-8";
        match path {
            "/liveness" if self.live() => (StatusCode::OK, TEXT, "live\n".into()),
            "/liveness" => (StatusCode::SERVICE_UNAVAILABLE, TEXT, "the agent's loop is stuck\n".into()),
            "/readiness" => match self.readiness() {
                (true, _) => (StatusCode::OK, TEXT, "ready\n".into()),
                (false, reason) => (StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("not ready: {reason}\n")),
            },
            "/metrics" => {
                (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", self.encode_metrics())
            }
            _ => (StatusCode::NOT_FOUND, TEXT, "not found: try /liveness, /readiness or /metrics\n".into()),
        }
    }
}

/// Listen on `addr` (the error is returned now) and serve `health` on a thread of its own
/// for the life of the process. Returns the address listened on (port 0 picks one).
pub fn serve(health: Arc<Health>, addr: SocketAddr) -> Result<SocketAddr> {
    let listen_error = |source| Error::Listen { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(listen_error)?;
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || runtime.block_on(accept(listener, health)))
        .map_err(listen_error)?;
    Ok(local)
}

async fn accept(listener: std::net::TcpListener, health: Arc<Health>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("health endpoint: {e}");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("health endpoint: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let health = health.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let (status, content_type, body) = health.respond(request.uri().path());
                let response = Response::builder()
                    .status(status)
                    .header("content-type", content_type)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_default();
                async move { Ok::<_, Infallible>(response) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                tracing::debug!("health endpoint: connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        write!(conn, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn endpoints_answer_over_http() {
        let health = Arc::new(Health::new());
        let addr = serve(health.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(get(addr, "/liveness").starts_with("HTTP/1.1 200"));
        let answer = get(addr, "/readiness");
        assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("no full sync yet"), "{answer}");
        health.set_ready();
        health.metrics.full_syncs.inc();
        health.metrics.routes.set(3);
        assert!(get(addr, "/readiness").starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "/metrics");
        assert!(metrics.contains("calico_node_full_syncs_total 1"), "{metrics}");
        assert!(metrics.contains("calico_node_routes 3"), "{metrics}");
        assert!(metrics.contains("calico_node_last_sync_seconds"), "{metrics}");
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
        health.set_not_ready("datastore unreachable");
        assert!(get(addr, "/readiness").contains("not ready: datastore unreachable"));
    }

    #[test]
    fn a_problem_of_a_part_keeps_the_node_not_ready_until_cleared() {
        let health = Health::new();
        health.set_ready();
        health.set_problem("bgp", Some("BGP: BIRD rejected the config".into()));
        assert_eq!(health.readiness(), (false, "BGP: BIRD rejected the config".into()));
        health.set_ready();
        assert!(!health.readiness().0, "a full sync does not clear it");
        health.set_problem("bgp", None);
        assert_eq!(health.readiness(), (true, String::new()));
    }

    #[test]
    fn a_busy_address_is_an_error_at_start() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = serve(Arc::new(Health::new()), taken.local_addr().unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("cannot serve health and metrics on 127.0.0.1:"), "{err}");
    }
}
