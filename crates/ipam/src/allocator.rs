//! The allocator: Calico's block/affinity/handle algorithm over the [`Datastore`] trait.
//!
//! Every write is one transaction that compares the revisions it read, so processes on many
//! hosts can allocate at once: a block claim creates the block and its affinity together
//! (both must be absent), and an allocation rewrites the block and the handle together. A
//! process killed at any instant therefore leaves either all or nothing of a step — never an
//! address without its handle. Conflicts retry with jittered backoff, a bounded number of
//! times.
//!
//! The affinity value carries a hint of how many addresses the block has free, written in
//! the same transaction as the block, so that a host with many full blocks finds the one with
//! room without reading them all.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnetwork::IpNetwork;

use datastore::{Compare, Datastore, KeyValue, Op, Read};
use model::affinity::Affinity;
use model::block::{Attribute, Block};
use model::handle::{Handle, HANDLE_NODE, HANDLE_PLUGIN};
use model::pool::Pool;
use model::{keys, net};

use crate::pool;
use crate::store::{self, BlockReads};
use crate::Error;

/// How many times a step is retried when other writers keep winning the race.
pub const MAX_ATTEMPTS: u32 = 32;

/// Who an allocation is for.
#[derive(Clone, Debug, Default)]
pub struct Owner {
    pub handle: String,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// Extra descriptive attributes stored with the address (e.g. k8s namespace and pod).
    pub extra: BTreeMap<String, String>,
    /// The plugin the allocation is for (`calico-cni` when calico-cni runs IPAM in its own
    /// process, and then writes an endpoint record); empty for calico-ipam itself.
    pub plugin: String,
}

impl Owner {
    /// What the block records per address: the handle, the node that allocated it, and the
    /// pod if any, as Calico does. Network, container and interface live in the handle only:
    /// repeated for every address they doubled a block's size, and every allocation rewrites
    /// its whole block.
    fn attribute(&self, host: &str) -> Attribute {
        let mut secondary = self.extra.clone();
        secondary.insert("node".into(), host.into());
        Attribute { handle_id: Some(self.handle.clone()), secondary }
    }

    /// What the handle records: the attachment, and the node that made it, so that GC (whose
    /// list of valid attachments is one host's view) only ever considers this node's handles.
    fn handle_attributes(&self, host: &str) -> BTreeMap<String, String> {
        let mut attrs = BTreeMap::from([
            ("network".into(), self.network.clone()),
            ("container_id".into(), self.container_id.clone()),
            ("ifname".into(), self.ifname.clone()),
            (HANDLE_NODE.into(), host.into()),
        ]);
        if !self.plugin.is_empty() {
            attrs.insert(HANDLE_PLUGIN.into(), self.plugin.clone());
        }
        attrs
    }
}

/// What to allocate.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub owner: Owner,
    /// `None`: no IPv4 address. `Some(empty)`: from any enabled pool. Else from these pools.
    pub v4: Option<Vec<IpNetwork>>,
    pub v6: Option<Vec<IpNetwork>>,
    /// Specific addresses; when given they replace automatic assignment.
    pub ips: Vec<IpAddr>,
}

/// An allocated address with the pool it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub ip: IpAddr,
    pub pool: Pool,
}

/// What trying one affine block gave.
enum Affine {
    Allocated(IpAddr),
    /// Gone, no longer ours, or full.
    NoRoom,
    /// Someone wrote first: start the attempt again.
    Conflict,
}

/// The block named by a cursor key, if it is there and readable (it is only a hint).
fn cursor_of(kvs: &[KeyValue]) -> Option<IpNetwork> {
    serde_json::from_slice(&kvs.first()?.value).ok()
}

/// The handle as last read, with the revision to compare against (None: absent).
struct HandleState {
    handle: Handle,
    revision: Option<i64>,
}

/// One block to write, with the revision it was read at (None: claim a new block).
struct BlockWrite {
    block: Block,
    revision: Option<i64>,
}

