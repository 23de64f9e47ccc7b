//! Which route each destination should have, and the table of routes this agent owns in
//! the kernel (`proto 80`): a full sync compares everything with the kernel, an incremental
//! one only the destinations a change touched. Routes are replaced in place and only ever
//! deleted when no longer wanted: a restart never flaps a route that stays wanted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use dataplane::{IpFamily, RouteTarget, TaggedRoute};
use ipnetwork::IpNetwork;
use model::pool::EncapMode;

use crate::cluster::Cluster;
use crate::kernel::Kernel;
use crate::local::Local;

/// The protocol number of our routes (Calico's Felix uses 80 too).
pub const PROTOCOL: u8 = 80;

/// What a destination should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// This route.
    Route(TaggedRoute),
    /// No route of ours.
    Nothing,
    /// A remote node on another subnet, with no encapsulation: BGP's job.
    LeftToBgp {
        /// The node.
        node: String,
    },
    /// The pool's encapsulation cannot be programmed here.
    Problem {
        /// The pool.
        pool: IpNetwork,
        /// Why.
        reason: String,
    },
}

fn family(ip: IpAddr) -> IpFamily {
    IpFamily::of(ip)
}

/// The kernel's metric for a route with none: 0 for IPv4, 1024 for IPv6.
pub fn default_metric(dst: &IpNetwork) -> u32 {
    if dst.is_ipv4() {
        0
    } else {
        1024
    }
}

fn route(dst: IpNetwork, target: RouteTarget) -> TaggedRoute {
    TaggedRoute { dst, target, protocol: PROTOCOL, metric: default_metric(&dst) }
}

/// The capabilities of this host's kernel that some pools need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `tunl0` exists (the kernel has CONFIG_NET_IPIP).
    pub tunl0: bool,
    /// The index of `tunl0`, once it is set up.
    pub ipip: Option<u32>,
    /// The index of `vxlan.calico`, once it is set up.
    pub vxlan: Option<u32>,
}

/// Work out what `dst` should have.
pub fn want(cluster: &Cluster, local: &Local, caps: Capabilities, dst: &IpNetwork) -> Want {
    let Some(pool) = cluster.pool_of(dst.network()) else {
        return Want::Nothing;
    };
    let remote = if cluster.is_block(dst) {
        match cluster.owner(dst) {
            Some(owner) if owner == local.name => return Want::Route(route(*dst, RouteTarget::Blackhole)),
            Some(owner) => owner.to_owned(),
            None => return Want::Nothing,
        }
    } else {
        // A workload address: a route of its own only when it lies outside the blocks of
        // the node holding it (borrowed), and that node is not this one.
        let holders = cluster.holders_of(dst.ip());
        if dst.prefix() != if dst.is_ipv4() { 32 } else { 128 } || holders.contains(local.name.as_str()) {
            return Want::Nothing;
        }
        let Some(holder) = holders.into_iter().next() else {
            return Want::Nothing;
        };
        let block = model::net::block_of(dst.ip(), pool.block_size);
        if cluster.owner(&block) == Some(holder) {
            return Want::Nothing;
        }
        holder.to_owned()
    };
    let Some(node) = cluster.nodes.get(&remote) else {
        return Want::Nothing;
    };
    let fam = family(dst.ip());
    let Some(gateway) = node.addrs().into_iter().find(|ip| family(*ip) == fam) else {
        return Want::Nothing;
    };
    let same_subnet = local.network(fam).is_some_and(|net| net.contains(gateway));
    let encapsulate = |mode: EncapMode| match mode {
        EncapMode::Off => false,
        EncapMode::Always => true,
        EncapMode::CrossSubnet => !same_subnet,
    };
    // calicoctl refuses such a pool; one written by another tool is named, never guessed at.
    if pool.ipip != EncapMode::Off && pool.vxlan != EncapMode::Off {
        return Want::Problem {
            pool: pool.cidr,
            reason: "the pool sets both IPIP and VXLAN: choose one (calicoctl pool add takes one)".into(),
        };
    }
    if encapsulate(pool.vxlan) {
        let problem = |reason: &str| Want::Problem { pool: pool.cidr, reason: reason.into() };
        if dst.is_ipv6() {
            return problem("VXLAN for IPv6 pools is not programmed by this version of calico-node");
        }
        let Some(oif) = caps.vxlan else {
            return problem("the VXLAN device vxlan.calico is not set up (see the error above)");
        };
        // A node that has not set up its VXLAN end yet gets its route once it has.
        return match node.vxlan_tunnel_addr {
            Some(tunnel) => {
                Want::Route(route(*dst, RouteTarget::Via { gateway: IpAddr::V4(tunnel), oif, onlink: true }))
            }
            None => Want::Nothing,
        };
    }
    if encapsulate(pool.ipip) {
        let problem = |reason: &str| Want::Problem { pool: pool.cidr, reason: reason.into() };
        if dst.is_ipv6() {
            return problem("IPIP carries IPv4 only: an IPv6 pool cannot use it");
        }
        if !caps.tunl0 {
            return problem(
                "IPIP needs the kernel's IPIP tunnel support (CONFIG_NET_IPIP), which this kernel lacks: there is no tunl0",
            );
        }
        let Some(oif) = caps.ipip else {
            return problem("the IPIP device tunl0 is not set up (see the error above)");
        };
        // tunl0 has no remote end: the route's gateway is the outer destination.
        return Want::Route(route(*dst, RouteTarget::Via { gateway, oif, onlink: true }));
    }
    match (same_subnet, local.uplink_index(fam)) {
        (true, Some(oif)) => Want::Route(route(*dst, RouteTarget::Via { gateway, oif, onlink: true })),
        _ => Want::LeftToBgp { node: remote },
    }
}

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Routes added or replaced.
    pub replaced: usize,
    /// Routes deleted.
    pub deleted: usize,
    /// Wanted routes the kernel refused, or that another protocol's route holds.
    pub failures: Vec<String>,
}

