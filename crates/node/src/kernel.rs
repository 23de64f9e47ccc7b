//! What the agent asks of the kernel, behind a small trait: the real one over the
//! dataplane crate's netlink facade, and a recording fake for the tests (passed in, never
//! chosen by `cfg!(test)`).

use std::sync::Mutex;

use dataplane::{IpFamily, Link, Netlink, TaggedRoute};
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
}