pub struct Ipam<'a> {
    store: &'a dyn Datastore,
    host: String,
    prefetch: Vec<IpNetwork>,
    /// Calico's default IPv4 pool while an ADD allocates from it but nobody has created it:
    /// it is created by the allocation's own transaction, so an ADD that fails leaves none.
    default_pool: RefCell<Option<Pool>>,
    /// Whether this call's transaction created the default pool (undone with the rest).
    created_default_pool: Cell<bool>,
}

/// Blocks read ahead in a call's first round trip, by CIDR: each is used at most once, in
/// the first attempt, and only with the revision it was read at.
type Prefetched = HashMap<IpNetwork, KeyValue>;

impl<'a> Ipam<'a> {
    pub fn new(store: &'a dyn Datastore, host: impl Into<String>) -> Ipam<'a> {
        Ipam {
            store,
            host: host.into(),
            prefetch: Vec::new(),
            default_pool: RefCell::new(None),
            created_default_pool: Cell::new(false),
        }
    }

    /// Also read `blocks` in the first round trip of [`Ipam::assign`] and
    /// [`Ipam::release_handle`]: on etcd, when one of them turns out to be the block the call
    /// needs (the host's cursor block, the handle's block), that saves a round trip. A wrong
    /// guess costs only the bytes read; every write still compares what it read.
    pub fn prefetch(mut self, blocks: Vec<IpNetwork>) -> Ipam<'a> {
        self.prefetch = blocks;
        self
    }

