//! The agent's loop: register this node, list the datastore and sync the kernel in full,
//! then follow the watch and apply each change to the routes it touches; a full sync again
//! every resync interval and after a compaction. While the datastore is unreachable the
//! kernel keeps its routes, readiness says why, and retries back off to at most a second.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::TaggedRoute;
use datastore::{Datastore, Event, EventKind, Read};
use ipnetwork::IpNetwork;
use model::node::Node;

use crate::bgp::Bgp;
use crate::cluster::{self, Cluster, Dirty};
use crate::health::Health;
use crate::ipip::Ipip;
use crate::kernel::Kernel;
use crate::local::{self, AddressChoice, Local};
use crate::nat::Nat;
use crate::routes::{self, Capabilities, RouteTable, SyncReport, Want};
use crate::vxlan::Vxlan;
use crate::{chain, register, Error, Result};

/// The longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The longest a watch waits before the loop looks at the clock again.
const WATCH_TICK: Duration = Duration::from_secs(1);

/// How the agent was started.
#[derive(Clone, Debug)]
pub struct Config {
    /// The node name.
    pub name: String,
    /// `--ip`, `--ip6`, `--interface`.
    pub addresses: AddressChoice,
    /// `--as`.
    pub as_number: Option<u32>,
    /// `--resync-interval`.
    pub resync_interval: Duration,
    /// `--vxlan-mtu`: the VXLAN device's MTU instead of the uplink's − 50.
    pub vxlan_mtu: Option<u32>,
    /// tunl0's MTU (default: the uplink's − 20).
    pub ipip_mtu: Option<u32>,
    /// `--mtu-file`: where to write the MTU for workloads; not written when `None`.
    pub mtu_file: Option<std::path::PathBuf>,
    /// `--bgp=bird` and BIRD's paths; `None` for `--bgp=none` (and `--once`).
    pub bgp: Option<crate::bgp::Options>,
}

/// Retry delays: 100 ms, doubling, at most [`MAX_BACKOFF`].
#[derive(Debug, Default)]
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        self.0 = self.0.saturating_add(1);
        (Duration::from_millis(100) * 2u32.saturating_pow(self.0 - 1)).min(MAX_BACKOFF)
    }

    fn reset(&mut self) {
        self.0 = 0;
    }
}

/// The agent.
pub struct Agent<'a> {
    store: &'a dyn Datastore,
    kernel: &'a dyn Kernel,
    health: Arc<Health>,
    config: Config,
    local: Local,
    caps: Capabilities,
    cluster: Cluster,
    table: RouteTable,
    /// Destinations whose pool cannot be programmed: dst → (pool, why).
    problems: BTreeMap<IpNetwork, (IpNetwork, String)>,
    /// Destinations left to BGP: dst → node.
    left_to_bgp: BTreeMap<IpNetwork, String>,
    /// Failures of the last sync or update.
    failures: Vec<String>,
    /// The VXLAN device and endpoints.
    vxlan: Vxlan,
    /// tunl0 and this node's IPIP tunnel address.
    ipip: Ipip,
    /// Why the tunnels could not be set up, and what VTEP entries failed.
    tunnel_failures: Vec<String>,
    /// The tunnels were set up from the datastore at least once (until then, a record
    /// written keeps the tunnel addresses stored, so a restart withdraws none).
    tunnels_checked: bool,
    synced: bool,
    /// The `inet calico` table's pool sets (outgoing NAT), when given a firewall.
    firewall: Option<&'a dyn firewall::Firewall>,
    nat: Nat,
    /// Why the pool sets could not be programmed last time.
    nat_failure: Option<String>,
    /// BGP through BIRD, unless `--bgp=none`.
    bgp: Option<Bgp>,
}

