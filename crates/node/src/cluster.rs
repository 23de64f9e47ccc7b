//! The agent's view of the datastore: pools, block affinities, nodes and workload endpoints,
//! kept up to date one key at a time, with the indexes that tell which routes a change can
//! affect (so a change costs the routes it touches, never a re-list).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use model::keys;
use model::node::{self, Node};
use model::pool::Pool;
use serde::Deserialize;

use crate::Result;

/// Where the affinities live: `/calico/ipam/v2/host/<node>/ipv4/block/<cidr>`.
const AFFINITY_PREFIX: &str = keys::IPAM_HOST_PREFIX;

/// Every prefix the agent lists and watches.
pub fn prefixes() -> Vec<String> {
    vec![
        keys::pool_prefix(4),
        keys::pool_prefix(6),
        AFFINITY_PREFIX.to_owned(),
        node::BGP_HOST_PREFIX.to_owned(),
        node::HOST_PREFIX.to_owned(),
        keys::BGP_GLOBAL_PREFIX.to_owned(),
    ]
}

/// What a workload endpoint record tells the agent (calico-cni writes more).
#[derive(Deserialize)]
struct EndpointRecord {
    node: String,
    #[serde(default)]
    ips: Vec<String>,
}

/// The routes a change may have changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Destinations to compute again.
    pub dsts: BTreeSet<IpNetwork>,
    /// Every route (this node's own record changed).
    pub all: bool,
    /// A pool changed (tunnels may have to be set up or removed).
    pub pools: bool,
    /// A node record changed (tunnel endpoints may have changed).
    pub nodes: bool,
}

impl Dirty {
    fn add(&mut self, dst: IpNetwork) {
        self.dsts.insert(dst);
    }

    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        !self.all && !self.pools && !self.nodes && self.dsts.is_empty()
    }
}

/// The datastore as far as routes are concerned.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// Pools by CIDR.
    pub pools: BTreeMap<IpNetwork, Pool>,
    /// Block → the nodes it is affine to (one, unless the store is inconsistent).
    pub affinities: BTreeMap<IpNetwork, BTreeSet<String>>,
    /// Node → its blocks.
    node_blocks: HashMap<String, BTreeSet<IpNetwork>>,
    /// Node records by name.
    pub nodes: BTreeMap<String, Node>,
    /// Endpoint key → (node, addresses).
    endpoints: HashMap<String, (String, Vec<IpAddr>)>,
    /// Address → the endpoints holding it.
    holders: BTreeMap<IpAddr, BTreeSet<String>>,
    /// Node → its endpoints.
    node_endpoints: HashMap<String, BTreeSet<String>>,
}

fn host_net(ip: IpAddr) -> IpNetwork {
    match ip {
        IpAddr::V4(v4) => IpNetwork::V4(Ipv4Network::from(v4)),
        IpAddr::V6(v6) => IpNetwork::V6(Ipv6Network::from(v6)),
    }
}

/// The first and last address of `net`, as the bounds of a range of networks or addresses.
fn bounds(net: &IpNetwork) -> (IpNetwork, IpNetwork) {
    match net {
        IpNetwork::V4(n) => (
            IpNetwork::V4(Ipv4Network::new(n.network(), 0).expect("prefix 0")),
            IpNetwork::V4(Ipv4Network::new(n.broadcast(), 32).expect("prefix 32")),
        ),
        IpNetwork::V6(n) => {
            let host_bits = u128::MAX.checked_shr(u32::from(n.prefix())).unwrap_or(0);
            let last = Ipv6Addr::from(u128::from(n.network()) | host_bits);
            (
                IpNetwork::V6(Ipv6Network::new(n.network(), 0).expect("prefix 0")),
                IpNetwork::V6(Ipv6Network::new(last, 128).expect("prefix 128")),
            )
        }
    }
}

/// A parsed key of one of [`prefixes`].
enum Key<'a> {
    Pool(IpNetwork),
    Affinity { node: &'a str, block: IpNetwork },
    Node { name: &'a str, field: node::Field },
    Endpoint,
    Other,
}

fn classify(key: &str) -> Key<'_> {
    if key.starts_with("/calico/v1/ipam/v4/pool/") || key.starts_with("/calico/v1/ipam/v6/pool/") {
        return keys::cidr_of_key(key).map_or(Key::Other, Key::Pool);
    }
    if let Some(rest) = key.strip_prefix(AFFINITY_PREFIX) {
        let parts: Vec<&str> = rest.split('/').collect();
        if let [node, "ipv4" | "ipv6", "block", cidr] = parts.as_slice() {
            if let Some(block) = keys::parse_cidr_segment(cidr) {
                return Key::Affinity { node, block };
            }
        }
        return Key::Other;
    }
    if let Some((name, field)) = node::parse_key(key) {
        return Key::Node { name, field };
    }
    if key.starts_with(node::HOST_PREFIX) && key.contains("/workload/") && key.contains("/endpoint/") {
        return Key::Endpoint;
    }
    Key::Other
}

