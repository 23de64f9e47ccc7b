//! The CNI verbs of the `calico-ipam` executable; its `main` only hands this to the skeleton.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use ipnetwork::IpNetwork;

use cni::skel::{Plugin, Request as CniRequest};
use cni::{CniArgs, CniResult, Env, IpConfig};
use datastore::Datastore;

use calico_netconf::CalicoConf;
use model::handle::handle_id;
use model::net;

use crate::hint::BlockHint;
use crate::lock::HostLock;
use crate::{Assigned, Error, Ipam, Owner, Request};

/// How long an ADD or DEL waits for the host lock before answering "try again later".
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(20);

pub struct CalicoIpam;

/// What calico-ipam's process holds for one verb: the parsed netconf, the open store and
/// this node's name.
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

    fn verbs(&self) -> Verbs<'_> {
        Verbs { conf: &self.conf, store: &*self.store, host: &self.host, plugin: "" }
    }
}

/// The IPAM verbs over a netconf and a store that are already open: the `calico-ipam`
/// executable runs them, and so does calico-cni in its own process when `ipam.type` is
/// `calico-ipam` (one exec fewer per call, the same code and the same answers).
#[derive(Clone, Copy)]
pub struct Verbs<'a> {
    /// The netconf (the whole of it: `ipam.*`, `name`, `prevResult`, GC's attachments…).
    pub conf: &'a CalicoConf,
    /// The datastore the netconf selects.
    pub store: &'a dyn Datastore,
    /// This node's name, the owner of affine blocks.
    pub host: &'a str,
    /// The plugin these verbs allocate for, recorded in each handle: calico-cni passes its
    /// name (it writes an endpoint record for every allocation, which `calicoctl ipam check`
    /// then expects); empty for calico-ipam itself, whose callers write no such record.
    pub plugin: &'a str,
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

    fn about(&self) -> &'static str {
        "allocates container addresses from Calico IP pools (the CNI IPAM plugin that \
         calico-cni, or any plugin with \"ipam\": {\"type\": \"calico-ipam\"}, calls)"
    }

    fn add(&self, req: &CniRequest) -> Result<CniResult, Error> {
        Context::load(req)?.verbs().add(&req.env)
    }

    fn del(&self, req: &CniRequest) -> Result<(), Error> {
        Context::load(req)?.verbs().del(&req.env)
    }

    fn check(&self, req: &CniRequest) -> Result<(), Error> {
        Context::load(req)?.verbs().check(&req.env)
    }

    fn gc(&self, req: &CniRequest) -> Result<(), Error> {
        Context::load(req)?.verbs().gc()
    }

    fn status(&self, req: &CniRequest) -> Result<(), Error> {
        let ctx = Context::load(req).map_err(|e| Error::NotAvailable { source: Box::new(e) })?;
        ctx.verbs().status()
    }
}