impl<'a> Agent<'a> {
    /// Work out this host's addresses and uplink (no datastore access yet).
    pub fn new(store: &'a dyn Datastore, kernel: &'a dyn Kernel, health: Arc<Health>, config: Config) -> Result<Self> {
        model::node::validate_name(&config.name)?;
        let local = local::detect(kernel, &config.name, &config.addresses)?;
        let tunl0 = kernel.links()?.iter().any(|l| l.name == crate::ipip::DEVICE);
        let caps = Capabilities { tunl0, ipip: None, vxlan: None };
        tracing::info!(
            node = %config.name,
            ipv4 = ?local.ipv4.map(|n| n.to_string()),
            ipv6 = ?local.ipv6.map(|n| n.to_string()),
            uplink = %local.uplink.name,
            "calico-node starting"
        );
        let (vxlan, ipip) = (Vxlan::new(config.vxlan_mtu), Ipip::new(config.ipip_mtu));
        let bgp = config.bgp.clone().map(Bgp::new);
        Ok(Agent {
            store,
            kernel,
            health,
            config,
            local,
            caps,
            cluster: Cluster::default(),
            table: RouteTable::default(),
            problems: BTreeMap::new(),
            left_to_bgp: BTreeMap::new(),
            failures: Vec::new(),
            vxlan,
            ipip,
            tunnel_failures: Vec::new(),
            tunnels_checked: false,
            synced: false,
            firewall: None,
            nat: Nat::default(),
            nat_failure: None,
            bgp,
        })
    }

    /// Keep the pool sets of `firewall`'s table (outgoing NAT) in step with the pools too.
    pub fn with_firewall(mut self, firewall: &'a dyn firewall::Firewall) -> Self {
        self.firewall = Some(firewall);
        self
    }

    /// Bring the pool sets to the view's pools (`full`: check the table and the kernel's
    /// elements too). A failure is noted and logged, never fatal: the next full sync retries.
    pub fn sync_nat(&mut self, full: bool) {
        self.sync_nat_once(full);
        self.health.set_problem("nat", self.nat_failure.clone());
    }

    fn sync_nat_once(&mut self, full: bool) {
        let Some(fw) = self.firewall else { return };
        match self.nat.sync(fw, &self.cluster, full) {
            Ok(report) => {
                if report.table_created {
                    tracing::warn!("table inet calico was missing or of another version: made it again");
                    if let Err(e) = self.restore_mappings(fw) {
                        let line = format!("restoring the port mappings: {}", chain(&e));
                        tracing::error!("{line}");
                        self.nat_failure = Some(line);
                        return;
                    }
                }
                if report != Default::default() {
                    tracing::debug!(added = report.added, removed = report.removed, full, "pool sets synced");
                }
                if self.nat_failure.take().is_some() {
                    tracing::info!("pool sets programmed again");
                }
            }
            Err(e) => {
                let line = format!("outgoing NAT pool sets: {}", chain(&e));
                tracing::error!("{line}");
                self.nat_failure = Some(line);
            }
        }
    }

    /// This host's endpoints' port mappings, back into a table created again.
    fn restore_mappings(&self, fw: &dyn firewall::Firewall) -> Result<()> {
        let prefix = model::keys::endpoint_node_prefix(&self.config.name);
        let mut endpoints = Vec::new();
        for kv in self.store.list(&prefix)?.iter().filter(|kv| model::keys::is_endpoint(&kv.key)) {
            match model::decode::<model::endpoint::Endpoint>(&kv.key, &kv.value) {
                Ok(ep) => endpoints.push(ep),
                Err(e) => tracing::warn!(key = %kv.key, error = %e, "skipping an unreadable endpoint record"),
            }
        }
        let n = crate::nat::restore_mappings(fw, &endpoints)?;
        tracing::info!(elements = n, endpoints = endpoints.len(), "port mappings restored");
        Ok(())
    }

    /// This host as detected.
    pub fn local(&self) -> &Local {
        &self.local
    }

    /// The route table (what is programmed).
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// This node's record.
    pub fn record(&self) -> Node {
        Node {
            ipv4: self.local.ipv4,
            ipv6: self.local.ipv6,
            as_number: self.config.as_number,
            vxlan_tunnel_addr: self.vxlan.tunnel,
            vxlan_tunnel_mac: self.vxlan.tunnel.map(|_| model::node::Mac(dataplane::vxlan_mac(&self.config.name))),
            ipip_tunnel_addr: self.ipip.tunnel,
            ..Node::new(self.config.name.clone())
        }
    }

