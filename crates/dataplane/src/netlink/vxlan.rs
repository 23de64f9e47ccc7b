//! VXLAN devices and their forwarding database, for the node agent's tunnels: a device with
//! a fixed VNI, port, local address and parent, learning off, and one permanent FDB entry
//! (`<mac> dst <remote host>`) per remote VTEP.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::{
    link::{InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
    AddressFamily,
};
use rtnetlink::{LinkUnspec, LinkVxlan};

use super::{absent_as_none, validate_ifname, Netlink};
use crate::{error::Result, naming::format_mac};

/// A VXLAN device as the agent wants it (or as the kernel has it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// Device name (`vxlan.calico`).
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Local (source) address: this host's.
    pub local: Ipv4Addr,
    /// Index of the uplink the packets leave by.
    pub parent: u32,
    /// The device's MAC.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u32,
    /// Learning of remote MACs from traffic (the agent wants it off).
    pub learning: bool,
}

/// A VXLAN device found in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanLink {
    /// Interface index.
    pub index: u32,
    /// Administratively up.
    pub up: bool,
    /// Its settings (`None` fields the kernel did not report are zero).
    pub spec: VxlanSpec,
}

/// One FDB entry of a VXLAN device: frames to `mac` go to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbEntry {
    /// The remote VTEP's MAC.
    pub mac: [u8; 6],
    /// The remote host's address.
    pub dst: IpAddr,
}

impl std::fmt::Display for FdbEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fdb {} dst {}", format_mac(self.mac), self.dst)
    }
}

fn vxlan_of(message: LinkMessage) -> Option<VxlanLink> {
    let mut spec = VxlanSpec {
        name: String::new(),
        vni: 0,
        port: 0,
        local: Ipv4Addr::UNSPECIFIED,
        parent: 0,
        mac: [0; 6],
        mtu: 0,
        learning: true,
    };
    let mut is_vxlan = false;
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => spec.name = name,
            LinkAttribute::Address(bytes) => spec.mac = <[u8; 6]>::try_from(bytes).unwrap_or_default(),
            LinkAttribute::Mtu(mtu) => spec.mtu = mtu,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Data(InfoData::Vxlan(data)) = info {
                        is_vxlan = true;
                        for item in data {
                            match item {
                                InfoVxlan::Id(vni) => spec.vni = vni,
                                InfoVxlan::Port(port) => spec.port = port,
                                InfoVxlan::Local(ip) => spec.local = ip,
                                InfoVxlan::Link(index) => spec.parent = index,
                                InfoVxlan::Learning(on) => spec.learning = on,
                                _ => {}
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    is_vxlan.then_some(VxlanLink {
        index: message.header.index,
        up: message.header.flags.contains(LinkFlags::Up),
        spec,
    })
}

fn fdb_of(message: &NeighbourMessage) -> Option<FdbEntry> {
    let mut mac = None;
    let mut dst = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => dst = Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => dst = Some(IpAddr::V6(*v6)),
            // Bridge-family entries: the kernel's address of the remote, by its length.
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                dst = match bytes.len() {
                    4 => <[u8; 4]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(bytes.as_slice()).ok().map(IpAddr::from),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    Some(FdbEntry { mac: mac?, dst: dst? })
}

impl Netlink {
    /// The VXLAN device called `name`; `None` when there is none, or it is not VXLAN.
    pub fn vxlan(&self, name: &str) -> Result<Option<VxlanLink>> {
        validate_ifname(name)?;
        let request = self.handle.link().get().match_name(name).execute();
        let found = absent_as_none(self.exec(|| format!("get link {name}"), request.try_collect::<Vec<_>>()))?;
        Ok(found.and_then(|messages| messages.into_iter().next()).and_then(vxlan_of))
    }

    /// Create the VXLAN device `spec` and set it up (two round trips). The name taken is
    /// `EEXIST`.
    pub fn create_vxlan(&self, spec: &VxlanSpec) -> Result<u32> {
        validate_ifname(&spec.name)?;
        let message = LinkVxlan::new(&spec.name, spec.vni)
            .port(spec.port)
            .local(spec.local)
            .dev(spec.parent)
            .learning(spec.learning)
            .address(spec.mac.to_vec())
            .mtu(spec.mtu)
            .build();
        let request = self.handle.link().add(message).execute();
        self.exec(|| format!("create vxlan {} vni {} port {}", spec.name, spec.vni, spec.port), request)?;
        let index = self
            .link_by_name(&spec.name)?
            .ok_or_else(|| crate::Error::check(format!("vxlan {} is gone right after its creation", spec.name)))?
            .index;
        self.set_up(index)?;
        Ok(index)
    }

    /// Set the MTU of link `index`.
    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let request = self.handle.link().set(LinkUnspec::new_with_index(index).mtu(mtu).build()).execute();
        self.exec(|| format!("set link #{index} mtu {mtu}"), request)
    }

    /// The FDB entries with a remote address of link `index` (what `bridge fdb show dev`
    /// lists with `dst`).
    pub fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>> {
        let request = self.handle.neighbours().get().set_address_family(AddressFamily::Bridge).execute();
        let messages = self.exec(|| format!("list fdb of link #{index}"), request.try_collect::<Vec<_>>())?;
        Ok(messages.iter().filter(|m| m.header.ifindex == index).filter_map(fdb_of).collect())
    }

    /// Add (or replace) the permanent entry `entry` on link `index`.
    pub fn add_fdb(&self, index: u32, entry: &FdbEntry) -> Result<()> {
        let request = self
            .handle
            .neighbours()
            .add_bridge(index, &entry.mac)
            .destination(entry.dst)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute();
        self.exec(|| format!("add {entry} dev #{index}"), request)
    }

    /// Delete the entry `entry` of link `index`; `false` when it was not there.
    pub fn delete_fdb(&self, index: u32, entry: &FdbEntry) -> Result<bool> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Bridge;
        message.header.ifindex = index;
        message.header.flags = NeighbourFlags::Own;
        message.attributes.push(NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()));
        message.attributes.push(NeighbourAttribute::Destination(match entry.dst {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        let request = self.handle.neighbours().del(message).execute();
        Ok(absent_as_none(self.exec(|| format!("delete {entry} dev #{index}"), request))?.is_some())
    }
}
