//! calico-ipam exec'd exactly as a runtime does, for every spec version and every backend.

use calico_tests::{bin, result_ips, with_prev, Backend, Invocation, VERSIONS};
use serde_json::{json, Value};

fn netconf(backend: &Backend, version: &str, ipam: Value) -> Vec<u8> {
    let mut conf = json!({
        "cniVersion": version,
        "name": "testnet",
        "type": "calico",
        "nodename": "node1",
        "log_level": "debug",
        "ipam": ipam,
    });
    conf["ipam"]["type"] = json!("calico-ipam");
    backend.apply(&mut conf);
    serde_json::to_vec(&conf).unwrap()
}

fn ipam(inv: &Invocation, stdin: &[u8]) -> calico_tests::Outcome {
    inv.run(&bin("calico-ipam"), stdin)
}

/// On each backend: ADD, the result's shape in `v`, a repeated ADD, CHECK (0.4.0 on), DEL,
/// DEL again, and CHECK of what is gone.
fn add_check_del_del(v: &str) {
    for backend in Backend::all() {
        backend.ctl(&["pool", "add", "10.20.0.0/16"]).success();
        let conf = netconf(&backend, v, json!({}));
        let add = Invocation::new("ADD", "c1");
        let result = ipam(&add, &conf).expect_ok();
        assert_eq!(result["cniVersion"], v, "[{}] answers in the version asked", backend.name());
        let ips = result_ips(&result);
        assert_eq!(ips.len(), 1, "{result}");
        assert!(ips[0].starts_with("10.20."), "{result}");
        if v < "0.3.0" {
            assert!(result["ip4"]["ip"].as_str().unwrap().ends_with("/32"), "{result}");
        } else {
            assert!(result.get("interfaces").is_none(), "IPAM results carry no interfaces: {result}");
            let has_version = result["ips"][0].get("version").is_some();
            assert_eq!(has_version, v.starts_with("0."), "{v}: {result}");
        }
        // A repeated ADD returns the same address.
        assert_eq!(result_ips(&ipam(&add, &conf).expect_ok()), ips);
        if v >= "0.4.0" {
            ipam(&add.with_command("CHECK"), &with_prev(&conf, &result)).expect_ok();
        }
        ipam(&add.with_command("DEL"), &conf).expect_ok();
        ipam(&add.with_command("DEL"), &conf).expect_ok();
        if v >= "0.4.0" {
            ipam(&add.with_command("CHECK"), &conf).expect_err(112);
        }
        assert_eq!(backend.used(), 0, "[{}]", backend.name());
        backend.assert_clean();
    }
}

calico_tests::spec_version_tests!(add_check_del_del);

#[test]
fn specific_ip_from_every_source() {
    for backend in Backend::all() {
        backend.ctl(&["pool", "add", "10.30.0.0/24"]).success();
        for v in VERSIONS {
            let conf = netconf(&backend, v, json!({}));
            let add = Invocation::new("ADD", "fixed").args("IgnoreUnknown=1;IP=10.30.0.42");
            assert_eq!(result_ips(&ipam(&add, &conf).expect_ok()), ["10.30.0.42"], "[{}] {v}", backend.name());
            // Taken: a clear error, and nothing else allocated.
            let other = Invocation::new("ADD", "other").args("IP=10.30.0.42");
            let err = ipam(&other, &conf).expect_err(111);
            assert!(err["msg"].as_str().unwrap().contains("10.30.0.42"), "{err}");
            // Outside every pool.
            let outside = Invocation::new("ADD", "outside").args("IP=172.31.0.1");
            let err = ipam(&outside, &conf).expect_err(7);
            assert!(err["msg"].as_str().unwrap().contains("not in any"), "{err}");
            ipam(&add.with_command("DEL"), &conf).expect_ok();
        }
        let mut conf: Value = serde_json::from_slice(&netconf(&backend, "1.0.0", json!({}))).unwrap();
        conf["runtimeConfig"] = json!({"ips": ["10.30.0.7/24"]});
        let add = Invocation::new("ADD", "rt");
        let stdin = serde_json::to_vec(&conf).unwrap();
        assert_eq!(result_ips(&ipam(&add, &stdin).expect_ok()), ["10.30.0.7"]);
        ipam(&add.with_command("DEL"), &stdin).expect_ok();
        conf.as_object_mut().unwrap().remove("runtimeConfig");
        conf["args"] = json!({"cni": {"ips": ["10.30.0.8"]}});
        let stdin = serde_json::to_vec(&conf).unwrap();
        assert_eq!(result_ips(&ipam(&add, &stdin).expect_ok()), ["10.30.0.8"]);
        ipam(&add.with_command("DEL"), &stdin).expect_ok();
        assert_eq!(backend.used(), 0);
        backend.assert_clean();
    }
}

