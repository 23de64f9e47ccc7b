//! Calico's netconf: the fields calico-ipam and calico-cni share, with Calico's names so
//! existing files work unchanged, and what they select (the node name, the datastore, the
//! host's IPAM lock).

use std::path::{Path, PathBuf};

use cni::{code, CniCode};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer};

/// Errors of the netconf and of what it names. [`CniCode`] below maps them to CNI codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed JSON (code 6), or a field of the wrong type or value (code 7).
    #[error(transparent)]
    Cni(#[from] cni::Error),

    #[error("could not determine the node name: reading {}", path.display())]
    NodeNameFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("could not determine the node name: reading the hostname")]
    Hostname(#[source] std::io::Error),

    #[error("could not determine the node name: the hostname is empty")]
    EmptyHostname,
}

impl CniCode for Error {
    fn cni_code(&self) -> u32 {
        match self {
            Error::Cni(e) => e.cni_code(),
            Error::NodeNameFile { .. } | Error::Hostname(_) | Error::EmptyHostname => code::INVALID_CONFIG,
        }
    }
}

/// Where Calico keeps the node name when `nodename` is not in the netconf.
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/calico/nodename";
/// Where calico-node writes the MTU for workloads (read when the netconf has no `mtu`).
pub const DEFAULT_MTU_FILE: &str = "/var/lib/calico/mtu";
/// The MTU of both veth ends when neither the netconf nor the MTU file gives one.
pub const DEFAULT_MTU: u32 = 1500;

/// The host lock when etcd is the store (the embedded store keeps it beside its file).
pub const DEFAULT_ETCD_LOCK_FILE: &str = "/var/run/calico/ipam.lock";

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CalicoConf {
    #[serde(flatten)]
    pub common: cni::NetConf,
    /// Comma-separated etcd URLs; when absent the embedded store is used.
    #[serde(default)]
    pub etcd_endpoints: Option<String>,
    #[serde(default)]
    pub etcd_key_file: Option<PathBuf>,
    #[serde(default)]
    pub etcd_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub etcd_ca_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub nodename: Option<String>,
    #[serde(default)]
    pub nodename_file: Option<PathBuf>,
    #[serde(default)]
    pub datastore_path: Option<PathBuf>,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub log_file_path: Option<PathBuf>,
    #[serde(default, deserialize_with = "cni::object::object")]
    pub ipam: IpamConf,
    /// MTU of both veth ends (calico-cni); else the MTU file's, else 1500.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The file calico-node writes the workload MTU to ([`DEFAULT_MTU_FILE`]).
    #[serde(default)]
    pub mtu_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "cni::object::object")]
    pub container_settings: ContainerSettings,
    /// The security profiles of this network's endpoints, in order; absent: one profile named
    /// after the network. A profile that does not exist is created with Calico's defaults at
    /// the first ADD that names it.
    #[serde(default)]
    pub profiles: Option<Vec<String>>,
}

/// Calico's `container_settings` section (calico-cni).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ContainerSettings {
    /// Set `net.ipv4.ip_forward` (and IPv6 forwarding) inside the container.
    #[serde(default)]
    pub allow_ip_forwarding: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// Calico writes these as strings ("true"); booleans are accepted too.
    #[serde(default, deserialize_with = "flexible_bool")]
    pub assign_ipv4: Option<bool>,
    #[serde(default, deserialize_with = "flexible_bool")]
    pub assign_ipv6: Option<bool>,
    #[serde(default)]
    pub ipv4_pools: Vec<IpNetwork>,
    #[serde(default)]
    pub ipv6_pools: Vec<IpNetwork>,
    /// The host-wide allocation lock (see [`CalicoConf::lock_path`] for the default).
    #[serde(default)]
    pub lock_file: Option<PathBuf>,
}

fn flexible_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Str(String),
    }
    match Option::<B>::deserialize(d)? {
        None => Ok(None),
        Some(B::Bool(b)) => Ok(Some(b)),
        Some(B::Str(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!("expected true or false, got {s:?}"))),
        },
    }
}

