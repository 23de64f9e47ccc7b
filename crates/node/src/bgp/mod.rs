//! BGP through BIRD: the BGP keys of the datastore (peers, default AS, mesh, log level), the
//! config they render to ([`render`]), and the BIRD that runs it ([`bird`]).
//!
//! The agent feeds every datastore change to [`Bgp::apply`], then calls [`Bgp::sync`] with
//! its view of pools and nodes when a pool, node or BGP key changed; a block changing renders
//! nothing (BIRD learns the block's blackhole route from the kernel). [`Bgp::tick`] starts
//! BIRD again when it died.

pub mod bird;
pub mod render;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use model::bgp::{AsNumber, LogLevel, NodeMesh, Peer};
use model::keys;
use model::pool::EncapMode;

pub use bird::{Bird, BirdError, Paths};
pub use render::{Input, PeerKind, PeerSpec};

use crate::cluster::Cluster;
use crate::local::Local;

/// The AS number of nodes when neither the node (`--as`) nor the cluster (`calicoctl bgp
/// default-node-as`) sets one: 64512, Calico's since v2 (v0.x had 64511).
pub const DEFAULT_AS: u32 = 64512;
/// `--bird-config`'s default.
pub const DEFAULT_CONFIG: &str = "/etc/calico/bird.conf";
/// `--bird-socket`'s default (calicoctl reads the sessions' states there).
pub const DEFAULT_SOCKET: &str = "/var/run/calico/bird.ctl";

/// The BGP keys of the datastore.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BgpView {
    /// Global peers by address.
    pub global_peers: BTreeMap<IpAddr, Peer>,
    /// Node → its peers by address.
    pub node_peers: BTreeMap<String, BTreeMap<IpAddr, Peer>>,
    /// `/calico/bgp/v1/global/as_num`.
    pub default_as: Option<AsNumber>,
    /// `/calico/bgp/v1/global/node_mesh` (absent: on).
    pub mesh: NodeMesh,
    /// `/calico/bgp/v1/global/loglevel`.
    pub log_level: LogLevel,
}

