//! A real etcd server for one test: free loopback ports, a temporary data dir, stopped (and
//! its data removed) on drop, also when the test fails.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Etcd {
    child: Option<Child>,
    pub client_url: String,
    pub peer_port: u16,
    pub name: String,
    data: tempfile::TempDir,
}

/// A port the kernel just handed out on loopback (free at the time of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub fn etcd_binary() -> PathBuf {
    let path = PathBuf::from(std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into()));
    assert!(path.exists(), "{} is missing: install etcd-server (the test command does)", path.display());
    path
}

impl Etcd {
    /// A single-member etcd, ready to serve.
    pub fn start() -> Etcd {
        let port = free_port();
        let peer = free_port();
        let name = format!("t{}", port);
        let data = tempfile::Builder::new().prefix("calico-etcd-").tempdir().expect("tempdir");
        let client_url = format!("http://127.0.0.1:{port}");
        let mut etcd = Etcd { child: None, client_url, peer_port: peer, name, data };
        let args = etcd.base_args();
        etcd.spawn(&args);
        etcd.wait_ready();
        etcd
    }

    fn base_args(&self) -> Vec<String> {
        vec![
            "--name".into(),
            self.name.clone(),
            "--data-dir".into(),
            self.data.path().join("data").display().to_string(),
            "--listen-client-urls".into(),
            self.client_url.clone(),
            "--advertise-client-urls".into(),
            self.client_url.clone(),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{}", self.peer_port),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{}", self.peer_port),
            "--initial-cluster".into(),
            format!("{}=http://127.0.0.1:{}", self.name, self.peer_port),
            "--log-level".into(),
            "error".into(),
        ]
    }

    fn spawn(&mut self, args: &[String]) {
        let child = Command::new(etcd_binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting etcd");
        self.child = Some(child);
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &self.client_url, "--dial-timeout=1s", "endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd at {} did not become ready", self.client_url);
    }

    /// `etcdctl get --prefix` of `prefix`: the keys present.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.client_url, "get", "--prefix", "--keys-only", prefix])
            .output()
            .expect("etcdctl");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
