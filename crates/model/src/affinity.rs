//! A host's affinity for a block, stored beside the block under the host
//! (`/calico/ipam/v2/host/<node>/ipv4/block/<block cidr>`), and the host's allocation cursor
//! (`/calico/ipam/v2/host/<node>/ipv4/cursor`), whose value is the block's CIDR as a JSON
//! string, e.g. `"10.0.39.0/26"`.

use serde::{Deserialize, Serialize};

/// [`Affinity::state`] of an affinity: written with its block in one transaction, it is
/// never pending (Calico needed a pending state because it could not do that).
pub const CONFIRMED: &str = "confirmed";

/// The value of an affinity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affinity {
    pub state: String,
    /// A hint of how many addresses the block has free, written in the same transaction as
    /// the block, so that a host with many full blocks finds the one with room without
    /// reading them all. Absent in Calico's own affinities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<usize>,
}

impl Affinity {
    /// A confirmed affinity for a block with `free` addresses free.
    pub fn confirmed(free: usize) -> Affinity {
        Affinity { state: CONFIRMED.into(), free: Some(free) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_calicos() {
        let a = Affinity::confirmed(61);
        assert_eq!(crate::encode(&a), br#"{"state":"confirmed","free":61}"#);
        assert_eq!(crate::decode::<Affinity>("k", &crate::encode(&a)).unwrap(), a);
        let calico: Affinity = crate::decode("k", br#"{"state":"confirmed"}"#).unwrap();
        assert_eq!(calico.free, None);
    }
}
