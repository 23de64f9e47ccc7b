//! This host: its addresses and the uplink they are on, given with `--ip`/`--ip6` or
//! autodetected as Calico's `first-found` does.

use std::net::IpAddr;

use dataplane::{IpFamily, Link, RouteTarget};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::kernel::Kernel;
use crate::{Error, Result};

/// Interfaces never chosen by autodetection: ours, tunnels and other container networks.
pub const SKIPPED_PREFIXES: [&str; 6] = ["lo", "cali", "tunl", "vxlan", "docker", "veth"];

/// What the agent knows of this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    /// The node name.
    pub name: String,
    /// The IPv4 address with the prefix of its subnet.
    pub ipv4: Option<Ipv4Network>,
    /// The IPv6 address with its prefix.
    pub ipv6: Option<Ipv6Network>,
    /// The interface holding the IPv4 address (or the IPv6 one when there is no IPv4).
    pub uplink: Link,
    /// The interface holding the IPv6 address.
    pub uplink6: Option<Link>,
}

impl Local {
    /// The uplink index for routes of `family`.
    pub fn uplink_index(&self, family: IpFamily) -> Option<u32> {
        match family {
            IpFamily::V4 => self.ipv4.map(|_| self.uplink.index),
            IpFamily::V6 => self.uplink6.as_ref().map(|l| l.index),
        }
    }

    /// This host's subnet of `family`.
    pub fn network(&self, family: IpFamily) -> Option<IpNetwork> {
        match family {
            IpFamily::V4 => self.ipv4.map(IpNetwork::V4),
            IpFamily::V6 => self.ipv6.map(IpNetwork::V6),
        }
    }
}

/// What the operator asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressChoice {
    /// `--ip`: the IPv4 address and its prefix; autodetected when `None`.
    pub ipv4: Option<Ipv4Network>,
    /// `--ip6`.
    pub ipv6: Option<Ipv6Network>,
    /// `--interface`: autodetect on this interface only.
    pub interface: Option<String>,
}

