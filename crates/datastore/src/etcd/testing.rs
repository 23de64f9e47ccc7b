//! Test harness: real etcd members on free loopback ports with temporary data directories,
//! killed by `Drop` even when a test fails, and throwaway TLS certificates.

use std::collections::HashSet;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::EtcdStore;
use crate::{Config, Datastore};

const ETCD: &str = "/usr/bin/etcd";
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The etcd binary. Missing etcd fails the test: nothing is skipped silently.
fn etcd_binary() -> PathBuf {
    if Path::new(ETCD).is_file() {
        return ETCD.into();
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("etcd")).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "etcd is not installed ({ETCD} missing and no etcd in PATH): the etcd backend \
                 tests need it; install it with `apt-get install etcd-server`"
            )
        })
}

/// A loopback port nobody listens on, never handed out twice in this process.
pub(super) fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// Client certificate auth for one member: the server side of the TLS test.
pub(super) struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One etcd member. Dropping it kills the process and removes its data.
pub(super) struct Member {
    pub client_url: String,
    child: Option<Child>,
    dir: TempDir,
}

impl Member {
    /// Kill the member now (SIGKILL): its clients see the connection drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cluster of `n` members on loopback; `tls` makes the client URLs https with client
/// certificate auth.
pub(super) struct Cluster {
    pub members: Vec<Member>,
}

impl Cluster {
    /// Start `n` plain-http members and wait until each one answers.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, None, Config::default())
    }

    /// Start one https member requiring client certificates; `client` must be able to talk
    /// to it, and is used to wait until it answers.
    pub fn start_tls(server: &ServerTls, client: Config) -> Cluster {
        Self::start_with(1, Some(server), client)
    }

    fn start_with(n: usize, tls: Option<&ServerTls>, client: Config) -> Cluster {
        let etcd = etcd_binary();
        let token = format!("test-{}-{}", std::process::id(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}")).collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client_port, peer_port))| {
                let dir = tempfile::tempdir().expect("temp dir for etcd");
                let client_url = format!("{scheme}://127.0.0.1:{client_port}");
                let peer_url = format!("http://127.0.0.1:{peer_port}");
                let log = File::create(dir.path().join("etcd.log")).expect("etcd log file");
                let (name, cluster) = (format!("m{i}"), initial.join(","));
                let data = dir.path().join("data");
                let mut cmd = Command::new(&etcd);
                cmd.arg("--data-dir").arg(&data);
                let mut flags = vec![
                    ("--name", name.as_str()),
                    ("--listen-client-urls", &client_url),
                    ("--advertise-client-urls", &client_url),
                    ("--listen-peer-urls", &peer_url),
                    ("--initial-advertise-peer-urls", &peer_url),
                    ("--initial-cluster", &cluster),
                    ("--initial-cluster-token", &token),
                    ("--initial-cluster-state", "new"),
                    ("--heartbeat-interval", "50"),
                    ("--election-timeout", "500"),
                ];
                if let Some(tls) = tls {
                    cmd.arg("--client-cert-auth");
                    flags.extend([
                        ("--trusted-ca-file", path_str(&tls.ca)),
                        ("--cert-file", path_str(&tls.cert)),
                        ("--key-file", path_str(&tls.key)),
                    ]);
                }
                for (flag, value) in flags {
                    cmd.arg(flag).arg(value);
                }
                let stderr = log.try_clone().expect("etcd log file");
                let child = cmd
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(stderr)
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {}: {e}", etcd.display()));
                Member { client_url, child: Some(child), dir }
            })
            .collect();
        let cluster = Cluster { members };
        for member in &cluster.members {
            let cfg = Config { etcd_endpoints: vec![member.client_url.clone()], ..client.clone() };
            wait_ready(member, &cfg);
        }
        cluster
    }

    /// Every client URL, comma-separated, as Calico's `etcd_endpoints`.
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| m.client_url.as_str()).collect::<Vec<_>>().join(",")
    }

    /// A config naming every member.
    pub fn config(&self) -> Config {
        Config { etcd_endpoints: vec![self.endpoints()], ..Config::default() }
    }

    /// A store on every member.
    pub fn store(&self) -> EtcdStore {
        EtcdStore::connect(&self.config()).expect("connect to the test cluster")
    }

    /// A store on the members at `order`, tried in that order.
    pub fn store_on(&self, order: &[usize]) -> EtcdStore {
        let urls: Vec<String> = order.iter().map(|&i| self.members[i].client_url.clone()).collect();
        let cfg = Config { etcd_endpoints: urls, ..Config::default() };
        EtcdStore::connect(&cfg).expect("connect to the test cluster")
    }

    /// The index of the member that leads the cluster now (asked with etcd's status RPC).
    pub fn leader(&self) -> usize {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            for _ in 0..100 {
                for (i, member) in self.members.iter().enumerate() {
                    let url = [member.client_url.as_str()];
                    let Ok(mut client) = etcd_client::Client::connect(url, None).await else {
                        continue;
                    };
                    let Ok(status) = client.status().await else {
                        continue;
                    };
                    if status.header().is_some_and(|h| h.member_id() == status.leader()) {
                        return i;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("no etcd member reports itself as leader");
        })
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Poll `member` with a fresh store each time (a failed call holds a store down for a while).
fn wait_ready(member: &Member, cfg: &Config) {
    let start = Instant::now();
    loop {
        let store = EtcdStore::connect(cfg).expect("test store settings");
        match store.get("/ready") {
            Ok(_) => return,
            Err(e) if start.elapsed() > READY_WITHIN => panic!(
                "etcd at {} not ready after {READY_WITHIN:?}: {e}\n--- etcd log ---\n{}",
                member.client_url,
                member.log()
            ),
            Err(_) => sleep(Duration::from_millis(100)),
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl
/// command-line tool in a temporary directory.
pub(super) struct Certs {
    pub dir: TempDir,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl (apt-get install openssl)");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=calico test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat());
        for (name, ext) in [
            ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.path().join(format!("{name}.ext")), ext).expect("write ext");
            let (key, csr, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
            run(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]].concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        Certs { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn server(&self) -> ServerTls {
        ServerTls { ca: self.path("ca.crt"), cert: self.path("server.crt"), key: self.path("server.key") }
    }
}
