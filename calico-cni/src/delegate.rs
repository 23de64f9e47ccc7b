//! The real [`Ipam`]: calico-ipam's code in this process, or any other IPAM plugin exec'd
//! from CNI_PATH as the spec describes.

use cni::skel::Request;
use datastore::Datastore;

use crate::context::Context;
use crate::deps::{Allocation, Ipam};
use crate::Error;

/// The IPAM type calico-cni runs in its own process instead of exec'ing it.
pub const IN_PROCESS_IPAM: &str = "calico-ipam";

/// The IPAM plugin of the netconf's `ipam.type`.
pub struct Delegate<'a> {
    ctx: &'a Context,
    store: &'a dyn Datastore,
}

impl<'a> Delegate<'a> {
    pub fn new(ctx: &'a Context, store: &'a dyn Datastore) -> Delegate<'a> {
        Delegate { ctx, store }
    }

    /// The IPAM verbs to run in this process: `Some` when `ipam.type` is `calico-ipam`, whose
    /// code is linked in (the same library the `calico-ipam` executable runs, on the store
    /// this process already opened), saving an exec and a store open per call.
    fn in_process(&self) -> Option<ipam::plugin::Verbs<'_>> {
        (self.ctx.ipam_type == IN_PROCESS_IPAM).then(|| ipam::plugin::Verbs {
            conf: &self.ctx.conf,
            store: self.store,
            host: &self.ctx.node,
            plugin: model::handle::PLUGIN_CALICO_CNI,
        })
    }

    fn plugin(&self) -> &str {
        &self.ctx.ipam_type
    }
}

impl Ipam for Delegate<'_> {
    fn add(&self, req: &Request) -> Result<Allocation, Error> {
        match self.in_process() {
            Some(verbs) => {
                let assigned = verbs.assign(&req.env)?;
                let mut pools: Vec<model::pool::Pool> = Vec::new();
                for a in &assigned {
                    if !pools.iter().any(|p| p.cidr == a.pool.cidr) {
                        pools.push(a.pool.clone());
                    }
                }
                Ok(Allocation { result: ipam::plugin::result_of(&assigned), pools: Some(pools) })
            }
            None => Ok(Allocation {
                result: cni::delegate::delegate_add(self.plugin(), &req.env, &req.stdin)?,
                pools: None,
            }),
        }
    }

    fn del(&self, req: &Request) -> Result<(), Error> {
        match self.in_process() {
            Some(verbs) => Ok(verbs.del(&req.env)?),
            None => Ok(cni::delegate::delegate_del(self.plugin(), &req.env, &req.stdin)?),
        }
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        match self.in_process() {
            Some(verbs) => Ok(verbs.check(&req.env)?),
            None => Ok(cni::delegate::delegate_check(self.plugin(), &req.env, &req.stdin)?),
        }
    }

    fn gc(&self, req: &Request) -> Result<(), Error> {
        match self.in_process() {
            Some(verbs) => Ok(verbs.gc()?),
            None => Ok(cni::delegate::delegate_gc(self.plugin(), &req.env, &req.stdin)?),
        }
    }

    fn status(&self, req: &Request) -> Result<(), Error> {
        match self.in_process() {
            Some(verbs) => Ok(verbs.status()?),
            None => Ok(cni::delegate::delegate_status(self.plugin(), &req.env, &req.stdin)?),
        }
    }
}
