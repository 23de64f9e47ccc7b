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
    /// Who the handle belongs to: network, container_id, ifname (used by GC).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

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
    /// Reads of the blocks this handle holds addresses in.
    /// The blocks the handle holds addresses in.
    pub fn blocks(&self) -> Vec<ipnetwork::IpNetwork> {
        self.block.keys().filter_map(|c| c.parse().ok()).collect()
    }

    pub fn block_reads(&self) -> Vec<datastore::Read> {
        self.blocks()
            .iter()
            .map(|c| datastore::Read::Key(crate::keys::block(c)))
            .collect()
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
        assert_eq!(
            handle_id("k8s-pod-network", "abc", "eth0"),
            "k8s-pod-network.abc"
        );
        assert_eq!(handle_id("net", "abc", "net1"), "net.abc:net1");
    }

    #[test]
    fn counts() {
        let mut h = Handle {
            id: "x".into(),
            ..Default::default()
        };
        h.add("10.0.0.0/26", 1);
        h.add("10.0.0.0/26", 1);
        h.remove("10.0.0.0/26", 1);
        assert_eq!(h.total(), 1);
        h.remove("10.0.0.0/26", 1);
        assert!(h.block.is_empty());
    }
}
