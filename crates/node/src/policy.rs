//! Security profiles on this host: the whole `inet calico-policy` table (see
//! `firewall::policy`) computed from the datastore's profiles and every endpoint record, and
//! written in one nftables transaction whenever a profile or an endpoint changes (a watch on
//! both prefixes), so a rule, tag or profile change reaches the kernel in well under a second.
//! Tag sets hold the addresses of every endpoint in the cluster with a profile carrying the
//! tag; the verdict maps hold this host's endpoints.

use std::time::{Duration, Instant};

use datastore::{Datastore, Read};
use firewall::policy::{Endpoint, State};
use firewall::Firewall;
use model::endpoint::Endpoint as Record;
use model::keys;
use model::profile::Profile;

use crate::{chain, Result};

/// The policy syncer of one node.
pub struct PolicySync<'a> {
    pub store: &'a dyn Datastore,
    pub firewall: &'a dyn Firewall,
    pub node: String,
    /// Whether the host may reach its own containers whatever their profiles.
    pub host_to_workloads: bool,
    /// What the kernel was last given.
    last: Option<State>,
    /// Where a failing sync makes the node not ready ([`PolicySync::with_health`]).
    health: Option<std::sync::Arc<crate::health::Health>>,
}

impl<'a> PolicySync<'a> {
    pub fn new(store: &'a dyn Datastore, firewall: &'a dyn Firewall, node: &str, host_to_workloads: bool) -> Self {
        PolicySync { store, firewall, node: node.to_owned(), host_to_workloads, last: None, health: None }
    }