/// The routes of ours the kernel holds, as far as this agent knows.
#[derive(Debug, Default)]
pub struct RouteTable {
    programmed: HashMap<IpNetwork, TaggedRoute>,
    /// Destinations (with metric) held by routes of other protocols at the last full sync.
    foreign: HashSet<(IpNetwork, u32)>,
}

impl RouteTable {
    /// How many routes of ours are programmed.
    pub fn len(&self) -> usize {
        self.programmed.len()
    }

    /// True when no route of ours is programmed.
    pub fn is_empty(&self) -> bool {
        self.programmed.is_empty()
    }

    /// The destinations of the routes of ours programmed.
    pub fn dsts(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        self.programmed.keys().copied()
    }

    /// The route of ours for `dst`, if programmed.
    pub fn get(&self, dst: &IpNetwork) -> Option<&TaggedRoute> {
        self.programmed.get(dst)
    }

    /// Compare every wanted route with the kernel's routes and fix the difference: replace
    /// what is missing or different, delete ours that are not wanted, touch no other.
    pub fn full_sync(
        &mut self,
        kernel: &dyn Kernel,
        wanted: &BTreeMap<IpNetwork, TaggedRoute>,
    ) -> crate::Result<SyncReport> {
        let mut ours: HashMap<IpNetwork, Vec<TaggedRoute>> = HashMap::new();
        self.foreign.clear();
        for fam in [IpFamily::V4, IpFamily::V6] {
            for r in kernel.routes(fam)? {
                if r.protocol == PROTOCOL {
                    ours.entry(r.dst).or_default().push(r);
                } else {
                    self.foreign.insert((r.dst, r.metric));
                }
            }
        }
        let mut replace = Vec::new();
        let mut delete = Vec::new();
        let mut report = SyncReport::default();
        self.programmed.clear();
        for (dst, want) in wanted {
            if self.foreign.contains(&(*dst, want.metric)) {
                report.failures.push(format!("{}: a route of another protocol holds {dst}", want.describe()));
                continue;
            }
            let present = ours.remove(dst).unwrap_or_default();
            if present.contains(want) {
                self.programmed.insert(*dst, *want);
            } else {
                replace.push(*want);
            }
            delete.extend(present.into_iter().filter(|r| r.metric != want.metric));
        }
        delete.extend(ours.into_values().flatten());
        self.write(kernel, &replace, &delete, &mut report)?;
        Ok(report)
    }

