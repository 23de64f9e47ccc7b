//! Every datastore key, shared by etcd and the embedded store, following Calico's layout.
//!
//! This is the only place a key is spelled out. The README's "Key layout" table documents
//! them; `readme_documents_every_key` below fails when a key here is missing from the table,
//! or a row of the table is no key here. A new key (or prefix) therefore goes here, as a
//! `pub fn … -> String` or a `pub const …: &str`, with a sample in that test and a row in the
//! README.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::profile::ProfilePart;

/// IPAM's per-host keys: affinities and allocation cursors.
pub const IPAM_HOST_PREFIX: &str = "/calico/ipam/v2/host/";
pub const HANDLE_PREFIX: &str = "/calico/ipam/v2/handle/";
/// Every node's workload endpoints.
pub const ENDPOINT_HOST_PREFIX: &str = "/calico/v1/host/";
/// Cluster-wide BGP settings and peers.
pub const BGP_GLOBAL_PREFIX: &str = "/calico/bgp/v1/global/";
/// Per-node BGP settings and peers.
pub const BGP_HOST_PREFIX: &str = "/calico/bgp/v1/host/";
/// The default AS number of every node.
pub const BGP_AS_NUMBER: &str = "/calico/bgp/v1/global/as_num";
/// Whether every node peers with every other (`{"enabled": bool}`).
pub const BGP_NODE_MESH: &str = "/calico/bgp/v1/global/node_mesh";
/// The BGP daemon's log level (plain text).
pub const BGP_LOG_LEVEL: &str = "/calico/bgp/v1/global/loglevel";
pub const PROFILE_PREFIX: &str = "/calico/v1/policy/profile/";

/// A CIDR as it appears in a key: `192.168.0.0/26` → `192.168.0.0-26`.
pub fn cidr_segment(cidr: &IpNetwork) -> String {
    format!("{}-{}", cidr.network(), cidr.prefix())
}

/// The inverse of [`cidr_segment`], for the last segment of a key.
pub fn parse_cidr_segment(segment: &str) -> Option<IpNetwork> {
    let (ip, prefix) = segment.rsplit_once('-')?;
    IpNetwork::new(ip.parse().ok()?, prefix.parse().ok()?).ok()
}

fn v(family: u8) -> &'static str {
    if family == 6 {
        "6"
    } else {
        "4"
    }
}

pub fn pool_prefix(family: u8) -> String {
    format!("/calico/v1/ipam/v{}/pool/", v(family))
}

pub fn pool(cidr: &IpNetwork) -> String {
    format!("{}{}", pool_prefix(family_of(cidr)), cidr_segment(cidr))
}

pub fn block_prefix(family: u8) -> String {
    format!("/calico/ipam/v2/assignment/ipv{}/block/", v(family))
}

pub fn block(cidr: &IpNetwork) -> String {
    format!("{}{}", block_prefix(family_of(cidr)), cidr_segment(cidr))
}

pub fn affinity_prefix(host: &str, family: u8) -> String {
    format!("{IPAM_HOST_PREFIX}{host}/ipv{}/block/", v(family))
}

pub fn affinity(host: &str, cidr: &IpNetwork) -> String {
    format!("{}{}", affinity_prefix(host, family_of(cidr)), cidr_segment(cidr))
}

/// The block a host allocated from last: a hint that spares listing its affinities.
pub fn cursor(host: &str, family: u8) -> String {
    format!("{IPAM_HOST_PREFIX}{host}/ipv{}/cursor", v(family))
}

/// Whether `key` (under [`IPAM_HOST_PREFIX`]) is an allocation cursor.
pub fn is_cursor(key: &str) -> bool {
    key.starts_with(IPAM_HOST_PREFIX) && key.ends_with("/cursor")
}

pub fn handle(id: &str) -> String {
    format!("{HANDLE_PREFIX}{id}")
}

/// 4 or 6.
pub fn family_of(cidr: &IpNetwork) -> u8 {
    if cidr.is_ipv4() {
        4
    } else {
        6
    }
}

/// The CIDR in the last segment of `key`.
pub fn cidr_of_key(key: &str) -> Option<IpNetwork> {
    parse_cidr_segment(key.rsplit('/').next()?)
}

/// Where the workload endpoints of `node` live.
pub fn endpoint_node_prefix(node: &str) -> String {
    format!("{ENDPOINT_HOST_PREFIX}{node}/workload/")
}

/// One workload endpoint: Calico's
/// `/calico/v1/host/<node>/workload/<orchestrator>/<workload id>/endpoint/<ifname>`.
pub fn endpoint(node: &str, orchestrator: &str, workload_id: &str, ifname: &str) -> String {
    format!("{}{orchestrator}/{workload_id}/endpoint/{ifname}", endpoint_node_prefix(node))
}

