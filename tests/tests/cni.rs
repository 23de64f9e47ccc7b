//! calico-cni exec'd as a runtime does, inside a netns playing the host, against real
//! container namespaces: every spec version, dual-stack, rollback on real failures, DEL
//! idempotence, GC, and 64 containers at once.

use calico_tests::cni_host::CniHost;
use calico_tests::netns::{host, Netns, HOST_V4, HOST_V6};
use calico_tests::{result_ips, with_prev, Invocation};
use serde_json::{json, Value};

/// A host with an uplink, the pools 10.123.0.0/16 and fd00:123::/112, and an MTU of 1400.
fn env() -> CniHost {
    CniHost::new(host(), &["10.123.0.0/16", "fd00:123::/112"], json!({"name": "calinet", "mtu": 1400}))
}

/// The machine's own links named like ours.
fn root_cali_links() -> Vec<String> {
    let links = calico_tests::netns::ip(&["-o", "link", "show"]);
    links.lines().filter_map(|l| l.split(": ").nth(1)).filter(|n| n.starts_with("cali")).map(str::to_owned).collect()
}

/// The result of an ADD in `version`: its shape, and the address it gives the container.
fn assert_result_shape(version: &str, r: &Value, netns: &Netns) {
    assert_eq!(r["cniVersion"], version, "{r}");
    if version < "0.3.0" {
        assert!(r["ip4"]["ip"].as_str().is_some_and(|ip| ip.ends_with("/32")), "{r}");
        assert!(r.get("interfaces").is_none() && r.get("ips").is_none(), "{r}");
        return;
    }
    assert!(r.get("ip4").is_none(), "{r}");
    assert!(r["interfaces"][0]["name"].as_str().unwrap().starts_with("cali"), "{r}");
    assert_eq!(r["interfaces"][1]["name"], "eth0", "{r}");
    assert_eq!(r["interfaces"][1]["sandbox"], netns.path().as_str(), "{r}");
    assert_eq!(r["ips"][0]["interface"], 1, "{r}");
    // Only the 0.x results name the family of each address.
    assert_eq!(r["ips"][0].get("version").is_some(), version.starts_with("0."), "{r}");
}

/// Two containers: ADD, the result's shape, the links and routes on both sides, pings to the
/// host and between them, CHECK (0.4.0 on), DEL, DEL again; nothing left, and nothing in the
/// machine's own netns.
fn add_ping_check_del(v: &str) {
    let env = env();
    let root_links_before = root_cali_links();
    let pair = env.add_pair("cc", v, json!({}));
    let ([c1, c2], r1) = (&pair.netns, &pair.results[0]);
    assert_result_shape(v, r1, c1);
    let (ip1, ip2) = (pair.ips(0)[0].clone(), pair.ips(1)[0].clone());
    // The container side as Calico lays it out.
    let addr = c1.ip(&["-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{ip1}/32")), "{addr}");
    assert!(addr.contains("mtu 1400"), "{addr}");
    let routes = c1.ip(&["-4", "route", "show"]);
    assert!(routes.contains("default via 169.254.1.1 dev eth0"), "{routes}");
    assert!(routes.lines().any(|r| r.starts_with("169.254.1.1 dev eth0") && r.contains("scope link")), "{routes}");
    // The host side.
    let veth = env.host.cali_links().into_iter().find(|l| r1.to_string().contains(l.as_str()) || v < "0.3.0").unwrap();
    let host_link = env.host.ip(&["link", "show", &veth]);
    assert!(host_link.contains("ee:ee:ee:ee:ee:ee") && host_link.contains("mtu 1400"), "{host_link}");
    assert_eq!(env.host.sysctl(&format!("net/ipv4/conf/{veth}/proxy_arp")), "1");
    assert!(env.host.routes().contains(&format!("{ip1} dev")), "{}", env.host.routes());
    // Traffic: container -> host, container <-> container.
    assert!(c1.ping(HOST_V4), "{v}: container cannot reach the host");
    assert!(c1.ping(&ip2) && c2.ping(&ip1), "{v}: containers cannot reach each other");
    if v >= "0.4.0" {
        env.check(&pair, 0).expect_ok();
    }
    env.del_pair_twice(&pair, v);
    assert_eq!(root_cali_links(), root_links_before, "the plugin touched the machine's own netns");
}

calico_tests::spec_version_tests!(add_ping_check_del);

#[test]
fn dual_stack_pings_over_both_families() {
    let env = env();
    let pair = env.add_pair("cd", "1.0.0", json!({"assign_ipv4": "true", "assign_ipv6": "true"}));
    let ([c1, c2], ips1, ips2) = (&pair.netns, pair.ips(0), pair.ips(1));
    assert_eq!(ips1.len(), 2, "{}", pair.results[0]);
    assert!(c1.ping(&ips2[0]) && c2.ping(&ips1[0]), "IPv4");
    assert!(c1.ping(&ips2[1]) && c2.ping(&ips1[1]), "IPv6");
    assert!(c1.ping(HOST_V6), "IPv6 to the host");
    env.check(&pair, 0).expect_ok();
    env.del_pair_twice(&pair, "dual-stack");
}