    /// Report a failing sync on `health`'s readiness (problem `policy`) until one succeeds.
    pub fn with_health(mut self, health: std::sync::Arc<crate::health::Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// [`PolicySync::sync`], its failure logged and noted on the readiness.
    fn sync_noted(&mut self, force: bool) -> Option<i64> {
        let outcome = self.sync(force);
        let problem = outcome.as_ref().err().map(|e| format!("security profiles not programmed: {}", chain(e)));
        if let Some(p) = &problem {
            tracing::error!("{p}");
        }
        if let Some(h) = &self.health {
            h.set_problem("policy", problem);
        }
        outcome.ok()
    }

    fn prefixes() -> Vec<String> {
        vec![keys::PROFILE_PREFIX.to_owned(), keys::ENDPOINT_HOST_PREFIX.to_owned()]
    }

    /// The state the datastore asks for, and the revision it was read at (one read).
    pub fn desired(&self) -> Result<(State, i64)> {
        let reads: Vec<Read> = Self::prefixes().into_iter().map(Read::Prefix).collect();
        let (found, revision) = self.store.read_many_at(&reads)?;
        let profiles = Profile::gather(found[0].iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())))?;
        let mut records = Vec::new();
        for kv in found[1].iter().filter(|kv| keys::is_endpoint(&kv.key)) {
            match model::decode::<Record>(&kv.key, &kv.value) {
                Ok(ep) => records.push(ep),
                Err(e) => tracing::warn!(key = %kv.key, error = %chain(&e), "skipping an unreadable endpoint record"),
            }
        }
        let locals = records
            .iter()
            .filter(|r| r.node == self.node)
            .map(|r| Endpoint { veth: r.host_veth.clone(), addrs: r.addresses(), profiles: r.profiles.clone() })
            .collect();
        let all = records.iter().map(|r| (r.profiles.as_slice(), r.addresses()));
        Ok((State::build(profiles, all, locals, self.host_to_workloads), revision))
    }

    /// Reads the datastore and, when it differs from what the kernel was given, replaces the
    /// table in one transaction. The revision read at.
    pub fn sync(&mut self, force: bool) -> Result<i64> {
        let (state, revision) = self.desired()?;
        if let (false, Some(last)) = (force, &self.last) {
            if last == &state {
                return Ok(revision);
            }
            let start = Instant::now();
            // On failure (a table changed by hand), the whole table instead.
            let updated = self.firewall.update_policy(last, &state).unwrap_or_else(|e| {
                tracing::warn!("policy update failed ({}): replacing the table", chain(&crate::Error::Firewall(e)));
                false
            });
            if updated {
                tracing::info!(
                    endpoints = state.endpoints.len(),
                    took_us = start.elapsed().as_micros() as u64,
                    "policy table updated"
                );
                self.last = Some(state);
                return Ok(revision);
            }
        }
        if force || self.last.as_ref() != Some(&state) {
            let start = Instant::now();
            self.firewall.replace_policy(&state).map_err(crate::Error::Firewall)?;
            tracing::info!(
                profiles = state.profiles.len(),
                endpoints = state.endpoints.len(),
                took_us = start.elapsed().as_micros() as u64,
                "policy table replaced"
            );
            self.last = Some(state);
        }
        Ok(revision)
    }

    /// Follows the datastore until `stop` says so: a full sync, then one per batch of
    /// changes, and again every `resync` (which also repairs a table changed by hand).
    pub fn run(&mut self, resync: Duration, stop: &dyn Fn() -> bool) {
        let mut delay = Duration::from_millis(100);
        while !stop() {
            let revision = match self.sync_noted(true) {
                Some(r) => r,
                None => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            delay = Duration::from_millis(100);
            let mut watch = match self.store.watch(&Self::prefixes(), revision + 1) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!("policy watch failed: {}", chain(&e));
                    std::thread::sleep(delay);
                    continue;
                }
            };
            let deadline = Instant::now() + resync;
            while !stop() && Instant::now() < deadline {
                match watch.next(Duration::from_millis(500)) {
                    Ok(None) => {}
                    Ok(Some(_)) => {
                        self.sync_noted(false);
                    }
                    Err(e) if e.is_unavailable() => std::thread::sleep(Duration::from_millis(200)),
                    Err(e) => {
                        tracing::info!("policy watch ended ({}): full sync", chain(&e));
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore::memory::MemoryStore;
    use datastore::Op;

    /// Records each replacement; with `updates`, takes updates too (recorded apart).
    #[derive(Default)]
    struct Fake(std::cell::RefCell<Vec<State>>, std::cell::Cell<bool>, std::cell::RefCell<Vec<State>>);

    impl Firewall for Fake {
        fn ensure_table(&self) -> firewall::Result<bool> {
            Ok(false)
        }
        fn missing(&self, _: &[firewall::Element]) -> firewall::Result<Vec<firewall::Element>> {
            Ok(Vec::new())
        }
        fn add(&self, _: &[firewall::Element]) -> firewall::Result<()> {
            Ok(())
        }
        fn remove(&self, _: &[firewall::Element]) -> firewall::Result<()> {
            Ok(())
        }
        fn list(&self) -> firewall::Result<Vec<firewall::Element>> {
            Ok(Vec::new())
        }
        fn replace_policy(&self, state: &State) -> firewall::Result<()> {
            self.0.borrow_mut().push(state.clone());
            Ok(())
        }
        fn update_policy(&self, old: &State, new: &State) -> firewall::Result<bool> {
            // As the real one: endpoints and members only.
            let can = self.1.get() && old.profiles == new.profiles;
            if can {
                self.2.borrow_mut().push(new.clone());
            }
            Ok(can)
        }
    }

    fn put(store: &MemoryStore, key: String, value: serde_json::Value) {
        store.txn(&[], &[Op::Put { key, value: value.to_string().into_bytes() }]).unwrap();
    }

    fn endpoint(store: &MemoryStore, node: &str, id: &str, ip: &str, profiles: &[&str]) {
        put(
            store,
            keys::endpoint(node, "cni", id, "eth0"),
            serde_json::json!({"node": node, "orchestrator": "cni", "workload_id": id, "container_id": id,
                "ifname": "eth0", "netns": "/x", "network": "n", "host_veth": format!("cali{id}"),
                "mac": "ee:ee:ee:ee:ee:ee", "ips": [format!("{ip}/32")], "result": {}, "profiles": profiles}),
        );
    }

    #[test]
    fn members_come_from_every_host_and_the_maps_from_this_one() {
        let store = MemoryStore::new();
        for p in [Profile::new("a"), Profile::new("b")] {
            let ops: Vec<Op> = p.records().into_iter().map(|(key, value)| Op::Put { key, value }).collect();
            store.txn(&[], &ops).unwrap();
        }
        endpoint(&store, "n1", "x1", "10.0.0.1", &["a"]);
        endpoint(&store, "n2", "x2", "10.0.0.2", &["a", "b"]);
        let fw = Fake::default();
        let mut sync = PolicySync::new(&store, &fw, "n1", true);
        sync.sync(false).unwrap();
        let state = fw.0.borrow()[0].clone();
        assert_eq!(state.profiles.len(), 2);
        let a: Vec<String> = state.members["a"].iter().map(|a| a.to_string()).collect();
        assert_eq!(a, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(state.members["b"].len(), 1);
        assert_eq!(
            state.endpoints,
            [Endpoint { veth: "calix1".into(), addrs: vec!["10.0.0.1".parse().unwrap()], profiles: vec!["a".into()] }]
        );
        // Nothing changed: nothing written.
        sync.sync(false).unwrap();
        assert_eq!(fw.0.borrow().len(), 1);
        put(&store, keys::profile_tags("b"), serde_json::json!(["b", "a"]));
        sync.sync(false).unwrap();
        assert_eq!(fw.0.borrow().len(), 2);
        assert_eq!(fw.0.borrow()[1].members["a"].len(), 2);
    }

    #[test]
    fn an_endpoint_change_is_an_update_and_a_profile_change_a_replacement() {
        let store = MemoryStore::new();
        let ops: Vec<Op> = Profile::new("a").records().into_iter().map(|(key, value)| Op::Put { key, value }).collect();
        store.txn(&[], &ops).unwrap();
        endpoint(&store, "n1", "x1", "10.0.0.1", &["a"]);
        let fw = Fake::default();
        fw.1.set(true);
        let mut sync = PolicySync::new(&store, &fw, "n1", true);
        sync.sync(true).unwrap();
        assert_eq!((fw.0.borrow().len(), fw.2.borrow().len()), (1, 0), "the first sync replaces");
        endpoint(&store, "n1", "x2", "10.0.0.2", &["a"]);
        endpoint(&store, "n2", "x3", "10.0.0.3", &["a"]);
        sync.sync(false).unwrap();
        assert_eq!((fw.0.borrow().len(), fw.2.borrow().len()), (1, 1), "endpoints came: an update");
        assert_eq!(fw.2.borrow()[0].members["a"].len(), 3);
        put(&store, keys::profile_tags("a"), serde_json::json!(["a", "t"]));
        sync.sync(false).unwrap();
        assert_eq!((fw.0.borrow().len(), fw.2.borrow().len()), (2, 1), "a profile changed: a replacement");
        // A firewall that cannot update gets the replacement.
        fw.1.set(false);
        endpoint(&store, "n1", "x4", "10.0.0.4", &["a"]);
        sync.sync(false).unwrap();
        assert_eq!(fw.0.borrow().len(), 3);
    }
}