    /// Bring the given destinations to what they should have (`None`: no route of ours).
    pub fn update(
        &mut self,
        kernel: &dyn Kernel,
        changes: &BTreeMap<IpNetwork, Option<TaggedRoute>>,
    ) -> crate::Result<SyncReport> {
        let mut replace = Vec::new();
        let mut delete = Vec::new();
        let mut report = SyncReport::default();
        for (dst, want) in changes {
            let current = self.programmed.get(dst).copied();
            match want {
                Some(w) if current == Some(*w) => {}
                Some(w) if self.foreign.contains(&(*dst, w.metric)) => {
                    report.failures.push(format!("{}: a route of another protocol holds {dst}", w.describe()));
                }
                Some(w) => replace.push(*w),
                None => {
                    if let Some(c) = current {
                        delete.push(c);
                    }
                }
            }
        }
        self.write(kernel, &replace, &delete, &mut report)?;
        Ok(report)
    }

    fn write(
        &mut self,
        kernel: &dyn Kernel,
        replace: &[TaggedRoute],
        delete: &[TaggedRoute],
        report: &mut SyncReport,
    ) -> crate::Result<()> {
        if !replace.is_empty() {
            for (route, outcome) in replace.iter().zip(kernel.replace_routes(replace)?) {
                match outcome {
                    Ok(()) => {
                        self.programmed.insert(route.dst, *route);
                        report.replaced += 1;
                    }
                    Err(e) => {
                        self.programmed.remove(&route.dst);
                        report.failures.push(format!("{}: {}", route.describe(), crate::chain(&e)));
                    }
                }
            }
        }
        if !delete.is_empty() {
            for (route, outcome) in delete.iter().zip(kernel.delete_routes(delete)?) {
                match outcome {
                    Ok(()) => {
                        if self.programmed.get(&route.dst) == Some(route) {
                            self.programmed.remove(&route.dst);
                        }
                        report.deleted += 1;
                    }
                    Err(e) => report.failures.push(format!("delete {}: {}", route.describe(), crate::chain(&e))),
                }
            }
        }
        Ok(())
    }
}

