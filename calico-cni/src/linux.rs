//! The real [`Dataplane`]: crates/dataplane on this host. Each method is one call into it;
//! nothing is added on the way (no request, no syscall).

use std::cell::OnceCell;
use std::net::IpAddr;
use std::path::Path;

use dataplane::{CheckSpec, ContainerConfig, ContainerInfo, HostInfo, Namespace, VethEnd};

use crate::deps::Dataplane;

/// This host's kernel. The host netns (a netlink socket in the calling thread's netns) is
/// opened at its first use, so a verb that needs none (a repeated ADD answered from the
/// endpoint record) never opens it. Use it from the thread that made it.
#[derive(Default)]
pub struct Linux {
    host: OnceCell<Namespace>,
}

impl Linux {
    pub fn new() -> Linux {
        Linux::default()
    }

    fn host(&self) -> dataplane::Result<&Namespace> {
        if let Some(host) = self.host.get() {
            return Ok(host);
        }
        let host = Namespace::current()?;
        Ok(self.host.get_or_init(|| host))
    }
}

impl Dataplane for Linux {
    type Netns = Namespace;

    fn open_netns(&self, path: &Path) -> dataplane::Result<Namespace> {
        Namespace::open(path)
    }

    fn open_netns_for_teardown(&self, path: &Path) -> Option<Namespace> {
        dataplane::open_for_teardown(path)
    }

    fn create_veth(&self, host: &VethEnd, peer: &VethEnd, container: &Namespace) -> dataplane::Result<()> {
        self.host()?.netlink().create_veth(host, peer, container.netns())
    }

    fn delete_host_link(&self, name: &str) -> dataplane::Result<bool> {
        self.host()?.netlink().delete_link(name)
    }

    fn delete_host_link_detached(&self, name: &str) -> dataplane::Result<bool> {
        self.host()?.delete_link_detached(name)
    }

    fn setup_container(&self, container: &Namespace, config: &ContainerConfig<'_>) -> dataplane::Result<ContainerInfo> {
        dataplane::setup_container(container, config)
    }

    fn setup_host(&self, host_veth: &str, addresses: &[IpAddr]) -> dataplane::Result<HostInfo> {
        dataplane::setup_host(self.host()?, host_veth, addresses)
    }

    fn route_localnet(&self, host_veth: &str) -> dataplane::Result<()> {
        // The calling thread is in the host netns, where /proc/sys/net resolves.
        dataplane::set_sysctl(&format!("net/ipv4/conf/{host_veth}/route_localnet"), "1")
    }

    fn delete_container_link(&self, container: &Namespace, ifname: &str) -> bool {
        dataplane::delete_container_link(container, ifname)
    }

    fn has_host_link(&self, name: &str) -> dataplane::Result<bool> {
        Ok(self.host()?.netlink().link_by_name(name)?.is_some())
    }

    fn add_container_address(
        &self,
        container: &Namespace,
        ifname: &str,
        ip: IpAddr,
        new_family: bool,
    ) -> dataplane::Result<()> {
        dataplane::add_container_address(container, ifname, ip, new_family)
    }

    fn remove_container_address(
        &self,
        container: &Namespace,
        ifname: &str,
        ip: IpAddr,
        last_of_family: bool,
    ) -> dataplane::Result<bool> {
        dataplane::remove_container_address(container, ifname, ip, last_of_family)
    }

    fn add_host_address_route(&self, host_veth: &str, ip: IpAddr, new_family: bool) -> dataplane::Result<bool> {
        dataplane::add_host_address_route(self.host()?, host_veth, ip, new_family)
    }

    fn remove_host_address_route(&self, host_veth: &str, ip: IpAddr) -> dataplane::Result<bool> {
        dataplane::remove_host_address_route(self.host()?, host_veth, ip)
    }

    fn check(&self, container: &Namespace, spec: &CheckSpec<'_>) -> dataplane::Result<()> {
        dataplane::check(self.host()?, container, spec)
    }

    fn netlink_requests(&self, container: &Namespace) -> Option<u64> {
        let host = self.host.get().map_or(0, |h| h.netlink().request_count());
        Some(host + container.netlink().request_count())
    }
}
