//! Giving addresses back: by handle (DEL), by address (`calicoctl ipam release`, and the undo
//! of a partial allocation), and GC of the attachments the runtime no longer knows.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use datastore::{Compare, KeyValue, Op, Read};
use ipnetwork::IpNetwork;

use super::commit::block_ops;
use model::block::Block;
use model::handle::{Handle, HANDLE_NODE};
use model::keys;

use super::{family_of, Ipam, Prefetched};
use crate::store::{self, BlockReads};
use crate::{retry, Error};

/// A released address and the handle that held it (`None`: no handle).
pub type Released = (IpAddr, Option<String>);

impl Ipam<'_> {
    /// Release every address of `handle_id`. Unknown handles are fine (returns nothing).
    pub fn release_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>, Error> {
        let key = keys::handle(handle_id);
        retry::with_backoff(|| key.clone(), |attempt| self.try_release_handle(handle_id, &key, attempt == 0))
    }

    /// One attempt of [`Ipam::release_handle`]: `None` when a concurrent writer won. The
    /// `first` attempt also reads the prefetched blocks.
    fn try_release_handle(&self, handle_id: &str, key: &str, first: bool) -> Result<Option<Vec<IpAddr>>, Error> {
        let mut prefetched = Prefetched::new();
        let kv = if first && !self.prefetch.is_empty() {
            let reads: Vec<Read> = std::iter::once(Read::Key(key.to_owned())).chain(self.prefetch_reads()).collect();
            let mut answers = self.store.read_many(&reads)?;
            prefetched = self.prefetched(answers.split_off(1.min(answers.len())));
            answers.pop().unwrap_or_default().into_iter().next()
        } else {
            self.store.get(key)?
        };
        let Some(kv) = kv else { return Ok(Some(Vec::new())) };
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
        let mut compares = vec![Compare::Revision(key.to_owned(), kv.mod_revision)];
        let mut ops = vec![Op::Delete { key: key.to_owned() }];
        for bkv in &blocks {
            let mut block: Block = store::decode(bkv)?;
            released.extend(block.release_handle(handle_id));
            block_ops(&block, Some(bkv.mod_revision), &mut compares, &mut ops);
        }
        Ok(self.store.txn(&compares, &ops)?.committed().then_some(released))
    }

    /// Release specific addresses, whatever handle holds them, fixing the handles' counts.
    /// Returns the handle of each released address; addresses not allocated are an error.
    pub fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<Released>, Error> {
        retry::with_backoff(|| "release".into(), |_| self.try_release_ips(ips))
    }

    /// One attempt of [`Ipam::release_ips`]: `None` when a concurrent writer won.
    fn try_release_ips(&self, ips: &[IpAddr]) -> Result<Option<Vec<Released>>, Error> {
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
        Ok(self.store.txn(&compares, &ops)?.committed().then_some(released))
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
}
