//! Shared helpers for the integration tests: a driver that execs the real binaries exactly
//! as a runtime does (CNI_* environment, netconf on stdin), throwaway store directories, a
//! datastore [`Backend`] (embedded, or a real etcd), and the netns and etcd harness of
//! `testkit` (re-exported as [`netns`] and [`etcd`]).

pub mod cni_host;
pub mod netns;
pub mod tcp;

pub use testkit::{etcd, unique};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Every CNI spec version the plugins support.
pub const VERSIONS: [&str; 7] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// One `#[test]` per spec version, named after it, so that a failure names the version:
/// `spec_version_tests!(body)` makes the module `body` of tests `spec_0_1_0` ... `spec_1_1_0`,
/// each calling `body("0.1.0")` ... (`cargo test spec_0_4_0` runs one version everywhere),
/// and a test that the list is [`VERSIONS`]. `spec_version_tests!(body, capabilities)`: only
/// the versions from 0.3.0 on (those with `capabilities` and `runtimeConfig`).
#[macro_export]
macro_rules! spec_version_tests {
    ($body:ident) => {
        $crate::spec_version_tests!(@ $body "0.0.0": spec_0_1_0 "0.1.0", spec_0_2_0 "0.2.0", spec_0_3_0 "0.3.0",
            spec_0_3_1 "0.3.1", spec_0_4_0 "0.4.0", spec_1_0_0 "1.0.0", spec_1_1_0 "1.1.0");
    };
    // Only the versions that have `capabilities` and `runtimeConfig` (0.3.0 and up).
    ($body:ident, capabilities) => {
        $crate::spec_version_tests!(@ $body "0.3.0": spec_0_3_0 "0.3.0", spec_0_3_1 "0.3.1", spec_0_4_0 "0.4.0",
            spec_1_0_0 "1.0.0", spec_1_1_0 "1.1.0");
    };
    (@ $body:ident $from:literal: $($test:ident $version:literal),+) => {
        mod $body {
            $(
                #[test]
                fn $test() {
                    super::$body($version)
                }
            )+

            #[test]
            fn one_test_per_version() {
                let from: Vec<&str> = $crate::VERSIONS.iter().copied().filter(|v| *v >= $from).collect();
                assert_eq!([$($version),+].as_slice(), from.as_slice());
            }
        }
    };
}

