//! Fakes of the verbs' dependencies that record every call in one shared [`Script`], in
//! order, and fail where they are told to: at the Nth call, or at the first call of a named
//! step. [`FakeDataplane`] keeps a small model of the kernel (host links, netns and their
//! links), so a test can also check what a failed ADD left behind.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::num::NonZeroI32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cni::skel::Request;
use cni::{CniResult, Failure};
use dataplane::{CheckSpec, ContainerConfig, ContainerInfo, HostInfo, VethEnd};
use datastore::memory::MemoryStore;
use datastore::{Compare, Datastore, KeyValue, Op, TxnOutcome};
use rtnetlink::packet_core::ErrorMessage;

use crate::deps::{Allocation, Dataplane, Ipam};
use crate::Error;

pub const EEXIST: i32 = 17;
pub const EBUSY: i32 = 16;

/// The steps the fakes record, as named in [`Script::calls`].
pub mod step {
    pub const STORE_GET: &str = "store.get";
    pub const STORE_READ_MANY: &str = "store.read_many";
    pub const STORE_LIST: &str = "store.list";
    pub const STORE_TXN: &str = "store.txn";
    pub const IPAM_ADD: &str = "ipam.add";
    pub const IPAM_DEL: &str = "ipam.del";
    pub const IPAM_CHECK: &str = "ipam.check";
    pub const IPAM_GC: &str = "ipam.gc";
    pub const OPEN_NETNS: &str = "netns.open";
    pub const OPEN_NETNS_FOR_TEARDOWN: &str = "netns.open_for_teardown";
    pub const CREATE_VETH: &str = "veth.create";
    pub const DELETE_HOST_LINK: &str = "host.delete_link";
    pub const DELETE_HOST_LINK_DETACHED: &str = "host.delete_link_detached";
    pub const SETUP_CONTAINER: &str = "container.setup";
    pub const SETUP_HOST: &str = "host.setup";
    pub const ROUTE_LOCALNET: &str = "host.route_localnet";
    pub const DELETE_CONTAINER_LINK: &str = "container.delete_link";
    pub const CHECK: &str = "dataplane.check";
    pub const ADD_CONTAINER_ADDRESS: &str = "container.add_address";
    pub const REMOVE_CONTAINER_ADDRESS: &str = "container.remove_address";
    pub const ADD_HOST_ROUTE: &str = "host.add_route";
    pub const REMOVE_HOST_ROUTE: &str = "host.remove_route";
    pub const FW_ATTACH_POLICY: &str = "firewall.attach_policy";
    pub const FW_DETACH_POLICY: &str = "firewall.detach_policy";
    pub const FW_FORGET: &str = "firewall.forget_addresses";
    pub const FW_MISSING: &str = "firewall.missing";
    pub const FW_ADD: &str = "firewall.add";
    pub const FW_REMOVE: &str = "firewall.remove";
    pub const FW_LIST: &str = "firewall.list";
}

enum Trigger {
    Step(&'static str),
    Call(usize),
}

/// A failure to inject: where, and with which errno (dataplane steps).
struct Fault {
    trigger: Trigger,
    errno: i32,
}

#[derive(Default)]
struct Log {
    calls: Vec<String>,
    faults: Vec<Fault>,
}

/// The shared call log and failure plan of the fakes.
#[derive(Clone, Default)]
pub struct Script(Arc<Mutex<Log>>);

impl Script {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first call of `step` from now on fails.
    pub fn fail_at(&self, step: &'static str) -> &Self {
        self.fail_at_with(step, EBUSY)
    }

    /// Like [`Script::fail_at`]; a dataplane step fails with `errno`.
    pub fn fail_at_with(&self, step: &'static str, errno: i32) -> &Self {
        self.log().faults.push(Fault { trigger: Trigger::Step(step), errno });
        self
    }

    /// The `n`th call (1-based, counting every call recorded so far) fails.
    pub fn fail_at_call(&self, n: usize) -> &Self {
        self.log().faults.push(Fault { trigger: Trigger::Call(n), errno: EBUSY });
        self
    }

    /// Every call so far, `<step> <argument>`.
    pub fn calls(&self) -> Vec<String> {
        self.log().calls.clone()
    }

    /// The step of every call so far.
    pub fn steps(&self) -> Vec<String> {
        self.calls().iter().map(|c| c.split(' ').next().unwrap_or_default().to_owned()).collect()
    }