    fn prefetch_reads(&self) -> impl Iterator<Item = Read> + '_ {
        self.prefetch.iter().map(|cidr| Read::Key(keys::block(cidr)))
    }

    /// The answers to [`Ipam::prefetch_reads`], the tail of a `read_many` result.
    fn prefetched(&self, answers: Vec<Vec<KeyValue>>) -> Prefetched {
        self.prefetch
            .iter()
            .copied()
            .zip(answers)
            .filter_map(|(cidr, kvs)| Some((cidr, kvs.into_iter().next()?)))
            .collect()
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Allocate for `req.owner`. A repeated request for a handle that already holds
    /// addresses returns them. If any family fails, what this call allocated is released.
    pub fn assign(&self, req: &Request) -> Result<Vec<Assigned>, Error> {
        let owner = &req.owner;
        let mut reads = self.store.read_many(
            &[
                Read::Key(keys::handle(&owner.handle)),
                Read::Prefix(keys::pool_prefix(4)),
                Read::Prefix(keys::pool_prefix(6)),
                Read::Key(keys::cursor(&self.host, 4)),
                Read::Key(keys::cursor(&self.host, 6)),
            ]
            .into_iter()
            .chain(self.prefetch_reads())
            .collect::<Vec<_>>(),
        )?;
        let mut read_ahead = self.prefetched(reads.split_off(5.min(reads.len())));
        let cursor6 = cursor_of(&reads.pop().unwrap_or_default());
        let cursor4 = cursor_of(&reads.pop().unwrap_or_default());
        let mut pools6 = pool::decode_all(&reads.pop().unwrap_or_default())?;
        let mut pools4 = pool::decode_all(&reads.pop().unwrap_or_default())?;
        let mut state = handle_state(&owner.handle, reads.pop().unwrap_or_default().first())?;
        // No IPv4 pool at all: allocate from Calico's default pool, created in the same
        // transaction as the first allocation that uses it (never by an ADD that fails).
        if pools4.is_empty() && (req.v4.is_some() || req.ips.iter().any(IpAddr::is_ipv4)) {
            let default = pool::default_v4();
            pools4.push(default.clone());
            *self.default_pool.borrow_mut() = Some(default);
        }
        let all_pools: Vec<Pool> = pools4.iter().chain(&pools6).cloned().collect();

        let held = self.ips_of(&state.handle)?;
        let mut fresh: Vec<IpAddr> = Vec::new();
        let outcome = (|| {
            if !req.ips.is_empty() {
                for ip in &req.ips {
                    if !held.contains(ip) {
                        self.assign_ip(*ip, &all_pools, owner, &mut state)?;
                        fresh.push(*ip);
                    }
                }
                return Ok(req.ips.clone());
            }
            let mut ips = held.clone();
            for (family, wanted, pools, cursor) in
                [(4, &req.v4, &mut pools4, cursor4), (6, &req.v6, &mut pools6, cursor6)]
            {
                let Some(wanted) = wanted else { continue };
                if held.iter().any(|ip| family_of(ip) == family) {
                    continue;
                }
                let pools = select_pools(family, wanted, pools)?;
                let ip = self.auto_assign(family, &pools, cursor, owner, &mut state, &mut read_ahead)?;
                fresh.push(ip);
                ips.push(ip);
            }
            Ok(ips)
        })();
        match outcome {
            Ok(ips) => Ok(ips
                .into_iter()
                .filter_map(|ip| {
                    let pool = all_pools.iter().find(|p| p.cidr.contains(ip))?.clone();
                    Some(Assigned { ip, pool })
                })
                .collect()),
            Err(e) => {
                if !fresh.is_empty() {
                    if let Err(undo) = self.release_ips(&fresh) {
                        tracing::error!(error = %undo, ips = ?fresh, "could not roll back a partial allocation");
                    }
                }
                if self.created_default_pool.get() {
                    self.remove_default_pool();
                }
                Err(e)
            }
        }
    }

    /// Undo the creation of the default pool by a call that then failed. Refused (and left
    /// alone) when another host allocated from it meanwhile.
    fn remove_default_pool(&self) {
        let cidr = pool::default_v4().cidr;
        match pool::remove(self.store, &cidr, false) {
            Ok(_) => tracing::info!(%cidr, "removed the default IPv4 pool this failed ADD created"),
            Err(Error::PoolInUse { .. }) => {}
            Err(e) => {
                tracing::error!(error = %e, %cidr, "could not remove the default IPv4 pool this failed ADD created")
            }
        }
    }

    /// Addresses currently held by `handle`.
    fn ips_of(&self, handle: &Handle) -> Result<Vec<IpAddr>, Error> {
        if handle.block.is_empty() {
            return Ok(Vec::new());
        }
        let reads = handle.block_reads();
        let mut ips = Vec::new();
        for kv in self.store.read_many(&reads)?.iter().flatten() {
            ips.extend(store::decode::<Block>(kv)?.ips_of(&handle.id));
        }
        ips.sort_by_key(|ip| (family_of(ip), *ip));
        Ok(ips)
    }

    /// The addresses held by a handle id (for CHECK and repeated ADD).
    pub fn ips_of_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>, Error> {
        let state = handle_state(handle_id, self.store.get(&keys::handle(handle_id))?.as_ref())?;
        self.ips_of(&state.handle)
    }

    fn auto_assign(
        &self,
        family: u8,
        pools: &[Pool],
        mut cursor: Option<IpNetwork>,
        owner: &Owner,
        state: &mut HandleState,
        read_ahead: &mut Prefetched,
    ) -> Result<IpAddr, Error> {
        let attr = owner.attribute(&self.host);
        let in_pools = |c: &IpNetwork| pools.iter().any(|p| p.cidr.contains(c.network()));
        'attempt: for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt);
                read_ahead.clear();
                let mut fresh = self.store.read_many(&[
                    Read::Key(keys::handle(&owner.handle)),
                    Read::Key(keys::cursor(&self.host, family)),
                ])?;
                cursor = cursor_of(&fresh.pop().unwrap_or_default());
                *state = handle_state(&owner.handle, fresh.pop().unwrap_or_default().first())?;
            }
            // 0. The block this host allocated from last: in the steady state it has room, and
            // nothing needs listing.
            let cursor = cursor.filter(|c| in_pools(c));
            if let Some(cidr) = cursor {
                match self.try_affine(cidr, &attr, state, owner, read_ahead.remove(&cidr))? {
                    Affine::Allocated(ip) => return Ok(ip),
                    Affine::Conflict => continue 'attempt,
                    Affine::NoRoom => {}
                }
            }
            // 1. Every other block affine to this host. Blocks are claimed in ascending order,
            // so the highest is the likeliest to have room: walk down from it and read each
            // hint only until a block with room turns up.
            // A host without a cursor has most likely no block yet and will claim one: fetch
            // the block list in the same round trip.
            let (affinities, mut prefetched) = if cursor.is_none() {
                let mut both = self.store.read_many(&[
                    Read::Prefix(keys::affinity_prefix(&self.host, family)),
                    Read::Prefix(keys::block_prefix(family)),
                ])?;
                let blocks = both.pop().unwrap_or_default();
                (both.pop().unwrap_or_default(), Some(blocks))
            } else {
                (self.store.list(&keys::affinity_prefix(&self.host, family))?, None)
            };
            let mut affine: Vec<(IpNetwork, &KeyValue)> = affinities
                .iter()
                .filter_map(|kv| Some((keys::cidr_of_key(&kv.key)?, kv)))
                .filter(|(cidr, _)| in_pools(cidr) && Some(*cidr) != cursor)
                .collect();
            affine.sort_by_key(|(cidr, _)| std::cmp::Reverse(net::to_u128(cidr.network())));
            for (cidr, affinity) in affine {
                let hint = serde_json::from_slice::<Affinity>(&affinity.value).ok().and_then(|a| a.free);
                if hint == Some(0) {
                    continue;
                }
                match self.try_affine(cidr, &attr, state, owner, read_ahead.remove(&cidr))? {
                    Affine::Allocated(ip) => return Ok(ip),
                    Affine::Conflict => continue 'attempt,
                    Affine::NoRoom => {}
                }
            }
            // 2. Claim a free block of the first pool that has one.
            let blocks = match prefetched.take() {
                Some(blocks) => blocks,
                None => self.store.list(&keys::block_prefix(family))?,
            };
            let existing: HashSet<IpNetwork> = blocks.iter().filter_map(|kv| keys::cidr_of_key(&kv.key)).collect();
            for pool in pools {
                let Some(cidr) = first_free_block(pool, &existing) else {
                    continue;
                };
                let mut block = Block::new(cidr, &self.host);
                let Some(ip) = block.allocate(&attr) else {
                    continue;
                };
                if self.commit(vec![BlockWrite { block, revision: None }], state, owner, 1)? {
                    tracing::debug!(%cidr, host = %self.host, "claimed block");
                    return Ok(ip);
                }
                continue 'attempt;
            }
            // 3. Borrow from any block of the pools that has room, whoever it is affine to.
            for kv in &blocks {
                let Some(cidr) = keys::cidr_of_key(&kv.key) else {
                    continue;
                };
                if !in_pools(&cidr) {
                    continue;
                }
                let mut block: Block = store::decode(kv)?;
                let Some(ip) = block.allocate(&attr) else {
                    continue;
                };
                if self.commit(vec![BlockWrite { block, revision: Some(kv.mod_revision) }], state, owner, 1)? {
                    tracing::debug!(%ip, %cidr, "borrowed an address from another host's block");
                    return Ok(ip);
                }
                continue 'attempt;
            }
            return Err(Error::Exhausted { family, pools: pools.iter().map(|p| p.cidr).collect() });
        }
        Err(Error::TooMuchContention { key: keys::block_prefix(family), attempts: MAX_ATTEMPTS })
    }

    /// Allocate one address from `cidr` if it is a block of this host with room. `read` is
    /// the block if it was already read in this attempt.
    fn try_affine(
        &self,
        cidr: IpNetwork,
        attr: &Attribute,
        state: &mut HandleState,
        owner: &Owner,
        read: Option<KeyValue>,
    ) -> Result<Affine, Error> {
        let kv = match read {
            Some(kv) => kv,
            None => match self.store.get(&keys::block(&cidr))? {
                Some(kv) => kv,
                None => return Ok(Affine::NoRoom),
            },
        };
        let mut block: Block = store::decode(&kv)?;
        if block.host() != Some(self.host.as_str()) {
            return Ok(Affine::NoRoom);
        }
        let Some(ip) = block.allocate(attr) else {
            return Ok(Affine::NoRoom);
        };
        Ok(if self.commit(vec![BlockWrite { block, revision: Some(kv.mod_revision) }], state, owner, 1)? {
            Affine::Allocated(ip)
        } else {
            Affine::Conflict
        })
    }

    /// Allocate exactly `ip`, claiming its block for this host if nobody has it yet.
    fn assign_ip(&self, ip: IpAddr, pools: &[Pool], owner: &Owner, state: &mut HandleState) -> Result<(), Error> {
        let pool = pools.iter().find(|p| p.cidr.contains(ip)).ok_or(Error::AddressNotInPool { ip })?;
        if pool.disabled {
            return Err(Error::PoolDisabled { cidr: pool.cidr });
        }
        let cidr = net::block_of(ip, pool.block_size);
        let attr = owner.attribute(&self.host);
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt);
                *state = handle_state(&owner.handle, self.store.get(&keys::handle(&owner.handle))?.as_ref())?;
            }
            let (mut block, revision) = match self.store.get(&keys::block(&cidr))? {
                Some(kv) => (store::decode::<Block>(&kv)?, Some(kv.mod_revision)),
                None => (Block::new(cidr, &self.host), None),
            };
            match block.allocate_ip(ip, &attr) {
                Some(true) => {}
                Some(false) => return Err(Error::AddressInUse { ip }),
                None => return Err(Error::AddressNotInPool { ip }),
            }
            if self.commit(vec![BlockWrite { block, revision }], state, owner, 1)? {
                return Ok(());
            }
        }
        Err(Error::TooMuchContention { key: keys::block(&cidr), attempts: MAX_ATTEMPTS })
    }

    /// Write blocks and the handle in one transaction. `added` addresses were allocated in
    /// the (single) block for `owner`. Returns false on a conflict.
    fn commit(
        &self,
        writes: Vec<BlockWrite>,
        state: &mut HandleState,
        owner: &Owner,
        added: u32,
    ) -> Result<bool, Error> {
        let mut handle = state.handle.clone();
        handle.attributes = owner.handle_attributes(&self.host);
        for w in &writes {
            handle.add(&w.block.cidr.to_string(), added);
        }
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        for w in &writes {
            block_ops(&w.block, w.revision, &mut compares, &mut ops);
            if w.block.host() == Some(self.host.as_str()) {
                let key = keys::cursor(&self.host, keys::family_of(&w.block.cidr));
                ops.push(Op::Put { key, value: store::encode(&w.block.cidr) });
            }
        }
        let key = keys::handle(&handle.id);
        compares.push(match state.revision {
            Some(r) => Compare::Revision(key.clone(), r),
            None => Compare::Absent(key.clone()),
        });
        ops.push(Op::Put { key, value: store::encode(&handle) });
        let default_pool = self.default_pool.borrow().clone();
        if let Some(pool) = &default_pool {
            compares.push(Compare::Absent(keys::pool(&pool.cidr)));
            ops.push(Op::Put { key: keys::pool(&pool.cidr), value: store::encode(pool) });
        }
        match self.store.txn(&compares, &ops)? {
            datastore::TxnOutcome::Committed { revision } => {
                *state = HandleState { handle, revision: Some(revision) };
                if let Some(pool) = self.default_pool.take() {
                    tracing::info!(cidr = %pool.cidr, "created the default IPv4 pool");
                    self.created_default_pool.set(true);
                }
                Ok(true)
            }
            datastore::TxnOutcome::Conflict => {
                // Another process may have created the default pool first: use it from now on.
                if let Some(pool) = &default_pool {
                    if self.store.get(&keys::pool(&pool.cidr))?.is_some() {
                        self.default_pool.take();
                    }
                }
                Ok(false)
            }
        }
    }

    /// Release every address of `handle_id`. Unknown handles are fine (returns nothing).
    pub fn release_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>, Error> {
        let key = keys::handle(handle_id);
        for attempt in 0..MAX_ATTEMPTS {
            let mut prefetched = Prefetched::new();
            let kv = if attempt == 0 && !self.prefetch.is_empty() {
                let reads: Vec<Read> = std::iter::once(Read::Key(key.clone())).chain(self.prefetch_reads()).collect();
                let mut answers = self.store.read_many(&reads)?;
                prefetched = self.prefetched(answers.split_off(1.min(answers.len())));
                answers.pop().unwrap_or_default().into_iter().next()
            } else {
                if attempt > 0 {
                    backoff(attempt);
                }
                self.store.get(&key)?
            };
            let Some(kv) = kv else { return Ok(Vec::new()) };
            let handle: Handle = store::decode(&kv)?;
            // The handle's blocks: those read ahead, and one read for the rest.
            let mut blocks: Vec<KeyValue> = Vec::new();
            let mut missing = Vec::new();
            for cidr in handle.blocks() {
                match prefetched.remove(&cidr) {
                    Some(kv) => blocks.push(kv),
                    None => missing.push(Read::Key(keys::block(&cidr))),
                }
            }
            if !missing.is_empty() {
                blocks.extend(self.store.read_many(&missing)?.into_iter().flatten());
            }
            let mut released = Vec::new();
            let mut compares = vec![Compare::Revision(key.clone(), kv.mod_revision)];
            let mut ops = vec![Op::Delete { key: key.clone() }];
            for bkv in &blocks {
                let mut block: Block = store::decode(bkv)?;
                released.extend(block.release_handle(handle_id));
                block_ops(&block, Some(bkv.mod_revision), &mut compares, &mut ops);
            }
            if self.store.txn(&compares, &ops)?.committed() {
                return Ok(released);
            }
        }
        Err(Error::TooMuchContention { key, attempts: MAX_ATTEMPTS })
    }

    /// Release specific addresses, whatever handle holds them, fixing the handles' counts.
    /// Returns the handle of each released address; addresses not allocated are an error.
    pub fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<(IpAddr, Option<String>)>, Error> {
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt);
            }
            let mut blocks: BTreeMap<IpNetwork, (Block, i64)> = BTreeMap::new();
            for family in [4u8, 6] {
                if ips.iter().any(|ip| family_of(ip) == family) {
                    for kv in self.store.list(&keys::block_prefix(family))? {
                        let b: Block = store::decode(&kv)?;
                        if ips.iter().any(|ip| b.cidr.contains(*ip)) {
                            blocks.insert(b.cidr, (b, kv.mod_revision));
                        }
                    }
                }
            }
            let mut released = Vec::new();
            let mut per_handle: BTreeMap<String, Vec<IpNetwork>> = BTreeMap::new();
            for ip in ips {
                let (block, _) = blocks
                    .values_mut()
                    .find(|(b, _)| b.cidr.contains(*ip))
                    .ok_or(Error::AddressNotAllocated { ip: *ip })?;
                let handle = block.release_ip(*ip).ok_or(Error::AddressNotAllocated { ip: *ip })?;
                if let Some(h) = &handle {
                    per_handle.entry(h.clone()).or_default().push(block.cidr);
                }
                released.push((*ip, handle));
            }
            let mut compares = Vec::new();
            let mut ops = Vec::new();
            for (block, rev) in blocks.values() {
                block_ops(block, Some(*rev), &mut compares, &mut ops);
            }
            let handle_reads: Vec<Read> = per_handle.keys().map(|h| Read::Key(keys::handle(h))).collect();
            for hkv in self.store.read_many(&handle_reads)?.iter().flatten() {
                let mut handle: Handle = store::decode(hkv)?;
                for cidr in per_handle.get(&handle.id).into_iter().flatten() {
                    handle.remove(&cidr.to_string(), 1);
                }
                compares.push(Compare::Revision(hkv.key.clone(), hkv.mod_revision));
                ops.push(if handle.block.is_empty() {
                    Op::Delete { key: hkv.key.clone() }
                } else {
                    Op::Put { key: hkv.key.clone(), value: store::encode(&handle) }
                });
            }
            if self.store.txn(&compares, &ops)?.committed() {
                return Ok(released);
            }
        }
        Err(Error::TooMuchContention { key: "release".into(), attempts: MAX_ATTEMPTS })
    }

    /// Release every allocation of `network` made by this node whose (container id, ifname)
    /// is not in `valid`. Returns the handles released.
    ///
    /// `valid` is the runtime's view of its own host only: another node's allocations of the
    /// same network are never touched (on a shared store that would free live addresses and
    /// hand them out twice).
    pub fn gc(&self, network: &str, valid: &HashSet<(String, String)>) -> Result<Vec<String>, Error> {
        let mut released = Vec::new();
        for kv in self.store.list(&format!("{}{network}.", keys::HANDLE_PREFIX))? {
            let handle: Handle = store::decode(&kv)?;
            let attr = |k: &str| handle.attributes.get(k).cloned().unwrap_or_default();
            if attr("network") != network || valid.contains(&(attr("container_id"), attr("ifname"))) {
                continue;
            }
            if !self.made_here(&handle)? {
                continue;
            }
            self.release_handle(&handle.id)?;
            released.push(handle.id);
        }
        Ok(released)
    }

    /// Whether this node made the allocations of `handle`. The handle says so since it
    /// records its node; a handle written by an older version without one is this node's
    /// only if every address it holds is recorded in its block as allocated by this node
    /// (`secondary.node`). Anything that cannot be proven ours (no addresses, an address
    /// without a node) is left alone: GC must never free another host's live address.
    fn made_here(&self, handle: &Handle) -> Result<bool, Error> {
        if let Some(node) = handle.attributes.get(HANDLE_NODE) {
            return Ok(*node == self.host);
        }
        let mut held = 0;
        for kv in self.store.read_many(&handle.block_reads())?.iter().flatten() {
            let block: Block = store::decode(kv)?;
            for ip in block.ips_of(&handle.id) {
                held += 1;
                let node = block.holder(ip).and_then(|a| a.secondary.get("node"));
                if node.map(String::as_str) != Some(self.host.as_str()) {
                    tracing::debug!(handle = %handle.id, %ip, ?node, "GC leaves an address it cannot prove is this node's");
                    return Ok(false);
                }
            }
        }
        Ok(held > 0)
    }

    /// Whether an ADD could succeed: the store answers and some enabled pool has room.
    pub fn status(&self, families: &[u8]) -> Result<(), Error> {
        for &family in families {
            let pools: Vec<Pool> = pool::list(self.store, Some(family))?.into_iter().filter(|p| !p.disabled).collect();
            if pools.is_empty() {
                if family == 4 {
                    continue; // the default pool will be created on the first ADD
                }
                return Err(Error::NoPools { family });
            }
            let blocks = blocks_of(self.store, family)?;
            let has_room = pools.iter().any(|p| {
                let mine: Vec<&Block> =
                    blocks.iter().map(|(b, _)| b).filter(|b| p.cidr.contains(b.cidr.network())).collect();
                (mine.len() as u128) < p.block_count() || mine.iter().any(|b| b.free() > 0)
            });
            if !has_room {
                return Err(Error::Exhausted { family, pools: pools.iter().map(|p| p.cidr).collect() });
            }
        }
        Ok(())
    }
}

