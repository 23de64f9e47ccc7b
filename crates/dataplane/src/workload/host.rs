//! Step 3 of ADD: configure the host end of the veth.

use std::net::IpAddr;

use super::host_prefix;
use crate::{
    error::{Error, Result},
    namespace::Namespace,
    netlink::{IpFamily, Link, Netlink, RouteSpec},
    rollback::Rollback,
    sysctl::{ensure_sysctl, set_sysctl},
};

/// What the caller needs back about the host end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostInfo {
    /// Interface index of the host end.
    pub index: u32,
}

/// Writes the host end's sysctls and turns on host forwarding. The
/// per-interface ones go away with the interface; global forwarding is left
/// on, as Calico does (other workloads rely on it).
pub(crate) fn host_sysctls(veth: &str, has_v6: bool) -> Result<()> {
    set_sysctl(&format!("net/ipv4/conf/{veth}/proxy_arp"), "1")?;
    set_sysctl(&format!("net/ipv4/neigh/{veth}/proxy_delay"), "0")?;
    set_sysctl(&format!("net/ipv4/conf/{veth}/forwarding"), "1")?;
    match set_sysctl(&format!("net/ipv6/conf/{veth}/accept_ra"), "0") {
        // IPv6 disabled on this host: fine as long as the workload has none.
        Err(err) if !has_v6 && err.is_not_found() => {}
        other => other?,
    }
    if has_v6 {
        set_sysctl(&format!("net/ipv6/conf/{veth}/proxy_ndp"), "1")?;
        // Before the link goes up, so its link-local (the containers' IPv6
        // gateway) is usable at once instead of after DAD.
        set_sysctl(&format!("net/ipv6/conf/{veth}/accept_dad"), "0")?;
        set_sysctl(&format!("net/ipv6/conf/{veth}/forwarding"), "1")?;
        ensure_sysctl("net/ipv6/conf/all/forwarding", "1")?;
    }
    ensure_sysctl("net/ipv4/ip_forward", "1")?;
    Ok(())
}

/// Adds the host route `spec` through `link`. Returns `true` if it was added,
/// `false` if the same route already existed on `link`.
pub(crate) fn add_host_route(netlink: &Netlink, link: &Link, spec: &RouteSpec) -> Result<bool> {
    let err = match netlink.add_route(spec) {
        Ok(()) => return Ok(true),
        Err(err) if err.is_exists() => err,
        Err(err) => return Err(err),
    };
    let existing = netlink
        .routes(IpFamily::of(spec.dst.ip()))?
        .into_iter()
        .find(|route| route.dst == spec.dst)
        .and_then(|route| route.oif);
    match existing {
        Some(oif) if oif == link.index => Ok(false),
        Some(oif) => {
            let existing = netlink.link_by_index(oif)?.map_or_else(|| format!("#{oif}"), |other| other.name);
            Err(Error::RouteConflict { dst: spec.dst, wanted: link.name.clone(), existing })
        }
        None => Err(err),
    }
}

/// Configures the host end `host_veth` in `host` (normally
/// [`Namespace::current`]): proxy ARP (and NDP), forwarding, link up, and a
/// `scope link` route to each workload address.
///
/// A route for an address already present on this same interface is
/// accepted; on another interface it is [`Error::RouteConflict`]. On failure,
/// the routes added and the link state change are undone.
pub fn setup_host(host: &Namespace, host_veth: &str, addresses: &[IpAddr]) -> Result<HostInfo> {
    let netlink = host.netlink();
    let link = netlink.link_by_name(host_veth)?.ok_or_else(|| Error::LinkNotFound { name: host_veth.to_string() })?;
    let has_v6 = addresses.iter().any(IpAddr::is_ipv6);
    host.run(|| host_sysctls(host_veth, has_v6))??;

    let mut rollback = Rollback::new();
    let index = link.index;
    if !link.up {
        netlink.set_up(index)?;
        rollback.push("set host veth down", move || netlink.set_down(index));
    }
    for &ip in addresses {
        let route = RouteSpec { dst: host_prefix(ip), gateway: None, oif: index, scope_link: true };
        if add_host_route(netlink, &link, &route)? {
            rollback.push("remove host route", move || netlink.delete_route(&route).map(drop));
        }
    }
    rollback.disarm();
    Ok(HostInfo { index })
}
