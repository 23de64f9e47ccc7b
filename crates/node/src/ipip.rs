//! IPIP between hosts, as Felix does it: the kernel's own `tunl0` (which the IPIP module
//! makes in every network namespace; we never create it), up, with MTU uplink − 20, holding
//! this node's tunnel address as a /32 (allocated through IPAM with the handle
//! `ipip-tunnel-addr-<node>`). Routes to remote blocks then go `via <its host address> dev
//! tunl0 onlink` (see `routes.rs`): tunl0 has no remote end of its own, the route's gateway
//! is the outer destination.

use std::net::{IpAddr, Ipv4Addr};

use datastore::Datastore;
use ipnetwork::{IpNetwork, Ipv4Network};
use model::pool::EncapMode;

use crate::cluster::Cluster;
use crate::kernel::Kernel;
use crate::local::Local;
use crate::Result;

/// The device name (the kernel's fallback IPIP device).
pub const DEVICE: &str = "tunl0";
/// What IPIP adds to a packet: the outer IPv4 header.
pub const OVERHEAD: u32 = 20;

/// The IPAM handle of a node's IPIP tunnel address.
pub fn handle(node: &str) -> String {
    format!("ipip-tunnel-addr-{node}")
}

/// This node's IPIP state.
#[derive(Debug, Default)]
pub struct Ipip {
    /// tunl0's index once it is set up.
    pub index: Option<u32>,
    /// This node's tunnel address.
    pub tunnel: Option<Ipv4Addr>,
    /// tunl0 was there when last looked for (the kernel has CONFIG_NET_IPIP, and the module
    /// is loaded).
    pub present: bool,
    /// tunl0's MTU when set by `--ipip-mtu`, else the uplink's − [`OVERHEAD`].
    pub mtu: Option<u32>,
}

/// The IPv4 pools that use IPIP.
fn ipip_pools(cluster: &Cluster) -> Vec<IpNetwork> {
    cluster.pools.values().filter(|p| p.cidr.is_ipv4() && p.ipip != EncapMode::Off).map(|p| p.cidr).collect()
}

impl Ipip {
    /// Make tunl0 and the tunnel address match the pools: with an IPIP pool and a tunl0,
    /// allocate the address (or keep the one held), set tunl0 up with its MTU and the
    /// address; otherwise release the address and take it off tunl0 (which stays: it is
    /// the kernel's). Returns true when this node's record must be written again.
    pub fn ensure(
        &mut self,
        store: &dyn Datastore,
        kernel: &dyn Kernel,
        cluster: &Cluster,
        local: &Local,
    ) -> Result<bool> {
        let pools = ipip_pools(cluster);
        let ipam = ipam::Ipam::new(store, local.name.clone());
        let before = self.tunnel;
        let device = kernel.links()?.into_iter().find(|l| l.name == DEVICE);
        self.present = device.is_some();
        let (Some(_), false, Some(link)) = (local.ipv4, pools.is_empty(), device.clone()) else {
            // No IPIP pool, or no tunl0 (the kernel lacks CONFIG_NET_IPIP: routes.rs says so
            // for each IPIP pool).
            let released = ipam.release_handle(&handle(&local.name))?;
            if !released.is_empty() {
                tracing::info!("released this node's IPIP tunnel address");
            }
            if let Some(link) = device {
                let ours: Vec<IpNetwork> = released
                    .into_iter()
                    .chain(before.map(IpAddr::V4))
                    .map(|ip| IpNetwork::new(ip, 32).expect("a /32"))
                    .collect();
                for address in kernel.addresses(link.index)?.into_iter().filter(|a| ours.contains(a)) {
                    kernel.delete_address(link.index, address)?;
                }
            }
            self.index = None;
            self.tunnel = None;
            return Ok(before.is_some());
        };
        let tunnel = crate::vxlan::allocate(&ipam, &pools, &handle(&local.name), "IPIP")?;
        let mtu = self.mtu(local);
        if link.mtu != mtu {
            kernel.set_mtu(link.index, mtu)?;
            tracing::info!(mtu, "set the MTU of {DEVICE}");
        }
        if !link.up {
            kernel.set_up(link.index)?;
            tracing::info!("set {DEVICE} up");
        }
        let want = IpNetwork::V4(Ipv4Network::from(tunnel));
        let held = kernel.addresses(link.index)?;
        for other in held.iter().filter(|a| a.is_ipv4() && **a != want) {
            kernel.delete_address(link.index, *other)?;
        }
        if !held.contains(&want) {
            kernel.add_address(link.index, want)?;
        }
        self.index = Some(link.index);
        self.tunnel = Some(tunnel);
        Ok(before != self.tunnel)
    }

