//! The node record: one host running calico-node, with its addresses, AS number and tunnel
//! endpoints.
//!
//! As in Calico's v1 etcd layout, a node is not one key but several, each holding one value
//! as plain text (not JSON), so that tools reading Calico's keys (confd, etcdctl scripts) read
//! ours:
//!
//! | key | value |
//! |---|---|
//! | `/calico/v1/host/<node>/metadata` | `{}`: the node exists |
//! | `/calico/v1/host/<node>/bird_ip` | its IPv4 address, `10.0.0.1` (Felix's host IP) |
//! | `/calico/bgp/v1/host/<node>/ip_addr_v4` | its IPv4 address, `10.0.0.1` |
//! | `/calico/bgp/v1/host/<node>/network_v4` | the subnet of that address, `10.0.0.0/24` |
//! | `/calico/bgp/v1/host/<node>/ip_addr_v6`, `network_v6` | the same for IPv6 |
//! | `/calico/bgp/v1/host/<node>/as_num` | its AS number, `64512` |
//! | `/calico/v1/host/<node>/config/IpInIpTunnelAddr` | its IPIP tunnel address (tunl0) |
//! | `/calico/v1/host/<node>/config/IPv4VXLANTunnelAddr` | its VXLAN tunnel address |
//! | `/calico/v1/host/<node>/config/VXLANTunnelMACAddr` | the MAC of its VXLAN device |
//!
//! A field the node does not have has no key. [`Node::entries`] gives the keys and values of
//! a record, [`keys_of`] every key a record of that node may have (so a writer deletes the
//! ones it no longer has), [`parse_key`] tells which node and field a key belongs to, and
//! [`Node::set`] applies one key's value (or its deletion), so that a watcher keeps its nodes
//! up to date one event at a time.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::{keys, Error};

/// Where the per-host keys of Felix and calico-cni live (node metadata, host config, workload
/// endpoints).
pub const HOST_PREFIX: &str = keys::ENDPOINT_HOST_PREFIX;
/// Where the per-host BGP keys live.
pub const BGP_HOST_PREFIX: &str = keys::BGP_HOST_PREFIX;

/// One key of a node record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// `/calico/v1/host/<node>/metadata`
    Metadata,
    /// `/calico/v1/host/<node>/bird_ip`
    BirdIp,
    /// `/calico/bgp/v1/host/<node>/ip_addr_v4`
    Ipv4Addr,
    /// `/calico/bgp/v1/host/<node>/network_v4`
    Ipv4Network,
    /// `/calico/bgp/v1/host/<node>/ip_addr_v6`
    Ipv6Addr,
    /// `/calico/bgp/v1/host/<node>/network_v6`
    Ipv6Network,
    /// `/calico/bgp/v1/host/<node>/as_num`
    AsNumber,
    /// `/calico/v1/host/<node>/config/IpInIpTunnelAddr`
    IpipTunnelAddr,
    /// `/calico/v1/host/<node>/config/IPv4VXLANTunnelAddr`
    VxlanTunnelAddr,
    /// `/calico/v1/host/<node>/config/VXLANTunnelMACAddr`
    VxlanTunnelMac,
}

impl Field {
    /// Every field, in the order [`keys_of`] lists them.
    pub const ALL: [Field; 10] = [
        Field::Metadata,
        Field::BirdIp,
        Field::Ipv4Addr,
        Field::Ipv4Network,
        Field::Ipv6Addr,
        Field::Ipv6Network,
        Field::AsNumber,
        Field::IpipTunnelAddr,
        Field::VxlanTunnelAddr,
        Field::VxlanTunnelMac,
    ];

    /// The key of this field for node `name` (built by [`keys`]).
    pub fn key(self, name: &str) -> String {
        match self.place() {
            (BGP_HOST_PREFIX, field) => keys::node_bgp_key(name, field),
            (_, field) => keys::node_host_key(name, field),
        }
    }