/// Whether `key` is a workload endpoint's ([`endpoint`]); other records share its prefix.
pub fn is_endpoint(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(ENDPOINT_HOST_PREFIX) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    matches!(parts.as_slice(), [node, "workload", orch, id, "endpoint", ifname]
        if ![node, orch, id, ifname].iter().any(|s| s.is_empty()))
}

/// A key of a node record under the per-host prefix: `metadata`, `bird_ip` or
/// `config/<name>` ([`crate::node::Field`] names them).
pub fn node_host_key(node: &str, field: &str) -> String {
    format!("{ENDPOINT_HOST_PREFIX}{node}/{field}")
}

/// A key of a node record under the per-host BGP prefix: `ip_addr_v4`, `network_v4`,
/// `ip_addr_v6`, `network_v6`, `as_num`.
pub fn node_bgp_key(node: &str, field: &str) -> String {
    format!("{BGP_HOST_PREFIX}{node}/{field}")
}

/// The claim of a node address: which node holds it (the value is the node's name). Written
/// with compare-and-swap when a node registers, so that two nodes starting at once with one
/// address cannot both have it.
pub fn node_address_claim(ip: &IpAddr) -> String {
    format!("/calico/v1/node-address/{ip}")
}

/// `peer_v4` or `peer_v6`.
fn peer_dir(family: u8) -> String {
    format!("peer_v{}", v(family))
}

fn ip_family(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        4
    } else {
        6
    }
}

/// The BGP peers every node peers with.
pub fn global_peer_prefix(family: u8) -> String {
    format!("{BGP_GLOBAL_PREFIX}{}/", peer_dir(family))
}

pub fn global_peer(ip: &IpAddr) -> String {
    format!("{}{ip}", global_peer_prefix(ip_family(ip)))
}

/// The BGP peers of one node only.
pub fn node_peer_prefix(node: &str, family: u8) -> String {
    format!("{BGP_HOST_PREFIX}{node}/{}/", peer_dir(family))
}

pub fn node_peer(node: &str, ip: &IpAddr) -> String {
    format!("{}{ip}", node_peer_prefix(node, ip_family(ip)))
}

/// A peer key's node (`None` for a global peer) and address.
pub fn parse_peer(key: &str) -> Option<(Option<&str>, IpAddr)> {
    let (node, rest) = if let Some(rest) = key.strip_prefix(BGP_GLOBAL_PREFIX) {
        (None, rest)
    } else {
        let (node, rest) = key.strip_prefix(BGP_HOST_PREFIX)?.split_once('/')?;
        if node.is_empty() {
            return None;
        }
        (Some(node), rest)
    };
    let (dir, ip) = rest.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    (dir == peer_dir(ip_family(&ip))).then_some((node, ip))
}

pub fn profile_rules(name: &str) -> String {
    format!("{PROFILE_PREFIX}{name}/rules")
}

pub fn profile_tags(name: &str) -> String {
    format!("{PROFILE_PREFIX}{name}/tags")
}

pub fn profile_labels(name: &str) -> String {
    format!("{PROFILE_PREFIX}{name}/labels")
}

