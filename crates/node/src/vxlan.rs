//! VXLAN between hosts, as Felix does it: one device `vxlan.calico` (VNI 4096, UDP 4789,
//! learning off, a MAC derived from the node name) holding this node's tunnel address (a
//! /32 allocated through IPAM with the handle `vxlan-tunnel-addr-<node>`), and for each
//! remote node a permanent ARP entry (its tunnel address → its MAC) and FDB entry (its MAC →
//! its host address). Routes to its blocks then go `via <its tunnel address> dev
//! vxlan.calico onlink` (see `routes.rs`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use dataplane::{FdbEntry, NeighbourSpec, VxlanSpec};
use datastore::Datastore;
use ipnetwork::{IpNetwork, Ipv4Network};
use model::pool::EncapMode;

use crate::cluster::Cluster;
use crate::kernel::Kernel;
use crate::local::Local;
use crate::{chain, Result};

/// The device name.
pub const DEVICE: &str = "vxlan.calico";
/// The VXLAN network identifier (Felix's default).
pub const VNI: u32 = 4096;
/// The UDP port (IANA's, Felix's default).
pub const PORT: u16 = 4789;
/// What VXLAN over IPv4 adds to a packet: outer IPv4 20, UDP 8, VXLAN 8, inner Ethernet 14.
pub const OVERHEAD: u32 = 50;

/// The IPAM handle of a node's VXLAN tunnel address.
pub fn handle(node: &str) -> String {
    format!("vxlan-tunnel-addr-{node}")
}

/// A remote VTEP: how to reach a node's tunnel address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Vtep {
    tunnel: Ipv4Addr,
    mac: [u8; 6],
    host: Ipv4Addr,
}

/// This node's VXLAN state.
#[derive(Debug, Default)]
pub struct Vxlan {
    /// The device's index once it is set up.
    pub index: Option<u32>,
    /// This node's tunnel address.
    pub tunnel: Option<Ipv4Addr>,
    /// `--vxlan-mtu`, else the uplink's MTU − [`OVERHEAD`].
    pub mtu_override: Option<u32>,
    /// VTEPs programmed, by node.
    vteps: BTreeMap<String, Vtep>,
}

/// The IPv4 address the IPAM handle `id` holds in one of `pools`, or a new one from them
/// (an address held outside them is released first). `what` names the tunnel in messages.
pub(crate) fn allocate(ipam: &ipam::Ipam<'_>, pools: &[IpNetwork], id: &str, what: &str) -> Result<Ipv4Addr> {
    let held: Vec<Ipv4Addr> = ipam
        .ips_of_handle(id)?
        .into_iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    if let Some(ip) = held.iter().find(|ip| pools.iter().any(|p| p.contains(IpAddr::V4(**ip)))) {
        return Ok(*ip);
    }
    if !held.is_empty() {
        ipam.release_handle(id)?;
    }
    let owner = ipam::Owner { handle: id.into(), plugin: "calico-node".into(), ..ipam::Owner::default() };
    let request = ipam::Request { owner, v4: Some(pools.to_vec()), v6: None, ips: Vec::new() };
    let assigned = ipam.assign(&request)?;
    let ip = assigned.iter().find_map(|a| match a.ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    });
    let ip =
        ip.ok_or_else(|| crate::Error::Pool { pool: pools[0], reason: format!("IPAM gave no {what} tunnel address") })?;
    tracing::info!(%ip, "allocated this node's {what} tunnel address");
    Ok(ip)
}

/// The IPv4 pools that use VXLAN.
fn vxlan_pools(cluster: &Cluster) -> Vec<IpNetwork> {
    cluster.pools.values().filter(|p| p.cidr.is_ipv4() && p.vxlan != EncapMode::Off).map(|p| p.cidr).collect()
}

impl Vxlan {
    /// Nothing set up yet; `mtu` as `--vxlan-mtu`.
    pub fn new(mtu: Option<u32>) -> Vxlan {
        Vxlan { mtu_override: mtu, ..Vxlan::default() }
    }

