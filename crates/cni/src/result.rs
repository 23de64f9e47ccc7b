//! The ADD result. One internal form (the 1.1.0 shape), written out in any version and read
//! from any version.
//!
//! Wire shapes:
//! - 0.1.0/0.2.0: `ip4`/`ip6` objects (`ip`, `gateway`, `routes` of that family), the first
//!   address of each family only, no interfaces;
//! - 0.3.0/0.3.1/0.4.0: `interfaces`, `ips[]` with `version`, `routes`;
//! - 1.0.0: as 0.4.0 without `ips[].version`;
//! - 1.1.0: adds interface `mtu`/`socketPath`/`pciID` and route
//!   `mtu`/`advmss`/`priority`/`table`/`scope`.
//!
//! Empty lists and absent values are omitted, as Go's `omitempty` does; `dns` is always
//! written (`{}` when empty), as Go's plugins do.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use crate::{Error, Version};

/// A plugin's result, version-independent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// An interface the plugin created or configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    /// 1.1.0 only.
    pub mtu: Option<u32>,
    /// The netns path for container interfaces; `None` for host-side ones.
    pub sandbox: Option<String>,
    /// 1.1.0 only.
    pub socket_path: Option<String>,
    /// 1.1.0 only.
    pub pci_id: Option<String>,
}

/// An assigned address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with the prefix length of its subnet, e.g. `10.0.0.5/24`.
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
}

/// A route to add in the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    /// `mtu`, `advmss`, `priority`, `table`, `scope`: 1.1.0 only.
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u32>,
}

/// DNS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl CniResult {
    /// The result as version `v` writes it, including `"cniVersion"`.
    pub fn to_json(&self, v: Version) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), v.as_str().into());
        if v <= Version::V0_2_0 {
            for (key, want_v4) in [("ip4", true), ("ip6", false)] {
                if let Some(ip) = self.ips.iter().find(|ip| ip.address.is_ipv4() == want_v4) {
                    out.insert(key.into(), self.legacy_ip(ip, v));
                }
            }
        } else {
            let interfaces: Vec<Value> = self.interfaces.iter().map(|i| i.to_json(v)).collect();
            let ips: Vec<Value> = self.ips.iter().map(|ip| ip.to_json(v)).collect();
            let routes: Vec<Value> = self.routes.iter().map(|r| r.to_json(v)).collect();
            insert_list(&mut out, "interfaces", interfaces);
            insert_list(&mut out, "ips", ips);
            insert_list(&mut out, "routes", routes);
        }
        out.insert("dns".into(), self.dns.to_json());
        Value::Object(out)
    }

    /// Reads a result of any version: `ip4`/`ip6` (0.1.0/0.2.0), or `ips` with or without
    /// `version` (0.3.0 to 1.1.0). The shape is chosen by `cniVersion`, or, when it is absent,
    /// by the presence of `ip4`/`ip6`. Anything malformed is [`Error::InvalidResult`].
    pub fn from_json(v: &Value) -> Result<CniResult, Error> {
        let crate::object::Object::<wire::Result>(wire) =
            serde_path_to_error::deserialize(v).map_err(|e| Error::InvalidResult {
                plugin: String::new(),
                reason: format!("field {}", e.path()),
                source: Some(e.into_inner()),
            })?;
        let legacy = match wire.cni_version.as_deref() {
            Some(raw) => {
                Version::parse(raw).map_err(|_| invalid(format!("unknown cniVersion {raw:?}")))? <= Version::V0_2_0
            }
            None => wire.ip4.is_some() || wire.ip6.is_some(),
        };
        let result = if legacy { wire.into_legacy() } else { wire.into_current() };
        if let Some((i, n)) = result
            .ips
            .iter()
            .enumerate()
            .find_map(|(i, ip)| ip.interface.filter(|n| *n >= result.interfaces.len()).map(|n| (i, n)))
        {
            return Err(invalid(format!(
                "ips[{i}].interface is {n} but there are only {} interfaces",
                result.interfaces.len()
            )));
        }
        Ok(result)
    }

    fn legacy_ip(&self, ip: &IpConfig, v: Version) -> Value {
        let mut out = Map::new();
        out.insert("ip".into(), ip.address.to_string().into());
        insert_opt(&mut out, "gateway", ip.gateway.map(|g| g.to_string()));
        let routes: Vec<Value> =
            self.routes.iter().filter(|r| r.dst.is_ipv4() == ip.address.is_ipv4()).map(|r| r.to_json(v)).collect();
        insert_list(&mut out, "routes", routes);
        Value::Object(out)
    }
}

