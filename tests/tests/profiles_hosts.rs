//! Profiles across hosts: two hosts with calico-node on etcd. A tag's set on every host holds
//! the addresses of its members on every host, so containers of one profile reach each other
//! across hosts, another profile's container does not, until a rule admits its tag; every
//! calico-node applies that within about a second.

mod node_common;

use std::time::{Duration, Instant};

use calico_tests::netns::Netns;
use calico_tests::{result_ips, Invocation};
use node_common::Lab;

fn pings(from: &Netns, to: &str) -> bool {
    from.exec(&["ping", "-c", "1", "-W", "1", to]).status.success()
}

#[test]
fn tags_span_hosts_and_a_rule_change_reaches_every_host() {
    let mut lab = Lab::new(2);
    lab.ctl(0, &["pool", "add", "10.202.0.0/16"]).success();
    lab.start_agents();
    let a1 = lab.add_container(0);
    let a2 = lab.add_container(1);
    // A container of profile pfb on host2.
    let b = Netns::new("pfb");
    let mut conf: serde_json::Value = serde_json::from_slice(&lab.netconf(1)).unwrap();
    conf["profiles"] = serde_json::json!(["pfb"]);
    let inv = Invocation::new("ADD", "pf-b").netns(&b.path()).path(&lab.bins.path());
    let out = inv.run_in(&lab.hosts[1].ns, &lab.bins.plugin("calico"), &serde_json::to_vec(&conf).unwrap());
    let b_ip = result_ips(&out.expect_ok())[0].clone();

    let start = Instant::now();
    while !lab.container(0).ping(&a2) && start.elapsed() < Duration::from_secs(5) {}
    assert!(lab.container(0).ping(&a2), "host1's nodenet container cannot reach host2's");
    assert!(lab.container(1).ping(&a1), "host2's nodenet container cannot reach host1's");
    assert!(!pings(&b, &a1), "pfb reached host1's nodenet container without a rule");

    // Timed from calicoctl's start (on host1) to the first answer (host2's container to
    // host1's), in steps of a 100 ms ping: within 1 s, adding the rule and removing it.
    let until = |want: bool| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(4) {
            if b.ping_once(&a1, Duration::from_millis(100)) == want {
                return Some(start.elapsed());
            }
        }
        None
    };
    let rule = ["profile", "nodenet", "rule", "add", "inbound", "allow", "from", "tag", "pfb"];
    let start = Instant::now();
    lab.ctl(0, &rule).success();
    let took = until(true).map(|_| start.elapsed());
    assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "allow from tag pfb across hosts took {took:?}");
    eprintln!("rule reached host1 and admitted host2's pfb container after {took:?}");
    let start = Instant::now();
    lab.ctl(1, &["profile", "nodenet", "rule", "remove", "inbound", "allow", "from", "tag", "pfb"]).success();
    let took = until(false).map(|_| start.elapsed());
    assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "removing it took {took:?} across hosts");
    assert!(!pings(&b, &a1), "the removed rule still admits across hosts");
    let _ = b_ip;
}
