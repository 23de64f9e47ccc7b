use std::path::PathBuf;

use cni::{code, CniCode};

/// Errors of the datastore layer. `is_unavailable` tells callers which ones mean "try again
/// later" rather than a bug or bad input; [`CniCode`] below is the one place where they map to
/// CNI error codes, for every plugin that uses the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A compare of a single-key helper failed: someone else wrote the key first.
    #[error("conflicting write to {key}")]
    Conflict { key: String },

    /// The embedded store could not be opened or used. SQLite's message is printed here and
    /// `cause` is not reported as a source: its own source only repeats that message
    /// ("database or disk is full: Error code 13: database or disk is full").
    #[error("embedded datastore {path}: {cause}")]
    Sqlite { path: PathBuf, cause: rusqlite::Error },

    /// A filesystem error around the embedded store (creating its directory, permissions).
    #[error("embedded datastore {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The embedded store does not exist, and the caller asked not to create it.
    #[error("embedded datastore {path} does not exist")]
    Missing { path: PathBuf },

    /// The directory that should hold the embedded store could not be created.
    #[error("embedded datastore {path}: cannot create directory {dir}")]
    CreateDir {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Etcd endpoints were configured, but this build has no etcd backend.
    #[error(
        "etcd endpoints {} are configured, but etcd support is not built in \
         (cargo feature `etcd` of the datastore crate)",
        redacted(endpoints)
    )]
    EtcdNotBuiltIn { endpoints: Vec<String> },

    /// An etcd request or connection failed. `detail` spells out the chain of causes once
    /// (the transport's own layers repeat "transport error"), so the original error is kept
    /// in `cause` and not reported as a source; `unavailable` is the backend's verdict, made
    /// where the context is known (a TLS rejection is not "try again later"). `endpoints` is
    /// the member's URL without its credentials.
    #[cfg(feature = "etcd")]
    #[error("etcd {endpoints}: {detail}")]
    Etcd { endpoints: String, detail: String, unavailable: bool, cause: etcd_client::Error },

    /// The etcd settings cannot be used: a malformed endpoint URL, TLS files missing or given
    /// only in part, or a call from inside an async runtime.
    #[error("etcd configuration: {reason}")]
    EtcdConfig { reason: String },

    /// The transport cannot use an etcd endpoint: `problem` says what (its URL, or the TLS
    /// settings for it) and `source` why. `url` has no credentials.
    #[cfg(feature = "etcd")]
    #[error("etcd configuration: endpoint {url:?} {problem}")]
    EtcdEndpoint {
        url: String,
        problem: &'static str,
        #[source]
        source: tonic::transport::Error,
    },

    /// A TLS file for etcd (key, certificate or CA bundle) could not be read.
    #[error("etcd TLS file {path}")]
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

/// `http://user:secret@host:2379` -> `http://***@host:2379`: an endpoint URL fit for
/// messages and logs. Only the authority's userinfo is hidden; everything else is kept.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

fn redacted(urls: &[String]) -> String {
    urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>().join(",")
}

impl Error {
    /// True when the caller should report "try again later" (CNI code 11).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unavailable { .. } => true,
            Error::Sqlite { cause, .. } => matches!(
                cause.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            #[cfg(feature = "etcd")]
            Error::Etcd { unavailable, .. } => *unavailable,
            _ => false,
        }
    }
}

/// The CNI code of a datastore error, whichever plugin meets it.
impl CniCode for Error {
    fn cni_code(&self) -> u32 {
        match self {
            // A concurrent writer won: a fresh read and another try can succeed.
            Error::Conflict { .. } => code::TRY_AGAIN_LATER,
            e if e.is_unavailable() => code::TRY_AGAIN_LATER,
            // The store settings in the netconf (or the environment) cannot work.
            Error::EtcdNotBuiltIn { .. } | Error::EtcdConfig { .. } => code::INVALID_CONFIG,
            #[cfg(feature = "etcd")]
            Error::EtcdEndpoint { .. } => code::INVALID_CONFIG,
            _ => code::IO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_only() {
        assert_eq!(redact_url("http://user:secret@10.0.0.1:2379"), "http://***@10.0.0.1:2379");
        assert_eq!(redact_url("https://u:p@w@h:1/x@y"), "https://***@h:1/x@y");
        assert_eq!(redact_url("user:secret@h:2379"), "***@h:2379");
        assert_eq!(redact_url("http://h:2379/a@b"), "http://h:2379/a@b");
        assert_eq!(redact_url("http://[::1]:2379"), "http://[::1]:2379");
    }

    #[test]
    fn each_cause_is_printed_once() {
        let err = Error::Io { path: "/s.db".into(), source: std::io::Error::other("boom") };
        assert_eq!(err.to_string(), "embedded datastore /s.db");
        assert_eq!(std::error::Error::source(&err).map(ToString::to_string).as_deref(), Some("boom"));
    }

    #[test]
    fn codes() {
        let unavailable = Error::Unavailable { reason: "etcd down".into(), source: None };
        assert_eq!(unavailable.cni_code(), code::TRY_AGAIN_LATER);
        assert_eq!(Error::Conflict { key: "/k".into() }.cni_code(), code::TRY_AGAIN_LATER);
        assert_eq!(Error::EtcdConfig { reason: "no endpoints".into() }.cni_code(), code::INVALID_CONFIG);
        assert_eq!(Error::EtcdNotBuiltIn { endpoints: vec!["h:2379".into()] }.cni_code(), code::INVALID_CONFIG);
        let io = Error::Io { path: "/s.db".into(), source: std::io::Error::other("boom") };
        assert_eq!(io.cni_code(), code::IO);
        assert_eq!(Error::Missing { path: "/s.db".into() }.cni_code(), code::IO);
        assert_eq!(Error::Protocol("odd answer".into()).cni_code(), code::IO);
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        assert_eq!(Error::Sqlite { path: "/s.db".into(), cause: busy }.cni_code(), code::TRY_AGAIN_LATER);
        let full = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
        assert_eq!(Error::Sqlite { path: "/s.db".into(), cause: full }.cni_code(), code::IO);
    }
}
