use std::net::IpAddr;
use std::path::PathBuf;

use cni::{code, CniCode};
use ipnetwork::IpNetwork;

/// Errors of IPAM. [`CniCode`] below is the one place where they map to CNI error codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cni(#[from] cni::Error),

    #[error(transparent)]
    Store(#[from] datastore::Error),

    /// The netconf, or the node name it leads to.
    #[error(transparent)]
    Netconf(#[from] calico_netconf::Error),

    /// A stored value could not be decoded: the datastore holds something we did not write.
    #[error("corrupt datastore value at {key}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid IP pool {cidr}: {reason}")]
    InvalidPool { cidr: String, reason: String },

    #[error("IP pool {cidr} overlaps existing pool {existing}")]
    PoolOverlap { cidr: IpNetwork, existing: IpNetwork },

    #[error("IP pool {cidr} already exists")]
    PoolExists { cidr: IpNetwork },

    #[error("IP pool {cidr} does not exist")]
    PoolNotFound { cidr: IpNetwork },

    #[error("IP pool {cidr} still has {in_use} allocated address(es); release them or force the removal")]
    PoolInUse { cidr: IpNetwork, in_use: usize },

    #[error("IP pool {cidr} is disabled")]
    PoolDisabled { cidr: IpNetwork },

    #[error("no enabled IPv{family} pool to allocate from")]
    NoPools { family: u8 },

    #[error("no free IPv{family} address in pool(s) {}", join(pools))]
    Exhausted { family: u8, pools: Vec<IpNetwork> },

    #[error("IP {ip} is already in use")]
    AddressInUse { ip: IpAddr },

    #[error("IP {ip} is not in any configured IP pool")]
    AddressNotInPool { ip: IpAddr },

    #[error("IP {ip} is not allocated")]
    AddressNotAllocated { ip: IpAddr },

    #[error("gave up after {attempts} attempts: concurrent writers kept changing {key}")]
    TooMuchContention { key: String, attempts: u32 },

    #[error("timed out after {waited_ms} ms waiting for the IPAM host lock {path}")]
    LockTimeout { path: PathBuf, waited_ms: u128 },

    #[error("IPAM host lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// STATUS: the plugin cannot serve ADD now (store unreachable, no free address).
    #[error("calico-ipam is not available")]
    NotAvailable {
        #[source]
        source: Box<Error>,
    },

    #[error("no allocation for handle {handle}")]
    HandleNotFound { handle: String },

    #[error("allocation for handle {handle} does not match: expected {expected}, found {found}")]
    Mismatch { handle: String, expected: String, found: String },
}

fn join(pools: &[IpNetwork]) -> String {
    pools.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl CniCode for Error {
    fn cni_code(&self) -> u32 {
        match self {
            Error::Cni(e) => e.cni_code(),
            Error::Netconf(e) => e.cni_code(),
            Error::Store(e) => e.cni_code(),
            Error::Corrupt { .. } => code::IO,
            Error::LockTimeout { .. } | Error::TooMuchContention { .. } => code::TRY_AGAIN_LATER,
            Error::Lock { .. } => code::IO,
            Error::InvalidPool { .. }
            | Error::PoolNotFound { .. }
            | Error::PoolDisabled { .. }
            | Error::NoPools { .. }
            | Error::AddressNotInPool { .. } => code::INVALID_CONFIG,
            Error::PoolOverlap { .. } | Error::PoolExists { .. } | Error::PoolInUse { .. } => code::INVALID_CONFIG,
            Error::Exhausted { .. } => CODE_EXHAUSTED,
            Error::AddressInUse { .. } => CODE_ADDRESS_IN_USE,
            Error::AddressNotAllocated { .. } => CODE_NOT_ALLOCATED,
            Error::NotAvailable { .. } => code::NOT_AVAILABLE,
            Error::HandleNotFound { .. } | Error::Mismatch { .. } => CODE_CHECK_FAILED,
        }
    }
}

/// Our own codes (100+), documented in the README.
pub const CODE_EXHAUSTED: u32 = 110;
pub const CODE_ADDRESS_IN_USE: u32 = 111;
pub const CODE_CHECK_FAILED: u32 = 112;
/// An address to release is not allocated (it is not "in use": [`CODE_ADDRESS_IN_USE`]).
pub const CODE_NOT_ALLOCATED: u32 = 113;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_and_allocation_codes_differ() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(Error::AddressInUse { ip }.cni_code(), CODE_ADDRESS_IN_USE);
        assert_eq!(Error::AddressNotAllocated { ip }.cni_code(), CODE_NOT_ALLOCATED);
        assert_eq!(Error::AddressNotInPool { ip }.cni_code(), code::INVALID_CONFIG);
    }

    #[test]
    fn store_errors_keep_the_store_code() {
        let down = datastore::Error::Unavailable { reason: "etcd down".into(), source: None };
        assert_eq!(Error::from(down).cni_code(), code::TRY_AGAIN_LATER);
        let bad = datastore::Error::EtcdConfig { reason: "no endpoints".into() };
        assert_eq!(Error::from(bad).cni_code(), code::INVALID_CONFIG);
        let missing = datastore::Error::Missing { path: "/s.db".into() };
        assert_eq!(Error::from(missing).cni_code(), code::IO);
    }

    #[test]
    fn node_name_keeps_its_cause() {
        let err = Error::from(calico_netconf::Error::NodeNameFile {
            path: "/n".into(),
            source: std::io::Error::other("denied"),
        });
        assert_eq!(err.to_string(), "could not determine the node name: reading /n");
        let failure = cni::Failure::from_error(err.cni_code(), &err);
        assert_eq!((failure.code, failure.details.as_str()), (code::INVALID_CONFIG, "denied"));
    }
}
