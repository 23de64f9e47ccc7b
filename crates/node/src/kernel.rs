//! What the agent asks of the kernel, behind a small trait: the real one over the
//! dataplane crate's netlink facade, and a recording fake for the tests (passed in, never
//! chosen by `cfg!(test)`).

use std::sync::Mutex;

use dataplane::{FdbEntry, IpFamily, Link, NeighbourInfo, NeighbourSpec, Netlink, TaggedRoute, VxlanLink, VxlanSpec};
use ipnetwork::IpNetwork;

/// One outcome per route of a batch; the outer error is for the batch as a whole.
pub type BatchOutcome = dataplane::Result<Vec<dataplane::Result<()>>>;

/// The kernel operations of the agent.
pub trait Kernel: Send + Sync {
    /// Every link of the host.
    fn links(&self) -> dataplane::Result<Vec<Link>>;
    /// The addresses of link `index`.
    fn addresses(&self, index: u32) -> dataplane::Result<Vec<IpNetwork>>;
    /// Every route of the main table of `family`.
    fn routes(&self, family: IpFamily) -> dataplane::Result<Vec<TaggedRoute>>;
    /// Add or replace in place (same destination and metric) each route.
    fn replace_routes(&self, routes: &[TaggedRoute]) -> BatchOutcome;
    /// Delete each route; one that is not there counts as deleted.
    fn delete_routes(&self, routes: &[TaggedRoute]) -> BatchOutcome;
    /// The VXLAN device `name`, if there is one.
    fn vxlan(&self, name: &str) -> dataplane::Result<Option<VxlanLink>>;
    /// Create a VXLAN device, up; returns its index.
    fn create_vxlan(&self, spec: &VxlanSpec) -> dataplane::Result<u32>;
    /// Delete link `name`; `false` when there was none.
    fn delete_link(&self, name: &str) -> dataplane::Result<bool>;
    /// Set the MTU of link `index`.
    fn set_mtu(&self, index: u32, mtu: u32) -> dataplane::Result<()>;
    /// Set link `index` administratively up.
    fn set_up(&self, index: u32) -> dataplane::Result<()>;
    /// Add an address to link `index`.
    fn add_address(&self, index: u32, address: IpNetwork) -> dataplane::Result<()>;
    /// Remove an address from link `index`.
    fn delete_address(&self, index: u32, address: IpNetwork) -> dataplane::Result<bool>;
    /// The neighbour entries of link `index`.
    fn neighbours(&self, index: u32) -> dataplane::Result<Vec<NeighbourInfo>>;
    /// Add or replace a permanent neighbour entry.
    fn add_neighbour(&self, spec: &NeighbourSpec) -> dataplane::Result<()>;
    /// Delete a neighbour entry.
    fn delete_neighbour(&self, spec: &NeighbourSpec) -> dataplane::Result<bool>;
    /// The FDB entries (with a remote) of link `index`.
    fn fdb(&self, index: u32) -> dataplane::Result<Vec<FdbEntry>>;
    /// Add or replace a permanent FDB entry.
    fn add_fdb(&self, index: u32, entry: &FdbEntry) -> dataplane::Result<()>;
    /// Delete an FDB entry.
    fn delete_fdb(&self, index: u32, entry: &FdbEntry) -> dataplane::Result<bool>;
}

/// The host's kernel, over netlink.
pub struct NetlinkKernel {
    netlink: Netlink,
}

impl NetlinkKernel {
    /// A client for the calling thread's network namespace.
    pub fn new() -> dataplane::Result<NetlinkKernel> {
        Ok(NetlinkKernel { netlink: Netlink::current()? })
    }
}

impl Kernel for NetlinkKernel {
    fn links(&self) -> dataplane::Result<Vec<Link>> {
        self.netlink.links()
    }

    fn addresses(&self, index: u32) -> dataplane::Result<Vec<IpNetwork>> {
        self.netlink.addresses(index)
    }

    fn routes(&self, family: IpFamily) -> dataplane::Result<Vec<TaggedRoute>> {
        self.netlink.tagged_routes(family)
    }

