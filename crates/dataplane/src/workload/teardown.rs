//! DEL: remove a workload's interfaces, idempotently.

use std::path::Path;

use crate::{
    error::{Error, Result},
    namespace::Namespace,
    netns::NetNs,
};

/// Opens the container namespace for teardown; `None` when it is already
/// gone (missing path, dead process, or an unmounted leftover file).
fn open_if_present(path: &Path) -> Result<Option<Namespace>> {
    let netns = match NetNs::open(path) {
        Ok(netns) => netns,
        Err(err) if err.is_not_found() || matches!(err, Error::NotNetNs { .. }) => return Ok(None),
        Err(err) => return Err(err),
    };
    Namespace::from_netns(netns).map(Some)
}

/// Removes the workload's veth: deletes `host_veth` in `host`, which takes
/// its routes and its peer, the container end, with it. Only when there was
/// no host end (an ADD that died half-way, a host end removed by hand) does
/// it look into `netns`, if that names a namespace that still exists, and
/// make sure `ifname` is gone from it too.
///
/// Succeeds when things are already gone, when `netns` is `None` or empty
/// and when the namespace no longer exists. Every netlink request is bounded
/// by the client's timeout, so this cannot hang.
pub fn teardown(
    host: &Namespace,
    host_veth: &str,
    netns: Option<&Path>,
    ifname: &str,
) -> Result<()> {
    if host.delete_link_detached(host_veth)? {
        tracing::debug!(
            host_veth,
            "host veth deleted, and its container end with it"
        );
        return Ok(());
    }
    let container = match netns.filter(|path| !path.as_os_str().is_empty()) {
        Some(path) => open_if_present(path)?,
        None => None,
    };
    if let Some(container) = container {
        let deleted = container.netlink().delete_link(ifname)?;
        tracing::debug!(ifname, deleted, netns = %container.netns().path().display(), "no host veth; container interface teardown");
    }
    Ok(())
}
