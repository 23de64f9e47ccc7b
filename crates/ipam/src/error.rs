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
            Error::Store(e) if e.is_unavailable() => code::TRY_AGAIN_LATER,
            Error::Store(_) | Error::Corrupt { .. } => code::IO,
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
            Error::AddressNotAllocated { .. } => CODE_ADDRESS_IN_USE,
            Error::NotAvailable { .. } => code::NOT_AVAILABLE,
            Error::HandleNotFound { .. } | Error::Mismatch { .. } => CODE_CHECK_FAILED,
        }
    }
}

/// Our own codes (100+), documented in the README.
pub const CODE_EXHAUSTED: u32 = 110;
pub const CODE_ADDRESS_IN_USE: u32 = 111;
pub const CODE_CHECK_FAILED: u32 = 112;
