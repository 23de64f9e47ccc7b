//! Step 2 of ADD: configure the container end of the veth.

use std::net::IpAddr;

use super::{host_prefix, ipv6_gateway, DEFAULT_V4, DEFAULT_V6};
use crate::{
    error::{Error, Result},
    namespace::Namespace,
    naming::IPV4_GATEWAY,
    netlink::RouteSpec,
    rollback::Rollback,
    sysctl::{ensure_sysctl, set_sysctl},
};

/// What the container side gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerConfig<'a> {
    /// The container end's name (`CNI_IFNAME`, e.g. `eth0`).
    pub ifname: &'a str,
    /// The workload's addresses; each is configured as `/32` or `/128`.
    pub addresses: &'a [IpAddr],
    /// Value for the container's `net.ipv4.ip_forward` (Calico's
    /// `allow_ip_forwarding`, default off).
    pub ip_forward: bool,
}

/// What the caller needs back for the CNI result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Interface index inside the container.
    pub index: u32,
    /// The container end's MAC.
    pub mac: [u8; 6],
}

/// The routes every Calico container gets through `oif`.
pub(crate) fn container_routes(oif: u32, has_v4: bool, has_v6: bool) -> Vec<RouteSpec> {
    let mut routes = Vec::with_capacity(3);
    if has_v4 {
        routes.push(RouteSpec { dst: host_prefix(IpAddr::V4(IPV4_GATEWAY)), gateway: None, oif, scope_link: true });
        routes.push(RouteSpec { dst: DEFAULT_V4, gateway: Some(IpAddr::V4(IPV4_GATEWAY)), oif, scope_link: false });
    }
    if has_v6 {
        routes.push(RouteSpec { dst: DEFAULT_V6, gateway: Some(ipv6_gateway()), oif, scope_link: false });
    }
    routes
}

/// Writes the container's sysctls; returns the previous `ip_forward` value
/// if it changed.
fn container_sysctls(ifname: &str, has_v6: bool, ip_forward: bool) -> Result<Option<String>> {
    if has_v6 {
        set_sysctl(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0")?;
        // The /128 is unique by IPAM: skip DAD so it is usable at once.
        set_sysctl(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0")?;
    }
    ensure_sysctl("net/ipv4/ip_forward", if ip_forward { "1" } else { "0" })
}

/// Configures the container end `config.ifname` (created by
/// [`Netlink::create_veth`](crate::Netlink::create_veth)) inside `container`:
/// sysctls, link up, addresses, `169.254.1.1/32 scope link`,
/// `default via 169.254.1.1`, and for IPv6 `default via
/// fe80::ecee:eeff:feee:eeee`.
///
/// On failure, what this step did is undone (the interface itself stays; it
/// belongs to the veth step).
pub fn setup_container(container: &Namespace, config: &ContainerConfig<'_>) -> Result<ContainerInfo> {
    let netlink = container.netlink();
    let link =
        netlink.link_by_name(config.ifname)?.ok_or_else(|| Error::LinkNotFound { name: config.ifname.to_string() })?;
    let mac = link.mac.ok_or_else(|| Error::Invalid {
        what: "container interface",
        value: link.name.clone(),
        reason: "has no Ethernet address",
    })?;
    let index = link.index;
    let has_v4 = config.addresses.iter().any(IpAddr::is_ipv4);
    let has_v6 = config.addresses.iter().any(IpAddr::is_ipv6);
    let mut rollback = Rollback::new();

    let ifname = config.ifname;
    if let Some(old) = container.run(|| container_sysctls(ifname, has_v6, config.ip_forward))?? {
        rollback.push("restore container net.ipv4.ip_forward", move || {
            container.run(|| set_sysctl("net/ipv4/ip_forward", &old))?
        });
    }

    netlink.set_up(index)?;
    rollback.push("set container interface down", move || netlink.set_down(index));

    for &ip in config.addresses {
        let address = host_prefix(ip);
        netlink.add_address(index, address)?;
        rollback.push("remove container address", move || netlink.delete_address(index, address).map(drop));
    }

    for route in container_routes(index, has_v4, has_v6) {
        netlink.add_route(&route)?;
        rollback.push("remove container route", move || netlink.delete_route(&route).map(drop));
    }

    rollback.disarm();
    Ok(ContainerInfo { index, mac })
}
