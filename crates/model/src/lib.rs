//! The datastore schema, in one place: every record that calico-cni, calico-ipam, calicoctl
//! and calico-node read or write, with its key. The README's key layout table is the
//! reference for users; the tests here pin the code to it.
//!
//! This crate knows nothing of how records are stored (see the `datastore` crate) nor of what
//! is done with them (IPAM, the dataplane): only their shape, their keys and their encoding.
//! It depends on serde and ipnetwork alone, so whatever reads or writes a store (the plugins,
//! calicoctl, the agent, the tests) reads and writes through it without pulling in a backend.
//!
//! - [`keys`]: every key and key prefix, and parsing them back;
//! - [`pool`], [`block`], [`affinity`], [`handle`]: IPAM's records;
//! - [`endpoint`]: the workload endpoint calico-cni writes per attachment;
//! - [`node`]: the node record calico-node writes (Calico's v1 layout, plain text);
//! - [`bgp`]: BGP peers (global and per node) and the global BGP settings;
//! - [`profile`]: security profiles: their rules, tags and labels;
//! - [`rule_syntax`]: the rule grammar of `calicoctl profile <P> rule ...`;
//! - [`net`]: the address arithmetic the records use.
//!
//! Values are JSON (serde's derives here are the encoding) except where Calico stores plain
//! text (the BGP log level), which its type encodes itself.

pub mod affinity;
pub mod bgp;
pub mod block;
pub mod endpoint;
pub mod handle;
pub mod keys;
pub mod net;
pub mod node;
pub mod pool;
pub mod profile;
pub mod rule_syntax;

use serde::{de::DeserializeOwned, Serialize};

/// A stored value that is not what its key says it holds.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("corrupt datastore value at {key}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("invalid datastore value at {key}: {reason}")]
    Invalid { key: String, reason: String },

    /// A profile rule that is malformed or cannot be enforced ([`rule_syntax`]).
    #[error("invalid rule: {0}")]
    Rule(String),

    /// A name that cannot be part of a key (a node's).
    #[error("invalid node name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
}

/// A record's JSON value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // The records here are plain structs of strings, numbers, lists and string-keyed maps:
    // serializing them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The record stored at `key`.
pub fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(value).map_err(|source| Error::Corrupt { key: key.to_owned(), source })
}
