//! Assignment: a repeated request answered from the handle, specific addresses, and
//! automatic assignment from the cursor's block, another affine block, a newly claimed block,
//! or another host's block, in that order.

use std::collections::HashSet;
use std::net::IpAddr;

use datastore::{KeyValue, Read};
use ipnetwork::IpNetwork;

use super::{family_of, handle_state, Affinity, Assigned, BlockWrite, HandleState, Ipam, Owner, Prefetched, Request};
use model::block::{Attribute, Block};
use model::pool::Pool;
use model::{keys, net};

use crate::{pool, retry, store, Error};

/// What stays the same across the attempts of one family's automatic assignment.
struct Auto<'p> {
    family: u8,
    pools: &'p [Pool],
    owner: &'p Owner,
    attr: Attribute,
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
pub(super) fn cursor_of(kvs: &[KeyValue]) -> Option<IpNetwork> {
    serde_json::from_slice(&kvs.first()?.value).ok()
}

impl Ipam<'_> {
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

    /// Allocate one address of `family` from `pools`, retried while other writers win the
    /// race. `cursor` is this host's cursor block as the call's first round trip read it.
    pub(super) fn auto_assign(
        &self,
        family: u8,
        pools: &[Pool],
        mut cursor: Option<IpNetwork>,
        owner: &Owner,
        state: &mut HandleState,
        read_ahead: &mut Prefetched,
    ) -> Result<IpAddr, Error> {
        let auto = Auto { family, pools, owner, attr: owner.attribute(&self.host) };
        retry::with_backoff(
            || keys::block_prefix(family),
            |attempt| {
                if attempt > 0 {
                    // What the last attempt read is stale: read the handle and the cursor again.
                    read_ahead.clear();
                    let mut fresh = self.store.read_many(&[
                        Read::Key(keys::handle(&owner.handle)),
                        Read::Key(keys::cursor(&self.host, family)),
                    ])?;
                    cursor = cursor_of(&fresh.pop().unwrap_or_default());
                    *state = handle_state(&owner.handle, fresh.pop().unwrap_or_default().first())?;
                }
                self.auto_assign_once(&auto, cursor, state, read_ahead)
            },
        )
    }

    /// One attempt of [`Ipam::auto_assign`]: `None` when a concurrent writer won.
    fn auto_assign_once(
        &self,
        auto: &Auto,
        cursor: Option<IpNetwork>,
        state: &mut HandleState,
        read_ahead: &mut Prefetched,
    ) -> Result<Option<IpAddr>, Error> {
        let Auto { family, pools, owner, ref attr } = *auto;
        let in_pools = |c: &IpNetwork| pools.iter().any(|p| p.cidr.contains(c.network()));
        // 0. The block this host allocated from last: in the steady state it has room, and
        // nothing needs listing.
        let cursor = cursor.filter(|c| in_pools(c));
        if let Some(cidr) = cursor {
            match self.try_affine(cidr, attr, state, owner, read_ahead.remove(&cidr))? {
                Affine::Allocated(ip) => return Ok(Some(ip)),
                Affine::Conflict => return Ok(None),
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
            match self.try_affine(cidr, attr, state, owner, read_ahead.remove(&cidr))? {
                Affine::Allocated(ip) => return Ok(Some(ip)),
                Affine::Conflict => return Ok(None),
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
            let Some(ip) = block.allocate(attr) else {
                continue;
            };
            if self.commit(vec![BlockWrite { block, revision: None }], state, owner, 1)? {
                tracing::debug!(%cidr, host = %self.host, "claimed block");
                return Ok(Some(ip));
            }
            return Ok(None);
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
            let Some(ip) = block.allocate(attr) else {
                continue;
            };
            if self.commit(vec![BlockWrite { block, revision: Some(kv.mod_revision) }], state, owner, 1)? {
                tracing::debug!(%ip, %cidr, "borrowed an address from another host's block");
                return Ok(Some(ip));
            }
            return Ok(None);
        }
        Err(Error::Exhausted { family, pools: pools.iter().map(|p| p.cidr).collect() })
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
    pub(super) fn assign_ip(
        &self,
        ip: IpAddr,
        pools: &[Pool],
        owner: &Owner,
        state: &mut HandleState,
    ) -> Result<(), Error> {
        let pool = pools.iter().find(|p| p.cidr.contains(ip)).ok_or(Error::AddressNotInPool { ip })?;
        if pool.disabled {
            return Err(Error::PoolDisabled { cidr: pool.cidr });
        }
        let cidr = net::block_of(ip, pool.block_size);
        let attr = owner.attribute(&self.host);
        retry::with_backoff(
            || keys::block(&cidr),
            |attempt| {
                if attempt > 0 {
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
                Ok(self.commit(vec![BlockWrite { block, revision }], state, owner, 1)?.then_some(()))
            },
        )
    }
}

/// The pools to allocate from: the requested ones (which must exist and be enabled), or
/// every enabled pool of the family.
pub(super) fn select_pools(family: u8, wanted: &[IpNetwork], pools: &[Pool]) -> Result<Vec<Pool>, Error> {
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
