//! An allocation block: a power-of-two slice of a pool, affine to one host, stored as one key
//! in Calico's `AllocationBlock` JSON format. All address bookkeeping happens here, in memory;
//! the allocator writes the result back with compare-and-swap.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::net;

/// Who holds an address: the handle it is released by, plus descriptive attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    #[serde(rename = "handle_id", default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secondary: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub cidr: IpNetwork,
    /// `host:<node>` of the host the block is affine to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    #[serde(rename = "strictAffinity", default)]
    pub strict_affinity: bool,
    /// One slot per address: the index into `attributes` of its holder, or null when free.
    pub allocations: Vec<Option<usize>>,
    /// Free ordinals, in the order they are handed out (released ones go to the back, so an
    /// address is not reused straight away).
    pub unallocated: Vec<usize>,
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    #[serde(default)]
    pub deleted: bool,
}

impl Block {
    /// An empty block affine to `host`.
    pub fn new(cidr: IpNetwork, host: &str) -> Block {
        let size = net::size(&cidr) as usize;
        Block {
            cidr,
            affinity: Some(format!("host:{host}")),
            strict_affinity: false,
            allocations: vec![None; size],
            unallocated: (0..size).collect(),
            attributes: Vec::new(),
            deleted: false,
        }
    }

    /// The node this block is affine to.
    pub fn host(&self) -> Option<&str> {
        self.affinity.as_deref().and_then(|a| a.strip_prefix("host:"))
    }

    pub fn size(&self) -> usize {
        self.allocations.len()
    }

    pub fn free(&self) -> usize {
        self.unallocated.len()
    }

    pub fn used(&self) -> usize {
        self.allocations.iter().filter(|a| a.is_some()).count()
    }

    fn ip(&self, ordinal: usize) -> IpAddr {
        net::nth(&self.cidr, ordinal as u128)
    }

    fn ordinal(&self, ip: IpAddr) -> Option<usize> {
        net::offset(&self.cidr, ip).map(|o| o as usize).filter(|o| *o < self.size())
    }

    fn attribute_for(&mut self, attr: Attribute) -> usize {
        if let Some(i) = self.attributes.iter().position(|a| *a == attr) {
            return i;
        }
        self.attributes.push(attr);
        self.attributes.len() - 1
    }

    /// Take the next free address for `attr`, if any.
    pub fn allocate(&mut self, attr: &Attribute) -> Option<IpAddr> {
        if self.unallocated.is_empty() {
            return None;
        }
        let ordinal = self.unallocated.remove(0);
        let index = self.attribute_for(attr.clone());
        self.allocations[ordinal] = Some(index);
        Some(self.ip(ordinal))
    }

    /// Take exactly `ip` for `attr`. `Ok(false)` if it is already taken.
    pub fn allocate_ip(&mut self, ip: IpAddr, attr: &Attribute) -> Option<bool> {
        let ordinal = self.ordinal(ip)?;
        let Some(pos) = self.unallocated.iter().position(|o| *o == ordinal) else {
            return Some(false);
        };
        self.unallocated.remove(pos);
        let index = self.attribute_for(attr.clone());
        self.allocations[ordinal] = Some(index);
        Some(true)
    }

    /// The holder of `ip`, if it is allocated.
    pub fn holder(&self, ip: IpAddr) -> Option<&Attribute> {
        let index = (*self.allocations.get(self.ordinal(ip)?)?)?;
        self.attributes.get(index)
    }

    /// Every address held by `handle`.
    pub fn ips_of(&self, handle: &str) -> Vec<IpAddr> {
        self.allocations
            .iter()
            .enumerate()
            .filter(|(_, a)| self.handle_at(**a) == Some(handle))
            .map(|(o, _)| self.ip(o))
            .collect()
    }

