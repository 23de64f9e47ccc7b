//! Neighbour (ARP/NDP) entries.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::{
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    AddressFamily,
};

use super::{absent_as_none, Netlink};
use crate::{error::Result, naming::format_mac};

/// A permanent neighbour entry: `ip lladdr mac dev #index nud permanent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourSpec {
    /// Interface index.
    pub index: u32,
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// Its link-layer address.
    pub mac: [u8; 6],
}

impl std::fmt::Display for NeighbourSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "neighbour {} lladdr {} dev #{}", self.ip, format_mac(self.mac), self.index)
    }
}

/// A neighbour entry as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourInfo {
    /// Interface index.
    pub index: u32,
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// Its link-layer address, if known.
    pub mac: Option<[u8; 6]>,
    /// True for `nud permanent`.
    pub permanent: bool,
}

impl NeighbourInfo {
    fn from_message(message: &NeighbourMessage) -> Option<NeighbourInfo> {
        let mut ip = None;
        let mut mac = None;
        for attribute in &message.attributes {
            match attribute {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    ip = Some(IpAddr::V4(*v4));
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    ip = Some(IpAddr::V6(*v6));
                }
                NeighbourAttribute::LinkLayerAddress(bytes) => {
                    mac = <[u8; 6]>::try_from(bytes.as_slice()).ok();
                }
                _ => {}
            }
        }
        Some(NeighbourInfo {
            index: message.header.ifindex,
            ip: ip?,
            mac,
            permanent: message.header.state == NeighbourState::Permanent,
        })
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

impl Netlink {
    /// The request that adds (or replaces) the permanent entry `spec`; sent
    /// alone by [`Netlink::add_neighbour`] or in a batch by
    /// [`Netlink::apply`](crate::Netlink::apply).
    pub(crate) fn neighbour_add_request(
        &self,
        spec: &NeighbourSpec,
    ) -> impl std::future::Future<Output = std::result::Result<(), rtnetlink::Error>> {
        self.handle
            .neighbours()
            .add(spec.index, spec.ip)
            .link_layer_address(&spec.mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
    }

    /// Adds the permanent neighbour entry `spec`, replacing one for the same
    /// address on that interface.
    pub fn add_neighbour(&self, spec: &NeighbourSpec) -> Result<()> {
        self.exec(|| format!("add {spec}"), self.neighbour_add_request(spec))
    }

    /// Deletes the entry for `spec`'s address on its interface. Returns
    /// `false` if there was none.
    pub fn delete_neighbour(&self, spec: &NeighbourSpec) -> Result<bool> {
        let mut message = NeighbourMessage::default();
        message.header.family = family_of(spec.ip);
        message.header.ifindex = spec.index;
        message.attributes.push(NeighbourAttribute::Destination(match spec.ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        let request = self.handle.neighbours().del(message).execute();
        Ok(absent_as_none(self.exec(|| format!("delete {spec}"), request))?.is_some())
    }

    /// The neighbour entries of link `index`, both families (one dump).
    pub fn neighbours(&self, index: u32) -> Result<Vec<NeighbourInfo>> {
        let request = self.handle.neighbours().get().execute();
        let messages = self.exec(|| format!("list neighbours of link #{index}"), request.try_collect::<Vec<_>>())?;
        Ok(messages
            .iter()
            .filter(|message| message.header.ifindex == index)
            .filter_map(NeighbourInfo::from_message)
            .collect())
    }
}
