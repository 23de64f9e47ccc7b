//! Adding, listing and removing IP pools ([`model::pool::Pool`]).

use ipnetwork::IpNetwork;

use datastore::{Compare, Datastore, Op};
use model::handle::Handle;
use model::pool::Pool;
use model::{keys, net};

use crate::{store, Error};

/// Created at the first IPv4 ADD when no IPv4 pool exists, as Calico does.
pub const DEFAULT_V4_POOL: &str = "192.168.0.0/16";

/// Reject a pool that can never work ([`Pool::invalid_reason`]).
pub fn validate(pool: &Pool) -> Result<(), Error> {
    match pool.invalid_reason() {
        Some(reason) => Err(Error::InvalidPool { cidr: pool.cidr.to_string(), reason }),
        None => Ok(()),
    }
}

/// Every pool of `family` (4, 6), or of both when `None`, in key order.
pub fn list(store: &dyn Datastore, family: Option<u8>) -> Result<Vec<Pool>, Error> {
    let families: &[u8] = match family {
        Some(4) => &[4],
        Some(_) => &[6],
        None => &[4, 6],
    };
    let mut pools = Vec::new();
    for f in families {
        pools.extend(decode_all(&store.list(&keys::pool_prefix(*f))?)?);
    }
    Ok(pools)
}

pub(crate) fn decode_all(kvs: &[datastore::KeyValue]) -> Result<Vec<Pool>, Error> {
    kvs.iter().map(store::decode).collect()
}

/// Add a pool, refusing invalid CIDRs and overlap with any existing pool.
pub fn add(store: &dyn Datastore, pool: &Pool) -> Result<(), Error> {
    validate(pool)?;
    let existing = list(store, Some(pool.family()))?;
    if let Some(p) = existing.iter().find(|p| p.cidr == pool.cidr) {
        return Err(Error::PoolExists { cidr: p.cidr });
    }
    if let Some(p) = existing.iter().find(|p| net::overlaps(&p.cidr, &pool.cidr)) {
        return Err(Error::PoolOverlap { cidr: pool.cidr, existing: p.cidr });
    }
    // Creating under "absent" makes two concurrent adds of one CIDR safe; the overlap check
    // above is advisory for different CIDRs, which is acceptable for an admin operation.
    store.create(&keys::pool(&pool.cidr), store::encode(pool)).map_err(|e| match e {
        datastore::Error::Conflict { .. } => Error::PoolExists { cidr: pool.cidr },
        e => e.into(),
    })?;
    Ok(())
}

/// Calico's default IPv4 pool ([`DEFAULT_V4_POOL`], nat-outgoing), which the allocator
/// creates with the first allocation from it when no IPv4 pool exists.
pub fn default_v4() -> Pool {
    let cidr = DEFAULT_V4_POOL.parse().expect("DEFAULT_V4_POOL is a valid CIDR");
    Pool { nat_outgoing: true, ..Pool::new(cidr) }
}

/// Remove a pool with its blocks and affinities. Refuses while addresses are allocated from
/// it, unless `force`, which also drops those allocations from their handles.
pub fn remove(store: &dyn Datastore, cidr: &IpNetwork, force: bool) -> Result<usize, Error> {
    crate::retry::with_backoff(|| keys::pool(cidr), |_| try_remove(store, cidr, force))
}

/// One attempt of [`remove`]; `None` when a concurrent writer changed what it read.
fn try_remove(store: &dyn Datastore, cidr: &IpNetwork, force: bool) -> Result<Option<usize>, Error> {
    let key = keys::pool(cidr);
    let Some(pool_kv) = store.get(&key)? else {
        return Err(Error::PoolNotFound { cidr: *cidr });
    };
    let blocks = crate::allocator::blocks_in(store, cidr)?;
    let in_use: usize = blocks.iter().map(|(b, _)| b.used()).sum();
    if in_use > 0 && !force {
        return Err(Error::PoolInUse { cidr: *cidr, in_use });
    }
    let mut compares = vec![Compare::Revision(key.clone(), pool_kv.mod_revision)];
    let mut ops = vec![Op::Delete { key }];
    for (block, rev) in &blocks {
        compares.push(Compare::Revision(keys::block(&block.cidr), *rev));
        ops.push(Op::Delete { key: keys::block(&block.cidr) });
        if let Some(host) = block.host() {
            ops.push(Op::Delete { key: keys::affinity(host, &block.cidr) });
        }
    }
    // Allocation cursors (hints) that point into the pool go too.
    for kv in store.list(keys::IPAM_HOST_PREFIX)? {
        let points_here = serde_json::from_slice::<IpNetwork>(&kv.value).is_ok_and(|c| cidr.contains(c.network()));
        if keys::is_cursor(&kv.key) && points_here {
            ops.push(Op::Delete { key: kv.key });
        }
    }
    // Handles that pointed into the pool lose those entries.
    let dropped: Vec<IpNetwork> = blocks.iter().map(|(b, _)| b.cidr).collect();
    for kv in store.list(keys::HANDLE_PREFIX)? {
        let mut handle: Handle = store::decode(&kv)?;
        let before = handle.block.len();
        handle.block.retain(|c, _| !dropped.iter().any(|d| d.to_string() == *c));
        if handle.block.len() != before {
            compares.push(Compare::Revision(kv.key.clone(), kv.mod_revision));
            ops.push(if handle.block.is_empty() {
                Op::Delete { key: kv.key }
            } else {
                Op::Put { key: kv.key, value: store::encode(&handle) }
            });
        }
    }
    Ok(store.txn(&compares, &ops)?.committed().then_some(in_use))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore::memory::MemoryStore;
    use model::pool::DEFAULT_V4_BLOCK;

    fn cidr(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn add_rejects_invalid_and_overlapping() {
        let s = MemoryStore::new();
        add(&s, &Pool::new(cidr("10.0.0.0/16"))).unwrap();
        assert!(matches!(add(&s, &Pool::new(cidr("10.0.1.0/24"))), Err(Error::PoolOverlap { .. })));
        assert!(matches!(add(&s, &Pool::new(cidr("10.0.0.0/16"))), Err(Error::PoolExists { .. })));
        assert!(matches!(add(&s, &Pool::new(cidr("10.1.0.1/16"))), Err(Error::InvalidPool { .. })));
        let mut small = Pool::new(cidr("10.2.0.0/28"));
        assert!(matches!(add(&s, &small), Err(Error::InvalidPool { .. })), "block larger than pool");
        small.block_size = 29;
        add(&s, &small).unwrap();
        add(&s, &Pool::new(cidr("fd00::/48"))).unwrap();
        assert_eq!(list(&s, None).unwrap().len(), 3);
        assert_eq!(list(&s, Some(6)).unwrap().len(), 1);
    }

    #[test]
    fn removal_retries_a_conflict() {
        let s = MemoryStore::new();
        add(&s, &Pool::new(cidr("10.0.0.0/16"))).unwrap();
        s.conflict_next_txns(2);
        assert_eq!(remove(&s, &cidr("10.0.0.0/16"), false).unwrap(), 0);
        assert!(list(&s, None).unwrap().is_empty());
        assert!(matches!(remove(&s, &cidr("10.0.0.0/16"), false), Err(Error::PoolNotFound { .. })));
    }

    #[test]
    fn default_pool_is_calicos() {
        let p = default_v4();
        assert_eq!(p.cidr, cidr(DEFAULT_V4_POOL));
        assert!(p.nat_outgoing);
        assert_eq!(p.block_size, DEFAULT_V4_BLOCK);
        validate(&p).unwrap();
    }
}
