//! calico-node's agent: this host's node record, and the routes (and IPIP or VXLAN tunnel) to every
//! other host's blocks, kept in step with the datastore by a watch.
//!
//! - [`local`]: this host's addresses and uplink (`--ip`, or autodetected);
//! - [`register`]: the node record, refused when another node claims the address;
//! - [`cluster`]: the datastore as far as routes go, applied key by key, with the routes each
//!   change touches;
//! - [`routes`]: the route each destination should have, and the table of ours (`proto 80`)
//!   diffed against the kernel;
//! - [`vxlan`]: `vxlan.calico`, the tunnel address, ARP and FDB entries per remote node;
//! - [`ipip`]: the kernel's `tunl0`, set up with this node's IPIP tunnel address;
//! - [`nat`]: the pool sets of the `inet calico` table (outgoing NAT), kept to the pools;
//! - [`bgp`]: BGP through BIRD: bird.conf from the datastore, BIRD supervised;
//! - [`agent`]: the loop (full sync, watch, resync, backoff) over the pieces above;
//! - [`policy`]: security profiles: the `inet calico-policy` table, rebuilt in one transaction
//!   on every profile or endpoint change;
//! - [`kernel`]: the kernel behind a trait, over netlink or a recording fake;
//! - [`health`], [`mtu`]: the health and metrics endpoints, the MTU file.
pub mod agent;
pub mod bgp;
pub mod cluster;
mod error;
pub mod health;
pub mod ipip;
pub mod kernel;
pub mod local;
pub mod mtu;
pub mod nat;
pub mod policy;
pub mod register;
pub mod routes;
pub mod vxlan;

pub use error::{Error, Result};

/// An error with its chain of causes, `a: b: c`, for logs and messages.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A duration as the flags take it: `90s`, `500ms`, `2m`, `1h`, or a number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if seconds <= 0.0 || !seconds.is_finite() {
        return Err(format!("{text:?}: the duration must be more than zero"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// `--ip`: an IPv4 address with the prefix of its subnet, `10.0.0.5/24`.
pub fn parse_ipv4_with_prefix(text: &str) -> std::result::Result<ipnetwork::Ipv4Network, String> {
    let bad = || format!("{text:?} is not an IPv4 address with its prefix, e.g. 10.0.0.5/24");
    if !text.contains('/') {
        return Err(bad());
    }
    let net: ipnetwork::Ipv4Network = text.parse().map_err(|_| bad())?;
    if net.ip().is_unspecified() || net.ip().is_loopback() || net.ip().is_multicast() || net.ip().is_broadcast() {
        return Err(format!("{text:?} cannot be a node's address"));
    }
    Ok(net)
}

/// `--ip6`: an IPv6 address with its prefix, `fd00::5/64`.
pub fn parse_ipv6_with_prefix(text: &str) -> std::result::Result<ipnetwork::Ipv6Network, String> {
    let bad = || format!("{text:?} is not an IPv6 address with its prefix, e.g. fd00::5/64");
    if !text.contains('/') {
        return Err(bad());
    }
    let net: ipnetwork::Ipv6Network = text.parse().map_err(|_| bad())?;
    if net.ip().is_unspecified() || net.ip().is_loopback() || net.ip().is_multicast() {
        return Err(format!("{text:?} cannot be a node's address"));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "s", "0s", "-1s", "5d", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_need_their_prefix() {
        assert_eq!(parse_ipv4_with_prefix("10.0.0.5/24").unwrap().prefix(), 24);
        for bad in ["10.0.0.5", "10.0.0.5/33", "bogus", "0.0.0.0/0", "127.0.0.1/8", "fd00::1/64"] {
            assert!(parse_ipv4_with_prefix(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_ipv6_with_prefix("fd00::5/64").unwrap().prefix(), 64);
        assert!(parse_ipv6_with_prefix("fd00::5").is_err());
        assert!(parse_ipv6_with_prefix("10.0.0.5/24").is_err());
    }
}
