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

    #[error("CNI_NETNS {path}: {source}")]
    Netns {
        path: String,
        #[source]
        source: dataplane::Error,
    },

    #[error("{step}: {source}")]
    Dataplane {
        step: &'static str,
        #[source]
        source: dataplane::Error,
    },

    #[error("the IPAM plugin {plugin} returned no address")]
    NoAddress { plugin: String },

    #[error("invalid MAC address {value:?} in {field}")]
    InvalidMac { field: &'static str, value: String },

    #[error("corrupt workload endpoint record {key}")]
    CorruptEndpoint {
        key: String,
        #[source]
        source: serde_json::Error,
    },

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

/// Our own codes (100+), documented in the README.
pub const CODE_DATAPLANE: u32 = 120;
pub const CODE_ROUTE_CONFLICT: u32 = 121;
pub const CODE_CHECK_FAILED: u32 = 122;

impl CniCode for Error {
    fn cni_code(&self) -> u32 {
        match self {
            Error::Cni(e) => e.cni_code(),
            Error::Netconf(e) => e.cni_code(),
            Error::Ipam(e) => e.cni_code(),
            Error::Store(e) if e.is_unavailable() => code::TRY_AGAIN_LATER,
            Error::Store(_) | Error::CorruptEndpoint { .. } => code::IO,
            Error::Netns { .. } => code::INVALID_ENV,
            Error::Dataplane { source: dataplane::Error::RouteConflict { .. }, .. } => CODE_ROUTE_CONFLICT,
            Error::Dataplane { source: dataplane::Error::Check(_), .. } | Error::Check(_) => CODE_CHECK_FAILED,
            Error::Dataplane { .. } => CODE_DATAPLANE,
            Error::NoAddress { .. } => code::IO,
            Error::InvalidMac { .. } => code::INVALID_CONFIG,
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