    /// Forgets the calls (not the faults still to fire).
    pub fn clear(&self) {
        self.log().calls.clear();
    }

    /// Records a call; the errno of a fault that fires on it (each fires once).
    fn record(&self, step: &'static str, arg: impl std::fmt::Display) -> Option<i32> {
        let mut log = self.log();
        log.calls.push(format!("{step} {arg}"));
        let n = log.calls.len();
        let fired = log.faults.iter().position(|f| match f.trigger {
            Trigger::Step(s) => s == step,
            Trigger::Call(c) => c == n,
        })?;
        Some(log.faults.remove(fired).errno)
    }
}

/// A kernel NACK, as crates/dataplane reports one.
pub fn nack(op: &str, errno: i32) -> dataplane::Error {
    let mut msg = ErrorMessage::default();
    msg.code = NonZeroI32::new(-errno);
    dataplane::Error::Netlink { op: format!("{op} (injected)"), source: rtnetlink::Error::NetlinkError(msg) }
}

/// The container end's MAC the fake kernel picks.
pub const CONTAINER_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0x00, 0x00, 0x05];

/// What the fake kernel holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kernel {
    pub host_links: BTreeSet<String>,
    /// Each netns and its links.
    pub netns: BTreeMap<PathBuf, BTreeSet<String>>,
    /// A host veth's peer: its netns and name.
    pub peers: BTreeMap<String, (PathBuf, String)>,
    /// Addresses added one by one (`ip add`): `<netns>/<ifname>` → addresses.
    pub addresses: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Host routes added one by one: `<veth>` → addresses.
    pub routes: BTreeMap<String, BTreeSet<IpAddr>>,
}

/// A recording [`Dataplane`] over a model [`Kernel`].
pub struct FakeDataplane {
    script: Script,
    pub kernel: RefCell<Kernel>,
}

/// An open fake netns.
pub struct FakeNetns(PathBuf);

impl FakeDataplane {
    /// A kernel with one netns, `netns`, holding only `lo`.
    pub fn new(script: &Script, netns: &str) -> FakeDataplane {
        let mut kernel = Kernel::default();
        kernel.netns.insert(netns.into(), ["lo".to_owned()].into());
        FakeDataplane { script: script.clone(), kernel: RefCell::new(kernel) }
    }

    fn remove_host_link(&self, name: &str) -> bool {
        let mut k = self.kernel.borrow_mut();
        let existed = k.host_links.remove(name);
        if let Some((netns, peer)) = k.peers.remove(name) {
            if let Some(links) = k.netns.get_mut(&netns) {
                links.remove(&peer);
            }
        }
        existed
    }

    fn has_link(&self, netns: &Path, name: &str) -> bool {
        self.kernel.borrow().netns.get(netns).is_some_and(|l| l.contains(name))
    }
}

impl Dataplane for FakeDataplane {
    type Netns = FakeNetns;

    fn open_netns(&self, path: &Path) -> dataplane::Result<FakeNetns> {
        let missing =
            |errno| dataplane::Error::NetNsOpen { path: path.into(), source: std::io::Error::from_raw_os_error(errno) };
        if let Some(errno) = self.script.record(step::OPEN_NETNS, path.display()) {
            return Err(missing(errno));
        }
        if !self.kernel.borrow().netns.contains_key(path) {
            return Err(missing(2));
        }
        Ok(FakeNetns(path.into()))
    }

    fn open_netns_for_teardown(&self, path: &Path) -> Option<FakeNetns> {
        let failed = self.script.record(step::OPEN_NETNS_FOR_TEARDOWN, path.display()).is_some();
        (!failed && self.kernel.borrow().netns.contains_key(path)).then(|| FakeNetns(path.into()))
    }

    fn create_veth(&self, host: &VethEnd, peer: &VethEnd, container: &FakeNetns) -> dataplane::Result<()> {
        let op = format!("create veth {} with peer {}", host.name, peer.name);
        if let Some(errno) = self.script.record(step::CREATE_VETH, format!("{}/{}", host.name, peer.name)) {
            return Err(nack(&op, errno));
        }
        if self.kernel.borrow().host_links.contains(&host.name) || self.has_link(&container.0, &peer.name) {
            return Err(nack(&op, EEXIST));
        }
        let mut k = self.kernel.borrow_mut();
        k.host_links.insert(host.name.clone());
        k.netns.entry(container.0.clone()).or_default().insert(peer.name.clone());
        k.peers.insert(host.name.clone(), (container.0.clone(), peer.name.clone()));
        Ok(())
    }