    /// Make the device and the tunnel address match the pools: with a VXLAN pool, allocate
    /// the address (or keep the one held) and set up the device; with none, release the
    /// address and delete the device. Returns true when this node's record must be written
    /// again (its tunnel address changed).
    pub fn ensure(
        &mut self,
        store: &dyn Datastore,
        kernel: &dyn Kernel,
        cluster: &Cluster,
        local: &Local,
    ) -> Result<bool> {
        let pools = vxlan_pools(cluster);
        let ipam = ipam::Ipam::new(store, local.name.clone());
        let before = self.tunnel;
        let (Some(v4), false) = (local.ipv4, pools.is_empty()) else {
            if kernel.vxlan(DEVICE)?.is_some() {
                tracing::info!("no VXLAN pool left: deleting {DEVICE}");
                kernel.delete_link(DEVICE)?;
            }
            if !ipam.release_handle(&handle(&local.name))?.is_empty() {
                tracing::info!("released this node's VXLAN tunnel address");
            }
            self.index = None;
            self.tunnel = None;
            self.vteps.clear();
            return Ok(before.is_some());
        };
        let tunnel = allocate(&ipam, &pools, &handle(&local.name), "VXLAN")?;
        let spec = VxlanSpec {
            name: DEVICE.into(),
            vni: VNI,
            port: PORT,
            local: v4.ip(),
            parent: local.uplink.index,
            mac: dataplane::vxlan_mac(&local.name),
            mtu: self.mtu(local),
            learning: false,
        };
        let index = match kernel.vxlan(DEVICE)? {
            Some(found) if found.up && VxlanSpec { mtu: spec.mtu, ..found.spec.clone() } == spec => {
                if found.spec.mtu != spec.mtu {
                    kernel.set_mtu(found.index, spec.mtu)?;
                }
                found.index
            }
            found => {
                if found.is_some() {
                    tracing::info!("{DEVICE} has other settings: recreating it");
                    kernel.delete_link(DEVICE)?;
                    self.vteps.clear();
                }
                let index = kernel.create_vxlan(&spec)?;
                tracing::info!(vni = VNI, port = PORT, mtu = spec.mtu, "created {DEVICE}");
                index
            }
        };
        let want = IpNetwork::V4(Ipv4Network::from(tunnel));
        let held = kernel.addresses(index)?;
        for other in held.iter().filter(|a| a.is_ipv4() && **a != want) {
            kernel.delete_address(index, *other)?;
        }
        if !held.contains(&want) {
            kernel.add_address(index, want)?;
        }
        self.index = Some(index);
        self.tunnel = Some(tunnel);
        Ok(before != self.tunnel)
    }

    /// The device's MTU: `--vxlan-mtu`, else the uplink's − [`OVERHEAD`].
    pub fn mtu(&self, local: &Local) -> u32 {
        self.mtu_override.unwrap_or(local.uplink.mtu.saturating_sub(OVERHEAD))
    }

    /// The VTEPs the cluster's node records describe (every remote node with a tunnel
    /// address, a MAC and an IPv4 address).
    fn wanted(cluster: &Cluster, me: &str) -> BTreeMap<String, Vtep> {
        cluster
            .nodes
            .values()
            .filter(|n| n.name != me)
            .filter_map(|n| {
                let vtep = Vtep { tunnel: n.vxlan_tunnel_addr?, mac: n.vxlan_tunnel_mac?.0, host: n.ipv4_addr()? };
                Some((n.name.clone(), vtep))
            })
            .collect()
    }