    /// tunl0 with the MTU `--ipip-mtu` gave, if any.
    pub fn new(mtu: Option<u32>) -> Ipip {
        Ipip { mtu, ..Ipip::default() }
    }

    /// tunl0's MTU: `--ipip-mtu`, else the uplink's − [`OVERHEAD`].
    pub fn mtu(&self, local: &Local) -> u32 {
        self.mtu.unwrap_or_else(|| local.uplink.mtu.saturating_sub(OVERHEAD))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use dataplane::{RouteTarget, TaggedRoute};
    use datastore::memory::MemoryStore;
    use datastore::Op;

    use super::*;
    use crate::agent::{Agent, Config};
    use crate::health::Health;
    use crate::kernel::{Call, FakeKernel};
    use crate::local::AddressChoice;
    use crate::routes::PROTOCOL;

    fn config(name: &str, ip: &str, mtu_file: Option<std::path::PathBuf>) -> Config {
        Config {
            name: name.into(),
            addresses: AddressChoice { ipv4: Some(ip.parse().unwrap()), ..AddressChoice::default() },
            as_number: None,
            resync_interval: Duration::from_secs(90),
            vxlan_mtu: None,
            ipip_mtu: None,
            mtu_file,
            bgp: None,
        }
    }

    fn once(store: &MemoryStore, kernel: &FakeKernel, name: &str, ip: &str) -> crate::Result<()> {
        Agent::new(store, kernel, Arc::new(Health::new()), config(name, ip, None))?.run_once()
    }

    fn node(store: &MemoryStore, name: &str) -> model::node::Node {
        crate::register::read(store, name).unwrap().unwrap()
    }

    fn put(store: &MemoryStore, key: &str, value: &str) {
        store.txn(&[], &[Op::Put { key: key.into(), value: value.into() }]).unwrap();
    }

    const POOL: &str = "/calico/v1/ipam/v4/pool/10.244.0.0-16";

    fn link(kernel: &FakeKernel, index: u32) -> (dataplane::Link, Vec<IpNetwork>) {
        kernel.state.lock().unwrap().links.iter().find(|(l, _)| l.index == index).unwrap().clone()
    }

    #[test]
    fn three_nodes_meet_over_tunl0_and_part_when_the_pool_goes() {
        let store = MemoryStore::new();
        put(&store, POOL, r#"{"cidr":"10.244.0.0/16","block_size":26,"ipip":"always"}"#);
        let hosts = [("a", "10.9.0.1/24"), ("b", "10.9.0.2/24"), ("c", "10.8.0.3/24")];
        let kernels: Vec<FakeKernel> = hosts.iter().map(|(_, ip)| FakeKernel::with_uplink(&[ip])).collect();
        let tunl0: Vec<u32> = kernels.iter().map(|k| k.add_tunl0()).collect();
        for round in 0..2 {
            for ((name, ip), kernel) in hosts.iter().zip(&kernels) {
                once(&store, kernel, name, ip).unwrap_or_else(|e| panic!("round {round}, {name}: {e}"));
            }
        }
        let tunnels: Vec<Ipv4Addr> =
            hosts.iter().map(|(name, _)| node(&store, name).ipip_tunnel_addr.expect("a tunnel address")).collect();
        assert_eq!(node(&store, "a").vxlan_tunnel_addr, None);
        let ipam = ipam::Ipam::new(&store as &dyn Datastore, "a");
        assert_eq!(ipam.ips_of_handle(&handle("a")).unwrap(), vec![IpAddr::V4(tunnels[0])]);

        let (a_tunl0, a_addresses) = link(&kernels[0], tunl0[0]);
        assert!(a_tunl0.up);
        assert_eq!(a_tunl0.mtu, 1480);
        assert_eq!(a_addresses, vec![IpNetwork::V4(Ipv4Network::from(tunnels[0]))]);
        let via = |block: IpAddr, gw: &str| TaggedRoute {
            dst: model::net::block_of(block, 26),
            target: RouteTarget::Via { gateway: gw.parse().unwrap(), oif: tunl0[0], onlink: true },
            protocol: PROTOCOL,
            metric: 0,
        };
        let routes = kernels[0].routes_of(PROTOCOL);
        assert!(routes.contains(&via(IpAddr::V4(tunnels[1]), "10.9.0.2")), "{routes:?}");
        assert!(routes.contains(&via(IpAddr::V4(tunnels[2]), "10.8.0.3")), "{routes:?}");
        let a_block = model::net::block_of(IpAddr::V4(tunnels[0]), 26);
        assert!(routes.iter().any(|r| r.dst == a_block && r.target == RouteTarget::Blackhole), "{routes:?}");
        assert_eq!(routes.len(), 3, "{routes:?}");

        // A restart writes nothing to the kernel.
        kernels[0].take_calls();
        once(&store, &kernels[0], "a", "10.9.0.1/24").unwrap();
        let writes: Vec<_> =
            kernels[0].take_calls().into_iter().filter(|c| !matches!(c, Call::ListRoutes(_))).collect();
        assert!(writes.is_empty(), "{writes:?}");

        // Cross-subnet: b (same subnet) gets a direct route, c keeps tunl0.
        put(&store, POOL, r#"{"cidr":"10.244.0.0/16","block_size":26,"ipip":"cross-subnet"}"#);
        once(&store, &kernels[0], "a", "10.9.0.1/24").unwrap();
        let routes = kernels[0].routes_of(PROTOCOL);
        let direct = TaggedRoute {
            target: RouteTarget::Via { gateway: "10.9.0.2".parse().unwrap(), oif: 2, onlink: true },
            ..via(IpAddr::V4(tunnels[1]), "10.9.0.2")
        };
        assert!(routes.contains(&direct), "{routes:?}");
        assert!(routes.contains(&via(IpAddr::V4(tunnels[2]), "10.8.0.3")), "{routes:?}");

        // No IPIP pool left: the address is released and taken off tunl0, which stays.
        store.txn(&[], &[Op::Delete { key: POOL.into() }]).unwrap();
        once(&store, &kernels[0], "a", "10.9.0.1/24").unwrap();
        assert_eq!(node(&store, "a").ipip_tunnel_addr, None);
        assert!(ipam.ips_of_handle(&handle("a")).unwrap().is_empty());
        assert!(link(&kernels[0], tunl0[0]).1.is_empty());
        assert!(kernels[0].routes_of(PROTOCOL).is_empty());
    }

    fn event(store: &MemoryStore, key: &str, value: Option<&str>) -> datastore::Event {
        let op = match value {
            Some(v) => Op::Put { key: key.into(), value: v.into() },
            None => Op::Delete { key: key.into() },
        };
        let revision = match store.txn(&[], &[op]).unwrap() {
            datastore::TxnOutcome::Committed { revision } => revision,
            other => panic!("{other:?}"),
        };
        let kind = match value {
            Some(v) => datastore::EventKind::Put { value: v.into() },
            None => datastore::EventKind::Delete,
        };
        datastore::Event { key: key.into(), kind, mod_revision: revision }
    }

    #[test]
    fn pool_changes_from_the_watch_switch_routes_between_tunl0_and_direct() {
        let store = MemoryStore::new();
        put(&store, POOL, r#"{"cidr":"10.244.0.0/16","block_size":26}"#);
        put(&store, "/calico/ipam/v2/host/b/ipv4/block/10.244.1.0-26", "{}");
        put(&store, "/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2");
        let kernel = FakeKernel::with_uplink(&["10.9.0.1/24"]);
        let index = kernel.add_tunl0();
        let mut agent = Agent::new(&store, &kernel, Arc::new(Health::new()), config("a", "10.9.0.1/24", None)).unwrap();
        agent.run_once().unwrap();
        let b_block = |oif: u32| TaggedRoute {
            dst: "10.244.1.0/26".parse().unwrap(),
            target: RouteTarget::Via { gateway: "10.9.0.2".parse().unwrap(), oif, onlink: true },
            protocol: PROTOCOL,
            metric: 0,
        };
        assert_eq!(kernel.routes_of(PROTOCOL), vec![b_block(2)]);
        assert!(!link(&kernel, index).0.up, "tunl0 untouched without an IPIP pool");

        let e = event(&store, POOL, Some(r#"{"cidr":"10.244.0.0/16","block_size":26,"ipip":"always"}"#));
        agent.apply_events(&[e]).unwrap();
        let routes = kernel.routes_of(PROTOCOL);
        assert!(routes.contains(&b_block(index)), "{routes:?}");
        let tunnel = node(&store, "a").ipip_tunnel_addr.expect("the tunnel address in the record");
        assert_eq!(link(&kernel, index).1, vec![IpNetwork::V4(Ipv4Network::from(tunnel))]);
        assert_eq!(agent.workload_mtu(), 1480);

        let e = event(&store, POOL, Some(r#"{"cidr":"10.244.0.0/16","block_size":26,"ipip":"cross-subnet"}"#));
        agent.apply_events(&[e]).unwrap();
        assert!(kernel.routes_of(PROTOCOL).contains(&b_block(2)), "same subnet: direct");
        let e = event(&store, "/calico/bgp/v1/host/b/ip_addr_v4", Some("10.8.0.2"));
        agent.apply_events(&[e]).unwrap();
        let moved = TaggedRoute {
            target: RouteTarget::Via { gateway: "10.8.0.2".parse().unwrap(), oif: index, onlink: true },
            ..b_block(index)
        };
        assert!(kernel.routes_of(PROTOCOL).contains(&moved), "another subnet: tunl0");

        let e = event(&store, POOL, None);
        agent.apply_events(&[e]).unwrap();
        assert!(kernel.routes_of(PROTOCOL).is_empty());
        assert_eq!(node(&store, "a").ipip_tunnel_addr, None);
        assert!(link(&kernel, index).1.is_empty());
        assert_eq!(agent.workload_mtu(), 1500);
    }

    #[test]
    fn without_tunl0_ipip_pools_name_config_net_ipip_and_others_work() {
        let store = MemoryStore::new();
        put(&store, POOL, r#"{"cidr":"10.244.0.0/16","block_size":26,"ipip":"always"}"#);
        put(&store, "/calico/v1/ipam/v4/pool/10.1.0.0-16", r#"{"cidr":"10.1.0.0/16","block_size":26}"#);
        put(&store, "/calico/ipam/v2/host/b/ipv4/block/10.244.1.0-26", "{}");
        put(&store, "/calico/ipam/v2/host/b/ipv4/block/10.1.1.0-26", "{}");
        put(&store, "/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2");
        let kernel = FakeKernel::with_uplink(&["10.9.0.1/24"]);
        let err = once(&store, &kernel, "a", "10.9.0.1/24").unwrap_err().to_string();
        assert!(err.contains("pool 10.244.0.0/16") && err.contains("CONFIG_NET_IPIP"), "{err}");
        let routes = kernel.routes_of(PROTOCOL);
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert_eq!(routes[0].dst, "10.1.1.0/26".parse::<IpNetwork>().unwrap());
        assert_eq!(node(&store, "a").ipip_tunnel_addr, None, "no address for a tunnel that cannot be");
    }

    #[test]
    fn the_workload_mtu_follows_tunl0() {
        let store = MemoryStore::new();
        put(&store, POOL, r#"{"cidr":"10.244.0.0/16","block_size":26,"ipip":"always"}"#);
        let kernel = FakeKernel::with_uplink(&["10.9.0.1/24"]);
        kernel.add_tunl0();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mtu");
        let cfg = config("a", "10.9.0.1/24", Some(path.clone()));
        Agent::new(&store, &kernel, Arc::new(Health::new()), cfg).unwrap().run_once().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1480\n");
    }

    #[test]
    fn ipip_mtu_sets_tunl0_and_the_workloads() {
        let store = MemoryStore::new();
        put(&store, POOL, r#"{"cidr":"10.244.0.0/16","block_size":26,"ipip":"always"}"#);
        let kernel = FakeKernel::with_uplink(&["10.9.0.1/24"]);
        kernel.add_tunl0();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mtu");
        let cfg = Config { ipip_mtu: Some(1400), ..config("a", "10.9.0.1/24", Some(path.clone())) };
        Agent::new(&store, &kernel, Arc::new(Health::new()), cfg).unwrap().run_once().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1400\n");
    }
}