    fn replace_routes(&self, routes: &[TaggedRoute]) -> BatchOutcome {
        self.netlink.replace_routes(routes)
    }

    fn delete_routes(&self, routes: &[TaggedRoute]) -> BatchOutcome {
        self.netlink.delete_routes(routes)
    }

    fn vxlan(&self, name: &str) -> dataplane::Result<Option<VxlanLink>> {
        self.netlink.vxlan(name)
    }

    fn create_vxlan(&self, spec: &VxlanSpec) -> dataplane::Result<u32> {
        self.netlink.create_vxlan(spec)
    }

    fn delete_link(&self, name: &str) -> dataplane::Result<bool> {
        self.netlink.delete_link(name)
    }

    fn set_mtu(&self, index: u32, mtu: u32) -> dataplane::Result<()> {
        self.netlink.set_mtu(index, mtu)
    }

    fn set_up(&self, index: u32) -> dataplane::Result<()> {
        self.netlink.set_up(index)
    }

    fn add_address(&self, index: u32, address: IpNetwork) -> dataplane::Result<()> {
        self.netlink.add_address(index, address)
    }

    fn delete_address(&self, index: u32, address: IpNetwork) -> dataplane::Result<bool> {
        self.netlink.delete_address(index, address)
    }

    fn neighbours(&self, index: u32) -> dataplane::Result<Vec<NeighbourInfo>> {
        self.netlink.neighbours(index)
    }

    fn add_neighbour(&self, spec: &NeighbourSpec) -> dataplane::Result<()> {
        self.netlink.add_neighbour(spec)
    }

    fn delete_neighbour(&self, spec: &NeighbourSpec) -> dataplane::Result<bool> {
        self.netlink.delete_neighbour(spec)
    }

    fn fdb(&self, index: u32) -> dataplane::Result<Vec<FdbEntry>> {
        self.netlink.fdb(index)
    }

    fn add_fdb(&self, index: u32, entry: &FdbEntry) -> dataplane::Result<()> {
        self.netlink.add_fdb(index, entry)
    }

    fn delete_fdb(&self, index: u32, entry: &FdbEntry) -> dataplane::Result<bool> {
        self.netlink.delete_fdb(index, entry)
    }
}

/// One call the fake saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `routes(family)`.
    ListRoutes(IpFamily),
    /// `replace_routes`.
    Replace(Vec<TaggedRoute>),
    /// `delete_routes`.
    Delete(Vec<TaggedRoute>),
    /// Any other change, in words (`create vxlan.calico`, `add neighbour ...`).
    Change(String),
}

/// What the fake kernel holds.
#[derive(Clone, Debug, Default)]
pub struct FakeState {
    /// Links, with their addresses.
    pub links: Vec<(Link, Vec<IpNetwork>)>,
    /// The main table.
    pub routes: Vec<TaggedRoute>,
    /// Every call, in order.
    pub calls: Vec<Call>,
    /// Routes whose replace fails (as the kernel would with, say, ENETUNREACH).
    pub failing: Vec<IpNetwork>,
    /// VXLAN devices (their links are in `links` too).
    pub vxlans: Vec<VxlanLink>,
    /// Neighbour entries.
    pub neighbours: Vec<NeighbourSpec>,
    /// FDB entries by link.
    pub fdb: Vec<(u32, FdbEntry)>,
}

/// A kernel in memory that records what it was asked: replace and delete behave as the
/// kernel's do (one route per destination and metric).
#[derive(Debug, Default)]
pub struct FakeKernel {
    /// Its state; tests read and change it directly.
    pub state: Mutex<FakeState>,
}

