//! The netlink facade's primitives, in throwaway namespaces (run as root).

mod common;

use common::Lab;
use dataplane::{IpFamily, RouteScope, RouteSpec, VethEnd, HOST_VETH_MAC};

#[test]
fn netlink_primitives_are_idempotent() {
    let lab = Lab::new(1);
    lab.with_host_and_container(|host, container| {
        let nl = host.netlink();
        nl.create_veth(&VethEnd::host("calitest0", Some(1400)), &VethEnd::container("eth0", None), container.netns())
            .expect("create veth");
        let link = nl.link_by_name("calitest0").expect("get").expect("exists");
        assert_eq!(
            (link.mac, link.mtu, link.up, link.kind.as_deref()),
            (Some(HOST_VETH_MAC), 1400, false, Some("veth"))
        );
        assert_eq!(nl.link_by_index(link.index).expect("get").as_ref(), Some(&link));
        assert!(nl.links().expect("links").iter().any(|l| l.name == "lo"));
        let peer = container.netlink().link_by_name("eth0").expect("get").expect("peer");
        assert_eq!(peer.mtu, 1400, "the peer gets the same MTU");

        nl.set_up(link.index).expect("up");
        let address: ipnetwork::IpNetwork = "10.66.0.1/32".parse().expect("net");
        nl.add_address(link.index, address).expect("add address");
        assert_eq!(nl.addresses(link.index).expect("addresses"), vec![address]);
        assert!(nl.add_address(link.index, address).expect_err("twice").is_exists());
        assert!(nl.delete_address(link.index, address).expect("delete"));
        assert!(!nl.delete_address(link.index, address).expect("delete again"));

        let route =
            RouteSpec { dst: "10.66.1.0/24".parse().expect("net"), gateway: None, oif: link.index, scope_link: true };
        nl.add_route(&route).expect("add route");
        let found = nl.routes(IpFamily::V4).expect("routes");
        assert!(
            found.iter().any(|r| r.dst == route.dst && r.oif == Some(link.index) && r.scope == RouteScope::Link),
            "{found:?}"
        );
        assert!(nl.add_route(&route).expect_err("twice").is_exists());
        assert!(nl.delete_route(&route).expect("delete"));
        assert!(!nl.delete_route(&route).expect("delete again"));

        assert!(nl.delete_link("calitest0").expect("delete link"));
        assert!(!nl.delete_link("calitest0").expect("delete again"));
        assert!(container.netlink().link_by_name("eth0").expect("get").is_none());
        assert!(nl.request_count() > 0);
    });
}

/// The detached deletion returns with both ends gone, their routes flushed and the name free
/// at once (a new pair of the same names can be created right away), many times in a row, and
/// says `false` for a link that does not exist.
#[test]
fn detached_link_deletion_is_complete_when_it_returns() {
    let lab = Lab::new(1);
    lab.with_host_and_container(|host, container| {
        let nl = host.netlink();
        for round in 0..5 {
            nl.create_veth(&VethEnd::host("calidetach0", None), &VethEnd::container("eth0", None), container.netns())
                .unwrap_or_else(|e| panic!("create veth, round {round}: {e}"));
            let link = nl.link_by_name("calidetach0").expect("get").expect("exists");
            nl.set_up(link.index).expect("up");
            let route = RouteSpec {
                dst: "10.66.2.7/32".parse().expect("net"),
                gateway: None,
                oif: link.index,
                scope_link: true,
            };
            nl.add_route(&route).expect("add route");

            assert!(host.delete_link_detached("calidetach0").expect("delete"), "round {round}");
            assert!(nl.link_by_name("calidetach0").expect("get").is_none(), "host end gone, round {round}");
            assert!(container.netlink().link_by_name("eth0").expect("get").is_none(), "peer gone, round {round}");
            let routes = nl.routes(IpFamily::V4).expect("routes");
            assert!(!routes.iter().any(|r| r.dst == route.dst), "route flushed, round {round}: {routes:?}");
        }
        assert!(!host.delete_link_detached("calidetach0").expect("delete absent"));
    });
}