impl CalicoConf {
    /// Parse stdin: malformed JSON is code 6, a wrong type or bad CIDR code 7 naming the field.
    pub fn parse(stdin: &[u8]) -> Result<CalicoConf, Error> {
        let conf: CalicoConf = cni::parse_config(stdin)?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |field: String, reason: &str| cni::Error::InvalidConfig { field, reason: reason.into() };
        for (i, p) in self.ipam.ipv4_pools.iter().enumerate() {
            if !p.is_ipv4() {
                return Err(invalid(format!("ipam.ipv4_pools[{i}]"), "not an IPv4 CIDR").into());
            }
        }
        for (i, p) in self.ipam.ipv6_pools.iter().enumerate() {
            if !p.is_ipv6() {
                return Err(invalid(format!("ipam.ipv6_pools[{i}]"), "not an IPv6 CIDR").into());
            }
        }
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(invalid("mtu".into(), "must be between 68 and 65535").into());
            }
        }
        for (i, p) in self.profiles.iter().flatten().enumerate() {
            if !model::profile::is_valid_name(p) {
                return Err(
                    invalid(format!("profiles[{i}]"), "a profile name is letters, digits, '.', '_' and '-'").into()
                );
            }
        }
        if !self.assign_v4() && !self.assign_v6() {
            return Err(invalid("ipam.assign_ipv4".into(), "assign_ipv4 and assign_ipv6 are both false").into());
        }
        Ok(())
    }

    /// The endpoint's profiles: `profiles`, else the network's name.
    pub fn profiles(&self) -> Vec<String> {
        self.profiles.clone().unwrap_or_else(|| vec![self.common.name.clone()])
    }

    /// The MTU for a workload: `mtu`, else the number in `mtu_file` (default
    /// [`DEFAULT_MTU_FILE`], which calico-node keeps), else [`DEFAULT_MTU`]. A file that is
    /// missing or does not hold an MTU (68..=65535) gives the default.
    pub fn workload_mtu(&self) -> u32 {
        if let Some(mtu) = self.mtu {
            return mtu;
        }
        let file = self.mtu_file.as_deref().unwrap_or(Path::new(DEFAULT_MTU_FILE));
        match std::fs::read_to_string(file) {
            Ok(text) => match text.trim().parse::<u32>() {
                Ok(mtu) if (68..=65535).contains(&mtu) => mtu,
                _ => {
                    tracing::warn!(file = %file.display(), "the MTU file holds no MTU; using {DEFAULT_MTU}");
                    DEFAULT_MTU
                }
            },
            Err(_) => DEFAULT_MTU,
        }
    }

    pub fn assign_v4(&self) -> bool {
        self.ipam.assign_ipv4.unwrap_or(true)
    }

    pub fn assign_v6(&self) -> bool {
        self.ipam.assign_ipv6.unwrap_or(false)
    }

    pub fn store_config(&self) -> datastore::config::Config {
        datastore::config::Config {
            etcd_endpoints: self
                .etcd_endpoints
                .as_deref()
                .map(datastore::config::Config::parse_endpoints)
                .unwrap_or_default(),
            etcd_key_file: self.etcd_key_file.clone(),
            etcd_cert_file: self.etcd_cert_file.clone(),
            etcd_ca_cert_file: self.etcd_ca_cert_file.clone(),
            datastore_path: self.datastore_path.clone(),
            existing_only: false,
        }
    }

    /// `nodename`, else the contents of `nodename_file` (default /var/lib/calico/nodename),
    /// else the hostname, as Calico does.
    pub fn nodename(&self) -> Result<String, Error> {
        if let Some(n) = self.nodename.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            return Ok(n.to_owned());
        }
        let file = self.nodename_file.as_deref().unwrap_or(Path::new(DEFAULT_NODENAME_FILE));
        match std::fs::read_to_string(file) {
            Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.nodename_file.is_none() => {}
            Err(source) => return Err(Error::NodeNameFile { path: file.to_owned(), source }),
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(Error::Hostname)?;
        let host = host.trim().to_ascii_lowercase();
        if host.is_empty() {
            return Err(Error::EmptyHostname);
        }
        Ok(host)
    }

    /// `ipam.lock_file`; else beside the embedded store (`<datastore_path>.lock`); else, on
    /// etcd, /var/run/calico/ipam.lock.
    pub fn lock_path(&self) -> PathBuf {
        if let Some(p) = &self.ipam.lock_file {
            return p.clone();
        }
        if self.etcd_endpoints.as_deref().is_some_and(|e| !e.trim().is_empty()) {
            return PathBuf::from(DEFAULT_ETCD_LOCK_FILE);
        }
        let store =
            self.datastore_path.clone().unwrap_or_else(|| PathBuf::from(datastore::config::DEFAULT_DATASTORE_PATH));
        let mut name = store.into_os_string();
        name.push(".lock");
        PathBuf::from(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calico_netconf_parses_unchanged() {
        let conf = CalicoConf::parse(
            br#"{"name":"k8s-pod-network","cniVersion":"0.3.1","type":"calico",
                "etcd_endpoints":"http://127.0.0.1:2379","nodename":"node-1","mtu":1440,
                "log_level":"info","ipam":{"type":"calico-ipam","assign_ipv4":"true",
                "assign_ipv6":"false","ipv4_pools":["10.10.0.0/16"]},
                "policy":{"type":"k8s"},"kubernetes":{"kubeconfig":"/x"}}"#,
        )
        .unwrap();
        assert_eq!(conf.nodename().unwrap(), "node-1");
        assert!(conf.assign_v4() && !conf.assign_v6());
        assert_eq!(conf.ipam.ipv4_pools, vec!["10.10.0.0/16".parse::<IpNetwork>().unwrap()]);
        assert_eq!(conf.store_config().etcd_endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(conf.lock_path(), PathBuf::from(DEFAULT_ETCD_LOCK_FILE));
    }

    #[test]
    fn bad_fields_are_named() {
        let err =
            CalicoConf::parse(br#"{"cniVersion":"1.0.0","name":"n","ipam":{"ipv4_pools":["nope"]}}"#).unwrap_err();
        assert_eq!(err.cni_code(), 7);
        assert!(err.to_string().contains("ipv4_pools"), "{err}");
        let err = CalicoConf::parse(br#"{"cniVersion":"1.0.0","name":"n","ipam":{"ipv6_pools":["10.0.0.0/8"]}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("ipv6_pools[0]"), "{err}");
        let err =
            CalicoConf::parse(br#"{"cniVersion":"1.0.0","name":"n","ipam":{"assign_ipv4":"maybe"}}"#).unwrap_err();
        assert_eq!(err.cni_code(), 7);
        for (doc, field) in [
            (&br#"{"cniVersion":"1.0.0","name":"n","container_settings":[true]}"#[..], "container_settings"),
            (br#"{"cniVersion":"1.0.0","name":"n","ipam":["calico-ipam"]}"#, "ipam"),
            (br#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":[["10.77.0.9"]]}"#, "runtimeConfig"),
            (br#"{"cniVersion":"1.0.0","name":"n","prevResult":[]}"#, "prevResult"),
        ] {
            let err = CalicoConf::parse(doc).unwrap_err().to_string();
            assert!(err.contains(&format!("field {field}:")) && err.contains("expected an object"), "{err}");
        }
        let err = CalicoConf::parse(b"{not json").unwrap_err();
        assert_eq!(err.cni_code(), 6);
    }

    #[test]
    fn a_missing_nodename_file_is_named_with_its_cause() {
        let conf = CalicoConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","nodename_file":"/proc/no/such/nodename","ipam":{}}"#,
        )
        .unwrap();
        let err = conf.nodename().unwrap_err();
        assert_eq!(err.cni_code(), 7);
        assert_eq!(err.to_string(), "could not determine the node name: reading /proc/no/such/nodename");
        let cause = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
        assert!(cause.contains("No such file"), "{cause}");
    }

    #[test]
    fn the_mtu_comes_from_the_netconf_else_the_mtu_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mtu");
        let conf = |mtu: Option<u32>| CalicoConf { mtu, mtu_file: Some(file.clone()), ..CalicoConf::default() };
        assert_eq!(conf(None).workload_mtu(), DEFAULT_MTU, "no file");
        std::fs::write(&file, "1450\n").unwrap();
        assert_eq!(conf(None).workload_mtu(), 1450);
        assert_eq!(conf(Some(1400)).workload_mtu(), 1400, "the netconf wins");
        std::fs::write(&file, "lots").unwrap();
        assert_eq!(conf(None).workload_mtu(), DEFAULT_MTU);
        std::fs::write(&file, "20").unwrap();
        assert_eq!(conf(None).workload_mtu(), DEFAULT_MTU, "below IPv4's minimum");
    }
}