impl Verbs<'_> {
    fn ipam(&self) -> Ipam<'_> {
        Ipam::new(self.store, self.host.to_owned())
    }

    /// The host's note of its last blocks, for a store where each read is a round trip
    /// (etcd); `None` for the embedded store, whose reads are local.
    fn hint(&self) -> Option<BlockHint> {
        self.store.round_trips().is_some().then(|| BlockHint::new(&self.conf.lock_path(), self.host))
    }

    fn lock(&self) -> Result<HostLock, Error> {
        HostLock::acquire(&self.conf.lock_path(), LOCK_TIMEOUT)
    }

    fn handle(&self, env: &Env) -> String {
        handle_id(&self.conf.common.name, &env.container_id, &env.ifname)
    }

    /// ADD: the handle's addresses (the same ones again for a repeated ADD).
    pub fn add(&self, env: &Env) -> Result<CniResult, Error> {
        Ok(result_of(&self.assign(env)?))
    }

    /// ADD's assignment, each address with the pool it came from (what calico-cni needs
    /// for the pool sets, so it lists no pools of its own).
    pub fn assign(&self, env: &Env) -> Result<Vec<Assigned>, Error> {
        let args = CniArgs::parse(&env.args)?;
        let mut ips: Vec<IpAddr> = args.ips.clone();
        for ip in self.conf.common.requested_ips()? {
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
                handle: self.handle(env),
                network: self.conf.common.name.clone(),
                container_id: env.container_id.clone(),
                ifname: env.ifname.clone(),
                extra,
                plugin: self.plugin.to_owned(),
            },
            v4: self.conf.assign_v4().then(|| self.conf.ipam.ipv4_pools.clone()),
            v6: self.conf.assign_v6().then(|| self.conf.ipam.ipv6_pools.clone()),
            ips,
        };
        let _lock = self.lock()?;
        let hint = self.hint();
        let ahead = hint.as_ref().map(BlockHint::load).unwrap_or_default();
        let assigned = self.ipam().prefetch(ahead.clone()).assign(&request)?;
        if let Some(hint) = hint {
            let used: Vec<_> = assigned.iter().map(|a| net::block_of(a.ip, a.pool.block_size)).collect();
            hint.store(&ahead, &used);
        }
        tracing::info!(handle = %request.owner.handle, ips = ?assigned.iter().map(|a| a.ip).collect::<Vec<_>>(), "assigned");
        Ok(assigned)
    }

    /// DEL: releases the handle; an unknown handle is not an error.
    pub fn del(&self, env: &Env) -> Result<(), Error> {
        let handle = self.handle(env);
        let _lock = self.lock()?;
        let ahead = self.hint().map(|hint| hint.load()).unwrap_or_default();
        let released = self.ipam().prefetch(ahead).release_handle(&handle)?;
        tracing::info!(%handle, ?released, "released");
        Ok(())
    }

    /// CHECK: the handle holds addresses, including every one of the prevResult's.
    pub fn check(&self, env: &Env) -> Result<(), Error> {
        let handle = self.handle(env);
        let held = self.ipam().ips_of_handle(&handle)?;
        if held.is_empty() {
            return Err(Error::HandleNotFound { handle });
        }
        if let Some(prev) = &self.conf.common.prev_result {
            let prev = CniResult::from_json(prev)?;
            for ip in prev.ips.iter().map(|c| c.address.ip()) {
                if !held.contains(&ip) {
                    return Err(Error::Mismatch { handle, expected: ip.to_string(), found: format!("{held:?}") });
                }
            }
        }
        Ok(())
    }

    /// GC: releases this network's allocations whose attachment is not in the netconf's
    /// `cni.dev/valid-attachments`.
    pub fn gc(&self) -> Result<(), Error> {
        let Some(valid) = &self.conf.common.valid_attachments else {
            return Err(cni::Error::InvalidConfig {
                field: "cni.dev/valid-attachments".into(),
                reason: "GC needs the list of valid attachments".into(),
            }
            .into());
        };
        let valid: HashSet<(String, String)> =
            valid.iter().map(|a| (a.container_id.clone(), a.ifname.clone())).collect();
        let _lock = self.lock()?;
        let released = self.ipam().gc(&self.conf.common.name, &valid)?;
        tracing::info!(?released, "garbage collected");
        Ok(())
    }

    /// STATUS: the store answers and takes writes, and a usable pool of each requested
    /// family has room.
    /// Every failure is [`Error::NotAvailable`] (code 50).
    pub fn status(&self) -> Result<(), Error> {
        let not_available = |e: Error| Error::NotAvailable { source: Box::new(e) };
        let mut families = Vec::new();
        if self.conf.assign_v4() {
            families.push(4);
        }
        if self.conf.assign_v6() {
            families.push(6);
        }
        self.store.check_writable().map_err(|e| not_available(e.into()))?;
        self.ipam().status(&families).map_err(not_available)
    }
}
