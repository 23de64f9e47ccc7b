//! ADD: the order of its steps, and every rollback path.

use cni::skel::{Plugin, Request};
use cni::{CniCode, CniResult};

use super::fake::{step, EEXIST};
use super::{endpoint_key, host_veth, Rig, NETNS};
use crate::Error;

/// What a successful ADD of container `id` does, in order.
fn add_calls(id: &str) -> Vec<String> {
    let veth = host_veth(id);
    vec![
        format!("{} {}", step::STORE_READ_MANY, endpoint_key(id)),
        format!("{} {NETNS}", step::OPEN_NETNS),
        format!("{} {id}", step::IPAM_ADD),
        format!("{} {veth}/eth0", step::CREATE_VETH),
        format!("{} {veth}=10.0.0.5", step::FW_ATTACH_POLICY),
        format!("{} eth0", step::SETUP_CONTAINER),
        format!("{} {veth}", step::SETUP_HOST),
        format!("{} /calico/v1/ipam/v4/pool/", step::STORE_LIST),
        format!("{} put:{}", step::STORE_TXN, endpoint_key(id)),
    ]
}

#[test]
fn add_runs_its_steps_in_order() {
    let rig = Rig::new();
    let result = rig.add(&rig.req("ADD", "c1")).expect("ADD");
    assert_eq!(rig.script.calls(), add_calls("c1"));
    assert_eq!(result.interfaces[0].name, host_veth("c1"));
    assert_eq!(result.interfaces[1].mac.as_deref(), Some("0a:58:0a:00:00:05"));
    assert_eq!(result.interfaces[1].sandbox.as_deref(), Some(NETNS));
    assert_eq!(result.ips[0].address.to_string(), "10.0.0.5/32");
    assert_eq!(result.ips[0].interface, Some(1));
    assert_eq!(rig.store.keys(), [endpoint_key("c1")]);
    let ep = crate::endpoint::get(&rig.store.inner, &endpoint_key("c1")).unwrap().unwrap();
    assert_eq!((ep.host_veth.as_str(), ep.ips.as_slice()), (host_veth("c1").as_str(), &["10.0.0.5/32".to_owned()][..]));
}

#[test]
fn a_repeated_add_answers_from_the_record() {
    let rig = Rig::new();
    let first = rig.attached("c1");
    let again = rig.add(&rig.req("ADD", "c1")).expect("second ADD");
    assert_eq!(again, first);
    assert_eq!(rig.script.steps(), [step::STORE_READ_MANY]);
}

/// The calls of an ADD failing at its `n`th call: the calls before it and that one, then
/// the undos of the steps that succeeded, latest first.
fn expected_after_failure_at(id: &str, n: usize) -> Vec<String> {
    let calls = add_calls(id);
    let mut expected = calls[..n].to_vec();
    if n > 5 {
        expected.push(format!("{} {}=10.0.0.5", step::FW_DETACH_POLICY, host_veth(id)));
    }
    if n > 4 {
        expected.push(format!("{} {}", step::DELETE_HOST_LINK, host_veth(id)));
    }
    if n > 3 {
        expected.push(format!("{} {id}", step::IPAM_DEL));
    }
    expected
}

#[test]
fn a_failure_at_each_step_undoes_exactly_the_earlier_steps_in_reverse() {
    let codes = [
        (step::STORE_READ_MANY, cni::code::TRY_AGAIN_LATER),
        (step::OPEN_NETNS, cni::code::INVALID_ENV),
        (step::IPAM_ADD, cni::code::TRY_AGAIN_LATER),
        (step::CREATE_VETH, crate::CODE_DATAPLANE),
        (step::FW_ATTACH_POLICY, crate::CODE_DATAPLANE),
        (step::SETUP_CONTAINER, crate::CODE_DATAPLANE),
        (step::SETUP_HOST, crate::CODE_DATAPLANE),
        (step::STORE_LIST, cni::code::TRY_AGAIN_LATER),
        (step::STORE_TXN, cni::code::TRY_AGAIN_LATER),
    ];
    for (n, (name, code)) in codes.into_iter().enumerate().map(|(i, c)| (i + 1, c)) {
        let rig = Rig::new();
        rig.script.fail_at_call(n);
        let err = rig.add(&rig.req("ADD", "c1")).expect_err(name);
        assert!(!matches!(err, Error::RollbackIncomplete(_)), "{name}: {err}");
        assert_eq!(err.cni_code(), code, "failure at {name}: {err}");
        assert_eq!(rig.script.calls(), expected_after_failure_at("c1", n), "failure at {name}");
        rig.assert_nothing_left(name);
    }
}

#[test]
fn a_failure_to_write_the_endpoint_record_releases_everything() {
    let rig = Rig::new();
    rig.script.fail_at(step::STORE_TXN);
    let err = rig.add(&rig.req("ADD", "c1")).unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    assert_eq!(
        rig.script.steps()[8..],
        [step::STORE_TXN, step::FW_DETACH_POLICY, step::DELETE_HOST_LINK, step::IPAM_DEL],
        "the record's write, then the policy, the veth, and the addresses"
    );
    rig.assert_nothing_left("record write failed");
    // The runtime's next ADD then succeeds.
    rig.add(&rig.req("ADD", "c1")).expect("ADD after the failure");
}

#[test]
fn no_address_from_ipam_releases_it() {
    let mut rig = Rig::new();
    rig.ipam.result = CniResult::default();
    let err = rig.add(&rig.req("ADD", "c1")).unwrap_err();
    assert!(matches!(err, Error::NoAddress { .. }), "{err:?}");
    assert_eq!(rig.script.steps(), [step::STORE_READ_MANY, step::OPEN_NETNS, step::IPAM_ADD, step::IPAM_DEL]);
    rig.assert_nothing_left("no address");
}

