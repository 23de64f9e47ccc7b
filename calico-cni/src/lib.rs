//! The calico-cni plugin: a veth pair per container with /32 host routes and the
//! 169.254.1.1 gateway answered by proxy ARP, addresses from the IPAM plugin, and a workload
//! endpoint record in the datastore.
//!
//! One file per verb: [`add`], [`del`], [`check`], [`gc`]; [`context`] holds what they share.

mod add;
mod check;
mod context;
mod del;
pub mod endpoint;
mod error;
mod gc;

pub use error::{Error, CODE_CHECK_FAILED, CODE_DATAPLANE, CODE_NO_ADDRESS, CODE_ROUTE_CONFLICT};

use cni::skel::{Plugin, Request};
use cni::CniResult;

/// The plugin handed to [`cni::skel::run`].
pub struct CalicoCni;

impl Plugin for CalicoCni {
    type Error = Error;

    fn about(&self) -> &'static str {
        "gives a container its Calico network (a veth pair, /32 host routes, the 169.254.1.1 \
         gateway and a workload endpoint record), with addresses from its IPAM plugin"
    }

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        add::add(req)
    }

    fn del(&self, req: &Request) -> Result<(), Error> {
        del::del(req)
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        check::check(req)
    }

    fn gc(&self, req: &Request) -> Result<(), Error> {
        gc::gc(req)
    }

    /// Code 50 when the netconf or the store is unusable, as calico-ipam answers; the IPAM
    /// verdict (pools with room) passes through.
    fn status(&self, req: &Request) -> Result<(), Error> {
        let ctx = context::Context::load(req).map_err(|e| Error::NotAvailable(Box::new(e)))?;
        ctx.ipam_status(req)
    }
}
