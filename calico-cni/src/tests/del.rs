//! DEL: its order, and its idempotence when the link, the netns or the record is gone.

use std::path::Path;

use cni::CniCode;
use datastore::{Datastore, Op};

use super::fake::step;
use super::{endpoint_key, host_veth, Rig, NETNS};

#[test]
fn del_releases_then_drops_the_record_then_the_veth() {
    let rig = Rig::new();
    rig.attached("c1");
    rig.del(&rig.req("DEL", "c1")).expect("DEL");
    assert_eq!(
        rig.script.calls(),
        [
            format!("{} c1", step::IPAM_DEL),
            format!("{} {}", step::STORE_GET, endpoint_key("c1")),
            format!("{} {}=10.0.0.5", step::FW_DETACH_POLICY, host_veth("c1")),
            format!("{} delete:{}", step::STORE_TXN, endpoint_key("c1")),
            format!("{} {}", step::DELETE_HOST_LINK_DETACHED, host_veth("c1")),
        ]
    );
    rig.assert_nothing_left("DEL");
}

#[test]
fn a_second_del_finds_nothing_and_succeeds() {
    let rig = Rig::new();
    rig.attached("c1");
    rig.del(&rig.req("DEL", "c1")).expect("DEL");
    rig.script.clear();
    rig.del(&rig.req("DEL", "c1")).expect("second DEL");
    // No record: the policy by the veth's derived name (its tag members by their
    // comment), the host veth too; none: a look into the netns.
    assert_eq!(
        rig.script.steps(),
        [
            step::IPAM_DEL,
            step::STORE_GET,
            step::FW_DETACH_POLICY,
            step::DELETE_HOST_LINK_DETACHED,
            step::OPEN_NETNS_FOR_TEARDOWN,
            step::DELETE_CONTAINER_LINK
        ]
    );
    rig.assert_nothing_left("second DEL");
}

#[test]
fn del_without_a_host_link_deletes_the_container_end() {
    let rig = Rig::new();
    rig.attached("c1");
    // The host end went away (by hand); the container end is still there.
    {
        let mut kernel = rig.dp.kernel.borrow_mut();
        kernel.host_links.clear();
        kernel.peers.clear();
    }
    rig.del(&rig.req("DEL", "c1")).expect("DEL");
    assert_eq!(
        rig.script.steps()[4..],
        [step::DELETE_HOST_LINK_DETACHED, step::OPEN_NETNS_FOR_TEARDOWN, step::DELETE_CONTAINER_LINK]
    );
    rig.assert_nothing_left("DEL without host link");
}

#[test]
fn del_after_the_netns_is_gone_succeeds() {
    let rig = Rig::new();
    rig.attached("c1");
    // The runtime removed the sandbox first: the veth went with it.
    {
        let mut kernel = rig.dp.kernel.borrow_mut();
        kernel.netns.clear();
        kernel.host_links.clear();
        kernel.peers.clear();
    }
    rig.del(&rig.req("DEL", "c1")).expect("DEL");
    assert_eq!(rig.script.steps().last().map(String::as_str), Some(step::OPEN_NETNS_FOR_TEARDOWN));
    assert!(rig.store.keys().is_empty() && rig.ipam.held.borrow().is_empty());
}

#[test]
fn del_without_netns_never_looks_for_one() {
    let rig = Rig::new();
    rig.attached("c1");
    rig.del(&rig.req_with("DEL", "c1", &rig.conf, "", "")).expect("DEL");
    rig.del(&rig.req_with("DEL", "c1", &rig.conf, "", "")).expect("second DEL");
    assert!(!rig.script.steps().iter().any(|s| s.starts_with("netns.")), "{:?}", rig.script.calls());
    rig.assert_nothing_left("DEL without CNI_NETNS");
}

#[test]
fn del_without_any_record_or_add_succeeds() {
    let rig = Rig::new();
    rig.del(&rig.req("DEL", "never")).expect("DEL of nothing");
    assert_eq!(rig.script.calls()[2], format!("{} {}=", step::FW_DETACH_POLICY, host_veth("never")));
    assert_eq!(rig.script.calls()[3], format!("{} {}", step::DELETE_HOST_LINK_DETACHED, host_veth("never")));
}