/// Where the workspace's binaries are: `CALICO_BIN_DIR`, else the target directory of the
/// profile these tests were built with (build them first: `cargo build --workspace --bins`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CALICO_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// What one plugin invocation produced.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// stdout as JSON (panics with the whole outcome when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Assert success (for commands whose stdout is not JSON).
    pub fn success(&self) -> &Self {
        assert!(self.ok(), "command failed: {self:#?}");
        self
    }

    /// Assert success and return the result JSON (or Null for an empty stdout).
    pub fn expect_ok(&self) -> Value {
        assert!(self.ok(), "plugin failed: {self:#?}");
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Assert a CNI error with `code` and return its JSON.
    pub fn expect_err(&self, code: u64) -> Value {
        assert!(!self.ok(), "expected CNI error {code}, got success: {self:#?}");
        let v = self.json();
        assert_eq!(v["code"].as_u64(), Some(code), "wrong CNI code: {self:#?}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "error without msg: {self:#?}");
        v
    }
}

/// One invocation: the CNI environment plus stdin, as libcni builds it.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
    pub extra_env: Vec<(String, String)>,
}

impl Invocation {
    pub fn new(command: &str, container_id: &str) -> Invocation {
        Invocation {
            command: command.into(),
            container_id: container_id.into(),
            // IPAM plugins never open the netns; dataplane tests always set a real one.
            netns: "/var/run/netns/ipam-test-placeholder".into(),
            ifname: "eth0".into(),
            args: String::new(),
            path: bin_dir().display().to_string(),
            extra_env: Vec::new(),
        }
    }

    pub fn netns(mut self, netns: &str) -> Self {
        self.netns = netns.into();
        self
    }

    pub fn ifname(mut self, ifname: &str) -> Self {
        self.ifname = ifname.into();
        self
    }

    pub fn args(mut self, args: &str) -> Self {
        self.args = args.into();
        self
    }

    pub fn path(mut self, path: &str) -> Self {
        self.path = path.into();
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.extra_env.push((k.into(), v.into()));
        self
    }

    /// The same invocation with another CNI_COMMAND.
    pub fn with_command(&self, command: &str) -> Self {
        let mut c = self.clone();
        c.command = command.into();
        c
    }

    pub fn command(&self, plugin: &Path) -> Command {
        let mut cmd = Command::new(plugin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", &self.command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", &self.netns)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_ARGS", &self.args)
            .env("CNI_PATH", &self.path);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// Exec `plugin` with `stdin` and wait for it.
    pub fn run(&self, plugin: &Path, stdin: &[u8]) -> Outcome {
        run_command(self.command(plugin), stdin)
    }
}

/// Spawn `cmd`, feed stdin, collect the outcome.
pub fn run_command(mut cmd: Command, stdin: &[u8]) -> Outcome {
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let input = child.stdin.take();
    let data = stdin.to_vec();
    // Write from a thread: a plugin that stops reading early must not deadlock the test.
    let writer = std::thread::spawn(move || {
        if let Some(mut input) = input {
            let _ = input.write_all(&data);
        }
    });
    let out = child.wait_with_output().expect("waiting for plugin");
    let _ = writer.join();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A temporary directory holding an embedded store (and its lock), removed on drop.
pub struct StoreDir {
    pub dir: tempfile::TempDir,
}

impl StoreDir {
    pub fn new() -> StoreDir {
        StoreDir { dir: tempfile::Builder::new().prefix("calico-test-").tempdir().expect("tempdir") }
    }

    pub fn db(&self) -> String {
        self.dir.path().join("store.db").display().to_string()
    }
}

impl Default for StoreDir {
    fn default() -> Self {
        Self::new()
    }
}

/// Run `calicoctl` with `args` against the given datastore environment.
pub fn calicoctl(store_env: &[(String, String)], args: &[&str]) -> Outcome {
    calicoctl_with(Command::new(bin("calicoctl")), store_env, args, b"")
}

/// `cmd` (calicoctl, or a wrapper that runs it: `ip netns exec NS calicoctl`) with `args`,
/// the store environment only, and `stdin`.
fn calicoctl_with(mut cmd: Command, store_env: &[(String, String)], args: &[&str], stdin: &[u8]) -> Outcome {
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.env_remove("ETCD_ENDPOINTS").env_remove("CALICO_DATASTORE_PATH");
    for (k, v) in store_env {
        cmd.env(k, v);
    }
    run_command(cmd, stdin)
}

/// A datastore for one test: the embedded store in a temp dir, or a real etcd.
pub enum Backend {
    Embedded(StoreDir),
    Etcd(etcd::Etcd, StoreDir),
}

impl Backend {
    pub fn embedded() -> Backend {
        Backend::Embedded(StoreDir::new())
    }

    pub fn etcd() -> Backend {
        Backend::Etcd(etcd::Etcd::start(), StoreDir::new())
    }

    /// Every backend, fresh: the same test body runs against each (set CALICO_TEST_BACKENDS
    /// to "embedded" or "etcd" to run one).
    pub fn all() -> Vec<Backend> {
        let only = std::env::var("CALICO_TEST_BACKENDS").unwrap_or_default();
        let mut v = Vec::new();
        if only.is_empty() || only.contains("embedded") {
            v.push(Backend::embedded());
        }
        if only.is_empty() || only.contains("etcd") {
            v.push(Backend::etcd());
        }
        v
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Embedded(_) => "embedded",
            Backend::Etcd(..) => "etcd",
        }
    }

    fn scratch(&self) -> &StoreDir {
        match self {
            Backend::Embedded(d) | Backend::Etcd(_, d) => d,
        }
    }

    /// A scratch directory that lives as long as the backend.
    pub fn dir(&self) -> &Path {
        self.scratch().dir.path()
    }

    /// The netconf fields that select this store (and keep the host lock in the temp dir).
    pub fn apply(&self, conf: &mut Value) {
        let lock = self.dir().join("ipam.lock").display().to_string();
        match self {
            Backend::Embedded(d) => conf["datastore_path"] = Value::from(d.db()),
            Backend::Etcd(e, _) => conf["etcd_endpoints"] = Value::from(e.client_url.clone()),
        }
        if conf.get("ipam").is_some_and(Value::is_object) {
            conf["ipam"]["lock_file"] = Value::from(lock);
        }
    }

    /// The environment that points calicoctl at this store.
    pub fn ctl_env(&self) -> Vec<(String, String)> {
        match self {
            Backend::Embedded(d) => vec![("CALICO_DATASTORE_PATH".into(), d.db())],
            Backend::Etcd(e, _) => vec![("ETCD_ENDPOINTS".into(), e.client_url.clone())],
        }
    }

    pub fn ctl(&self, args: &[&str]) -> Outcome {
        calicoctl(&self.ctl_env(), args)
    }

    /// calicoctl on this store with `stdin` (`rule update` reads JSON from it).
    pub fn ctl_stdin(&self, args: &[&str], stdin: &str) -> Outcome {
        calicoctl_with(Command::new(bin("calicoctl")), &self.ctl_env(), args, stdin.as_bytes())
    }

    /// calicoctl on this store, run inside `ns` (the commands that act on a host's kernel).
    pub fn ctl_in(&self, ns: &netns::Netns, args: &[&str]) -> Outcome {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]).arg(bin("calicoctl"));
        calicoctl_with(cmd, &self.ctl_env(), args, b"")
    }

    /// The store itself, opened by the test.
    pub fn open(&self) -> Box<dyn datastore::Datastore> {
        let mut cfg = datastore::config::Config::default();
        match self {
            Backend::Embedded(d) => cfg.datastore_path = Some(d.db().into()),
            Backend::Etcd(e, _) => cfg.etcd_endpoints = vec![e.client_url.clone()],
        }
        datastore::config::open(&cfg).expect("open the test store")
    }

    /// Addresses in use over all pools, from `calicoctl ipam show -o json`.
    pub fn used(&self) -> u64 {
        let out = self.ctl(&["ipam", "show", "-o", "json"]);
        let v = out.expect_ok();
        v.as_array().map(|pools| pools.iter().filter_map(|p| p["used"].as_u64()).sum()).unwrap_or(0)
    }

    /// Assert `calicoctl ipam check` finds nothing wrong.
    pub fn assert_clean(&self) {
        let out = self.ctl(&["ipam", "check"]);
        assert!(out.ok(), "[{}] ipam check is not clean: {out:#?}", self.name());
    }
}

/// The addresses of a result of any version (`ip4`/`ip6` or `ips[]`), without prefix.
pub fn result_ips(result: &Value) -> Vec<String> {
    let strip = |s: &str| s.split('/').next().unwrap_or(s).to_owned();
    if let Some(ips) = result["ips"].as_array() {
        return ips.iter().filter_map(|i| i["address"].as_str()).map(strip).collect();
    }
    ["ip4", "ip6"].iter().filter_map(|f| result[f]["ip"].as_str()).map(strip).collect()
}

/// `conf` with `prevResult` set to `result`, for CHECK.
pub fn with_prev(conf: &[u8], result: &Value) -> Vec<u8> {
    let mut c: Value = serde_json::from_slice(conf).unwrap();
    c["prevResult"] = result.clone();
    serde_json::to_vec(&c).unwrap()
}
