//! A host netns set up for calico-cni: the netns the plugin runs in, a CNI_PATH with our
//! plugins, and an embedded store holding the test's pools; what the dataplane tests share.

use std::net::IpAddr;

use serde_json::{json, Value};

use crate::netns::{CniBinDir, Netns};
use crate::{result_ips, with_prev, Backend, Invocation, Outcome};

pub struct CniHost {
    pub host: Netns,
    pub bins: CniBinDir,
    pub store: Backend,
    pools: Vec<String>,
    netconf: Value,
}

impl CniHost {
    /// `host` with the pools `pools` in a fresh embedded store. `netconf` holds the fields of
    /// every netconf beyond the ones [`CniHost::conf`] sets (at least the network `name`).
    pub fn new(host: Netns, pools: &[&str], netconf: Value) -> CniHost {
        let store = Backend::embedded();
        for pool in pools {
            store.ctl(&["pool", "add", pool]).success();
        }
        let pools = pools.iter().map(|p| p.to_string()).collect();
        CniHost { host, bins: CniBinDir::new(), store, pools, netconf }
    }

    /// A calico netconf of `version` for node `node1` (debug log) with the IPAM section
    /// `ipam` (calico-ipam unless it names a type), on this store.
    pub fn conf(&self, version: &str, ipam: Value) -> Vec<u8> {
        let mut c = self.netconf.clone();
        for (field, value) in [
            ("cniVersion", json!(version)),
            ("type", json!("calico")),
            ("nodename", json!("node1")),
            ("log_level", json!("debug")),
            ("ipam", ipam),
        ] {
            c[field] = value;
        }
        if c["ipam"].get("type").is_none() {
            c["ipam"]["type"] = json!("calico-ipam");
        }
        self.store.apply(&mut c);
        serde_json::to_vec(&c).unwrap()
    }

    /// An invocation for the container in `netns`, with our CNI_PATH.
    pub fn inv(&self, command: &str, id: &str, netns: &Netns) -> Invocation {
        Invocation::new(command, id).netns(&netns.path()).path(&self.bins.path())
    }

    /// Exec calico-cni in the host netns.
    pub fn run(&self, inv: &Invocation, stdin: &[u8]) -> Outcome {
        inv.run_in(&self.host, &self.bins.plugin("calico"), stdin)
    }

    /// ADD two new containers (netns of role `role`) with the netconf of `version` and
    /// `ipam`; both must succeed.
    pub fn add_pair(&self, role: &str, version: &str, ipam: Value) -> Pair {
        let netns = [Netns::new(role), Netns::new(role)];
        let conf = self.conf(version, ipam);
        let adds = netns.each_ref().map(|ns| self.inv("ADD", &format!("ctr-{}", ns.name), ns));
        let results = adds.each_ref().map(|add| self.run(add, &conf).expect_ok());
        Pair { netns, adds, results, conf }
    }

    /// CHECK container `i` of `pair` against its ADD's result.
    pub fn check(&self, pair: &Pair, i: usize) -> Outcome {
        self.run(&pair.adds[i].with_command("CHECK"), &with_prev(&pair.conf, &pair.results[i]))
    }

    /// DEL both containers of `pair`, each twice (the second finds nothing, and succeeds);
    /// then nothing may be left.
    pub fn del_pair_twice(&self, pair: &Pair, what: &str) {
        for add in &pair.adds {
            self.run(&add.with_command("DEL"), &pair.conf).expect_ok();
            self.run(&add.with_command("DEL"), &pair.conf).expect_ok();
        }
        self.assert_nothing_left(what);
    }

    /// Nothing of ours left on the host: no cali link, no route into a pool, no allocation,
    /// and `calicoctl ipam check` is clean.
    pub fn assert_nothing_left(&self, what: &str) {
        assert_eq!(self.host.cali_links(), Vec::<String>::new(), "{what}: cali links left");
        let routes = self.host.routes();
        let into_pool = routes.lines().find(|r| {
            let dst = r.split_whitespace().next().unwrap_or_default();
            let addr = dst.split('/').next().unwrap_or_default().parse::<IpAddr>();
            addr.is_ok_and(|a| self.pools.iter().any(|p| pool_contains(p, a)))
        });
        assert_eq!(into_pool, None, "{what}: a route into a pool is left:\n{routes}");
        assert_eq!(self.store.used(), 0, "{what}: addresses left allocated");
        self.store.assert_clean();
    }
}

/// Two containers attached with one netconf ([`CniHost::add_pair`]).
pub struct Pair {
    pub netns: [Netns; 2],
    pub adds: [Invocation; 2],
    /// The ADD results.
    pub results: [Value; 2],
    pub conf: Vec<u8>,
}

impl Pair {
    /// The addresses of container `i`, without prefix.
    pub fn ips(&self, i: usize) -> Vec<String> {
        result_ips(&self.results[i])
    }
}

/// Whether the CIDR `pool` holds `addr`.
fn pool_contains(pool: &str, addr: IpAddr) -> bool {
    let (net, len) = pool.split_once('/').expect("a pool is a CIDR");
    let (net, len): (IpAddr, u32) = (net.parse().expect("pool address"), len.parse().expect("pool prefix"));
    // Both families as the top bits of a u128, so that a prefix masks the same way.
    let bits = |a: IpAddr| match a {
        IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 4),
        IpAddr::V6(a) => (u128::from(a), 6),
    };
    let ((net, family), (addr, addr_family)) = (bits(net), bits(addr));
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    family == addr_family && net & mask == addr & mask
}

#[cfg(test)]
mod tests {
    use super::pool_contains;

    #[test]
    fn pools_hold_their_addresses_only() {
        let cases = [
            ("10.123.0.0/16", "10.123.9.9", true),
            ("10.123.0.0/16", "10.124.0.1", false),
            ("10.0.0.0/8", "10.255.255.1", true),
            ("fd00:123::/112", "fd00:123::5", true),
            ("fd00:123::/112", "fd00:124::5", false),
            ("10.123.0.0/16", "::a7b:0", false),
            ("0.0.0.0/0", "192.0.2.1", true),
        ];
        for (pool, addr, held) in cases {
            assert_eq!(pool_contains(pool, addr.parse().unwrap()), held, "{pool} {addr}");
        }
    }
}
