//! Calico IPAM: IP pools carved into blocks that are affine to hosts, and handles that name
//! each allocation, all over the [`datastore::Datastore`] trait so the same logic runs on
//! etcd and on the embedded store. The records themselves and their keys live in the
//! `model` crate; this crate is what is done with them.
//!
//! - [`pool`]: adding, listing and removing pools;
//! - [`allocator`]: claim, allocate, borrow and release with compare-and-swap, each step
//!   retried by the one loop in `retry` while other writers win;
//! - [`report`]: usage and consistency checks for operators;
//! - [`plugin`]: the CNI verbs of the `calico-ipam` executable.

pub mod allocator;
mod error;
pub mod hint;
pub mod lock;
pub mod plugin;
pub mod pool;
pub mod report;
mod retry;
mod store;

pub use allocator::{Assigned, Ipam, More, Owner, Request};
pub use error::{Error, CODE_ADDRESS_IN_USE, CODE_CHECK_FAILED, CODE_EXHAUSTED, CODE_NOT_ALLOCATED};
