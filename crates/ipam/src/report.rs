//! Read-only views for operators: usage per pool and block (`ipam show`) and a consistency
//! check of blocks against handles (`ipam check`).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Serialize;

use datastore::Datastore;

use model::block::Block;
use model::endpoint::Endpoint;
use model::handle::{handle_id, Handle, HANDLE_NODE, HANDLE_PLUGIN, PLUGIN_CALICO_CNI};
use model::pool::Pool;
use model::{keys, net};

use crate::allocator::blocks_of;
use crate::pool;
use crate::{store, Error};

#[derive(Clone, Debug, Serialize)]
pub struct BlockUsage {
    pub cidr: IpNetwork,
    pub host: Option<String>,
    pub size: usize,
    pub used: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct PoolUsage {
    pub pool: Pool,
    /// Addresses in the pool.
    pub capacity: u128,
    pub used: usize,
    pub blocks: Vec<BlockUsage>,
}

/// Usage of every pool, with the blocks carved from it.
pub fn usage(store: &dyn Datastore) -> Result<Vec<PoolUsage>, Error> {
    let mut out = Vec::new();
    for family in [4, 6] {
        let blocks = blocks_of(store, family)?;
        for pool in pool::list(store, Some(family))? {
            let blocks: Vec<BlockUsage> = blocks
                .iter()
                .filter(|(b, _)| pool.cidr.contains(b.cidr.network()))
                .map(|(b, _)| BlockUsage {
                    cidr: b.cidr,
                    host: b.host().map(str::to_owned),
                    size: b.size(),
                    used: b.used(),
                })
                .collect();
            out.push(PoolUsage {
                capacity: net::size(&pool.cidr),
                used: blocks.iter().map(|b| b.used).sum(),
                blocks,
                pool,
            });
        }
    }
    Ok(out)
}

/// What `ipam check` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub blocks: usize,
    pub handles: usize,
    pub allocations: usize,
    /// Endpoint records cross-checked ([`check_endpoints`]).
    pub endpoints: usize,
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Cross-check blocks, handles and affinities: allocations without a handle, handles without
/// an allocation, counts that disagree, blocks outside every pool, dangling affinities.
pub fn check(store: &dyn Datastore) -> Result<CheckReport, Error> {
    let mut report = CheckReport::default();
    let pools = pool::list(store, None)?;
    let mut blocks: Vec<Block> = Vec::new();
    for family in [4, 6] {
        blocks.extend(blocks_of(store, family)?.into_iter().map(|(b, _)| b));
    }
    let handles: BTreeMap<String, Handle> = store
        .list(keys::HANDLE_PREFIX)?
        .iter()
        .map(|kv| store::decode::<Handle>(kv).map(|h| (h.id.clone(), h)))
        .collect::<Result<_, _>>()?;
    report.blocks = blocks.len();
    report.handles = handles.len();

    // Actual counts per (handle, block), from the blocks.
    let mut actual: BTreeMap<(String, String), u32> = BTreeMap::new();
    for block in &blocks {
        let cidr = block.cidr.to_string();
        report.problems.extend(block.problems().into_iter().map(|p| format!("block {cidr}: {p}")));
        if !pools.iter().any(|p| p.cidr.contains(block.cidr.network())) {
            report.problems.push(format!("block {cidr} lies in no IP pool"));
        }
        if let Some(host) = block.host() {
            if store.get(&keys::affinity(host, &block.cidr))?.is_none() {
                report.problems.push(format!("block {cidr} is affine to {host} but {host} has no affinity for it"));
            }
        }
        for (handle, n) in block.counts_by_handle() {
            report.allocations += n;
            match handle {
                None => report.problems.push(format!("block {cidr}: {n} allocation(s) without a handle")),
                Some(h) => {
                    if !handles.contains_key(&h) {
                        report
                            .problems
                            .push(format!("block {cidr}: {n} allocation(s) of handle {h}, which does not exist"));
                    }
                    actual.insert((h, cidr.clone()), n as u32);
                }
            }
        }
    }
    for handle in handles.values() {
        if handle.block.is_empty() {
            report.problems.push(format!("handle {} holds no allocation", handle.id));
        }
        for (cidr, n) in &handle.block {
            let found = actual.get(&(handle.id.clone(), cidr.clone())).copied().unwrap_or(0);
            if found == 0 {
                report.problems.push(format!("handle {} has no allocation in block {cidr}", handle.id));
            } else if found != *n {
                report
                    .problems
                    .push(format!("handle {} counts {n} in block {cidr}, the block holds {found}", handle.id));
            }
        }
    }
    for ((h, cidr), _) in actual.iter().filter(|((h, c), _)| handles.get(h).is_some_and(|hd| !hd.block.contains_key(c)))
    {
        report.problems.push(format!("handle {h} does not count its allocation in block {cidr}"));
    }
    // Affinities whose block is gone.
    for kv in store.list(keys::IPAM_HOST_PREFIX)? {
        if let Some(cidr) = keys::cidr_of_key(&kv.key) {
            if !blocks.iter().any(|b| b.cidr == cidr) {
                report.problems.push(format!("affinity {} names a block that does not exist", kv.key));
            }
        }
    }
    Ok(report)
}

/// Every workload endpoint record of every node.
pub fn endpoints(store: &dyn Datastore) -> Result<Vec<Endpoint>, Error> {
    store.list(keys::ENDPOINT_HOST_PREFIX)?.iter().filter(|kv| keys::is_endpoint(&kv.key)).map(store::decode).collect()
}

/// Cross-check endpoint records (calico-cni writes one per attachment it sets up) against
/// allocations, both ways:
/// - every address of an endpoint that lies in an IP pool must be allocated to the
///   endpoint's handle (an address outside every pool came from another IPAM plugin, such
///   as host-local, and is not ours to check);
/// - every handle recorded as allocated for calico-cni ([`HANDLE_PLUGIN`]) must have the
///   endpoint record of its attachment on its node. calico-ipam's own allocations (used
///   standalone or by other plugins, e.g. chained with ptp) never get an endpoint record,
///   nor are handles of older versions marked, so neither is flagged.
///
/// An ADD or DEL in progress between its two writes shows up once; run the check again.
pub fn check_endpoints(store: &dyn Datastore, endpoints: &[Endpoint], report: &mut CheckReport) -> Result<(), Error> {
    let pools = pool::list(store, None)?;
    let mut holders: BTreeMap<IpAddr, Option<String>> = BTreeMap::new();
    for family in [4, 6] {
        for (block, _) in blocks_of(store, family)? {
            holders.extend(block.allocated().map(|(ip, h)| (ip, h.map(str::to_owned))));
        }
    }
    let mut attached: HashSet<(String, String)> = HashSet::new();
    for ep in endpoints {
        let handle = handle_id(&ep.network, &ep.container_id, &ep.ifname);
        let key = ep.key();
        for ip in ep.addresses().iter().filter(|ip| pools.iter().any(|p| p.cidr.contains(**ip))) {
            match holders.get(ip) {
                None => report.problems.push(format!("endpoint {key} holds {ip}, which is not allocated")),
                Some(h) if h.as_deref() != Some(handle.as_str()) => report.problems.push(format!(
                    "endpoint {key} holds {ip}, which is allocated to handle {}",
                    h.as_deref().unwrap_or("(none)")
                )),
                Some(_) => {}
            }
        }
        attached.insert((ep.node.clone(), handle));
    }
    for kv in store.list(keys::HANDLE_PREFIX)? {
        let handle: Handle = store::decode(&kv)?;
        if handle.attributes.get(HANDLE_PLUGIN).map(String::as_str) != Some(PLUGIN_CALICO_CNI) {
            continue;
        }
        let attr = |k: &str| handle.attributes.get(k).cloned().unwrap_or_default();
        if !attached.contains(&(attr(HANDLE_NODE), handle.id.clone())) {
            report.problems.push(format!(
                "handle {} (container {}, interface {}, node {}) was allocated for calico-cni, but its endpoint record is gone",
                handle.id,
                attr("container_id"),
                attr("ifname"),
                attr(HANDLE_NODE)
            ));
        }
    }
    report.endpoints = endpoints.len();
    Ok(())
}
