//! The transaction that writes an allocation: its blocks, the handle, this host's cursor,
//! and the default pool when the allocation is the first from it.

use datastore::{Compare, Op, TxnOutcome};

use super::{Affinity, BlockWrite, HandleState, Ipam, Owner};
use model::block::Block;
use model::keys;

use crate::{store, Error};

impl Ipam<'_> {
    /// Write blocks and the handle in one transaction. `added` addresses were allocated in
    /// the (single) block for `owner`. Returns false on a conflict.
    pub(super) fn commit(
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
            TxnOutcome::Committed { revision } => {
                *state = HandleState { handle, revision: Some(revision) };
                if let Some(pool) = self.default_pool.take() {
                    tracing::info!(cidr = %pool.cidr, "created the default IPv4 pool");
                    self.created_default_pool.set(true);
                }
                Ok(true)
            }
            TxnOutcome::Conflict => {
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
}

/// Compares and writes for one block: its own key, and the affinity of its host.
pub(super) fn block_ops(block: &Block, revision: Option<i64>, compares: &mut Vec<Compare>, ops: &mut Vec<Op>) {
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
