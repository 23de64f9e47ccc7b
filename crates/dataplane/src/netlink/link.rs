//! Link requests: look up, create veth pairs, set up/down, delete.

use std::os::fd::{AsFd, AsRawFd};

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};

use super::{absent_as_none, validate_ifname, Netlink};
use crate::{error::Result, naming::HOST_VETH_MAC, netns::NetNs};

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index (unique within its namespace).
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, for Ethernet-like links.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Link kind (`veth`, `vxlan`…) for virtual links.
    pub kind: Option<String>,
}

impl Link {
    fn from_message(message: LinkMessage) -> Link {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            up: message.header.flags.contains(LinkFlags::Up),
            kind: None,
        };
        for attribute in message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Address(bytes) => link.mac = <[u8; 6]>::try_from(bytes).ok(),
                LinkAttribute::Mtu(mtu) => link.mtu = mtu,
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.into_iter().find_map(|info| match info {
                        LinkInfo::Kind(kind) => Some(kind.to_string()),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        link
    }
}

/// One end of a veth pair to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethEnd {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// Fixed hardware address; `None` lets the kernel pick a random one.
    pub mac: Option<[u8; 6]>,
    /// MTU; `None` keeps the kernel default (1500), except that a peer
    /// without one gets the host end's.
    pub mtu: Option<u32>,
}

impl VethEnd {
    /// A Calico host end: fixed MAC [`HOST_VETH_MAC`].
    pub fn host(name: impl Into<String>, mtu: Option<u32>) -> VethEnd {
        VethEnd { name: name.into(), mac: Some(HOST_VETH_MAC), mtu }
    }

    /// A container end: kernel-chosen MAC.
    pub fn container(name: impl Into<String>, mtu: Option<u32>) -> VethEnd {
        VethEnd { name: name.into(), mac: None, mtu }
    }

    fn apply<T>(&self, mut builder: LinkMessageBuilder<T>) -> LinkMessageBuilder<T> {
        if let Some(mac) = self.mac {
            builder = builder.address(mac.to_vec());
        }
        if let Some(mtu) = self.mtu {
            builder = builder.mtu(mtu);
        }
        builder
    }
}

impl Netlink {
    /// The link called `name`, or `None` if there is none.
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        validate_ifname(name)?;
        let request = self.handle.link().get().match_name(name).execute();
        let found = absent_as_none(self.exec(|| format!("get link {name}"), request.try_collect::<Vec<_>>()))?;
        Ok(found.and_then(|messages| messages.into_iter().next().map(Link::from_message)))
    }

    /// The link with index `index`, or `None` if there is none.
    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let request = self.handle.link().get().match_index(index).execute();
        let found = absent_as_none(self.exec(|| format!("get link #{index}"), request.try_collect::<Vec<_>>()))?;
        Ok(found.and_then(|messages| messages.into_iter().next().map(Link::from_message)))
    }

    /// All links of this namespace.
    pub fn links(&self) -> Result<Vec<Link>> {
        let request = self.handle.link().get().execute();
        let messages = self.exec(|| "list links".into(), request.try_collect::<Vec<_>>())?;
        Ok(messages.into_iter().map(Link::from_message).collect())
    }

    /// Creates a veth pair in one request: `host` in this client's namespace
    /// and `peer` directly inside `peer_ns` (no create-then-move, which costs
    /// a second request and a rename round in the kernel).
    ///
    /// The kernel creates both ends or neither: if either name is taken the
    /// error is `EEXIST` ([`crate::Error::is_exists`]) and nothing is left.
    /// Both ends start down. A peer without an MTU gets the host end's.
    pub fn create_veth(&self, host: &VethEnd, peer: &VethEnd, peer_ns: &NetNs) -> Result<()> {
        validate_ifname(&host.name)?;
        validate_ifname(&peer.name)?;
        let peer_end = VethEnd { mtu: peer.mtu.or(host.mtu), ..peer.clone() };
        let peer_message =
            peer_end.apply(LinkUnspec::new_with_name(&peer.name)).setns_by_fd(peer_ns.as_fd().as_raw_fd()).build();
        let message = host
            .apply(LinkVeth::new(&host.name, &peer.name))
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_message)))
            .build();
        let request = self.handle.link().add(message).execute();
        self.exec(
            || format!("create veth {} with peer {} in {}", host.name, peer.name, peer_ns.path().display()),
            request,
        )
    }

    /// Sets link `index` administratively up.
    pub fn set_up(&self, index: u32) -> Result<()> {
        let request = self.handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute();
        self.exec(|| format!("set link #{index} up"), request)
    }

    /// Sets link `index` administratively down.
    pub fn set_down(&self, index: u32) -> Result<()> {
        let request = self.handle.link().set(LinkUnspec::new_with_index(index).down().build()).execute();
        self.exec(|| format!("set link #{index} down"), request)
    }

    /// Deletes the link called `name` (for a veth, both ends and all their
    /// addresses and routes go with it). Returns `false` if it did not exist.
    pub fn delete_link(&self, name: &str) -> Result<bool> {
        validate_ifname(name)?;
        let request = self.handle.link().del_with_message(LinkUnspec::new_with_name(name).build()).execute();
        Ok(absent_as_none(self.exec(|| format!("delete link {name}"), request))?.is_some())
    }
}