#[test]
fn a_stale_host_veth_is_removed_and_the_veth_created_again() {
    let rig = Rig::new();
    rig.dp.kernel.borrow_mut().host_links.insert(host_veth("c1"));
    rig.add(&rig.req("ADD", "c1")).expect("ADD over a stale host veth");
    let steps = rig.script.steps();
    assert_eq!(steps[3..6], [step::CREATE_VETH, step::DELETE_HOST_LINK, step::CREATE_VETH]);
    assert_eq!(rig.dp.kernel.borrow().host_links, [host_veth("c1")].into());
}

#[test]
fn a_stale_host_veth_that_cannot_be_removed_fails_the_add() {
    let rig = Rig::new();
    rig.dp.kernel.borrow_mut().host_links.insert(host_veth("c1"));
    rig.script.fail_at(step::DELETE_HOST_LINK);
    let err = rig.add(&rig.req("ADD", "c1")).unwrap_err();
    assert!(err.to_string().starts_with("removing a stale host veth"), "{err}");
    assert_eq!(rig.script.steps()[3..], [step::CREATE_VETH, step::DELETE_HOST_LINK, step::IPAM_DEL]);
}

#[test]
fn a_name_taken_in_the_container_is_not_taken_for_a_stale_veth_twice() {
    let rig = Rig::new();
    rig.dp.kernel.borrow_mut().netns.get_mut(std::path::Path::new(NETNS)).unwrap().insert("eth0".into());
    let err = rig.add(&rig.req("ADD", "c1")).unwrap_err();
    assert_eq!(err.cni_code(), crate::CODE_DATAPLANE, "{err}");
    // No host end of ours existed: nothing to remove, and no second attempt.
    assert_eq!(rig.script.steps()[3..], [step::CREATE_VETH, step::DELETE_HOST_LINK, step::IPAM_DEL]);
    assert!(rig.dp.kernel.borrow().host_links.is_empty());
}

#[test]
fn an_undo_that_fails_is_named_in_the_details() {
    let rig = Rig::new();
    rig.script.fail_at(step::SETUP_HOST).fail_at(step::IPAM_DEL);
    let err = rig.add(&rig.req("ADD", "c1")).unwrap_err();
    // It reads and maps as the step that failed...
    assert_eq!(err.cni_code(), crate::CODE_DATAPLANE);
    assert!(err.to_string().starts_with("configuring the host side"), "{err}");
    // ...and the reply says what is left behind.
    let failure = err.failure();
    assert_eq!(failure.msg, err.to_string());
    assert!(
        failure.details.ends_with(
            "; rollback incomplete: releasing the IPAM allocation: plugin fake-ipam failed: ipam.del refused (injected)"
        ),
        "{}",
        failure.details
    );
    // The other undo still ran.
    assert!(rig.dp.kernel.borrow().host_links.is_empty());
    assert_eq!(rig.ipam.held.borrow().len(), 1, "the release failed");
}

#[test]
fn every_undo_that_fails_is_named_in_the_order_they_ran() {
    let rig = Rig::new();
    rig.script.fail_at(step::STORE_TXN).fail_at_with(step::DELETE_HOST_LINK, EEXIST).fail_at(step::IPAM_DEL);
    let failure = rig.add(&rig.req("ADD", "c1")).unwrap_err().failure();
    assert_eq!(failure.code, cni::code::TRY_AGAIN_LATER);
    let note = failure.details.split_once("rollback incomplete: ").map(|(_, n)| n).unwrap_or_default();
    let undos: Vec<&str> = note.split("; ").map(|u| u.split(':').next().unwrap_or_default()).collect();
    assert_eq!(undos, ["deleting the veth pair", "releasing the IPAM allocation"], "{}", failure.details);
    assert!(note.contains(&format!("delete link {} (injected)", host_veth("c1"))), "{note}");
}

/// calico-cni's plugin over the rig, for what the skeleton prints.
struct OnRig<'a>(&'a Rig);

impl Plugin for OnRig<'_> {
    type Error = Error;
    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        self.0.add(req)
    }
    fn del(&self, req: &Request) -> Result<(), Error> {
        self.0.del(req)
    }
    fn check(&self, req: &Request) -> Result<(), Error> {
        self.0.check(req)
    }
    fn gc(&self, req: &Request) -> Result<(), Error> {
        self.0.gc(req)
    }
    fn status(&self, _req: &Request) -> Result<(), Error> {
        Ok(())
    }
}

#[test]
fn the_reply_of_an_incomplete_rollback_names_the_undo_in_details() {
    let rig = Rig::new();
    rig.script.fail_at(step::SETUP_CONTAINER).fail_at(step::DELETE_HOST_LINK);
    let stdin = serde_json::to_vec(&rig.conf).unwrap();
    let env = |name: &str| {
        let value = match name {
            "CNI_COMMAND" => "ADD",
            "CNI_CONTAINERID" => "c1",
            "CNI_NETNS" => NETNS,
            "CNI_IFNAME" => "eth0",
            "CNI_PATH" => "/opt/cni/bin",
            _ => return None,
        };
        Some(value.to_owned())
    };
    let mut out = Vec::new();
    cni::skel::run_with(&OnRig(&rig), env, Some(&mut &stdin[..]), &mut out);
    let reply: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(reply["code"], crate::CODE_DATAPLANE);
    assert!(reply["msg"].as_str().unwrap().starts_with("configuring the container interface"), "{reply}");
    let details = reply["details"].as_str().unwrap();
    assert!(details.contains("rollback incomplete: deleting the veth pair: netlink: delete link"), "{details}");
}