/// Compares and writes for one block: its own key, and the affinity of its host.
fn block_ops(block: &Block, revision: Option<i64>, compares: &mut Vec<Compare>, ops: &mut Vec<Op>) {
    let key = keys::block(&block.cidr);
    match revision {
        Some(r) => compares.push(Compare::Revision(key.clone(), r)),
        None => {
            compares.push(Compare::Absent(key.clone()));
            if let Some(host) = block.host() {
                compares.push(Compare::Absent(keys::affinity(host, &block.cidr)));
            }
        }
    }
    ops.push(Op::Put { key, value: store::encode(block) });
    if let Some(host) = block.host() {
        let hint = Affinity { state: "confirmed".into(), free: Some(block.free()) };
        ops.push(Op::Put { key: keys::affinity(host, &block.cidr), value: store::encode(&hint) });
    }
}

fn handle_state(id: &str, kv: Option<&KeyValue>) -> Result<HandleState, Error> {
    Ok(match kv {
        Some(kv) => HandleState { handle: store::decode(kv)?, revision: Some(kv.mod_revision) },
        None => HandleState { handle: Handle { id: id.to_owned(), ..Default::default() }, revision: None },
    })
}

/// The pools to allocate from: the requested ones (which must exist and be enabled), or
/// every enabled pool of the family.
fn select_pools(family: u8, wanted: &[IpNetwork], pools: &[Pool]) -> Result<Vec<Pool>, Error> {
    if wanted.is_empty() {
        let enabled: Vec<Pool> = pools.iter().filter(|p| !p.disabled).cloned().collect();
        return if enabled.is_empty() { Err(Error::NoPools { family }) } else { Ok(enabled) };
    }
    wanted
        .iter()
        .map(|cidr| {
            let p = pools.iter().find(|p| p.cidr == *cidr).ok_or(Error::PoolNotFound { cidr: *cidr })?;
            if p.disabled {
                return Err(Error::PoolDisabled { cidr: *cidr });
            }
            Ok(p.clone())
        })
        .collect()
}

