//! A network namespace paired with a netlink client bound to it: what every
//! workload step needs to act on one side (host or container).

use std::path::Path;

use crate::{
    error::{Error, Result},
    netlink::Netlink,
    netns::NetNs,
};

/// A network namespace and a [`Netlink`] client inside it.
///
/// Built once per side and per CNI call; the calling thread never changes
/// namespace. [`Namespace::run`] is how sysctls of that namespace are
/// written.
#[derive(Debug)]
pub struct Namespace {
    netns: NetNs,
    netlink: Netlink,
    /// True when `netns` is the calling thread's namespace at creation, so
    /// [`Namespace::run`] need not start a helper thread.
    local: bool,
}

impl Namespace {
    /// The calling thread's namespace (the "host" side of a CNI call).
    ///
    /// Keep using it from the thread that created it: [`Namespace::run`]
    /// runs closures in place.
    pub fn current() -> Result<Namespace> {
        Ok(Namespace { netns: NetNs::current()?, netlink: Netlink::current()?, local: true })
    }

    /// The namespace at `path` (the container side), e.g. `CNI_NETNS`.
    /// The caller's own namespace is refused ([`Error::OwnNetNs`]): working
    /// on it as a container's would change the host's interfaces.
    pub fn open(path: impl AsRef<Path>) -> Result<Namespace> {
        let netns = NetNs::open(path)?;
        if netns.is_current()? {
            return Err(Error::OwnNetNs { path: netns.path().to_path_buf() });
        }
        Namespace::from_netns(netns)
    }

    /// Wraps an already opened namespace; the netlink socket is created on a
    /// helper thread inside it.
    pub fn from_netns(netns: NetNs) -> Result<Namespace> {
        let netlink = Netlink::in_netns(&netns)?;
        Ok(Namespace { netns, netlink, local: false })
    }

    /// The namespace handle.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// The netlink client bound to this namespace.
    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    /// Deletes link `name` and returns once the kernel has unregistered it,
    /// leaving the RCU barrier that follows to a detached helper process (see
    /// `netlink/detached.rs`: ~20 ms saved per veth). In a namespace other
    /// than the caller's, a plain [`Netlink::delete_link`]. Returns `false` if
    /// there was no such link.
    pub fn delete_link_detached(&self, name: &str) -> Result<bool> {
        if self.local {
            self.netlink.delete_link_detached(name)
        } else {
            self.netlink.delete_link(name)
        }
    }

    /// Runs `f` inside this namespace: in place for [`Namespace::current`],
    /// else on a helper thread ([`NetNs::run`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        if self.local {
            Ok(f())
        } else {
            self.netns.run(f)
        }
    }
}
