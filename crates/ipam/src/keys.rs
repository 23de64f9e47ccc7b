//! The datastore key layout, shared by etcd and the embedded store (documented in the README).
//!
//! | what | key |
//! |---|---|
//! | IP pool | `/calico/v1/ipam/v4/pool/<cidr>` (and `v6`), `/` in the CIDR written as `-` |
//! | block | `/calico/ipam/v2/assignment/ipv4/block/<block cidr>` (and `ipv6`) |
//! | host affinity | `/calico/ipam/v2/host/<node>/ipv4/block/<block cidr>` (and `ipv6`) |
//! | handle | `/calico/ipam/v2/handle/<handle id>` |
//! | allocation cursor | `/calico/ipam/v2/host/<node>/ipv4/cursor` (and `ipv6`) |

use ipnetwork::IpNetwork;

pub const HANDLE_PREFIX: &str = "/calico/ipam/v2/handle/";
pub const HOST_PREFIX: &str = "/calico/ipam/v2/host/";

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
    format!("{HOST_PREFIX}{host}/ipv{}/block/", v(family))
}

pub fn affinity(host: &str, cidr: &IpNetwork) -> String {
    format!(
        "{}{}",
        affinity_prefix(host, family_of(cidr)),
        cidr_segment(cidr)
    )
}

/// The block a host allocated from last: a hint that spares listing its affinities.
pub fn cursor(host: &str, family: u8) -> String {
    format!("{HOST_PREFIX}{host}/ipv{}/cursor", v(family))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_calico() {
        let b: IpNetwork = "192.168.0.64/26".parse().unwrap();
        assert_eq!(
            block(&b),
            "/calico/ipam/v2/assignment/ipv4/block/192.168.0.64-26"
        );
        assert_eq!(
            affinity("node1", &b),
            "/calico/ipam/v2/host/node1/ipv4/block/192.168.0.64-26"
        );
        let p: IpNetwork = "fd00:1::/48".parse().unwrap();
        assert_eq!(pool(&p), "/calico/v1/ipam/v6/pool/fd00:1::-48");
        assert_eq!(cidr_of_key(&pool(&p)), Some(p));
        assert_eq!(cidr_of_key(&block(&b)), Some(b));
    }
}
