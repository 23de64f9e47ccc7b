//! One more address for a container that calico-cni attached, and its removal
//! (`calicoctl container <C> ip add|remove`), run on the container's host.
//!
//! `ip add` goes IPAM (under the attachment's own handle, so DEL releases it with the
//! rest), the address in the container, the host route, the tag sets of its profiles (and
//! its pool in the pool sets), and last the endpoint record, written only if nobody changed
//! it meanwhile. Each step pushes its undo, so a failure anywhere (an interface missing in
//! the container, a record changed under us) leaves nothing behind: Calico's v0.x looked at
//! the interface only after writing the datastore, and leaked the address.
//!
//! `ip remove` is the exact reverse: the record first (the address stops being the
//! container's), then the tag sets, the route, the address, and IPAM last.

use std::net::IpAddr;
use std::path::Path;

use cni::{CniResult, IpConfig};
use dataplane::Rollback;
use datastore::{Compare, Datastore, Op};
use ipam::Ipam;
pub use ipam::More;
use model::endpoint::Endpoint;
use model::handle::handle_id;

use crate::deps::Dataplane;
use crate::linux::Linux;
use crate::{edge, profile, Error};

/// What `ip add` and `ip remove` act through.
pub struct Tools<'a, D> {
    pub dataplane: &'a D,
    pub store: &'a dyn Datastore,
    pub firewall: &'a dyn firewall::Firewall,
}

/// An endpoint record as read, with the revision its rewrite is conditional on.
#[derive(Clone, Debug)]
pub struct Record {
    pub endpoint: Endpoint,
    pub revision: i64,
}

/// [`add`] on this host's kernel and nftables.
pub fn add_here(store: &dyn Datastore, record: &Record, more: More) -> Result<(IpAddr, Endpoint), Error> {
    let firewall = firewall::nft::Nftables::new();
    add(&Tools { dataplane: &Linux::new(), store, firewall: &firewall }, record, more)
}

/// [`remove`] on this host's kernel and nftables.
pub fn remove_here(store: &dyn Datastore, record: &Record, ip: IpAddr) -> Result<Endpoint, Error> {
    let firewall = firewall::nft::Nftables::new();
    remove(&Tools { dataplane: &Linux::new(), store, firewall: &firewall }, record, ip)
}

/// Adds one address to `record`'s container: the one `more` names, or one from its family
/// or pool. Returns the address and the record as written.
pub fn add<D: Dataplane>(tools: &Tools<'_, D>, record: &Record, more: More) -> Result<(IpAddr, Endpoint), Error> {
    let ep = &record.endpoint;
    let held = ep.addresses();
    if let More::Ip(ip) = more {
        if held.contains(&ip) {
            return Err(Error::Refused(format!("container {} already has address {ip}", ep.container_id)));
        }
    }
    here(tools.dataplane, ep)?;
    let container = open(tools.dataplane, ep)?;
    let mut undo = Rollback::new();
    match add_steps(tools, record, more, &container, &mut undo) {
        Ok(done) => {
            undo.disarm();
            Ok(done)
        }
        Err(error) => Err(Error::rolled_back(error, undo.rollback())),
    }
}

