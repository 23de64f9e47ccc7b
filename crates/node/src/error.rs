//! The agent's one error type.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// Everything that stops the agent, or one of its steps.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The datastore failed (see [`Error::is_unavailable`] for the kind that passes).
    #[error("datastore")]
    Store(#[from] datastore::Error),

    /// A kernel request failed.
    #[error("dataplane")]
    Dataplane(#[from] dataplane::Error),

    /// The `inet calico` (or `inet calico-policy`) nftables table refused.
    #[error("nftables")]
    Firewall(#[from] firewall::Error),

    /// IPAM failed (the tunnel address).
    #[error("IPAM")]
    Ipam(#[from] ipam::Error),

    /// The node name cannot be determined.
    #[error(transparent)]
    NodeName(calico_netconf::Error),

    /// BIRD failed.
    #[error(transparent)]
    Bird(#[from] crate::bgp::BirdError),

    /// A record cannot be read, or a name cannot be part of a key.
    #[error(transparent)]
    Model(#[from] model::Error),

    /// No address of this host could be chosen as the node's.
    #[error("cannot autodetect this node's IPv4 address: {reason} (give it with --ip ADDR/PREFIX)")]
    NoAddress {
        /// What was looked at.
        reason: String,
    },

    /// `--interface` names no interface of this host.
    #[error("unknown interface {name:?}: this host has {known}")]
    UnknownInterface {
        /// The name given.
        name: String,
        /// The interfaces there are.
        known: String,
    },

    /// `--ip`/`--ip6` names an address no interface of this host holds.
    #[error("no interface of this host holds {ip} (given with --ip/--ip6): use one of {known}")]
    AddressNotLocal {
        /// The address given.
        ip: IpAddr,
        /// The addresses there are.
        known: String,
    },

    /// Another node's record claims this node's address.
    #[error(
        "node {other:?} already claims {ip} ({key}); give this node its own address with --ip, \
         or remove the other node's record if it is gone"
    )]
    DuplicateAddress {
        /// The other node.
        other: String,
        /// The address both claim.
        ip: IpAddr,
        /// The other node's key that holds it.
        key: String,
    },

    /// The routes of a pool cannot be programmed (its encapsulation needs what is missing).
    #[error("pool {pool}: {reason}")]
    Pool {
        /// The pool.
        pool: IpNetwork,
        /// What is missing.
        reason: String,
    },

    /// `--once`: some of what was wanted could not be programmed.
    #[error("could not program: {}", .what.join("; "))]
    Incomplete {
        /// One line per problem.
        what: Vec<String>,
    },

    /// The health endpoint could not listen.
    #[error("cannot serve health and metrics on {addr}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True for a failure that passes by itself (the store is unreachable or busy): retry
    /// with backoff and keep the kernel as it is.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Store(e) | Error::Ipam(ipam::Error::Store(e)) => e.is_unavailable(),
            _ => false,
        }
    }
}

/// Crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
