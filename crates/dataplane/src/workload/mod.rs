//! Calico's per-workload dataplane, as steps calico-cni composes:
//!
//! 1. [`Netlink::create_veth`](crate::Netlink::create_veth) (host end
//!    `cali…` with MAC [`HOST_VETH_MAC`], peer created inside the container);
//! 2. [`setup_container`]: container end up, `/32` and `/128` addresses,
//!    routes via `169.254.1.1` and the host end's link-local address;
//! 3. [`setup_host`]: proxy ARP/NDP and forwarding sysctls, host end up, one
//!    `/32` (`/128`) route per address;
//! 4. [`teardown`] on DEL, [`check`] on CHECK, [`list_host_veths`] for GC;
//! 5. [`add_container_address`] and [`add_host_address_route`] (and their removals) for
//!    one more address on a workload that is set up.
//!
//! Each step undoes its own partial work when it fails; undoing earlier
//! steps is the caller's job (with a [`Rollback`](crate::Rollback)).

mod address;
mod check;
mod container;
mod host;
mod teardown;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

pub use address::{add_container_address, add_host_address_route, remove_container_address, remove_host_address_route};
pub use check::{check, CheckSpec};
pub use container::{setup_container, ContainerConfig, ContainerInfo};
pub use host::{setup_host, HostInfo};
pub use teardown::{delete_container_link, open_for_teardown, teardown};

use crate::{
    error::Result,
    naming::{link_local_from_mac, HOST_VETH_MAC},
    netlink::{Link, Netlink},
};

/// `0.0.0.0/0`.
pub const DEFAULT_V4: IpNetwork = match Ipv4Network::new_checked(Ipv4Addr::UNSPECIFIED, 0) {
    Some(net) => IpNetwork::V4(net),
    None => panic!("0.0.0.0/0 is a valid network"),
};

/// `::/0`.
pub const DEFAULT_V6: IpNetwork = match Ipv6Network::new_checked(Ipv6Addr::UNSPECIFIED, 0) {
    Some(net) => IpNetwork::V6(net),
    None => panic!("::/0 is a valid network"),
};

/// The container's IPv6 default gateway: the host end's EUI-64 link-local
/// address, known in advance because the host end's MAC is fixed.
pub fn ipv6_gateway() -> IpAddr {
    IpAddr::V6(link_local_from_mac(HOST_VETH_MAC))
}

/// `ip` as a host prefix: `/32` for IPv4, `/128` for IPv6.
pub fn host_prefix(ip: IpAddr) -> IpNetwork {
    IpNetwork::from(ip)
}

/// The host-side veths whose name starts with `prefix` (`"cali"` for
/// Calico), for garbage collection.
pub fn list_host_veths(host: &Netlink, prefix: &str) -> Result<Vec<Link>> {
    Ok(host
        .links()?
        .into_iter()
        .filter(|link| link.name.starts_with(prefix) && link.kind.as_deref() == Some("veth"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_prefixes() {
        assert_eq!(host_prefix("10.0.0.5".parse().unwrap()).to_string(), "10.0.0.5/32");
        assert_eq!(host_prefix("fd00::5".parse().unwrap()).to_string(), "fd00::5/128");
        assert_eq!(ipv6_gateway().to_string(), "fe80::ecee:eeff:feee:eeee");
    }
}
