//! The union of every version's result shape, as serde reads it; converted to [`CniResult`].

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Deserialize;

use crate::object;

use super::{cidr, nullable, CniResult, Dns, Interface, IpConfig, Route};

#[derive(Deserialize)]
pub(super) struct Result {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: Option<String>,
    #[serde(default, deserialize_with = "object::object_list")]
    interfaces: Vec<WireInterface>,
    #[serde(default, deserialize_with = "object::object_list")]
    ips: Vec<WireIp>,
    #[serde(default, deserialize_with = "object::object_list")]
    routes: Vec<WireRoute>,
    #[serde(default, deserialize_with = "object::nullable_object")]
    dns: WireDns,
    #[serde(default, deserialize_with = "object::optional_object")]
    pub ip4: Option<LegacyIp>,
    #[serde(default, deserialize_with = "object::optional_object")]
    pub ip6: Option<LegacyIp>,
}

#[derive(Deserialize)]
struct WireInterface {
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    sandbox: Option<String>,
    #[serde(rename = "socketPath", default)]
    socket_path: Option<String>,
    #[serde(rename = "pciID", default)]
    pci_id: Option<String>,
}

/// 0.3.0 to 1.1.0; `version` (before 1.0.0) is implied by the address and not read.
#[derive(Deserialize)]
struct WireIp {
    #[serde(deserialize_with = "cidr")]
    address: IpNetwork,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct WireRoute {
    #[serde(deserialize_with = "cidr")]
    dst: IpNetwork,
    #[serde(default)]
    gw: Option<IpAddr>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u32>,
}

#[derive(Default, Deserialize)]
struct WireDns {
    #[serde(default, deserialize_with = "nullable")]
    nameservers: Vec<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    search: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    options: Vec<String>,
}

/// 0.1.0/0.2.0 `ip4`/`ip6`.
#[derive(Deserialize)]
pub(super) struct LegacyIp {
    #[serde(deserialize_with = "cidr")]
    ip: IpNetwork,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default, deserialize_with = "object::object_list")]
    routes: Vec<WireRoute>,
}

impl Result {
    /// 0.3.0 and later.
    pub fn into_current(self) -> CniResult {
        CniResult {
            interfaces: self.interfaces.into_iter().map(WireInterface::into_interface).collect(),
            ips: self
                .ips
                .into_iter()
                .map(|ip| IpConfig { address: ip.address, gateway: ip.gateway, interface: ip.interface })
                .collect(),
            routes: self.routes.into_iter().map(WireRoute::into_route).collect(),
            dns: self.dns.into_dns(),
        }
    }

    /// 0.1.0/0.2.0: IPv4 first, then IPv6, each followed by its routes.
    pub fn into_legacy(self) -> CniResult {
        let mut result = CniResult { dns: self.dns.into_dns(), ..CniResult::default() };
        for legacy in [self.ip4, self.ip6].into_iter().flatten() {
            result.ips.push(IpConfig { address: legacy.ip, gateway: legacy.gateway, interface: None });
            result.routes.extend(legacy.routes.into_iter().map(WireRoute::into_route));
        }
        result
    }
}

impl WireInterface {
    fn into_interface(self) -> Interface {
        Interface {
            name: self.name,
            mac: non_empty(self.mac),
            mtu: self.mtu.filter(|m| *m != 0),
            sandbox: non_empty(self.sandbox),
            socket_path: non_empty(self.socket_path),
            pci_id: non_empty(self.pci_id),
        }
    }
}

impl WireRoute {
    fn into_route(self) -> Route {
        Route {
            dst: self.dst,
            gw: self.gw,
            mtu: self.mtu.filter(|n| *n != 0),
            advmss: self.advmss.filter(|n| *n != 0),
            priority: self.priority.filter(|n| *n != 0),
            table: self.table,
            scope: self.scope,
        }
    }
}

impl WireDns {
    fn into_dns(self) -> Dns {
        Dns {
            nameservers: self.nameservers,
            domain: non_empty(self.domain),
            search: self.search,
            options: self.options,
        }
    }
}

/// Go writes `""` for an absent string without omitempty; read it as absent.
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}
