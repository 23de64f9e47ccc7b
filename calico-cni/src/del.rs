//! DEL: release the addresses, drop the endpoint record, delete the veth (its routes go with
//! it). Idempotent: succeeds when CNI_NETNS is empty, when the netns is gone, and when run
//! again. What can never succeed on a retry (an unusable CNI_NETNS, the plugin's own netns,
//! CNI_IFNAME `lo`, a corrupt endpoint record) is logged and cleaned up around.

use std::path::Path;

use cni::skel::Request;

use crate::context::Context;
use crate::deps::{Dataplane, Deps};
use crate::Error;
use crate::{edge, endpoint};

pub fn del<D: Dataplane>(req: &Request, ctx: &Context, deps: &Deps<'_, D>) -> Result<(), Error> {
    // Addresses first: if this fails (store down) the runtime retries the whole DEL, and an
    // address is never leaked behind a success.
    deps.ipam.del(req)?;

    let key = ctx.endpoint_key(req);
    let netns = req.env.netns.as_deref();
    let removing = |source| Error::Dataplane { step: "removing the veth", source };
    let record = match endpoint::get(deps.store, &key) {
        // Unreadable on every retry: drop it, and find the host veth by its name, which
        // derives from the workload.
        Err(Error::CorruptEndpoint { key, source }) => {
            tracing::warn!(%key, error = %source, "deleting a corrupt workload endpoint record");
            endpoint::delete(deps.store, &key)?;
            None
        }
        other => other?,
    };
    match record {
        // A later sandbox of the same pod owns the record and the host veth now: only
        // clean up what belonged to this container.
        Some(ep) if ep.container_id != req.env.container_id => {
            tracing::info!(%key, owner = %ep.container_id, "endpoint belongs to a newer sandbox; leaving it");
            if let Some(container) = netns.and_then(|path| deps.dataplane.open_netns_for_teardown(path)) {
                deps.dataplane.delete_container_link(&container, &req.env.ifname);
            }
        }
        Some(ep) => {
            // The mappings first: while the record is there, a failed DEL is retried with it.
            let owner = edge::owner(&ep.network, &ep.container_id, &ep.ifname);
            let ports = edge::port_elements(&ep.port_mappings, &owner);
            if !ports.is_empty() {
                deps.firewall.remove(&ports).map_err(edge::error("removing the port mappings"))?;
            }
            endpoint::delete(deps.store, &key)?;
            remove_veth(deps.dataplane, &ep.host_veth, netns, &req.env.ifname).map_err(removing)?;
        }
        None => {
            // No record (an ADD that died before writing it): what it may have mapped is
            // found by its owner, only when the runtime says there were mappings.
            if !ctx.conf.common.runtime_config.port_mappings.is_empty() {
                let owner = edge::owner(&ctx.conf.common.name, &req.env.container_id, &req.env.ifname);
                let ours: Vec<_> = deps
                    .firewall
                    .list()
                    .map_err(edge::error("listing the port mappings"))?
                    .into_iter()
                    .filter(|e| e.owner() == Some(owner.as_str()))
                    .collect();
                deps.firewall.remove(&ours).map_err(edge::error("removing the port mappings"))?;
            }
            remove_veth(deps.dataplane, &ctx.host_veth(req), netns, &req.env.ifname).map_err(removing)?
        }
    }
    tracing::info!(container = %req.env.container_id, "workload detached");
    Ok(())
}

/// Deletes the host end `host_veth`, which takes its routes and its peer, the container end,
/// along. Only when there was no host end (an ADD that died half-way, a host end removed by
/// hand) does it look into `netns`, if that is a container netns that still exists, and
/// delete `ifname` there. Succeeds when all is gone already, and when `netns` is `None`,
/// empty, unusable or gone.
pub fn remove_veth<D: Dataplane>(dp: &D, host_veth: &str, netns: Option<&Path>, ifname: &str) -> dataplane::Result<()> {
    if dp.delete_host_link_detached(host_veth)? {
        tracing::debug!(host_veth, "host veth deleted, and its container end with it");
        return Ok(());
    }
    if let Some(container) = netns.and_then(|path| dp.open_netns_for_teardown(path)) {
        let deleted = dp.delete_container_link(&container, ifname);
        tracing::debug!(ifname, deleted, "no host veth; container interface teardown");
    }
    Ok(())
}
