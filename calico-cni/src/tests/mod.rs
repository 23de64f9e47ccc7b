//! The verbs over fakes (see [`fake`]): the order of their steps, every rollback path of
//! ADD, DEL's idempotence and CHECK's failures, without root.

mod add;
mod check;
mod container_ip;
mod del;
mod edge;
mod fake;
mod profile;

use cni::skel::Request;
use cni::{CniResult, IpConfig};
use serde_json::json;

use crate::context::Context;
use crate::deps::Deps;
use crate::Error;
use fake::{FakeDataplane, FakeFirewall, FakeIpam, RecordingStore, Script};

pub const NETNS: &str = "/run/netns/c1";
pub const ADDRESS: &str = "10.0.0.5";

/// One host: the fakes sharing one script, and the netconf the verbs get.
pub struct Rig {
    pub script: Script,
    pub dp: FakeDataplane,
    pub store: RecordingStore,
    pub ipam: FakeIpam,
    pub fw: FakeFirewall,
    pub conf: serde_json::Value,
}

impl Rig {
    pub fn new() -> Rig {
        let script = Script::default();
        let address = IpConfig { address: ADDRESS.parse().unwrap(), gateway: None, interface: None };
        Rig {
            dp: FakeDataplane::new(&script, NETNS),
            store: RecordingStore::new(&script),
            fw: FakeFirewall::new(&script),
            ipam: FakeIpam::new(&script, CniResult { ips: vec![address], ..Default::default() }),
            // No profiles, so the step lists of the other tests need not show the profile's
            // read; tests/profile.rs covers the default (the network's name).
            conf: json!({"cniVersion": "1.0.0", "name": "net1", "type": "calico", "nodename": "node1",
                         "log_level": "warning", "ipam": {"type": "fake-ipam"}, "profiles": []}),
            script,
        }
    }

    /// A request as the runtime makes it, for container `id` in [`NETNS`], interface eth0.
    pub fn req(&self, command: &str, id: &str) -> Request {
        self.req_with(command, id, &self.conf, NETNS, "")
    }

    /// A request with its own netconf, CNI_NETNS (empty: none) and CNI_ARGS.
    pub fn req_with(&self, command: &str, id: &str, conf: &serde_json::Value, netns: &str, args: &str) -> Request {
        let env = cni::Env::from_lookup(|name| {
            Some(match name {
                "CNI_COMMAND" => command.to_owned(),
                "CNI_CONTAINERID" => id.to_owned(),
                "CNI_NETNS" => netns.to_owned(),
                "CNI_IFNAME" => "eth0".to_owned(),
                "CNI_PATH" => "/opt/cni/bin".to_owned(),
                "CNI_ARGS" => args.to_owned(),
                _ => return None,
            })
        })
        .unwrap();
        Request { env, version: cni::Version::V1_0_0, stdin: serde_json::to_vec(conf).unwrap() }
    }

    fn deps(&self) -> Deps<'_, FakeDataplane> {
        Deps { dataplane: &self.dp, store: &self.store, ipam: &self.ipam, firewall: &self.fw }
    }

    pub fn add(&self, req: &Request) -> Result<CniResult, Error> {
        crate::add::add(req, &Context::load(req)?, &self.deps())
    }

    pub fn del(&self, req: &Request) -> Result<(), Error> {
        crate::del::del(req, &Context::load(req)?, &self.deps())
    }

    pub fn check(&self, req: &Request) -> Result<(), Error> {
        crate::check::check(req, &Context::load(req)?, &self.deps())
    }

    pub fn gc(&self, req: &Request) -> Result<(), Error> {
        crate::gc::gc(req, &Context::load(req)?, &self.deps())
    }

    /// ADD container `id`, then forget the calls it made.
    pub fn attached(&self, id: &str) -> CniResult {
        let result = self.add(&self.req("ADD", id)).expect("ADD");
        self.script.clear();
        result
    }

    /// Nothing of a workload left: no link but `lo`, no allocation, no record.
    pub fn assert_nothing_left(&self, what: &str) {
        let kernel = self.dp.kernel.borrow();
        assert!(kernel.host_links.is_empty(), "{what}: host links left: {:?}", kernel.host_links);
        assert_eq!(kernel.netns[std::path::Path::new(NETNS)], ["lo".to_owned()].into(), "{what}: container links left");
        assert!(self.ipam.held.borrow().is_empty(), "{what}: addresses left allocated");
        let records: Vec<String> = self.store.keys().into_iter().filter(|k| !k.contains("/pool/")).collect();
        assert_eq!(records, Vec::<String>::new(), "{what}: records left");
        let owned: Vec<_> = self.fw.elements().into_iter().filter(|e| e.owner().is_some()).collect();
        assert!(owned.is_empty(), "{what}: port mappings left: {owned:?}");
        let policy = self.fw.policy.borrow();
        assert!(policy.is_empty(), "{what}: endpoint policy left: {policy:?}");
    }
}

/// The host veth of workload `id` on eth0.
pub fn host_veth(id: &str) -> String {
    dataplane::host_veth_name(id)
}

/// The endpoint record key of workload `id` on eth0.
pub fn endpoint_key(id: &str) -> String {
    model::keys::endpoint("node1", "cni", id, "eth0")
}