#[test]
fn pool_selection_and_disabled_pools() {
    for backend in Backend::all() {
        backend.ctl(&["pool", "add", "10.40.0.0/24"]).success();
        backend.ctl(&["pool", "add", "10.41.0.0/24"]).success();
        backend.ctl(&["pool", "add", "10.42.0.0/24", "--disabled"]).success();
        for v in VERSIONS {
            let conf = netconf(&backend, v, json!({"ipv4_pools": ["10.41.0.0/24"]}));
            let add = Invocation::new("ADD", "sel");
            let ips = result_ips(&ipam(&add, &conf).expect_ok());
            assert!(ips[0].starts_with("10.41.0."), "[{}] {v}: {ips:?}", backend.name());
            ipam(&add.with_command("DEL"), &conf).expect_ok();

            let conf = netconf(&backend, v, json!({"ipv4_pools": ["10.42.0.0/24"]}));
            let err = ipam(&Invocation::new("ADD", "dis"), &conf).expect_err(7);
            assert!(err["msg"].as_str().unwrap().contains("disabled"), "{err}");
            let conf = netconf(&backend, v, json!({"ipv4_pools": ["10.99.0.0/24"]}));
            let err = ipam(&Invocation::new("ADD", "missing"), &conf).expect_err(7);
            assert!(err["msg"].as_str().unwrap().contains("10.99.0.0/24"), "{err}");
        }
        // Automatic choice never lands in the disabled pool.
        let conf = netconf(&backend, "1.0.0", json!({}));
        for i in 0..20 {
            let ips = result_ips(&ipam(&Invocation::new("ADD", &format!("auto{i}")), &conf).expect_ok());
            assert!(!ips[0].starts_with("10.42."), "{ips:?}");
        }
        for i in 0..20 {
            ipam(&Invocation::new("DEL", &format!("auto{i}")), &conf).expect_ok();
        }
        assert_eq!(backend.used(), 0);
        backend.assert_clean();
    }
}

#[test]
fn dual_stack_for_every_version() {
    for backend in Backend::all() {
        backend.ctl(&["pool", "add", "10.50.0.0/24"]).success();
        backend.ctl(&["pool", "add", "fd00:50::/120"]).success();
        for v in VERSIONS {
            let conf = netconf(&backend, v, json!({"assign_ipv4": "true", "assign_ipv6": "true"}));
            let add = Invocation::new("ADD", "dual");
            let result = ipam(&add, &conf).expect_ok();
            let ips = result_ips(&result);
            assert_eq!(ips.len(), 2, "[{}] {v}: {result}", backend.name());
            assert!(ips[0].starts_with("10.50.0.") && ips[1].starts_with("fd00:50::"), "{ips:?}");
            ipam(&add.with_command("DEL"), &conf).expect_ok();
        }
        // IPv6 exhausted: the dual-stack ADD fails whole, no IPv4 address stays behind.
        let six_only = netconf(&backend, "1.0.0", json!({"assign_ipv4": false, "assign_ipv6": true}));
        for i in 0..256 {
            ipam(&Invocation::new("ADD", &format!("six{i}")), &six_only).expect_ok();
        }
        let conf = netconf(&backend, "1.0.0", json!({"assign_ipv6": true}));
        ipam(&Invocation::new("ADD", "late"), &conf).expect_err(110);
        assert_eq!(backend.used(), 256, "only the IPv6 fill remains");
        for i in 0..256 {
            ipam(&Invocation::new("DEL", &format!("six{i}")), &six_only).expect_ok();
        }
        assert_eq!(backend.used(), 0);
        backend.assert_clean();
    }
}

#[test]
fn exhaustion_of_a_small_pool() {
    for backend in Backend::all() {
        backend.ctl(&["pool", "add", "10.60.0.0/29", "--block-size", "29"]).success();
        for v in VERSIONS {
            let conf = netconf(&backend, v, json!({"ipv4_pools": ["10.60.0.0/29"]}));
            for i in 0..8 {
                ipam(&Invocation::new("ADD", &format!("x{i}")), &conf).expect_ok();
            }
            let err = ipam(&Invocation::new("ADD", "x8"), &conf).expect_err(110);
            assert!(err["msg"].as_str().unwrap().contains("10.60.0.0/29"), "[{}] {v}: {err}", backend.name());
            assert_eq!(backend.used(), 8);
            for i in 0..8 {
                ipam(&Invocation::new("DEL", &format!("x{i}")), &conf).expect_ok();
            }
            assert_eq!(backend.used(), 0);
        }
        backend.assert_clean();
    }
}

