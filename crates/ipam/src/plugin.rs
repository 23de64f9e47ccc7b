//! The CNI verbs of the `calico-ipam` executable; its `main` only hands this to the skeleton.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use ipnetwork::IpNetwork;

use cni::skel::{Plugin, Request as CniRequest};
use cni::{CniArgs, CniResult, IpConfig};
use datastore::Datastore;

use crate::handle::handle_id;
use crate::lock::HostLock;
use crate::{Assigned, CalicoConf, Error, Ipam, Owner, Request};

/// How long an ADD or DEL waits for the host lock before answering "try again later".
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(20);

pub struct CalicoIpam;

/// Everything a verb needs: the parsed netconf, the open store and this node's name.
struct Context {
    conf: CalicoConf,
    store: Box<dyn Datastore>,
    host: String,
    verb: &'static str,
}

impl Context {
    fn load(req: &CniRequest) -> Result<Context, Error> {
        let conf = CalicoConf::parse(&req.stdin)?;
        cni::logging::init(conf.log_level.as_deref(), conf.log_file_path.as_deref());
        let host = conf.nodename()?;
        let store = datastore::config::open(&conf.store_config())?;
        Ok(Context { conf, store, host, verb: req.env.command.as_str() })
    }

    fn ipam(&self) -> Ipam<'_> {
        Ipam::new(&*self.store, self.host.clone())
    }

    fn lock(&self) -> Result<HostLock, Error> {
        HostLock::acquire(&self.conf.lock_path(), LOCK_TIMEOUT)
    }

    fn handle(&self, req: &CniRequest) -> String {
        handle_id(&self.conf.common.name, &req.env.container_id, &req.env.ifname)
    }
}

/// The IPAM result: each address as a host route-sized prefix (/32, /128), as Calico does.
pub fn result_of(assigned: &[Assigned]) -> CniResult {
    CniResult {
        ips: assigned
            .iter()
            .map(|a| IpConfig { address: IpNetwork::from(a.ip), gateway: None, interface: None })
            .collect(),
        ..Default::default()
    }
}

/// What the verb cost in datastore round trips (etcd), logged however the verb ended.
impl Drop for Context {
    fn drop(&mut self) {
        if let Some(n) = self.store.round_trips() {
            tracing::debug!(round_trips = n, verb = self.verb, "datastore round trips");
        }
    }
}

impl Plugin for CalicoIpam {
    type Error = Error;

    fn add(&self, req: &CniRequest) -> Result<CniResult, Error> {
        let ctx = Context::load(req)?;
        let args = CniArgs::parse(&req.env.args)?;
        let mut ips: Vec<IpAddr> = args.ips.clone();
        for ip in ctx.conf.common.requested_ips()? {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        let mut extra = std::collections::BTreeMap::new();
        if let (Some(ns), Some(pod)) = (&args.k8s_pod_namespace, &args.k8s_pod_name) {
            extra.insert("namespace".to_owned(), ns.clone());
            extra.insert("pod".to_owned(), pod.clone());
        }
        let request = Request {
            owner: Owner {
                handle: ctx.handle(req),
                network: ctx.conf.common.name.clone(),
                container_id: req.env.container_id.clone(),
                ifname: req.env.ifname.clone(),
                extra,
            },
            v4: ctx.conf.assign_v4().then(|| ctx.conf.ipam.ipv4_pools.clone()),
            v6: ctx.conf.assign_v6().then(|| ctx.conf.ipam.ipv6_pools.clone()),
            ips,
        };
        let _lock = ctx.lock()?;
        let assigned = ctx.ipam().assign(&request)?;
        tracing::info!(handle = %request.owner.handle, ips = ?assigned.iter().map(|a| a.ip).collect::<Vec<_>>(), "assigned");
        Ok(result_of(&assigned))
    }

    fn del(&self, req: &CniRequest) -> Result<(), Error> {
        let ctx = Context::load(req)?;
        let handle = ctx.handle(req);
        let _lock = ctx.lock()?;
        let released = ctx.ipam().release_handle(&handle)?;
        tracing::info!(%handle, ?released, "released");
        Ok(())
    }

    fn check(&self, req: &CniRequest) -> Result<(), Error> {
        let ctx = Context::load(req)?;
        let handle = ctx.handle(req);
        let held = ctx.ipam().ips_of_handle(&handle)?;
        if held.is_empty() {
            return Err(Error::HandleNotFound { handle });
        }
        if let Some(prev) = &ctx.conf.common.prev_result {
            let prev = CniResult::from_json(prev)?;
            for ip in prev.ips.iter().map(|c| c.address.ip()) {
                if !held.contains(&ip) {
                    return Err(Error::Mismatch { handle, expected: ip.to_string(), found: format!("{held:?}") });
                }
            }
        }
        Ok(())
    }

    fn gc(&self, req: &CniRequest) -> Result<(), Error> {
        let ctx = Context::load(req)?;
        let Some(valid) = &ctx.conf.common.valid_attachments else {
            return Err(cni::Error::InvalidConfig {
                field: "cni.dev/valid-attachments".into(),
                reason: "GC needs the list of valid attachments".into(),
            }
            .into());
        };
        let valid: HashSet<(String, String)> =
            valid.iter().map(|a| (a.container_id.clone(), a.ifname.clone())).collect();
        let _lock = ctx.lock()?;
        let released = ctx.ipam().gc(&ctx.conf.common.name, &valid)?;
        tracing::info!(?released, "garbage collected");
        Ok(())
    }

    fn status(&self, req: &CniRequest) -> Result<(), Error> {
        let not_available = |e: Error| Error::NotAvailable { source: Box::new(e) };
        let ctx = Context::load(req).map_err(not_available)?;
        let mut families = Vec::new();
        if ctx.conf.assign_v4() {
            families.push(4);
        }
        if ctx.conf.assign_v6() {
            families.push(6);
        }
        ctx.store.ping().map_err(|e| not_available(e.into()))?;
        ctx.ipam().status(&families).map_err(not_available)
    }
}
