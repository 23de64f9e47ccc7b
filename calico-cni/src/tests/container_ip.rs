//! `calicoctl container <C> ip add|remove` over the fakes: where the address goes, and that
//! a failure at any step, or a refusal, leaves everything as it was.

use std::net::IpAddr;

use datastore::Datastore;
use ipam::{Ipam, More, Owner, Request};

use super::fake::step;
use super::{endpoint_key, host_veth, Rig, ADDRESS, NETNS};
use crate::container_ip::{self, Record, Tools};
use crate::Error;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Container c1 attached, with its address allocated in a real IPAM (pool 10.0.0.0/24).
fn attached() -> Rig {
    let rig = Rig::new();
    rig.attached("c1");
    ipam::pool::add(&rig.store.inner, &model::pool::Pool::new("10.0.0.0/24".parse().unwrap())).unwrap();
    let owner = Owner {
        handle: "net1.c1".into(),
        network: "net1".into(),
        container_id: "c1".into(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    Ipam::new(&rig.store.inner, "node1")
        .assign(&Request { owner, ips: vec![ip(ADDRESS)], ..Default::default() })
        .unwrap();
    rig.script.clear();
    rig
}

fn sorted<const N: usize>(mut ips: [IpAddr; N]) -> Vec<IpAddr> {
    ips.sort();
    ips.to_vec()
}

fn record(rig: &Rig) -> Record {
    let kv = rig.store.inner.get(&endpoint_key("c1")).unwrap().unwrap();
    Record { endpoint: model::decode(&kv.key, &kv.value).unwrap(), revision: kv.mod_revision }
}

fn tools(rig: &Rig) -> Tools<'_, super::fake::FakeDataplane> {
    Tools { dataplane: &rig.dp, store: &rig.store, firewall: &rig.fw }
}

fn held(rig: &Rig) -> Vec<IpAddr> {
    Ipam::new(&rig.store.inner, "node1").ips_of_handle("net1.c1").unwrap()
}

/// Everything as before the `ip add`: one address held, none added in the kernel or the
/// tag sets, the record as it was.
fn assert_as_before(rig: &Rig, before: &Record, what: &str) {
    assert_eq!(held(rig), [ip(ADDRESS)], "{what}: IPAM");
    let kernel = rig.dp.kernel.borrow();
    assert!(kernel.addresses.values().all(|a| a.is_empty()), "{what}: container addresses {:?}", kernel.addresses);
    assert!(kernel.routes.values().all(|a| a.is_empty()), "{what}: host routes {:?}", kernel.routes);
    let policy = rig.fw.policy.borrow();
    assert!(policy.values().all(|a| a.iter().all(|a| *a == ip(ADDRESS))), "{what}: tag sets {policy:?}");
    assert_eq!(record(rig).endpoint, before.endpoint, "{what}: record");
}

#[test]
fn an_added_address_is_in_ipam_the_container_the_route_the_tags_and_the_record() {
    let rig = attached();
    let before = record(&rig);
    let (added, ep) = container_ip::add(&tools(&rig), &before, More::Family(4)).expect("ip add");
    assert_ne!(added, ip(ADDRESS));
    assert_eq!(held(&rig), sorted([ip(ADDRESS), added]));
    let kernel = rig.dp.kernel.borrow();
    assert_eq!(kernel.addresses[&format!("{NETNS}/eth0")], [added].into());
    assert_eq!(kernel.routes[&host_veth("c1")], [added].into());
    assert_eq!(rig.fw.policy.borrow()[&host_veth("c1")], [ip(ADDRESS), added].into());
    assert_eq!(ep.ips, [format!("{ADDRESS}/32"), format!("{added}/32")]);
    assert_eq!(record(&rig).endpoint, ep);
    let result = cni::CniResult::from_json(&ep.result).unwrap();
    assert_eq!(result.ips.iter().map(|c| c.address.ip()).collect::<Vec<_>>(), [ip(ADDRESS), added]);
    assert_eq!(result.ips[1].interface, Some(1), "on the container interface, as ADD's");
    let steps = rig.script.steps();
    let order: Vec<&str> = [step::ADD_CONTAINER_ADDRESS, step::ADD_HOST_ROUTE, step::FW_ATTACH_POLICY, step::STORE_TXN]
        .into_iter()
        .filter(|s| steps.iter().any(|x| x == s))
        .collect();
    assert_eq!(order.len(), 4, "{steps:?}");
    let at = |s: &str| steps.iter().rposition(|x| x == s).unwrap();
    assert!(at(step::ADD_CONTAINER_ADDRESS) < at(step::ADD_HOST_ROUTE));
    assert!(at(step::ADD_HOST_ROUTE) < at(step::FW_ATTACH_POLICY));
    assert!(at(step::FW_ATTACH_POLICY) < at(step::STORE_TXN), "the record last: {steps:?}");
}

#[test]
fn a_failure_at_any_step_of_ip_add_leaves_nothing() {
    for fail in [step::ADD_CONTAINER_ADDRESS, step::ADD_HOST_ROUTE, step::FW_ATTACH_POLICY, step::FW_MISSING] {
        let rig = attached();
        let before = record(&rig);
        rig.script.fail_at(fail);
        let err = container_ip::add(&tools(&rig), &before, More::Ip(ip("10.0.0.9"))).expect_err(fail);
        assert!(!matches!(err, Error::RollbackIncomplete(_)), "{fail}: {err:?}");
        assert_as_before(&rig, &before, fail);
    }
    // The record changed under us (a profile change meanwhile): everything undone.
    let rig = attached();
    let stale = record(&rig);
    let mut changed = stale.endpoint.clone();
    changed.profiles.push("other".into());
    rig.store
        .inner
        .txn(&[], &[datastore::Op::Put { key: endpoint_key("c1"), value: model::encode(&changed) }])
        .unwrap();
    let err = container_ip::add(&tools(&rig), &stale, More::Family(4)).expect_err("stale record");
    assert!(matches!(err, Error::EndpointChanged { .. }), "{err:?}");
    assert_eq!(held(&rig), [ip(ADDRESS)]);
    assert!(rig.dp.kernel.borrow().addresses.values().all(|a| a.is_empty()));
}

#[test]
fn an_interface_missing_in_the_container_is_named_and_the_address_released() {
    let rig = attached();
    let mut before = record(&rig);
    before.endpoint.ifname = "eth9".into();
    let err = container_ip::add(&tools(&rig), &before, More::Family(4)).expect_err("no eth9");
    assert!(format!("{err} {:?}", std::error::Error::source(&err)).contains("eth9"), "{err:?}");
    assert_eq!(held(&rig), [ip(ADDRESS)]);
}

#[test]
fn refusals_of_ip_add_name_the_problem_and_change_nothing() {
    let rig = attached();
    let before = record(&rig);
    let refused = |more: More| container_ip::add(&tools(&rig), &before, more).expect_err("refused").to_string();
    assert!(refused(More::Ip(ip(ADDRESS))).contains("already has address"));
    assert!(refused(More::Ip(ip("172.16.0.1"))).contains("not in any configured IP pool"));
    // Another container's address.
    let other = Owner { handle: "net1.c2".into(), ..Default::default() };
    let taken = ip("10.0.0.77");
    Ipam::new(&rig.store.inner, "node1")
        .assign(&Request { owner: other, ips: vec![taken], ..Default::default() })
        .unwrap();
    assert_eq!(refused(More::Ip(taken)), "IP address 10.0.0.77 is already assigned in pool 10.0.0.0/24.");
    assert!(refused(More::Pool("10.9.0.0/24".parse().unwrap())).contains("10.9.0.0/24"));
    // Not calico-ipam's: no handle.
    let mut foreign = before.clone();
    foreign.endpoint.container_id = "c3".into();
    let err = container_ip::add(&tools(&rig), &foreign, More::Family(4)).expect_err("no handle").to_string();
    assert!(err.contains("did not come from calico-ipam"), "{err}");
    assert_as_before(&rig, &before, "refusals");
}

#[test]
fn ip_remove_is_the_reverse_and_refuses_what_it_cannot_do() {
    let rig = attached();
    let before = record(&rig);
    let (added, _) = container_ip::add(&tools(&rig), &before, More::Family(4)).unwrap();
    let two = record(&rig);
    let refused =
        |ip: IpAddr, rec: &Record| container_ip::remove(&tools(&rig), rec, ip).expect_err("refused").to_string();
    assert!(refused(ip("10.0.0.200"), &two).contains("does not have address"));
    let mut mapped = two.clone();
    mapped.endpoint.port_mappings.push(model::endpoint::PortMapping {
        protocol: "tcp".into(),
        host_ip: None,
        host_port: 8080,
        container_ip: added,
        container_port: 80,
    });
    assert!(refused(added, &mapped).contains("8080/tcp"));

    // A failure half-way puts everything back.
    rig.script.fail_at(step::REMOVE_CONTAINER_ADDRESS);
    container_ip::remove(&tools(&rig), &two, added).expect_err("injected");
    assert_eq!(held(&rig), sorted([ip(ADDRESS), added]));
    assert_eq!(rig.dp.kernel.borrow().routes[&host_veth("c1")], [added].into());
    let now = record(&rig);
    assert_eq!(now.endpoint, two.endpoint, "the record is restored");

    let ep = container_ip::remove(&tools(&rig), &now, added).expect("ip remove");
    assert_eq!(ep.ips, [format!("{ADDRESS}/32")]);
    assert_as_before(&rig, &before, "after ip remove");
    assert!(refused(ip(ADDRESS), &record(&rig)).contains("only address"));
}

#[test]
fn another_hosts_container_is_refused_before_anything() {
    let rig = attached();
    let before = record(&rig);
    rig.dp.kernel.borrow_mut().host_links.clear();
    for err in [
        container_ip::add(&tools(&rig), &before, More::Family(4)).expect_err("add elsewhere"),
        container_ip::remove(&tools(&rig), &before, ip(ADDRESS)).expect_err("remove elsewhere"),
    ] {
        assert!(err.to_string().contains("is not on this host: run this on its node, node1"), "{err}");
    }
    assert_eq!(held(&rig), [ip(ADDRESS)]);
    assert_eq!(record(&rig).endpoint, before.endpoint);
}
