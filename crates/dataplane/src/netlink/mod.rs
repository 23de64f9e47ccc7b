//! A small synchronous facade over `rtnetlink`.
//!
//! Each [`Netlink`] owns a tokio current-thread runtime and one rtnetlink
//! connection, and `block_on`s every request with a timeout, so callers stay
//! plain synchronous code and no request can hang forever.
//!
//! A netlink socket is bound to the network namespace of the thread that
//! created it, for its whole life. [`Netlink::in_netns`] creates the socket
//! (and runtime) on a short-lived helper thread inside the target namespace
//! and hands it back: the caller then drives that namespace from its own
//! thread, which never switches namespace itself.
//!
//! The methods are split by object: links in `link.rs`, addresses and
//! routes in `route.rs`, neighbours in `neighbour.rs`; `batch.rs` sends
//! several changes in one round trip; `owned.rs` lists, replaces and deletes
//! the routes a long-lived agent owns (by protocol number); `vxlan.rs` VXLAN
//! devices and their forwarding database.

mod batch;
mod detached;
mod link;
mod neighbour;
mod owned;
mod route;
mod vxlan;

use std::{
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

pub use batch::Change;
pub use link::{Link, VethEnd};
pub use neighbour::{NeighbourInfo, NeighbourSpec};
pub use owned::{RouteTarget, TaggedRoute};
pub use route::{IpFamily, RouteInfo, RouteSpec};
pub use vxlan::{FdbEntry, VxlanLink, VxlanSpec};

use crate::{
    error::{Error, Result},
    netns::NetNs,
};

/// Default limit for one netlink request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A synchronous rtnetlink client bound to one network namespace.
///
/// Do not call it from inside an async runtime (it would nest runtimes): the
/// methods return [`Error::Invalid`] in that case. Use a blocking thread.
pub struct Netlink {
    runtime: tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
    timeout: Duration,
    requests: AtomicU64,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink")
            .field("timeout", &self.timeout)
            .field("requests", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl Netlink {
    /// A client for the calling thread's network namespace.
    pub fn current() -> Result<Netlink> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().map_err(Error::Socket)?;
        let (connection, handle, _unsolicited) = {
            let _context = runtime.enter();
            rtnetlink::new_connection().map_err(Error::Socket)?
        };
        runtime.spawn(connection);
        Ok(Netlink { runtime, handle, timeout: DEFAULT_TIMEOUT, requests: AtomicU64::new(0) })
    }

    /// A client for namespace `ns`, usable from the calling thread, which
    /// stays in its own namespace (see the module docs).
    pub fn in_netns(ns: &NetNs) -> Result<Netlink> {
        ns.run(Netlink::current)?
    }

    /// Replaces the per-request time limit (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Netlink {
        self.timeout = timeout;
        self
    }

    /// How many netlink requests this client has sent so far.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Runs one request to completion, with the time limit. `op` describes
    /// the request for error messages and is only evaluated on failure.
    pub(crate) fn exec<T>(
        &self,
        op: impl FnOnce() -> String,
        request: impl Future<Output = std::result::Result<T, rtnetlink::Error>>,
    ) -> Result<T> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Invalid {
                what: "calling context",
                value: op(),
                reason: "the synchronous netlink facade cannot run inside an async runtime",
            });
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let timeout = self.timeout;
        match self.runtime.block_on(async { tokio::time::timeout(timeout, request).await }) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(Error::netlink(op(), source)),
            Err(_elapsed) => Err(Error::Timeout { op: op(), timeout }),
        }
    }
}

/// Maps "the kernel says it is not there" to `Ok(None)`, keeping other errors.
pub(crate) fn absent_as_none<T>(result: Result<T>) -> Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err),
    }
}

/// Checks an interface name the way the kernel's `dev_valid_name` does, so a
/// name can also be used safely inside a `/proc/sys` path.
pub fn validate_ifname(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("reserved name")
    } else if name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0) {
        Some("contains '/', ':', whitespace or NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::Invalid { what: "interface name", value: name.to_string(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_validation() {
        for good in ["eth0", "cali0123456789a", "a.b", "vlan-1"] {
            assert!(validate_ifname(good).is_ok(), "{good}");
        }
        for bad in ["", "cali0123456789ab", ".", "..", "a/b", "a b", "a:b"] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
    }
}