/// The first block of `pool` that nobody has created yet.
fn first_free_block(pool: &Pool, existing: &HashSet<IpNetwork>) -> Option<IpNetwork> {
    let taken = existing.iter().filter(|c| pool.cidr.contains(c.network())).count() as u128;
    // At most `taken + 1` candidates need looking at.
    (0..=taken.min(pool.block_count().saturating_sub(1)))
        .filter_map(|i| net::nth_block(&pool.cidr, pool.block_size, i))
        .find(|c| !existing.contains(c))
}

/// Every block of a family, decoded, with revisions.
pub fn blocks_of(store: &dyn Datastore, family: u8) -> Result<Vec<(Block, i64)>, Error> {
    store.list(&keys::block_prefix(family))?.iter().map(|kv| Ok((store::decode(kv)?, kv.mod_revision))).collect()
}

/// The blocks inside `cidr`.
pub fn blocks_in(store: &dyn Datastore, cidr: &IpNetwork) -> Result<Vec<(Block, i64)>, Error> {
    Ok(blocks_of(store, keys::family_of(cidr))?.into_iter().filter(|(b, _)| cidr.contains(b.cidr.network())).collect())
}

fn family_of(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        4
    } else {
        6
    }
}

/// Sleep a random time that grows with the attempt, so racing writers spread out.
pub(crate) fn backoff(attempt: u32) {
    use std::hash::{BuildHasher, RandomState};
    let cap_us = 500u64 << attempt.min(6); // 1 ms .. 32 ms
    let jitter = RandomState::new().hash_one(attempt) % cap_us;
    std::thread::sleep(Duration::from_micros(jitter));
}

#[cfg(test)]
#[path = "allocator_tests.rs"]
mod tests;