impl BgpView {
    /// Apply one put or delete; true when `key` is a BGP key of ours (whatever its value).
    /// A value that cannot be read leaves the view as it was and is logged.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) -> bool {
        let outcome = self.apply_inner(key, value);
        match outcome {
            Ok(known) => known,
            Err(e) => {
                tracing::warn!("skipping a BGP setting: {}", crate::chain(&e));
                true
            }
        }
    }

    fn apply_inner(&mut self, key: &str, value: Option<&[u8]>) -> Result<bool, model::Error> {
        if let Some((node, ip)) = keys::parse_peer(key) {
            let map = match node {
                None => &mut self.global_peers,
                Some(n) => self.node_peers.entry(n.to_owned()).or_default(),
            };
            match value {
                Some(v) => {
                    map.insert(ip, model::decode(key, v)?);
                }
                None => {
                    map.remove(&ip);
                }
            }
            self.node_peers.retain(|_, m| !m.is_empty());
            return Ok(true);
        }
        match key {
            keys::BGP_AS_NUMBER => self.default_as = value.map(|v| model::decode(key, v)).transpose()?,
            keys::BGP_NODE_MESH => self.mesh = value.map(|v| model::decode(key, v)).transpose()?.unwrap_or_default(),
            keys::BGP_LOG_LEVEL => {
                self.log_level = value.map(|v| LogLevel::decode(key, v)).transpose()?.unwrap_or_default()
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The BGP input of node `me`: its AS, the pools, the sessions. `None` when the node has no
/// IPv4 address (the BGP of this version is IPv4 only).
pub fn input(view: &BgpView, cluster: &Cluster, local: &Local, as_flag: Option<u32>) -> Option<Input> {
    let ipv4 = local.ipv4?;
    let me = ipv4.ip();
    let default_as = view.default_as.map_or(DEFAULT_AS, |a| a.0);
    let own_record = cluster.nodes.get(&local.name);
    let as_number = as_flag.or(own_record.and_then(|n| n.as_number)).unwrap_or(default_as);
    let mut pools = Vec::new();
    let mut direct_pools = Vec::new();
    for pool in cluster.pools.values() {
        if let IpNetwork::V4(cidr) = pool.cidr {
            pools.push(cidr);
            if pool.ipip == EncapMode::Off && pool.vxlan == EncapMode::Off {
                direct_pools.push(cidr);
            }
        }
    }
    let mut peers: Vec<PeerSpec> = Vec::new();
    let mut add = |spec: PeerSpec| {
        if spec.ip != me && !spec.ip.is_unspecified() && !peers.iter().any(|p| p.ip == spec.ip) {
            peers.push(spec);
        }
    };
    if view.mesh.enabled {
        for node in cluster.nodes.values().filter(|n| n.name != local.name) {
            if let Some(ip) = node.ipv4_addr() {
                let as_number = node.as_number.unwrap_or(default_as);
                add(PeerSpec { kind: PeerKind::Mesh, ip, as_number, node: Some(node.name.clone()) });
            }
        }
    }
    let v4 = |peer: &Peer| match peer.ip {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    };
    for peer in view.node_peers.get(&local.name).into_iter().flat_map(|m| m.values()) {
        if let Some(ip) = v4(peer) {
            add(PeerSpec { kind: PeerKind::Node, ip, as_number: peer.as_num.0, node: None });
        }
    }
    for peer in view.global_peers.values() {
        if let Some(ip) = v4(peer) {
            add(PeerSpec { kind: PeerKind::Global, ip, as_number: peer.as_num.0, node: None });
        }
    }
    let borrowed = borrowed_v4(cluster, local);
    let log_level = view.log_level;
    Some(Input { node: local.name.clone(), ipv4, as_number, pools, direct_pools, peers, borrowed, log_level })
}

/// The IPv4 addresses this node's workloads borrowed ([`Cluster::borrowed_by`]), as /32s.
fn borrowed_v4(cluster: &Cluster, local: &Local) -> Vec<ipnetwork::Ipv4Network> {
    let all = cluster.borrowed_by(&local.name);
    all.into_iter()
        .filter_map(|n| match n {
            IpNetwork::V4(v4) => Some(v4),
            IpNetwork::V6(_) => None,
        })
        .collect()
}

/// `--bgp`, `--bird-config`, `--bird-socket`, `--bird-binary`.
#[derive(Clone, Debug)]
pub struct Options {
    pub paths: Paths,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            paths: Paths {
                program: PathBuf::from("bird"),
                config: PathBuf::from(DEFAULT_CONFIG),
                socket: PathBuf::from(DEFAULT_SOCKET),
            },
        }
    }
}

/// The agent's BGP: the view of the BGP keys and the BIRD it drives.
#[derive(Debug)]
pub struct Bgp {
    pub view: BgpView,
    pub bird: Bird,
    /// Why the last config is not running, if it is not.
    pub problem: Option<String>,
    /// The input of the last text rendered (to start BIRD again with).
    last: Option<String>,
    /// The borrowed addresses of the last text rendered.
    borrowed: Vec<ipnetwork::Ipv4Network>,
}

impl Bgp {
    pub fn new(options: Options) -> Bgp {
        Bgp { view: BgpView::default(), bird: Bird::new(options.paths), problem: None, last: None, borrowed: vec![] }
    }

    /// Whether this node's borrowed addresses are not those of the last config, so that it
    /// must be rendered again (the agent asks after endpoint and block changes; it costs this
    /// node's endpoints).
    pub fn borrowed_changed(&self, cluster: &Cluster, local: &Local) -> bool {
        borrowed_v4(cluster, local) != self.borrowed
    }

    /// See [`BgpView::apply`].
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) -> bool {
        self.view.apply(key, value)
    }

    /// Render the config and have BIRD run it (a text that renders the same costs nothing).
    /// On a failure BIRD keeps what it runs, and [`Bgp::problem`] says why.
    pub fn sync(&mut self, cluster: &Cluster, local: &Local, as_flag: Option<u32>) {
        let Some(input) = input(&self.view, cluster, local, as_flag) else {
            self.problem = Some("BGP needs this node's IPv4 address".into());
            return;
        };
        let started = std::time::Instant::now();
        self.borrowed = input.borrowed.clone();
        let text = render::render(&input);
        self.load(&text, started);
    }

    fn load(&mut self, text: &str, started: std::time::Instant) {
        self.last = Some(text.to_owned());
        match self.bird.apply(text) {
            Ok(changed) => {
                if changed {
                    tracing::info!(
                        reconfigurations = self.bird.reconfigurations,
                        starts = self.bird.starts,
                        ms = started.elapsed().as_secs_f64() * 1000.0,
                        "BIRD runs the new config (rendered, checked, written, loaded)"
                    );
                }
                self.problem = None;
            }
            Err(e) => {
                let line = format!("BGP: {}", crate::chain(&e));
                if self.problem.as_ref() != Some(&line) {
                    tracing::error!("{line}; BIRD keeps the config it runs");
                }
                self.problem = Some(line);
            }
        }
    }

    /// Start BIRD again if it died (with the last config rendered).
    pub fn tick(&mut self) {
        if self.bird.running() {
            return;
        }
        if let Some(text) = self.last.clone() {
            tracing::warn!("BIRD is not running: starting it");
            self.load(&text, std::time::Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Dirty;

    fn cluster(entries: &[(&str, &str)]) -> Cluster {
        let mut c = Cluster::default();
        for (k, v) in entries {
            c.apply("me", k, Some(v.as_bytes()), &mut Dirty::default()).unwrap();
        }
        c
    }

    fn local() -> Local {
        Local {
            name: "me".into(),
            ipv4: Some("10.9.0.1/24".parse().unwrap()),
            ipv6: None,
            uplink: dataplane::Link { index: 2, name: "eth0".into(), mac: None, mtu: 1500, up: true, kind: None },
            uplink6: None,
        }
    }

    #[test]
    fn the_view_follows_the_keys() {
        let mut v = BgpView::default();
        assert!(v.apply("/calico/bgp/v1/global/peer_v4/10.0.0.9", Some(br#"{"ip":"10.0.0.9","as_num":65000}"#)));
        assert!(v.apply("/calico/bgp/v1/host/me/peer_v4/10.9.0.254", Some(br#"{"ip":"10.9.0.254","as_num":65001}"#)));
        assert!(v.apply("/calico/bgp/v1/global/node_mesh", Some(br#"{"enabled":false}"#)));
        assert!(v.apply("/calico/bgp/v1/global/as_num", Some(b"64600")));
        assert!(!v.apply("/calico/bgp/v1/host/me/ip_addr_v4", Some(b"10.9.0.1")));
        assert!(v.apply("/calico/bgp/v1/global/as_num", Some(b"abc")), "bad, but ours");
        assert_eq!(v.default_as, Some(AsNumber(64600)), "a bad value keeps the last good one");
        assert!(!v.mesh.enabled);
        assert_eq!(v.node_peers["me"].len(), 1);
        v.apply("/calico/bgp/v1/host/me/peer_v4/10.9.0.254", None);
        assert!(v.node_peers.is_empty());
        v.apply("/calico/bgp/v1/global/node_mesh", None);
        assert!(v.mesh.enabled, "absent: on");
    }

    #[test]
    fn the_sessions_of_a_node() {
        let c = cluster(&[
            ("/calico/v1/ipam/v4/pool/10.0.0.0-16", r#"{"cidr":"10.0.0.0/16","block_size":26}"#),
            ("/calico/v1/ipam/v4/pool/10.1.0.0-16", r#"{"cidr":"10.1.0.0/16","block_size":26,"ipip":"always"}"#),
            ("/calico/bgp/v1/host/me/ip_addr_v4", "10.9.0.1"),
            ("/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2"),
            ("/calico/bgp/v1/host/c/ip_addr_v4", "10.9.0.3"),
            ("/calico/bgp/v1/host/c/as_num", "65003"),
        ]);
        let mut v = BgpView::default();
        v.apply("/calico/bgp/v1/global/peer_v4/10.9.0.2", Some(br#"{"ip":"10.9.0.2","as_num":1}"#));
        v.apply("/calico/bgp/v1/global/peer_v4/10.9.0.1", Some(br#"{"ip":"10.9.0.1","as_num":1}"#));
        v.apply("/calico/bgp/v1/host/me/peer_v4/10.9.0.254", Some(br#"{"ip":"10.9.0.254","as_num":65000}"#));
        v.apply("/calico/bgp/v1/host/b/peer_v4/10.9.0.253", Some(br#"{"ip":"10.9.0.253","as_num":65000}"#));
        let i = input(&v, &c, &local(), None).unwrap();
        assert_eq!(i.as_number, DEFAULT_AS);
        assert_eq!(i.pools.len(), 2);
        assert_eq!(i.direct_pools, vec!["10.0.0.0/16".parse().unwrap()]);
        let peers: Vec<(PeerKind, String, u32)> =
            i.peers.iter().map(|p| (p.kind, p.ip.to_string(), p.as_number)).collect();
        assert_eq!(
            peers,
            [
                (PeerKind::Mesh, "10.9.0.2".into(), 64512),
                (PeerKind::Mesh, "10.9.0.3".into(), 65003),
                (PeerKind::Node, "10.9.0.254".into(), 65000),
            ],
            "mesh first, each address once, never ourselves, never another node's peer"
        );
        v.apply("/calico/bgp/v1/global/node_mesh", Some(br#"{"enabled":false}"#));
        v.apply("/calico/bgp/v1/global/as_num", Some(b"64999"));
        let i = input(&v, &c, &local(), Some(65111)).unwrap();
        assert_eq!(i.as_number, 65111, "--as wins");
        assert_eq!(i.peers.iter().map(|p| p.kind).collect::<Vec<_>>(), [PeerKind::Node, PeerKind::Global]);
        assert_eq!(input(&v, &c, &local(), None).unwrap().as_number, 64999);
    }
}