impl FakeKernel {
    /// A host with an uplink `eth0` (index 2) holding `addresses`, and `lo`.
    pub fn with_uplink(addresses: &[&str]) -> FakeKernel {
        let link = |index, name: &str| Link { index, name: name.into(), mac: None, mtu: 1500, up: true, kind: None };
        let state = FakeState {
            links: vec![
                (link(1, "lo"), vec!["127.0.0.1/8".parse().expect("net")]),
                (link(2, "eth0"), addresses.iter().map(|a| a.parse().expect("address")).collect()),
            ],
            ..FakeState::default()
        };
        FakeKernel { state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The routes of protocol `protocol`, sorted by destination.
    pub fn routes_of(&self, protocol: u8) -> Vec<TaggedRoute> {
        let mut routes: Vec<TaggedRoute> =
            self.lock().routes.iter().filter(|r| r.protocol == protocol).copied().collect();
        routes.sort_by_key(|r| r.dst);
        routes
    }

    /// Add the link the kernel's IPIP module makes in every namespace: `tunl0`, down, MTU
    /// 1480, no address. Returns its index.
    pub fn add_tunl0(&self) -> u32 {
        let mut state = self.lock();
        let index = state.links.iter().map(|(l, _)| l.index).max().unwrap_or(0) + 1;
        let link = Link { index, name: "tunl0".into(), mac: None, mtu: 1480, up: false, kind: Some("ipip".into()) };
        state.links.push((link, Vec::new()));
        index
    }

    /// Take the calls recorded so far.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }
}

fn family_of(net: &IpNetwork) -> IpFamily {
    if net.is_ipv4() {
        IpFamily::V4
    } else {
        IpFamily::V6
    }
}

impl Kernel for FakeKernel {
    fn links(&self) -> dataplane::Result<Vec<Link>> {
        Ok(self.lock().links.iter().map(|(l, _)| l.clone()).collect())
    }

    fn addresses(&self, index: u32) -> dataplane::Result<Vec<IpNetwork>> {
        Ok(self.lock().links.iter().find(|(l, _)| l.index == index).map(|(_, a)| a.clone()).unwrap_or_default())
    }

    fn routes(&self, family: IpFamily) -> dataplane::Result<Vec<TaggedRoute>> {
        let mut state = self.lock();
        state.calls.push(Call::ListRoutes(family));
        Ok(state.routes.iter().filter(|r| family_of(&r.dst) == family).copied().collect())
    }

    fn replace_routes(&self, routes: &[TaggedRoute]) -> BatchOutcome {
        let mut state = self.lock();
        state.calls.push(Call::Replace(routes.to_vec()));
        let mut outcomes = Vec::new();
        for route in routes {
            if state.failing.contains(&route.dst) {
                outcomes.push(Err(dataplane::Error::Invalid {
                    what: "route",
                    value: route.describe(),
                    reason: "the fake kernel refuses it",
                }));
                continue;
            }
            state.routes.retain(|r| !(r.dst == route.dst && r.metric == route.metric));
            state.routes.push(*route);
            outcomes.push(Ok(()));
        }
        Ok(outcomes)
    }

    fn delete_routes(&self, routes: &[TaggedRoute]) -> BatchOutcome {
        let mut state = self.lock();
        state.calls.push(Call::Delete(routes.to_vec()));
        for route in routes {
            state.routes.retain(|r| r != route);
        }
        Ok(routes.iter().map(|_| Ok(())).collect())
    }

    fn vxlan(&self, name: &str) -> dataplane::Result<Option<VxlanLink>> {
        Ok(self.lock().vxlans.iter().find(|v| v.spec.name == name).cloned())
    }

    fn create_vxlan(&self, spec: &VxlanSpec) -> dataplane::Result<u32> {
        let mut state = self.lock();
        state.calls.push(Call::Change(format!("create {}", spec.name)));
        let index = state.links.iter().map(|(l, _)| l.index).max().unwrap_or(0) + 1;
        let link = Link {
            index,
            name: spec.name.clone(),
            mac: Some(spec.mac),
            mtu: spec.mtu,
            up: true,
            kind: Some("vxlan".into()),
        };
        state.links.push((link, Vec::new()));
        state.vxlans.push(VxlanLink { index, up: true, spec: spec.clone() });
        Ok(index)
    }

    fn delete_link(&self, name: &str) -> dataplane::Result<bool> {
        let mut state = self.lock();
        state.calls.push(Call::Change(format!("delete {name}")));
        let Some(index) = state.links.iter().find(|(l, _)| l.name == name).map(|(l, _)| l.index) else {
            return Ok(false);
        };
        state.links.retain(|(l, _)| l.index != index);
        state.vxlans.retain(|v| v.index != index);
        state.neighbours.retain(|n| n.index != index);
        state.fdb.retain(|(i, _)| *i != index);
        state.routes.retain(|r| !matches!(r.target, dataplane::RouteTarget::Via { oif, .. } if oif == index));
        Ok(true)
    }

    fn set_mtu(&self, index: u32, mtu: u32) -> dataplane::Result<()> {
        let mut state = self.lock();
        state.calls.push(Call::Change(format!("set #{index} mtu {mtu}")));
        for v in state.vxlans.iter_mut().filter(|v| v.index == index) {
            v.spec.mtu = mtu;
        }
        for (l, _) in state.links.iter_mut().filter(|(l, _)| l.index == index) {
            l.mtu = mtu;
        }
        Ok(())
    }

    fn set_up(&self, index: u32) -> dataplane::Result<()> {
        let mut state = self.lock();
        state.calls.push(Call::Change(format!("set #{index} up")));
        for (l, _) in state.links.iter_mut().filter(|(l, _)| l.index == index) {
            l.up = true;
        }
        Ok(())
    }

    fn add_address(&self, index: u32, address: IpNetwork) -> dataplane::Result<()> {
        let mut state = self.lock();
        state.calls.push(Call::Change(format!("add address {address} to #{index}")));
        if let Some((_, addresses)) = state.links.iter_mut().find(|(l, _)| l.index == index) {
            addresses.push(address);
        }
        Ok(())
    }

    fn delete_address(&self, index: u32, address: IpNetwork) -> dataplane::Result<bool> {
        let mut state = self.lock();
        state.calls.push(Call::Change(format!("delete address {address} from #{index}")));
        let Some((_, addresses)) = state.links.iter_mut().find(|(l, _)| l.index == index) else {
            return Ok(false);
        };
        let before = addresses.len();
        addresses.retain(|a| *a != address);
        Ok(addresses.len() != before)
    }

    fn neighbours(&self, index: u32) -> dataplane::Result<Vec<NeighbourInfo>> {
        let state = self.lock();
        let found = state.neighbours.iter().filter(|n| n.index == index);
        Ok(found.map(|n| NeighbourInfo { index, ip: n.ip, mac: Some(n.mac), permanent: true }).collect())
    }

    fn add_neighbour(&self, spec: &NeighbourSpec) -> dataplane::Result<()> {
        let mut state = self.lock();
        state.calls.push(Call::Change(format!("add {spec}")));
        state.neighbours.retain(|n| !(n.index == spec.index && n.ip == spec.ip));
        state.neighbours.push(*spec);
        Ok(())
    }

    fn delete_neighbour(&self, spec: &NeighbourSpec) -> dataplane::Result<bool> {
        let mut state = self.lock();
        state.calls.push(Call::Change(format!("delete {spec}")));
        let before = state.neighbours.len();
        state.neighbours.retain(|n| !(n.index == spec.index && n.ip == spec.ip));
        Ok(state.neighbours.len() != before)
    }

    fn fdb(&self, index: u32) -> dataplane::Result<Vec<FdbEntry>> {
        Ok(self.lock().fdb.iter().filter(|(i, _)| *i == index).map(|(_, e)| *e).collect())
    }

    fn add_fdb(&self, index: u32, entry: &FdbEntry) -> dataplane::Result<()> {
        let mut state = self.lock();
        state.calls.push(Call::Change(format!("add {entry}")));
        state.fdb.retain(|(i, e)| !(*i == index && e.mac == entry.mac));
        state.fdb.push((index, *entry));
        Ok(())
    }

    fn delete_fdb(&self, index: u32, entry: &FdbEntry) -> dataplane::Result<bool> {
        let mut state = self.lock();
        state.calls.push(Call::Change(format!("delete {entry}")));
        let before = state.fdb.len();
        state.fdb.retain(|(i, e)| !(*i == index && e == entry));
        Ok(state.fdb.len() != before)
    }
}