    /// Write this node's record (refused when another node claims its address).
    pub fn register(&self) -> Result<()> {
        let mut record = self.record();
        if !self.tunnels_checked {
            if let Some(stored) = register::read(self.store, &self.config.name)? {
                record.vxlan_tunnel_addr = stored.vxlan_tunnel_addr;
                record.vxlan_tunnel_mac = stored.vxlan_tunnel_mac;
                record.ipip_tunnel_addr = stored.ipip_tunnel_addr;
            }
        }
        register::register(self.store, &record)
    }

    /// Set up (or remove) the tunnels the pools need, write this node's record again when
    /// its tunnel address changed, and bring the remote endpoints to the node records.
    /// Returns true when the VXLAN device changed (every route through it is to be
    /// computed again). Only an unreachable store is an error; other failures are noted.
    fn ensure_tunnels(&mut self, full: bool) -> Result<bool> {
        let before = (self.caps.vxlan, self.caps.ipip);
        self.tunnel_failures.clear();
        let mut changed = false;
        match self.vxlan.ensure(self.store, self.kernel, &self.cluster, &self.local) {
            Ok(c) => changed |= c,
            Err(e) if e.is_unavailable() => return Err(e),
            Err(e) => {
                let line = format!("VXLAN: {}", chain(&e));
                tracing::error!("{line}");
                self.tunnel_failures.push(line);
                self.vxlan.index = None;
            }
        }
        match self.ipip.ensure(self.store, self.kernel, &self.cluster, &self.local) {
            Ok(c) => changed |= c,
            Err(e) if e.is_unavailable() => return Err(e),
            Err(e) => {
                let line = format!("IPIP: {}", chain(&e));
                tracing::error!("{line}");
                self.tunnel_failures.push(line);
                self.ipip.index = None;
            }
        }
        // The first time, the record written at start kept the stored tunnel addresses:
        // write what is true now.
        let first = !self.tunnels_checked;
        self.tunnels_checked = true;
        if changed || first {
            self.register()?;
        }
        self.caps.vxlan = self.vxlan.index;
        self.caps.ipip = self.ipip.index;
        self.caps.tunl0 = self.ipip.present;
        let failures = self.vxlan.sync_vteps(self.kernel, &self.cluster, &self.config.name, full);
        self.tunnel_failures.extend(failures);
        self.write_mtu();
        Ok(before != (self.caps.vxlan, self.caps.ipip))
    }

    /// The MTU for workloads: the smallest of the tunnels set up (VXLAN's, tunl0's), else
    /// the uplink's.
    pub fn workload_mtu(&self) -> u32 {
        let vxlan = self.vxlan.index.map(|_| self.vxlan.mtu(&self.local));
        let ipip = self.ipip.index.map(|_| self.ipip.mtu(&self.local));
        vxlan.into_iter().chain(ipip).min().unwrap_or(self.local.uplink.mtu)
    }

    fn write_mtu(&mut self) {
        let Some(path) = self.config.mtu_file.clone() else { return };
        let mtu = self.workload_mtu();
        match crate::mtu::write_if_changed(&path, mtu) {
            Ok(true) => tracing::info!(mtu, file = %path.display(), "wrote the MTU for workloads"),
            Ok(false) => {}
            Err(e) => {
                let line = format!("cannot write the MTU file {}: {e}", path.display());
                tracing::error!("{line}");
                self.tunnel_failures.push(line);
            }
        }
    }

