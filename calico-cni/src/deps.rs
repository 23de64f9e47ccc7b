//! What the verbs act through: the kernel ([`Dataplane`]), the datastore, the IPAM plugin
//! ([`Ipam`]) and the firewall ([`firewall::Firewall`]). The plugin's entry points ([`crate::CalicoCni`]) build the real ones
//! ([`crate::linux::Linux`], the store the netconf selects, [`crate::delegate::Delegate`]);
//! unit tests pass fakes that record each call, so the order of the steps and every rollback
//! path are tested without root.

use std::net::IpAddr;
use std::path::Path;

use cni::skel::Request;
use cni::CniResult;
use dataplane::{CheckSpec, ContainerConfig, ContainerInfo, HostInfo, VethEnd};
use datastore::Datastore;

use crate::Error;

/// One verb's dependencies.
pub struct Deps<'a, D> {
    pub dataplane: &'a D,
    pub store: &'a dyn Datastore,
    pub ipam: &'a dyn Ipam,
    /// The `inet calico` nftables table (pool sets, port maps).
    pub firewall: &'a dyn firewall::Firewall,
}

/// The netlink, netns and sysctl operations of calico-cni, at the grain of Calico's workload
/// steps (see [`dataplane::workload`]). The host side is the calling thread's netns; the
/// container side is a [`Dataplane::Netns`] opened from CNI_NETNS.
pub trait Dataplane {
    /// An open container network namespace.
    type Netns;

    /// Opens CNI_NETNS for ADD or CHECK. The plugin's own netns is refused.
    fn open_netns(&self, path: &Path) -> dataplane::Result<Self::Netns>;

    /// Opens CNI_NETNS for DEL and GC: `None` when nothing usable is there (the netns is
    /// gone, the path is no netns, or it is the plugin's own), each logged, since none of
    /// them can succeed on a retry.
    fn open_netns_for_teardown(&self, path: &Path) -> Option<Self::Netns>;

    /// Creates the veth pair in one request: `host` on the host, `peer` inside `container`.
    /// Fails with EEXIST ([`dataplane::Error::is_exists`]) when either name is taken.
    fn create_veth(&self, host: &VethEnd, peer: &VethEnd, container: &Self::Netns) -> dataplane::Result<()>;

    /// Deletes the host link `name` and waits for the kernel to free it (a veth takes its
    /// peer and its routes along). `false` when there was none.
    fn delete_host_link(&self, name: &str) -> dataplane::Result<bool>;

    /// Like [`Dataplane::delete_host_link`], leaving the kernel's final wait to a detached
    /// helper: DEL's and GC's way, where nothing reuses the name at once.
    fn delete_host_link_detached(&self, name: &str) -> dataplane::Result<bool>;

    /// Configures the container end ([`dataplane::setup_container`]).
    fn setup_container(
        &self,
        container: &Self::Netns,
        config: &ContainerConfig<'_>,
    ) -> dataplane::Result<ContainerInfo>;

    /// Configures the host end ([`dataplane::setup_host`]).
    fn setup_host(&self, host_veth: &str, addresses: &[IpAddr]) -> dataplane::Result<HostInfo>;

    /// `net.ipv4.conf.<host_veth>.route_localnet = 1`: the host's connections to a mapped
    /// port on 127.0.0.0/8 may then leave, DNATed, through this veth (as portmap does).
    fn route_localnet(&self, host_veth: &str) -> dataplane::Result<()>;

    /// Deletes `ifname` inside `container` as best it can, never `lo`; a failure is logged
    /// ([`dataplane::delete_container_link`]). Whether a link was deleted.
    fn delete_container_link(&self, container: &Self::Netns, ifname: &str) -> bool;

    /// Whether the host link `name` exists here.
    fn has_host_link(&self, name: &str) -> dataplane::Result<bool>;

    /// One more address on the container end ([`dataplane::add_container_address`]).
    fn add_container_address(
        &self,
        container: &Self::Netns,
        ifname: &str,
        ip: IpAddr,
        new_family: bool,
    ) -> dataplane::Result<()>;

    /// Removes an address from the container end ([`dataplane::remove_container_address`]).
    fn remove_container_address(
        &self,
        container: &Self::Netns,
        ifname: &str,
        ip: IpAddr,
        last_of_family: bool,
    ) -> dataplane::Result<bool>;

    /// The host's route to one more address ([`dataplane::add_host_address_route`]).
    fn add_host_address_route(&self, host_veth: &str, ip: IpAddr, new_family: bool) -> dataplane::Result<bool>;

    /// Removes the host's route to an address ([`dataplane::remove_host_address_route`]).
    fn remove_host_address_route(&self, host_veth: &str, ip: IpAddr) -> dataplane::Result<bool>;

    /// CHECK's verdict on both ends ([`dataplane::check`]).
    fn check(&self, container: &Self::Netns, spec: &CheckSpec<'_>) -> dataplane::Result<()>;

    /// The netlink requests sent so far on both sides, for the log's cost line; `None` when
    /// not counted.
    fn netlink_requests(&self, container: &Self::Netns) -> Option<u64> {
        let _ = container;
        None
    }
}

/// What IPAM ADD gave.
#[derive(Clone, Debug, Default)]
pub struct Allocation {
    pub result: CniResult,
    /// The pools the addresses came from, when the IPAM knows them (calico-ipam in this
    /// process); `None` from a plugin exec'd, whose pools ADD then lists itself.
    pub pools: Option<Vec<model::pool::Pool>>,
}

/// The IPAM plugin that `ipam.type` names, one method per verb.
pub trait Ipam {
    fn add(&self, req: &Request) -> Result<Allocation, Error>;
    fn del(&self, req: &Request) -> Result<(), Error>;
    fn check(&self, req: &Request) -> Result<(), Error>;
    fn gc(&self, req: &Request) -> Result<(), Error>;
    fn status(&self, req: &Request) -> Result<(), Error>;
}
