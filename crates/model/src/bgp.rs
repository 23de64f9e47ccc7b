//! BGP: the peers nodes connect to, and the cluster-wide BGP settings, in Calico's v1 layout
//! (the one libcalico and confd read):
//!
//! | key | value |
//! |---|---|
//! | `/calico/bgp/v1/global/peer_v4/<ip>` (and `peer_v6`) | [`Peer`]: every node peers with it |
//! | `/calico/bgp/v1/host/<node>/peer_v4/<ip>` (and `peer_v6`) | [`Peer`]: only `<node>` does |
//! | `/calico/bgp/v1/global/as_num` | [`AsNumber`]: a bare number, e.g. `64512` |
//! | `/calico/bgp/v1/global/node_mesh` | [`NodeMesh`]: `{"enabled": true}` |
//! | `/calico/bgp/v1/global/loglevel` | [`LogLevel`]: plain text, `none`, `debug` or `info` |

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::Error;

/// An autonomous system number. Calico stores it as a bare JSON number; a number in a string
/// (`"64512"`, as some of Calico's tools write it) reads too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AsNumber(pub u32);

impl<'de> Deserialize<'de> for AsNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(u32),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Number(n) => Ok(AsNumber(n)),
            Repr::Text(s) => s
                .trim()
                .parse()
                .map(AsNumber)
                .map_err(|_| serde::de::Error::custom(format!("expected an AS number, got {s:?}"))),
        }
    }
}

impl fmt::Display for AsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A BGP peer: `{"ip": "<address>", "as_num": <number>}`. Whether every node peers with it or
/// one node only is in its key ([`crate::keys::global_peer`], [`crate::keys::node_peer`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub ip: IpAddr,
    pub as_num: AsNumber,
}

/// Whether every node peers with every other: `{"enabled": bool}`. Calico's default, when
/// the key is absent, is enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMesh {
    pub enabled: bool,
}

impl Default for NodeMesh {
    fn default() -> Self {
        NodeMesh { enabled: true }
    }
}

/// How much the BGP daemon logs. Stored as plain text, not JSON, as Calico (and confd's BIRD
/// templates) have it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogLevel {
    None,
    Debug,
    #[default]
    Info,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::None => "none",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
        }
    }

    /// The stored value: `none`, `debug` or `info`.
    pub fn encode(self) -> Vec<u8> {
        self.as_str().as_bytes().to_vec()
    }

    /// The level stored at `key`: any case, surrounding white space and JSON quotes allowed.
    pub fn decode(key: &str, value: &[u8]) -> Result<LogLevel, Error> {
        let invalid = || Error::Invalid {
            key: key.to_owned(),
            reason: format!("expected none, debug or info, got {:?}", String::from_utf8_lossy(value)),
        };
        let text = std::str::from_utf8(value).map_err(|_| invalid())?.trim();
        let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
        match text.to_ascii_lowercase().as_str() {
            "none" => Ok(LogLevel::None),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};

    #[test]
    fn peer_round_trips_and_reads_calicos() {
        let peer = Peer { ip: "192.168.1.100".parse().unwrap(), as_num: AsNumber(65000) };
        assert_eq!(encode(&peer), br#"{"ip":"192.168.1.100","as_num":65000}"#);
        assert_eq!(decode::<Peer>("k", &encode(&peer)).unwrap(), peer);
        // pycalico's BGPPeer.to_json, and confd's tests, which quote the number.
        assert_eq!(decode::<Peer>("k", br#"{"ip": "192.168.1.100", "as_num": 65000}"#).unwrap(), peer);
        assert_eq!(decode::<Peer>("k", br#"{"ip":"192.168.1.100","as_num":"65000"}"#).unwrap(), peer);
        let v6: Peer = decode("k", br#"{"ip":"fd00::1","as_num":64512}"#).unwrap();
        assert!(v6.ip.is_ipv6());
        assert!(decode::<Peer>("k", br#"{"ip":"192.168.1.100","as_num":"sixty"}"#).is_err());
        assert!(decode::<Peer>("k", br#"{"ip":"192.168.1.300","as_num":1}"#).is_err());
    }

    #[test]
    fn global_settings_are_calicos() {
        // Calico writes the AS number bare: "64511" is the whole value.
        assert_eq!(decode::<AsNumber>("k", b"64511").unwrap(), AsNumber(64511));
        assert_eq!(encode(&AsNumber(64512)), b"64512");
        assert_eq!(decode::<NodeMesh>("k", br#"{"enabled": true}"#).unwrap(), NodeMesh::default());
        assert_eq!(encode(&NodeMesh { enabled: false }), br#"{"enabled":false}"#);
        assert!(decode::<NodeMesh>("k", b"true").is_err());
    }

    #[test]
    fn log_level_is_plain_text() {
        for level in [LogLevel::None, LogLevel::Debug, LogLevel::Info] {
            assert_eq!(LogLevel::decode("k", &level.encode()).unwrap(), level);
        }
        assert_eq!(LogLevel::Info.encode(), b"info");
        assert_eq!(LogLevel::decode("k", b" Debug\n").unwrap(), LogLevel::Debug);
        assert_eq!(LogLevel::decode("k", br#""none""#).unwrap(), LogLevel::None);
        let err = LogLevel::decode("/calico/bgp/v1/global/loglevel", b"loud").unwrap_err().to_string();
        assert!(err.contains("loglevel") && err.contains("loud"), "{err}");
        assert!(LogLevel::decode("k", &[0xff]).is_err());
    }
}