fn add_steps<'a, D: Dataplane>(
    tools: &'a Tools<'a, D>,
    record: &Record,
    more: More,
    container: &'a D::Netns,
    undo: &mut Rollback<'a>,
) -> Result<(IpAddr, Endpoint), Error> {
    let ep = &record.endpoint;
    let dp = tools.dataplane;
    let handle = handle_id(&ep.network, &ep.container_id, &ep.ifname);
    let ipam = Ipam::new(tools.store, ep.node.clone());
    let assigned = match ipam.assign_more(&handle, more) {
        Ok(a) => a,
        Err(ipam::Error::HandleNotFound { .. }) => {
            return Err(Error::Refused(format!(
                "container {}'s addresses did not come from calico-ipam (no IPAM handle {handle}), so Calico cannot \
                 add one",
                ep.container_id
            )))
        }
        Err(ipam::Error::AddressInUse { ip }) => {
            let pool = ipam::pool::list(tools.store, Some(if ip.is_ipv4() { 4 } else { 6 }))?
                .into_iter()
                .find(|p| p.cidr.contains(ip))
                .map_or_else(|| "?".to_owned(), |p| p.cidr.to_string());
            return Err(Error::Refused(format!("IP address {ip} is already assigned in pool {pool}.")));
        }
        Err(e) => return Err(e.into()),
    };
    let ip = assigned.ip;
    let store = tools.store;
    undo.push("releasing the address in IPAM", move || Ipam::new(store, "").release_ips(&[ip]).map(drop));

    let new_family = !ep.addresses().iter().any(|a| a.is_ipv4() == ip.is_ipv4());
    let step = |step: &'static str| move |source| Error::Dataplane { step, source };
    dp.add_container_address(container, &ep.ifname, ip, new_family)
        .map_err(step("adding the address in the container"))?;
    let ifname = ep.ifname.clone();
    undo.push("removing the address in the container", move || {
        // With the family's gateway route and neighbour entry, if this address brought them.
        dp.remove_container_address(container, &ifname, ip, new_family).map(drop)
    });
    if dp.add_host_address_route(&ep.host_veth, ip, new_family).map_err(step("adding the host route"))? {
        let veth = ep.host_veth.clone();
        undo.push("removing the host route", move || dp.remove_host_address_route(&veth, ip).map(drop));
    }

    // The address joins the tag sets of the endpoint's profiles; its pool, the pool sets
    // (shared, so never undone).
    let mut addrs = ep.addresses();
    addrs.push(ip);
    let profiles = profile::read(tools.store, &ep.profiles)?;
    let member = firewall::policy::Endpoint {
        veth: ep.host_veth.clone(),
        addrs,
        profiles: profiles.iter().map(|p| p.name.clone()).collect(),
    };
    let fw = tools.firewall;
    fw.attach_policy(&member, &profiles).map_err(edge::error("adding the address to the profiles' tags"))?;
    undo.push("removing the address from the tag sets", move || fw.forget_addresses(&[ip]));
    let pool_elements = edge::pool_elements(&[assigned.pool], &[ip]);
    let missing = fw.missing(&pool_elements).map_err(edge::error("checking the pool sets"))?;
    if !missing.is_empty() {
        fw.add(&missing).map_err(edge::error("adding the pool"))?;
    }

    let mut updated = ep.clone();
    updated.ips.push(dataplane::workload::host_prefix(ip).to_string());
    updated.result = with_result_ips(&ep.result, |ips| {
        ips.push(IpConfig {
            address: ip.into(),
            gateway: None,
            interface: Some(interface_index(&ep.result, &ep.ifname)),
        })
    })?;
    rewrite(tools.store, record, &updated)?;
    tracing::info!(container = %ep.container_id, %ip, "address added");
    Ok((ip, updated))
}

