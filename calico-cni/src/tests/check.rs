//! CHECK: its order, and each way it fails.

use cni::{CniCode, CniResult};
use datastore::{Datastore, Op};

use super::fake::step;
use super::{endpoint_key, host_veth, Rig, NETNS};
use crate::Error;

/// The netconf of a CHECK of `result`.
fn with_prev(rig: &Rig, result: &CniResult) -> serde_json::Value {
    let mut conf = rig.conf.clone();
    conf["prevResult"] = result.to_json(cni::Version::V1_0_0);
    conf
}

fn check(rig: &Rig, id: &str, conf: &serde_json::Value) -> Result<(), Error> {
    rig.check(&rig.req_with("CHECK", id, conf, NETNS, ""))
}

#[test]
fn check_asks_ipam_then_the_record_then_the_dataplane() {
    let rig = Rig::new();
    let result = rig.attached("c1");
    check(&rig, "c1", &with_prev(&rig, &result)).expect("CHECK");
    assert_eq!(
        rig.script.calls(),
        [
            format!("{} c1", step::IPAM_CHECK),
            format!("{} {}", step::STORE_GET, endpoint_key("c1")),
            format!("{} {NETNS}", step::OPEN_NETNS),
            format!("{} {}", step::CHECK, host_veth("c1")),
        ]
    );
}

#[test]
fn check_without_prev_result_fails_before_asking_anyone() {
    let rig = Rig::new();
    rig.attached("c1");
    let err = check(&rig, "c1", &rig.conf).unwrap_err();
    assert_eq!(err.cni_code(), crate::CODE_CHECK_FAILED, "{err}");
    assert!(rig.script.calls().is_empty());
}

#[test]
fn check_fails_with_the_ipam_verdict() {
    let rig = Rig::new();
    let result = rig.attached("c1");
    rig.script.fail_at(step::IPAM_CHECK);
    let err = check(&rig, "c1", &with_prev(&rig, &result)).unwrap_err();
    assert_eq!(err.cni_code(), cni::code::TRY_AGAIN_LATER, "{err}");
    assert_eq!(rig.script.steps(), [step::IPAM_CHECK]);
}

#[test]
fn check_fails_without_the_record_or_with_another_containers() {
    let rig = Rig::new();
    let result = rig.attached("c1");
    let conf = with_prev(&rig, &result);
    let err = check(&rig, "c2", &conf).unwrap_err();
    assert_eq!(err.cni_code(), crate::CODE_CHECK_FAILED);
    assert!(err.to_string().contains("no workload endpoint record"), "{err}");

    // The record of c1 under c2's key: a different container owns it.
    let mut record: serde_json::Value =
        serde_json::from_slice(&rig.store.inner.get(&endpoint_key("c1")).unwrap().unwrap().value).unwrap();
    record["workload_id"] = "c2".into();
    let op = Op::Put { key: endpoint_key("c2"), value: serde_json::to_vec(&record).unwrap() };
    rig.store.inner.txn(&[], &[op]).unwrap();
    let err = check(&rig, "c2", &conf).unwrap_err();
    assert!(err.to_string().contains("no workload endpoint record"), "{err}");
    assert!(!rig.script.steps().iter().any(|s| s == step::OPEN_NETNS), "never looked at the dataplane");
}

#[test]
fn check_fails_on_an_address_the_record_does_not_hold() {
    let rig = Rig::new();
    let mut result = rig.attached("c1");
    result.ips[0].address = "10.0.0.6/32".parse().unwrap();
    let err = check(&rig, "c1", &with_prev(&rig, &result)).unwrap_err();
    assert_eq!(err.cni_code(), crate::CODE_CHECK_FAILED);
    assert!(err.to_string().contains("10.0.0.6"), "{err}");
}

#[test]
fn check_fails_when_the_netns_cannot_be_opened() {
    let rig = Rig::new();
    let result = rig.attached("c1");
    rig.dp.kernel.borrow_mut().netns.clear();
    let err = check(&rig, "c1", &with_prev(&rig, &result)).unwrap_err();
    assert_eq!(err.cni_code(), cni::code::INVALID_ENV, "{err}");
}

#[test]
fn check_fails_with_the_dataplanes_verdict() {
    let rig = Rig::new();
    let result = rig.attached("c1");
    let conf = with_prev(&rig, &result);
    rig.script.fail_at(step::CHECK);
    let err = check(&rig, "c1", &conf).unwrap_err();
    assert_eq!(err.cni_code(), crate::CODE_CHECK_FAILED);
    assert!(err.to_string().starts_with("checking the dataplane"), "{err}");

    // The host end removed by hand.
    rig.dp.kernel.borrow_mut().host_links.clear();
    let err = check(&rig, "c1", &conf).unwrap_err();
    assert_eq!(err.cni_code(), crate::CODE_CHECK_FAILED);
    // The verdict is the cause: in `details`, under the step's `msg`.
    let failure = err.failure();
    assert_eq!(failure.msg, "checking the dataplane failed");
    assert!(failure.details.contains(&format!("host interface {} does not exist", host_veth("c1"))), "{failure:?}");
}

#[test]
fn check_fails_when_the_endpoints_policy_is_gone() {
    let rig = Rig::new();
    let result = rig.attached("c1");
    let conf = with_prev(&rig, &result);
    check(&rig, "c1", &conf).expect("CHECK with the policy");
    rig.fw.policy.borrow_mut().clear();
    let err = check(&rig, "c1", &conf).unwrap_err();
    assert_eq!(err.cni_code(), crate::CODE_CHECK_FAILED);
    let want = format!("chain ei-{} is missing from table inet calico-policy", host_veth("c1"));
    assert!(err.to_string().contains(&want), "{err}");
}
