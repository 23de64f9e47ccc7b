use std::path::PathBuf;

/// Errors of the datastore layer. `is_unavailable` tells callers which ones mean "try again
/// later" (CNI code 11) rather than a bug or bad input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A compare of a single-key helper failed: someone else wrote the key first.
    #[error("conflicting write to {key}")]
    Conflict { key: String },

    /// The embedded store could not be opened or used.
    #[error("embedded datastore {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// A filesystem error around the embedded store (creating its directory, permissions).
    #[error("embedded datastore {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The embedded store does not exist, and the caller asked not to create it.
    #[error("embedded datastore {path} does not exist")]
    Missing { path: PathBuf },

    /// The directory that should hold the embedded store could not be created.
    #[error("embedded datastore {path}: cannot create directory {dir}: {source}")]
    CreateDir {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Etcd endpoints were configured, but this build has no etcd backend.
    #[error(
        "etcd endpoints {endpoints:?} are configured, but etcd support is not built in \
         (cargo feature `etcd` of the datastore crate)"
    )]
    EtcdNotBuiltIn { endpoints: Vec<String> },

    /// An etcd request or connection failed. `detail` spells out the chain of causes (the
    /// transport's own messages are terse); `unavailable` is the backend's verdict, made where
    /// the context is known (a TLS rejection is not "try again later"); `source` keeps the
    /// original error.
    #[cfg(feature = "etcd")]
    #[error("etcd {endpoints}: {detail}")]
    Etcd {
        endpoints: String,
        detail: String,
        unavailable: bool,
        #[source]
        source: etcd_client::Error,
    },

    /// The etcd settings cannot be used: a malformed endpoint URL, TLS files missing or given
    /// only in part, or a call from inside an async runtime.
    #[error("etcd configuration: {reason}")]
    EtcdConfig { reason: String },

    /// A TLS file for etcd (key, certificate or CA bundle) could not be read.
    #[error("etcd TLS file {path}: {source}")]
    EtcdFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The store could not be reached in time (etcd down, embedded store locked too long).
    #[error("datastore unavailable: {reason}")]
    Unavailable {
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// A watch needs history older than the store keeps: `compact_revision` is the oldest
    /// revision a watch can start from now. List again, then watch from the listing's revision.
    #[error("revision {requested} is compacted: the store keeps changes from revision {compact_revision} on")]
    Compacted { requested: i64, compact_revision: i64 },

    /// This backend cannot watch (or read with a revision).
    #[error("this datastore backend cannot watch for changes")]
    WatchUnsupported,

    /// The store answered with something this version cannot use.
    #[error("datastore: {0}")]
    Protocol(String),
}

impl Error {
    /// True when the caller should report "try again later" (CNI code 11).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unavailable { .. } => true,
            Error::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            #[cfg(feature = "etcd")]
            Error::Etcd { unavailable, .. } => *unavailable,
            _ => false,
        }
    }
}
