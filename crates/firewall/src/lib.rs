//! Calico's firewall: one nftables table of our own, `inet calico`, built from sets and maps
//! so that its rules never change. Attaching a container adds elements; nothing here grows
//! with the number of containers but the elements themselves.
//!
//! The table ([`nft`] lists every object):
//! - `all-pools4`/`all-pools6` and `masq-pools4`/`masq-pools6`: interval sets of pool CIDRs.
//!   Postrouting masquerades (fully random) what comes from a masq pool and goes outside
//!   every pool.
//! - `ports4`/`ports6` (`proto . port → addr . port`) and `hostports4`/`hostports6`
//!   (`hostIP . proto . port → addr . port`): DNAT in prerouting and output for destinations
//!   that are the host's own (`fib daddr type local`), the hostIP maps first.
//! - `hairpin4`/`hairpin6` (`addr . addr`): a mapped container reaching itself through the
//!   host is masqueraded, so its reply comes back through the host.
//! - Host-originated traffic leaving by `tunl0` or `vxlan.calico` with a source that is not
//!   the tunnel's is masqueraded to the tunnel address (one rule per device, as Felix has).
//!
//! Each port mapping and hairpin element carries its owner (the attachment) as the element's
//! comment, so a conflict names the holder and a removal removes only the owner's.
//!
//! [`Firewall`] is the one trait; [`nft::Nftables`] speaks netlink from this process (never
//! an `nft` or `iptables` exec), [`fake::Recording`] records calls for unit tests.

pub mod fake;
pub mod keeper;
mod netlink;
pub mod nft;
pub mod policy;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnetwork::IpNetwork;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open a netfilter netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("nftables {op} failed")]
    Kernel {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("host port {mapping} is already mapped, for {holder}")]
    PortTaken { mapping: String, holder: String },
    #[error("unexpected answer from nftables: {0}")]
    Malformed(String),
}

impl Error {
    pub(crate) fn kernel(op: &'static str, errno: i32) -> Error {
        Error::Kernel { op, source: std::io::Error::from_raw_os_error(errno) }
    }

    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            _ => None,
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    pub fn from_number(n: u8) -> Option<Proto> {
        [Proto::Tcp, Proto::Udp, Proto::Sctp].into_iter().find(|p| p.number() == n)
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// The two pool sets of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PoolSet {
    /// Every pool: traffic to these is never masqueraded.
    All,
    /// The nat-outgoing pools: traffic from these to outside `All` is masqueraded.
    Masq,
}

/// One host port forwarded to a container.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortMap {
    pub proto: Proto,
    /// Only traffic to this host address; `None`: to any of the host's addresses.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub target: SocketAddr,
}

impl fmt::Display for PortMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(ip @ IpAddr::V6(_)) => write!(f, "[{ip}]:{}/{}", self.host_port, self.proto.name()),
            Some(ip) => write!(f, "{ip}:{}/{}", self.host_port, self.proto.name()),
            None => write!(f, "{}/{} ({})", self.host_port, self.proto.name(), family_name(self.target.ip())),
        }
    }
}

fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// One element of our table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Element {
    /// A pool CIDR in one of the pool sets of its family.
    Pool { set: PoolSet, cidr: IpNetwork },
    /// A port mapping, owned by an attachment (its comment).
    Port { map: PortMap, owner: String },
    /// A mapped container's address, masqueraded when it reaches itself through the host.
    Hairpin { addr: IpAddr, owner: String },
}

impl Element {
    pub fn owner(&self) -> Option<&str> {
        match self {
            Element::Pool { .. } => None,
            Element::Port { owner, .. } | Element::Hairpin { owner, .. } => Some(owner),
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Pool { set: PoolSet::All, cidr } => write!(f, "pool {cidr}"),
            Element::Pool { set: PoolSet::Masq, cidr } => write!(f, "nat-outgoing pool {cidr}"),
            Element::Port { map, owner } => write!(f, "port {map} -> {} for {owner}", map.target),
            Element::Hairpin { addr, owner } => write!(f, "hairpin {addr} for {owner}"),
        }
    }
}

/// The owner written into each element: the attachment, network first (GC's scope).
pub fn owner(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network}/{container_id}/{ifname}")
}

