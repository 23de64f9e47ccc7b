//! Calico's naming and addressing conventions for workload interfaces.

use std::{fmt::Write, net::Ipv6Addr};

/// Prefix of every host-side workload interface.
pub const HOST_VETH_PREFIX: &str = "cali";

/// The fixed MAC of every host-side veth: containers always see the same
/// gateway MAC, and the host end's IPv6 link-local address is predictable.
pub const HOST_VETH_MAC: [u8; 6] = [0xee; 6];

/// The IPv4 gateway containers route through; answered by proxy ARP.
pub const IPV4_GATEWAY: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 1, 1);

/// The host veth name for a workload: `cali` followed by the first 11 hex
/// digits of SHA-1(`workload_id`), 15 bytes in all (the kernel's limit), as
/// Calico computes it.
pub fn host_veth_name(workload_id: &str) -> String {
    let digest = sha1(workload_id.as_bytes());
    let mut name = String::with_capacity(15);
    name.push_str(HOST_VETH_PREFIX);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(name, "{byte:02x}");
    }
    name.truncate(15);
    name
}

/// The MAC of a node's VXLAN device, the same on every start and every host: `0x66` (`f`)
/// followed by the first 5 bytes of SHA-1(`nodename`), as Felix derives it.
pub fn vxlan_mac(nodename: &str) -> [u8; 6] {
    let digest = sha1(nodename.as_bytes());
    [0x66, digest[0], digest[1], digest[2], digest[3], digest[4]]
}

/// The EUI-64 link-local address the kernel gives an interface with `mac`
/// (`ee:ee:ee:ee:ee:ee` gives `fe80::ecee:eeff:feee:eeee`).
pub fn link_local_from_mac(mac: [u8; 6]) -> Ipv6Addr {
    let [a, b, c, d, e, f] = mac;
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, a ^ 0x02, b, c, 0xff, 0xfe, d, e, f])
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|byte| format!("{byte:02x}")).join(":")
}

/// SHA-1 (FIPS 180-4). Used only to derive interface names, never for
/// security; small enough not to warrant a dependency.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_be_bytes());

    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (state, value) in h.iter_mut().zip([a, b, c, d, e]) {
            *state = state.wrapping_add(value);
        }
    }

    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn vxlan_macs_are_0x66_and_sha1() {
        // SHA-1("abc") = a9993e36 47...: the MAC is 66 then its first five bytes.
        assert_eq!(vxlan_mac("abc"), [0x66, 0xa9, 0x99, 0x3e, 0x36, 0x47]);
        assert_ne!(vxlan_mac("node-1"), vxlan_mac("node-2"));
    }

    #[test]
    fn sha1_known_vectors() {
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hex(&sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            hex(&sha1(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(hex(&sha1(&[b'a'; 1_000_000])), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    }

    #[test]
    fn host_veth_name_is_calico_compatible() {
        // Calico: "cali" + hex(sha1("default.nginx"))[:11] (value from Python's hashlib).
        let name = host_veth_name("default.nginx");
        assert_eq!(name, "calic440f455693");
        assert_eq!(name.len(), 15);
        assert_ne!(host_veth_name("a"), host_veth_name("b"));
    }

    #[test]
    fn eui64_link_local() {
        assert_eq!(link_local_from_mac(HOST_VETH_MAC), "fe80::ecee:eeff:feee:eeee".parse::<Ipv6Addr>().unwrap());
        assert_eq!(format_mac(HOST_VETH_MAC), "ee:ee:ee:ee:ee:ee");
    }
}