#[test]
fn repeated_add_returns_the_same_result_and_changes_nothing() {
    let env = env();
    let c = Netns::new("cr");
    let conf = env.conf("1.0.0", json!({}));
    let add = env.inv("ADD", "rep", &c);
    let first = env.run(&add, &conf).expect_ok();
    let links = env.host.links();
    let second = env.run(&add, &conf).expect_ok();
    assert_eq!(first, second);
    assert_eq!(links, env.host.links());
    assert_eq!(env.store.used(), 1);
    env.run(&add.with_command("DEL"), &conf).expect_ok();
    env.assert_nothing_left("repeat");
}

#[test]
fn del_without_netns_and_after_the_netns_is_gone() {
    let env = env();
    let conf = env.conf("1.0.0", json!({}));
    let c = Netns::new("cg");
    let add = env.inv("ADD", "gone", &c);
    env.run(&add, &conf).expect_ok();
    drop(c); // the runtime removed the sandbox first
    env.run(&add.with_command("DEL"), &conf).expect_ok();
    env.run(&add.with_command("DEL").netns(""), &conf).expect_ok();
    env.assert_nothing_left("netns gone");
    let c = Netns::new("cg");
    let add = env.inv("ADD", "empty", &c);
    env.run(&add, &conf).expect_ok();
    env.run(&add.with_command("DEL").netns(""), &conf).expect_ok();
    assert!(c.links().iter().all(|l| l != "eth0") || env.host.cali_links().is_empty());
    env.assert_nothing_left("empty CNI_NETNS");
}

#[test]
fn failures_roll_back_every_step() {
    let env = env();
    let conf = env.conf("1.0.0", json!({}));
    let before = env.host.links();

    // 1. The container interface name is taken inside the netns.
    let c = Netns::new("cf");
    c.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "other0"]);
    let out = env.run(&env.inv("ADD", "taken", &c), &conf);
    out.expect_err(calico_cni::CODE_DATAPLANE as u64);
    assert_eq!(env.host.links(), before);
    env.assert_nothing_left("ifname taken");

    // 2. The host route is already on another interface.
    let c = Netns::new("cf");
    env.host.ip(&["route", "add", "10.123.9.9/32", "dev", "up1"]);
    let out = env.run(&env.inv("ADD", "conflict", &c).args("IP=10.123.9.9"), &conf);
    let err = out.expect_err(calico_cni::CODE_ROUTE_CONFLICT as u64);
    assert!(err.to_string().contains("up1"), "{err}");
    env.host.ip(&["route", "del", "10.123.9.9/32", "dev", "up1"]);
    assert_eq!(env.host.links(), before);
    env.assert_nothing_left("route conflict");

    // 3. CNI_NETNS is not a network namespace.
    let out = env.run(&Invocation::new("ADD", "notns").netns("/etc/hostname").path(&env.bins.path()), &conf);
    out.expect_err(4);
    env.assert_nothing_left("not a netns");

    // 4. The IPAM plugin is missing.
    let missing = env.conf("1.0.0", json!({"type": "no-such-ipam"}));
    let out = env.run(&env.inv("ADD", "noipam", &c), &missing);
    let err = out.expect_err(7);
    assert!(err.to_string().contains("no-such-ipam"), "{err}");
    env.assert_nothing_left("IPAM missing");

    // 5. The IPAM plugin fails (address outside every pool): its code comes through.
    let out = env.run(&env.inv("ADD", "ipamerr", &c).args("IP=192.0.2.1"), &conf);
    out.expect_err(7);
    assert_eq!(env.host.links(), before);
    env.assert_nothing_left("IPAM error");
}

#[test]
fn an_undo_that_fails_during_rollback_is_named_in_details() {
    let env = env();
    // An IPAM plugin that hands out 10.123.9.8 and refuses to release it.
    let sticky = env.bins.plugin("sticky-ipam");
    let script = r#"#!/bin/sh
cat >/dev/null
case "$CNI_COMMAND" in
ADD) echo '{"cniVersion":"1.0.0","ips":[{"address":"10.123.9.8/32"}]}' ;;
*) echo '{"cniVersion":"1.0.0","code":11,"msg":"release refused"}'; exit 1 ;;
esac
"#;
    std::fs::write(&sticky, script).unwrap();
    std::fs::set_permissions(&sticky, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let conf = env.conf("1.0.0", json!({"type": "sticky-ipam"}));
    let before = env.host.links();

    // The host route is taken, so ADD fails at its host side and rolls back.
    let c = Netns::new("cf");
    env.host.ip(&["route", "add", "10.123.9.8/32", "dev", "up1"]);
    let err = env.run(&env.inv("ADD", "sticky", &c), &conf).expect_err(calico_cni::CODE_ROUTE_CONFLICT as u64);
    env.host.ip(&["route", "del", "10.123.9.8/32", "dev", "up1"]);
    let details = err["details"].as_str().unwrap_or_default();
    assert!(
        details
            .contains("rollback incomplete: releasing the IPAM allocation: plugin sticky-ipam failed: release refused"),
        "{err}"
    );
    // The veth's undo still ran.
    assert_eq!(env.host.links(), before);
}