/// A profile key's profile name and which of its three parts it holds.
pub fn parse_profile(key: &str) -> Option<(&str, ProfilePart)> {
    let (name, part) = key.strip_prefix(PROFILE_PREFIX)?.split_once('/')?;
    let part = match part {
        "rules" => ProfilePart::Rules,
        "tags" => ProfilePart::Tags,
        "labels" => ProfilePart::Labels,
        _ => return None,
    };
    (!name.is_empty()).then_some((name, part))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn layout_matches_calico() {
        let b = cidr("192.168.0.64/26");
        assert_eq!(block(&b), "/calico/ipam/v2/assignment/ipv4/block/192.168.0.64-26");
        assert_eq!(affinity("node1", &b), "/calico/ipam/v2/host/node1/ipv4/block/192.168.0.64-26");
        let p = cidr("fd00:1::/48");
        assert_eq!(pool(&p), "/calico/v1/ipam/v6/pool/fd00:1::-48");
        assert_eq!(cidr_of_key(&pool(&p)), Some(p));
        assert_eq!(cidr_of_key(&block(&b)), Some(b));
        assert_eq!(endpoint("n1", "k8s", "ns.pod", "eth0"), "/calico/v1/host/n1/workload/k8s/ns.pod/endpoint/eth0");
        // Calico's own examples (libcalico-go's key tests, pycalico's paths).
        assert_eq!(global_peer(&ip("10.0.0.5")), "/calico/bgp/v1/global/peer_v4/10.0.0.5");
        assert_eq!(node_peer("random-node-1", &ip("10.0.0.5")), "/calico/bgp/v1/host/random-node-1/peer_v4/10.0.0.5");
        assert_eq!(node_peer("n", &ip("aabb:aabb::ffff")), "/calico/bgp/v1/host/n/peer_v6/aabb:aabb::ffff");
        assert_eq!(profile_rules("web"), "/calico/v1/policy/profile/web/rules");
        assert_eq!(profile_tags("web"), "/calico/v1/policy/profile/web/tags");
        assert_eq!(profile_labels("web"), "/calico/v1/policy/profile/web/labels");
    }

    #[test]
    fn keys_parse_back() {
        assert!(is_endpoint(&endpoint("n1", "cni", "abc", "net1")));
        assert!(!is_endpoint("/calico/v1/host/n1/workload/cni/abc/endpoint/"));
        assert!(!is_endpoint("/calico/v1/host/n1/endpoint/eth0"), "a host endpoint is not a workload endpoint");
        assert!(!is_endpoint("/calico/v1/host/n1/workload/cni/abc/endpoint/eth0/x"));
        assert!(is_cursor(&cursor("n1", 6)));
        assert!(!is_cursor(&affinity("n1", &cidr("10.0.0.0/26"))));

        for key in [global_peer(&ip("10.0.0.5")), global_peer(&ip("fd00::5"))] {
            assert_eq!(parse_peer(&key).map(|(n, _)| n), Some(None), "{key}");
        }
        assert_eq!(parse_peer(&node_peer("n1", &ip("fd00::5"))), Some((Some("n1"), ip("fd00::5"))));
        assert_eq!(parse_peer("/calico/bgp/v1/global/peer_v6/10.0.0.5"), None, "family and address disagree");
        assert_eq!(parse_peer("/calico/bgp/v1/host/n1/ip_addr_v4"), None);
        assert_eq!(parse_peer(BGP_AS_NUMBER), None);

        assert_eq!(parse_profile(&profile_tags("web")), Some(("web", ProfilePart::Tags)));
        assert_eq!(parse_profile(&profile_rules("web")), Some(("web", ProfilePart::Rules)));
        assert_eq!(parse_profile(&profile_labels("web")), Some(("web", ProfilePart::Labels)));
        assert_eq!(parse_profile("/calico/v1/policy/profile/web/other"), None);
        assert_eq!(parse_profile("/calico/v1/policy/profile//rules"), None);
    }

    /// Every key this module builds, from sample arguments, by the name of the function or
    /// constant that built it.
    fn samples() -> Vec<(&'static str, Vec<String>)> {
        let (v4, v6) = (cidr("10.0.0.0/26"), cidr("fd00::/122"));
        let (ip4, ip6) = (ip("10.0.0.1"), ip("fd00::1"));
        vec![
            ("IPAM_HOST_PREFIX", vec![IPAM_HOST_PREFIX.into()]),
            ("HANDLE_PREFIX", vec![HANDLE_PREFIX.into()]),
            ("ENDPOINT_HOST_PREFIX", vec![ENDPOINT_HOST_PREFIX.into()]),
            ("BGP_GLOBAL_PREFIX", vec![BGP_GLOBAL_PREFIX.into()]),
            ("BGP_HOST_PREFIX", vec![BGP_HOST_PREFIX.into()]),
            ("BGP_AS_NUMBER", vec![BGP_AS_NUMBER.into()]),
            ("BGP_NODE_MESH", vec![BGP_NODE_MESH.into()]),
            ("BGP_LOG_LEVEL", vec![BGP_LOG_LEVEL.into()]),
            ("PROFILE_PREFIX", vec![PROFILE_PREFIX.into()]),
            ("pool_prefix", vec![pool_prefix(4), pool_prefix(6)]),
            ("pool", vec![pool(&v4), pool(&v6)]),
            ("block_prefix", vec![block_prefix(4), block_prefix(6)]),
            ("block", vec![block(&v4), block(&v6)]),
            ("affinity_prefix", vec![affinity_prefix("n1", 4), affinity_prefix("n1", 6)]),
            ("affinity", vec![affinity("n1", &v4), affinity("n1", &v6)]),
            ("cursor", vec![cursor("n1", 4), cursor("n1", 6)]),
            ("handle", vec![handle("net.abc"), handle("net.abc:net1")]),
            ("endpoint_node_prefix", vec![endpoint_node_prefix("n1")]),
            ("endpoint", vec![endpoint("n1", "k8s", "ns.pod", "eth0")]),
            (
                "node_host_key",
                [
                    "metadata",
                    "bird_ip",
                    "config/IpInIpTunnelAddr",
                    "config/IPv4VXLANTunnelAddr",
                    "config/VXLANTunnelMACAddr",
                ]
                .map(|f| node_host_key("n1", f))
                .to_vec(),
            ),
            (
                "node_bgp_key",
                ["ip_addr_v4", "network_v4", "ip_addr_v6", "network_v6", "as_num"]
                    .map(|f| node_bgp_key("n1", f))
                    .to_vec(),
            ),
            ("node_address_claim", vec![node_address_claim(&ip4), node_address_claim(&ip6)]),
            ("global_peer_prefix", vec![global_peer_prefix(4), global_peer_prefix(6)]),
            ("global_peer", vec![global_peer(&ip4), global_peer(&ip6)]),
            ("node_peer_prefix", vec![node_peer_prefix("n1", 4), node_peer_prefix("n1", 6)]),
            ("node_peer", vec![node_peer("n1", &ip4), node_peer("n1", &ip6)]),
            ("profile_rules", vec![profile_rules("web")]),
            ("profile_tags", vec![profile_tags("web")]),
            ("profile_labels", vec![profile_labels("web")]),
            ("cidr_segment", vec![]),
        ]
    }

    /// The names of this file's `pub fn … -> String` and `pub const …: &str`.
    fn key_builders() -> Vec<String> {
        let source = include_str!("keys.rs");
        let mut names = Vec::new();
        for line in source.lines() {
            let line = line.trim_start();
            if let Some(rest) = line.strip_prefix("pub fn ") {
                if line.trim_end().ends_with("-> String {") {
                    names.push(rest.split('(').next().unwrap_or_default().to_owned());
                }
            } else if let Some(rest) = line.strip_prefix("pub const ") {
                if rest.contains(": &str") {
                    names.push(rest.split(':').next().unwrap_or_default().to_owned());
                }
            }
        }
        names
    }

    /// The key patterns of the README's "Key layout" table: the backquoted `/calico/...`
    /// strings of each row's first cell.
    fn readme_patterns() -> Vec<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).expect("reading the README");
        let table = readme.split("### Key layout").nth(1).expect("the README has a Key layout section");
        let mut patterns = Vec::new();
        for row in table.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')) {
            let first_cell = row.trim_start_matches('|').split(" | ").next().unwrap_or_default();
            patterns.extend(
                first_cell.split('`').skip(1).step_by(2).filter(|s| s.starts_with("/calico/")).map(String::from),
            );
        }
        patterns
    }

    /// Whether `key` is an instance of `pattern` (where `<anything>` stands for one or more
    /// characters other than `/`), or with `prefix`, the beginning of one.
    fn matches(pattern: &str, key: &str, prefix: bool) -> bool {
        if key.is_empty() {
            return pattern.is_empty() || prefix;
        }
        if let Some(rest) = pattern.strip_prefix('<') {
            let Some((_, after)) = rest.split_once('>') else {
                return false;
            };
            let segment_end = key.find('/').unwrap_or(key.len());
            return (1..=segment_end).any(|n| matches(after, &key[n..], prefix));
        }
        let mut p = pattern.chars();
        let mut k = key.chars();
        p.next() == k.next() && matches(p.as_str(), k.as_str(), prefix)
    }

    #[test]
    fn readme_documents_every_key() {
        let samples = samples();
        let sampled: Vec<&str> = samples.iter().map(|(name, _)| *name).collect();
        for name in key_builders() {
            assert!(sampled.contains(&name.as_str()), "keys::{name} has no sample in samples()");
        }
        let patterns = readme_patterns();
        assert!(patterns.len() >= 10, "found only {patterns:?} in the README's key layout table");
        let mut used = vec![false; patterns.len()];
        for (name, keys) in &samples {
            for key in keys {
                let is_prefix = key.ends_with('/');
                let found: Vec<usize> =
                    (0..patterns.len()).filter(|i| matches(&patterns[*i], key, is_prefix)).collect();
                assert!(!found.is_empty(), "keys::{name} makes {key}, which the README's key layout table lacks");
                if !is_prefix {
                    found.iter().for_each(|i| used[*i] = true);
                }
            }
        }
        for (pattern, used) in patterns.iter().zip(used) {
            assert!(used, "the README's key layout table names {pattern}, which no function in keys.rs makes");
        }
    }

    #[test]
    fn pattern_matching() {
        assert!(matches("/a/<x>/b", "/a/xyz/b", false));
        assert!(!matches("/a/<x>/b", "/a//b", false));
        assert!(!matches("/a/<x>/b", "/a/x/y/b", false));
        assert!(matches("/a/<x>/b", "/a/", true));
        assert!(matches("/a/<x>/b/<y>", "/a/q/b/", true));
        assert!(!matches("/a/<x>/b", "/a/q/c/", true));
        assert!(matches("/a/<x>-<y>", "/a/10.0.0.0-26", false));
    }
}
