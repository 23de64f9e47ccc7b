//! Handles: the name an allocation is released by (`<network>.<container id>`, plus
//! `:<ifname>` for interfaces other than eth0), with per-block counts as in Calico.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    #[serde(rename = "handleID")]
    pub id: String,
    /// Block CIDR → number of addresses this handle holds there.
    #[serde(default)]
    pub block: BTreeMap<String, u32>,
    #[serde(default)]
    pub deleted: bool,
    /// Who the handle belongs to: `network`, `container_id`, `ifname`, [`HANDLE_NODE`] and
    /// [`HANDLE_PLUGIN`] (used by GC and `ipam check`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// The handle attribute naming the node that made the allocation.
pub const HANDLE_NODE: &str = "node";
/// The handle attribute naming the plugin an allocation is for: [`PLUGIN_CALICO_CNI`], or
/// absent for calico-ipam's own allocations.
pub const HANDLE_PLUGIN: &str = "plugin";
/// [`HANDLE_PLUGIN`] of calico-cni's allocations: each has an endpoint record.
pub const PLUGIN_CALICO_CNI: &str = "calico-cni";

/// The handle id of one attachment. `:` can appear in neither a container id nor an ifname,
/// so the id is unambiguous; eth0 keeps Calico's plain `<network>.<container id>` form.
pub fn handle_id(network: &str, container_id: &str, ifname: &str) -> String {
    if ifname == "eth0" || ifname.is_empty() {
        format!("{network}.{container_id}")
    } else {
        format!("{network}.{container_id}:{ifname}")
    }
}

impl Handle {
    /// The blocks the handle holds addresses in.
    pub fn blocks(&self) -> Vec<ipnetwork::IpNetwork> {
        self.block.keys().filter_map(|c| c.parse().ok()).collect()
    }

    pub fn total(&self) -> u32 {
        self.block.values().sum()
    }

    pub fn add(&mut self, block: &str, n: u32) {
        *self.block.entry(block.to_owned()).or_default() += n;
    }

    /// Subtract `n` in `block`, dropping the entry at zero.
    pub fn remove(&mut self, block: &str, n: u32) {
        if let Some(c) = self.block.get_mut(block) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.block.remove(block);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(handle_id("k8s-pod-network", "abc", "eth0"), "k8s-pod-network.abc");
        assert_eq!(handle_id("net", "abc", "net1"), "net.abc:net1");
    }

    #[test]
    fn json_is_calicos_shape() {
        let mut h = Handle { id: "net.abc".into(), ..Default::default() };
        h.add("10.0.0.0/26", 1);
        h.attributes.insert(HANDLE_NODE.into(), "n1".into());
        let json = String::from_utf8(crate::encode(&h)).unwrap();
        assert_eq!(
            json,
            r#"{"handleID":"net.abc","block":{"10.0.0.0/26":1},"deleted":false,"attributes":{"node":"n1"}}"#
        );
        assert_eq!(crate::decode::<Handle>("k", json.as_bytes()).unwrap(), h);
        // Calico's own AllocationHandle (no attributes) reads too.
        let calico: Handle =
            crate::decode("k", br#"{"handleID":"k8s-pod-network.abc","block":{"10.0.0.0/26":2}}"#).unwrap();
        assert_eq!(calico.total(), 2);
        assert!(calico.blocks().contains(&"10.0.0.0/26".parse().unwrap()));
    }

    #[test]
    fn counts() {
        let mut h = Handle { id: "x".into(), ..Default::default() };
        h.add("10.0.0.0/26", 1);
        h.add("10.0.0.0/26", 1);
        h.remove("10.0.0.0/26", 1);
        assert_eq!(h.total(), 1);
        h.remove("10.0.0.0/26", 1);
        assert!(h.block.is_empty());
    }
}
