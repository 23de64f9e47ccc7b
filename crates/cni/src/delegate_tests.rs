use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::*;
use crate::CniCode;

struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Fake {
        Fake { dir: tempfile::tempdir().unwrap() }
    }

    /// Installs `body` as a /bin/sh script named `name`; `$OUT` is the tempdir.
    fn plugin(&self, name: &str, body: &str) {
        let path = self.dir.path().join(name);
        let script = format!("#!/bin/sh\nOUT='{}'\n{body}\n", self.dir.path().display());
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn env(&self) -> Env {
        Env {
            command: Command::Add,
            container_id: "ctr1".into(),
            netns: Some("/var/run/netns/ctr1".into()),
            ifname: "eth0".into(),
            args: "K8S_POD_NAME=p".into(),
            path: vec!["/nonexistent".into(), self.dir.path().to_path_buf()],
        }
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.dir.path().join(file)).unwrap()
    }
}

const RESULT_100: &str = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.5/26","gateway":"10.0.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;

#[test]
fn add_parses_result_and_passes_stdin_and_env() {
    let fake = Fake::new();
    fake.plugin("ipam", &format!("cat > \"$OUT/stdin\"\nenv > \"$OUT/env\"\necho '{RESULT_100}'"));
    let conf = br#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"ipam"}}"#;
    let result = delegate_add("ipam", &fake.env(), conf).unwrap();
    assert_eq!(result.ips[0].address.to_string(), "10.0.0.5/26");
    assert_eq!(result.routes.len(), 1);
    assert_eq!(fake.read("stdin").as_bytes(), conf);
    let env = fake.read("env");
    for line in [
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=ctr1",
        "CNI_NETNS=/var/run/netns/ctr1",
        "CNI_IFNAME=eth0",
        "CNI_ARGS=K8S_POD_NAME=p",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} not in\n{env}");
    }
    let path_line = format!("CNI_PATH=/nonexistent:{}", fake.dir.path().display());
    assert!(env.lines().any(|l| l == path_line), "{env}");
}

#[test]
fn command_is_replaced_and_empty_vars_removed() {
    let fake = Fake::new();
    fake.plugin("ipam", "env > \"$OUT/env.$CNI_COMMAND\"");
    let mut env = fake.env();
    env.netns = None;
    env.args.clear();
    delegate_del("ipam", &env, b"{}").unwrap();
    delegate_check("ipam", &env, b"{}").unwrap();
    delegate_gc("ipam", &env, b"{}").unwrap();
    delegate_status("ipam", &env, b"{}").unwrap();
    for command in ["DEL", "CHECK", "GC", "STATUS"] {
        let seen = fake.read(&format!("env.{command}"));
        assert!(seen.lines().any(|l| l == format!("CNI_COMMAND={command}")), "{seen}");
        assert!(!seen.contains("CNI_NETNS="), "{seen}");
        assert!(!seen.contains("CNI_ARGS="), "{seen}");
    }
}

#[test]
fn error_passthrough_keeps_code() {
    let fake = Fake::new();
    fake.plugin(
        "ipam",
        r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"datastore busy","details":"etcd timeout"}'; exit 1"#,
    );
    let err = delegate_add("ipam", &fake.env(), b"{}").unwrap_err();
    assert_eq!(err.cni_code(), 11);
    match &err {
        Error::Delegated { plugin, failure } => {
            assert_eq!(plugin, "ipam");
            assert_eq!(failure.msg, "datastore busy");
            assert_eq!(failure.details, "etcd timeout");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("ipam"), "{err}");
}

