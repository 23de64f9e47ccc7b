//! Outgoing NAT: the pool sets of the `inet calico` table (crates/firewall) kept equal to
//! the datastore's pools, as Felix's masq manager keeps its ipsets.
//!
//! - `all-pools4/6` holds every pool (traffic to these is never masqueraded), and
//!   `masq-pools4/6` the `nat_outgoing` ones (a disabled pool keeps both: its containers
//!   still run).
//! - A pool change from the watch adds or removes just its elements (one batch), so a pool
//!   removed or its NAT turned off takes effect at once.
//! - Each full sync makes sure the table exists (someone may have deleted it: it comes back
//!   with its rules), lists the pool sets and repairs any difference. Port mappings are
//!   calico-cni's; only when the table had to be created again does the agent put back
//!   this host's, from the endpoint records ([`restore_mappings`]).

use std::collections::BTreeSet;

use firewall::{Element, Firewall, PoolSet};

use crate::cluster::Cluster;
use crate::Result;

/// The pool set elements the pools of `cluster` call for.
pub fn want(cluster: &Cluster) -> BTreeSet<Element> {
    let mut out = BTreeSet::new();
    for pool in cluster.pools.values() {
        out.insert(Element::Pool { set: PoolSet::All, cidr: pool.cidr });
        if pool.nat_outgoing {
            out.insert(Element::Pool { set: PoolSet::Masq, cidr: pool.cidr });
        }
    }
    out
}

/// What one sync changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatReport {
    pub added: usize,
    pub removed: usize,
    /// The table was not there (someone deleted it) and was created again.
    pub table_created: bool,
}

/// The pool sets as last programmed.
#[derive(Debug, Default)]
pub struct Nat {
    /// What the table held after the last sync; `None` before the first full one.
    programmed: Option<BTreeSet<Element>>,
}

impl Nat {
    /// Bring the pool sets to `cluster`'s pools. `full`: make sure the table exists and
    /// compare with what the kernel holds; otherwise only the difference with the last sync
    /// is written (no read at all when the pools did not change what is wanted).
    pub fn sync(&mut self, fw: &dyn Firewall, cluster: &Cluster, full: bool) -> Result<NatReport> {
        let want = want(cluster);
        let mut table_created = false;
        let have = match (&self.programmed, full) {
            (Some(programmed), false) => programmed.clone(),
            _ => {
                // Forgotten until the listing says otherwise: a failure below means a full
                // sync again next time.
                self.programmed = None;
                table_created = fw.ensure_table()?;
                fw.list()?.into_iter().filter(|e| matches!(e, Element::Pool { .. })).collect()
            }
        };
        let add: Vec<Element> = want.difference(&have).cloned().collect();
        let remove: Vec<Element> = have.difference(&want).cloned().collect();
        if !remove.is_empty() {
            self.programmed = None;
            fw.remove(&remove)?;
        }
        if !add.is_empty() {
            self.programmed = None;
            fw.add(&add)?;
        }
        for e in &add {
            tracing::info!(element = %e, "added to the pool sets");
        }
        for e in &remove {
            tracing::info!(element = %e, "removed from the pool sets");
        }
        self.programmed = Some(want);
        Ok(NatReport { added: add.len(), removed: remove.len(), table_created })
    }
}