/// The firewall elements of an endpoint's mappings: one map element each, and one hairpin
/// element per mapped address.
pub fn port_elements(mappings: &[model::endpoint::PortMapping], owner: &str) -> Vec<Element> {
    let mut out: Vec<Element> = mappings
        .iter()
        .filter_map(|m| {
            Some(Element::Port {
                map: PortMap {
                    proto: Proto::parse(&m.protocol)?,
                    host_ip: m.host_ip,
                    host_port: m.host_port,
                    target: SocketAddr::new(m.container_ip, m.container_port),
                },
                owner: owner.into(),
            })
        })
        .collect();
    let mut addrs: Vec<IpAddr> = mappings.iter().map(|m| m.container_ip).collect();
    addrs.sort();
    addrs.dedup();
    out.extend(addrs.into_iter().map(|addr| Element::Hairpin { addr, owner: owner.into() }));
    out
}

/// The firewall as calico-cni and calico-node use it. Every call is at most one or two
/// netlink round trips, whatever the number of elements already present.
pub trait Firewall {
    /// Creates the table (chains, rules, sets, maps) unless it exists, and replaces one that
    /// another version built (its comment says which); whether it made the table. `add` does
    /// this on its own when needed; the agent's resync calls it, and after it made the table
    /// puts back the pool sets and this host's port mappings.
    fn ensure_table(&self) -> Result<bool>;

    /// Which of `elements` are not in the table as given (absent, or, for an owned element,
    /// held by another owner or pointing elsewhere). All of them when there is no table.
    /// One round trip.
    fn missing(&self, elements: &[Element]) -> Result<Vec<Element>>;

    /// Adds `elements` in one transaction, creating the table first if there is none. A port
    /// mapping (or hairpin) whose key another owner holds fails the whole call with
    /// [`Error::PortTaken`] naming the holder, adding nothing. Elements the same owner holds
    /// already are replaced.
    fn add(&self, elements: &[Element]) -> Result<()>;

    /// Removes `elements`, in one transaction: pools as given, owned elements only where
    /// their owner still holds them. Absent ones (or no table) are no error.
    fn remove(&self, elements: &[Element]) -> Result<()>;

    /// Every element in our table (empty when there is none).
    fn list(&self) -> Result<Vec<Element>>;

    // --- Security profiles ([`policy`]: the table `inet calico-policy`). The defaults do
    // nothing, for firewalls that do not enforce (the unit tests' fakes). ---

    /// Programs one endpoint in one transaction: its map entries and chains, its addresses in
    /// the sets of its profiles' tags, and the chains of those of `profiles` (its profiles, in
    /// order) that are not there yet. Done again, it replaces what an earlier one left.
    fn attach_policy(&self, ep: &policy::Endpoint, profiles: &[model::profile::Profile]) -> Result<()> {
        let _ = (ep, profiles);
        Ok(())
    }

    /// Removes what [`Firewall::attach_policy`] programmed for the veth and addresses, in one
    /// transaction; what is absent is no error.
    fn detach_policy(&self, veth: &str, addrs: &[IpAddr]) -> Result<()> {
        let _ = (veth, addrs);
        Ok(())
    }

    /// CHECK's look at an endpoint's policy: the first of its objects (chains, map entries)
    /// that is missing, `None` when all are there.
    fn check_policy(&self, veth: &str) -> Result<Option<String>> {
        let _ = veth;
        Ok(None)
    }

    /// Removes `addrs` from every tag set, in one transaction (an address an endpoint gave
    /// up); what is absent is no error.
    fn forget_addresses(&self, addrs: &[IpAddr]) -> Result<()> {
        let _ = addrs;
        Ok(())
    }

    /// Brings the policy table from `old` (what it was last given) to `new` in one
    /// transaction of element and endpoint-chain updates, when they differ only in their
    /// endpoints and tag members; `false`, with nothing done, otherwise (then
    /// [`Firewall::replace_policy`]).
    fn update_policy(&self, old: &policy::State, new: &policy::State) -> Result<bool> {
        let _ = (old, new);
        Ok(false)
    }

    /// Replaces the whole policy table with `state`, in one transaction.
    fn replace_policy(&self, state: &policy::State) -> Result<()> {
        let _ = state;
        Ok(())
    }
}