impl Cluster {
    /// Apply one put (`Some(value)`) or delete (`None`) of `key`, noting in `dirty` the
    /// routes it may change. `me` is this node's name. A value that cannot be read is an
    /// error; the view then holds what it held before for that key.
    pub fn apply(&mut self, me: &str, key: &str, value: Option<&[u8]>, dirty: &mut Dirty) -> Result<()> {
        match classify(key) {
            Key::Pool(cidr) => {
                dirty.pools = true;
                match value {
                    Some(v) => {
                        let pool: Pool = model::decode(key, v)?;
                        self.pools.insert(cidr, pool);
                    }
                    None => {
                        self.pools.remove(&cidr);
                    }
                }
                self.dirty_within(&cidr, dirty);
            }
            Key::Affinity { node, block } => {
                if value.is_some() {
                    self.affinities.entry(block).or_default().insert(node.to_owned());
                    self.node_blocks.entry(node.to_owned()).or_default().insert(block);
                } else {
                    if let Some(nodes) = self.affinities.get_mut(&block) {
                        nodes.remove(node);
                        if nodes.is_empty() {
                            self.affinities.remove(&block);
                        }
                    }
                    if let Some(blocks) = self.node_blocks.get_mut(node) {
                        blocks.remove(&block);
                    }
                }
                // The block's own route, and the borrowed addresses inside it.
                dirty.add(block);
                self.dirty_within(&block, dirty);
            }
            Key::Node { name, field } => {
                let record = self
                    .nodes
                    .entry(name.to_owned())
                    .or_insert_with(|| Node { name: name.to_owned(), ..Node::default() });
                let before = record.clone();
                let outcome = record.set(key, field, value);
                if record.is_empty() {
                    self.nodes.remove(name);
                }
                outcome?;
                if self.nodes.get(name) != Some(&before) {
                    dirty.nodes = true;
                    if name == me {
                        dirty.all = true;
                    }
                    for block in self.node_blocks.get(name).into_iter().flatten() {
                        dirty.add(*block);
                    }
                    for ep in self.node_endpoints.get(name).into_iter().flatten() {
                        for ip in self.endpoints.get(ep).map(|(_, ips)| ips.as_slice()).unwrap_or_default() {
                            dirty.add(host_net(*ip));
                        }
                    }
                }
            }
            Key::Endpoint => {
                let parsed = match value {
                    Some(v) => {
                        let record: EndpointRecord = model::decode(key, v)?;
                        let ips: Vec<IpAddr> =
                            record.ips.iter().filter_map(|ip| ip.split('/').next()?.parse().ok()).collect();
                        Some((record.node, ips))
                    }
                    None => None,
                };
                self.remove_endpoint(key, dirty);
                if let Some((node, ips)) = parsed {
                    for ip in &ips {
                        self.holders.entry(*ip).or_default().insert(key.to_owned());
                        dirty.add(host_net(*ip));
                    }
                    self.node_endpoints.entry(node.clone()).or_default().insert(key.to_owned());
                    self.endpoints.insert(key.to_owned(), (node, ips));
                }
            }
            Key::Other => {}
        }
        Ok(())
    }

    fn remove_endpoint(&mut self, key: &str, dirty: &mut Dirty) {
        let Some((node, ips)) = self.endpoints.remove(key) else {
            return;
        };
        for ip in ips {
            if let Some(set) = self.holders.get_mut(&ip) {
                set.remove(key);
                if set.is_empty() {
                    self.holders.remove(&ip);
                }
            }
            dirty.add(host_net(ip));
        }
        if let Some(set) = self.node_endpoints.get_mut(&node) {
            set.remove(key);
        }
    }

    /// Every block and every endpoint address inside `net`.
    fn dirty_within(&self, net: &IpNetwork, dirty: &mut Dirty) {
        let (low, high) = bounds(net);
        for block in self.affinities.range(low..=high).map(|(b, _)| b) {
            if net.contains(block.network()) {
                dirty.add(*block);
            }
        }
        for ip in self.holders.range(low.ip()..=high.ip()).map(|(ip, _)| ip) {
            dirty.add(host_net(*ip));
        }
    }

