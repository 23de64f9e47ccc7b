//! The firewall steps: pools in the NAT sets, port mappings as owned map elements, their
//! place in ADD's order and rollback, DEL, CHECK and GC.

use cni::CniCode;
use datastore::{Datastore, Op};
use firewall::{Element, PoolSet};
use model::pool::Pool;
use serde_json::json;

use super::fake::step;
use super::{endpoint_key, Rig};
use crate::Error;

const OWNER: &str = "net1/c1/eth0";
const C2_NETNS: &str = "/run/netns/c2";

/// A rig whose store holds the pool of [`super::ADDRESS`] (nat-outgoing when `nat`), and
/// whose netconf maps host port 8080/tcp to 80.
fn rig(nat: bool) -> Rig {
    let mut rig = Rig::new();
    let mut pool = Pool::new("10.0.0.0/24".parse().unwrap());
    pool.nat_outgoing = nat;
    let op = Op::Put { key: model::keys::pool(&pool.cidr), value: model::encode(&pool) };
    rig.store.inner.txn(&[], &[op]).unwrap();
    // calico-ipam in the process says which pool each address came from.
    *rig.ipam.pools.borrow_mut() = Some(vec![pool]);
    rig.conf["runtimeConfig"] = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    rig.dp.kernel.borrow_mut().netns.insert(C2_NETNS.into(), ["lo".to_owned()].into());
    rig
}

fn pool(set: PoolSet) -> Element {
    Element::Pool { set, cidr: "10.0.0.0/24".parse().unwrap() }
}

fn port(owner: &str) -> String {
    format!("port 8080/tcp (IPv4) -> 10.0.0.5:80 for {owner}")
}

#[test]
fn add_puts_the_pools_and_the_mappings_in_one_batch_before_the_record() {
    let rig = rig(true);
    rig.add(&rig.req("ADD", "c1")).expect("ADD");
    let calls = rig.script.calls();
    let at = calls.iter().position(|c| c.starts_with(step::SETUP_HOST)).unwrap();
    assert_eq!(
        calls[at + 1..],
        [
            format!("{} {}", step::ROUTE_LOCALNET, super::host_veth("c1")),
            format!("{} pool 10.0.0.0/24,nat-outgoing pool 10.0.0.0/24", step::FW_MISSING),
            format!(
                "{} pool 10.0.0.0/24,nat-outgoing pool 10.0.0.0/24,{},hairpin 10.0.0.5 for {OWNER}",
                step::FW_ADD,
                port(OWNER)
            ),
            format!("{} put:{}", step::STORE_TXN, endpoint_key("c1")),
        ]
    );
    let ep = crate::endpoint::get(&rig.store.inner, &endpoint_key("c1")).unwrap().unwrap();
    assert_eq!(ep.port_mappings.len(), 1);
    assert_eq!((ep.port_mappings[0].host_port, ep.port_mappings[0].container_port), (8080, 80));

    // The next container of the pool: the pools are there, only its own mapping is added.
    rig.script.clear();
    let mut conf = rig.conf.clone();
    conf["runtimeConfig"] = json!({});
    rig.add(&rig.req_with("ADD", "c2", &conf, C2_NETNS, "")).expect("ADD c2");
    let steps = rig.script.steps();
    assert!(steps.contains(&step::FW_MISSING.to_owned()) && !steps.contains(&step::FW_ADD.to_owned()), "{steps:?}");
}

#[test]
fn an_ipam_that_does_not_name_its_pools_costs_one_pool_listing() {
    let rig = rig(true);
    *rig.ipam.pools.borrow_mut() = None;
    rig.add(&rig.req("ADD", "c1")).expect("ADD");
    let calls = rig.script.calls();
    let list = calls.iter().position(|c| c == &format!("{} /calico/v1/ipam/v4/pool/", step::STORE_LIST));
    let missing = calls.iter().position(|c| c.starts_with(step::FW_MISSING));
    assert!(list.is_some() && list < missing, "{calls:#?}");
    assert!(rig.fw.elements().contains(&pool(PoolSet::Masq)));
}

#[test]
fn a_plain_pool_goes_only_into_the_all_pools_set() {
    let rig = rig(false);
    rig.add(&rig.req("ADD", "c1")).expect("ADD");
    let els = rig.fw.elements();
    assert!(els.contains(&pool(PoolSet::All)) && !els.contains(&pool(PoolSet::Masq)), "{els:?}");
}

#[test]
fn a_port_held_by_another_container_fails_the_add_naming_it_and_leaves_nothing() {
    let rig = rig(true);
    rig.attached("c1");
    let before = rig.fw.elements();
    let err = rig.add(&rig.req_with("ADD", "c2", &rig.conf, C2_NETNS, "")).unwrap_err();
    assert!(matches!(&err, Error::PortConflict { holder, .. } if holder == OWNER), "{err:?}");
    assert_eq!(err.cni_code(), crate::CODE_PORT_CONFLICT);
    assert!(err.to_string().contains("8080/tcp") && err.to_string().contains("c1"), "{err}");
    assert_eq!(rig.fw.elements(), before, "c1's mapping untouched");
    assert_eq!(rig.store.keys().iter().filter(|k| k.contains("/endpoint/")).count(), 1, "no record for c2");
    assert_eq!(rig.ipam.held.borrow().len(), 1, "c2's address released");
}

