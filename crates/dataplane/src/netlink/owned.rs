//! Routes a long-lived agent owns, told apart from everyone else's by their protocol number
//! (`proto 80` for calico-node, as Felix does): a full listing of the main table with what
//! the agent compares, and replacing or deleting many routes in few round trips.
//!
//! A route is replaced in place (`NLM_F_REPLACE`), never deleted and added again, so a
//! changed route never disappears, not even for an instant.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::RouteMessageBuilder;

use super::{absent_as_none, IpFamily, Netlink};
use crate::error::{Error, Result};

/// How many requests one round trip carries: the kernel's answers to a batch wait in the
/// socket's receive buffer, which must not overflow.
const BATCH: usize = 256;

/// Where a route sends its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteTarget {
    /// `blackhole <dst>`: dropped here.
    Blackhole,
    /// `<dst> via <gateway> dev <oif> [onlink]`.
    Via {
        /// Next hop.
        gateway: IpAddr,
        /// Output interface index.
        oif: u32,
        /// The next hop is on the link even when no address of the link covers it.
        onlink: bool,
    },
    /// `<dst> dev <oif>` (no next hop).
    Dev {
        /// Output interface index.
        oif: u32,
    },
    /// Anything else (local, unreachable, multipath…): never made by the agent.
    Other,
}

/// A route of the main table with its protocol and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaggedRoute {
    /// Destination (host bits clear).
    pub dst: IpNetwork,
    /// Where it goes.
    pub target: RouteTarget,
    /// `proto N`: who made it.
    pub protocol: u8,
    /// `metric N` (0 when none).
    pub metric: u32,
}

impl TaggedRoute {
    /// `ip route` style, with the interface as `#index`.
    pub fn describe(&self) -> String {
        let target = match self.target {
            RouteTarget::Blackhole => return format!("blackhole {} proto {}", self.dst, self.protocol),
            RouteTarget::Via { gateway, oif, onlink } => {
                format!(" via {gateway} dev #{oif}{}", if onlink { " onlink" } else { "" })
            }
            RouteTarget::Dev { oif } => format!(" dev #{oif}"),
            RouteTarget::Other => " (other)".to_owned(),
        };
        format!("{}{target} proto {}", self.dst, self.protocol)
    }

    fn from_message(message: &RouteMessage, family: IpFamily) -> Option<TaggedRoute> {
        let mut table = u32::from(message.header.table);
        let (mut dst, mut gateway, mut oif, mut metric, mut multipath) = (None, None, None, 0, false);
        for attribute in &message.attributes {
            match attribute {
                RouteAttribute::Table(id) => table = *id,
                RouteAttribute::Destination(address) => dst = ip_of(address),
                RouteAttribute::Gateway(address) => gateway = ip_of(address),
                RouteAttribute::Oif(index) => oif = Some(*index),
                RouteAttribute::Priority(p) => metric = *p,
                RouteAttribute::MultiPath(_) => multipath = true,
                _ => {}
            }
        }
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
            return None;
        }
        let unspecified = match family {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let dst = IpNetwork::new(dst.unwrap_or(unspecified), message.header.destination_prefix_length).ok()?;
        let onlink = message.header.flags.contains(RouteFlags::Onlink);
        let target = match (message.header.kind, gateway, oif) {
            _ if multipath => RouteTarget::Other,
            (RouteType::BlackHole, _, _) => RouteTarget::Blackhole,
            (RouteType::Unicast, Some(gateway), Some(oif)) => RouteTarget::Via { gateway, oif, onlink },
            (RouteType::Unicast, None, Some(oif)) => RouteTarget::Dev { oif },
            _ => RouteTarget::Other,
        };
        Some(TaggedRoute { dst, target, protocol: u8::from(message.header.protocol), metric })
    }

    fn message(&self) -> Result<RouteMessage> {
        let invalid = |reason| Error::Invalid { what: "route", value: self.describe(), reason };
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(self.dst.network(), self.dst.prefix())
            .map_err(|_| invalid("bad destination prefix"))?
            .protocol(RouteProtocol::from(self.protocol));
        if self.metric != 0 {
            builder = builder.priority(self.metric);
        }
        builder = match self.target {
            RouteTarget::Blackhole => builder.kind(RouteType::BlackHole),
            RouteTarget::Via { gateway, oif, onlink } => {
                if IpFamily::of(gateway) != IpFamily::of(self.dst.ip()) {
                    return Err(invalid("gateway and destination families differ"));
                }
                let builder = builder.gateway(gateway).map_err(|_| invalid("bad gateway"))?.output_interface(oif);
                if onlink {
                    builder.onlink()
                } else {
                    builder
                }
            }
            RouteTarget::Dev { oif } => builder.output_interface(oif).scope(RouteScope::Link),
            RouteTarget::Other => return Err(invalid("only blackhole, via and dev routes can be made")),
        };
        Ok(builder.build())
    }
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

impl Netlink {
    /// Every route of the main table for `family`, with protocol and metric. IPv6's kernel
    /// routes for local addresses and multicast live in other tables and are not listed.
    pub fn tagged_routes(&self, family: IpFamily) -> Result<Vec<TaggedRoute>> {
        let filter = match family {
            IpFamily::V4 => RouteMessageBuilder::<Ipv4Addr>::new().build(),
            IpFamily::V6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
        };
        let request = self.handle.route().get(filter).execute();
        let messages = self.exec(|| format!("list {family} routes"), request.try_collect::<Vec<_>>())?;
        Ok(messages.iter().filter_map(|m| TaggedRoute::from_message(m, family)).collect())
    }

    /// Adds each route, or replaces in place the route of the same destination, metric and
    /// table, in round trips of up to 256. Returns each one's outcome.
    pub fn replace_routes(&self, routes: &[TaggedRoute]) -> Result<Vec<Result<()>>> {
        let mut outcomes = Vec::with_capacity(routes.len());
        for chunk in routes.chunks(BATCH) {
            let mut requests = Vec::with_capacity(chunk.len());
            for route in chunk {
                requests.push(self.handle.route().add(route.message()?).replace().execute());
            }
            let results = self.exec(|| format!("replace {} routes", chunk.len()), async {
                Ok(futures::future::join_all(requests).await)
            })?;
            outcomes.extend(results.into_iter().zip(chunk).map(|(r, route)| {
                r.map_err(|source| Error::netlink(format!("replace route {}", route.describe()), source))
            }));
        }
        Ok(outcomes)
    }

    /// Deletes each route (matched by destination, metric, protocol, type and next hop), in
    /// round trips of up to 256. A route that is not there counts as deleted.
    pub fn delete_routes(&self, routes: &[TaggedRoute]) -> Result<Vec<Result<()>>> {
        let mut outcomes = Vec::with_capacity(routes.len());
        for chunk in routes.chunks(BATCH) {
            let mut requests = Vec::with_capacity(chunk.len());
            for route in chunk {
                let mut message = route.message()?;
                message.header.scope = RouteScope::NoWhere;
                requests.push(self.handle.route().del(message).execute());
            }
            let results = self.exec(|| format!("delete {} routes", chunk.len()), async {
                Ok(futures::future::join_all(requests).await)
            })?;
            outcomes.extend(results.into_iter().zip(chunk).map(|(r, route)| {
                let result = r.map_err(|source| Error::netlink(format!("delete route {}", route.describe()), source));
                absent_as_none(result).map(drop)
            }));
        }
        Ok(outcomes)
    }
}
