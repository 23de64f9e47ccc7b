//! GC: release what IPAM holds for attachments the runtime no longer knows, and remove their
//! endpoint records, host veths and port mappings.

use std::collections::HashSet;

use cni::skel::Request;

use crate::context::Context;
use crate::del::remove_veth;
use crate::deps::{Dataplane, Deps};
use crate::Error;
use crate::{edge, endpoint};

pub fn gc<D: Dataplane>(req: &Request, ctx: &Context, deps: &Deps<'_, D>) -> Result<(), Error> {
    let valid: HashSet<(String, String)> = ctx
        .conf
        .common
        .valid_attachments
        .as_ref()
        .ok_or_else(|| cni::Error::InvalidConfig {
            field: "cni.dev/valid-attachments".into(),
            reason: "GC needs the list of valid attachments".into(),
        })?
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    deps.ipam.gc(req)?;

    for ep in endpoint::list(deps.store, &ctx.node)? {
        if ep.network != ctx.conf.common.name || valid.contains(&(ep.container_id.clone(), ep.ifname.clone())) {
            continue;
        }
        let netns = std::path::Path::new(&ep.netns);
        remove_veth(deps.dataplane, &ep.host_veth, Some(netns), &ep.ifname)
            .map_err(|source| Error::Dataplane { step: "removing a stale veth", source })?;
        let ports = edge::port_elements(&ep.port_mappings, &edge::owner(&ep.network, &ep.container_id, &ep.ifname));
        if !ports.is_empty() {
            deps.firewall.remove(&ports).map_err(edge::error("removing stale port mappings"))?;
        }
        deps.firewall.detach_policy(&ep.host_veth, &ep.addresses()).map_err(edge::error("removing stale profiles"))?;
        endpoint::delete(deps.store, &ep.key())?;
        tracing::info!(container = %ep.container_id, ifname = %ep.ifname, host_veth = %ep.host_veth, "garbage collected");
    }
    // Mappings of this network's attachments that left no record (an ADD killed after the
    // firewall step): found by their owner.
    let prefix = format!("{}/", ctx.conf.common.name);
    let stale: Vec<_> = deps
        .firewall
        .list()
        .map_err(edge::error("listing the port mappings"))?
        .into_iter()
        .filter(|e| {
            e.owner()
                .and_then(|o| o.strip_prefix(&prefix))
                .and_then(|o| o.rsplit_once('/'))
                .is_some_and(|(id, ifname)| !valid.contains(&(id.to_owned(), ifname.to_owned())))
        })
        .collect();
    if !stale.is_empty() {
        deps.firewall.remove(&stale).map_err(edge::error("removing stale port mappings"))?;
    }
    Ok(())
}
