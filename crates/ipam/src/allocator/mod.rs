//! The allocator: Calico's block/affinity/handle algorithm over the [`Datastore`] trait.
//!
//! Every write is one transaction that compares the revisions it read, so processes on many
//! hosts can allocate at once: a block claim creates the block and its affinity together
//! (both must be absent), and an allocation rewrites the block and the handle together. A
//! process killed at any instant therefore leaves either all or nothing of a step — never an
//! address without its handle. Conflicts retry with jittered backoff, a bounded number of
//! times (`retry.rs`, shared with the pool removal).
//!
//! The affinity value carries a hint of how many addresses the block has free, written in
//! the same transaction as the block, so that a host with many full blocks finds the one with
//! room without reading them all.
//!
//! One file per job: [`Ipam::assign`] in `assign.rs`, [`Ipam::release_handle`],
//! [`Ipam::release_ips`] and [`Ipam::gc`] in `release.rs`, and the transaction that writes an
//! allocation in `commit.rs`; this file holds the types they share and the read-only calls.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use datastore::{Datastore, KeyValue, Read};
use model::affinity::Affinity;
use model::block::{Attribute, Block};
use model::handle::{Handle, HANDLE_NODE, HANDLE_PLUGIN};
use model::keys;
use model::pool::Pool;

use crate::store::{self, BlockReads};
use crate::{pool, Error};

mod assign;
mod commit;
mod more;
mod release;

pub use more::More;
pub use release::Released;

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

fn handle_state(id: &str, kv: Option<&KeyValue>) -> Result<HandleState, Error> {
    Ok(match kv {
        Some(kv) => HandleState { handle: store::decode(kv)?, revision: Some(kv.mod_revision) },
        None => HandleState { handle: Handle { id: id.to_owned(), ..Default::default() }, revision: None },
    })
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

#[cfg(test)]
mod tests;
