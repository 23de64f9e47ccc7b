//! Failure cases: each step fails cleanly, names what went wrong, keeps the
//! errno, and leaves nothing behind (run as root, in throwaway namespaces).

mod common;

use std::path::Path;

use common::{
    steps::{add, create_pair, ips},
    Lab,
};
use dataplane::{host_veth_name, setup_container, setup_host, teardown, ContainerConfig, Error, Namespace, NetNs};

#[test]
fn container_ifname_taken_fails_with_eexist_and_leaves_nothing() {
    let lab = Lab::new(1);
    let c0 = &lab.containers[0];
    c0.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "other0"]);
    lab.in_host(|| {
        let host = Namespace::current().expect("host namespace");
        let container = Namespace::open(c0.path()).expect("open c0");
        let veth = host_veth_name("taken");
        let err = create_pair(&host, &container, &veth).expect_err("eth0 is taken");
        assert!(err.is_exists(), "{err:?}");
        assert!(host.netlink().link_by_name(&veth).expect("lookup").is_none());
        assert!(!lab.host.ip(&["link"]).contains("cali"));
    });
}

#[test]
fn route_conflict_names_both_interfaces_and_rolls_back() {
    let lab = Lab::new(2);
    let (c0, c1) = (&lab.containers[0], &lab.containers[1]);
    lab.in_host(|| {
        let host = Namespace::current().expect("host namespace");
        let (v0, _) = add(&host, c0, "c0", &ips(&["10.65.2.9"]));

        let v1 = host_veth_name("c1");
        let container = Namespace::open(c1.path()).expect("open c1");
        create_pair(&host, &container, &v1).expect("create veth");
        let addrs = ips(&["10.65.2.10", "10.65.2.9"]);
        let err = setup_host(&host, &v1, &addrs).expect_err("10.65.2.9 is on c0");
        match &err {
            Error::RouteConflict { wanted, existing, .. } => {
                assert_eq!((wanted, existing), (&v1, &v0));
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains(&v0) && err.to_string().contains(&v1));
        // setup_host undid its own work: no route for .10, link down again;
        // c0's route is untouched.
        let routes = lab.host.ip(&["route"]);
        assert!(!routes.contains("10.65.2.10"), "{routes}");
        assert!(routes.contains(&format!("10.65.2.9 dev {v0}")), "{routes}");
        let link = host.netlink().link_by_name(&v1).expect("lookup").expect("veth");
        assert!(!link.up);
        // Re-running setup_host for c0's own address on c0's veth is fine.
        setup_host(&host, &v0, &ips(&["10.65.2.9"])).expect("same route, same interface");
    });
}

#[test]
fn failed_setup_container_undoes_itself() {
    let lab = Lab::new(1);
    let c0 = &lab.containers[0];
    // A default route already there makes the last step fail with EEXIST.
    c0.ip(&["link", "add", "x0", "type", "veth", "peer", "name", "x1"]);
    c0.ip(&["link", "set", "x0", "up"]);
    c0.ip(&["route", "add", "default", "dev", "x0"]);
    lab.in_host(|| {
        let host = Namespace::current().expect("host namespace");
        let container = Namespace::open(c0.path()).expect("open c0");
        create_pair(&host, &container, &host_veth_name("c0")).expect("create veth");
        let config = ContainerConfig { ifname: "eth0", addresses: &ips(&["10.65.3.2"]), ip_forward: true };
        let err = setup_container(&container, &config).expect_err("default route exists");
        assert!(err.is_exists(), "{err:?}");
        let link = c0.ip(&["link", "show", "eth0"]);
        assert!(!link.contains(",UP"), "{link}");
        assert!(!c0.ip(&["addr", "show", "eth0"]).contains("10.65.3.2"));
        assert!(!c0.ip(&["route"]).contains("169.254.1.1"));
        assert_eq!(c0.sysctl("net/ipv4/ip_forward"), "0");
    });
}

#[test]
fn netns_paths_that_are_not_namespaces() {
    let lab = Lab::new(1);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let err = NetNs::open(file.path()).expect_err("regular file");
    assert!(matches!(err, Error::NotNetNs { .. }), "{err:?}");
    assert!(err.to_string().contains("is not a network namespace (a regular file)"), "{err}");

    let c0 = &lab.containers[0];
    lab.in_host(|| {
        let host = Namespace::current().expect("host namespace");
        let (veth, _) = add(&host, c0, "c0", &ips(&["10.65.4.2"]));
        // DEL with a netns path that is a file, empty, missing, or none: all fine.
        teardown(&host, &veth, Some(file.path()), "eth0").expect("file netns");
        teardown(&host, &veth, Some(Path::new("")), "eth0").expect("empty netns");
        teardown(&host, &veth, Some(Path::new("/run/netns/dp-gone")), "eth0").expect("missing");
        teardown(&host, &veth, None, "eth0").expect("no netns");
        assert!(!lab.host.ip(&["link"]).contains("cali"));
    });
}