#[test]
fn failure_without_error_json() {
    let fake = Fake::new();
    fake.plugin("ipam", "echo 'boom' >&2; echo garbage; exit 3");
    let err = delegate_del("ipam", &fake.env(), b"{}").unwrap_err();
    assert!(matches!(err, Error::InvalidResult { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage"), "{err}");
    assert!(err.to_string().contains("ipam"), "{err}");
}

#[test]
fn bad_result_is_invalid_result() {
    let fake = Fake::new();
    fake.plugin("ipam", "echo 'not json'");
    let err = delegate_add("ipam", &fake.env(), b"{}").unwrap_err();
    assert!(matches!(&err, Error::InvalidResult { plugin, .. } if plugin == "ipam"), "{err:?}");
    let failure = crate::Failure::from_error(err.cni_code(), &err);
    assert_eq!(failure.msg, "invalid CNI result from plugin ipam: output is not JSON");
    assert!(failure.details.starts_with("expected ident"), "{failure}");
    fake.plugin("ipam2", r#"echo '{"cniVersion":"1.0.0","ips":[{"address":"nope"}]}'"#);
    let err = delegate_add("ipam2", &fake.env(), b"{}").unwrap_err();
    assert!(matches!(&err, Error::InvalidResult { plugin, .. } if plugin == "ipam2"), "{err:?}");
    assert!(err.to_string().contains("ips[0].address"), "{err}");
}

#[test]
fn plugin_not_found_or_bad_name() {
    let fake = Fake::new();
    let err = delegate_add("host-local", &fake.env(), b"{}").unwrap_err();
    assert!(matches!(err, Error::PluginNotFound { .. }), "{err:?}");
    assert_eq!(err.cni_code(), 7);
    assert!(err.to_string().contains("host-local"));
    for bad in ["", ".", "..", "../bin/sh", "/bin/sh"] {
        let err = find_plugin(bad, &fake.env().path).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{bad:?}: {err:?}");
    }
    // A directory of that name is not a plugin.
    fs::create_dir(fake.dir.path().join("subdir")).unwrap();
    assert!(find_plugin("subdir", &fake.env().path).is_err());
}

#[test]
fn large_stdin_and_early_exit() {
    let fake = Fake::new();
    fake.plugin("ipam", "cat > \"$OUT/stdin\"");
    let big = vec![b'x'; 200 * 1024];
    delegate_del("ipam", &fake.env(), &big).unwrap();
    assert_eq!(fake.read("stdin").len(), big.len());
    // A plugin that never reads its stdin still succeeds.
    fake.plugin("quick", "exit 0");
    delegate_del("quick", &fake.env(), &big).unwrap();
}

/// Against Debian's real host-local (libcni-based; `scripts/deps.sh` installs it): results
/// of every version it speaks parse, and its errors pass through with their code. A missing
/// host-local fails the test: a skipped check would pass silently on a machine without it.
#[test]
fn real_host_local() {
    let dir = PathBuf::from("/usr/lib/cni");
    assert!(
        dir.join("host-local").is_file(),
        "/usr/lib/cni/host-local is missing: install containernetworking-plugins (scripts/deps.sh does)"
    );
    let data = tempfile::tempdir().unwrap();
    let mut env = Fake::new().env();
    env.path = vec![dir];
    env.args = "IgnoreUnknown=1;K8S_POD_NAME=p".into();
    for (i, version) in ["0.2.0", "0.3.1", "0.4.0", "1.0.0"].into_iter().enumerate() {
        env.container_id = format!("ctr{i}");
        let conf = format!(
            r#"{{"cniVersion":"{version}","name":"t","type":"x","ipam":{{"type":"host-local",
                "dataDir":"{}","ranges":[[{{"subnet":"10.9.0.0/29"}}],[{{"subnet":"fd09::/125"}}]],
                "routes":[{{"dst":"0.0.0.0/0"}}]}}}}"#,
            data.path().display()
        );
        let r = delegate_add("host-local", &env, conf.as_bytes()).unwrap();
        let families: Vec<bool> = r.ips.iter().map(|ip| ip.address.is_ipv4()).collect();
        assert_eq!(families, [true, false], "{version}: {r:?}");
        assert_eq!(r.ips[0].gateway.map(|g| g.to_string()).as_deref(), Some("10.9.0.1"));
        assert_eq!(r.routes.len(), 1, "{version}");
        delegate_del("host-local", &env, conf.as_bytes()).unwrap();
    }
    // An invalid range is host-local's own error, passed through.
    let bad =
        r#"{"cniVersion":"1.0.0","name":"t","type":"x","ipam":{"type":"host-local","ranges":[[{"subnet":"nope"}]]}}"#;
    let err = delegate_add("host-local", &env, bad.as_bytes()).unwrap_err();
    assert!(matches!(err, Error::Delegated { .. }), "{err:?}");
}

#[test]
fn a_plugin_never_delegates_to_itself() {
    let fake = Fake::new();
    // This test binary under another name: the same inode as /proc/self/exe.
    let me = std::env::current_exe().unwrap();
    std::os::unix::fs::symlink(&me, fake.dir.path().join("looks-harmless")).unwrap();
    let err = delegate_add("looks-harmless", &fake.env(), b"{}").unwrap_err();
    assert!(matches!(err, Error::DelegatesToItself { .. }), "{err:?}");
    assert_eq!(err.cni_code(), 7);
    assert!(err.to_string().contains("names this plugin itself"), "{err}");
}