/// Removes `ip` from `record`'s container. Refused for an address the container does not
/// hold, its last address, and an address a port mapping forwards to.
pub fn remove<D: Dataplane>(tools: &Tools<'_, D>, record: &Record, ip: IpAddr) -> Result<Endpoint, Error> {
    let ep = &record.endpoint;
    here(tools.dataplane, ep)?;
    let held = ep.addresses();
    if !held.contains(&ip) {
        return Err(Error::Refused(format!("container {} does not have address {ip}", ep.container_id)));
    }
    if held.len() == 1 {
        return Err(Error::Refused(format!(
            "{ip} is container {}'s only address; its runtime removes the container's network (CNI DEL)",
            ep.container_id
        )));
    }
    if let Some(m) = ep.port_mappings.iter().find(|m| m.container_ip == ip) {
        return Err(Error::Refused(format!(
            "host port {}/{} forwards to {ip}; the container's runtime set that mapping up",
            m.host_port, m.protocol
        )));
    }
    let container = tools.dataplane.open_netns_for_teardown(Path::new(&ep.netns));
    let mut updated = ep.clone();
    let prefix = dataplane::workload::host_prefix(ip).to_string();
    updated.ips.retain(|a| a != &prefix && a != &ip.to_string());
    updated.result = with_result_ips(&ep.result, |ips| ips.retain(|c| c.address.ip() != ip))?;

    let mut undo = Rollback::new();
    let outcome = (|| -> Result<(), Error> {
        let written = rewrite(tools.store, record, &updated)?;
        let (store, original) = (tools.store, ep.clone());
        let back = Record { endpoint: updated.clone(), revision: written };
        undo.push("restoring the endpoint record", move || rewrite(store, &back, &original).map(drop));
        let fw = tools.firewall;
        fw.forget_addresses(&[ip]).map_err(edge::error("removing the address from the tag sets"))?;
        let dp = tools.dataplane;
        let step = |step: &'static str| move |source| Error::Dataplane { step, source };
        if dp.remove_host_address_route(&ep.host_veth, ip).map_err(step("removing the host route"))? {
            let veth = ep.host_veth.clone();
            undo.push("restoring the host route", move || dp.add_host_address_route(&veth, ip, false).map(drop));
        }
        if let Some(container) = &container {
            let last_of_family = !held.iter().any(|a| *a != ip && a.is_ipv4() == ip.is_ipv4());
            let removed = dp
                .remove_container_address(container, &ep.ifname, ip, last_of_family)
                .map_err(step("removing the address"))?;
            if removed {
                let ifname = ep.ifname.clone();
                undo.push("restoring the address in the container", move || {
                    dp.add_container_address(container, &ifname, ip, last_of_family)
                });
            }
        }
        Ipam::new(tools.store, ep.node.clone()).release_ips(&[ip])?;
        Ok(())
    })();
    match outcome {
        Ok(()) => {
            undo.disarm();
            tracing::info!(container = %ep.container_id, %ip, "address removed");
            Ok(updated)
        }
        Err(error) => Err(Error::rolled_back(error, undo.rollback())),
    }
}

/// Refused unless the endpoint's host veth is in this netns: calicoctl must run on the
/// container's host (another host's route table is not ours to change).
fn here<D: Dataplane>(dp: &D, ep: &Endpoint) -> Result<(), Error> {
    let found =
        dp.has_host_link(&ep.host_veth).map_err(|source| Error::Dataplane { step: "finding the host veth", source })?;
    if found {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "container {}'s host interface {} is not on this host: run this on its node, {}",
        ep.container_id, ep.host_veth, ep.node
    )))
}

fn open<D: Dataplane>(dp: &D, ep: &Endpoint) -> Result<D::Netns, Error> {
    dp.open_netns(Path::new(&ep.netns)).map_err(|source| Error::Netns { path: ep.netns.clone(), source })
}

/// The stored result with its `ips` changed by `change`.
fn with_result_ips(
    result: &serde_json::Value,
    change: impl FnOnce(&mut Vec<IpConfig>),
) -> Result<serde_json::Value, Error> {
    let mut parsed = CniResult::from_json(result)?;
    change(&mut parsed.ips);
    Ok(parsed.to_json(cni::Version::LATEST))
}

/// The index of the container interface in the stored result (1 as ADD writes it).
fn interface_index(result: &serde_json::Value, ifname: &str) -> usize {
    CniResult::from_json(result)
        .ok()
        .and_then(|r| r.interfaces.iter().position(|i| i.name == ifname && i.sandbox.is_some()))
        .unwrap_or(1)
}

/// Writes `updated` over `record` if the record is still at its revision. The new revision.
fn rewrite(store: &dyn Datastore, record: &Record, updated: &Endpoint) -> Result<i64, Error> {
    let key = record.endpoint.key();
    let compares = [Compare::Revision(key.clone(), record.revision)];
    match store.txn(&compares, &[Op::Put { key: key.clone(), value: model::encode(updated) }])? {
        datastore::TxnOutcome::Committed { revision } => Ok(revision),
        datastore::TxnOutcome::Conflict => Err(Error::EndpointChanged { key }),
    }
}
