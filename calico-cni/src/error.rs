use cni::{code, CniCode, Failure};
use dataplane::UndoFailure;

/// Errors of calico-cni. [`CniCode`] below is the one place they map to CNI codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Protocol errors, including a delegated IPAM plugin's own error (its code is kept).
    #[error(transparent)]
    Cni(#[from] cni::Error),

    /// The netconf, or the node name it leads to.
    #[error(transparent)]
    Netconf(#[from] calico_netconf::Error),

    /// IPAM run in this process (`ipam.type` calico-ipam).
    #[error(transparent)]
    Ipam(#[from] ipam::Error),

    #[error(transparent)]
    Store(#[from] datastore::Error),

    /// CNI_NETNS cannot be used (no such path, not a netns, the plugin's own): the runtime's
    /// input, so code 4 whatever the dataplane's reason.
    #[error("invalid CNI_NETNS {path}")]
    Netns {
        path: String,
        #[source]
        source: dataplane::Error,
    },

    /// A dataplane step failed; the code is the dataplane's own ([`CniCode`] in `dataplane`).
    #[error("{step} failed")]
    Dataplane {
        step: &'static str,
        #[source]
        source: dataplane::Error,
    },

    /// A delegated IPAM plugin succeeded but gave no address to configure.
    #[error("the IPAM plugin {plugin} returned no address")]
    NoAddress { plugin: String },

    /// A firewall step failed (crates/firewall: the `inet calico` nftables table).
    #[error("{step} failed")]
    Firewall {
        step: &'static str,
        #[source]
        source: firewall::Error,
    },

    /// Another attachment holds the host port (and protocol) this one asks for.
    #[error("host port {mapping} is already mapped, for {holder}")]
    PortConflict { mapping: String, holder: String },

    #[error("invalid MAC address {value:?} in {field}")]
    InvalidMac { field: &'static str, value: String },

    #[error("corrupt workload endpoint record {key}")]
    CorruptEndpoint {
        key: String,
        #[source]
        source: serde_json::Error,
    },

    /// A profile record that cannot be read.
    #[error(transparent)]
    CorruptProfile(#[from] model::Error),

    /// `calicoctl container <C> ip add|remove` refused before changing anything.
    #[error("{0}")]
    Refused(String),

    /// The endpoint record changed while `ip add|remove` worked; what it did was undone.
    #[error("the endpoint {key} changed meanwhile; try again")]
    EndpointChanged { key: String },

    #[error("CHECK: {0}")]
    Check(String),

    /// STATUS: the plugin cannot serve ADD (its netconf or its store is unusable).
    #[error("calico-cni is not available")]
    NotAvailable(#[source] Box<Error>),

    /// A step of ADD failed, and undoing an earlier step failed too. It reads and maps like
    /// the step's error; the reply's `details` also names what could not be undone.
    #[error(transparent)]
    RollbackIncomplete(Box<RollbackIncomplete>),
}

/// See [`Error::RollbackIncomplete`].
#[derive(Debug)]
pub struct RollbackIncomplete {
    /// The step that failed.
    pub error: Error,
    /// The undos that failed, in the order they ran.
    pub undos: Vec<UndoFailure>,
}

impl std::fmt::Display for RollbackIncomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for RollbackIncomplete {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

impl Error {
    /// `error` after its rollback: unchanged when every undo succeeded.
    pub fn rolled_back(error: Error, undos: Vec<UndoFailure>) -> Error {
        if undos.is_empty() {
            error
        } else {
            Error::RollbackIncomplete(Box::new(RollbackIncomplete { error, undos }))
        }
    }
}

/// Our own codes (100+), documented in the README: the dataplane's (120-122) and this one.
pub use dataplane::{CODE_CHECK_FAILED, CODE_DATAPLANE, CODE_ROUTE_CONFLICT};
/// The IPAM plugin returned no address.
pub const CODE_NO_ADDRESS: u32 = 123;
/// A port mapping asks for a host port another attachment holds.
pub const CODE_PORT_CONFLICT: u32 = 124;

impl CniCode for Error {
    fn cni_code(&self) -> u32 {
        match self {
            Error::Cni(e) => e.cni_code(),
            Error::Netconf(e) => e.cni_code(),
            Error::Ipam(e) => e.cni_code(),
            Error::Store(e) => e.cni_code(),
            Error::CorruptEndpoint { .. } | Error::CorruptProfile(_) => code::IO,
            Error::Netns { .. } => code::INVALID_ENV,
            Error::Dataplane { source, .. } => source.cni_code(),
            Error::Check(_) => CODE_CHECK_FAILED,
            Error::NoAddress { .. } => CODE_NO_ADDRESS,
            Error::Firewall { .. } => CODE_DATAPLANE,
            Error::PortConflict { .. } => CODE_PORT_CONFLICT,
            Error::InvalidMac { .. } | Error::Refused(_) => code::INVALID_CONFIG,
            Error::EndpointChanged { .. } => code::TRY_AGAIN_LATER,
            Error::NotAvailable(_) => code::NOT_AVAILABLE,
            Error::RollbackIncomplete(r) => r.error.cni_code(),
        }
    }

    /// An incomplete rollback adds `rollback incomplete: <undo>: <why>; ...` to the details.
    fn failure(&self) -> Failure {
        let mut failure = Failure::from_error(self.cni_code(), self);
        if let Error::RollbackIncomplete(r) = self {
            let undos: Vec<String> = r.undos.iter().map(ToString::to_string).collect();
            let note = format!("rollback incomplete: {}", undos.join("; "));
            failure.details = if failure.details.is_empty() { note } else { format!("{}; {note}", failure.details) };
        }
        failure
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use cni::Failure;

    use super::*;

    fn failure(err: &Error) -> Failure {
        Failure::from_error(err.cni_code(), err)
    }

    #[test]
    fn netns_and_dataplane_causes_are_printed_once() {
        let source = dataplane::Error::NetNsOpen { path: "/run/netns/x".into(), source: io::Error::other("gone") };
        let f = failure(&Error::Netns { path: "/run/netns/x".into(), source });
        assert_eq!(f.code, code::INVALID_ENV);
        assert_eq!(f.msg, "invalid CNI_NETNS /run/netns/x");
        assert_eq!(f.details, "cannot open network namespace /run/netns/x: gone");

        let source = dataplane::Error::LinkNotFound { name: "eth0".into() };
        let f = failure(&Error::Dataplane { step: "configuring the container interface", source });
        assert_eq!(f.code, CODE_DATAPLANE);
        assert_eq!(f.msg, "configuring the container interface failed");
        assert_eq!(f.details, "link eth0 not found");
    }

    #[test]
    fn codes() {
        let dst = "10.0.0.1/32".parse().unwrap();
        let source = dataplane::Error::RouteConflict { dst, wanted: "cali1".into(), existing: "eth0".into() };
        assert_eq!(Error::Dataplane { step: "configuring the host side", source }.cni_code(), CODE_ROUTE_CONFLICT);
        let source = dataplane::Error::Check("route missing".into());
        assert_eq!(Error::Dataplane { step: "checking the dataplane", source }.cni_code(), CODE_CHECK_FAILED);
        assert_eq!(Error::Check("no record".into()).cni_code(), CODE_CHECK_FAILED);
        let err = Error::NoAddress { plugin: "host-local".into() };
        assert_eq!(
            (err.cni_code(), err.to_string().as_str()),
            (CODE_NO_ADDRESS, "the IPAM plugin host-local returned no address")
        );
        let down = datastore::Error::Unavailable { reason: "etcd down".into(), source: None };
        assert_eq!(Error::Store(down).cni_code(), code::TRY_AGAIN_LATER);
        let ip = "10.0.0.1".parse().unwrap();
        assert_eq!(Error::Ipam(ipam::Error::AddressNotAllocated { ip }).cni_code(), ipam::CODE_NOT_ALLOCATED);
    }
}
