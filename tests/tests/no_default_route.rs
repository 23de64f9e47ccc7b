//! A host with no default route (only loopback addresses): the kernel's proxy ARP answers
//! for 169.254.1.1 only when the host has a route to it, so containers there reached
//! nothing. They resolve the gateway through a permanent neighbour entry now; CHECK verifies
//! it. Every spec version, IPv4, and dual-stack once.

use calico_tests::netns::{bare_host, CniBinDir, Netns, BARE_HOST_V4, BARE_HOST_V6};
use calico_tests::{result_ips, Backend, Invocation, Outcome, VERSIONS};
use serde_json::{json, Value};

struct Env {
    host: Netns,
    bins: CniBinDir,
    store: Backend,
}

impl Env {
    fn new() -> Env {
        let store = Backend::embedded();
        store.ctl(&["pool", "add", "10.124.0.0/16"]).success();
        store.ctl(&["pool", "add", "fd00:124::/112"]).success();
        let host = bare_host();
        let routes = host.routes();
        assert!(!routes.contains("default"), "the bare host has a default route:\n{routes}");
        Env { host, bins: CniBinDir::new(), store }
    }

    fn conf(&self, version: &str, ipam: Value) -> Vec<u8> {
        let mut c = json!({"cniVersion": version, "name": "barenet", "type": "calico", "nodename": "node1",
                           "log_level": "debug", "ipam": ipam});
        c["ipam"]["type"] = json!("calico-ipam");
        self.store.apply(&mut c);
        serde_json::to_vec(&c).unwrap()
    }

    fn inv(&self, command: &str, id: &str, netns: &Netns) -> Invocation {
        Invocation::new(command, id).netns(&netns.path()).path(&self.bins.path())
    }

    fn run(&self, inv: &Invocation, stdin: &[u8]) -> Outcome {
        inv.run_in(&self.host, &self.bins.plugin("calico"), stdin)
    }

    fn assert_nothing_left(&self, what: &str) {
        assert_eq!(self.host.cali_links(), Vec::<String>::new(), "{what}: cali links left");
        let routes = self.host.routes();
        assert!(!routes.contains("10.124.") && !routes.contains("fd00:124:"), "{what}: routes left:\n{routes}");
        assert_eq!(self.store.used(), 0, "{what}: addresses left allocated");
    }
}

fn with_prev(conf: &[u8], result: &Value) -> Vec<u8> {
    let mut c: Value = serde_json::from_slice(conf).unwrap();
    c["prevResult"] = result.clone();
    serde_json::to_vec(&c).unwrap()
}

#[test]
fn every_version_reaches_host_and_neighbour_without_a_default_route() {
    let env = Env::new();
    for v in VERSIONS {
        let (c1, c2) = (Netns::new("cn"), Netns::new("cn"));
        let conf = env.conf(v, json!({}));
        let add1 = env.inv("ADD", &format!("a-{}", c1.name), &c1);
        let add2 = env.inv("ADD", &format!("b-{}", c2.name), &c2);
        let r1 = env.run(&add1, &conf).expect_ok();
        let r2 = env.run(&add2, &conf).expect_ok();
        let (ip1, ip2) = (result_ips(&r1)[0].clone(), result_ips(&r2)[0].clone());
        let neigh = c1.ip(&["-4", "neigh", "show", "dev", "eth0"]);
        assert!(neigh.contains("169.254.1.1 lladdr ee:ee:ee:ee:ee:ee PERMANENT"), "{v}: {neigh}");
        assert!(c1.ping(BARE_HOST_V4), "{v}: container cannot reach the host's address");
        assert!(c1.ping(&ip2) && c2.ping(&ip1), "{v}: containers cannot reach each other");
        if v >= "0.4.0" {
            let check = with_prev(&conf, &r1);
            env.run(&add1.with_command("CHECK"), &check).expect_ok();
            c1.ip(&["neigh", "del", "169.254.1.1", "dev", "eth0"]);
            let err = env.run(&add1.with_command("CHECK"), &check).expect_err(122);
            let msg = err["msg"].as_str().unwrap_or_default().to_owned() + err["details"].as_str().unwrap_or_default();
            assert!(msg.contains("neighbour") && msg.contains("169.254.1.1"), "{v}: {err}");
        }
        for inv in [&add1, &add2] {
            env.run(&inv.with_command("DEL"), &conf).expect_ok();
        }
        env.assert_nothing_left(v);
    }
}

#[test]
fn dual_stack_reaches_host_and_neighbour_without_a_default_route() {
    let env = Env::new();
    let (c1, c2) = (Netns::new("cn"), Netns::new("cn"));
    let conf = env.conf("1.0.0", json!({"assign_ipv4": "true", "assign_ipv6": "true"}));
    let r1 = env.run(&env.inv("ADD", "n1", &c1), &conf).expect_ok();
    let r2 = env.run(&env.inv("ADD", "n2", &c2), &conf).expect_ok();
    let (ips1, ips2) = (result_ips(&r1), result_ips(&r2));
    let neigh = c1.ip(&["-6", "neigh", "show", "dev", "eth0"]);
    assert!(neigh.contains("fe80::ecee:eeff:feee:eeee lladdr ee:ee:ee:ee:ee:ee PERMANENT"), "{neigh}");
    assert!(c1.ping(BARE_HOST_V4) && c1.ping(BARE_HOST_V6), "container cannot reach the host");
    assert!(c1.ping(&ips2[0]) && c2.ping(&ips1[0]), "IPv4 between containers");
    assert!(c1.ping(&ips2[1]) && c2.ping(&ips1[1]), "IPv6 between containers");
    let check = with_prev(&conf, &r1);
    env.run(&env.inv("CHECK", "n1", &c1), &check).expect_ok();
    c1.ip(&["-6", "neigh", "del", "fe80::ecee:eeff:feee:eeee", "dev", "eth0"]);
    let err = env.run(&env.inv("CHECK", "n1", &c1), &check).expect_err(122);
    assert!(err.to_string().contains("fe80::ecee:eeff:feee:eeee"), "{err}");
    env.run(&env.inv("DEL", "n1", &c1), &conf).expect_ok();
    env.run(&env.inv("DEL", "n2", &c2), &conf).expect_ok();
    env.assert_nothing_left("dual-stack");
}
