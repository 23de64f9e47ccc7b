//! The datastore schema, in one place: every record that calico-cni, calico-ipam, calicoctl
//! and calico-node read or write, with its key. The README's key layout table is the
//! reference for users; the tests here pin the code to it.
//!
//! This crate knows nothing of how records are stored (see the `datastore` crate) nor of what
//! is done with them (IPAM, the dataplane): only their shape, their keys and their encoding.

pub mod node;