fn skipped(name: &str) -> bool {
    SKIPPED_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn usable_v4(net: &IpNetwork) -> Option<Ipv4Network> {
    match net {
        IpNetwork::V4(v4) if !v4.ip().is_loopback() && !v4.ip().is_link_local() => Some(*v4),
        _ => None,
    }
}

/// Work out this host's addresses and uplinks.
pub fn detect(kernel: &dyn Kernel, name: &str, choice: &AddressChoice) -> Result<Local> {
    let links = kernel.links()?;
    let mut addressed = Vec::with_capacity(links.len());
    for link in links {
        let addresses = kernel.addresses(link.index)?;
        addressed.push((link, addresses));
    }
    let holder = |ip: IpAddr| addressed.iter().find(|(_, a)| a.iter().any(|n| n.ip() == ip)).map(|(l, _)| l.clone());
    let known = || {
        let all: Vec<String> =
            addressed.iter().flat_map(|(l, a)| a.iter().map(move |n| format!("{n} ({})", l.name))).collect();
        if all.is_empty() {
            "no addresses".to_owned()
        } else {
            all.join(", ")
        }
    };
    if let Some(wanted) = &choice.interface {
        if !addressed.iter().any(|(l, _)| &l.name == wanted) {
            let names: Vec<&str> = addressed.iter().map(|(l, _)| l.name.as_str()).collect();
            return Err(Error::UnknownInterface { name: wanted.clone(), known: names.join(", ") });
        }
    }

    let (ipv4, uplink) = match choice.ipv4 {
        Some(net) => {
            let link = holder(IpAddr::V4(net.ip()))
                .ok_or_else(|| Error::AddressNotLocal { ip: IpAddr::V4(net.ip()), known: known() })?;
            (Some(net), Some(link))
        }
        None => {
            let (net, link) = autodetect_v4(kernel, &addressed, choice.interface.as_deref())?;
            (Some(net), Some(link))
        }
    };
    let (ipv6, uplink6) = match choice.ipv6 {
        Some(net) => {
            let link = holder(IpAddr::V6(net.ip()))
                .ok_or_else(|| Error::AddressNotLocal { ip: IpAddr::V6(net.ip()), known: known() })?;
            (Some(net), Some(link))
        }
        None => (None, None),
    };
    let uplink = uplink.or_else(|| uplink6.clone()).ok_or_else(|| Error::NoAddress { reason: "no address".into() })?;
    Ok(Local { name: name.to_owned(), ipv4, ipv6, uplink, uplink6 })
}

/// The first usable IPv4 address of the interface holding the default route, else of the
/// first interface that is up (skipping [`SKIPPED_PREFIXES`]); only `interface` if given.
fn autodetect_v4(
    kernel: &dyn Kernel,
    addressed: &[(Link, Vec<IpNetwork>)],
    interface: Option<&str>,
) -> Result<(Ipv4Network, Link)> {
    let first_v4 = |link: &Link| {
        addressed.iter().find(|(l, _)| l.index == link.index).and_then(|(_, a)| a.iter().find_map(usable_v4))
    };
    if let Some(name) = interface {
        let (link, _) = addressed.iter().find(|(l, _)| l.name == name).expect("checked by the caller");
        return first_v4(link)
            .map(|net| (net, link.clone()))
            .ok_or_else(|| Error::NoAddress { reason: format!("interface {name} has no IPv4 address") });
    }
    let default_oif = kernel.routes(IpFamily::V4)?.into_iter().find_map(|r| match (r.dst.prefix(), r.target) {
        (0, RouteTarget::Via { oif, .. } | RouteTarget::Dev { oif }) => Some(oif),
        _ => None,
    });
    if let Some((link, _)) = default_oif.and_then(|oif| addressed.iter().find(|(l, _)| l.index == oif)) {
        if let Some(net) = first_v4(link) {
            return Ok((net, link.clone()));
        }
    }
    for (link, _) in addressed.iter().filter(|(l, _)| l.up && !skipped(&l.name)) {
        if let Some(net) = first_v4(link) {
            return Ok((net, link.clone()));
        }
    }
    Err(Error::NoAddress {
        reason: "no default route, and no interface that is up (other than lo, cali*, tunl*, vxlan*, docker*, \
                 veth*) has an IPv4 address"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::FakeKernel;
    use dataplane::TaggedRoute;

    fn link(index: u32, name: &str, up: bool) -> Link {
        Link { index, name: name.into(), mac: None, mtu: 1500, up, kind: None }
    }

    fn kernel(links: Vec<(Link, Vec<&str>)>) -> FakeKernel {
        let k = FakeKernel::default();
        k.state.lock().unwrap().links =
            links.into_iter().map(|(l, a)| (l, a.iter().map(|a| a.parse().unwrap()).collect())).collect();
        k
    }

    #[test]
    fn the_default_route_interface_wins() {
        let k = kernel(vec![
            (link(1, "lo", true), vec!["127.0.0.1/8"]),
            (link(2, "eth0", true), vec!["10.0.0.5/24"]),
            (link(3, "eth1", true), vec!["169.254.9.9/16", "10.1.0.5/16"]),
        ]);
        let local = detect(&k, "n", &AddressChoice::default()).unwrap();
        assert_eq!(local.ipv4, Some("10.0.0.5/24".parse().unwrap()), "first up interface without a default route");
        k.state.lock().unwrap().routes.push(TaggedRoute {
            dst: "0.0.0.0/0".parse().unwrap(),
            target: RouteTarget::Via { gateway: "10.1.0.1".parse().unwrap(), oif: 3, onlink: false },
            protocol: 3,
            metric: 0,
        });
        let local = detect(&k, "n", &AddressChoice::default()).unwrap();
        assert_eq!(local.ipv4, Some("10.1.0.5/16".parse().unwrap()), "link-local skipped");
        assert_eq!(local.uplink.name, "eth1");
    }

    #[test]
    fn ours_and_other_container_interfaces_are_skipped() {
        let k = kernel(vec![
            (link(1, "lo", true), vec!["127.0.0.1/8"]),
            (link(2, "cali12345", true), vec!["10.9.0.1/32"]),
            (link(3, "docker0", true), vec!["172.17.0.1/16"]),
            (link(4, "veth0", true), vec!["10.8.0.1/24"]),
            (link(5, "ens3", false), vec!["10.7.0.1/24"]),
            (link(6, "ens4", true), vec!["10.6.0.1/24"]),
        ]);
        assert_eq!(detect(&k, "n", &AddressChoice::default()).unwrap().uplink.name, "ens4");
        k.state.lock().unwrap().links.pop();
        let err = detect(&k, "n", &AddressChoice::default()).unwrap_err();
        assert!(err.to_string().contains("--ip ADDR/PREFIX"), "{err}");
    }

    #[test]
    fn given_addresses_must_be_local() {
        let k = kernel(vec![(link(2, "eth0", true), vec!["10.0.0.5/24", "fd00::5/64"])]);
        let choice = AddressChoice {
            ipv4: Some("10.0.0.5/24".parse().unwrap()),
            ipv6: Some("fd00::5/64".parse().unwrap()),
            interface: None,
        };
        let local = detect(&k, "n", &choice).unwrap();
        assert_eq!(local.uplink6.as_ref().map(|l| l.index), Some(2));
        let err = detect(&k, "n", &AddressChoice { ipv4: Some("10.0.0.6/24".parse().unwrap()), ..choice.clone() })
            .unwrap_err();
        assert!(err.to_string().contains("no interface of this host holds 10.0.0.6"), "{err}");
        assert!(err.to_string().contains("10.0.0.5/24 (eth0)"), "{err}");
        let err =
            detect(&k, "n", &AddressChoice { interface: Some("eth9".into()), ..AddressChoice::default() }).unwrap_err();
        assert!(err.to_string().contains("unknown interface \"eth9\": this host has eth0"), "{err}");
        let only = AddressChoice { interface: Some("eth0".into()), ..AddressChoice::default() };
        assert_eq!(detect(&k, "n", &only).unwrap().ipv4, Some("10.0.0.5/24".parse().unwrap()));
    }
}
