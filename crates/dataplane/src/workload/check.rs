//! CHECK: verify a workload's dataplane is still as ADD left it.

use std::net::IpAddr;

use super::{
    container::{container_routes, gateway_neighbours},
    host_prefix,
};
use crate::{
    error::{Error, Result},
    namespace::Namespace,
    naming::format_mac,
    netlink::{IpFamily, Link, Netlink, RouteInfo, RouteSpec},
    sysctl::get_sysctl,
};

/// What CHECK expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSpec<'a> {
    /// The host end's name.
    pub host_veth: &'a str,
    /// The container end's name.
    pub ifname: &'a str,
    /// The workload's addresses.
    pub addresses: &'a [IpAddr],
}

fn up_link(netlink: &Netlink, name: &str, side: &str) -> Result<Link> {
    let link =
        netlink.link_by_name(name)?.ok_or_else(|| Error::check(format!("{side} interface {name} does not exist")))?;
    if !link.up {
        return Err(Error::check(format!("{side} interface {name} is down")));
    }
    Ok(link)
}

/// Fails unless a route matching `want` (destination, gateway, interface) is
/// in `routes`.
fn require_route(routes: &[RouteInfo], want: &RouteSpec, side: &str, dev: &str) -> Result<()> {
    let found = routes.iter().any(|r| r.dst == want.dst && r.gateway == want.gateway && r.oif == Some(want.oif));
    if found {
        return Ok(());
    }
    let via = want.gateway.map(|gw| format!(" via {gw}")).unwrap_or_default();
    Err(Error::check(format!("{side} route {}{via} dev {dev} is missing", want.dst)))
}

fn routes_for(netlink: &Netlink, addresses: &[IpAddr]) -> Result<Vec<RouteInfo>> {
    let mut routes = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        if addresses.iter().any(|&ip| IpFamily::of(ip) == family) {
            routes.extend(netlink.routes(family)?);
        }
    }
    Ok(routes)
}

fn check_container(container: &Namespace, spec: &CheckSpec<'_>) -> Result<()> {
    let netlink = container.netlink();
    let link = up_link(netlink, spec.ifname, "container")?;
    let present = netlink.addresses(link.index)?;
    for &ip in spec.addresses {
        if !present.contains(&host_prefix(ip)) {
            return Err(Error::check(format!(
                "address {} is missing on container interface {}",
                host_prefix(ip),
                spec.ifname
            )));
        }
    }
    let routes = routes_for(netlink, spec.addresses)?;
    let has_v4 = spec.addresses.iter().any(IpAddr::is_ipv4);
    let has_v6 = spec.addresses.iter().any(IpAddr::is_ipv6);
    for want in container_routes(link.index, has_v4, has_v6) {
        require_route(&routes, &want, "container", spec.ifname)?;
    }
    let neighbours = netlink.neighbours(link.index)?;
    for want in gateway_neighbours(link.index, has_v4, has_v6) {
        let mac = format_mac(want.mac);
        match neighbours.iter().find(|n| n.ip == want.ip) {
            Some(n) if n.permanent && n.mac == Some(want.mac) => {}
            Some(n) => {
                let found = n.mac.map_or_else(|| "no address".to_string(), format_mac);
                let state = if n.permanent { "permanent" } else { "not permanent" };
                return Err(Error::check(format!(
                    "container neighbour entry for gateway {} on {} is {found} ({state}), expected {mac} (permanent)",
                    want.ip, spec.ifname
                )));
            }
            None => {
                return Err(Error::check(format!(
                    "container neighbour entry {} lladdr {mac} dev {} is missing",
                    want.ip, spec.ifname
                )));
            }
        }
    }
    Ok(())
}

fn check_host(host: &Namespace, spec: &CheckSpec<'_>) -> Result<()> {
    let netlink = host.netlink();
    let link = up_link(netlink, spec.host_veth, "host")?;
    let routes = routes_for(netlink, spec.addresses)?;
    for &ip in spec.addresses {
        let want = RouteSpec { dst: host_prefix(ip), gateway: None, oif: link.index, scope_link: true };
        require_route(&routes, &want, "host", spec.host_veth)?;
    }
    let veth = spec.host_veth;
    host.run(|| {
        for key in ["proxy_arp", "forwarding"] {
            let path = format!("net/ipv4/conf/{veth}/{key}");
            let value = get_sysctl(&path)?;
            if value != "1" {
                return Err(Error::check(format!("sysctl {path} is {value}, expected 1")));
            }
        }
        Ok(())
    })?
}

/// Verifies the container interface (up, addresses, routes via
/// `169.254.1.1` / the host's link-local, the gateways' permanent neighbour
/// entries) and the host end (up, one route
/// per address, `proxy_arp` and `forwarding` on). The first difference is
/// reported as [`Error::Check`] with a specific message.
pub fn check(host: &Namespace, container: &Namespace, spec: &CheckSpec<'_>) -> Result<()> {
    check_container(container, spec)?;
    check_host(host, spec)
}