    /// The prefix the key lives under and the part after `<node>/`.
    fn place(self) -> (&'static str, &'static str) {
        match self {
            Field::Metadata => (HOST_PREFIX, "metadata"),
            Field::BirdIp => (HOST_PREFIX, "bird_ip"),
            Field::Ipv4Addr => (BGP_HOST_PREFIX, "ip_addr_v4"),
            Field::Ipv4Network => (BGP_HOST_PREFIX, "network_v4"),
            Field::Ipv6Addr => (BGP_HOST_PREFIX, "ip_addr_v6"),
            Field::Ipv6Network => (BGP_HOST_PREFIX, "network_v6"),
            Field::AsNumber => (BGP_HOST_PREFIX, "as_num"),
            Field::IpipTunnelAddr => (HOST_PREFIX, "config/IpInIpTunnelAddr"),
            Field::VxlanTunnelAddr => (HOST_PREFIX, "config/IPv4VXLANTunnelAddr"),
            Field::VxlanTunnelMac => (HOST_PREFIX, "config/VXLANTunnelMACAddr"),
        }
    }
}

/// A MAC address, written `66:01:02:03:04:05` (lowercase) as Calico writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl FromStr for Mac {
    type Err = ();

    /// Six octets of exactly two hex digits, separated by `:`.
    fn from_str(s: &str) -> Result<Mac, ()> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut mac {
            let part = parts.next().ok_or(())?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| ())?;
        }
        if parts.next().is_some() {
            return Err(());
        }
        Ok(Mac(mac))
    }
}

/// A node record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// The node name (the `<node>` of every key).
    pub name: String,
    /// True when the metadata key exists (a record written by calico-node always has it).
    pub registered: bool,
    /// The IPv4 address with the prefix of its subnet, e.g. `10.0.0.1/24`.
    pub ipv4: Option<Ipv4Network>,
    /// The IPv6 address with the prefix of its subnet.
    pub ipv6: Option<Ipv6Network>,
    /// The BGP AS number, when the node has its own.
    pub as_number: Option<u32>,
    /// The address of its `tunl0` (IPIP).
    pub ipip_tunnel_addr: Option<Ipv4Addr>,
    /// The address of its `vxlan.calico`.
    pub vxlan_tunnel_addr: Option<Ipv4Addr>,
    /// The MAC of its `vxlan.calico`.
    pub vxlan_tunnel_mac: Option<Mac>,
}