#[test]
fn gc_removes_what_the_runtime_no_longer_knows() {
    let env = env();
    let conf = env.conf("1.1.0", json!({}));
    let (c1, c2) = (Netns::new("cx"), Netns::new("cx"));
    env.run(&env.inv("ADD", "keep", &c1), &conf).expect_ok();
    env.run(&env.inv("ADD", "stale", &c2), &conf).expect_ok();
    assert_eq!(env.host.cali_links().len(), 2);
    let mut gc: Value = serde_json::from_slice(&conf).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let inv = Invocation {
        container_id: String::new(),
        ifname: String::new(),
        netns: String::new(),
        ..env.inv("GC", "", &c1)
    };
    env.run(&inv, &serde_json::to_vec(&gc).unwrap()).expect_ok();
    assert_eq!(env.host.cali_links().len(), 1);
    assert_eq!(env.store.used(), 1);
    let status = Invocation {
        container_id: String::new(),
        ifname: String::new(),
        netns: String::new(),
        ..env.inv("STATUS", "", &c1)
    };
    env.run(&status, &conf).expect_ok();
    // A store that cannot be opened: not available, as calico-ipam says it.
    let mut broken: Value = serde_json::from_slice(&conf).unwrap();
    broken["datastore_path"] = json!("/proc/no-such-dir/store.db");
    broken.as_object_mut().unwrap().remove("etcd_endpoints");
    env.run(&status, &serde_json::to_vec(&broken).unwrap()).expect_err(50);
    env.run(&env.inv("DEL", "keep", &c1), &conf).expect_ok();
    env.assert_nothing_left("gc");
}

#[test]
fn sixty_four_containers_at_once() {
    let env = env();
    let conf = env.conf("1.0.0", json!({}));
    let containers: Vec<Netns> = (0..64).map(|_| Netns::new("cm")).collect();
    let spawn = |command: &str| -> Vec<std::process::Child> {
        containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let inv = env.inv(command, &format!("m{i}"), c);
                let mut cmd = inv.command(std::path::Path::new("ip"));
                cmd.args(["netns", "exec", &env.host.name]).arg(env.bins.plugin("calico"));
                let mut child = cmd.spawn().unwrap();
                use std::io::Write;
                child.stdin.take().unwrap().write_all(&conf).unwrap();
                child
            })
            .collect()
    };
    let mut ips = std::collections::HashSet::new();
    for child in spawn("ADD") {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "ADD: {}", String::from_utf8_lossy(&out.stdout));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(ips.insert(result_ips(&v)[0].clone()));
    }
    assert_eq!(ips.len(), 64);
    assert_eq!(env.host.cali_links().len(), 64);
    let some_ip = ips.iter().next().cloned().unwrap_or_default();
    assert!(containers[0].ping(&some_ip) || containers[1].ping(&some_ip), "containers cannot reach {some_ip}");
    for child in spawn("DEL") {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "DEL: {}", String::from_utf8_lossy(&out.stdout));
    }
    env.assert_nothing_left("64 at once");
}

#[test]
fn a_replaced_pod_sandbox_takes_over_and_the_old_del_leaves_it_alone() {
    let env = env();
    let conf = env.conf("1.0.0", json!({}));
    let pod = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;IgnoreUnknown=1";
    let (old, new, peer) = (Netns::new("ck"), Netns::new("ck"), Netns::new("ck"));
    let add_old = env.inv("ADD", "sandbox-old", &old).args(pod);
    env.run(&add_old, &conf).expect_ok();
    let veth = env.host.cali_links();
    assert_eq!(veth.len(), 1);
    // The kubelet starts a new sandbox before the old one's DEL: same pod, same host veth
    // name. ADD replaces the stale host end instead of failing on it.
    let add_new = env.inv("ADD", "sandbox-new", &new).args(pod);
    let r = env.run(&add_new, &conf).expect_ok();
    assert_eq!(env.host.cali_links(), veth, "one host veth per pod");
    let ip = result_ips(&r)[0].clone();
    env.run(&env.inv("ADD", "peer", &peer), &conf).expect_ok();
    assert!(peer.ping(&ip), "the new sandbox is reachable");
    // The old sandbox's DEL releases its own address only and leaves the new one working.
    env.run(&add_old.with_command("DEL"), &conf).expect_ok();
    assert!(peer.ping(&ip), "the old sandbox's DEL broke the new one");
    env.run(&add_new.with_command("CHECK"), &with_prev(&conf, &r)).expect_ok();
    assert_eq!(env.store.used(), 2);
    env.run(&add_new.with_command("DEL"), &conf).expect_ok();
    env.run(&env.inv("DEL", "peer", &peer), &conf).expect_ok();
    env.assert_nothing_left("sandbox replaced");
}
