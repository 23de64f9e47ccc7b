//! DEL: release the addresses, drop the endpoint record, delete the veth (its routes go with
//! it). Idempotent: succeeds when CNI_NETNS is empty, when the netns is gone, and when run
//! again. What can never succeed on a retry (an unusable CNI_NETNS, the plugin's own netns,
//! CNI_IFNAME `lo`, a corrupt endpoint record) is logged and cleaned up around.

use cni::skel::Request;
use dataplane::Namespace;

use crate::context::Context;
use crate::endpoint;
use crate::Error;

pub fn del(req: &Request) -> Result<(), Error> {
    let ctx = Context::load(req)?;
    // Addresses first: if this fails (store down) the runtime retries the whole DEL, and an
    // address is never leaked behind a success.
    ctx.ipam_del(req)?;

    let key = ctx.endpoint_key(req);
    let dp = |step: &'static str| move |source| Error::Dataplane { step, source };
    let host = Namespace::current().map_err(dp("opening the host netns"))?;
    let netns = req.env.netns.as_deref();
    let record = match endpoint::get(&*ctx.store, &key) {
        // Unreadable on every retry: drop it, and find the host veth by its name, which
        // derives from the workload.
        Err(Error::CorruptEndpoint { key, source }) => {
            tracing::warn!(%key, error = %source, "deleting a corrupt workload endpoint record");
            endpoint::delete(&*ctx.store, &key)?;
            None
        }
        other => other?,
    };
    match record {
        // A later sandbox of the same pod owns the record and the host veth now: only
        // clean up what belonged to this container.
        Some(ep) if ep.container_id != req.env.container_id => {
            tracing::info!(%key, owner = %ep.container_id, "endpoint belongs to a newer sandbox; leaving it");
            if let Some(container) = netns.and_then(dataplane::open_for_teardown) {
                dataplane::delete_container_link(&container, &req.env.ifname);
            }
        }
        Some(ep) => {
            endpoint::delete(&*ctx.store, &key)?;
            dataplane::teardown(&host, &ep.host_veth, netns, &req.env.ifname).map_err(dp("removing the veth"))?;
        }
        None => {
            let host_veth = ctx.host_veth(req);
            dataplane::teardown(&host, &host_veth, netns, &req.env.ifname).map_err(dp("removing the veth"))?;
        }
    }
    tracing::info!(container = %req.env.container_id, "workload detached");
    Ok(())
}
