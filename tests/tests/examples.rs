//! Every file in netconf-examples/ parses the way calico-cni and calico-ipam parse their stdin
//! (each conflist entry merged with the list's `cniVersion` and `name`, as libcni does), names
//! plugins that exist, and says what it claims to. The podman and chaining e2e tests and the
//! installer use cnitool-podman.conflist: checked here so the example cannot drift from them.

use std::path::{Path, PathBuf};

use calico_netconf::CalicoConf;
use calico_tests::VERSIONS;
use serde_json::{json, Value};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../netconf-examples")
}

/// The plugin configs a runtime would hand out for `file`: one for a `.conf`, one per entry
/// (with `cniVersion` and `name` copied in) for a `.conflist`.
fn entries(file: &Path) -> (Value, Vec<Value>) {
    let raw = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let v: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()));
    let version = v["cniVersion"].as_str().unwrap_or_else(|| panic!("{}: no cniVersion", file.display()));
    assert!(VERSIONS.contains(&version), "{}: unsupported cniVersion {version}", file.display());
    assert!(v["name"].as_str().is_some_and(|n| !n.is_empty()), "{}: no name", file.display());
    match file.extension().and_then(|e| e.to_str()) {
        Some("conflist") => {
            let plugins = v["plugins"].as_array().unwrap_or_else(|| panic!("{}: no plugins", file.display()));
            let merged = plugins
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    p["cniVersion"] = v["cniVersion"].clone();
                    p["name"] = v["name"].clone();
                    p
                })
                .collect();
            (v, merged)
        }
        Some("conf") => (v.clone(), vec![v]),
        other => panic!("{}: unexpected extension {other:?} (.conf or .conflist)", file.display()),
    }
}

/// calico-cni's and calico-ipam's own parse of one entry.
fn calico(entry: &Value) -> CalicoConf {
    assert_eq!(entry["type"], "calico", "{entry}");
    CalicoConf::parse(&serde_json::to_vec(entry).unwrap()).unwrap_or_else(|e| panic!("calico-cni rejects {entry}: {e}"))
}

fn types(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect()
}