    /// Every destination that may need a route: each block, each endpoint address.
    pub fn all_dsts(&self) -> BTreeSet<IpNetwork> {
        let mut dsts: BTreeSet<IpNetwork> = self.affinities.keys().copied().collect();
        dsts.extend(self.holders.keys().map(|ip| host_net(*ip)));
        dsts
    }

    /// The pool holding `ip`.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        self.pools.values().find(|p| p.cidr.contains(ip))
    }

    /// The node a block is affine to (the first by name if the store holds several).
    pub fn owner(&self, block: &IpNetwork) -> Option<&str> {
        self.affinities.get(block).and_then(|nodes| nodes.iter().next()).map(String::as_str)
    }

    /// The nodes of the endpoints that hold `ip`.
    pub fn holders_of(&self, ip: IpAddr) -> BTreeSet<&str> {
        self.holders
            .get(&ip)
            .into_iter()
            .flatten()
            .filter_map(|ep| self.endpoints.get(ep).map(|(node, _)| node.as_str()))
            .collect()
    }

    /// True when `dst` is a block some node is affine to.
    pub fn is_block(&self, dst: &IpNetwork) -> bool {
        self.affinities.contains_key(dst)
    }

    /// The addresses (as /32, /128) that `node`'s workloads hold in a pool but outside the
    /// node's own blocks: borrowed from another node's block, or in a block nobody holds.
    /// Nobody's block route leads to them, so they need routes of their own. Costs the
    /// node's own endpoints, not the cluster's.
    pub fn borrowed_by(&self, node: &str) -> BTreeSet<IpNetwork> {
        let mut out = BTreeSet::new();
        for key in self.node_endpoints.get(node).into_iter().flatten() {
            for ip in self.endpoints.get(key).map(|(_, ips)| ips.as_slice()).unwrap_or_default() {
                let Some(pool) = self.pool_of(*ip) else { continue };
                if self.owner(&model::net::block_of(*ip, pool.block_size)) != Some(node) {
                    out.insert(host_net(*ip));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_borrowed_addresses_are_those_outside_its_own_blocks() {
        let mut c = Cluster::default();
        put(&mut c, "/calico/v1/ipam/v4/pool/10.0.0.0-16", r#"{"cidr":"10.0.0.0/16","block_size":26}"#);
        put(&mut c, "/calico/ipam/v2/host/b/ipv4/block/10.0.1.0-26", "{}");
        put(&mut c, "/calico/ipam/v2/host/c/ipv4/block/10.0.2.0-26", "{}");
        let ep = |name: &str| format!("/calico/v1/host/b/workload/cni/{name}/endpoint/eth0");
        // In b's own block; in c's block; in nobody's block; outside every pool.
        put(&mut c, &ep("own"), r#"{"node":"b","ips":["10.0.1.5/32"]}"#);
        put(&mut c, &ep("two"), r#"{"node":"b","ips":["10.0.1.6/32","10.0.2.7/32"]}"#);
        put(&mut c, &ep("free"), r#"{"node":"b","ips":["10.0.3.1/32"]}"#);
        put(&mut c, &ep("out"), r#"{"node":"b","ips":["10.9.0.1/32"]}"#);
        put(&mut c, "/calico/v1/host/c/workload/cni/y/endpoint/eth0", r#"{"node":"c","ips":["10.0.2.8/32"]}"#);
        assert_eq!(c.borrowed_by("b"), set(&["10.0.2.7/32", "10.0.3.1/32"]));
        assert!(c.borrowed_by("c").is_empty());
        // c's block becomes b's: nothing of b's is borrowed in it any more, and c's is.
        del(&mut c, "/calico/ipam/v2/host/c/ipv4/block/10.0.2.0-26");
        put(&mut c, "/calico/ipam/v2/host/b/ipv4/block/10.0.2.0-26", "{}");
        assert_eq!(c.borrowed_by("b"), set(&["10.0.3.1/32"]));
        assert_eq!(c.borrowed_by("c"), set(&["10.0.2.8/32"]));
        del(&mut c, &ep("free"));
        assert!(c.borrowed_by("b").is_empty());
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn put(c: &mut Cluster, key: &str, value: &str) -> Dirty {
        let mut dirty = Dirty::default();
        c.apply("me", key, Some(value.as_bytes()), &mut dirty).unwrap();
        dirty
    }

    fn del(c: &mut Cluster, key: &str) -> Dirty {
        let mut dirty = Dirty::default();
        c.apply("me", key, None, &mut dirty).unwrap();
        dirty
    }

    fn set(items: &[&str]) -> BTreeSet<IpNetwork> {
        items.iter().map(|s| net(s)).collect()
    }

    #[test]
    fn each_change_dirties_only_the_routes_it_touches() {
        let mut c = Cluster::default();
        let pool = r#"{"cidr":"10.0.0.0/16","block_size":26}"#;
        assert!(put(&mut c, "/calico/v1/ipam/v4/pool/10.0.0.0-16", pool).dsts.is_empty());
        let d = put(&mut c, "/calico/ipam/v2/host/b/ipv4/block/10.0.1.0-26", r#"{"state":"confirmed"}"#);
        assert_eq!(d.dsts, set(&["10.0.1.0/26"]));
        put(&mut c, "/calico/ipam/v2/host/c/ipv4/block/10.0.2.0-26", "{}");
        assert!(put(&mut c, "/calico/ipam/v2/host/b/ipv4/cursor", "\"10.0.1.0/26\"").is_empty());
        assert_eq!(c.owner(&net("10.0.1.0/26")), Some("b"));

        // A node's address: its blocks only.
        let d = put(&mut c, "/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2");
        assert_eq!(d.dsts, set(&["10.0.1.0/26"]));
        assert!(!d.all);
        // The same value again changes nothing.
        assert!(put(&mut c, "/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2").is_empty());
        // This node's own record: everything.
        assert!(put(&mut c, "/calico/bgp/v1/host/me/ip_addr_v4", "10.9.0.1").all);

        // An endpoint of b borrowing from c's block: its /32, and b's changes reach it.
        let ep = "/calico/v1/host/b/workload/cni/x/endpoint/eth0";
        let d = put(&mut c, ep, r#"{"node":"b","ips":["10.0.2.7/32"],"mac":"x"}"#);
        assert_eq!(d.dsts, set(&["10.0.2.7/32"]));
        assert_eq!(c.holders_of("10.0.2.7".parse().unwrap()), ["b"].into_iter().collect());
        let d = put(&mut c, "/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.3");
        assert_eq!(d.dsts, set(&["10.0.1.0/26", "10.0.2.7/32"]));
        // c's block changing owner dirties the borrowed address inside it.
        let d = del(&mut c, "/calico/ipam/v2/host/c/ipv4/block/10.0.2.0-26");
        assert_eq!(d.dsts, set(&["10.0.2.0/26", "10.0.2.7/32"]));
        assert!(!c.is_block(&net("10.0.2.0/26")));
        // The pool: everything inside it.
        let d = del(&mut c, "/calico/v1/ipam/v4/pool/10.0.0.0-16");
        assert_eq!(d.dsts, set(&["10.0.1.0/26", "10.0.2.7/32"]));
        let d = del(&mut c, ep);
        assert_eq!(d.dsts, set(&["10.0.2.7/32"]));
        assert!(c.holders_of("10.0.2.7".parse().unwrap()).is_empty());
        assert_eq!(c.all_dsts(), set(&["10.0.1.0/26"]));
    }

    #[test]
    fn ipv6_ranges_and_bad_values() {
        let mut c = Cluster::default();
        put(&mut c, "/calico/ipam/v2/host/b/ipv6/block/fd00::40-122", "{}");
        put(&mut c, "/calico/ipam/v2/host/b/ipv6/block/fd01::-122", "{}");
        let d = put(&mut c, "/calico/v1/ipam/v6/pool/fd00::-48", r#"{"cidr":"fd00::/48","block_size":122}"#);
        assert_eq!(d.dsts, set(&["fd00::40/122"]));
        let mut dirty = Dirty::default();
        let err = c.apply("me", "/calico/v1/ipam/v4/pool/10.0.0.0-16", Some(b"{"), &mut dirty).unwrap_err();
        assert!(err.to_string().contains("/calico/v1/ipam/v4/pool/10.0.0.0-16"), "{err}");
        let err = c.apply("me", "/calico/bgp/v1/host/b/as_num", Some(b"x"), &mut dirty).unwrap_err();
        assert!(err.to_string().contains("not an AS number"), "{err}");
        assert_eq!(bounds(&net("::/0")).1, net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"));
        assert_eq!(bounds(&net("fd00::1/128")).1, net("fd00::1/128"));
    }
}
