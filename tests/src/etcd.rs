//! Real etcd servers for the tests, on free loopback ports with temporary data dirs. Every
//! process is killed (and its data removed) on drop, also when the test fails.
//! - [`Etcd`]: one member, plain http or with client-certificate TLS ([`Etcd::start_tls`]);
//! - [`EtcdCluster`]: several members whose processes can be stopped and started again;
//! - [`Certs`]: a throwaway CA with a server and a client certificate, made with `openssl`.

use std::collections::HashSet;
use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a member (or a restarted cluster) may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A loopback port nobody listens on now, never handed out twice in this process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

pub fn etcd_binary() -> PathBuf {
    let path = PathBuf::from(std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into()));
    assert!(
        path.exists(),
        "{} is missing: install etcd-server (the test command does)",
        path.display()
    );
    path
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate (EC P-256, valid two
/// days), made with the openssl command-line tool in a temporary directory.
pub struct Certs {
    pub dir: TempDir,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("calico-certs-")
            .tempdir()
            .expect("tempdir for certificates");
        let run = |args: String| {
            let out = Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(dir.path())
                .output()
                .expect("run openssl (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        run(format!(
            "req -x509 {ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=calico-test-CA \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ));
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.path().join(format!("{name}.ext")), ext).expect("write extensions");
            run(format!(
                "req {ec} -keyout {name}.key -out {name}.csr -subj /CN={name}"
            ));
            run(format!(
                "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out {name}.crt -days 2 \
                 -extfile {name}.ext"
            ));
        }
        Certs { dir }
    }

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
    child: Option<Child>,
    dir: TempDir,
}

impl Member {
    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "etcd member {} is already running",
            self.name
        );
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log");
        let child = Command::new(etcd_binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        self.child = Some(child);
    }

    /// SIGKILL, as a crash or a lost machine: clients see their connections drop.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
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

/// A cluster of members on loopback. Stopped members keep their data and rejoin when
/// started again.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    tls: Option<ClientTls>,
}

impl EtcdCluster {
    /// `n` plain-http members, each answering when this returns.
    pub fn start(n: usize) -> EtcdCluster {
        Self::launch(n, None)
    }

    fn launch(n: usize, certs: Option<&Certs>) -> EtcdCluster {
        let scheme = if certs.is_some() { "https" } else { "http" };
        let token = format!("calico-test-{}-{}", std::process::id(), free_port());
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let dir = tempfile::Builder::new()
                    .prefix("calico-etcd-")
                    .tempdir()
                    .expect("tempdir for etcd");
                let name = format!("m{i}");
                let client_url = format!("{scheme}://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
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
                if let Some(c) = certs {
                    args.push("--client-cert-auth".into());
                    for (flag, file) in [
                        ("--trusted-ca-file", "ca.crt"),
                        ("--cert-file", "server.crt"),
                        ("--key-file", "server.key"),
                    ] {
                        args.extend([flag.to_string(), c.path(file).display().to_string()]);
                    }
                }
                Member {
                    name,
                    client_url,
                    args,
                    child: None,
                    dir,
                }
            })
            .collect();
        let tls = certs.map(|c| ClientTls {
            ca: c.ca(),
            cert: c.client_cert(),
            key: c.client_key(),
        });
        let mut cluster = EtcdCluster { members, tls };
        for m in &mut cluster.members {
            m.spawn();
        }
        cluster.wait_ready();
        cluster
    }

    /// Every member's client URL, comma-separated, as Calico's `etcd_endpoints`.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
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
            let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
            let statuses: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or_default();
            for st in statuses.as_array().into_iter().flatten() {
                let id = &st["Status"]["header"]["member_id"];
                if id.is_u64() && *id == st["Status"]["leader"] {
                    let url = st["Endpoint"].as_str().unwrap_or_default();
                    if let Some(i) = self.members.iter().position(|m| m.client_url == url) {
                        return i;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no running etcd member reports itself as leader: {statuses}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run etcdctl (API v3) against the running members.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let urls: Vec<&str> = self
            .members
            .iter()
            .filter(|m| m.running())
            .map(|m| m.client_url.as_str())
            .collect();
        self.etcdctl_on(&urls.join(","))
            .args(args)
            .output()
            .expect("run etcdctl (apt-get install etcd-client)")
    }

    /// etcdctl on `endpoints`, with the client certificate when the cluster uses TLS.
    fn etcdctl_on(&self, endpoints: &str) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"));
        cmd.args(["--dial-timeout=1s", "--command-timeout=3s"])
            .stdin(Stdio::null());
        if let Some(tls) = &self.tls {
            cmd.arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.cert)
                .arg("--key")
                .arg(&tls.key);
        }
        cmd
    }

    /// `etcdctl get --prefix --keys-only`: the keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.etcdctl(&["get", "--prefix", "--keys-only", prefix]);
        assert!(
            out.status.success(),
            "etcdctl get {prefix}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
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

/// A single-member etcd, ready to serve.
pub struct Etcd {
    cluster: EtcdCluster,
    pub client_url: String,
}

impl Etcd {
    pub fn start() -> Etcd {
        Self::from_cluster(EtcdCluster::launch(1, None))
    }

    /// An https member that requires a client certificate signed by `certs`' CA.
    pub fn start_tls(certs: &Certs) -> Etcd {
        Self::from_cluster(EtcdCluster::launch(1, Some(certs)))
    }

    fn from_cluster(cluster: EtcdCluster) -> Etcd {
        let client_url = cluster.members[0].client_url.clone();
        Etcd {
            cluster,
            client_url,
        }
    }

    /// `etcdctl get --prefix` of `prefix`: the keys present.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.cluster.keys(prefix)
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.cluster.etcdctl(args)
    }

    pub fn stop(&mut self) {
        self.cluster.stop_member(0);
    }

    /// Start it again on the same data.
    pub fn restart(&mut self) {
        self.cluster.start_member(0);
    }
}