    /// List the datastore, rebuild the view and sync every route with the kernel. Returns
    /// the revision of the listing.
    pub fn full_sync(&mut self) -> Result<i64> {
        let started = Instant::now();
        let reads: Vec<Read> = cluster::prefixes().into_iter().map(Read::Prefix).collect();
        let (found, revision) = self.store.read_many_at(&reads)?;
        let mut view = Cluster::default();
        let mut bgp_view = crate::bgp::BgpView::default();
        let mut seen = BTreeSet::new();
        for kv in found.iter().flatten() {
            // The prefixes overlap (the host prefix holds node and endpoint keys): once each.
            if !seen.insert(kv.key.as_str()) {
                continue;
            }
            if bgp_view.apply(&kv.key, Some(&kv.value)) {
                continue;
            }
            if let Err(e) = view.apply(&self.config.name, &kv.key, Some(&kv.value), &mut Dirty::default()) {
                tracing::warn!("skipping a record: {}", chain(&e));
            }
        }
        self.cluster = view;
        self.ensure_tunnels(true)?;
        let report = self.sync_kernel()?;
        self.sync_nat(true);
        if let Some(bgp) = &mut self.bgp {
            bgp.view = bgp_view;
        }
        self.sync_bgp();
        self.health.metrics.full_syncs.inc();
        self.health.metrics.last_sync_seconds.set(started.elapsed().as_secs_f64());
        tracing::info!(
            revision,
            routes = self.table.len(),
            replaced = report.replaced,
            deleted = report.deleted,
            ms = started.elapsed().as_millis() as u64,
            "full sync"
        );
        self.synced = true;
        Ok(revision)
    }

    /// Compare every wanted route (from the view as it is) with the kernel and fix the
    /// difference. Needs no datastore: it repairs the kernel while the store is down too.
    pub fn sync_kernel(&mut self) -> Result<SyncReport> {
        let old_problems = self.problem_pools();
        let old_bgp: BTreeSet<String> = self.left_to_bgp.values().cloned().collect();
        self.problems.clear();
        self.left_to_bgp.clear();
        let mut wanted = BTreeMap::new();
        for dst in self.cluster.all_dsts() {
            if let Some(route) = self.note(dst) {
                wanted.insert(dst, route);
            }
        }
        let report = self.table.full_sync(self.kernel, &wanted)?;
        self.after_write(&report, &old_problems, &old_bgp);
        Ok(report)
    }

    /// Apply a batch of watch events to the view, and the routes they touch to the kernel.
    pub fn apply_events(&mut self, events: &[Event]) -> Result<SyncReport> {
        let mut dirty = Dirty::default();
        let mut bgp_changed = false;
        for event in events {
            let value = match &event.kind {
                EventKind::Put { value } => Some(value.as_slice()),
                EventKind::Delete => None,
            };
            if let Some(bgp) = &mut self.bgp {
                if bgp.apply(&event.key, value) {
                    bgp_changed = true;
                    continue;
                }
            }
            if let Err(e) = self.cluster.apply(&self.config.name, &event.key, value, &mut dirty) {
                tracing::warn!("skipping a change: {}", chain(&e));
            }
        }
        // A block changing renders nothing: BIRD learns its route from the kernel. A borrowed
        // address of this node's (an endpoint or block change) is a route of the config.
        let borrowed = || self.bgp.as_ref().is_some_and(|b| b.borrowed_changed(&self.cluster, &self.local));
        if bgp_changed || dirty.pools || dirty.nodes || (!dirty.dsts.is_empty() && borrowed()) {
            self.sync_bgp();
        }
        if dirty.is_empty() {
            return Ok(SyncReport::default());
        }
        if dirty.pools {
            self.sync_nat(false);
        }
        if dirty.pools || dirty.nodes {
            let device_changed = if dirty.pools {
                self.ensure_tunnels(false)?
            } else {
                let failures = self.vxlan.sync_vteps(self.kernel, &self.cluster, &self.config.name, false);
                self.tunnel_failures = failures;
                false
            };
            dirty.all |= device_changed;
        }
        let mut dsts = dirty.dsts;
        if dirty.all {
            dsts.extend(self.cluster.all_dsts());
            dsts.extend(self.table.dsts());
        }
        let old_problems = self.problem_pools();
        let old_bgp: BTreeSet<String> = self.left_to_bgp.values().cloned().collect();
        let mut changes: BTreeMap<IpNetwork, Option<TaggedRoute>> = BTreeMap::new();
        for dst in dsts {
            self.problems.remove(&dst);
            self.left_to_bgp.remove(&dst);
            changes.insert(dst, self.note(dst));
        }
        let report = self.table.update(self.kernel, &changes)?;
        tracing::debug!(events = events.len(), replaced = report.replaced, deleted = report.deleted, "applied changes");
        self.after_write(&report, &old_problems, &old_bgp);
        Ok(report)
    }

