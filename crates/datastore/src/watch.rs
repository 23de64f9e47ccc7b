//! Watching the store: the changes under a set of prefixes, from a revision on, for a
//! long-lived caller (the per-host agent) that applies each change instead of re-listing.
//!
//! The pattern, the same on every backend:
//! 1. [`Datastore::read_many_at`] lists what the caller needs, in one snapshot, with the
//!    store revision `r` of that snapshot;
//! 2. [`Datastore::watch`] from `r + 1` then delivers every later change under the prefixes,
//!    with no gap and no repeat;
//! 3. [`Watch::next`] blocks for at most its timeout and returns a batch of events, or `None`;
//! 4. [`Error::Compacted`] means the history the watch needs is gone (etcd compacted it, the
//!    embedded store trimmed its change log): go back to 1.
//!
//! Transient failures ([`Error::is_unavailable`]) leave the watch usable: call `next` again and
//! it reconnects and resumes after the last revision it delivered.
//!
//! [`Datastore::read_many_at`]: crate::Datastore::read_many_at
//! [`Datastore::watch`]: crate::Datastore::watch
//! [`Error::Compacted`]: crate::Error::Compacted
//! [`Error::is_unavailable`]: crate::Error::is_unavailable

use std::time::Duration;

use crate::Error;

/// What happened to a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or replaced; this is its new value.
    Put { value: Vec<u8> },
    /// The key was deleted.
    Delete,
}

/// One change of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub key: String,
    pub kind: EventKind,
    /// The store revision of the write (for a put, the key's new `mod_revision`).
    pub mod_revision: i64,
}

/// A stream of changes, made by [`Datastore::watch`](crate::Datastore::watch).
///
/// Events of one key come in revision order, and a batch never holds half of a revision of
/// one prefix. Across prefixes, etcd may deliver a later revision of one prefix before an
/// earlier one of another. The embedded store may coalesce several changes of a key that
/// happened between two polls into the last one (the value the key then has); etcd and the
/// in-memory store deliver each change.
pub trait Watch: Send {
    /// Wait up to `timeout` for changes. `Ok(None)`: nothing changed in that time;
    /// `Ok(Some(events))`: one or more events, never an empty batch. After
    /// [`Error::Compacted`] the watch is finished; after an unavailable error, calling `next`
    /// again resumes where it stopped.
    fn next(&mut self, timeout: Duration) -> Result<Option<Vec<Event>>, Error>;
}

/// The prefixes of a watch, without those that another one covers (each event is delivered
/// once), checked to be at least one.
pub(crate) fn normalize(prefixes: &[String], from_revision: i64) -> Result<Vec<String>, Error> {
    if prefixes.is_empty() {
        return Err(Error::Protocol("a watch needs at least one prefix".into()));
    }
    if from_revision < 1 {
        return Err(Error::Protocol(format!("a watch starts at revision 1 or later, not {from_revision}")));
    }
    let mut sorted = prefixes.to_vec();
    sorted.sort();
    let mut kept: Vec<String> = Vec::new();
    for prefix in sorted {
        if !kept.last().is_some_and(|k| prefix.starts_with(k.as_str())) {
            kept.push(prefix);
        }
    }
    Ok(kept)
}

/// True when `key` is under one of `prefixes`.
pub(crate) fn matches(prefixes: &[String], key: &str) -> bool {
    prefixes.iter().any(|p| key.starts_with(p.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_drops_covered_prefixes() {
        let given = ["/a/b/".into(), "/c/".into(), "/a/".into(), "/c/".into()];
        assert_eq!(normalize(&given, 1).unwrap(), ["/a/", "/c/"]);
        assert_eq!(normalize(&["".into(), "/x".into()], 1).unwrap(), [""]);
        assert!(normalize(&[], 1).is_err());
        assert!(normalize(&["/a/".into()], 0).is_err());
    }
}
