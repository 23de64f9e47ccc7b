//! `calicoctl container <C> ip add|remove` with the real binaries, run on the container's
//! host as an operator runs it: a second address from the container's pool, a third from
//! another pool, and an IPv6 one on a container that had none; other containers reach each
//! address, `ip remove` makes it unreachable and frees it, bad requests are refused clearly
//! and change nothing, and DEL releases every address (`ipam check` clean). On one host with
//! the embedded store, and across two hosts with calico-node on etcd.

mod node_common;

use std::time::Duration;

use calico_tests::cni_host::CniHost;
use calico_tests::netns::{host, Netns};
use calico_tests::{result_ips, Invocation, Outcome};
use node_common::{wait_for, Lab};
use serde_json::{json, Value};

const POOL1: &str = "10.77.0.0/24";
const POOL2: &str = "10.78.0.0/24";
const POOL6: &str = "fd00:77::/112";

/// calicoctl in the CNI host's netns (where the container's host veth is), on its store.
fn ctl(cni: &CniHost, args: &[&str]) -> Outcome {
    cni.store.ctl_in(&cni.host, args)
}

/// The address `ip add` printed (`IP <addr> added to container ...`).
fn added(out: &Outcome) -> String {
    let line = &out.success().stdout;
    let ip = line.strip_prefix("IP ").and_then(|r| r.split_whitespace().next());
    ip.unwrap_or_else(|| panic!("unexpected ip add output {line:?}")).to_owned()
}

/// A refusal: exit non-zero, `needle` in the message, nothing on stdout.
fn refused(out: &Outcome, needle: &str) {
    assert!(!out.ok(), "accepted: {out:#?}");
    assert!(out.stderr.contains(needle), "expected {needle:?} in: {}", out.stderr);
}

fn pings(from: &Netns, to: &str) -> bool {
    from.exec(&["ping", "-c", "1", "-W", "1", to]).status.success()
}

/// A ping from source address `src`: admitted only if `src` is in the peer's tag set.
fn ping_from(ns: &Netns, src: &str, to: &str) -> bool {
    ns.exec(&["ping", "-c", "1", "-W", "2", "-I", src, to]).status.success()
}

fn addresses_in(ns: &Netns) -> String {
    ns.ip(&["addr", "show", "dev", "eth0"])
}

struct Ctr {
    ns: Netns,
    id: String,
    add: Invocation,
    ip: String,
    result: Value,
}

fn add(cni: &CniHost, conf: &[u8], label: &str) -> Ctr {
    let ns = Netns::new("ci");
    let id = format!("ctr-ip-{}-{label}", ns.name);
    let add = cni.inv("ADD", &id, &ns);
    let result = cni.run(&add, conf).expect_ok();
    let ip = result_ips(&result)[0].clone();
    Ctr { ns, id, add, ip, result }
}

