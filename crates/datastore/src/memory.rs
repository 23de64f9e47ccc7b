//! An in-process store with the same semantics as the real backends, for unit tests of the
//! logic above the trait. Fault injection (`fail_next_txns`, `conflict_next_txns`) lets tests
//! exercise retry and error paths without a real etcd.
//!
//! It watches like etcd: it keeps every change (until [`MemoryStore::compact`]) and a watch
//! delivers each one, woken at once by the write, so tests of a watching caller need no
//! sleeps.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::watch::{self, Event, EventKind, Watch};
use crate::{Compare, Datastore, Error, KeyValue, Op, Read, TxnOutcome};

#[derive(Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
    fail_txns: AtomicUsize,
    conflict_txns: AtomicUsize,
    /// How many calls (get, list, txn) reached the store: the round trips a real backend pays.
    pub calls: AtomicUsize,
}

/// The data, and the condition variable that wakes watchers after each commit.
#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
}

#[derive(Default)]
struct Inner {
    revision: i64,
    data: BTreeMap<String, (Vec<u8>, i64)>,
    /// Every change since `compact_revision`, in revision order.
    history: Vec<Event>,
    /// The oldest revision a watch can start from (0: nothing compacted yet).
    compact_revision: i64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `n` transactions fail as if the store were unreachable.
    pub fn fail_next_txns(&self, n: usize) {
        self.fail_txns.store(n, Ordering::SeqCst);
    }

    /// The next `n` transactions report a conflict, as if another host wrote first.
    pub fn conflict_next_txns(&self, n: usize) {
        self.conflict_txns.store(n, Ordering::SeqCst);
    }

    /// A copy of every key and value, for assertions.
    pub fn dump(&self) -> BTreeMap<String, Vec<u8>> {
        let inner = self.shared.lock();
        inner.data.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect()
    }

    /// Forget the changes before `revision` (at most the current revision), as etcd's compact
    /// does: a watch that still needs them fails with [`Error::Compacted`].
    pub fn compact(&self, revision: i64) {
        let mut inner = self.shared.lock();
        let revision = revision.min(inner.revision);
        if revision > inner.compact_revision {
            inner.history.retain(|e| e.mod_revision >= revision);
            inner.compact_revision = revision;
        }
        self.shared.changed.notify_all();
    }
}

impl Inner {
    fn get(&self, key: &str) -> Option<KeyValue> {
        self.data.get(key).map(|(value, rev)| KeyValue {
            key: key.to_owned(),
            value: value.clone(),
            mod_revision: *rev,
        })
    }

    fn list(&self, prefix: &str) -> Vec<KeyValue> {
        self.data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, rev))| KeyValue { key: k.clone(), value: v.clone(), mod_revision: *rev })
            .collect()
    }
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

impl Datastore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(self.shared.lock().get(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(self.shared.lock().list(prefix))
    }

    /// One request, as etcd's read-only Txn is, and one snapshot.
    fn read_many(&self, reads: &[Read]) -> Result<Vec<Vec<KeyValue>>, Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let inner = self.shared.lock();
        Ok(reads
            .iter()
            .map(|r| match r {
                Read::Key(k) => inner.get(k).into_iter().collect(),
                Read::Prefix(p) => inner.list(p),
            })
            .collect())
    }

    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<TxnOutcome, Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if take_one(&self.fail_txns) {
            return Err(Error::Unavailable { reason: "injected failure".into(), source: None });
        }
        if take_one(&self.conflict_txns) {
            return Ok(TxnOutcome::Conflict);
        }
        let mut inner = self.shared.lock();
        let inner = &mut *inner;
        let holds = compares.iter().all(|c| match c {
            Compare::Absent(k) => !inner.data.contains_key(k),
            Compare::Revision(k, r) => inner.data.get(k).is_some_and(|(_, rev)| rev == r),
        });
        if !holds {
            return Ok(TxnOutcome::Conflict);
        }
        inner.revision += 1;
        let revision = inner.revision;
        for op in ops {
            let kind = match op {
                Op::Put { key, value } => {
                    inner.data.insert(key.clone(), (value.clone(), revision));
                    EventKind::Put { value: value.clone() }
                }
                Op::Delete { key } => {
                    if inner.data.remove(key).is_none() {
                        continue; // as in etcd: deleting nothing is no event
                    }
                    EventKind::Delete
                }
            };
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key } => key.clone(),
            };
            inner.history.push(Event { key, kind, mod_revision: revision });
        }
        self.shared.changed.notify_all();
        Ok(TxnOutcome::Committed { revision })
    }

    fn read_many_at(&self, reads: &[Read]) -> Result<(Vec<Vec<KeyValue>>, i64), Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let inner = self.shared.lock();
        let found = reads
            .iter()
            .map(|r| match r {
                Read::Key(k) => inner.get(k).into_iter().collect(),
                Read::Prefix(p) => inner.list(p),
            })
            .collect();
        Ok((found, inner.revision))
    }

    fn watch(&self, prefixes: &[String], from_revision: i64) -> Result<Box<dyn Watch>, Error> {
        let prefixes = watch::normalize(prefixes, from_revision)?;
        let watch = MemoryWatch { shared: Arc::clone(&self.shared), prefixes, next: from_revision };
        watch.check_compacted(&self.shared.lock())?;
        Ok(Box::new(watch))
    }

    fn round_trips(&self) -> Option<u64> {
        Some(self.calls.load(Ordering::Relaxed) as u64)
    }
}

