//! Several changes sent in one round trip.
//!
//! The requests are all queued on the socket before the first answer is
//! awaited. The kernel handles rtnetlink requests one by one in the order
//! they arrive, so a later change may rely on an earlier one (a route via a
//! gateway after the route to that gateway), and each gets its own answer.

use std::{future::Future, pin::Pin};

use ipnetwork::IpNetwork;
use rtnetlink::LinkUnspec;

use super::{route::route_message, NeighbourSpec, Netlink, RouteSpec};
use crate::error::{Error, Result};

/// One change of a batch ([`Netlink::apply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Set link `index` up.
    LinkUp(u32),
    /// Add an address to a link.
    Address {
        /// Link index.
        index: u32,
        /// The address with its prefix length.
        address: IpNetwork,
    },
    /// Add a route.
    Route(RouteSpec),
    /// Add (or replace) a permanent neighbour entry.
    Neighbour(NeighbourSpec),
}

impl Change {
    /// The change in words, naming its link `dev`: `add route 0.0.0.0/0 via
    /// 169.254.1.1 dev eth0`.
    pub fn describe(&self, dev: &str) -> String {
        match self {
            Change::LinkUp(_) => format!("set link {dev} up"),
            Change::Address { address, .. } => format!("add address {address} to {dev}"),
            Change::Route(spec) => format!("add route {}", spec.describe(dev)),
            Change::Neighbour(spec) => {
                format!("add neighbour {} lladdr {} dev {dev}", spec.ip, crate::naming::format_mac(spec.mac))
            }
        }
    }
}

type Request = Pin<Box<dyn Future<Output = std::result::Result<(), rtnetlink::Error>>>>;

impl Netlink {
    fn request(&self, change: &Change) -> Result<Request> {
        Ok(match *change {
            Change::LinkUp(index) => {
                Box::pin(self.handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute())
            }
            Change::Address { index, address } => {
                Box::pin(self.handle.address().add(index, address.ip(), address.prefix()).execute())
            }
            Change::Route(spec) => Box::pin(self.handle.route().add(route_message(&spec)?).execute()),
            Change::Neighbour(spec) => Box::pin(self.neighbour_add_request(&spec)),
        })
    }

    /// Sends `changes` (to link `dev`, as error messages name it) in one
    /// round trip, in order, and returns each one's outcome. The outer error
    /// is for the batch as a whole (no answer in time, or an unusable
    /// change): then any of them may have been applied.
    pub fn apply(&self, dev: &str, changes: &[Change]) -> Result<Vec<Result<()>>> {
        let requests = changes.iter().map(|change| self.request(change)).collect::<Result<Vec<_>>>()?;
        let outcomes = self.exec(|| format!("{} changes to {dev}", changes.len()), async {
            Ok(futures::future::join_all(requests).await)
        })?;
        Ok(outcomes
            .into_iter()
            .zip(changes)
            .map(|(outcome, change)| outcome.map_err(|source| Error::netlink(change.describe(dev), source)))
            .collect())
    }

    /// Undoes a change [`Netlink::apply`] made. Undoing one that is not
    /// there (any more) succeeds.
    pub fn revert(&self, change: &Change) -> Result<()> {
        match *change {
            Change::LinkUp(index) => absent(self.set_down(index)),
            Change::Address { index, address } => self.delete_address(index, address).map(drop),
            Change::Route(spec) => self.delete_route(&spec).map(drop),
            Change::Neighbour(spec) => self.delete_neighbour(&spec).map(drop),
        }
    }
}

fn absent(result: Result<()>) -> Result<()> {
    super::absent_as_none(result).map(drop)
}
