//! The network-config fields every plugin shares, and [`parse_config`], which turns serde
//! errors into CNI errors naming the JSON path of the bad field.
//!
//! # Plugin configs
//! A plugin's own config embeds the shared part with `#[serde(flatten)]`:
//! ```
//! #[derive(serde::Deserialize)]
//! struct MyConf {
//!     #[serde(flatten)]
//!     common: cni::NetConf,
//!     #[serde(default)]
//!     mtu: Option<u32>,
//! }
//! let conf: MyConf = cni::parse_config(br#"{"cniVersion":"1.0.0","name":"n","mtu":1400}"#)?;
//! # Ok::<(), cni::Error>(())
//! ```
//! serde's flatten hides the path of an error inside the flattened part; [`parse_config`]
//! then re-parses the bytes as a bare [`NetConf`] to find it, so errors still name the field
//! (`ipam.type`, `runtimeConfig.ips[1]`). Fields of other flattened structs lose their path:
//! don't flatten anything but [`NetConf`].
//!
//! With flatten, a key goes to the outer struct's field OR to the flattened one, never both:
//! a plugin struct that declares its own `ipam` leaves `common.ipam` empty. A plugin that
//! needs its own view of a shared key (the IPAM plugin reading `ipam.*`) uses
//! [`parse_plugin_config`] instead, which parses the bytes twice (a few microseconds).

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::object::{self, Object};
use crate::Error;

/// The fields of a network config that every plugin reads.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default, deserialize_with = "object::optional_object")]
    pub ipam: Option<IpamSection>,
    #[serde(rename = "prevResult", default, deserialize_with = "object::optional_object")]
    pub prev_result: Option<serde_json::Value>,
    #[serde(rename = "runtimeConfig", default, deserialize_with = "object::object")]
    pub runtime_config: RuntimeConfig,
    #[serde(default, deserialize_with = "object::optional_object")]
    pub args: Option<Args>,
    #[serde(
        rename = "cni.dev/valid-attachments",
        alias = "cni.dev/attachments",
        default,
        deserialize_with = "object::optional_object_list"
    )]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The capabilities a conflist declares (the runtime reads them and passes
    /// `runtimeConfig`); read only to refuse anything but an object.
    #[serde(default, deserialize_with = "object::optional_object")]
    pub capabilities: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The `ipam` section as far as delegation needs it; the IPAM plugin reads the rest.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct IpamSection {
    #[serde(rename = "type")]
    pub plugin_type: String,
}

/// `runtimeConfig`: per-invocation data the runtime passes (capabilities).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    /// Requested addresses, CIDR or bare IP (capability `ips`).
    #[serde(default)]
    pub ips: Vec<String>,
    /// Requested MAC (capability `mac`).
    #[serde(default)]
    pub mac: Option<String>,
    /// Capability `portMappings`.
    #[serde(rename = "portMappings", default, deserialize_with = "object::object_list")]
    pub port_mappings: Vec<PortMapping>,
}

/// One entry of `runtimeConfig.portMappings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default)]
    pub protocol: String,
    #[serde(rename = "hostIP", default)]
    pub host_ip: Option<String>,
}

/// The `args` section of a config.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Args {
    #[serde(default, deserialize_with = "object::optional_object")]
    pub cni: Option<ArgsCni>,
}