    /// Every allocated address with its handle (`None` for an allocation without one).
    pub fn allocated(&self) -> impl Iterator<Item = (IpAddr, Option<&str>)> + '_ {
        self.allocations.iter().enumerate().filter_map(|(o, a)| Some((self.ip(o), self.handle_at(Some((*a)?)))))
    }

    fn handle_at(&self, slot: Option<usize>) -> Option<&str> {
        self.attributes.get(slot?)?.handle_id.as_deref()
    }

    /// Free every address held by `handle`; returns them.
    pub fn release_handle(&mut self, handle: &str) -> Vec<IpAddr> {
        let ordinals: Vec<usize> =
            (0..self.size()).filter(|o| self.handle_at(self.allocations[*o]) == Some(handle)).collect();
        self.release_ordinals(&ordinals)
    }

    /// Free `ip`; returns its handle (None inside when it had none). `None` if it was free.
    pub fn release_ip(&mut self, ip: IpAddr) -> Option<Option<String>> {
        let ordinal = self.ordinal(ip)?;
        let slot = self.allocations[ordinal]?;
        let handle = self.attributes.get(slot).and_then(|a| a.handle_id.clone());
        self.release_ordinals(&[ordinal]);
        Some(handle)
    }

    fn release_ordinals(&mut self, ordinals: &[usize]) -> Vec<IpAddr> {
        for &o in ordinals {
            self.allocations[o] = None;
            self.unallocated.push(o);
        }
        self.compact_attributes();
        ordinals.iter().map(|o| self.ip(*o)).collect()
    }

    /// Drop attributes no allocation refers to, renumbering the references.
    fn compact_attributes(&mut self) {
        let mut remap = vec![None; self.attributes.len()];
        let mut kept = Vec::new();
        for slot in self.allocations.iter_mut().flatten() {
            let new = *remap[*slot].get_or_insert_with(|| {
                kept.push(self.attributes[*slot].clone());
                kept.len() - 1
            });
            *slot = new;
        }
        self.attributes = kept;
    }

    /// Allocated addresses per handle (`None` for allocations without a handle).
    pub fn counts_by_handle(&self) -> BTreeMap<Option<String>, usize> {
        let mut counts = BTreeMap::new();
        for slot in self.allocations.iter().flatten() {
            let h = self.attributes.get(*slot).and_then(|a| a.handle_id.clone());
            *counts.entry(h).or_default() += 1;
        }
        counts
    }

    /// Internal inconsistencies, as human-readable problems (empty when sound).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let size = net::size(&self.cidr) as usize;
        if self.allocations.len() != size {
            problems.push(format!("has {} slots for {} addresses", self.allocations.len(), size));
        }
        let mut seen = vec![false; self.allocations.len()];
        for &o in &self.unallocated {
            match seen.get_mut(o) {
                None => problems.push(format!("free list names ordinal {o} outside the block")),
                Some(true) => problems.push(format!("free list names ordinal {o} twice")),
                Some(s) => *s = true,
            }
            if self.allocations.get(o).is_some_and(Option::is_some) {
                problems.push(format!("ordinal {o} is both allocated and free"));
            }
        }
        if self.used() + self.free() != self.allocations.len() {
            problems.push(format!(
                "counts disagree: {} used + {} free != {} addresses",
                self.used(),
                self.free(),
                self.allocations.len()
            ));
        }
        for (o, slot) in self.allocations.iter().enumerate() {
            if let Some(i) = slot {
                if *i >= self.attributes.len() {
                    problems.push(format!("{} refers to missing attribute {i}", self.ip(o)));
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(h: &str) -> Attribute {
        Attribute { handle_id: Some(h.into()), secondary: BTreeMap::new() }
    }

    #[test]
    fn allocates_in_order_and_releases_to_the_back() {
        let mut b = Block::new("10.0.0.0/30".parse().unwrap(), "n1");
        assert_eq!(b.allocate(&attr("a")), Some("10.0.0.0".parse().unwrap()));
        assert_eq!(b.allocate(&attr("b")), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(b.release_handle("a"), vec!["10.0.0.0".parse::<IpAddr>().unwrap()]);
        assert_eq!(b.allocate(&attr("c")), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(b.allocate(&attr("c")), Some("10.0.0.3".parse().unwrap()));
        assert_eq!(b.allocate(&attr("d")), Some("10.0.0.0".parse().unwrap()));
        assert_eq!(b.allocate(&attr("e")), None);
        assert_eq!(b.ips_of("c").len(), 2);
        assert!(b.problems().is_empty(), "{:?}", b.problems());
        assert_eq!(b.attributes.len(), 3, "attributes are shared and compacted");
    }

    #[test]
    fn specific_ip_and_release_by_ip() {
        let mut b = Block::new("fd00::/126".parse().unwrap(), "n1");
        let ip: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(b.allocate_ip(ip, &attr("a")), Some(true));
        assert_eq!(b.allocate_ip(ip, &attr("b")), Some(false));
        assert_eq!(b.allocate_ip("fd00::9".parse().unwrap(), &attr("b")), None);
        assert_eq!(b.holder(ip).and_then(|a| a.handle_id.as_deref()), Some("a"));
        assert_eq!(b.release_ip(ip), Some(Some("a".into())));
        assert_eq!(b.release_ip(ip), None);
        assert!(b.problems().is_empty());
    }

    #[test]
    fn json_is_calicos_shape() {
        let mut b = Block::new("10.0.0.0/31".parse().unwrap(), "n1");
        b.allocate(&attr("h"));
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["affinity"], "host:n1");
        assert_eq!(v["allocations"], serde_json::json!([0, null]));
        assert_eq!(v["unallocated"], serde_json::json!([1]));
        assert_eq!(v["attributes"][0]["handle_id"], "h");
        assert_eq!(v["strictAffinity"], false);
    }

    #[test]
    fn detects_corruption() {
        let mut b = Block::new("10.0.0.0/30".parse().unwrap(), "n1");
        b.unallocated.push(1);
        b.allocations[3] = Some(7);
        assert!(!b.problems().is_empty());
    }
}
