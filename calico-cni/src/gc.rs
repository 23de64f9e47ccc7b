//! GC: release what IPAM holds for attachments the runtime no longer knows, and remove their
//! endpoint records and host veths.

use std::collections::HashSet;

use cni::skel::Request;
use dataplane::Namespace;

use crate::context::Context;
use crate::endpoint;
use crate::Error;

pub fn gc(req: &Request) -> Result<(), Error> {
    let ctx = Context::load(req)?;
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
    ctx.ipam_gc(req)?;

    let host = Namespace::current().map_err(|source| Error::Dataplane {
        step: "opening the host netns",
        source,
    })?;
    for ep in endpoint::list(&*ctx.store, &ctx.node)? {
        if ep.network != ctx.conf.common.name
            || valid.contains(&(ep.container_id.clone(), ep.ifname.clone()))
        {
            continue;
        }
        let netns = std::path::Path::new(&ep.netns);
        dataplane::teardown(&host, &ep.host_veth, Some(netns), &ep.ifname).map_err(|source| {
            Error::Dataplane {
                step: "removing a stale veth",
                source,
            }
        })?;
        endpoint::delete(&*ctx.store, &ep.key())?;
        tracing::info!(container = %ep.container_id, ifname = %ep.ifname, host_veth = %ep.host_veth, "garbage collected");
    }
    Ok(())
}
