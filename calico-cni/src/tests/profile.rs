//! ADD's profiles: the network's name by default, netconf `profiles` otherwise; a missing
//! profile is created with Calico's defaults before anything is set up, an existing one is
//! left as it is, and the endpoint record holds them in order.

use datastore::Datastore;
use model::profile::Profile;

use super::{endpoint_key, Rig};

fn profiles_of(rig: &Rig) -> Vec<Profile> {
    let kvs = rig.store.inner.list(model::keys::PROFILE_PREFIX).unwrap();
    Profile::gather(kvs.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice()))).unwrap()
}

#[test]
fn the_default_profile_is_the_networks_and_is_created_before_the_setup() {
    let mut rig = Rig::new();
    rig.conf.as_object_mut().unwrap().remove("profiles");
    rig.add(&rig.req("ADD", "c1")).expect("ADD");
    assert_eq!(profiles_of(&rig), [Profile::new("net1")]);
    let ep = crate::endpoint::get(&rig.store.inner, &endpoint_key("c1")).unwrap().unwrap();
    assert_eq!(ep.profiles, ["net1"]);
    let calls = rig.script.calls();
    let created = calls.iter().position(|c| c.contains("put:/calico/v1/policy/profile/net1/rules")).expect("created");
    let ipam = calls.iter().position(|c| c.starts_with(super::fake::step::IPAM_ADD)).expect("ipam");
    assert!(created < ipam, "{calls:#?}");
}

#[test]
fn named_profiles_are_kept_in_order_and_existing_ones_untouched() {
    let mut rig = Rig::new();
    let mut web = Profile::new("web");
    web.tags.push("extra".into());
    let ops: Vec<datastore::Op> =
        web.records().into_iter().map(|(key, value)| datastore::Op::Put { key, value }).collect();
    rig.store.inner.txn(&[], &ops).unwrap();
    rig.conf["profiles"] = serde_json::json!(["web", "db"]);
    rig.add(&rig.req("ADD", "c1")).expect("ADD");
    assert_eq!(profiles_of(&rig), [Profile::new("db"), web]);
    let ep = crate::endpoint::get(&rig.store.inner, &endpoint_key("c1")).unwrap().unwrap();
    assert_eq!(ep.profiles, ["web", "db"]);
}

#[test]
fn a_bad_profile_name_is_refused_before_anything_is_set_up() {
    let mut rig = Rig::new();
    rig.conf["profiles"] = serde_json::json!(["ok", "not/ok"]);
    let err = rig.add(&rig.req("ADD", "c1")).unwrap_err();
    assert!(err.to_string().contains("profiles"), "{err}");
    assert!(!rig.script.calls().iter().any(|c| c.starts_with(super::fake::step::IPAM_ADD)), "{:?}", rig.script.calls());
    assert!(profiles_of(&rig).is_empty());
}

#[test]
fn the_profiles_are_read_with_the_endpoint_record_in_one_request() {
    let mut rig = Rig::new();
    let ops: Vec<datastore::Op> =
        Profile::new("web").records().into_iter().map(|(key, value)| datastore::Op::Put { key, value }).collect();
    rig.store.inner.txn(&[], &ops).unwrap();
    rig.conf["profiles"] = serde_json::json!(["web"]);
    rig.add(&rig.req("ADD", "c2")).expect("ADD");
    let reads: Vec<String> = rig.script.calls().into_iter().filter(|c| c.starts_with("store.")).collect();
    let web = |field: &str| format!("/calico/v1/policy/profile/web/{field}");
    assert_eq!(
        reads[0],
        format!(
            "{} {},{},{},{}",
            super::fake::step::STORE_READ_MANY,
            endpoint_key("c2"),
            web("rules"),
            web("tags"),
            web("labels")
        )
    );
    assert!(!reads[1..].iter().any(|c| c.contains("/policy/profile/")), "the profiles read again: {reads:#?}");
}
