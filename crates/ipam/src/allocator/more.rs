//! One more address for a handle that already holds some (`calicoctl container <C> ip
//! add`): unlike [`Ipam::assign`], which answers a repeated request with what the handle
//! holds, this always allocates, under the same handle, so that the container's DEL (which
//! releases the handle) frees it with the rest.

use std::net::IpAddr;

use datastore::Read;
use ipnetwork::IpNetwork;

use super::assign::{cursor_of, select_pools};
use super::{handle_state, Assigned, HandleState, Ipam, Owner};
use model::handle::{HANDLE_NODE, HANDLE_PLUGIN};
use model::keys;

use crate::{pool, Error};

/// Which address [`Ipam::assign_more`] allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum More {
    /// Exactly this one.
    Ip(IpAddr),
    /// Any free one of this family (4 or 6), from the enabled pools.
    Family(u8),
    /// Any free one of this pool.
    Pool(IpNetwork),
}

impl Owner {
    /// The owner recorded in an existing handle (its network, attachment and plugin), for
    /// allocating more under it.
    pub fn of_handle(handle: &model::handle::Handle) -> Owner {
        let attr = |k: &str| handle.attributes.get(k).cloned().unwrap_or_default();
        Owner {
            handle: handle.id.clone(),
            network: attr("network"),
            container_id: attr("container_id"),
            ifname: attr("ifname"),
            extra: Default::default(),
            plugin: attr(HANDLE_PLUGIN),
        }
    }
}

impl Ipam<'_> {
    /// Allocates one more address for the existing handle `handle_id`, recording it in the
    /// handle. [`Error::HandleNotFound`] when there is no such handle: the attachment's
    /// addresses did not come from this IPAM.
    pub fn assign_more(&self, handle_id: &str, more: More) -> Result<Assigned, Error> {
        let mut reads = self.store.read_many(&[
            Read::Key(keys::handle(handle_id)),
            Read::Prefix(keys::pool_prefix(4)),
            Read::Prefix(keys::pool_prefix(6)),
            Read::Key(keys::cursor(&self.host, 4)),
            Read::Key(keys::cursor(&self.host, 6)),
        ])?;
        let cursor6 = cursor_of(&reads.pop().unwrap_or_default());
        let cursor4 = cursor_of(&reads.pop().unwrap_or_default());
        let pools6 = pool::decode_all(&reads.pop().unwrap_or_default())?;
        let pools4 = pool::decode_all(&reads.pop().unwrap_or_default())?;
        let handle_kv = reads.pop().unwrap_or_default();
        let Some(kv) = handle_kv.first() else {
            return Err(Error::HandleNotFound { handle: handle_id.to_owned() });
        };
        let mut state = handle_state(handle_id, Some(kv))?;
        let owner = Owner::of_handle(&state.handle);
        if state.handle.attributes.get(HANDLE_NODE).is_some_and(|n| n != &self.host) {
            tracing::warn!(handle = handle_id, host = %self.host, "adding an address to another node's handle");
        }
        let all: Vec<_> = pools4.iter().chain(&pools6).cloned().collect();
        let auto = |family: u8, wanted: &[IpNetwork], state: &mut HandleState| {
            let (pools, cursor) = if family == 4 { (&pools4, cursor4) } else { (&pools6, cursor6) };
            let pools = select_pools(family, wanted, pools)?;
            self.auto_assign(family, &pools, cursor, &owner, state, &mut Default::default())
        };
        let ip = match more {
            More::Ip(ip) => {
                self.assign_ip(ip, &all, &owner, &mut state)?;
                ip
            }
            More::Family(family) => auto(family, &[], &mut state)?,
            More::Pool(cidr) => auto(keys::family_of(&cidr), &[cidr], &mut state)?,
        };
        let pool = all.iter().find(|p| p.cidr.contains(ip)).cloned().ok_or(Error::AddressNotInPool { ip })?;
        Ok(Assigned { ip, pool })
    }
}
