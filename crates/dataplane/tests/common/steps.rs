//! The ADD and DEL sequences as calico-cni composes them, for the tests.

use std::net::IpAddr;

use dataplane::{
    host_veth_name, setup_container, setup_host, teardown, ContainerConfig, ContainerInfo, Namespace, VethEnd,
};

use super::Netns;

pub const MTU: u32 = 1450;

pub fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().expect("test address")).collect()
}

/// Creates the veth pair `host_veth` (Calico's host end, MTU [`MTU`]) / `eth0` inside
/// `container`.
pub fn create_pair(host: &Namespace, container: &Namespace, host_veth: &str) -> dataplane::Result<()> {
    host.netlink().create_veth(
        &VethEnd::host(host_veth, Some(MTU)),
        &VethEnd::container("eth0", Some(MTU)),
        container.netns(),
    )
}

/// ADD as calico-cni composes it; returns the host veth name.
pub fn add(host: &Namespace, ns: &Netns, id: &str, addrs: &[IpAddr]) -> (String, ContainerInfo) {
    let veth = host_veth_name(id);
    let container = Namespace::open(ns.path()).expect("open container netns");
    create_pair(host, &container, &veth).expect("create veth");
    let config = ContainerConfig { ifname: "eth0", addresses: addrs, ip_forward: false };
    let info = setup_container(&container, &config).expect("setup container");
    setup_host(host, &veth, addrs).expect("setup host");
    (veth, info)
}

pub fn del(host: &Namespace, ns: &Netns, veth: &str) {
    teardown(host, veth, Some(ns.path().as_ref()), "eth0").expect("teardown");
}