/// The agent's routes: listed with their protocol, replaced in place, deleted by protocol,
/// and a route of another protocol with the same destination never touched by a delete.
#[test]
fn tagged_routes_are_listed_replaced_and_deleted_by_protocol() {
    use dataplane::{RouteTarget, TaggedRoute};
    let lab = Lab::new(0);
    lab.in_host(|| {
        let nl = dataplane::Netlink::current().expect("netlink");
        let up0 = nl.link_by_name("up0").expect("get").expect("up0").index;
        let blackhole = TaggedRoute {
            dst: "10.77.0.0/26".parse().unwrap(),
            target: RouteTarget::Blackhole,
            protocol: 80,
            metric: 0,
        };
        let via = |gateway: &str| TaggedRoute {
            dst: "10.77.1.0/26".parse().unwrap(),
            target: RouteTarget::Via { gateway: gateway.parse().unwrap(), oif: up0, onlink: true },
            protocol: 80,
            metric: 0,
        };
        let v6 = TaggedRoute {
            dst: "fd77::/122".parse().unwrap(),
            target: RouteTarget::Via { gateway: "2001:db8::9".parse().unwrap(), oif: up0, onlink: true },
            protocol: 80,
            // The kernel's default for IPv6: asking for 0 gives this.
            metric: 1024,
        };
        // The gateway lies outside up0's subnet: onlink is what makes it acceptable.
        let outcomes = nl.replace_routes(&[blackhole, via("172.31.0.7"), v6]).expect("replace");
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        let ours = |family| -> Vec<TaggedRoute> {
            nl.tagged_routes(family).expect("list").into_iter().filter(|r| r.protocol == 80).collect()
        };
        let mut found = ours(IpFamily::V4);
        found.sort_by_key(|r| r.dst);
        assert_eq!(found, vec![blackhole, via("172.31.0.7")]);
        assert_eq!(ours(IpFamily::V6), vec![v6]);
        // Replace in place: still one route for the destination, with the new next hop.
        nl.replace_routes(&[via("172.31.0.8")]).expect("replace").into_iter().for_each(|r| r.expect("ok"));
        assert!(ours(IpFamily::V4).contains(&via("172.31.0.8")));
        assert!(!ours(IpFamily::V4).contains(&via("172.31.0.7")));
        // A static route of someone else, same prefix, another metric.
        let text = lab.host.ip(&["route", "add", "10.77.0.0/26", "via", "10.255.255.2", "metric", "10"]);
        assert!(text.is_empty());
        let outcomes = nl.delete_routes(&[blackhole, via("172.31.0.8"), v6, blackhole]).expect("delete");
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert!(ours(IpFamily::V4).is_empty() && ours(IpFamily::V6).is_empty());
        let left = lab.host.ip(&["route", "show", "10.77.0.0/26"]);
        assert!(left.contains("via 10.255.255.2") && left.contains("metric 10"), "{left}");
    });
}

/// A VXLAN device made as the node agent wants it reads back with the same settings, and
/// its FDB entries are added, replaced, listed and deleted.
#[test]
fn vxlan_devices_and_their_fdb() {
    use dataplane::{FdbEntry, NeighbourSpec, VxlanSpec};
    let lab = Lab::new(0);
    lab.in_host(|| {
        let nl = dataplane::Netlink::current().expect("netlink");
        let up0 = nl.link_by_name("up0").expect("get").expect("up0").index;
        let spec = VxlanSpec {
            name: "vxlan.calico".into(),
            vni: 4096,
            port: 4789,
            local: "10.255.255.1".parse().unwrap(),
            parent: up0,
            mac: [0x66, 1, 2, 3, 4, 5],
            mtu: 1450,
            learning: false,
        };
        let index = nl.create_vxlan(&spec).expect("create");
        let found = nl.vxlan("vxlan.calico").expect("get").expect("there");
        assert_eq!((found.index, found.up), (index, true));
        assert_eq!(found.spec, spec);
        assert!(nl.vxlan("up0").expect("get").is_none(), "a veth is not VXLAN");
        assert!(nl.create_vxlan(&spec).expect_err("twice").is_exists());
        nl.set_mtu(index, 1400).expect("mtu");
        assert_eq!(nl.vxlan("vxlan.calico").expect("get").expect("there").spec.mtu, 1400);

        let entry = FdbEntry { mac: [0x66, 9, 9, 9, 9, 9], dst: "192.0.2.7".parse().unwrap() };
        nl.add_fdb(index, &entry).expect("fdb");
        nl.add_fdb(index, &entry).expect("fdb again (replace)");
        assert_eq!(nl.fdb(index).expect("list"), vec![entry]);
        let moved = FdbEntry { dst: "192.0.2.8".parse().unwrap(), ..entry };
        nl.add_fdb(index, &moved).expect("fdb replaced");
        assert_eq!(nl.fdb(index).expect("list"), vec![moved]);
        let arp = NeighbourSpec { index, ip: "10.244.9.0".parse().unwrap(), mac: entry.mac };
        nl.add_neighbour(&arp).expect("arp");
        assert!(nl.neighbours(index).expect("list").iter().any(|n| n.ip == arp.ip && n.permanent));
        assert!(nl.delete_fdb(index, &moved).expect("delete"));
        assert!(!nl.delete_fdb(index, &moved).expect("delete again"));
        assert!(nl.fdb(index).expect("list").is_empty());
        assert!(nl.delete_link("vxlan.calico").expect("delete link"));
    });
}
