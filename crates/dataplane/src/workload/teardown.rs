//! DEL: remove a workload's interfaces, idempotently.

use std::path::Path;

use crate::{error::Result, namespace::Namespace, rollback::ErrorChain};

/// Opens the container namespace for teardown; `None` when there is nothing
/// usable there: the namespace is gone (missing path, dead process, an
/// unmounted leftover file), the path is not a network namespace (a FIFO, a
/// trailing slash...), or it is the caller's own namespace, whose interfaces
/// are the host's and never a container's. Each of these is logged; none can
/// ever succeed on a retry, so none fails the DEL.
pub fn open_for_teardown(path: &Path) -> Option<Namespace> {
    if path.as_os_str().is_empty() {
        return None;
    }
    match Namespace::open(path) {
        Ok(container) => Some(container),
        Err(err) if err.is_not_found() => {
            tracing::debug!(netns = %path.display(), "container netns is gone");
            None
        }
        Err(err) => {
            tracing::warn!(netns = %path.display(), error = %ErrorChain(&err), "not looking into CNI_NETNS");
            None
        }
    }
}

/// Deletes `ifname` from `container`, as best it can: the loopback
/// interface is never deleted, and a failure is logged, not returned (the
/// container end goes with the namespace anyway). Returns whether a link
/// was deleted.
pub fn delete_container_link(container: &Namespace, ifname: &str) -> bool {
    let netns = container.netns().path().display();
    if ifname == "lo" {
        tracing::warn!(%netns, "not deleting the container's loopback interface");
        return false;
    }
    match container.netlink().delete_link(ifname) {
        Ok(deleted) => deleted,
        Err(err) => {
            tracing::warn!(%netns, ifname, error = %ErrorChain(&err), "cannot delete the container interface");
            false
        }
    }
}

/// Removes the workload's veth: deletes `host_veth` in `host`, which takes
/// its routes and its peer, the container end, with it. Only when there was
/// no host end (an ADD that died half-way, a host end removed by hand) does
/// it look into `netns`, if that names a container namespace that still
/// exists, and make sure `ifname` is gone from it too
/// ([`open_for_teardown`], [`delete_container_link`]).
///
/// Succeeds when things are already gone, when `netns` is `None`, empty or
/// unusable, and when the namespace no longer exists. Every netlink request
/// is bounded by the client's timeout, so this cannot hang.
pub fn teardown(host: &Namespace, host_veth: &str, netns: Option<&Path>, ifname: &str) -> Result<()> {
    if host.delete_link_detached(host_veth)? {
        tracing::debug!(host_veth, "host veth deleted, and its container end with it");
        return Ok(());
    }
    if let Some(container) = netns.and_then(open_for_teardown) {
        let deleted = delete_container_link(&container, ifname);
        tracing::debug!(ifname, deleted, netns = %container.netns().path().display(), "no host veth; container interface teardown");
    }
    Ok(())
}