    /// Bring the ARP and FDB entries to the node records: against the kernel's entries when
    /// `full`, else against what was programmed last. Returns what failed.
    pub fn sync_vteps(&mut self, kernel: &dyn Kernel, cluster: &Cluster, me: &str, full: bool) -> Vec<String> {
        let Some(index) = self.index else {
            self.vteps.clear();
            return Vec::new();
        };
        let wanted = Self::wanted(cluster, me);
        let mut failures = Vec::new();
        let mut fail = |what: String, e: dataplane::Error| {
            let line = format!("{what}: {}", chain(&e));
            tracing::error!("{line}");
            failures.push(line);
        };
        let (arp, fdb): (Vec<NeighbourSpec>, Vec<FdbEntry>) = if full {
            let arp = match kernel.neighbours(index) {
                Ok(found) => {
                    found.into_iter().filter_map(|n| Some(NeighbourSpec { index, ip: n.ip, mac: n.mac? })).collect()
                }
                Err(e) => {
                    fail(format!("list the neighbours of {DEVICE}"), e);
                    return failures;
                }
            };
            let fdb = match kernel.fdb(index) {
                Ok(found) => found,
                Err(e) => {
                    fail(format!("list the FDB of {DEVICE}"), e);
                    return failures;
                }
            };
            (arp, fdb)
        } else {
            let arp =
                self.vteps.values().map(|v| NeighbourSpec { index, ip: IpAddr::V4(v.tunnel), mac: v.mac }).collect();
            let fdb = self.vteps.values().map(|v| FdbEntry { mac: v.mac, dst: IpAddr::V4(v.host) }).collect();
            (arp, fdb)
        };
        let want_arp: Vec<NeighbourSpec> =
            wanted.values().map(|v| NeighbourSpec { index, ip: IpAddr::V4(v.tunnel), mac: v.mac }).collect();
        let want_fdb: Vec<FdbEntry> =
            wanted.values().map(|v| FdbEntry { mac: v.mac, dst: IpAddr::V4(v.host) }).collect();
        // The device is ours alone: whatever it holds that no node record asks for goes. An
        // entry that changed is replaced in place, never deleted first.
        for stale in arp.iter().filter(|a| !want_arp.iter().any(|w| w.ip == a.ip)) {
            if let Err(e) = kernel.delete_neighbour(stale) {
                fail(format!("delete {stale}"), e);
            }
        }
        for stale in fdb.iter().filter(|f| !want_fdb.iter().any(|w| w.mac == f.mac)) {
            if let Err(e) = kernel.delete_fdb(index, stale) {
                fail(format!("delete {stale}"), e);
            }
        }
        for entry in want_arp.iter().filter(|w| !arp.contains(w)) {
            if let Err(e) = kernel.add_neighbour(entry) {
                fail(format!("add {entry}"), e);
            }
        }
        for entry in want_fdb.iter().filter(|w| !fdb.contains(w)) {
            if let Err(e) = kernel.add_fdb(index, entry) {
                fail(format!("add {entry}"), e);
            }
        }
        self.vteps = wanted;
        failures
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use dataplane::{RouteTarget, TaggedRoute};
    use datastore::memory::MemoryStore;
    use datastore::{Datastore, Op};

    use super::*;
    use crate::agent::{Agent, Config};
    use crate::health::Health;
    use crate::kernel::FakeKernel;
    use crate::local::AddressChoice;
    use crate::routes::PROTOCOL;

    fn config(name: &str, ip: &str) -> Config {
        Config {
            name: name.into(),
            addresses: AddressChoice { ipv4: Some(ip.parse().unwrap()), ..AddressChoice::default() },
            as_number: None,
            resync_interval: Duration::from_secs(90),
            vxlan_mtu: None,
            ipip_mtu: None,
            mtu_file: None,
            bgp: None,
        }
    }

    fn once(store: &MemoryStore, kernel: &FakeKernel, name: &str, ip: &str) {
        Agent::new(store, kernel, Arc::new(Health::new()), config(name, ip)).unwrap().run_once().unwrap();
    }

    fn node(store: &MemoryStore, name: &str) -> model::node::Node {
        crate::register::read(store, name).unwrap().unwrap()
    }

    const POOL: &str = "/calico/v1/ipam/v4/pool/10.244.0.0-16";

    #[test]
    fn two_nodes_meet_over_vxlan_and_part_when_the_pool_goes() {
        let store = MemoryStore::new();
        store
            .txn(
                &[],
                &[Op::Put {
                    key: POOL.into(),
                    value: br#"{"cidr":"10.244.0.0/16","block_size":26,"vxlan":"always"}"#.to_vec(),
                }],
            )
            .unwrap();
        let (ka, kb) = (FakeKernel::with_uplink(&["10.9.0.1/24"]), FakeKernel::with_uplink(&["10.9.0.2/24"]));
        once(&store, &ka, "a", "10.9.0.1/24");
        once(&store, &kb, "b", "10.9.0.2/24");
        once(&store, &ka, "a", "10.9.0.1/24");
        let (a, b) = (node(&store, "a"), node(&store, "b"));
        let (ta, tb) = (a.vxlan_tunnel_addr.expect("a's tunnel"), b.vxlan_tunnel_addr.expect("b's tunnel"));
        assert_eq!(a.vxlan_tunnel_mac.map(|m| m.0), Some(dataplane::vxlan_mac("a")));

        let state = ka.state.lock().unwrap().clone();
        let device = state.vxlans.iter().find(|v| v.spec.name == DEVICE).expect("vxlan.calico on a");
        let expected = VxlanSpec {
            name: DEVICE.into(),
            vni: 4096,
            port: 4789,
            local: "10.9.0.1".parse().unwrap(),
            parent: 2,
            mac: dataplane::vxlan_mac("a"),
            mtu: 1450,
            learning: false,
        };
        assert_eq!(device.spec, expected);
        let index = device.index;
        let addresses = &state.links.iter().find(|(l, _)| l.index == index).unwrap().1;
        assert_eq!(addresses, &vec![IpNetwork::V4(Ipv4Network::from(ta))]);
        let b_mac = dataplane::vxlan_mac("b");
        assert_eq!(state.neighbours, vec![NeighbourSpec { index, ip: IpAddr::V4(tb), mac: b_mac }]);
        assert_eq!(state.fdb, vec![(index, FdbEntry { mac: b_mac, dst: "10.9.0.2".parse().unwrap() })]);
        let b_block = model::net::block_of(IpAddr::V4(tb), 26);
        let routes = ka.routes_of(PROTOCOL);
        let via_b = TaggedRoute {
            dst: b_block,
            target: RouteTarget::Via { gateway: IpAddr::V4(tb), oif: index, onlink: true },
            protocol: PROTOCOL,
            metric: 0,
        };
        assert!(routes.contains(&via_b), "{routes:?}");
        let a_block = model::net::block_of(IpAddr::V4(ta), 26);
        assert!(routes.iter().any(|r| r.dst == a_block && r.target == RouteTarget::Blackhole), "{routes:?}");

        // A restart keeps everything: the record is written with the tunnel address kept.
        ka.take_calls();
        once(&store, &ka, "a", "10.9.0.1/24");
        assert_eq!(node(&store, "a").vxlan_tunnel_addr, Some(ta));
        let writes: Vec<_> =
            ka.take_calls().into_iter().filter(|c| !matches!(c, crate::kernel::Call::ListRoutes(_))).collect();
        assert!(writes.is_empty(), "{writes:?}");

        // No VXLAN pool left: the device goes and the address is released.
        store.txn(&[], &[Op::Delete { key: POOL.into() }]).unwrap();
        once(&store, &ka, "a", "10.9.0.1/24");
        assert!(ka.state.lock().unwrap().vxlans.is_empty());
        assert_eq!(node(&store, "a").vxlan_tunnel_addr, None);
        let ipam = ipam::Ipam::new(&store as &dyn Datastore, "a");
        assert!(ipam.ips_of_handle(&handle("a")).unwrap().is_empty());
    }

    #[test]
    fn a_device_with_other_settings_is_recreated() {
        let store = MemoryStore::new();
        store
            .txn(
                &[],
                &[Op::Put {
                    key: POOL.into(),
                    value: br#"{"cidr":"10.244.0.0/16","block_size":26,"vxlan":"always"}"#.to_vec(),
                }],
            )
            .unwrap();
        let kernel = FakeKernel::with_uplink(&["10.9.0.1/24"]);
        once(&store, &kernel, "a", "10.9.0.1/24");
        kernel.state.lock().unwrap().vxlans[0].spec.learning = true;
        kernel.take_calls();
        once(&store, &kernel, "a", "10.9.0.1/24");
        let calls = kernel.take_calls();
        assert!(calls.contains(&crate::kernel::Call::Change(format!("delete {DEVICE}"))), "{calls:?}");
        assert!(!kernel.state.lock().unwrap().vxlans[0].spec.learning);
    }
}
