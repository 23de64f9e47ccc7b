//! The calico-cni plugin: a veth pair per container with /32 host routes and the
//! 169.254.1.1 gateway answered by proxy ARP, addresses from the IPAM plugin, and a workload
//! endpoint record in the datastore.
//!
//! One file per verb: `add`, `del`, `check`, `gc`, each a function of the request,
//! its parsed `Context` and its `Deps`: the kernel, the datastore and the IPAM plugin,
//! behind the traits of `deps`. [`CalicoCni`] passes the real ones (`linux::Linux`, the
//! store the netconf selects, `delegate::Delegate`); the unit tests pass recording fakes.

mod add;
mod check;
pub mod container_ip;
mod context;
mod del;
mod delegate;
mod deps;
mod edge;
mod endpoint;
mod error;
mod gc;
mod linux;
mod profile;
#[cfg(test)]
mod tests;

pub use error::{Error, CODE_CHECK_FAILED, CODE_DATAPLANE, CODE_NO_ADDRESS, CODE_PORT_CONFLICT, CODE_ROUTE_CONFLICT};

use cni::skel::{Plugin, Request};
use cni::CniResult;

use crate::context::Context;
use crate::delegate::Delegate;
use crate::deps::{Deps, Ipam};
use crate::linux::Linux;

/// Runs `verb` with the real dependencies: this host's kernel, the store the netconf
/// selects, and the IPAM plugin it names.
fn with_real_deps<T>(
    req: &Request,
    verb: impl FnOnce(&Context, &Deps<'_, Linux>) -> Result<T, Error>,
) -> Result<T, Error> {
    let ctx = Context::load(req)?;
    let store = ctx.open_store()?;
    let ipam = Delegate::new(&ctx, &*store);
    let firewall = firewall::nft::Nftables::new();
    let result = verb(&ctx, &Deps { dataplane: &Linux::new(), store: &*store, ipam: &ipam, firewall: &firewall });
    tracing::debug!(nftables_round_trips = firewall.round_trips(), "firewall cost");
    result
}

/// The plugin handed to [`cni::skel::run`].
pub struct CalicoCni;

impl Plugin for CalicoCni {
    type Error = Error;

    fn about(&self) -> &'static str {
        "gives a container its Calico network (a veth pair, /32 host routes, the 169.254.1.1 \
         gateway and a workload endpoint record), with addresses from its IPAM plugin"
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        with_real_deps(req, |ctx, deps| add::add(req, ctx, deps))
    }

    fn del(&self, req: &Request) -> Result<(), Error> {
        with_real_deps(req, |ctx, deps| del::del(req, ctx, deps))
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        with_real_deps(req, |ctx, deps| check::check(req, ctx, deps))
    }

    fn gc(&self, req: &Request) -> Result<(), Error> {
        with_real_deps(req, |ctx, deps| gc::gc(req, ctx, deps))
    }

    /// Code 50 when the netconf or the store is unusable, as calico-ipam answers; the IPAM
    /// verdict (pools with room) passes through.
    fn status(&self, req: &Request) -> Result<(), Error> {
        let not_available = |e| Error::NotAvailable(Box::new(e));
        let ctx = Context::load(req).map_err(not_available)?;
        let store = ctx.open_store().map_err(not_available)?;
        Delegate::new(&ctx, &*store).status(req)
    }
}