/// A watch on a [`MemoryStore`]: a cursor into its history.
struct MemoryWatch {
    shared: Arc<Shared>,
    prefixes: Vec<String>,
    /// The first revision not delivered yet.
    next: i64,
}

impl MemoryWatch {
    fn check_compacted(&self, inner: &Inner) -> Result<(), Error> {
        if self.next < inner.compact_revision {
            return Err(Error::Compacted { requested: self.next, compact_revision: inner.compact_revision });
        }
        Ok(())
    }
}

impl Watch for MemoryWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<Vec<Event>>, Error> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.shared.lock();
        loop {
            self.check_compacted(&inner)?;
            if inner.revision >= self.next {
                let start = inner.history.partition_point(|e| e.mod_revision < self.next);
                let events: Vec<Event> =
                    inner.history[start..].iter().filter(|e| watch::matches(&self.prefixes, &e.key)).cloned().collect();
                self.next = inner.revision + 1;
                if !events.is_empty() {
                    return Ok(Some(events));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            inner = self.shared.changed.wait_timeout(inner, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_update_delete_follow_revisions() {
        let s = MemoryStore::new();
        let r1 = s.create("/a", b"1".to_vec()).unwrap();
        assert!(matches!(s.create("/a", b"2".to_vec()), Err(Error::Conflict { .. })));
        let r2 = s.update("/a", b"2".to_vec(), r1).unwrap();
        assert!(r2 > r1);
        assert!(matches!(s.update("/a", b"3".to_vec(), r1), Err(Error::Conflict { .. })));
        s.delete("/a", r2).unwrap();
        assert_eq!(s.get("/a").unwrap(), None);
    }

    #[test]
    fn round_trips_count_every_call() {
        let s = MemoryStore::new();
        assert_eq!(s.round_trips(), Some(0));
        s.create("/a", vec![]).unwrap();
        s.get("/a").unwrap();
        s.list("/").unwrap();
        assert_eq!(s.round_trips(), Some(3));
    }

    #[test]
    fn list_is_prefix_bounded_and_ordered() {
        let s = MemoryStore::new();
        for k in ["/b/2", "/a", "/b/1", "/c"] {
            s.create(k, vec![]).unwrap();
        }
        let keys: Vec<_> = s.list("/b/").unwrap().into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys, ["/b/1", "/b/2"]);
    }

    fn put(key: &str, value: &str) -> Op {
        Op::Put { key: key.into(), value: value.into() }
    }

    fn summary(events: &[Event]) -> Vec<(String, Option<String>, i64)> {
        events
            .iter()
            .map(|e| {
                let value = match &e.kind {
                    EventKind::Put { value } => Some(String::from_utf8_lossy(value).into_owned()),
                    EventKind::Delete => None,
                };
                (e.key.clone(), value, e.mod_revision)
            })
            .collect()
    }

    #[test]
    fn watch_after_a_listing_sees_each_later_change_once() {
        let s = MemoryStore::new();
        s.txn(&[], &[put("/a/1", "old"), put("/b/1", "b")]).unwrap();
        let (listed, revision) = s.list_at("/a/").unwrap();
        assert_eq!((listed.len(), revision), (1, 1));
        let mut w = s.watch(&["/a/".into(), "/a/x/".into()], revision + 1).unwrap();
        assert_eq!(w.next(Duration::ZERO).unwrap(), None);
        s.txn(&[], &[put("/a/1", "new"), put("/b/2", "b"), put("/a/x/2", "x")]).unwrap();
        s.txn(&[], &[Op::Delete { key: "/a/1".into() }, Op::Delete { key: "/a/none".into() }]).unwrap();
        let events = w.next(Duration::ZERO).unwrap().unwrap();
        assert_eq!(
            summary(&events),
            [("/a/1".into(), Some("new".into()), 2), ("/a/x/2".into(), Some("x".into()), 2), ("/a/1".into(), None, 3),]
        );
        assert_eq!(w.next(Duration::from_millis(10)).unwrap(), None);
    }

    #[test]
    fn watch_wakes_up_on_a_write_from_another_thread() {
        let s = Arc::new(MemoryStore::new());
        let mut w = s.watch(&["/k".into()], 1).unwrap();
        let writer = Arc::clone(&s);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.create("/k", b"v".to_vec()).unwrap();
        });
        let start = Instant::now();
        let events = w.next(Duration::from_secs(10)).unwrap().unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(summary(&events), [("/k".into(), Some("v".into()), 1)]);
        t.join().unwrap();
    }

    #[test]
    fn compaction_fails_the_watch_and_a_relist_carries_on() {
        let s = MemoryStore::new();
        for i in 0..5 {
            s.create(&format!("/k/{i}"), vec![]).unwrap();
        }
        let mut w = s.watch(&["/k/".into()], 3).unwrap();
        s.compact(4);
        let err = w.next(Duration::ZERO).unwrap_err();
        assert!(matches!(err, Error::Compacted { requested: 3, compact_revision: 4 }), "{err:?}");
        assert!(matches!(s.watch(&["/k/".into()], 2), Err(Error::Compacted { .. })));
        let (listed, revision) = s.list_at("/k/").unwrap();
        assert_eq!(listed.len(), 5);
        let mut w = s.watch(&["/k/".into()], revision + 1).unwrap();
        s.create("/k/5", vec![]).unwrap();
        assert_eq!(summary(&w.next(Duration::ZERO).unwrap().unwrap()), [("/k/5".into(), Some(String::new()), 6)]);
    }
}
