//! Calico's per-workload dataplane on Linux: network namespaces, veth pairs,
//! addresses, routes and sysctls, all through netlink and `/proc/sys` (no
//! `ip` command is ever run).
//!
//! # Namespaces without switching threads
//!
//! The CNI plugin may itself run in a namespace other than the initial one,
//! and must end up where it started. This crate never moves the calling
//! thread:
//!
//! - [`NetNs::run`] runs a closure on a fresh helper thread that `setns`es
//!   into the target namespace and then exits;
//! - [`Netlink::in_netns`] uses such a thread only to *create* the netlink
//!   socket: a netlink socket stays bound to the namespace it was created in,
//!   so the caller then drives the container namespace from its own thread;
//! - sysctls (`/proc/sys/net/...` resolves against the opener's namespace)
//!   are written from such a helper thread too ([`Namespace::run`]).
//!
//! # Layout
//!
//! - [`netns`]: [`NetNs`]; [`namespace`]: [`Namespace`] (a netns plus its
//!   netlink client);
//! - [`netlink`]: [`Netlink`], a synchronous facade over `rtnetlink`;
//! - [`sysctl`], [`rollback`] ([`Rollback`], the undo guard), [`naming`];
//! - [`workload`]: Calico's steps, composed by calico-cni.

#![warn(missing_docs)]

pub mod error;
pub mod namespace;
pub mod naming;
pub mod netlink;
pub mod netns;
pub mod rollback;
pub mod sysctl;
pub mod workload;

pub use error::{Error, Result, CODE_CHECK_FAILED, CODE_DATAPLANE, CODE_ROUTE_CONFLICT};
pub use namespace::Namespace;
pub use naming::{host_veth_name, link_local_from_mac, vxlan_mac, HOST_VETH_MAC, HOST_VETH_PREFIX};
pub use netlink::{
    Change, FdbEntry, IpFamily, Link, NeighbourInfo, NeighbourSpec, Netlink, RouteInfo, RouteSpec, RouteTarget,
    TaggedRoute, VethEnd, VxlanLink, VxlanSpec,
};
pub use netlink_packet_route::route::RouteScope;
pub use netns::NetNs;
pub use rollback::{Rollback, UndoFailure};
pub use sysctl::{get_sysctl, set_sysctl};
pub use workload::{
    add_container_address, add_host_address_route, check, delete_container_link, list_host_veths, open_for_teardown,
    remove_container_address, remove_host_address_route, setup_container, setup_host, teardown, CheckSpec,
    ContainerConfig, ContainerInfo, HostInfo,
};
