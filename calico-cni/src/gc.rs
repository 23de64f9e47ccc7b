//! GC: release what IPAM holds for attachments the runtime no longer knows, and remove their
//! endpoint records and host veths.

use std::collections::HashSet;

use cni::skel::Request;

use crate::context::Context;
use crate::del::remove_veth;
use crate::deps::{Dataplane, Deps};
use crate::endpoint;
use crate::Error;

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
        endpoint::delete(deps.store, &ep.key())?;
        tracing::info!(container = %ep.container_id, ifname = %ep.ifname, host_veth = %ep.host_veth, "garbage collected");
    }
    Ok(())
}
