//! Real etcd servers for the tests, with temporary data dirs. Every process is killed (and
//! its data removed) on drop, also when the test fails.
//! - [`EtcdCluster`]: members whose processes can be stopped and started again, made by an
//!   [`EtcdBuilder`]: how many, plain http or client-certificate TLS ([`Certs`]), on free
//!   loopback ports or inside a netns on one of its addresses, etcd's election timing or a
//!   fast one;
//! - [`Etcd`]: a single member;
//! - [`Certs`]: a throwaway CA with a server and a client certificate, made with `openssl`.
//!
//! Everything is driven with `etcdctl` (API v3), run inside the members' netns when they are
//! in one: readiness, the leader, keys, writes, the revision and compaction.

use std::collections::HashSet;
use std::fs::File;
use std::net::TcpListener;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::netns::Netns;

mod builder;
mod certs;

pub use builder::EtcdBuilder;
pub use certs::Certs;

/// How long a member (or a restarted cluster) may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A loopback port nobody listens on now, never handed out twice in this process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// The etcd binary: `ETCD_BIN`, else /usr/bin/etcd. A missing etcd fails the test: nothing
/// is skipped silently.
pub fn etcd_binary() -> PathBuf {
    let path = PathBuf::from(std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into()));
    assert!(path.exists(), "{} is missing: install etcd-server (the test command does)", path.display());
    path
}

/// The files a client presents to a TLS member (etcdctl here; plugins get them in netconf).
#[derive(Clone, Debug)]
struct ClientTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// One etcd process. Its data dir outlives the process, so that it can be started again.
pub struct Member {
    pub name: String,
    pub client_url: String,
    args: Vec<String>,
    /// The netns it runs in, if not the test's own.
    netns: Option<String>,
    child: Option<Child>,
    dir: TempDir,
}

impl Member {
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "etcd member {} is already running", self.name);
        let log = File::options().create(true).append(true).open(self.dir.path().join("etcd.log")).expect("etcd log");
        // `ip netns exec` execs etcd in its own place: the child is etcd itself.
        let child = in_netns(self.netns.as_deref(), etcd_binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        self.child = Some(child);
    }

    /// SIGKILL, as a crash or a lost machine: clients see their connections drop. Its data
    /// stays, for [`EtcdCluster::start_member`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The end of the member's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `program`, or `ip netns exec NETNS program`.
fn in_netns(netns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A cluster of members. Stopped members keep their data and rejoin when started again.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    tls: Option<ClientTls>,
    netns: Option<String>,
}

impl EtcdCluster {
    /// One plain-http member on loopback unless told otherwise.
    pub fn builder<'a>() -> EtcdBuilder<'a> {
        EtcdBuilder::new()
    }

    /// `n` plain-http members on loopback, each answering when this returns.
    pub fn start(n: usize) -> EtcdCluster {
        Self::builder().members(n).start()
    }

