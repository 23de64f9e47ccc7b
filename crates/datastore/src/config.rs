//! Which store to open: the same selection rules for the plugins and calicoctl.

use std::path::{Path, PathBuf};

use crate::sqlite::{EmbeddedOptions, EmbeddedStore};
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
    /// Open the embedded store only if it exists ([`Error::Missing`] otherwise), for
    /// commands that only read or change what is there: they must not create a store (and
    /// its directories) at a mistyped path.
    pub existing_only: bool,
}

impl Config {
    /// `"http://a:2379, http://b:2379"` -> `["http://a:2379", "http://b:2379"]`: split on
    /// commas, trim, skip empty entries.
    pub fn parse_endpoints(s: &str) -> Vec<String> {
        s.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned).collect()
    }

    /// The embedded store's file: `datastore_path`, or the default.
    pub fn embedded_path(&self) -> &Path {
        self.datastore_path.as_deref().unwrap_or(Path::new(DEFAULT_DATASTORE_PATH))
    }
}

/// The flags (and environment variables) that select the store, the same for every
/// command-line tool: `--etcd-endpoints` / `ETCD_ENDPOINTS` (with `--etcd-key-file`,
/// `--etcd-cert-file`, `--etcd-ca-cert-file` and their `ETCD_*` variables) selects etcd,
/// otherwise `--datastore-path` / `CALICO_DATASTORE_PATH` the embedded store. Flatten it into
/// a clap parser (`#[command(flatten)]`).
#[cfg(feature = "cli")]
#[derive(Clone, Debug, Default, clap::Args)]
pub struct StoreArgs {
    /// etcd endpoints, comma-separated (selects the etcd datastore)
    #[arg(long, env = "ETCD_ENDPOINTS", global = true)]
    pub etcd_endpoints: Option<String>,
    /// client key for TLS to etcd
    #[arg(long, env = "ETCD_KEY_FILE", global = true)]
    pub etcd_key_file: Option<PathBuf>,
    /// client certificate for TLS to etcd
    #[arg(long, env = "ETCD_CERT_FILE", global = true)]
    pub etcd_cert_file: Option<PathBuf>,
    /// CA certificate of the etcd servers
    #[arg(long, env = "ETCD_CA_CERT_FILE", global = true)]
    pub etcd_ca_cert_file: Option<PathBuf>,
    /// the embedded datastore file (when no etcd endpoints are given)
    #[arg(long, env = "CALICO_DATASTORE_PATH", global = true)]
    pub datastore_path: Option<PathBuf>,
}

#[cfg(feature = "cli")]
impl StoreArgs {
    /// The store these flags select; `existing_only` as [`Config::existing_only`].
    pub fn config(&self, existing_only: bool) -> Config {
        Config {
            etcd_endpoints: self.etcd_endpoints.as_deref().map(Config::parse_endpoints).unwrap_or_default(),
            etcd_key_file: self.etcd_key_file.clone(),
            etcd_cert_file: self.etcd_cert_file.clone(),
            etcd_ca_cert_file: self.etcd_ca_cert_file.clone(),
            datastore_path: self.datastore_path.clone(),
            existing_only,
        }
    }
}

/// Open the configured store: the embedded store at `datastore_path` (default
/// [`DEFAULT_DATASTORE_PATH`]) when `etcd_endpoints` is empty, etcd otherwise.
pub fn open(cfg: &Config) -> Result<Box<dyn Datastore>, Error> {
    if cfg.etcd_endpoints.is_empty() {
        let options = EmbeddedOptions { create: !cfg.existing_only, ..EmbeddedOptions::default() };
        return Ok(Box::new(EmbeddedStore::open_with(cfg.embedded_path(), options)?));
    }
    open_etcd(cfg)
}

/// The etcd backend, or an error saying it is not built in.
fn open_etcd(cfg: &Config) -> Result<Box<dyn Datastore>, Error> {
    #[cfg(feature = "etcd")]
    return Ok(Box::new(crate::etcd::EtcdStore::connect(cfg)?));
    #[cfg(not(feature = "etcd"))]
    Err(Error::EtcdNotBuiltIn { endpoints: cfg.etcd_endpoints.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_trimmed_and_empty_ones_skipped() {
        assert_eq!(Config::parse_endpoints(" http://a:2379,,http://b:2379 , "), ["http://a:2379", "http://b:2379"]);
        assert!(Config::parse_endpoints("").is_empty());
        assert!(Config::parse_endpoints(" , ").is_empty());
    }

    #[test]
    fn default_path_applies_when_none_is_configured() {
        assert_eq!(Config::default().embedded_path(), Path::new(DEFAULT_DATASTORE_PATH));
    }

    #[test]
    fn empty_endpoints_open_the_embedded_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/store.db");
        let cfg = Config { datastore_path: Some(path.clone()), ..Config::default() };
        let store = open(&cfg).expect("open embedded store");
        assert_eq!(store.create("/k", b"v".to_vec()).expect("create"), 1);
        assert!(path.is_file());
    }

    #[test]
    fn existing_only_never_creates_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mistyped/store.db");
        let cfg = Config { datastore_path: Some(path.clone()), existing_only: true, ..Config::default() };
        let err = open(&cfg).err().expect("a missing store is an error");
        assert!(matches!(err, Error::Missing { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        assert!(!path.parent().unwrap().exists(), "the directory was created");
        open(&Config { existing_only: false, ..cfg.clone() }).expect("create");
        open(&cfg).expect("an existing store opens");
    }

    #[cfg(not(feature = "etcd"))]
    #[test]
    fn etcd_endpoints_without_the_feature_give_a_clear_error() {
        let cfg = Config { etcd_endpoints: Config::parse_endpoints("http://127.0.0.1:2379"), ..Config::default() };
        let err = open(&cfg).err().expect("etcd is not built in");
        assert!(matches!(err, Error::EtcdNotBuiltIn { .. }));
        assert!(err.to_string().contains("etcd support is not built in"), "{err}");
    }
}