impl Interface {
    fn to_json(&self, v: Version) -> Value {
        let mut out = Map::new();
        out.insert("name".into(), self.name.clone().into());
        insert_opt(&mut out, "mac", self.mac.clone());
        insert_opt(&mut out, "sandbox", self.sandbox.clone());
        if v >= Version::V1_1_0 {
            insert_opt(&mut out, "mtu", self.mtu.filter(|m| *m != 0));
            insert_opt(&mut out, "socketPath", self.socket_path.clone());
            insert_opt(&mut out, "pciID", self.pci_id.clone());
        }
        Value::Object(out)
    }
}

impl IpConfig {
    fn to_json(&self, v: Version) -> Value {
        let mut out = Map::new();
        if v < Version::V1_0_0 {
            let family = if self.address.is_ipv4() { "4" } else { "6" };
            out.insert("version".into(), family.into());
        }
        out.insert("address".into(), self.address.to_string().into());
        insert_opt(&mut out, "gateway", self.gateway.map(|g| g.to_string()));
        insert_opt(&mut out, "interface", self.interface);
        Value::Object(out)
    }
}

impl Route {
    /// A route with only a destination and an optional gateway.
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Route {
        Route { dst, gw, mtu: None, advmss: None, priority: None, table: None, scope: None }
    }

    fn to_json(&self, v: Version) -> Value {
        let mut out = Map::new();
        out.insert("dst".into(), self.dst.to_string().into());
        insert_opt(&mut out, "gw", self.gw.map(|g| g.to_string()));
        if v >= Version::V1_1_0 {
            // Go omits zero for these three; table and scope are pointers there, so 0 stays.
            insert_opt(&mut out, "mtu", self.mtu.filter(|n| *n != 0));
            insert_opt(&mut out, "advmss", self.advmss.filter(|n| *n != 0));
            insert_opt(&mut out, "priority", self.priority.filter(|n| *n != 0));
            insert_opt(&mut out, "table", self.table);
            insert_opt(&mut out, "scope", self.scope);
        }
        Value::Object(out)
    }
}

impl Dns {
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        insert_list(&mut out, "nameservers", self.nameservers.iter().map(|s| json!(s)).collect());
        insert_opt(&mut out, "domain", self.domain.clone());
        insert_list(&mut out, "search", self.search.iter().map(|s| json!(s)).collect());
        insert_list(&mut out, "options", self.options.iter().map(|s| json!(s)).collect());
        Value::Object(out)
    }
}

fn insert_list(out: &mut Map<String, Value>, key: &str, list: Vec<Value>) {
    if !list.is_empty() {
        out.insert(key.into(), Value::Array(list));
    }
}

fn insert_opt<T: Into<Value>>(out: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        out.insert(key.into(), value.into());
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidResult { plugin: String::new(), reason, source: None }
}

/// `null` reads as the default, as Go reads it.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A CIDR string; a bare address reads as a host route (`/32`, `/128`).
fn cidr<'de, D: Deserializer<'de>>(d: D) -> Result<IpNetwork, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| serde::de::Error::custom(format!("{s:?} is not a CIDR")))
}

mod wire;

#[cfg(test)]
#[path = "result_tests.rs"]
mod tests;