#[test]
fn a_failure_after_the_mappings_removes_them_first() {
    let rig = rig(true);
    rig.script.fail_at(step::STORE_TXN);
    rig.add(&rig.req("ADD", "c1")).unwrap_err();
    let steps = rig.script.steps();
    let at = steps.iter().position(|s| s == step::STORE_TXN).unwrap();
    assert_eq!(
        steps[at..],
        [step::STORE_TXN, step::FW_REMOVE, step::FW_DETACH_POLICY, step::DELETE_HOST_LINK, step::IPAM_DEL]
    );
    rig.assert_nothing_left("record write failed");
    assert!(rig.fw.elements().contains(&pool(PoolSet::Masq)), "the shared pool stays");
}

#[test]
fn a_failed_firewall_batch_rolls_back_the_earlier_steps() {
    let rig = rig(true);
    rig.script.fail_at(step::FW_ADD);
    let err = rig.add(&rig.req("ADD", "c1")).unwrap_err();
    assert!(matches!(err, Error::Firewall { .. }), "{err:?}");
    assert_eq!(err.cni_code(), crate::CODE_DATAPLANE);
    rig.assert_nothing_left("firewall batch failed");
}

#[test]
fn invalid_mappings_are_error_7_naming_the_field_before_anything_happens() {
    for (mapping, field) in [
        (json!({"hostPort": 0, "containerPort": 80}), "runtimeConfig.portMappings[0].hostPort"),
        (json!({"hostPort": 80, "containerPort": 0}), "runtimeConfig.portMappings[0].containerPort"),
        (json!({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}), "runtimeConfig.portMappings[0].protocol"),
        (json!({"hostPort": 80, "containerPort": 80, "hostIP": "nope"}), "runtimeConfig.portMappings[0].hostIP"),
    ] {
        let mut rig = rig(true);
        rig.conf["runtimeConfig"] = json!({"portMappings": [mapping]});
        let err = rig.add(&rig.req("ADD", "c1")).unwrap_err();
        assert_eq!(err.cni_code(), cni::code::INVALID_CONFIG, "{field}: {err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
        assert_eq!(rig.script.calls(), Vec::<String>::new(), "{field}");
    }
}

#[test]
fn del_removes_exactly_the_recorded_mappings_also_without_a_netns() {
    let rig = rig(true);
    rig.attached("c1");
    let mut conf = rig.conf.clone();
    conf["runtimeConfig"] = json!({});
    rig.del(&rig.req_with("DEL", "c1", &conf, "", "")).expect("DEL");
    assert!(rig.script.steps().contains(&step::FW_REMOVE.to_owned()));
    rig.assert_nothing_left("DEL");
    rig.del(&rig.req_with("DEL", "c1", &conf, "", "")).expect("DEL again");
}

#[test]
fn del_without_a_record_finds_the_mappings_by_owner() {
    let rig = rig(true);
    rig.attached("c1");
    crate::endpoint::delete(&rig.store.inner, &endpoint_key("c1")).unwrap();
    rig.del(&rig.req("DEL", "c1")).expect("DEL");
    rig.assert_nothing_left("DEL without a record");
}

#[test]
fn check_fails_when_a_mapping_is_gone() {
    let mut rig = rig(true);
    let result = rig.attached("c1");
    rig.conf["prevResult"] = serde_json::to_value(result.to_json(cni::Version::V1_0_0)).unwrap();
    rig.check(&rig.req("CHECK", "c1")).expect("CHECK");
    rig.fw.table.elements.borrow_mut().retain(|e| !matches!(e, Element::Port { .. }));
    let err = rig.check(&rig.req("CHECK", "c1")).unwrap_err();
    assert!(err.to_string().contains("8080/tcp"), "{err}");
}

#[test]
fn gc_removes_the_mappings_of_attachments_no_longer_valid() {
    let rig = rig(true);
    rig.attached("c1");
    // An ADD that died after the firewall step: a mapping without a record.
    rig.fw
        .table
        .elements
        .borrow_mut()
        .push(Element::Hairpin { addr: "10.0.0.9".parse().unwrap(), owner: "net1/dead/eth0".into() });
    // Another network's mapping is not this GC's business.
    let theirs = Element::Hairpin { addr: "10.0.0.8".parse().unwrap(), owner: "net2/x/eth0".into() };
    rig.fw.table.elements.borrow_mut().push(theirs.clone());
    let mut conf = rig.conf.clone();
    conf["cni.dev/valid-attachments"] = json!([]);
    rig.gc(&rig.req_with("GC", "", &conf, "", "")).expect("GC");
    let owned: Vec<_> = rig.fw.elements().into_iter().filter(|e| e.owner().is_some()).collect();
    assert_eq!(owned, vec![theirs]);
}
