//! One more address on a workload that is set up (`calicoctl container <C> ip add`), and
//! its removal: the address on the container end, and the host's `/32` (`/128`) route to it.
//! Each half undoes its own partial work when it fails; composing them (and undoing the
//! first when the second fails) is the caller's job.

use std::net::IpAddr;

use super::container::{apply_undoably, container_routes, container_v6_sysctls, gateway_neighbours};
use super::host::{add_host_route, host_sysctls};
use super::host_prefix;
use crate::{
    error::{Error, Result},
    namespace::Namespace,
    netlink::{Change, RouteSpec},
    rollback::Rollback,
};

/// Adds `ip` to the container end `ifname`. `new_family`: the workload has no address of
/// this family yet, so it also gets the family's gateway route and neighbour entry (and, for
/// IPv6, the interface's sysctls), as ADD gives them. [`Error::LinkNotFound`] when the
/// container has no `ifname`.
pub fn add_container_address(container: &Namespace, ifname: &str, ip: IpAddr, new_family: bool) -> Result<()> {
    let netlink = container.netlink();
    let link = netlink.link_by_name(ifname)?.ok_or_else(|| Error::LinkNotFound { name: ifname.to_string() })?;
    let index = link.index;
    if new_family && ip.is_ipv6() {
        container.run(|| container_v6_sysctls(ifname))??;
    }
    let mut changes = vec![Change::Address { index, address: host_prefix(ip) }];
    if new_family {
        let (v4, v6) = (ip.is_ipv4(), ip.is_ipv6());
        changes.extend(container_routes(index, v4, v6).into_iter().map(Change::Route));
        changes.extend(gateway_neighbours(index, v4, v6).into_iter().map(Change::Neighbour));
    }
    let mut rollback = Rollback::new();
    apply_undoably(netlink, ifname, changes, &mut rollback)?;
    rollback.disarm();
    Ok(())
}

/// Removes `ip` from the container end `ifname`; `last_of_family`: no other address of its
/// family stays, so the family's gateway route and neighbour entry go too (what
/// [`add_container_address`] added with the first). Whether the address was there; a missing
/// interface is no error (nothing is left to remove).
pub fn remove_container_address(container: &Namespace, ifname: &str, ip: IpAddr, last_of_family: bool) -> Result<bool> {
    let netlink = container.netlink();
    let Some(link) = netlink.link_by_name(ifname)? else { return Ok(false) };
    let removed = netlink.delete_address(link.index, host_prefix(ip))?;
    if last_of_family {
        let (v4, v6) = (ip.is_ipv4(), ip.is_ipv6());
        // The default route first: it goes through the gateway's link route.
        for route in container_routes(link.index, v4, v6).into_iter().rev() {
            netlink.revert(&Change::Route(route))?;
        }
        for neighbour in gateway_neighbours(link.index, v4, v6) {
            netlink.revert(&Change::Neighbour(neighbour))?;
        }
    }
    Ok(removed)
}

/// Adds the host's `scope link` route to `ip` through `host_veth` (and, for the first IPv6
/// address, the host end's IPv6 sysctls). Whether it was added: `false` when it was there.
pub fn add_host_address_route(host: &Namespace, host_veth: &str, ip: IpAddr, new_family: bool) -> Result<bool> {
    let netlink = host.netlink();
    let link = netlink.link_by_name(host_veth)?.ok_or_else(|| Error::LinkNotFound { name: host_veth.to_string() })?;
    if new_family && ip.is_ipv6() {
        host.run(|| host_sysctls(host_veth, true))??;
    }
    add_host_route(
        netlink,
        &link,
        &RouteSpec { dst: host_prefix(ip), gateway: None, oif: link.index, scope_link: true },
    )
}

/// Removes the host's route to `ip` through `host_veth`. Whether it was there.
pub fn remove_host_address_route(host: &Namespace, host_veth: &str, ip: IpAddr) -> Result<bool> {
    let netlink = host.netlink();
    match netlink.link_by_name(host_veth)? {
        Some(link) => {
            netlink.delete_route(&RouteSpec { dst: host_prefix(ip), gateway: None, oif: link.index, scope_link: true })
        }
        None => Ok(false),
    }
}
