//! IP pools: the CIDRs addresses come from, with their encapsulation and NAT settings, under
//! `/calico/v1/ipam/v4/pool/<cidr>` (and `v6`).

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::{keys, net};

/// When traffic between hosts is encapsulated (IPIP or VXLAN).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncapMode {
    #[default]
    #[serde(alias = "Never", alias = "never")]
    Off,
    #[serde(alias = "Always")]
    Always,
    #[serde(alias = "CrossSubnet", alias = "crosssubnet")]
    CrossSubnet,
}

pub const DEFAULT_V4_BLOCK: u8 = 26;
pub const DEFAULT_V6_BLOCK: u8 = 122;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub cidr: IpNetwork,
    #[serde(default)]
    pub ipip: EncapMode,
    #[serde(default)]
    pub vxlan: EncapMode,
    #[serde(default, alias = "masquerade")]
    pub nat_outgoing: bool,
    #[serde(default)]
    pub disabled: bool,
    pub block_size: u8,
}

impl Pool {
    /// A pool with the default block size for its family and no options.
    pub fn new(cidr: IpNetwork) -> Pool {
        let block_size = if cidr.is_ipv4() { DEFAULT_V4_BLOCK } else { DEFAULT_V6_BLOCK };
        Pool { cidr, ipip: EncapMode::Off, vxlan: EncapMode::Off, nat_outgoing: false, disabled: false, block_size }
    }

    pub fn family(&self) -> u8 {
        keys::family_of(&self.cidr)
    }

    /// Why the pool can never work, if it cannot: host bits set, a block larger than the
    /// pool, block sizes outside what Calico allows, IPIP on IPv6, both encapsulations at once.
    pub fn invalid_reason(&self) -> Option<String> {
        if !net::is_canonical(&self.cidr) {
            return Some(format!("host bits are set; did you mean {}/{}?", self.cidr.network(), self.cidr.prefix()));
        }
        let (min, max) = if self.cidr.is_ipv4() { (20, 32) } else { (116, 128) };
        if !(min..=max).contains(&self.block_size) {
            return Some(format!("block size {} is outside {min}..={max}", self.block_size));
        }
        if self.block_size < self.cidr.prefix() {
            return Some(format!("block size /{} is larger than the pool itself", self.block_size));
        }
        if self.cidr.is_ipv6() && self.ipip != EncapMode::Off {
            return Some("IPIP is IPv4 only".into());
        }
        if self.ipip != EncapMode::Off && self.vxlan != EncapMode::Off {
            return Some("choose IPIP or VXLAN, not both".into());
        }
        None
    }

    /// The number of blocks the pool is divided into.
    pub fn block_count(&self) -> u128 {
        net::size(&self.cidr) / net::size(&net::block_of(self.cidr.network(), self.block_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn stored_json_names_every_option() {
        let mut p = Pool::new(cidr("10.0.0.0/16"));
        p.ipip = EncapMode::CrossSubnet;
        let json = crate::encode(&p);
        assert_eq!(
            String::from_utf8_lossy(&json),
            r#"{"cidr":"10.0.0.0/16","ipip":"cross-subnet","vxlan":"off","nat_outgoing":false,"disabled":false,"block_size":26}"#
        );
        assert_eq!(crate::decode::<Pool>("k", &json).unwrap(), p);
        let old: Pool =
            serde_json::from_str(r#"{"cidr":"10.0.0.0/16","ipip":"Always","masquerade":true,"block_size":26}"#)
                .unwrap();
        assert!(old.nat_outgoing);
        assert_eq!(old.ipip, EncapMode::Always);
    }

    #[test]
    fn invalid_pools_say_why() {
        assert_eq!(Pool::new(cidr("10.0.0.0/16")).invalid_reason(), None);
        assert!(Pool::new(cidr("10.1.0.1/16")).invalid_reason().unwrap().contains("host bits"));
        assert!(Pool::new(cidr("10.2.0.0/28")).invalid_reason().unwrap().contains("larger than the pool"));
        let mut v6 = Pool::new(cidr("fd00::/48"));
        assert_eq!(v6.invalid_reason(), None);
        v6.ipip = EncapMode::Always;
        assert_eq!(v6.invalid_reason().as_deref(), Some("IPIP is IPv4 only"));
        assert_eq!(Pool::new(cidr("10.0.0.0/16")).block_count(), 1024);
    }
}