    /// Have BIRD run the config of the view as it is; readiness says why when it cannot.
    fn sync_bgp(&mut self) {
        let Some(bgp) = &mut self.bgp else { return };
        bgp.sync(&self.cluster, &self.local, self.config.as_number);
        self.health.set_problem("bgp", bgp.problem.clone());
        self.health.metrics.bird_starts.set(bgp.bird.starts as i64);
        self.health.metrics.bird_reconfigurations.set(bgp.bird.reconfigurations as i64);
    }

    /// Start BIRD again if it died.
    fn tick_bgp(&mut self) {
        let Some(bgp) = &mut self.bgp else { return };
        if self.synced {
            bgp.tick();
            self.health.set_problem("bgp", bgp.problem.clone());
            self.health.metrics.bird_starts.set(bgp.bird.starts as i64);
        }
    }

    /// BIRD's counters: (starts, reconfigurations), when BGP is on.
    pub fn bird_counts(&self) -> Option<(u64, u64)> {
        self.bgp.as_ref().map(|b| (b.bird.starts, b.bird.reconfigurations))
    }

    /// The route `dst` should have, noting why it has none when that is worth saying.
    fn note(&mut self, dst: IpNetwork) -> Option<TaggedRoute> {
        match routes::want(&self.cluster, &self.local, self.caps, &dst) {
            Want::Route(route) => Some(route),
            Want::Nothing => None,
            Want::LeftToBgp { node } => {
                self.left_to_bgp.insert(dst, node);
                None
            }
            Want::Problem { pool, reason } => {
                self.problems.insert(dst, (pool, reason));
                None
            }
        }
    }

    fn problem_pools(&self) -> BTreeMap<IpNetwork, String> {
        self.problems.values().cloned().collect()
    }

    fn after_write(
        &mut self,
        report: &SyncReport,
        old_problems: &BTreeMap<IpNetwork, String>,
        old_bgp: &BTreeSet<String>,
    ) {
        let metrics = &self.health.metrics;
        metrics.route_writes.inc_by((report.replaced + report.deleted) as u64);
        metrics.routes.set(self.table.len() as i64);
        let problems = self.problem_pools();
        metrics.pool_problems.set(problems.len() as i64);
        for (pool, reason) in &problems {
            if old_problems.get(pool) != Some(reason) {
                tracing::error!(%pool, "the routes of this pool are not programmed: {reason}");
            }
        }
        for node in self.left_to_bgp.values().collect::<BTreeSet<_>>() {
            if !old_bgp.contains(node) {
                tracing::info!(%node, "node is on another subnet and its pools have no encapsulation: its routes are left to BGP");
            }
        }
        for failure in &report.failures {
            tracing::error!("route not programmed: {failure}");
        }
        self.failures = report.failures.clone();
    }

    /// What could not be programmed, one line each (for `--once`).
    pub fn unprogrammed(&self) -> Vec<String> {
        let mut lines: Vec<String> =
            self.problem_pools().into_iter().map(|(pool, reason)| Error::Pool { pool, reason }.to_string()).collect();
        lines.extend(self.failures.iter().cloned());
        lines.extend(self.tunnel_failures.iter().cloned());
        lines.extend(self.nat_failure.iter().cloned());
        lines
    }

    /// `--once`: register, one full sync, and an error naming whatever could not be
    /// programmed.
    pub fn run_once(&mut self) -> Result<()> {
        self.register()?;
        self.full_sync()?;
        let what = self.unprogrammed();
        if what.is_empty() {
            Ok(())
        } else {
            Err(Error::Incomplete { what })
        }
    }