    /// Every member's client URL, comma-separated, as Calico's `etcd_endpoints`.
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| m.client_url.as_str()).collect::<Vec<_>>().join(",")
    }

    /// Kill member `i` (its data stays).
    pub fn stop_member(&mut self, i: usize) {
        self.members[i].stop();
    }

    /// Start member `i` again on its data dir. When a majority is running afterwards, waits
    /// until every running member answers (a lone member of a stopped cluster cannot).
    pub fn start_member(&mut self, i: usize) {
        self.members[i].spawn();
        if self.running() * 2 > self.members.len() {
            self.wait_ready();
        }
    }

    /// How many members are running.
    pub fn running(&self) -> usize {
        self.members.iter().filter(|m| m.running()).count()
    }

    /// The index of the member that leads the cluster now.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let statuses = self.status();
            for st in statuses.as_array().into_iter().flatten() {
                let id = &st["Status"]["header"]["member_id"];
                if id.is_u64() && *id == st["Status"]["leader"] {
                    let url = st["Endpoint"].as_str().unwrap_or_default();
                    if let Some(i) = self.members.iter().position(|m| m.client_url == url) {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no running etcd member reports itself as leader: {statuses}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `etcdctl endpoint status -w json` of the running members (Null if none answers).
    fn status(&self) -> serde_json::Value {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// Run etcdctl (API v3) against the running members (inside their netns).
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let urls: Vec<&str> = self.members.iter().filter(|m| m.running()).map(|m| m.client_url.as_str()).collect();
        self.etcdctl_on(&urls.join(",")).args(args).output().expect("run etcdctl (apt-get install etcd-client)")
    }

    /// etcdctl on `endpoints`, with the client certificate when the cluster uses TLS.
    fn etcdctl_on(&self, endpoints: &str) -> Command {
        let mut cmd = in_netns(self.netns.as_deref(), "etcdctl");
        cmd.env("ETCDCTL_API", "3").arg(format!("--endpoints={endpoints}"));
        cmd.args(["--dial-timeout=1s", "--command-timeout=3s"]).stdin(Stdio::null());
        if let Some(tls) = &self.tls {
            cmd.arg("--cacert").arg(&tls.ca).arg("--cert").arg(&tls.cert).arg("--key").arg(&tls.key);
        }
        cmd
    }

    /// etcdctl `args`, which must succeed; its stdout.
    fn etcdctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(out.status.success(), "etcdctl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `etcdctl get --prefix --keys-only`: the keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.etcdctl_ok(&["get", "--prefix", "--keys-only", prefix]);
        out.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// `etcdctl put`: a write by another client than the code under test.
    pub fn put(&self, key: &str, value: &str) {
        self.etcdctl_ok(&["put", key, value]);
    }

    /// The cluster's current revision (that of its last write).
    pub fn revision(&self) -> i64 {
        let out = self.etcdctl_ok(&["get", "--keys-only", "--limit=1", "-w", "json", "/"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl get -w json");
        v["header"]["revision"].as_i64().unwrap_or_else(|| panic!("no revision in {v}"))
    }

    /// Compact the history before `revision`, as etcd's auto-compaction does: watches that
    /// still need it are told it is gone.
    pub fn compact(&self, revision: i64) {
        self.etcdctl_ok(&["compaction", &revision.to_string()]);
    }

    /// Wait until every running member is healthy (it has a leader and serves a quorum read).
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_WITHIN;
        for m in self.members.iter().filter(|m| m.running()) {
            loop {
                let healthy = self
                    .etcdctl_on(&m.client_url)
                    .args(["endpoint", "health"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if healthy {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} ({}) not ready:\n{}",
                    m.name,
                    m.client_url,
                    m.log_tail()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A single-member etcd, ready to serve: an [`EtcdCluster`] of one, with its URL at hand.
pub struct Etcd {
    cluster: EtcdCluster,
    pub client_url: String,
}

impl Etcd {
    /// Plain http on loopback.
    pub fn start() -> Etcd {
        Self::from(EtcdCluster::start(1))
    }

    /// An https member that requires a client certificate signed by `certs`' CA.
    pub fn start_tls(certs: &Certs) -> Etcd {
        Self::from(EtcdCluster::builder().tls(certs).start())
    }

    /// Inside `netns`, listening on `address` (one of that netns's own).
    pub fn start_in(netns: &Netns, address: &str) -> Etcd {
        Self::from(EtcdCluster::builder().in_netns(netns, address).start())
    }

    pub fn stop(&mut self) {
        self.cluster.stop_member(0);
    }

    /// Start it again on the same data.
    pub fn restart(&mut self) {
        self.cluster.start_member(0);
    }
}

impl From<EtcdCluster> for Etcd {
    fn from(cluster: EtcdCluster) -> Etcd {
        assert_eq!(cluster.members.len(), 1, "an Etcd is a single member");
        let client_url = cluster.members[0].client_url.clone();
        Etcd { cluster, client_url }
    }
}

impl Deref for Etcd {
    type Target = EtcdCluster;

    fn deref(&self) -> &EtcdCluster {
        &self.cluster
    }
}

impl DerefMut for Etcd {
    fn deref_mut(&mut self) -> &mut EtcdCluster {
        &mut self.cluster
    }
}