/// Problems found while working out the wanted routes, by pool, and the nodes left to BGP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notes {
    /// Pool → why its routes are not programmed.
    pub pools: BTreeMap<IpNetwork, String>,
    /// Remote nodes on another subnet.
    pub left_to_bgp: BTreeSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Dirty;
    use crate::kernel::{Call, FakeKernel};
    use dataplane::Link;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn local() -> Local {
        Local {
            name: "me".into(),
            ipv4: Some("10.9.0.1/24".parse().unwrap()),
            ipv6: Some("fd09::1/64".parse().unwrap()),
            uplink: Link { index: 2, name: "eth0".into(), mac: None, mtu: 1500, up: true, kind: None },
            uplink6: Some(Link { index: 2, name: "eth0".into(), mac: None, mtu: 1500, up: true, kind: None }),
        }
    }

    fn cluster(entries: &[(&str, &str)]) -> Cluster {
        let mut c = Cluster::default();
        for (k, v) in entries {
            c.apply("me", k, Some(v.as_bytes()), &mut Dirty::default()).unwrap();
        }
        c
    }

    fn via(dst: &str, gw: &str) -> Want {
        Want::Route(route(net(dst), RouteTarget::Via { gateway: gw.parse().unwrap(), oif: 2, onlink: true }))
    }

    const POOL: (&str, &str) = ("/calico/v1/ipam/v4/pool/10.0.0.0-16", r#"{"cidr":"10.0.0.0/16","block_size":26}"#);

    #[test]
    fn local_blocks_blackhole_same_subnet_direct_other_subnet_bgp() {
        let c = cluster(&[
            POOL,
            ("/calico/ipam/v2/host/me/ipv4/block/10.0.0.0-26", "{}"),
            ("/calico/ipam/v2/host/b/ipv4/block/10.0.1.0-26", "{}"),
            ("/calico/ipam/v2/host/far/ipv4/block/10.0.2.0-26", "{}"),
            ("/calico/ipam/v2/host/ghost/ipv4/block/10.0.3.0-26", "{}"),
            ("/calico/ipam/v2/host/b/ipv4/block/10.99.0.0-26", "{}"),
            ("/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2"),
            ("/calico/bgp/v1/host/far/ip_addr_v4", "10.8.0.2"),
        ]);
        let w = |d: &str| want(&c, &local(), Capabilities::default(), &net(d));
        assert_eq!(w("10.0.0.0/26"), Want::Route(route(net("10.0.0.0/26"), RouteTarget::Blackhole)));
        assert_eq!(w("10.0.1.0/26"), via("10.0.1.0/26", "10.9.0.2"));
        assert_eq!(w("10.0.2.0/26"), Want::LeftToBgp { node: "far".into() });
        assert_eq!(w("10.0.3.0/26"), Want::Nothing, "a node without a record");
        assert_eq!(w("10.99.0.0/26"), Want::Nothing, "a block of no pool");
    }

    #[test]
    fn borrowed_addresses_get_a_host_route_to_their_node() {
        let c = cluster(&[
            POOL,
            ("/calico/ipam/v2/host/me/ipv4/block/10.0.0.0-26", "{}"),
            ("/calico/ipam/v2/host/b/ipv4/block/10.0.1.0-26", "{}"),
            ("/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2"),
            ("/calico/bgp/v1/host/c/ip_addr_v4", "10.9.0.3"),
            // c borrowed from my block and from b's; b uses its own; I use one of b's.
            ("/calico/v1/host/c/workload/cni/1/endpoint/eth0", r#"{"node":"c","ips":["10.0.0.9/32"]}"#),
            ("/calico/v1/host/c/workload/cni/2/endpoint/eth0", r#"{"node":"c","ips":["10.0.1.9/32"]}"#),
            ("/calico/v1/host/b/workload/cni/3/endpoint/eth0", r#"{"node":"b","ips":["10.0.1.5/32"]}"#),
            ("/calico/v1/host/me/workload/cni/4/endpoint/eth0", r#"{"node":"me","ips":["10.0.1.6/32"]}"#),
        ]);
        let w = |d: &str| want(&c, &local(), Capabilities::default(), &net(d));
        assert_eq!(w("10.0.0.9/32"), via("10.0.0.9/32", "10.9.0.3"));
        assert_eq!(w("10.0.1.9/32"), via("10.0.1.9/32", "10.9.0.3"));
        assert_eq!(w("10.0.1.5/32"), Want::Nothing);
        assert_eq!(w("10.0.1.6/32"), Want::Nothing, "calico-cni routes local workloads");
    }

    #[test]
    fn a_pool_with_both_ipip_and_vxlan_is_named_not_guessed() {
        let c = cluster(&[
            (
                "/calico/v1/ipam/v4/pool/10.0.0.0-16",
                r#"{"cidr":"10.0.0.0/16","block_size":26,"ipip":"always","vxlan":"always"}"#,
            ),
            ("/calico/ipam/v2/host/b/ipv4/block/10.0.1.0-26", "{}"),
            ("/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2"),
        ]);
        match want(&c, &local(), Capabilities { tunl0: true, ..Capabilities::default() }, &net("10.0.1.0/26")) {
            Want::Problem { pool, reason } => {
                assert_eq!(pool, net("10.0.0.0/16"));
                assert!(reason.contains("both IPIP and VXLAN"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encapsulated_pools_name_what_is_missing() {
        let mut c = cluster(&[
            ("/calico/v1/ipam/v4/pool/10.0.0.0-16", r#"{"cidr":"10.0.0.0/16","block_size":26,"ipip":"always"}"#),
            ("/calico/v1/ipam/v4/pool/10.1.0.0-16", r#"{"cidr":"10.1.0.0/16","block_size":26,"ipip":"cross-subnet"}"#),
            ("/calico/ipam/v2/host/b/ipv4/block/10.0.1.0-26", "{}"),
            ("/calico/ipam/v2/host/b/ipv4/block/10.1.1.0-26", "{}"),
            ("/calico/ipam/v2/host/me/ipv4/block/10.0.0.0-26", "{}"),
            ("/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2"),
        ]);
        let w = |c: &Cluster, d: &str| want(c, &local(), Capabilities::default(), &net(d));
        match w(&c, "10.0.1.0/26") {
            Want::Problem { pool, reason } => {
                assert_eq!(pool, net("10.0.0.0/16"));
                assert!(reason.contains("CONFIG_NET_IPIP"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(w(&c, "10.0.0.0/26"), Want::Route(_)), "local blocks need no tunnel");
        assert_eq!(w(&c, "10.1.1.0/26"), via("10.1.1.0/26", "10.9.0.2"), "cross-subnet, same subnet: direct");
        c.apply("me", "/calico/bgp/v1/host/b/ip_addr_v4", Some(b"10.8.0.2"), &mut Dirty::default()).unwrap();
        assert!(matches!(w(&c, "10.1.1.0/26"), Want::Problem { .. }));
    }

    #[test]
    fn ipip_pools_route_over_tunl0_and_cross_subnet_goes_direct_on_the_same_subnet() {
        let mut c = cluster(&[
            ("/calico/v1/ipam/v4/pool/10.0.0.0-16", r#"{"cidr":"10.0.0.0/16","block_size":26,"ipip":"always"}"#),
            ("/calico/v1/ipam/v4/pool/10.1.0.0-16", r#"{"cidr":"10.1.0.0/16","block_size":26,"ipip":"cross-subnet"}"#),
            ("/calico/ipam/v2/host/b/ipv4/block/10.0.1.0-26", "{}"),
            ("/calico/ipam/v2/host/b/ipv4/block/10.1.1.0-26", "{}"),
            ("/calico/ipam/v2/host/me/ipv4/block/10.0.0.0-26", "{}"),
            ("/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2"),
        ]);
        let caps = Capabilities { tunl0: true, ipip: Some(7), vxlan: None };
        let w = |c: &Cluster, caps, d: &str| want(c, &local(), caps, &net(d));
        let tunl0 = |dst: &str, gw: &str| {
            Want::Route(route(net(dst), RouteTarget::Via { gateway: gw.parse().unwrap(), oif: 7, onlink: true }))
        };
        assert_eq!(w(&c, caps, "10.0.1.0/26"), tunl0("10.0.1.0/26", "10.9.0.2"));
        assert_eq!(w(&c, caps, "10.0.0.0/26"), Want::Route(route(net("10.0.0.0/26"), RouteTarget::Blackhole)));
        assert_eq!(w(&c, caps, "10.1.1.0/26"), via("10.1.1.0/26", "10.9.0.2"), "cross-subnet, same subnet: direct");
        match w(&c, Capabilities { tunl0: true, ..Capabilities::default() }, "10.0.1.0/26") {
            Want::Problem { reason, .. } => assert!(reason.contains("tunl0 is not set up"), "{reason}"),
            other => panic!("{other:?}"),
        }
        c.apply("me", "/calico/bgp/v1/host/b/ip_addr_v4", Some(b"10.8.0.2"), &mut Dirty::default()).unwrap();
        assert_eq!(w(&c, caps, "10.1.1.0/26"), tunl0("10.1.1.0/26", "10.8.0.2"), "cross-subnet, other subnet");
        assert_eq!(w(&c, caps, "10.0.1.0/26"), tunl0("10.0.1.0/26", "10.8.0.2"));
    }

    #[test]
    fn ipv6_blocks_route_over_the_v6_uplink() {
        let c = cluster(&[
            ("/calico/v1/ipam/v6/pool/fd00::-48", r#"{"cidr":"fd00::/48","block_size":122}"#),
            ("/calico/ipam/v2/host/b/ipv6/block/fd00::40-122", "{}"),
            ("/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2"),
            ("/calico/bgp/v1/host/b/ip_addr_v6", "fd09::2"),
        ]);
        let got = want(&c, &local(), Capabilities::default(), &net("fd00::40/122"));
        let expected = TaggedRoute {
            dst: net("fd00::40/122"),
            target: RouteTarget::Via { gateway: "fd09::2".parse().unwrap(), oif: 2, onlink: true },
            protocol: PROTOCOL,
            metric: 1024,
        };
        assert_eq!(got, Want::Route(expected));
    }

    fn blackhole(dst: &str) -> TaggedRoute {
        route(net(dst), RouteTarget::Blackhole)
    }

    #[test]
    fn a_full_sync_fixes_only_the_difference_and_never_touches_other_protocols() {
        let kernel = FakeKernel::with_uplink(&["10.9.0.1/24"]);
        let stale = blackhole("10.0.5.0/26");
        let kept = blackhole("10.0.0.0/26");
        let wrong =
            route(net("10.0.1.0/26"), RouteTarget::Via { gateway: "10.9.0.7".parse().unwrap(), oif: 2, onlink: true });
        let foreign = TaggedRoute { protocol: 4, ..blackhole("10.0.2.0/26") };
        let other = TaggedRoute { protocol: 3, ..blackhole("192.168.0.0/24") };
        kernel.state.lock().unwrap().routes = vec![stale, kept, wrong, foreign, other];
        let right =
            route(net("10.0.1.0/26"), RouteTarget::Via { gateway: "10.9.0.2".parse().unwrap(), oif: 2, onlink: true });
        let wanted: BTreeMap<IpNetwork, TaggedRoute> =
            [kept, right, blackhole("10.0.2.0/26"), blackhole("10.0.3.0/26")].into_iter().map(|r| (r.dst, r)).collect();
        let mut table = RouteTable::default();
        let report = table.full_sync(&kernel, &wanted).unwrap();
        assert_eq!((report.replaced, report.deleted), (2, 1), "{report:?}");
        assert_eq!(report.failures.len(), 1, "the foreign route's destination: {report:?}");
        assert!(report.failures[0].contains("another protocol holds 10.0.2.0/26"), "{report:?}");
        let calls = kernel.take_calls();
        assert_eq!(calls[2], Call::Replace(vec![right, blackhole("10.0.3.0/26")]), "{calls:?}");
        assert_eq!(calls[3], Call::Delete(vec![stale]), "the kept route is neither deleted nor rewritten");
        assert_eq!(kernel.routes_of(PROTOCOL), vec![kept, right, blackhole("10.0.3.0/26")]);
        assert!(kernel.state.lock().unwrap().routes.contains(&foreign));
        assert!(kernel.state.lock().unwrap().routes.contains(&other));
        assert_eq!(table.len(), 3);

        // A second sync with nothing changed writes nothing.
        let report = table.full_sync(&kernel, &wanted).unwrap();
        assert_eq!((report.replaced, report.deleted), (0, 0));
        assert!(kernel.take_calls().iter().all(|c| matches!(c, Call::ListRoutes(_))));
    }

    #[test]
    fn updates_write_only_what_changed_and_record_refusals() {
        let kernel = FakeKernel::with_uplink(&["10.9.0.1/24"]);
        let mut table = RouteTable::default();
        let changes: BTreeMap<IpNetwork, Option<TaggedRoute>> =
            [(net("10.0.0.0/26"), Some(blackhole("10.0.0.0/26"))), (net("10.0.1.0/26"), None)].into_iter().collect();
        let report = table.update(&kernel, &changes).unwrap();
        assert_eq!((report.replaced, report.deleted), (1, 0));
        assert_eq!(kernel.take_calls(), vec![Call::Replace(vec![blackhole("10.0.0.0/26")])]);
        // The same again: nothing sent.
        table.update(&kernel, &changes).unwrap();
        assert!(kernel.take_calls().is_empty());
        kernel.state.lock().unwrap().failing.push(net("10.0.7.0/26"));
        let refused: BTreeMap<_, _> = [(net("10.0.7.0/26"), Some(blackhole("10.0.7.0/26")))].into_iter().collect();
        let report = table.update(&kernel, &refused).unwrap();
        assert_eq!(report.failures.len(), 1);
        assert!(table.get(&net("10.0.7.0/26")).is_none());
        let gone: BTreeMap<_, _> = [(net("10.0.0.0/26"), None)].into_iter().collect();
        assert_eq!(table.update(&kernel, &gone).unwrap().deleted, 1);
        assert!(kernel.routes_of(PROTOCOL).is_empty());
    }
}
