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

/// A CA, a server certificate and a client certificate (EC P-256, valid two days), made with
/// the openssl command-line tool in a temporary directory.
pub struct Certs {
    pub dir: TempDir,
}

impl Certs {
    /// The server certificate is for 127.0.0.1.
    pub fn generate() -> Certs {
        Self::generate_for(&["127.0.0.1"])
    }

    /// The server certificate is for the addresses `ips` (a member in a netns listens on one
    /// of that netns's addresses).
    pub fn generate_for(ips: &[&str]) -> Certs {
        let dir = tempfile::Builder::new().prefix("calico-certs-").tempdir().expect("tempdir for certificates");
        let run = |args: String| {
            let out = Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(dir.path())
                .output()
                .expect("run openssl (apt-get install openssl)");
            assert!(out.status.success(), "openssl {args}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        run(format!(
            "req -x509 {ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=calico-test-CA \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ));
        let san = ips.iter().map(|ip| format!("IP:{ip}")).collect::<Vec<_>>().join(",");
        for (name, ext) in [
            ("server", format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\n")),
            ("client", "extendedKeyUsage=clientAuth\n".to_owned()),
        ] {
            std::fs::write(dir.path().join(format!("{name}.ext")), ext).expect("write extensions");
            run(format!("req {ec} -keyout {name}.key -out {name}.csr -subj /CN={name}"));
            run(format!(
                "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out {name}.crt -days 2 \
                 -extfile {name}.ext"
            ));
        }
        Certs { dir }
    }

    /// A file of the set: `ca.crt`, `server.crt`, `server.key`, `client.crt`, `client.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.path("client.crt")
    }

    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }
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

/// How to start an [`EtcdCluster`]: `EtcdCluster::builder().members(3).start()`.
pub struct EtcdBuilder<'a> {
    members: usize,
    certs: Option<&'a Certs>,
    netns: Option<(&'a Netns, String)>,
    fast_elections: bool,
}

impl<'a> EtcdBuilder<'a> {
    /// How many members (1 unless told).
    pub fn members(mut self, n: usize) -> Self {
        assert!(n > 0, "a cluster has at least one member");
        self.members = n;
        self
    }

    /// https client URLs that require a client certificate signed by `certs`' CA (the server
    /// certificate must name the address the members listen on).
    pub fn tls(mut self, certs: &'a Certs) -> Self {
        self.certs = Some(certs);
        self
    }

    /// Run the members inside `netns` (`ip netns exec`), listening on `address`, one of its
    /// own addresses, instead of the test's loopback.
    pub fn in_netns(mut self, netns: &'a Netns, address: &str) -> Self {
        self.netns = Some((netns, address.to_owned()));
        self
    }

    /// Heartbeats every 50 ms and elections after 500 ms (etcd's defaults: 100 ms, 1 s), so
    /// that a failover test waits less for a new leader. On a busy machine a member may then
    /// call an election it did not need.
    pub fn fast_elections(mut self) -> Self {
        self.fast_elections = true;
        self
    }

    /// Start every member and wait until each one answers.
    pub fn start(self) -> EtcdCluster {
        let scheme = if self.certs.is_some() { "https" } else { "http" };
        let host = self.netns.as_ref().map_or("127.0.0.1", |(_, address)| address.as_str()).to_owned();
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let token = format!("calico-test-{}-{}", std::process::id(), free_port());
        let ports: Vec<(u16, u16)> = (0..self.members).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://{host}:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let netns = self.netns.as_ref().map(|(ns, _)| ns.name.clone());
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let dir = tempfile::Builder::new().prefix("calico-etcd-").tempdir().expect("tempdir for etcd");
                let name = format!("m{i}");
                let client_url = format!("{scheme}://{host}:{client}");
                let peer_url = format!("http://{host}:{peer}");
                let mut args: Vec<String> = [
                    ("--name", name.as_str()),
                    ("--data-dir", &dir.path().join("data").display().to_string()),
                    ("--listen-client-urls", &client_url),
                    ("--advertise-client-urls", &client_url),
                    ("--listen-peer-urls", &peer_url),
                    ("--initial-advertise-peer-urls", &peer_url),
                    ("--initial-cluster", &initial),
                    ("--initial-cluster-token", &token),
                    ("--initial-cluster-state", "new"),
                    ("--log-level", "warn"),
                ]
                .iter()
                .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
                .collect();
                if self.fast_elections {
                    args.extend(["--heartbeat-interval", "50", "--election-timeout", "500"].map(String::from));
                }
                if let Some(c) = self.certs {
                    args.push("--client-cert-auth".into());
                    for (flag, file) in
                        [("--trusted-ca-file", "ca.crt"), ("--cert-file", "server.crt"), ("--key-file", "server.key")]
                    {
                        args.extend([flag.to_string(), c.path(file).display().to_string()]);
                    }
                }
                Member { name, client_url, args, netns: netns.clone(), child: None, dir }
            })
            .collect();
        let tls = self.certs.map(|c| ClientTls { ca: c.ca(), cert: c.client_cert(), key: c.client_key() });
        let mut cluster = EtcdCluster { members, tls, netns };
        for m in &mut cluster.members {
            m.spawn();
        }
        cluster.wait_ready();
        cluster
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
        EtcdBuilder { members: 1, certs: None, netns: None, fast_elections: false }
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