#[test]
fn several_addresses_on_one_host_with_the_embedded_store() {
    let cni = CniHost::new(host(), &[POOL1, POOL2, POOL6], json!({"name": "ipnet"}));
    let conf = cni.conf("1.0.0", json!({"assign_ipv4": "true", "ipv4_pools": [POOL1]}));
    let a = add(&cni, &conf, "target");
    let b = add(&cni, &conf, "client");
    let used = |cni: &CniHost| cni.store.used();
    assert_eq!(used(&cni), 2);

    // A unique prefix of the id is enough.
    let short = a.id.strip_suffix("get").unwrap();
    let second = added(&ctl(&cni, &["container", short, "ip", "add", "ipv4"]));
    assert!(second.starts_with("10.77.0."), "{second}");
    let third = added(&ctl(&cni, &["container", &a.id, "ip", "add", POOL2]));
    assert!(third.starts_with("10.78.0."), "{third}");
    let v6 = added(&ctl(&cni, &["container", &a.id, "ip", "add", "ipv6"]));
    assert!(v6.starts_with("fd00:77::"), "{v6}");
    assert_eq!(used(&cni), 5);
    let inside = addresses_in(&a.ns);
    for ip in [&a.ip, &second, &third, &v6] {
        assert!(inside.contains(&format!("{ip}/")), "{ip} not on eth0:\n{inside}");
    }
    // The new family came with its gateway.
    let v6_routes = a.ns.ip(&["-6", "route", "show", "default"]);
    assert!(v6_routes.contains("fe80::ecee:eeff:feee:eeee"), "{v6_routes}");

    // Another container of the profile reaches each address; the host reaches the IPv6 one.
    for ip in [&a.ip, &second, &third] {
        assert!(b.ns.ping(ip), "b cannot reach a's {ip}");
    }
    assert!(cni.host.ping(&v6), "the host cannot reach a's {v6}");
    // The new addresses are members of the profile's tag: b admits traffic from them.
    for ip in [&second, &third] {
        assert!(ping_from(&a.ns, ip, &b.ip), "b refuses a's {ip}: it is not in the tag set");
    }

    // The endpoint, and the result a repeated ADD answers with, hold them all.
    let show = ctl(&cni, &["container", &a.id, "endpoint", "show", "-o", "json"]);
    let eps: Value = serde_json::from_str(&show.success().stdout).unwrap();
    let ips: Vec<&str> = eps[0]["ips"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(ips, [format!("{}/32", a.ip), format!("{second}/32"), format!("{third}/32"), format!("{v6}/128")]);
    let again = cni.run(&a.add, &conf).expect_ok();
    assert_eq!(result_ips(&again), [a.ip.clone(), second.clone(), third.clone(), v6.clone()]);
    // CHECK against the ADD's own result still passes: the extra addresses survive it.
    cni.run(&a.add.with_command("CHECK"), &calico_tests::with_prev(&conf, &a.result)).expect_ok();

    // Bad requests: a clear message, a non-zero exit, nothing changed.
    let before = (used(&cni), addresses_in(&a.ns), cni.host.routes());
    refused(
        &ctl(&cni, &["container", &a.id, "ip", "add", &b.ip]),
        &format!("IP address {} is already assigned in pool {POOL1}.", b.ip),
    );
    refused(&ctl(&cni, &["container", &a.id, "ip", "add", "172.31.9.9"]), "is not in any configured IP pool");
    refused(&ctl(&cni, &["container", &a.id, "ip", "add", "10.99.0.0/24"]), "10.99.0.0/24");
    refused(&ctl(&cni, &["container", &a.id, "ip", "add", "banana"]), "invalid address");
    refused(&ctl(&cni, &["container", &a.id, "ip", "add", &second]), "already has address");
    refused(&ctl(&cni, &["container", &a.id, "ip", "add", "ipv4", "--interface", "eth9"]), "has no interface eth9");
    refused(
        &ctl(&cni, &["container", "no-such-ctr", "ip", "add", "ipv4"]),
        "Container no-such-ctr is unknown to Calico.",
    );
    refused(&ctl(&cni, &["container", "ctr-ip-", "ip", "add", "ipv4"]), "several containers");
    refused(&ctl(&cni, &["container", &a.id, "ip", "remove", "10.77.0.250"]), "does not have address");
    refused(&ctl(&cni, &["container", &b.id, "ip", "remove", &b.ip]), "only address");
    // Not on the container's host (this machine's own netns has no such host veth).
    refused(&cni.store.ctl(&["container", &a.id, "ip", "add", "ipv4"]), "is not on this host");
    assert_eq!((used(&cni), addresses_in(&a.ns), cni.host.routes()), before, "a refusal changed something");

    // An interface gone from the container: named, and the address it took is released.
    let c = add(&cni, &conf, "broken");
    c.ns.ip(&["link", "set", "eth0", "down"]);
    c.ns.ip(&["link", "set", "eth0", "name", "eth7"]);
    let gone = ctl(&cni, &["container", &c.id, "ip", "add", "ipv4"]);
    refused(&gone, "link eth0 not found");
    assert_eq!(used(&cni), 6, "the failed ip add released its address: {gone:#?}");

    // ip remove: unreachable, released, its route gone; the others stay.
    let out = ctl(&cni, &["container", &a.id, "ip", "remove", &third]);
    assert!(out.success().stdout.contains(&format!("IP {third} removed")), "{out:#?}");
    assert!(!pings(&b.ns, &third), "a's removed {third} still answers");
    assert!(b.ns.ping(&second), "a's {second} stopped answering");
    assert!(!cni.host.routes().contains(&format!("{third} ")), "route to {third} left");
    assert_eq!(used(&cni), 5);
    // The only IPv6 address removed: the family's gateway route goes with it.
    ctl(&cni, &["container", &a.id, "ip", "remove", &v6]).success();
    let v6_routes = a.ns.ip(&["-6", "route", "show", "default"]);
    assert!(!v6_routes.contains("fe80::ecee:eeff:feee:eeee"), "IPv6 default route left: {v6_routes}");
    assert!(!addresses_in(&a.ns).contains(&v6), "{v6} left on eth0");
    assert_eq!(used(&cni), 4);
    // Removed, it can be added again (it is free).
    assert_eq!(added(&ctl(&cni, &["container", &a.id, "ip", "add", &third])), third);

    // CHECK sees the endpoint's policy: without it, it fails and says what is missing.
    cni.host.exec(&["nft", "delete", "table", "inet", "calico-policy"]);
    let out = cni.run(&a.add.with_command("CHECK"), &calico_tests::with_prev(&conf, &a.result));
    let failure = out.expect_err(122);
    assert!(
        failure["details"].as_str().unwrap_or_default().contains("missing from table inet calico-policy")
            || failure["msg"].as_str().unwrap_or_default().contains("missing from table inet calico-policy"),
        "{failure}"
    );

    // DEL releases all of them.
    for ctr in [&a, &b, &c] {
        cni.run(&ctr.add.with_command("DEL"), &conf).expect_ok();
    }
    cni.assert_nothing_left("DEL after ip add");
}

#[test]
fn extra_addresses_are_reached_from_the_same_and_another_host() {
    let mut lab = Lab::named("cip", &[2]);
    lab.ctl(0, &["pool", "add", "10.203.0.0/16"]).success();
    lab.ctl(0, &["pool", "add", "10.204.0.0/16"]).success();
    lab.start_agents();
    let first = lab.add_container(0); // the target, on host1
    let id = format!("ctr-{}", lab.container(0).name);
    let _same_host = lab.add_container(0);
    let other_host = lab.add_container(1);
    wait_for("host2 reaches host1's container", Duration::from_secs(10), || lab.container(2).ping(&first));

    let second = added(&lab.ctl(0, &["container", &id, "ip", "add", "ipv4"]));
    let third = added(&lab.ctl(0, &["container", &id, "ip", "add", "10.204.0.0/16"]));
    assert!(third.starts_with("10.204."), "{third}");
    for ip in [&first, &second, &third] {
        assert!(lab.container(1).ping(ip), "the same host's container cannot reach {ip}");
        // The other host learns a new block's route from its calico-node.
        wait_for(&format!("host2's container reaches {ip}"), Duration::from_secs(10), || lab.container(2).ping(ip));
    }
    // host2's calico-node put the new addresses in its tag set: its container admits them.
    for ip in [&second, &third] {
        let admitted = || ping_from(lab.container(0), ip, &other_host);
        wait_for(&format!("host2's container admits {ip}"), Duration::from_secs(5), admitted);
    }
    let show = lab.ctl(0, &["endpoint", "show"]);
    assert!(show.success().stdout.contains(&third), "{show:#?}");

    lab.ctl(0, &["container", &id, "ip", "remove", &third]).success();
    assert!(!pings(lab.container(2), &third), "{third} still answers after ip remove");
    assert!(lab.container(2).ping(&second));

    // DEL of every container releases every address.
    for (n, host) in [(0, 0), (1, 0), (2, 1)] {
        let c = lab.container(n);
        let inv = Invocation::new("DEL", &format!("ctr-{}", c.name)).netns(&c.path()).path(&lab.bins.path());
        inv.run_in(&lab.hosts[host].ns, &lab.bins.plugin("calico"), &lab.netconf(host)).expect_ok();
    }
    let check = lab.ctl(0, &["ipam", "check"]);
    assert!(check.ok(), "ipam check after DEL: {check:#?}");
}

/// GC of an attachment the runtime no longer knows releases its extra addresses too, and
/// takes them out of the tag sets.
#[test]
fn gc_releases_every_address_of_a_stale_attachment() {
    let cni = CniHost::new(host(), &[POOL1, POOL2], json!({"name": "ipgc"}));
    let conf = cni.conf("1.1.0", json!({"ipv4_pools": [POOL1]}));
    let keep = add(&cni, &conf, "keep");
    let stale = add(&cni, &conf, "stale");
    let extra = added(&ctl(&cni, &["container", &stale.id, "ip", "add", POOL2]));
    assert_eq!(cni.store.used(), 3);
    let policy = || {
        String::from_utf8_lossy(&cni.host.exec(&["nft", "list", "table", "inet", "calico-policy"]).stdout).into_owned()
    };
    assert!(policy().contains(&extra), "{}", policy());

    let mut gc: Value = serde_json::from_slice(&conf).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep.id, "ifname": "eth0"}]);
    let inv = Invocation {
        container_id: String::new(),
        ifname: String::new(),
        netns: String::new(),
        ..cni.inv("GC", "", &keep.ns)
    };
    cni.run(&inv, &serde_json::to_vec(&gc).unwrap()).expect_ok();
    assert_eq!(cni.store.used(), 1, "GC left an address of the stale attachment");
    let table = policy();
    assert!(!table.contains(&extra) && !table.contains(&stale.ip), "stale addresses left in the tag sets:\n{table}");
    assert!(table.contains(&keep.ip), "{table}");

    cni.run(&keep.add.with_command("DEL"), &conf).expect_ok();
    cni.assert_nothing_left("GC, then DEL");
}
