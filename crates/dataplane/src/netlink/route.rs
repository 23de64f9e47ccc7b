//! Address and route requests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope},
};
use rtnetlink::{AddressMessageBuilder, RouteMessageBuilder};

use super::{absent_as_none, Netlink};
use crate::error::{Error, Result};

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl std::fmt::Display for IpFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

impl IpFamily {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

/// A route to add or delete in the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination prefix (host bits are ignored).
    pub dst: IpNetwork,
    /// Next hop, of the same family as `dst`.
    pub gateway: Option<IpAddr>,
    /// Output interface index; 0 for none.
    pub oif: u32,
    /// `scope link` (IPv4; IPv6 routes have no scope).
    pub scope_link: bool,
}

impl RouteSpec {
    /// `ip route` style, naming the interface `dev`: `10.0.0.5/32 dev
    /// cali123 scope link`, `0.0.0.0/0 via 169.254.1.1 dev eth0`.
    pub fn describe(&self, dev: &str) -> String {
        let mut text = self.dst.to_string();
        if let Some(gateway) = self.gateway {
            text.push_str(&format!(" via {gateway}"));
        }
        if self.oif != 0 {
            text.push_str(&format!(" dev {dev}"));
        }
        if self.scope_link {
            text.push_str(" scope link");
        }
        text
    }
}

/// As [`RouteSpec::describe`], with the interface as `#index`.
impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe(&format!("#{}", self.oif)))
    }
}

/// A route of the main table, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination prefix (`0.0.0.0/0` or `::/0` for the default route).
    pub dst: IpNetwork,
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Output interface index, if any.
    pub oif: Option<u32>,
    /// Route scope.
    pub scope: RouteScope,
}

fn route_address(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

impl RouteInfo {
    /// Parses a route of the main table; `None` for other tables.
    fn from_message(message: RouteMessage, family: IpFamily) -> Option<RouteInfo> {
        let mut table = u32::from(message.header.table);
        let mut dst = None;
        let mut gateway = None;
        let mut oif = None;
        for attribute in &message.attributes {
            match attribute {
                RouteAttribute::Table(id) => table = *id,
                RouteAttribute::Destination(address) => dst = route_address(address),
                RouteAttribute::Gateway(address) => gateway = route_address(address),
                RouteAttribute::Oif(index) => oif = Some(*index),
                _ => {}
            }
        }
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
            return None;
        }
        let dst = dst.unwrap_or(match family {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        let dst = IpNetwork::new(dst, message.header.destination_prefix_length).ok()?;
        Some(RouteInfo { dst, gateway, oif, scope: message.header.scope })
    }
}

fn invalid_route(spec: &RouteSpec, reason: &'static str) -> Error {
    Error::Invalid { what: "route", value: spec.to_string(), reason }
}

/// Builds the kernel message for `spec`.
pub(super) fn route_message(spec: &RouteSpec) -> Result<RouteMessage> {
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(spec.dst.network(), spec.dst.prefix())
        .map_err(|_| invalid_route(spec, "bad destination prefix"))?;
    if let Some(gateway) = spec.gateway {
        if IpFamily::of(gateway) != IpFamily::of(spec.dst.ip()) {
            return Err(invalid_route(spec, "gateway and destination families differ"));
        }
        builder = builder.gateway(gateway).map_err(|_| invalid_route(spec, "bad gateway"))?;
    }
    if spec.oif != 0 {
        builder = builder.output_interface(spec.oif);
    }
    if spec.scope_link {
        builder = builder.scope(RouteScope::Link);
    }
    Ok(builder.build())
}

fn address_of(message: &AddressMessage) -> Option<IpNetwork> {
    // For IPv4 `Local` is the interface's own address (`Address` is the peer
    // on point-to-point links); IPv6 only sends `Address`.
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    IpNetwork::new(local.or(address)?, message.header.prefix_len).ok()
}

impl Netlink {
    /// Adds `address` (with its prefix length) to link `index`.
    pub fn add_address(&self, index: u32, address: IpNetwork) -> Result<()> {
        let request = self.handle.address().add(index, address.ip(), address.prefix()).execute();
        self.exec(|| format!("add address {address} to link #{index}"), request)
    }

    /// Removes `address` from link `index`. Returns `false` if it was not
    /// there (or the link is gone).
    pub fn delete_address(&self, index: u32, address: IpNetwork) -> Result<bool> {
        let message = match address.ip() {
            IpAddr::V4(ip) => {
                AddressMessageBuilder::<Ipv4Addr>::new().index(index).address(ip, address.prefix()).build()
            }
            IpAddr::V6(ip) => {
                AddressMessageBuilder::<Ipv6Addr>::new().index(index).address(ip, address.prefix()).build()
            }
        };
        let request = self.handle.address().del(message).execute();
        let result = self.exec(|| format!("delete address {address} from link #{index}"), request);
        match result {
            // The kernel answers EADDRNOTAVAIL for an address that is not there.
            Err(err) if err.errno() == Some(nix::errno::Errno::EADDRNOTAVAIL) => Ok(false),
            other => Ok(absent_as_none(other)?.is_some()),
        }
    }

    /// The addresses of link `index`, both families.
    pub fn addresses(&self, index: u32) -> Result<Vec<IpNetwork>> {
        let request = self.handle.address().get().set_link_index_filter(index).execute();
        let messages = self.exec(|| format!("list addresses of link #{index}"), request.try_collect::<Vec<_>>())?;
        Ok(messages.iter().filter_map(address_of).collect())
    }

    /// Adds a route to the main table. An identical destination already
    /// present gives `EEXIST` ([`Error::is_exists`]).
    pub fn add_route(&self, spec: &RouteSpec) -> Result<()> {
        let request = self.handle.route().add(route_message(spec)?).execute();
        self.exec(|| format!("add route {spec}"), request)
    }

    /// The routes of the main table for `family`.
    pub fn routes(&self, family: IpFamily) -> Result<Vec<RouteInfo>> {
        let filter = match family {
            IpFamily::V4 => RouteMessageBuilder::<Ipv4Addr>::new().build(),
            IpFamily::V6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
        };
        let request = self.handle.route().get(filter).execute();
        let messages = self.exec(|| format!("list {family} routes"), request.try_collect::<Vec<_>>())?;
        Ok(messages.into_iter().filter_map(|message| RouteInfo::from_message(message, family)).collect())
    }

    /// Deletes the route matching `spec`'s destination, gateway and
    /// interface, whatever its scope and protocol. Returns `false` if there
    /// was no such route (or no such interface any more).
    pub fn delete_route(&self, spec: &RouteSpec) -> Result<bool> {
        let mut message = route_message(spec)?;
        message.header.protocol = RouteProtocol::Unspec;
        message.header.scope = RouteScope::NoWhere;
        let request = self.handle.route().del(message).execute();
        Ok(absent_as_none(self.exec(|| format!("delete route {spec}"), request))?.is_some())
    }
}
