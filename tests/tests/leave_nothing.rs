//! Failures and read-only commands leave nothing behind: an ADD that fails creates no pool,
//! and calicoctl's read-only commands never create a store.

use calico_tests::{bin, Backend, Invocation};
use serde_json::{json, Value};

fn netconf(backend: &Backend, ipam: Value) -> Vec<u8> {
    let mut conf =
        json!({"cniVersion": "1.0.0", "name": "leftnet", "type": "calico", "nodename": "node1", "ipam": ipam});
    conf["ipam"]["type"] = json!("calico-ipam");
    backend.apply(&mut conf);
    serde_json::to_vec(&conf).unwrap()
}

fn pools(backend: &Backend) -> Value {
    backend.ctl(&["pool", "show", "-o", "json"]).expect_ok()
}

#[test]
fn a_failed_add_creates_no_default_pool() {
    for backend in Backend::all() {
        let name = backend.name();
        let ipam = |id: &str, conf: &[u8]| Invocation::new("ADD", id).run(&bin("calico-ipam"), conf);
        let err = ipam("unknown", &netconf(&backend, json!({"ipv4_pools": ["10.99.0.0/24"]}))).expect_err(7);
        assert!(err["msg"].as_str().unwrap().contains("10.99.0.0/24"), "{err}");
        let outside = Invocation::new("ADD", "outside").args("IP=10.9.9.9");
        outside.run(&bin("calico-ipam"), &netconf(&backend, json!({}))).expect_err(7);
        let dual = netconf(&backend, json!({"assign_ipv6": true}));
        ipam("dual", &dual).expect_err(7);
        assert_eq!(pools(&backend), json!([]), "[{name}] a failed ADD left a pool");
        assert_eq!(backend.used(), 0, "[{name}]");
        // The README's own first step still works.
        backend.ctl(&["pool", "add", "192.168.0.0/16", "--ipip", "--nat-outgoing"]).success();
        backend.ctl(&["pool", "remove", "192.168.0.0/16"]).success();
        // An ADD that succeeds creates Calico's default pool, as before.
        ipam("ok", &netconf(&backend, json!({}))).expect_ok();
        let created = pools(&backend);
        assert_eq!(created[0]["cidr"], "192.168.0.0/16", "[{name}] {created}");
        assert_eq!(created[0]["nat_outgoing"], true, "[{name}] {created}");
        backend.assert_clean();
    }
}

#[test]
fn read_only_commands_never_create_a_store() {
    let scratch = calico_tests::StoreDir::new();
    let dir = scratch.dir.path().join("mistyped/dir");
    let db = dir.join("x.db").display().to_string();
    let ctl = |args: &[&str]| {
        let mut full = vec!["--datastore-path", db.as_str()];
        full.extend_from_slice(args);
        calico_tests::calicoctl(&[], &full)
    };
    for args in [
        &["pool", "show"][..],
        &["pool", "show", "-o", "json"],
        &["ipam", "show"],
        &["ipam", "check"],
        &["ipam", "release", "--ip", "10.0.0.1"],
        &["pool", "remove", "10.0.0.0/24"],
    ] {
        let out = ctl(args);
        assert!(!out.ok(), "{args:?} succeeded on a missing store: {out:#?}");
        assert!(out.stderr.contains(&db) && out.stderr.contains("does not exist"), "{args:?}: {out:#?}");
        assert!(!dir.exists(), "{args:?} created {}", dir.display());
    }
    // A write command still creates it.
    ctl(&["pool", "add", "10.0.0.0/24"]).success();
    assert!(dir.join("x.db").is_file());
    let shown = ctl(&["pool", "show", "-o", "json"]).expect_ok();
    assert_eq!(shown[0]["cidr"], "10.0.0.0/24", "{shown}");
}
