//! End-to-end tests of the workload steps in throwaway namespaces (run as
//! root): ADD, CHECK, traffic, DEL. See `common/mod.rs` for how the real
//! host is kept out of it.

mod common;

use common::{
    steps::{add, create_pair, del, ips},
    thread_netns_inode, Lab,
};
use dataplane::{
    check, host_veth_name, list_host_veths, naming::format_mac, setup_container, teardown, CheckSpec, ContainerConfig,
    Namespace,
};
use testkit::netns::HOST_V4;

#[test]
fn ipv4_add_check_ping_del() {
    let lab = Lab::new(2);
    let (c0, c1) = (&lab.containers[0], &lab.containers[1]);
    lab.in_host(|| {
        let host = Namespace::current().expect("host namespace");
        let a0 = ips(&["10.65.0.2"]);
        let a1 = ips(&["10.65.0.3"]);
        let (v0, info0) = add(&host, c0, "c0", &a0);
        let (v1, _) = add(&host, c1, "c1", &a1);

        // Container side, seen by iproute2.
        let link = c0.ip(&["link", "show", "eth0"]);
        assert!(link.contains("UP") && link.contains("mtu 1450"), "{link}");
        assert!(link.contains(&format_mac(info0.mac)), "{link}");
        assert!(c0.ip(&["addr", "show", "eth0"]).contains("inet 10.65.0.2/32"));
        let routes = c0.ip(&["route"]);
        assert!(routes.contains("default via 169.254.1.1 dev eth0"), "{routes}");
        assert!(routes.contains("169.254.1.1 dev eth0 proto static scope link"), "{routes}");
        assert_eq!(c0.sysctl("net/ipv4/ip_forward"), "0");

        // Host side.
        let link = lab.host.ip(&["link", "show", &v0]);
        assert!(link.contains("ee:ee:ee:ee:ee:ee") && link.contains(",UP"), "{link}");
        let routes = lab.host.ip(&["route"]);
        assert!(routes.contains(&format!("10.65.0.2 dev {v0} proto static scope link")), "{routes}");
        assert!(routes.contains(&format!("10.65.0.3 dev {v1} proto static scope link")), "{routes}");
        for (path, want) in [
            (format!("net/ipv4/conf/{v0}/proxy_arp"), "1"),
            (format!("net/ipv4/neigh/{v0}/proxy_delay"), "0"),
            (format!("net/ipv4/conf/{v0}/forwarding"), "1"),
            (format!("net/ipv6/conf/{v0}/accept_ra"), "0"),
            ("net/ipv4/ip_forward".to_string(), "1"),
        ] {
            assert_eq!(lab.host.sysctl(&path), want, "{path}");
        }

        // Traffic: container -> host, container -> container.
        assert!(c0.ping(HOST_V4), "c0 -> host");
        assert!(c0.ping("10.65.0.3"), "c0 -> c1");
        assert!(c1.ping("10.65.0.2"), "c1 -> c0");

        let container = Namespace::open(c0.path()).expect("open c0");
        let spec = CheckSpec { host_veth: &v0, ifname: "eth0", addresses: &a0 };
        check(&host, &container, &spec).expect("check after add");
        let found = list_host_veths(host.netlink(), "cali").expect("list veths");
        assert_eq!(found.len(), 2, "{found:?}");

        del(&host, c0, &v0);
        del(&host, c1, &v1);
        del(&host, c0, &v0); // twice is fine
        assert!(!lab.host.ip(&["link"]).contains("cali"));
        assert!(!lab.host.ip(&["route"]).contains("10.65.0."));
        assert!(!c0.ip(&["link"]).contains("eth0"));
        let err = check(&host, &container, &spec).expect_err("check after del");
        assert_eq!(err.to_string(), "check failed: container interface eth0 does not exist");
    });
}