/// After the table was made again (deleted, or another version's): the port mappings of this host's `endpoints`, as
/// their records hold them, are put back (one batch). Only then, so that the agent never
/// races calico-cni's ADD and DEL, which own the mappings. How many elements were added.
pub fn restore_mappings(fw: &dyn Firewall, endpoints: &[model::endpoint::Endpoint]) -> Result<usize> {
    let elements: Vec<Element> = endpoints
        .iter()
        .flat_map(|ep| {
            firewall::port_elements(&ep.port_mappings, &firewall::owner(&ep.network, &ep.container_id, &ep.ifname))
        })
        .collect();
    if !elements.is_empty() {
        fw.add(&elements)?;
    }
    Ok(elements.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Dirty;
    use firewall::fake::{Call, Recording};
    use firewall::{PortMap, Proto};

    fn pool(cidr: &str, nat: bool) -> (String, Vec<u8>) {
        let mut p = model::pool::Pool::new(cidr.parse().unwrap());
        p.nat_outgoing = nat;
        (model::keys::pool(&p.cidr), model::encode(&p))
    }

    fn cluster(pools: &[(&str, bool)]) -> Cluster {
        let mut c = Cluster::default();
        for (cidr, nat) in pools {
            let (k, v) = pool(cidr, *nat);
            c.apply("me", &k, Some(&v), &mut Dirty::default()).unwrap();
        }
        c
    }

    fn el(set: PoolSet, cidr: &str) -> Element {
        Element::Pool { set, cidr: cidr.parse().unwrap() }
    }

    fn writes(fw: &Recording) -> Vec<Call> {
        fw.calls.borrow_mut().drain(..).filter(|c| matches!(c, Call::Add(_) | Call::Remove(_))).collect()
    }

    #[test]
    fn the_sets_follow_the_pools_and_leave_port_mappings_alone() {
        let fw = Recording::new();
        let port = Element::Port {
            map: PortMap { proto: Proto::Tcp, host_ip: None, host_port: 80, target: "10.0.0.5:80".parse().unwrap() },
            owner: "net/c1/eth0".into(),
        };
        // Left by calico-cni: a mapping, and a pool the datastore no longer has.
        fw.elements.borrow_mut().extend([port.clone(), el(PoolSet::All, "10.9.0.0/24")]);
        fw.table.set(true);
        let mut nat = Nat::default();
        let report = nat.sync(&fw, &cluster(&[("10.0.0.0/24", true), ("10.1.0.0/24", false)]), true).unwrap();
        assert_eq!(report, NatReport { added: 3, removed: 1, table_created: false });
        let mut have = fw.elements.borrow().clone();
        have.sort();
        assert_eq!(
            have,
            vec![
                el(PoolSet::All, "10.0.0.0/24"),
                el(PoolSet::All, "10.1.0.0/24"),
                el(PoolSet::Masq, "10.0.0.0/24"),
                port.clone(),
            ]
        );
        assert_eq!(fw.calls.borrow()[0], Call::EnsureTable, "a full sync makes sure of the table first");
        fw.calls.borrow_mut().clear();

        // NAT turned off: one removal, nothing read.
        let report = nat.sync(&fw, &cluster(&[("10.0.0.0/24", false), ("10.1.0.0/24", false)]), false).unwrap();
        assert_eq!(report, NatReport { added: 0, removed: 1, table_created: false });
        assert_eq!(*fw.calls.borrow(), vec![Call::Remove(vec![el(PoolSet::Masq, "10.0.0.0/24")])]);
        fw.calls.borrow_mut().clear();
        // A pool removed: its element goes; an unchanged view writes nothing.
        nat.sync(&fw, &cluster(&[("10.0.0.0/24", false)]), false).unwrap();
        assert_eq!(writes(&fw), vec![Call::Remove(vec![el(PoolSet::All, "10.1.0.0/24")])]);
        nat.sync(&fw, &cluster(&[("10.0.0.0/24", false)]), false).unwrap();
        assert!(fw.calls.borrow().is_empty());
        assert!(fw.elements.borrow().contains(&port), "port mappings are calico-cni's");
    }

    #[test]
    fn a_full_sync_repairs_drift_and_a_failure_means_a_full_sync_next_time() {
        let fw = Recording::new();
        let view = cluster(&[("10.0.0.0/24", true)]);
        let mut nat = Nat::default();
        nat.sync(&fw, &view, true).unwrap();
        // Someone deletes the table: the next full sync makes it again and refills it.
        fw.elements.borrow_mut().clear();
        fw.calls.borrow_mut().clear();
        assert!(!nat.sync(&fw, &view, true).unwrap().table_created, "the table was there");
        fw.table.set(false);
        assert!(nat.sync(&fw, &view, true).unwrap().table_created, "made again");
        assert_eq!(fw.calls.borrow()[0], Call::EnsureTable);
        assert_eq!(fw.elements.borrow().len(), 2);

        // A write fails: the incremental path reads the kernel again next time.
        fw.fail.borrow_mut().push("add");
        let more = cluster(&[("10.0.0.0/24", true), ("10.2.0.0/24", true)]);
        assert!(nat.sync(&fw, &more, false).is_err());
        fw.fail.borrow_mut().clear();
        fw.calls.borrow_mut().clear();
        nat.sync(&fw, &more, false).unwrap();
        assert!(fw.calls.borrow().contains(&Call::List), "{:?}", fw.calls.borrow());
        assert_eq!(fw.elements.borrow().len(), 4);
    }

    #[test]
    fn a_table_made_again_gets_the_hosts_port_mappings_back_from_the_records() {
        let fw = Recording::new();
        let mapping = |port: u16| model::endpoint::PortMapping {
            protocol: "tcp".into(),
            host_ip: None,
            host_port: port,
            container_ip: "10.0.0.5".parse().unwrap(),
            container_port: 80,
        };
        let ep = |id: &str, ports: Vec<model::endpoint::PortMapping>| model::endpoint::Endpoint {
            node: "me".into(),
            orchestrator: "cni".into(),
            workload_id: id.into(),
            container_id: id.into(),
            ifname: "eth0".into(),
            netns: String::new(),
            network: "net".into(),
            host_veth: "cali0".into(),
            mac: String::new(),
            ips: vec!["10.0.0.5/32".into()],
            result: serde_json::Value::Null,
            port_mappings: ports,
            profiles: vec![],
        };
        let n = restore_mappings(&fw, &[ep("a", vec![mapping(8080), mapping(8081)]), ep("b", vec![])]).unwrap();
        assert_eq!(n, 3, "two ports and the address's hairpin element");
        let held = fw.elements.borrow();
        assert!(held.iter().all(|e| e.owner() == Some("net/a/eth0")), "{held:?}");
        assert_eq!(restore_mappings(&fw, &[ep("b", vec![])]).unwrap(), 0);
    }
}
