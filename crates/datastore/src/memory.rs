//! An in-process store with the same semantics as the real backends, for unit tests of the
//! logic above the trait. Fault injection (`fail_next_txns`, `conflict_next_txns`) lets tests
//! exercise retry and error paths without a real etcd.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::{Compare, Datastore, Error, KeyValue, Op, Read, TxnOutcome};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    fail_txns: AtomicUsize,
    conflict_txns: AtomicUsize,
    /// How many calls (get, list, txn) reached the store: the round trips a real backend pays.
    pub calls: AtomicUsize,
}

#[derive(Default)]
struct Inner {
    revision: i64,
    data: BTreeMap<String, (Vec<u8>, i64)>,
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
        let inner = self.inner.lock().unwrap();
        inner
            .data
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
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
            .map(|(k, (v, rev))| KeyValue {
                key: k.clone(),
                value: v.clone(),
                mod_revision: *rev,
            })
            .collect()
    }
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Datastore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(self.inner.lock().unwrap().get(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(self.inner.lock().unwrap().list(prefix))
    }

    /// One request, as etcd's read-only Txn is, and one snapshot.
    fn read_many(&self, reads: &[Read]) -> Result<Vec<Vec<KeyValue>>, Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.lock().unwrap();
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
            return Err(Error::Unavailable {
                reason: "injected failure".into(),
                source: None,
            });
        }
        if take_one(&self.conflict_txns) {
            return Ok(TxnOutcome::Conflict);
        }
        let mut inner = self.inner.lock().unwrap();
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
            match op {
                Op::Put { key, value } => {
                    inner.data.insert(key.clone(), (value.clone(), revision));
                }
                Op::Delete { key } => {
                    inner.data.remove(key);
                }
            }
        }
        Ok(TxnOutcome::Committed { revision })
    }

    fn round_trips(&self) -> Option<u64> {
        Some(self.calls.load(Ordering::Relaxed) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_update_delete_follow_revisions() {
        let s = MemoryStore::new();
        let r1 = s.create("/a", b"1".to_vec()).unwrap();
        assert!(matches!(
            s.create("/a", b"2".to_vec()),
            Err(Error::Conflict { .. })
        ));
        let r2 = s.update("/a", b"2".to_vec(), r1).unwrap();
        assert!(r2 > r1);
        assert!(matches!(
            s.update("/a", b"3".to_vec(), r1),
            Err(Error::Conflict { .. })
        ));
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
        let keys: Vec<_> = s
            .list("/b/")
            .unwrap()
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(keys, ["/b/1", "/b/2"]);
    }
}