    fn delete_host_link(&self, name: &str) -> dataplane::Result<bool> {
        if let Some(errno) = self.script.record(step::DELETE_HOST_LINK, name) {
            return Err(nack(&format!("delete link {name}"), errno));
        }
        Ok(self.remove_host_link(name))
    }

    fn delete_host_link_detached(&self, name: &str) -> dataplane::Result<bool> {
        if let Some(errno) = self.script.record(step::DELETE_HOST_LINK_DETACHED, name) {
            return Err(nack(&format!("delete link {name}"), errno));
        }
        Ok(self.remove_host_link(name))
    }

    fn setup_container(&self, container: &FakeNetns, config: &ContainerConfig<'_>) -> dataplane::Result<ContainerInfo> {
        if let Some(errno) = self.script.record(step::SETUP_CONTAINER, config.ifname) {
            return Err(nack(&format!("configure {}", config.ifname), errno));
        }
        if !self.has_link(&container.0, config.ifname) {
            return Err(dataplane::Error::LinkNotFound { name: config.ifname.into() });
        }
        Ok(ContainerInfo { index: 2, mac: CONTAINER_MAC })
    }

    fn setup_host(&self, host_veth: &str, _addresses: &[IpAddr]) -> dataplane::Result<HostInfo> {
        if let Some(errno) = self.script.record(step::SETUP_HOST, host_veth) {
            return Err(nack(&format!("configure {host_veth}"), errno));
        }
        if !self.kernel.borrow().host_links.contains(host_veth) {
            return Err(dataplane::Error::LinkNotFound { name: host_veth.into() });
        }
        Ok(HostInfo { index: 7 })
    }

    fn route_localnet(&self, host_veth: &str) -> dataplane::Result<()> {
        if let Some(errno) = self.script.record(step::ROUTE_LOCALNET, host_veth) {
            return Err(nack(&format!("route_localnet {host_veth}"), errno));
        }
        Ok(())
    }

    fn delete_container_link(&self, container: &FakeNetns, ifname: &str) -> bool {
        let failed = self.script.record(step::DELETE_CONTAINER_LINK, ifname).is_some();
        if failed || ifname == "lo" {
            return false;
        }
        let mut k = self.kernel.borrow_mut();
        k.peers.retain(|_, (netns, peer)| !(*netns == container.0 && peer == ifname));
        k.netns.get_mut(&container.0).is_some_and(|links| links.remove(ifname))
    }

    fn has_host_link(&self, name: &str) -> dataplane::Result<bool> {
        Ok(self.kernel.borrow().host_links.contains(name))
    }

    fn add_container_address(
        &self,
        container: &FakeNetns,
        ifname: &str,
        ip: IpAddr,
        _new: bool,
    ) -> dataplane::Result<()> {
        if let Some(errno) = self.script.record(step::ADD_CONTAINER_ADDRESS, ip) {
            return Err(nack(&format!("add address {ip}"), errno));
        }
        if !self.has_link(&container.0, ifname) {
            return Err(dataplane::Error::LinkNotFound { name: ifname.into() });
        }
        let key = format!("{}/{ifname}", container.0.display());
        self.kernel.borrow_mut().addresses.entry(key).or_default().insert(ip);
        Ok(())
    }

    fn remove_container_address(
        &self,
        container: &FakeNetns,
        ifname: &str,
        ip: IpAddr,
        _last_of_family: bool,
    ) -> dataplane::Result<bool> {
        if let Some(errno) = self.script.record(step::REMOVE_CONTAINER_ADDRESS, ip) {
            return Err(nack(&format!("delete address {ip}"), errno));
        }
        let key = format!("{}/{ifname}", container.0.display());
        Ok(self.kernel.borrow_mut().addresses.get_mut(&key).is_some_and(|a| a.remove(&ip)))
    }