#[test]
fn dual_stack_ping6() {
    let lab = Lab::new(2);
    let (c0, c1) = (&lab.containers[0], &lab.containers[1]);
    lab.in_host(|| {
        let host = Namespace::current().expect("host namespace");
        let a0 = ips(&["10.65.1.2", "fd00:65::2"]);
        let a1 = ips(&["10.65.1.3", "fd00:65::3"]);
        let (v0, _) = add(&host, c0, "c0", &a0);
        let (v1, _) = add(&host, c1, "c1", &a1);

        assert!(c0.ip(&["-6", "addr", "show", "eth0"]).contains("inet6 fd00:65::2/128"));
        let routes = c0.ip(&["-6", "route"]);
        assert!(routes.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"), "{routes}");
        let routes = lab.host.ip(&["-6", "route"]);
        assert!(routes.contains(&format!("fd00:65::2 dev {v0}")), "{routes}");
        for key in ["proxy_ndp", "forwarding"] {
            assert_eq!(lab.host.sysctl(&format!("net/ipv6/conf/{v0}/{key}")), "1", "{key}");
        }
        assert_eq!(lab.host.sysctl(&format!("net/ipv6/conf/{v0}/accept_dad")), "0");
        assert_eq!(lab.host.sysctl("net/ipv6/conf/all/forwarding"), "1");

        assert!(c0.ping("fd00:65::3"), "c0 -> c1 over IPv6");
        assert!(c1.ping("fd00:65::2"), "c1 -> c0 over IPv6");
        assert!(c0.ping("fe80::ecee:eeff:feee:eeee%eth0"), "c0 -> host end link-local");
        assert!(c0.ping("10.65.1.3"), "c0 -> c1 over IPv4");

        let container = Namespace::open(c0.path()).expect("open c0");
        let spec = CheckSpec { host_veth: &v0, ifname: "eth0", addresses: &a0 };
        check(&host, &container, &spec).expect("dual-stack check");

        del(&host, c0, &v0);
        del(&host, c1, &v1);
        assert!(!lab.host.ip(&["-6", "route"]).contains("fd00:65"));
    });
}

#[test]
fn teardown_after_container_netns_is_gone() {
    let lab = Lab::new(1);
    let c0 = &lab.containers[0];
    let path = std::path::PathBuf::from(c0.path());
    let veth = lab.in_host(|| {
        let host = Namespace::current().expect("host namespace");
        add(&host, c0, "c0", &ips(&["10.65.5.2"])).0
    });
    testkit::ip(&["netns", "del", &c0.name]);
    lab.in_host(|| {
        let host = Namespace::current().expect("host namespace");
        teardown(&host, &veth, Some(&path), "eth0").expect("netns gone");
        assert!(!lab.host.ip(&["link"]).contains("cali"));
        assert!(!lab.host.ip(&["route"]).contains("10.65.5.2"));
    });
}

#[test]
fn calling_thread_stays_in_its_netns() {
    let lab = Lab::new(1);
    let c0 = &lab.containers[0];
    lab.in_host(|| {
        let before = thread_netns_inode();
        let host = Namespace::current().expect("host namespace");
        let container = Namespace::open(c0.path()).expect("open c0");
        assert_ne!(container.netns().inode().expect("inode"), before);
        create_pair(&host, &container, &host_veth_name("c0")).expect("create veth");
        let config = ContainerConfig { ifname: "eth0", addresses: &ips(&["10.65.6.2"]), ip_forward: true };
        setup_container(&container, &config).expect("setup container");
        // The container's ip_forward changed, the host's did not.
        assert_eq!(c0.sysctl("net/ipv4/ip_forward"), "1");
        assert_eq!(lab.host.sysctl("net/ipv4/ip_forward"), "0");
        assert_eq!(thread_netns_inode(), before);
        // The container end is not visible from here; the host end is.
        assert!(host.netlink().link_by_name("eth0").expect("lookup").is_none());
        let inner = container.netns().run(thread_netns_inode).expect("run");
        assert_eq!(inner, container.netns().inode().expect("inode"));
        assert_eq!(thread_netns_inode(), before);
    });
}

/// With no host end left (removed by hand, or never created), teardown still removes a
/// container interface of that name, and it is idempotent.
#[test]
fn teardown_without_a_host_end_removes_the_container_interface() {
    let lab = Lab::new(1);
    let c0 = &lab.containers[0];
    c0.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "leftover0"]);
    let path = std::path::PathBuf::from(c0.path());
    lab.in_host(|| {
        let host = Namespace::current().expect("host namespace");
        let veth = host_veth_name("no-host-end");
        teardown(&host, &veth, Some(&path), "eth0").expect("teardown");
        teardown(&host, &veth, Some(&path), "eth0").expect("teardown again");
    });
    let links = c0.ip(&["link"]);
    assert!(!links.contains("eth0") && !links.contains("leftover0"), "{links}");
}