#[test]
fn every_example_parses_and_says_what_it_claims() {
    let mut seen = Vec::new();
    for file in std::fs::read_dir(dir()).expect("netconf-examples/").flatten().map(|e| e.path()) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let (list, entries) = entries(&file);
        // Every plugin named is one we build or one of Debian's reference plugins.
        for t in types(&entries) {
            let ours = ["calico", "calico-ipam"].contains(&t);
            assert!(ours || Path::new("/usr/lib/cni").join(t).exists(), "{name}: plugin {t:?} does not exist");
        }
        let conf = calico(&entries[0]);
        assert_eq!(conf.ipam.plugin_type, "calico-ipam", "{name}");
        assert_eq!(conf.common.name, list["name"].as_str().unwrap(), "{name}");
        let store = conf.store_config();
        match name.as_str() {
            "cnitool-podman.conflist" => {
                assert_eq!(types(&entries), ["calico", "portmap"], "{name}");
                assert!(store.etcd_endpoints.is_empty(), "{name}: the embedded store");
                assert_eq!(store.embedded_path(), Path::new("/var/lib/calico/calico-store.db"), "{name}");
                assert_eq!(conf.ipam.ipv4_pools.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.199.0.0/24"]);
                assert!(conf.assign_v4() && !conf.assign_v6(), "{name}");
                assert_eq!(conf.mtu, Some(1500), "{name}");
                assert_eq!(entries[1]["capabilities"], json!({"portMappings": true}), "{name}");
            }
            "podman-native-ports.conflist" => {
                // cnitool-podman.conflist without portmap: calico-cni maps the ports itself.
                assert_eq!(types(&entries), ["calico"], "{name}");
                assert_eq!(entries[0]["capabilities"], json!({"portMappings": true}), "{name}");
                assert_eq!(store.embedded_path(), Path::new("/var/lib/calico/calico-store.db"), "{name}");
                assert_eq!(conf.ipam.ipv4_pools.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.199.0.0/24"]);
                assert_eq!(list["name"], "calico-podman", "{name}");
            }
            "k8s-containerd.conflist" => {
                assert_eq!(types(&entries), ["calico", "portmap", "bandwidth"], "{name}");
                assert_eq!(store.etcd_endpoints, ["http://10.96.232.136:6666"], "{name}");
                assert_eq!(conf.nodename().unwrap(), "k8s-node-1", "{name}");
                assert_eq!(conf.mtu, Some(1440), "{name}");
                assert_eq!(conf.log_file_path.as_deref(), Some(Path::new("/var/log/calico/cni/cni.log")), "{name}");
                // Calico's Kubernetes fields are there, and ignored by the parse above.
                assert_eq!(entries[0]["policy"]["type"], "k8s", "{name}");
                assert!(entries[0]["kubernetes"]["kubeconfig"].is_string(), "{name}");
                assert_eq!(entries[1]["capabilities"], json!({"portMappings": true}), "{name}");
                assert_eq!(entries[2]["capabilities"], json!({"bandwidth": true}), "{name}");
            }
            "mesos.conf" => {
                assert!(list.get("plugins").is_none(), "{name}: a single netconf");
                assert_eq!(store.etcd_endpoints, ["http://127.0.0.1:2379"], "{name}");
                assert_eq!(conf.nodename().unwrap(), "mesos-agent-1", "{name}");
                assert!(conf.assign_v4() && !conf.assign_v6(), "{name}: Calico's defaults");
            }
            "dual-stack.conflist" => {
                assert_eq!(types(&entries), ["calico", "portmap"], "{name}");
                assert!(conf.assign_v4() && conf.assign_v6(), "{name}");
                assert_eq!(conf.ipam.ipv4_pools.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.200.0.0/16"]);
                assert_eq!(
                    conf.ipam.ipv6_pools.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    ["fd00:200::/112"]
                );
                assert_eq!(conf.mtu, Some(1450), "{name}");
            }
            "etcd-tls.conflist" => {
                assert_eq!(types(&entries), ["calico", "portmap"], "{name}");
                assert_eq!(store.etcd_endpoints.len(), 3, "{name}");
                assert!(
                    store.etcd_endpoints.iter().all(|e| e.starts_with("https://")),
                    "{name}: {:?}",
                    store.etcd_endpoints
                );
                let tls = "/etc/cni/net.d/calico-tls";
                assert_eq!(store.etcd_key_file, Some(PathBuf::from(format!("{tls}/etcd-key"))), "{name}");
                assert_eq!(store.etcd_cert_file, Some(PathBuf::from(format!("{tls}/etcd-cert"))), "{name}");
                assert_eq!(store.etcd_ca_cert_file, Some(PathBuf::from(format!("{tls}/etcd-ca"))), "{name}");
            }
            other => panic!("netconf-examples/{other} has no assertions here: add them"),
        }
        seen.push(name);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "cnitool-podman.conflist",
            "dual-stack.conflist",
            "etcd-tls.conflist",
            "k8s-containerd.conflist",
            "mesos.conf",
            "podman-native-ports.conflist"
        ]
    );
}

#[test]
fn the_e2e_tests_and_the_installer_use_the_cnitool_podman_example() {
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    let uses = squeeze(
        r#"const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"),
                          "/../netconf-examples/cnitool-podman.conflist");"#,
    );
    for (file, source) in [("podman.rs", include_str!("podman.rs")), ("chaining.rs", include_str!("chaining.rs"))] {
        assert!(
            squeeze(source).contains(&uses),
            "tests/tests/{file} no longer reads netconf-examples/cnitool-podman.conflist"
        );
        // They patch the store and the pool only: no calico or portmap entry of their own.
        assert!(!source.contains("\"type\": \"calico\"") && !source.contains("\"type\": \"portmap\""), "{file}");
    }
    let install = include_str!("../../scripts/install.sh");
    assert!(
        install.contains("netconf-examples/cnitool-podman.conflist"),
        "scripts/install.sh does not install netconf-examples/cnitool-podman.conflist by default"
    );
}
