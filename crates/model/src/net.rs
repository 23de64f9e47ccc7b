//! Address arithmetic over `IpNetwork`, in u128 so one code path serves both families.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

fn bits(cidr: &IpNetwork) -> u8 {
    if cidr.is_ipv4() {
        32
    } else {
        128
    }
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// Number of addresses in `cidr` (saturating at u128::MAX for ::/0).
pub fn size(cidr: &IpNetwork) -> u128 {
    let host_bits = u32::from(bits(cidr) - cidr.prefix());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

/// The `n`th address of `cidr`.
pub fn nth(cidr: &IpNetwork, n: u128) -> IpAddr {
    from_u128(cidr.is_ipv4(), to_u128(cidr.network()) + n)
}

/// The position of `ip` in `cidr`, if it lies inside.
pub fn offset(cidr: &IpNetwork, ip: IpAddr) -> Option<u128> {
    (cidr.is_ipv4() == ip.is_ipv4() && cidr.contains(ip)).then(|| to_u128(ip) - to_u128(cidr.network()))
}

/// The block of `prefix` length that contains `ip`.
pub fn block_of(ip: IpAddr, prefix: u8) -> IpNetwork {
    // A prefix no longer than the family's width always makes a valid network.
    let net = IpNetwork::new(ip, prefix).unwrap_or_else(|_| IpNetwork::from(ip));
    IpNetwork::new(net.network(), prefix).unwrap_or(net)
}

/// The `i`th block of `prefix` length inside `pool`, or None past the end.
pub fn nth_block(pool: &IpNetwork, prefix: u8, i: u128) -> Option<IpNetwork> {
    let per_block = 1u128.checked_shl(u32::from(bits(pool) - prefix))?;
    let count = size(pool) / per_block;
    (i < count.max(1) && prefix >= pool.prefix())
        .then(|| IpNetwork::new(nth(pool, i * per_block), prefix).ok())
        .flatten()
}

/// Whether two networks share any address.
pub fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

/// The canonical network form: the address has no host bits set.
pub fn is_canonical(cidr: &IpNetwork) -> bool {
    cidr.ip() == cidr.network()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let p: IpNetwork = "10.0.0.0/24".parse().unwrap();
        assert_eq!(size(&p), 256);
        assert_eq!(nth_block(&p, 26, 3), Some("10.0.0.192/26".parse().unwrap()));
        assert_eq!(nth_block(&p, 26, 4), None);
        assert_eq!(block_of("10.0.0.77".parse().unwrap(), 26), "10.0.0.64/26".parse().unwrap());
        assert_eq!(offset(&p, "10.0.0.9".parse().unwrap()), Some(9));
        assert_eq!(offset(&p, "10.0.1.9".parse().unwrap()), None);
        let v6: IpNetwork = "fd00::/120".parse().unwrap();
        assert_eq!(nth(&v6, 255), "fd00::ff".parse::<IpAddr>().unwrap());
        assert!(overlaps(&p, &"10.0.0.128/25".parse().unwrap()));
        assert!(!overlaps(&p, &"10.0.1.0/24".parse().unwrap()));
        assert!(!is_canonical(&"10.0.0.1/24".parse().unwrap()));
    }
}
