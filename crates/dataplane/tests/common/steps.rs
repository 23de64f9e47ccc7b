//! The ADD and DEL sequences as calico-cni composes them, for the tests.

use std::net::IpAddr;

use dataplane::{
    host_veth_name, setup_container, setup_host, teardown, ContainerConfig, ContainerInfo,
    Namespace, VethEnd, HOST_VETH_MAC,
};

use super::TestNs;

pub const MTU: u32 = 1450;

pub fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter()
        .map(|s| s.parse().expect("test address"))
        .collect()
}

pub fn veth_ends(host_veth: &str, ifname: &str) -> (VethEnd, VethEnd) {
    let host = VethEnd {
        name: host_veth.to_string(),
        mac: Some(HOST_VETH_MAC),
        mtu: Some(MTU),
    };
    let peer = VethEnd {
        name: ifname.to_string(),
        mac: None,
        mtu: Some(MTU),
    };
    (host, peer)
}

/// ADD as calico-cni composes it; returns the host veth name.
pub fn add(host: &Namespace, ns: &TestNs, id: &str, addrs: &[IpAddr]) -> (String, ContainerInfo) {
    let veth = host_veth_name(id);
    let container = Namespace::open(&ns.path).expect("open container netns");
    let (host_end, peer_end) = veth_ends(&veth, "eth0");
    host.netlink()
        .create_veth(&host_end, &peer_end, container.netns())
        .expect("create veth");
    let config = ContainerConfig {
        ifname: "eth0",
        addresses: addrs,
        ip_forward: false,
    };
    let info = setup_container(&container, &config).expect("setup container");
    setup_host(host, &veth, addrs).expect("setup host");
    (veth, info)
}

pub fn del(host: &Namespace, ns: &TestNs, veth: &str) {
    teardown(host, veth, Some(&ns.path), "eth0").expect("teardown");
}