#[test]
fn gc_keeps_only_valid_attachments() {
    for backend in Backend::all() {
        backend.ctl(&["pool", "add", "10.70.0.0/24"]).success();
        let conf = netconf(&backend, "1.1.0", json!({}));
        for c in ["keep", "gone1", "gone2"] {
            ipam(&Invocation::new("ADD", c), &conf).expect_ok();
        }
        ipam(&Invocation::new("ADD", "keep").ifname("net1"), &conf).expect_ok();
        let mut gc: Value = serde_json::from_slice(&conf).unwrap();
        gc["cni.dev/valid-attachments"] =
            json!([{"containerID": "keep", "ifname": "eth0"}, {"containerID": "keep", "ifname": "net1"}]);
        let gc_inv = Invocation { container_id: String::new(), ifname: String::new(), ..Invocation::new("GC", "") };
        ipam(&gc_inv, &serde_json::to_vec(&gc).unwrap()).expect_ok();
        assert_eq!(backend.used(), 2, "[{}]", backend.name());
        let check = Invocation::new("CHECK", "keep");
        ipam(&check, &conf).expect_ok();
        ipam(&Invocation::new("CHECK", "gone1"), &conf).expect_err(112);
        // GC in an older version is refused.
        let mut old = gc.clone();
        old["cniVersion"] = json!("1.0.0");
        assert!(!ipam(&gc_inv, &serde_json::to_vec(&old).unwrap()).ok());
        gc["cni.dev/valid-attachments"] = json!([]);
        ipam(&gc_inv, &serde_json::to_vec(&gc).unwrap()).expect_ok();
        assert_eq!(backend.used(), 0);
        backend.assert_clean();
    }
}

#[test]
fn status_reports_50_when_nothing_can_be_allocated() {
    for backend in Backend::all() {
        backend.ctl(&["pool", "add", "10.80.0.0/30", "--block-size", "30"]).success();
        let conf = netconf(&backend, "1.1.0", json!({}));
        let status = Invocation { container_id: String::new(), ifname: String::new(), ..Invocation::new("STATUS", "") };
        ipam(&status, &conf).expect_ok();
        for i in 0..4 {
            ipam(&Invocation::new("ADD", &format!("s{i}")), &conf).expect_ok();
        }
        ipam(&status, &conf).expect_err(50);
        for i in 0..4 {
            ipam(&Invocation::new("DEL", &format!("s{i}")), &conf).expect_ok();
        }
        ipam(&status, &conf).expect_ok();
    }
    // An unusable store.
    let conf = json!({"cniVersion": "1.1.0", "name": "n", "datastore_path": "/proc/no/such/store.db",
                      "ipam": {"type": "calico-ipam"}});
    let status = Invocation { container_id: String::new(), ifname: String::new(), ..Invocation::new("STATUS", "") };
    ipam(&status, &serde_json::to_vec(&conf).unwrap()).expect_err(50);
}

#[test]
fn version_reports_all_seven() {
    let out = Invocation::new("VERSION", "").run(&bin("calico-ipam"), br#"{"cniVersion":"0.3.1"}"#);
    let v = out.expect_ok();
    assert_eq!(v["cniVersion"], "0.3.1");
    assert_eq!(v["supportedVersions"], json!(VERSIONS));
}

/// Short-lived plugin processes keep the WAL short: after enough ADD/DEL cycles to cross the
/// 64-page checkpoint threshold several times, the WAL is back under it, the store passes
/// SQLite's integrity check, and the allocations are exactly what the runtime left.
#[test]
fn checkpoints_keep_the_wal_short_and_the_store_sound() {
    let backend = Backend::embedded();
    let conf = netconf(&backend, "1.0.0", json!({}));
    let db = std::path::PathBuf::from(match &backend {
        Backend::Embedded(d) => d.db(),
        Backend::Etcd(..) => unreachable!(),
    });
    let wal = db.with_file_name("store.db-wal");
    let mut max_wal = 0;
    for i in 0..80 {
        let inv = Invocation::new("ADD", &format!("ckpt{i}"));
        ipam(&inv, &conf).expect_ok();
        if i % 2 == 0 {
            ipam(&inv.with_command("DEL"), &conf).expect_ok();
        }
        max_wal = max_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    // 64 pages of 4 KiB, plus frame headers, plus what one commit may add past them.
    let threshold = 64 * (4096 + 24) + 32;
    assert!(max_wal < 2 * threshold, "the WAL grew to {max_wal} bytes: no checkpoint ran");
    let now = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert!(now < threshold, "the WAL is {now} bytes after the last commit");
    datastore::EmbeddedStore::open(&db).unwrap().integrity_check().unwrap();
    assert_eq!(backend.used(), 40);
    backend.assert_clean();
}
