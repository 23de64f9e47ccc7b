//! Which store to open: the same selection rules for the plugins and calicoctl.

use std::path::{Path, PathBuf};

use crate::sqlite::EmbeddedStore;
use crate::{Datastore, Error};

/// Where the embedded store lives when no path is configured.
pub const DEFAULT_DATASTORE_PATH: &str = "/var/lib/calico/calico-store.db";

/// Which store to use; the same selection rules for the plugins and calicoctl.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// etcd client URLs; empty selects the embedded store.
    pub etcd_endpoints: Vec<String>,
    /// Client key for mutual TLS with etcd.
    pub etcd_key_file: Option<PathBuf>,
    /// Client certificate for mutual TLS with etcd.
    pub etcd_cert_file: Option<PathBuf>,
    /// CA bundle that signs the etcd servers' certificates.
    pub etcd_ca_cert_file: Option<PathBuf>,
    /// The embedded store's file; [`DEFAULT_DATASTORE_PATH`] when `None`.
    pub datastore_path: Option<PathBuf>,
}

impl Config {
    /// `"http://a:2379, http://b:2379"` -> `["http://a:2379", "http://b:2379"]`: split on
    /// commas, trim, skip empty entries.
    pub fn parse_endpoints(s: &str) -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The embedded store's file: `datastore_path`, or the default.
    pub fn embedded_path(&self) -> &Path {
        self.datastore_path
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DATASTORE_PATH))
    }
}

/// Open the configured store: the embedded store at `datastore_path` (default
/// [`DEFAULT_DATASTORE_PATH`]) when `etcd_endpoints` is empty, etcd otherwise.
pub fn open(cfg: &Config) -> Result<Box<dyn Datastore>, Error> {
    if cfg.etcd_endpoints.is_empty() {
        return Ok(Box::new(EmbeddedStore::open(cfg.embedded_path())?));
    }
    open_etcd(cfg)
}

/// The etcd backend, or an error saying it is not built in.
fn open_etcd(cfg: &Config) -> Result<Box<dyn Datastore>, Error> {
    #[cfg(feature = "etcd")]
    return Ok(Box::new(crate::etcd::EtcdStore::connect(cfg)?));
    #[cfg(not(feature = "etcd"))]
    Err(Error::EtcdNotBuiltIn {
        endpoints: cfg.etcd_endpoints.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_trimmed_and_empty_ones_skipped() {
        assert_eq!(
            Config::parse_endpoints(" http://a:2379,,http://b:2379 , "),
            ["http://a:2379", "http://b:2379"]
        );
        assert!(Config::parse_endpoints("").is_empty());
        assert!(Config::parse_endpoints(" , ").is_empty());
    }

    #[test]
    fn default_path_applies_when_none_is_configured() {
        assert_eq!(
            Config::default().embedded_path(),
            Path::new(DEFAULT_DATASTORE_PATH)
        );
    }

    #[test]
    fn empty_endpoints_open_the_embedded_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/store.db");
        let cfg = Config {
            datastore_path: Some(path.clone()),
            ..Config::default()
        };
        let store = open(&cfg).expect("open embedded store");
        assert_eq!(store.create("/k", b"v".to_vec()).expect("create"), 1);
        assert!(path.is_file());
    }

    #[cfg(not(feature = "etcd"))]
    #[test]
    fn etcd_endpoints_without_the_feature_give_a_clear_error() {
        let cfg = Config {
            etcd_endpoints: Config::parse_endpoints("http://127.0.0.1:2379"),
            ..Config::default()
        };
        let err = open(&cfg).err().expect("etcd is not built in");
        assert!(matches!(err, Error::EtcdNotBuiltIn { .. }));
        assert!(
            err.to_string().contains("etcd support is not built in"),
            "{err}"
        );
    }
}
