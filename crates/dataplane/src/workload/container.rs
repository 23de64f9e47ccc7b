//! Step 2 of ADD: configure the container end of the veth.

use std::net::IpAddr;

use super::{host_prefix, ipv6_gateway, DEFAULT_V4, DEFAULT_V6};
use crate::{
    error::{Error, Result},
    namespace::Namespace,
    naming::{HOST_VETH_MAC, IPV4_GATEWAY},
    netlink::{Change, NeighbourSpec, RouteSpec},
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

/// The gateways' permanent neighbour entries through `index`: the container
/// resolves `169.254.1.1` (and the host end's link-local) to the host end's
/// fixed MAC without asking. Proxy ARP answers only when the host has a route
/// to `169.254.1.1`, which a host without a default route lacks.
pub(crate) fn gateway_neighbours(index: u32, has_v4: bool, has_v6: bool) -> Vec<NeighbourSpec> {
    let mut neighbours = Vec::with_capacity(2);
    if has_v4 {
        neighbours.push(NeighbourSpec { index, ip: IpAddr::V4(IPV4_GATEWAY), mac: HOST_VETH_MAC });
    }
    if has_v6 {
        neighbours.push(NeighbourSpec { index, ip: ipv6_gateway(), mac: HOST_VETH_MAC });
    }
    neighbours
}

/// Writes the container's sysctls; returns the previous `ip_forward` value
/// if it changed.
fn container_sysctls(ifname: &str, has_v6: bool, ip_forward: bool) -> Result<Option<String>> {
    if has_v6 {
        container_v6_sysctls(ifname)?;
    }
    ensure_sysctl("net/ipv4/ip_forward", if ip_forward { "1" } else { "0" })
}

/// IPv6 on the container end, and no DAD: the /128 is unique by IPAM, and usable at once.
pub(crate) fn container_v6_sysctls(ifname: &str) -> Result<()> {
    set_sysctl(&format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0")?;
    set_sysctl(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0")
}

/// Configures the container end `config.ifname` (created by
/// [`Netlink::create_veth`](crate::Netlink::create_veth)) inside `container`:
/// sysctls, link up, addresses, `169.254.1.1/32 scope link`,
/// `default via 169.254.1.1`, and for IPv6 `default via
/// fe80::ecee:eeff:feee:eeee`, and a permanent neighbour entry
/// `ee:ee:ee:ee:ee:ee` for each gateway.
///
/// After looking up the interface, everything is one netlink round trip
/// ([`Netlink::apply`](crate::Netlink::apply)).
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

    let mut changes = vec![Change::LinkUp(index)];
    changes.extend(config.addresses.iter().map(|&ip| Change::Address { index, address: host_prefix(ip) }));
    changes.extend(container_routes(index, has_v4, has_v6).into_iter().map(Change::Route));
    changes.extend(gateway_neighbours(index, has_v4, has_v6).into_iter().map(Change::Neighbour));
    apply_undoably(netlink, ifname, changes, &mut rollback)?;
    rollback.disarm();
    Ok(ContainerInfo { index, mac })
}

/// Applies `changes` to `dev` in one round trip, pushing the undo of each that took onto
/// `rollback`; the first refusal is the error.
pub(crate) fn apply_undoably<'a>(
    netlink: &'a crate::netlink::Netlink,
    dev: &str,
    changes: Vec<Change>,
    rollback: &mut Rollback<'a>,
) -> Result<()> {
    let outcomes = match netlink.apply(dev, &changes) {
        Ok(outcomes) => outcomes,
        Err(err) => {
            // No answer: any of them may be in place; undoing one that is not succeeds.
            for change in changes {
                rollback.push("undo a container change", move || netlink.revert(&change));
            }
            return Err(err);
        }
    };
    let mut first_error = None;
    for (change, outcome) in changes.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => rollback.push("undo a container change", move || netlink.revert(&change)),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