    fn add_host_address_route(&self, host_veth: &str, ip: IpAddr, _new: bool) -> dataplane::Result<bool> {
        if let Some(errno) = self.script.record(step::ADD_HOST_ROUTE, ip) {
            return Err(nack(&format!("add route {ip}"), errno));
        }
        if !self.kernel.borrow().host_links.contains(host_veth) {
            return Err(dataplane::Error::LinkNotFound { name: host_veth.into() });
        }
        Ok(self.kernel.borrow_mut().routes.entry(host_veth.into()).or_default().insert(ip))
    }

    fn remove_host_address_route(&self, host_veth: &str, ip: IpAddr) -> dataplane::Result<bool> {
        if let Some(errno) = self.script.record(step::REMOVE_HOST_ROUTE, ip) {
            return Err(nack(&format!("delete route {ip}"), errno));
        }
        Ok(self.kernel.borrow_mut().routes.get_mut(host_veth).is_some_and(|a| a.remove(&ip)))
    }

    fn check(&self, container: &FakeNetns, spec: &CheckSpec<'_>) -> dataplane::Result<()> {
        if self.script.record(step::CHECK, spec.host_veth).is_some() {
            return Err(dataplane::Error::Check(format!("host interface {} is down (injected)", spec.host_veth)));
        }
        if !self.has_link(&container.0, spec.ifname) {
            return Err(dataplane::Error::Check(format!("container interface {} does not exist", spec.ifname)));
        }
        if !self.kernel.borrow().host_links.contains(spec.host_veth) {
            return Err(dataplane::Error::Check(format!("host interface {} does not exist", spec.host_veth)));
        }
        Ok(())
    }
}

/// A recording [`Ipam`] that hands out `result` and remembers which containers hold it.
pub struct FakeIpam {
    script: Script,
    pub result: CniResult,
    /// The pools ADD says the addresses came from (`None`: like an IPAM exec'd, which
    /// does not say).
    pub pools: RefCell<Option<Vec<model::pool::Pool>>>,
    pub held: RefCell<BTreeSet<String>>,
}

impl FakeIpam {
    pub fn new(script: &Script, result: CniResult) -> FakeIpam {
        FakeIpam { script: script.clone(), result, pools: RefCell::default(), held: RefCell::default() }
    }

    fn fail(&self, step: &'static str, req: &Request) -> Result<(), Error> {
        match self.script.record(step, &req.env.container_id) {
            Some(_) => Err(cni::Error::Delegated {
                plugin: "fake-ipam".into(),
                failure: Failure::new(cni::code::TRY_AGAIN_LATER, format!("{step} refused (injected)")),
            }
            .into()),
            None => Ok(()),
        }
    }
}

impl Ipam for FakeIpam {
    fn add(&self, req: &Request) -> Result<Allocation, Error> {
        self.fail(step::IPAM_ADD, req)?;
        self.held.borrow_mut().insert(req.env.container_id.clone());
        Ok(Allocation { result: self.result.clone(), pools: self.pools.borrow().clone() })
    }

    fn del(&self, req: &Request) -> Result<(), Error> {
        self.fail(step::IPAM_DEL, req)?;
        self.held.borrow_mut().remove(&req.env.container_id);
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), Error> {
        self.fail(step::IPAM_CHECK, req)
    }

    fn gc(&self, req: &Request) -> Result<(), Error> {
        self.fail(step::IPAM_GC, req)
    }

    fn status(&self, _req: &Request) -> Result<(), Error> {
        Ok(())
    }
}

/// A [`MemoryStore`] whose reads and writes are recorded (and can fail) like the other calls.
pub struct RecordingStore {
    script: Script,
    pub inner: MemoryStore,
}

impl RecordingStore {
    pub fn new(script: &Script) -> RecordingStore {
        RecordingStore { script: script.clone(), inner: MemoryStore::new() }
    }

    fn fail(&self, step: &'static str, arg: &str) -> Result<(), datastore::Error> {
        match self.script.record(step, arg) {
            Some(_) => Err(datastore::Error::Unavailable { reason: format!("{step} (injected)"), source: None }),
            None => Ok(()),
        }
    }

    /// Every key held.
    pub fn keys(&self) -> Vec<String> {
        self.inner.list("").unwrap_or_default().into_iter().map(|kv| kv.key).collect()
    }
}