#[test]
fn del_drops_a_corrupt_record_and_finds_the_veth_by_name() {
    let rig = Rig::new();
    rig.attached("c1");
    let key = endpoint_key("c1");
    rig.store.inner.txn(&[], &[Op::Put { key: key.clone(), value: b"{not json".to_vec() }]).unwrap();
    rig.del(&rig.req("DEL", "c1")).expect("DEL");
    assert_eq!(rig.script.calls()[2], format!("{} delete:{key}", step::STORE_TXN));
    rig.assert_nothing_left("corrupt record");
}

#[test]
fn del_of_an_older_sandbox_leaves_the_newer_ones_veth() {
    let rig = Rig::new();
    let pod = "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web";
    let veth = host_veth("ns.web");
    rig.add(&rig.req_with("ADD", "old", &rig.conf, NETNS, pod)).expect("ADD old");
    // The newer sandbox replaces the older one's veth and record.
    rig.dp.kernel.borrow_mut().netns.insert("/run/netns/c2".into(), ["lo".to_owned()].into());
    rig.add(&rig.req_with("ADD", "new", &rig.conf, "/run/netns/c2", pod)).expect("ADD new");
    rig.script.clear();
    rig.del(&rig.req_with("DEL", "old", &rig.conf, NETNS, pod)).expect("DEL old");
    assert_eq!(
        rig.script.steps(),
        [step::IPAM_DEL, step::STORE_GET, step::OPEN_NETNS_FOR_TEARDOWN, step::DELETE_CONTAINER_LINK]
    );
    assert_eq!(rig.dp.kernel.borrow().host_links, [veth].into());
    assert_eq!(rig.store.keys().len(), 1);
}

#[test]
fn del_stops_at_a_failed_release_so_the_retry_finds_everything() {
    let rig = Rig::new();
    rig.attached("c1");
    rig.script.fail_at(step::IPAM_DEL);
    let err = rig.del(&rig.req("DEL", "c1")).unwrap_err();
    assert_eq!(err.cni_code(), cni::code::TRY_AGAIN_LATER);
    assert_eq!(rig.script.steps(), [step::IPAM_DEL]);
    assert_eq!(rig.store.keys(), [endpoint_key("c1")]);
    rig.del(&rig.req("DEL", "c1")).expect("the retry");
    rig.assert_nothing_left("retried DEL");
}

#[test]
fn del_keeps_the_veth_when_the_record_cannot_be_dropped() {
    let rig = Rig::new();
    rig.attached("c1");
    rig.script.fail_at(step::STORE_TXN);
    rig.del(&rig.req("DEL", "c1")).unwrap_err();
    assert_eq!(rig.script.steps().last().map(String::as_str), Some(step::STORE_TXN));
    assert_eq!(rig.dp.kernel.borrow().host_links.len(), 1, "the retry finds the veth through the record");
    rig.del(&rig.req("DEL", "c1")).expect("the retry");
    rig.assert_nothing_left("retried DEL");
}

#[test]
fn gc_removes_only_the_attachments_the_runtime_no_longer_knows() {
    let rig = Rig::new();
    rig.attached("keep");
    rig.dp.kernel.borrow_mut().netns.insert("/run/netns/c2".into(), ["lo".to_owned()].into());
    rig.add(&rig.req_with("ADD", "gone", &rig.conf, "/run/netns/c2", "")).expect("ADD gone");
    rig.script.clear();
    let mut conf = rig.conf.clone();
    conf["cniVersion"] = "1.1.0".into();
    conf["cni.dev/valid-attachments"] = serde_json::json!([{"containerID": "keep", "ifname": "eth0"}]);
    rig.gc(&rig.req_with("GC", "", &conf, "", "")).expect("GC");
    assert_eq!(
        rig.script.calls()[2..],
        [
            format!("{} {}", step::DELETE_HOST_LINK_DETACHED, host_veth("gone")),
            format!("{} {}=10.0.0.5", step::FW_DETACH_POLICY, host_veth("gone")),
            format!("{} delete:{}", step::STORE_TXN, endpoint_key("gone")),
            // Mappings that lost their record are looked for by owner.
            format!("{} ", step::FW_LIST),
        ]
    );
    assert_eq!(rig.dp.kernel.borrow().host_links, [host_veth("keep")].into());
    assert!(rig.dp.kernel.borrow().netns[Path::new("/run/netns/c2")].len() == 1);
}