/// `args.cni`: conventional arguments (only `ips` is read).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ArgsCni {
    #[serde(default)]
    pub ips: Vec<String>,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl NetConf {
    /// The union (first occurrence kept, in order) of `runtimeConfig.ips` and
    /// `args.cni.ips`. Entries may be `"10.0.0.5"` or `"10.0.0.5/24"`; anything else is
    /// [`Error::InvalidConfig`] naming the entry.
    pub fn requested_ips(&self) -> Result<Vec<IpAddr>, Error> {
        let runtime = self.runtime_config.ips.iter().enumerate().map(|(i, s)| (format!("runtimeConfig.ips[{i}]"), s));
        let args = self
            .args
            .iter()
            .filter_map(|a| a.cni.as_ref())
            .flat_map(|cni| cni.ips.iter().enumerate())
            .map(|(i, s)| (format!("args.cni.ips[{i}]"), s));
        let mut out = Vec::new();
        for (field, raw) in runtime.chain(args) {
            let ip = parse_ip_or_cidr(raw).ok_or_else(|| Error::InvalidConfig {
                field,
                reason: format!("{raw:?} is not an IP address or CIDR"),
            })?;
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        Ok(out)
    }
}

fn parse_ip_or_cidr(raw: &str) -> Option<IpAddr> {
    let (ip, prefix) = match raw.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (raw, None),
    };
    let ip: IpAddr = ip.parse().ok()?;
    if let Some(prefix) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        prefix.parse::<u8>().ok().filter(|p| *p <= max)?;
    }
    Some(ip)
}

/// Parses a network config (or any plugin config) from JSON.
///
/// Syntax errors, truncation and trailing garbage are [`Error::Decode`] (code 6). A wrong
/// type or value, or a missing field, is [`Error::InvalidConfig`] (code 7) whose `field` is
/// the JSON path (`ipam.ipv4_pools[0]`; `ipam.type` for a missing field).
pub fn parse_config<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    match parse_tracked::<T>(bytes) {
        Ok(value) => Ok(value),
        Err(Located::Decode(source)) => Err(Error::Decode { source }),
        Err(Located::Data { path, source }) if path.is_empty() => {
            // Maybe the error is inside a flattened NetConf: find its path there, if the bare
            // NetConf fails for the same reason.
            match parse_tracked::<NetConf>(bytes) {
                Err(Located::Data { path: inner_path, source: inner })
                    if !inner_path.is_empty() && reason_of(&inner) == reason_of(&source) =>
                {
                    Err(invalid_config(inner_path, &inner))
                }
                _ => Err(invalid_config(path, &source)),
            }
        }
        Err(Located::Data { path, source }) => Err(invalid_config(path, &source)),
    }
}

/// Parses the shared [`NetConf`] and the plugin's own config `T` from the same bytes. `T`
/// declares only the keys it needs, shared ones included (e.g. `ipam` with its own fields);
/// unknown keys are ignored. Errors as [`parse_config`].
pub fn parse_plugin_config<T: DeserializeOwned>(bytes: &[u8]) -> Result<(NetConf, T), Error> {
    let common = parse_config::<NetConf>(bytes)?;
    let own = parse_config::<T>(bytes)?;
    Ok((common, own))
}

enum Located {
    Decode(serde_json::Error),
    /// `path` is empty for the top level.
    Data {
        path: String,
        source: serde_json::Error,
    },
}

fn parse_tracked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Located> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // The config itself must be an object too (see [`crate::object`]).
    let Object(value) = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let source = err.into_inner();
        if source.is_data() {
            let path = if path == "." { String::new() } else { path };
            Located::Data { path, source }
        } else {
            Located::Decode(source)
        }
    })?;
    de.end().map_err(Located::Decode)?;
    Ok(value)
}

/// serde_json's message without its " at line L column C" suffix.
fn reason_of(source: &serde_json::Error) -> String {
    let mut reason = source.to_string();
    let position = format!(" at line {} column {}", source.line(), source.column());
    if let Some(stripped) = reason.strip_suffix(&position) {
        reason.truncate(stripped.len());
    }
    reason
}

fn invalid_config(path: String, source: &serde_json::Error) -> Error {
    let reason = reason_of(source);
    let missing = reason.strip_prefix("missing field `").and_then(|rest| rest.strip_suffix('`')).map(str::to_string);
    let field = match (missing, path.is_empty()) {
        (Some(name), true) => name,
        (Some(name), false) => format!("{path}.{name}"),
        (None, true) => "(top level)".to_string(),
        (None, false) => path,
    };
    Error::InvalidConfig { field, reason }
}

#[cfg(test)]
#[path = "netconf_tests.rs"]
mod tests;