impl Datastore for RecordingStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, datastore::Error> {
        self.fail(step::STORE_GET, key)?;
        self.inner.get(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, datastore::Error> {
        self.fail(step::STORE_LIST, prefix)?;
        self.inner.list(prefix)
    }

    /// One step, as it is one request on etcd.
    fn read_many(&self, reads: &[datastore::Read]) -> Result<Vec<Vec<KeyValue>>, datastore::Error> {
        let what: Vec<&str> = reads
            .iter()
            .map(|r| match r {
                datastore::Read::Key(k) | datastore::Read::Prefix(k) => k.as_str(),
            })
            .collect();
        self.fail(step::STORE_READ_MANY, &what.join(","))?;
        self.inner.read_many(reads)
    }

    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<TxnOutcome, datastore::Error> {
        let what: Vec<String> = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, .. } => format!("put:{key}"),
                Op::Delete { key } => format!("delete:{key}"),
            })
            .collect();
        self.fail(step::STORE_TXN, &what.join(","))?;
        self.inner.txn(compares, ops)
    }
}

/// The firewall: crates/firewall's in-memory table, each call recorded in the script as
/// `<step> <element>,<element>...` and failing (EBUSY) where the script says.
pub struct FakeFirewall {
    script: Script,
    pub table: firewall::fake::Recording,
    /// What the policy calls left: veth → its addresses in the tag sets.
    pub policy: RefCell<BTreeMap<String, BTreeSet<IpAddr>>>,
}

impl FakeFirewall {
    pub fn new(script: &Script) -> FakeFirewall {
        FakeFirewall { script: script.clone(), table: firewall::fake::Recording::new(), policy: RefCell::default() }
    }

    fn record(&self, step: &'static str, elements: &[firewall::Element]) -> firewall::Result<()> {
        let arg: Vec<String> = elements.iter().map(ToString::to_string).collect();
        self.record_words(step, &arg.join(","))
    }

    fn record_words(&self, step: &'static str, arg: &str) -> firewall::Result<()> {
        match self.script.record(step, arg) {
            Some(errno) => Err(firewall::Error::Kernel { op: step, source: std::io::Error::from_raw_os_error(errno) }),
            None => Ok(()),
        }
    }

    pub fn elements(&self) -> Vec<firewall::Element> {
        self.table.elements.borrow().clone()
    }
}

impl firewall::Firewall for FakeFirewall {
    fn ensure_table(&self) -> firewall::Result<bool> {
        self.table.ensure_table()
    }
    fn missing(&self, elements: &[firewall::Element]) -> firewall::Result<Vec<firewall::Element>> {
        self.record(step::FW_MISSING, elements)?;
        self.table.missing(elements)
    }
    fn add(&self, elements: &[firewall::Element]) -> firewall::Result<()> {
        self.record(step::FW_ADD, elements)?;
        self.table.add(elements)
    }
    fn remove(&self, elements: &[firewall::Element]) -> firewall::Result<()> {
        self.record(step::FW_REMOVE, elements)?;
        self.table.remove(elements)
    }
    fn list(&self) -> firewall::Result<Vec<firewall::Element>> {
        self.record(step::FW_LIST, &[])?;
        self.table.list()
    }
    fn attach_policy(
        &self,
        ep: &firewall::policy::Endpoint,
        _profiles: &[model::profile::Profile],
    ) -> firewall::Result<()> {
        let addrs: Vec<String> = ep.addrs.iter().map(ToString::to_string).collect();
        self.record_words(step::FW_ATTACH_POLICY, &format!("{}={}", ep.veth, addrs.join(",")))?;
        self.policy.borrow_mut().insert(ep.veth.clone(), ep.addrs.iter().copied().collect());
        Ok(())
    }
    fn detach_policy(&self, veth: &str, addrs: &[IpAddr]) -> firewall::Result<()> {
        let words: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        self.record_words(step::FW_DETACH_POLICY, &format!("{veth}={}", words.join(",")))?;
        self.policy.borrow_mut().remove(veth);
        Ok(())
    }
    fn check_policy(&self, veth: &str) -> firewall::Result<Option<String>> {
        let present = self.policy.borrow().contains_key(veth);
        Ok((!present).then(|| format!("chain ei-{veth}")))
    }
    fn forget_addresses(&self, addrs: &[IpAddr]) -> firewall::Result<()> {
        let words: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        self.record_words(step::FW_FORGET, &words.join(","))?;
        for held in self.policy.borrow_mut().values_mut() {
            held.retain(|a| !addrs.contains(a));
        }
        Ok(())
    }
}