/// Refuse names that would make a key ambiguous: empty, `/`, whitespace or control
/// characters, `.`/`..`, longer than a DNS name.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 253 {
        Some("it is longer than 253 bytes")
    } else if name == "." || name == ".." {
        Some("it is reserved")
    } else if name.chars().any(|c| c == '/' || c.is_whitespace() || c.is_control()) {
        Some("it contains '/', whitespace or a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName { name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

/// Every key a record of node `name` may have, present or not.
pub fn keys_of(name: &str) -> Vec<String> {
    Field::ALL.iter().map(|f| f.key(name)).collect()
}

/// The node and field of `key`, or `None` when it is not a node key (e.g. a workload
/// endpoint under `/calico/v1/host/<node>/workload/`).
pub fn parse_key(key: &str) -> Option<(&str, Field)> {
    let (prefix, rest) = if let Some(rest) = key.strip_prefix(BGP_HOST_PREFIX) {
        (BGP_HOST_PREFIX, rest)
    } else {
        (HOST_PREFIX, key.strip_prefix(HOST_PREFIX)?)
    };
    let (name, tail) = rest.split_once('/')?;
    if name.is_empty() {
        return None;
    }
    let field = Field::ALL.into_iter().find(|f| f.place() == (prefix, tail))?;
    Some((name, field))
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).trim().to_owned()
}

fn parse<T: FromStr>(key: &str, value: &[u8], expected: &'static str) -> Result<T, Error> {
    let s = text(value);
    s.parse().map_err(|_| Error::Invalid { key: key.to_owned(), reason: format!("{s:?} is not {expected}") })
}

impl Node {
    /// A record with only a name.
    pub fn new(name: impl Into<String>) -> Node {
        Node { name: name.into(), registered: true, ..Node::default() }
    }

    /// The IPv4 address, without its prefix.
    pub fn ipv4_addr(&self) -> Option<Ipv4Addr> {
        self.ipv4.map(|n| n.ip())
    }

    /// The IPv6 address, without its prefix.
    pub fn ipv6_addr(&self) -> Option<Ipv6Addr> {
        self.ipv6.map(|n| n.ip())
    }

    /// The node's addresses, IPv4 first.
    pub fn addrs(&self) -> Vec<IpAddr> {
        let v4 = self.ipv4_addr().map(IpAddr::V4);
        let v6 = self.ipv6_addr().map(IpAddr::V6);
        v4.into_iter().chain(v6).collect()
    }

    /// The node's address of `ip`'s family, with its prefix.
    pub fn network_of_family(&self, v4: bool) -> Option<IpNetwork> {
        if v4 {
            self.ipv4.map(IpNetwork::V4)
        } else {
            self.ipv6.map(IpNetwork::V6)
        }
    }

    /// The keys and values of this record (only the fields it has), in [`Field::ALL`] order.
    pub fn entries(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut put = |field: Field, value: String| out.push((field.key(&self.name), value.into_bytes()));
        if self.registered {
            put(Field::Metadata, "{}".into());
        }
        if let Some(net) = self.ipv4 {
            put(Field::BirdIp, net.ip().to_string());
            put(Field::Ipv4Addr, net.ip().to_string());
            put(Field::Ipv4Network, subnet(IpNetwork::V4(net)).to_string());
        }
        if let Some(net) = self.ipv6 {
            put(Field::Ipv6Addr, net.ip().to_string());
            put(Field::Ipv6Network, subnet(IpNetwork::V6(net)).to_string());
        }
        if let Some(asn) = self.as_number {
            put(Field::AsNumber, asn.to_string());
        }
        if let Some(ip) = self.ipip_tunnel_addr {
            put(Field::IpipTunnelAddr, ip.to_string());
        }
        if let Some(ip) = self.vxlan_tunnel_addr {
            put(Field::VxlanTunnelAddr, ip.to_string());
        }
        if let Some(mac) = self.vxlan_tunnel_mac {
            put(Field::VxlanTunnelMac, mac.to_string());
        }
        out
    }

    /// Apply one key of the record: `Some(value)` for a put, `None` for a delete. The address
    /// and its network are two keys, applied address first ([`Field`] order, as
    /// [`Node::entries`] writes them and [`decode_all`] sorts them): an address takes the
    /// prefix the record had (a host prefix at first), a network then sets the prefix of the
    /// address, and a network without an address is ignored.
    pub fn set(&mut self, key: &str, field: Field, value: Option<&[u8]>) -> Result<(), Error> {
        match (field, value) {
            (Field::Metadata, v) => self.registered = v.is_some(),
            // Felix's copy of the IPv4 address: ip_addr_v4 is the one read.
            (Field::BirdIp, _) => {}
            (Field::Ipv4Addr, None) => self.ipv4 = None,
            (Field::Ipv4Addr, Some(v)) => {
                let ip: Ipv4Addr = parse(key, v, "an IPv4 address")?;
                let prefix = self.ipv4.map_or(32, |n| n.prefix());
                self.ipv4 = Ipv4Network::new(ip, prefix).ok();
            }
            (Field::Ipv4Network, None) => {}
            (Field::Ipv4Network, Some(v)) => {
                let net: Ipv4Network = parse(key, v, "an IPv4 network")?;
                if let Some(ip) = self.ipv4.map(|n| n.ip()) {
                    self.ipv4 = Ipv4Network::new(ip, net.prefix()).ok();
                }
            }
            (Field::Ipv6Addr, None) => self.ipv6 = None,
            (Field::Ipv6Addr, Some(v)) => {
                let ip: Ipv6Addr = parse(key, v, "an IPv6 address")?;
                let prefix = self.ipv6.map_or(128, |n| n.prefix());
                self.ipv6 = Ipv6Network::new(ip, prefix).ok();
            }
            (Field::Ipv6Network, None) => {}
            (Field::Ipv6Network, Some(v)) => {
                let net: Ipv6Network = parse(key, v, "an IPv6 network")?;
                if let Some(ip) = self.ipv6.map(|n| n.ip()) {
                    self.ipv6 = Ipv6Network::new(ip, net.prefix()).ok();
                }
            }
            (Field::AsNumber, v) => self.as_number = v.map(|v| parse(key, v, "an AS number")).transpose()?,
            (Field::IpipTunnelAddr, v) => {
                self.ipip_tunnel_addr = v.map(|v| parse(key, v, "an IPv4 address")).transpose()?
            }
            (Field::VxlanTunnelAddr, v) => {
                self.vxlan_tunnel_addr = v.map(|v| parse(key, v, "an IPv4 address")).transpose()?
            }
            (Field::VxlanTunnelMac, v) => {
                self.vxlan_tunnel_mac = v.map(|v| parse(key, v, "a MAC address")).transpose()?
            }
        }
        Ok(())
    }

    /// True when nothing of the record is left (every key deleted).
    pub fn is_empty(&self) -> bool {
        *self == Node { name: self.name.clone(), ..Node::default() }
    }
}

/// The network `net` lies in: `10.0.0.1/24` → `10.0.0.0/24`.
pub fn subnet(net: IpNetwork) -> IpNetwork {
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(net)
}

/// Build the records of every node from keys and values (a listing of [`HOST_PREFIX`] and
/// [`BGP_HOST_PREFIX`]; other keys are skipped). Addresses are applied before networks, so
/// key order does not matter. A key that cannot be read is returned beside the records,
/// which keep their other fields.
pub fn decode_all<'a>(kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> (BTreeMap<String, Node>, Vec<Error>) {
    let mut fields: Vec<(&str, Field, &str, &[u8])> = kvs
        .into_iter()
        .filter_map(|(key, value)| parse_key(key).map(|(name, field)| (name, field, key, value)))
        .collect();
    fields.sort_by_key(|(name, field, _, _)| (*name, *field));
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, field, key, value) in fields {
        let node = nodes.entry(name.to_owned()).or_insert_with(|| Node { name: name.to_owned(), ..Node::default() });
        if let Err(e) = node.set(key, field, Some(value)) {
            errors.push(e);
        }
    }
    (nodes, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Node {
        Node {
            name: "node-1".into(),
            registered: true,
            ipv4: Some("10.0.0.1/24".parse().unwrap()),
            ipv6: Some("fd00::1/64".parse().unwrap()),
            as_number: Some(64512),
            ipip_tunnel_addr: Some("192.168.0.1".parse().unwrap()),
            vxlan_tunnel_addr: Some("192.168.0.2".parse().unwrap()),
            vxlan_tunnel_mac: Some(Mac([0x66, 1, 2, 3, 4, 0xab])),
        }
    }

    #[test]
    fn keys_and_values_follow_calicos_v1_layout() {
        let entries = full().entries();
        let text: Vec<(String, String)> =
            entries.iter().map(|(k, v)| (k.clone(), String::from_utf8(v.clone()).unwrap())).collect();
        let expected = [
            ("/calico/v1/host/node-1/metadata", "{}"),
            ("/calico/v1/host/node-1/bird_ip", "10.0.0.1"),
            ("/calico/bgp/v1/host/node-1/ip_addr_v4", "10.0.0.1"),
            ("/calico/bgp/v1/host/node-1/network_v4", "10.0.0.0/24"),
            ("/calico/bgp/v1/host/node-1/ip_addr_v6", "fd00::1"),
            ("/calico/bgp/v1/host/node-1/network_v6", "fd00::/64"),
            ("/calico/bgp/v1/host/node-1/as_num", "64512"),
            ("/calico/v1/host/node-1/config/IpInIpTunnelAddr", "192.168.0.1"),
            ("/calico/v1/host/node-1/config/IPv4VXLANTunnelAddr", "192.168.0.2"),
            ("/calico/v1/host/node-1/config/VXLANTunnelMACAddr", "66:01:02:03:04:ab"),
        ];
        let expected: Vec<(String, String)> = expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(text, expected);
        assert_eq!(keys_of("node-1"), expected.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn a_record_round_trips_in_any_key_order() {
        let node = full();
        let mut entries = node.entries();
        entries.reverse();
        let (nodes, errors) = decode_all(entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes["node-1"], node);
    }

    #[test]
    fn absent_fields_have_no_key() {
        let node = Node { ipv4: Some("10.0.0.1/32".parse().unwrap()), ..Node::new("n") };
        let keys: Vec<String> = node.entries().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "/calico/v1/host/n/metadata",
                "/calico/v1/host/n/bird_ip",
                "/calico/bgp/v1/host/n/ip_addr_v4",
                "/calico/bgp/v1/host/n/network_v4"
            ]
        );
    }

    #[test]
    fn parse_key_ignores_other_host_keys() {
        assert_eq!(parse_key("/calico/bgp/v1/host/a/ip_addr_v4"), Some(("a", Field::Ipv4Addr)));
        assert_eq!(parse_key("/calico/v1/host/a/config/VXLANTunnelMACAddr"), Some(("a", Field::VxlanTunnelMac)));
        assert_eq!(parse_key("/calico/v1/host/a/metadata"), Some(("a", Field::Metadata)));
        assert_eq!(parse_key("/calico/v1/host/a/workload/cni/x/endpoint/eth0"), None);
        assert_eq!(parse_key("/calico/v1/host/a/ip_addr_v4"), None, "BGP field under the Felix prefix");
        assert_eq!(parse_key("/calico/bgp/v1/host//ip_addr_v4"), None);
        assert_eq!(parse_key("/calico/v1/ipam/v4/pool/10.0.0.0-16"), None);
    }

    #[test]
    fn events_update_a_record_one_key_at_a_time() {
        let mut node = Node { name: "a".into(), ..Node::default() };
        let key = Field::Ipv4Addr.key("a");
        node.set(&key, Field::Ipv4Addr, Some(b"10.1.2.3")).unwrap();
        assert_eq!(node.ipv4, Some("10.1.2.3/32".parse().unwrap()));
        node.set(&Field::Ipv4Network.key("a"), Field::Ipv4Network, Some(b"10.1.2.0/24")).unwrap();
        assert_eq!(node.ipv4, Some("10.1.2.3/24".parse().unwrap()));
        // A new address keeps the prefix.
        node.set(&key, Field::Ipv4Addr, Some(b"10.1.2.9\n")).unwrap();
        assert_eq!(node.ipv4, Some("10.1.2.9/24".parse().unwrap()));
        node.set(&key, Field::Ipv4Addr, None).unwrap();
        assert_eq!(node.ipv4, None);
        assert!(node.is_empty());
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut node = Node::new("a");
        let key = Field::AsNumber.key("a");
        let err = node.set(&key, Field::AsNumber, Some(b"lots")).unwrap_err();
        assert!(matches!(&err, Error::Invalid { key: k, .. } if *k == key), "{err}");
        assert!(err.to_string().contains("\"lots\" is not an AS number"), "{err}");
        let err = node.set("k", Field::VxlanTunnelMac, Some(b"66:1:2:3:4:5")).unwrap_err();
        assert!(err.to_string().contains("is not a MAC address"), "{err}");
        let (nodes, errors) = decode_all([
            ("/calico/bgp/v1/host/b/ip_addr_v4", b"10.0.0.7".as_slice()),
            ("/calico/bgp/v1/host/b/as_num", b"x".as_slice()),
        ]);
        assert_eq!(errors.len(), 1);
        assert_eq!(nodes["b"].ipv4_addr(), Some("10.0.0.7".parse().unwrap()), "other fields are kept");
    }

    #[test]
    fn names_that_break_keys_are_refused() {
        for good in ["node-1", "host.example.com", "a"] {
            validate_name(good).unwrap();
        }
        for bad in ["", "a/b", "a b", ".", "..", "a\n"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn macs_are_strict() {
        assert_eq!("66:0a:0B:00:ff:10".parse::<Mac>(), Ok(Mac([0x66, 0x0a, 0x0b, 0, 0xff, 0x10])));
        for bad in ["66:0a:0b:00:ff", "66:0a:0b:00:ff:10:11", "6:0a:0b:00:ff:10", "66-0a-0b-00-ff-10", ""] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