    /// Run until `stop` says so. Errors that pass (the datastore unreachable, a kernel
    /// request failing) are logged and retried; only what a retry cannot fix ends it (this
    /// node's address claimed by another node).
    pub fn run(&mut self, stop: &dyn Fn() -> bool) -> Result<()> {
        let mut backoff = Backoff::default();
        loop {
            self.health.beat();
            match self.register() {
                Ok(()) => break,
                Err(e) if e.is_unavailable() => self.unavailable(&e, &mut backoff),
                Err(e) => return Err(e),
            }
            if stop() {
                return Ok(());
            }
        }
        backoff.reset();
        let mut watches = 0u64;
        'resync: while !stop() {
            self.health.beat();
            let revision = match self.full_sync() {
                Ok(revision) => revision,
                Err(e) => {
                    if e.is_unavailable() {
                        self.unavailable(&e, &mut backoff);
                    } else {
                        tracing::error!("full sync failed: {}", chain(&e));
                        std::thread::sleep(backoff.next());
                    }
                    if self.synced {
                        // Repair what drifted in the kernel from what we know.
                        if let Err(e) = self.sync_kernel() {
                            tracing::error!("kernel sync failed: {}", chain(&e));
                        }
                        // And keep BIRD running meanwhile.
                        self.tick_bgp();
                        self.sync_nat(true);
                    }
                    continue;
                }
            };
            self.health.set_ready();
            backoff.reset();
            let mut watch = match self.store.watch(&cluster::prefixes(), revision + 1) {
                Ok(watch) => watch,
                Err(e) => {
                    self.unavailable(&e.into(), &mut backoff);
                    continue;
                }
            };
            watches += 1;
            if watches > 1 {
                self.health.metrics.watch_reconnects.inc();
            }
            let deadline = Instant::now() + self.config.resync_interval;
            let mut down = false;
            loop {
                self.health.beat();
                if stop() {
                    return Ok(());
                }
                self.tick_bgp();
                let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                    continue 'resync;
                };
                match watch.next(left.min(WATCH_TICK)) {
                    Ok(events) => {
                        if down {
                            tracing::info!("datastore reachable again");
                            self.health.set_ready();
                            backoff.reset();
                            down = false;
                        }
                        if let Some(events) = events {
                            if let Err(e) = self.apply_events(&events) {
                                // The view has the change; the next full sync programs it.
                                tracing::error!("applying changes failed: {}", chain(&e));
                            }
                        }
                    }
                    Err(datastore::Error::Compacted { .. }) => {
                        tracing::info!("the watch's history was compacted: full sync");
                        continue 'resync;
                    }
                    Err(e) if e.is_unavailable() => {
                        down = true;
                        self.unavailable(&Error::Store(e), &mut backoff);
                    }
                    Err(e) => {
                        tracing::error!("watch failed: {}", chain(&e));
                        self.health.metrics.datastore_errors.inc();
                        std::thread::sleep(backoff.next());
                        continue 'resync;
                    }
                }
            }
        }
        Ok(())
    }

    fn unavailable(&self, e: &Error, backoff: &mut Backoff) {
        let reason = format!("datastore unreachable: {}", chain(e));
        tracing::warn!("{reason}; retrying, routes kept as they are");
        self.health.set_not_ready(reason);
        self.health.metrics.datastore_errors.inc();
        std::thread::sleep(backoff.next());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Call, FakeKernel};
    use crate::routes::PROTOCOL;
    use dataplane::RouteTarget;
    use datastore::memory::MemoryStore;
    use datastore::Op;

    fn config(name: &str) -> Config {
        Config {
            name: name.into(),
            addresses: AddressChoice { ipv4: Some("10.9.0.1/24".parse().unwrap()), ..AddressChoice::default() },
            as_number: None,
            resync_interval: Duration::from_secs(90),
            vxlan_mtu: None,
            ipip_mtu: None,
            mtu_file: None,
            bgp: None,
        }
    }

    fn put(store: &MemoryStore, key: &str, value: &str) -> Event {
        let revision = match store.txn(&[], &[Op::Put { key: key.into(), value: value.into() }]).unwrap() {
            datastore::TxnOutcome::Committed { revision } => revision,
            other => panic!("{other:?}"),
        };
        Event { key: key.into(), kind: EventKind::Put { value: value.into() }, mod_revision: revision }
    }

    fn del(store: &MemoryStore, key: &str) -> Event {
        store.txn(&[], &[Op::Delete { key: key.into() }]).unwrap();
        Event { key: key.into(), kind: EventKind::Delete, mod_revision: 0 }
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn via(dst: &str, gw: &str) -> TaggedRoute {
        TaggedRoute {
            dst: net(dst),
            target: RouteTarget::Via { gateway: gw.parse().unwrap(), oif: 2, onlink: true },
            protocol: PROTOCOL,
            metric: 0,
        }
    }

    fn blackhole(dst: &str) -> TaggedRoute {
        TaggedRoute { dst: net(dst), target: RouteTarget::Blackhole, protocol: PROTOCOL, metric: 0 }
    }

    const POOL: &str = "/calico/v1/ipam/v4/pool/10.0.0.0-16";
    const POOL_JSON: &str = r#"{"cidr":"10.0.0.0/16","block_size":26}"#;

    #[test]
    fn start_sync_then_incremental_changes() {
        let store = MemoryStore::new();
        let kernel = FakeKernel::with_uplink(&["10.9.0.1/24"]);
        put(&store, POOL, POOL_JSON);
        put(&store, "/calico/ipam/v2/host/me/ipv4/block/10.0.0.0-26", "{}");
        put(&store, "/calico/ipam/v2/host/b/ipv4/block/10.0.1.0-26", "{}");
        put(&store, "/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2");
        let mut agent = Agent::new(&store, &kernel, Arc::new(Health::new()), config("me")).unwrap();
        agent.run_once().unwrap();
        assert_eq!(store.get("/calico/bgp/v1/host/me/ip_addr_v4").unwrap().unwrap().value, b"10.9.0.1");
        assert_eq!(kernel.routes_of(PROTOCOL), vec![blackhole("10.0.0.0/26"), via("10.0.1.0/26", "10.9.0.2")]);
        kernel.take_calls();

        // A new block of b: one route written, nothing listed.
        let e = put(&store, "/calico/ipam/v2/host/b/ipv4/block/10.0.2.0-26", "{}");
        agent.apply_events(&[e]).unwrap();
        assert_eq!(kernel.take_calls(), vec![Call::Replace(vec![via("10.0.2.0/26", "10.9.0.2")])]);
        // b moves: both its routes replaced in place.
        let e = put(&store, "/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.3");
        agent.apply_events(&[e]).unwrap();
        assert_eq!(
            kernel.take_calls(),
            vec![Call::Replace(vec![via("10.0.1.0/26", "10.9.0.3"), via("10.0.2.0/26", "10.9.0.3")])]
        );
        // b's block released: its route deleted.
        let e = del(&store, "/calico/ipam/v2/host/b/ipv4/block/10.0.1.0-26");
        agent.apply_events(&[e]).unwrap();
        assert_eq!(kernel.take_calls(), vec![Call::Delete(vec![via("10.0.1.0/26", "10.9.0.3")])]);
        // Unrelated keys: nothing.
        let e = put(&store, "/calico/ipam/v2/host/b/ipv4/cursor", "\"10.0.2.0/26\"");
        agent.apply_events(&[e]).unwrap();
        assert!(kernel.take_calls().is_empty());
    }

    #[test]
    fn a_restart_rewrites_nothing_that_is_right_and_a_resync_repairs_drift() {
        let store = MemoryStore::new();
        let kernel = FakeKernel::with_uplink(&["10.9.0.1/24"]);
        put(&store, POOL, POOL_JSON);
        put(&store, "/calico/ipam/v2/host/b/ipv4/block/10.0.1.0-26", "{}");
        put(&store, "/calico/ipam/v2/host/b/ipv4/block/10.0.2.0-26", "{}");
        put(&store, "/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2");
        Agent::new(&store, &kernel, Arc::new(Health::new()), config("me")).unwrap().run_once().unwrap();
        kernel.take_calls();
        // A new agent (a restart) finds the kernel right: it only lists.
        let mut agent = Agent::new(&store, &kernel, Arc::new(Health::new()), config("me")).unwrap();
        agent.run_once().unwrap();
        assert!(kernel.take_calls().iter().all(|c| matches!(c, Call::ListRoutes(_))));
        // Someone deletes a route: the next kernel sync puts it back, and only it.
        kernel.state.lock().unwrap().routes.retain(|r| r.dst != net("10.0.2.0/26"));
        agent.sync_kernel().unwrap();
        let writes: Vec<Call> = kernel.take_calls().into_iter().filter(|c| !matches!(c, Call::ListRoutes(_))).collect();
        assert_eq!(writes, vec![Call::Replace(vec![via("10.0.2.0/26", "10.9.0.2")])]);
    }

    #[test]
    fn once_names_what_could_not_be_programmed() {
        let store = MemoryStore::new();
        let kernel = FakeKernel::with_uplink(&["10.9.0.1/24"]);
        put(&store, POOL, r#"{"cidr":"10.0.0.0/16","block_size":26,"ipip":"always"}"#);
        put(&store, "/calico/v1/ipam/v4/pool/10.1.0.0-16", r#"{"cidr":"10.1.0.0/16","block_size":26}"#);
        put(&store, "/calico/ipam/v2/host/b/ipv4/block/10.0.1.0-26", "{}");
        put(&store, "/calico/ipam/v2/host/b/ipv4/block/10.1.1.0-26", "{}");
        put(&store, "/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2");
        let mut agent = Agent::new(&store, &kernel, Arc::new(Health::new()), config("me")).unwrap();
        let err = agent.run_once().unwrap_err().to_string();
        assert!(err.contains("pool 10.0.0.0/16: IPIP needs") && err.contains("CONFIG_NET_IPIP"), "{err}");
        assert_eq!(kernel.routes_of(PROTOCOL), vec![via("10.1.1.0/26", "10.9.0.2")], "the other pool works");
    }

    #[test]
    fn a_duplicate_address_is_refused_before_anything_is_programmed() {
        let store = MemoryStore::new();
        let kernel = FakeKernel::with_uplink(&["10.9.0.1/24"]);
        put(&store, "/calico/bgp/v1/host/other/ip_addr_v4", "10.9.0.1");
        let mut agent = Agent::new(&store, &kernel, Arc::new(Health::new()), config("me")).unwrap();
        let err = agent.run(&|| false).unwrap_err().to_string();
        assert!(err.contains("node \"other\" already claims 10.9.0.1"), "{err}");
        assert!(kernel.take_calls().is_empty());
    }

    #[test]
    fn run_follows_the_watch_until_stopped() {
        let store = MemoryStore::new();
        let kernel = FakeKernel::with_uplink(&["10.9.0.1/24"]);
        put(&store, POOL, POOL_JSON);
        put(&store, "/calico/bgp/v1/host/b/ip_addr_v4", "10.9.0.2");
        let health = Arc::new(Health::new());
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let (store, kernel, health2, stop) = (&store, &kernel, health.clone(), &stop);
            let runner = scope.spawn(move || {
                let mut agent = Agent::new(store, kernel, health2, config("me")).unwrap();
                agent.run(&|| stop.load(std::sync::atomic::Ordering::Relaxed))
            });
            let wait = |what: &str, f: &dyn Fn() -> bool| {
                let until = Instant::now() + Duration::from_secs(10);
                while !f() {
                    assert!(Instant::now() < until, "timed out waiting for {what}");
                    std::thread::sleep(Duration::from_millis(5));
                }
            };
            wait("readiness", &|| health.readiness().0);
            put(store, "/calico/ipam/v2/host/b/ipv4/block/10.0.1.0-26", "{}");
            wait("the route", &|| kernel.routes_of(PROTOCOL) == vec![via("10.0.1.0/26", "10.9.0.2")]);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            runner.join().unwrap().unwrap();
        });
        assert!(health.encode_metrics().contains("calico_node_full_syncs_total 1"));
    }
}
