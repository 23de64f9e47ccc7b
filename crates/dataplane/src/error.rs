//! The crate's single error type.
//!
//! Every variant names what was being done and keeps the underlying cause, and
//! [`Error::errno`] digs the kernel errno out of it, so callers can decide
//! what is idempotent (`EEXIST` on ADD, `ENOENT`/`ENODEV`/`ESRCH` on DEL).
//! [`CniCode`] maps it to CNI error codes, in this one place for every plugin.

use std::{io, path::PathBuf, time::Duration};

use cni::CniCode;
use nix::errno::Errno;

/// A dataplane step failed (CNI code, plugin-specific; listed in the README).
pub const CODE_DATAPLANE: u32 = 120;
/// A workload's host route already exists on another interface.
pub const CODE_ROUTE_CONFLICT: u32 = 121;
/// CHECK found the dataplane not as ADD left it.
pub const CODE_CHECK_FAILED: u32 = 122;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The namespace path could not be opened or inspected.
    #[error("cannot open network namespace {path}")]
    NetNsOpen {
        /// Path that was opened.
        path: PathBuf,
        /// Cause, with the errno.
        #[source]
        source: io::Error,
    },

    /// The path exists but is not a network namespace (e.g. a regular file).
    #[error("{path} is not a network namespace ({what})")]
    NotNetNs {
        /// Path that was opened.
        path: PathBuf,
        /// What it turned out to be.
        what: String,
    },

    /// The namespace is the plugin's own, not a container's.
    #[error("{path} is the plugin's own network namespace, not a container's")]
    OwnNetNs {
        /// Path that was opened.
        path: PathBuf,
    },

    /// `setns(2)` into the namespace failed.
    #[error("cannot enter network namespace {path}")]
    NetNsEnter {
        /// Path of the namespace.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Errno,
    },

    /// The helper thread that works inside a namespace could not be started.
    #[error("cannot start a helper thread for network namespace {path}")]
    ThreadSpawn {
        /// Path of the namespace.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// The helper thread panicked (a bug; reported instead of propagated).
    #[error("helper thread for network namespace {path} panicked")]
    ThreadPanicked {
        /// Path of the namespace.
        path: PathBuf,
    },

    /// The netlink socket or its runtime could not be created.
    #[error("cannot open a netlink socket")]
    Socket(#[source] io::Error),

    /// The kernel (or the netlink layer) rejected a request.
    #[error("netlink: {op}")]
    Netlink {
        /// What was being done, e.g. `create veth cali1234/eth0`.
        op: String,
        /// Cause; holds the kernel errno for NACKs.
        #[source]
        source: rtnetlink::Error,
    },

    /// A netlink request got no answer in time.
    #[error("netlink: {op}: no answer within {timeout:?}")]
    Timeout {
        /// What was being done.
        op: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },

    /// Reading or writing a sysctl failed.
    #[error("sysctl {path}")]
    Sysctl {
        /// Path relative to `/proc/sys`.
        path: String,
        /// Cause, with the errno.
        #[source]
        source: io::Error,
    },

    /// A name or path given by the caller is unusable.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What kind of value (`interface name`, `sysctl path`…).
        what: &'static str,
        /// The value.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// A link that must exist does not.
    #[error("link {name} not found")]
    LinkNotFound {
        /// Interface name.
        name: String,
    },

    /// The /32 or /128 route for a workload already points at another interface.
    #[error("route {dst} already exists on interface {existing}, cannot add it on {wanted}")]
    RouteConflict {
        /// The destination prefix.
        dst: ipnetwork::IpNetwork,
        /// The interface the new route was meant for.
        wanted: String,
        /// The interface that already holds the route.
        existing: String,
    },

    /// CHECK found the dataplane not as ADD left it.
    #[error("check failed: {0}")]
    Check(String),
}

impl Error {
    /// The kernel errno behind this error, if any.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::NetNsOpen { source, .. }
            | Error::ThreadSpawn { source, .. }
            | Error::Socket(source)
            | Error::Sysctl { source, .. } => source.raw_os_error().map(Errno::from_raw),
            Error::NetNsEnter { source, .. } => Some(*source),
            Error::Netlink { source: rtnetlink::Error::NetlinkError(msg), .. } => {
                msg.code.map(|code| Errno::from_raw(-code.get()))
            }
            _ => None,
        }
    }

    /// True when the kernel answered `EEXIST`.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(Errno::EEXIST)
    }

    /// True when the kernel said the object is gone (`ENOENT`, `ENODEV`, `ESRCH`).
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno(), Some(Errno::ENOENT | Errno::ENODEV | Errno::ESRCH))
    }

    pub(crate) fn netlink(op: impl Into<String>, source: rtnetlink::Error) -> Self {
        Error::Netlink { op: op.into(), source }
    }

    pub(crate) fn check(msg: impl Into<String>) -> Self {
        Error::Check(msg.into())
    }
}

/// The CNI code of a dataplane error. A caller that knows better (an unusable `CNI_NETNS` is
/// the runtime's input, code 4) says so in its own error variant, not by matching on these.
impl CniCode for Error {
    fn cni_code(&self) -> u32 {
        match self {
            Error::RouteConflict { .. } => CODE_ROUTE_CONFLICT,
            Error::Check(_) => CODE_CHECK_FAILED,
            _ => CODE_DATAPLANE,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroI32;

    use rtnetlink::packet_core::ErrorMessage;

    use super::*;

    fn nack(errno: i32) -> Error {
        let mut msg = ErrorMessage::default();
        msg.code = NonZeroI32::new(-errno);
        Error::netlink("test", rtnetlink::Error::NetlinkError(msg))
    }

    #[test]
    fn netlink_nack_keeps_errno() {
        let err = nack(libc::EEXIST);
        assert_eq!(err.errno(), Some(Errno::EEXIST));
        assert!(err.is_exists());
        assert!(nack(libc::ENODEV).is_not_found());
        assert!(!nack(libc::EPERM).is_not_found());
    }

    #[test]
    fn io_errors_keep_errno() {
        let err = Error::Sysctl { path: "net/x".into(), source: io::Error::from_raw_os_error(libc::ENOENT) };
        assert!(err.is_not_found());
        assert_eq!(err.to_string(), "sysctl net/x");
    }

    #[test]
    fn codes() {
        let dst = "10.0.0.1/32".parse().unwrap();
        let conflict = Error::RouteConflict { dst, wanted: "cali1".into(), existing: "eth0".into() };
        assert_eq!(conflict.cni_code(), CODE_ROUTE_CONFLICT);
        assert_eq!(Error::check("no route").cni_code(), CODE_CHECK_FAILED);
        assert_eq!(nack(libc::EEXIST).cni_code(), CODE_DATAPLANE);
        assert_eq!(Error::LinkNotFound { name: "eth0".into() }.cni_code(), CODE_DATAPLANE);
    }
}
