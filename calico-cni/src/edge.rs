//! The edge of the host (crates/firewall): the pools' outgoing NAT sets and the container's
//! host port mappings (capability `portMappings`).
//!
//! At each ADD the container's own pools are made sure of in the pool sets (one element
//! read; one batch only when missing), so the first container after a reboot has outgoing
//! NAT before calico-node has synced, and its port mappings are added as map elements owned
//! by the attachment. DEL, CHECK and GC work from the endpoint record's mappings.

use std::net::IpAddr;

use firewall::{Element, PoolSet, Proto};
use model::endpoint::PortMapping;
use model::pool::Pool;

pub use firewall::{owner, port_elements};

use crate::context::Context;
use crate::Error;

/// `runtimeConfig.portMappings`, validated before anything is set up (error 7 naming the
/// field), as mappings to each container address of the family.
pub fn requested(ctx: &Context) -> Result<Vec<Requested>, Error> {
    let invalid = |i: usize, field: &str, reason: String| -> Error {
        cni::Error::InvalidConfig { field: format!("runtimeConfig.portMappings[{i}].{field}"), reason }.into()
    };
    let mut out = Vec::new();
    for (i, m) in ctx.conf.common.runtime_config.port_mappings.iter().enumerate() {
        if m.host_port == 0 {
            return Err(invalid(i, "hostPort", "must be 1..=65535".into()));
        }
        if m.container_port == 0 {
            return Err(invalid(i, "containerPort", "must be 1..=65535".into()));
        }
        let proto = match m.protocol.as_str() {
            "" => Proto::Tcp,
            p => Proto::parse(p).ok_or_else(|| invalid(i, "protocol", format!("{p:?} is not tcp, udp or sctp")))?,
        };
        let host_ip = match m.host_ip.as_deref() {
            None | Some("") => None,
            Some(s) => {
                let ip: IpAddr = s.parse().map_err(|_| invalid(i, "hostIP", format!("{s:?} is not an IP address")))?;
                // The unspecified address means any, as portmap takes it.
                (!ip.is_unspecified()).then_some(ip)
            }
        };
        out.push(Requested { proto, host_ip, host_port: m.host_port, container_port: m.container_port });
    }
    Ok(out)
}

pub struct Requested {
    proto: Proto,
    host_ip: Option<IpAddr>,
    host_port: u16,
    container_port: u16,
}

/// The mappings to record: each request to each container address of its family (with a
/// hostIP, only that family's).
pub fn mappings(requested: &[Requested], addresses: &[IpAddr]) -> Vec<PortMapping> {
    let mut out = Vec::new();
    for r in requested {
        for ip in addresses {
            if r.host_ip.is_some_and(|h| h.is_ipv4() != ip.is_ipv4()) {
                continue;
            }
            out.push(PortMapping {
                protocol: r.proto.name().into(),
                host_ip: r.host_ip,
                host_port: r.host_port,
                container_ip: *ip,
                container_port: r.container_port,
            });
        }
    }
    out
}

/// The pool set elements of the pools holding `addresses` (none for addresses outside
/// every Calico pool, e.g. from host-local).
pub fn pool_elements(pools: &[Pool], addresses: &[IpAddr]) -> Vec<Element> {
    let mut out = Vec::new();
    for pool in pools.iter().filter(|p| addresses.iter().any(|a| p.cidr.contains(*a))) {
        out.push(Element::Pool { set: PoolSet::All, cidr: pool.cidr });
        if pool.nat_outgoing {
            out.push(Element::Pool { set: PoolSet::Masq, cidr: pool.cidr });
        }
    }
    out
}

/// The pools of the families of `addresses`, as the datastore holds them.
pub fn pools(store: &dyn datastore::Datastore, addresses: &[IpAddr]) -> Result<Vec<Pool>, Error> {
    let mut out = Vec::new();
    for (family, wanted) in [(4, addresses.iter().any(IpAddr::is_ipv4)), (6, addresses.iter().any(IpAddr::is_ipv6))] {
        if !wanted {
            continue;
        }
        for kv in store.list(&model::keys::pool_prefix(family))? {
            match model::decode::<Pool>(&kv.key, &kv.value) {
                Ok(pool) => out.push(pool),
                Err(e) => tracing::warn!(key = %kv.key, error = %e, "skipping an unreadable pool"),
            }
        }
    }
    Ok(out)
}

/// A firewall failure as calico-cni reports it: a port conflict names the holder.
pub fn error(step: &'static str) -> impl Fn(firewall::Error) -> Error {
    move |source| match source {
        firewall::Error::PortTaken { mapping, holder } => Error::PortConflict { mapping, holder },
        source => Error::Firewall { step, source },
    }
}
