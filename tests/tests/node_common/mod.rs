//! A cluster of throwaway hosts for the calico-node tests: "host" namespaces joined by a
//! bridge living in a namespace of its own, etcd running in another (a host in a netns cannot
//! reach the machine's loopback), a calico-node per host, containers added with the real
//! calico-cni. Everything (processes, namespaces and so every link) goes on drop, also when
//! the test fails.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calico_tests::netns::{CniBinDir, Netns};
use calico_tests::{bin, result_ips, run_command, Invocation, Outcome};
use serde_json::{json, Value};

/// The hosts' subnet (inside our namespaces only).
pub const SUBNET: &str = "10.200.0";
/// A pool with room for many blocks (65,536 /26).
pub const BIG_POOL: &str = "10.192.0.0/12";

/// The `k`th /26 of [`BIG_POOL`], without its prefix.
pub fn big_pool_block(k: usize) -> String {
    format!("10.{}.{}.{}", 192 + k / 1024, (k % 1024) / 4, (k % 4) * 64)
}

/// etcd's address on it.
pub const ETCD_IP: &str = "10.200.0.100";

/// `ip ARGS`, panicking with stderr on failure.
fn ip(args: &[&str]) {
    calico_tests::netns::ip(args);
}

/// A process killed (SIGKILL) and reaped on drop.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.0.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `ip -n NS monitor route`, given 200 ms to subscribe before [`RouteMonitor::start`]
/// returns; killed and reaped on drop.
pub struct RouteMonitor {
    child: Child,
}

impl RouteMonitor {
    pub fn start(ns: &str) -> RouteMonitor {
        let child = Command::new("ip")
            .args(["-n", ns, "monitor", "route"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip monitor");
        std::thread::sleep(Duration::from_millis(200));
        RouteMonitor { child }
    }

    /// Each line as it comes, with when it came (a thread reads them).
    pub fn lines(&mut self) -> std::sync::mpsc::Receiver<(String, Instant)> {
        use std::io::BufRead;
        let (events, seen) = std::sync::mpsc::channel();
        let stdout = self.child.stdout.take().expect("monitor stdout");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if events.send((line, Instant::now())).is_err() {
                    break;
                }
            }
        });
        seen
    }

    /// Stop it: every line it printed (unless [`RouteMonitor::lines`] took them).
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        out
    }

    /// The route deletions it saw (`Deleted ...` lines) that contain `needle`.
    pub fn deletions(self, needle: &str) -> Vec<String> {
        self.stop().lines().filter(|l| l.starts_with("Deleted") && l.contains(needle)).map(str::to_owned).collect()
    }
}

/// The time from the start of `commit` to the first line of `seen` (a
/// [`RouteMonitor::lines`]) that starts with `wanted`; lines seen before are dropped. Panics
/// after `within`.
pub fn time_to_line(
    seen: &std::sync::mpsc::Receiver<(String, Instant)>,
    wanted: &str,
    within: Duration,
    commit: impl FnOnce(),
) -> Duration {
    while seen.try_recv().is_ok() {}
    let committed = Instant::now();
    commit();
    loop {
        let (line, at) = seen.recv_timeout(within).unwrap_or_else(|_| panic!("no {wanted:?} within {within:?}"));
        if line.starts_with(wanted) {
            return at.saturating_duration_since(committed);
        }
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long an agent may take to be ready: 20 s, or 60 s inside the tests' qemu VM, which
/// emulates its CPU (no KVM here) and starts three agents on one emulated core.
pub fn ready_within() -> Duration {
    if testkit::vm::in_guest() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(20)
    }
}

/// Wait until `f` holds (polling every 20 ms), or panic naming `what` after `within`.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// `GET path` on 127.0.0.1:`port` inside `ns`: (status line, body). A thread of ours enters
/// the namespace to connect; nothing is run there.
pub fn http_get(ns: &Netns, port: u16, path: &str) -> Option<(String, String)> {
    let ns_path = ns.path();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let netns = File::open(&ns_path).ok()?;
        // SAFETY: setns on a descriptor we own; it moves only this thread.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(conn, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).ok()?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_owned(), body.to_owned()))
    })
    .join()
    .ok()
    .flatten()
}

/// etcd in a namespace of its own, on the hosts' bridge: testkit's member, run there.
pub struct EtcdNs {
    /// Declared first, so dropped first: the member stops before its namespace goes.
    pub etcd: calico_tests::etcd::Etcd,
    pub ns: Netns,
}

impl EtcdNs {
    pub fn url(&self) -> String {
        self.etcd.client_url.clone()
    }

    pub fn stop(&mut self) {
        self.etcd.stop();
    }
}

/// One host: its namespace, address, and agent.
pub struct Host {
    pub name: String,
    pub ns: Netns,
    pub ip: String,
    pub agent: Proc,
    pub dir: tempfile::TempDir,
    pub health_port: u16,
    /// Agent flags of this host only (e.g. `--as`).
    pub flags: Vec<String>,
}

impl Host {
    /// `ip route show proto 80` in this host (both families).
    pub fn our_routes(&self) -> String {
        format!(
            "{}{}",
            self.ns.ip(&["-4", "route", "show", "proto", "80"]),
            self.ns.ip(&["-6", "route", "show", "proto", "80"])
        )
    }

    pub fn ready(&self) -> bool {
        http_get(&self.ns, self.health_port, "/readiness").is_some_and(|(status, _)| status.contains(" 200"))
    }

    pub fn metrics(&self) -> String {
        http_get(&self.ns, self.health_port, "/metrics").map(|(_, body)| body).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The control socket of this host's BIRD (when the lab runs BGP).
    pub fn bird_socket(&self) -> String {
        self.dir.path().join("bird.ctl").display().to_string()
    }

    /// `birdc -s <socket> ARGS` in this host: its output.
    pub fn birdc(&self, args: &[&str]) -> String {
        let out = self.ns.command("birdc").arg("-s").arg(self.bird_socket()).args(args).output().expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The lab: a bridge, etcd, hosts, and the CNI binaries.
pub struct Lab {
    // Drop order: agents and etcd (in hosts/etcd) first, then the namespaces.
    pub hosts: Vec<Host>,
    pub etcd: EtcdNs,
    /// The router between subnets, when there are several.
    pub router: Option<Netns>,
    pub bridge: Netns,
    pub bins: CniBinDir,
    /// Containers made by [`Lab::add_container`].
    pub containers: Vec<Netns>,
    /// The prefix of the namespaces' names.
    pub prefix: String,
    /// Extra agent flags for every host.
    pub agent_flags: Vec<String>,
    /// Run BIRD (`--bgp=bird`, with its files in each host's directory); else `--bgp=none`.
    pub bgp: bool,
}

impl Lab {
    /// `n` hosts (`<SUBNET>.1` … `.n`, named `host1` …) and etcd, all on one bridge; no agent
    /// running yet.
    pub fn new(n: usize) -> Lab {
        Lab::with_subnets(&[n])
    }

    /// Hosts on several subnets: `counts[s]` hosts on `10.200.<s>.0/24` (`10.200.<s>.1` …,
    /// named `host1` … across all subnets), one bridge per subnet, and with more than one
    /// subnet a router (`10.200.<s>.254` on each) that every host routes through by
    /// default. etcd is on the first subnet.
    pub fn with_subnets(counts: &[usize]) -> Lab {
        Lab::named("node", counts)
    }

    /// [`Lab::with_subnets`], with namespaces named `<prefix>br`, `<prefix>h`… (each test
    /// file its own prefix).
    pub fn named(prefix: &str, counts: &[usize]) -> Lab {
        let role = |r: &str| format!("{prefix}{r}");
        let bridge = Netns::new(&role("br"));
        let attach = |ns: &Netns, subnet: usize, port: &str, ifname: &str, addr: &str| {
            let br = format!("br{subnet}");
            ip(&["-n", &bridge.name, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", &ns.name]);
            ip(&["-n", &bridge.name, "link", "set", port, "master", &br, "up"]);
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", ifname]);
            ns.ip(&["link", "set", ifname, "up"]);
        };
        for s in 0..counts.len() {
            bridge.ip(&["link", "add", &format!("br{s}"), "type", "bridge"]);
            bridge.ip(&["link", "set", &format!("br{s}"), "up"]);
        }
        let router = (counts.len() > 1).then(|| {
            let r = Netns::new(&role("router"));
            for s in 0..counts.len() {
                attach(&r, s, &format!("pr{s}"), &format!("eth{s}"), &format!("10.200.{s}.254"));
            }
            r.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            r
        });
        let etcd_ns = Netns::new(&role("etcd"));
        attach(&etcd_ns, 0, "pe", "eth0", ETCD_IP);
        if router.is_some() {
            etcd_ns.ip(&["route", "add", "default", "via", "10.200.0.254"]);
        }
        let etcd = EtcdNs { etcd: calico_tests::etcd::Etcd::start_in(&etcd_ns, ETCD_IP), ns: etcd_ns };
        let mut hosts = Vec::new();
        for (s, count) in counts.iter().enumerate() {
            for i in 1..=*count {
                let ns = Netns::new(&role("h"));
                let ip = format!("10.200.{s}.{i}");
                let number = hosts.len() + 1;
                attach(&ns, s, &format!("p{number}"), "eth0", &ip);
                if router.is_some() {
                    ns.ip(&["route", "add", "default", "via", &format!("10.200.{s}.254")]);
                }
                let dir = tempfile::Builder::new().prefix("calico-node-host-").tempdir().expect("tempdir");
                let health_port = 9099;
                hosts.push(Host {
                    name: format!("host{number}"),
                    ns,
                    ip,
                    agent: Proc(None),
                    dir,
                    health_port,
                    flags: vec![],
                });
            }
        }
        let lab = Lab {
            hosts,
            etcd,
            router,
            bridge,
            bins: CniBinDir::new(),
            containers: Vec::new(),
            agent_flags: Vec::new(),
            bgp: false,
            prefix: prefix.to_owned(),
        };
        wait_for("etcd to answer", Duration::from_secs(30), || lab.ctl(0, &["pool", "show"]).ok());
        lab
    }

    /// calicoctl run in host `i` (which reaches etcd).
    pub fn ctl(&self, i: usize, args: &[&str]) -> Outcome {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i].ns.name]).arg(bin("calicoctl")).args(args);
        cmd.env_remove("CALICO_DATASTORE_PATH").env("ETCD_ENDPOINTS", self.etcd.url());
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        run_command(cmd, b"")
    }

    /// The agent's command for host `i`, with `extra` flags.
    pub fn agent_command(&self, i: usize, extra: &[&str]) -> Command {
        let h = &self.hosts[i];
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.ns.name]).arg(bin("calico-node"));
        cmd.args(["--nodename", &h.name, "--etcd-endpoints", &self.etcd.url()]);
        cmd.args(["--health-listen", &format!("127.0.0.1:{}", h.health_port), "--log-level", "debug"]);
        cmd.arg("--mtu-file").arg(h.dir.path().join("mtu"));
        cmd.arg("--bird-config").arg(h.dir.path().join("bird.conf"));
        cmd.arg("--bird-socket").arg(h.dir.path().join("bird.ctl"));
        if !self.bgp {
            cmd.arg("--bgp=none");
        }
        cmd.args(&self.agent_flags).args(&h.flags).args(extra);
        cmd.env_remove("ETCD_ENDPOINTS").env_remove("CALICO_DATASTORE_PATH").env_remove("NODENAME");
        cmd
    }

    /// Start (or restart) host `i`'s agent, logging to its directory.
    pub fn start_agent(&mut self, i: usize) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.hosts[i].dir.path().join("agent.log"))
            .expect("agent log");
        let mut cmd = self.agent_command(i, &[]);
        cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("log")).stderr(log);
        let child = cmd.spawn().expect("start calico-node");
        self.hosts[i].agent = Proc(Some(child));
    }

    /// Start every agent and wait until each is ready.
    pub fn start_agents(&mut self) {
        for i in 0..self.hosts.len() {
            self.start_agent(i);
        }
        for h in &self.hosts {
            wait_for(&format!("{} ready", h.name), ready_within(), || h.ready());
        }
    }

    /// The netconf of host `i` (direct to etcd; lock and block note in the host's dir).
    pub fn netconf(&self, i: usize) -> Vec<u8> {
        let h = &self.hosts[i];
        let lock = h.dir.path().join("ipam.lock").display().to_string();
        let conf = json!({"cniVersion": "1.0.0", "name": "nodenet", "type": "calico", "nodename": h.name,
            "etcd_endpoints": self.etcd.url(), "mtu": 1400,
            "ipam": {"type": "calico-ipam", "lock_file": lock}});
        serde_json::to_vec(&conf).expect("json")
    }

    /// A container on host `i` added with calico-cni; returns its address. An ADD that answers
    /// CNI code 11 (try again later: etcd did not answer in time, which happens in the slow
    /// emulated VM of the IPIP test) is tried again, as a runtime does, up to three times.
    pub fn add_container(&mut self, i: usize) -> String {
        let c = Netns::new(&format!("{}c", self.prefix));
        let inv = Invocation::new("ADD", &format!("ctr-{}", c.name)).netns(&c.path()).path(&self.bins.path());
        let mut out = inv.run_in(&self.hosts[i].ns, &self.bins.plugin("calico"), &self.netconf(i));
        for _ in 0..3 {
            if out.ok() || !out.stdout.contains("\"code\":11,") {
                break;
            }
            eprintln!(
                "ADD on {} answered 11 (try again later), trying again: {}",
                self.hosts[i].name,
                out.stdout.trim()
            );
            std::thread::sleep(Duration::from_secs(1));
            out = inv.run_in(&self.hosts[i].ns, &self.bins.plugin("calico"), &self.netconf(i));
        }
        let result: Value = out.expect_ok();
        let ip = result_ips(&result)[0].clone();
        self.containers.push(c);
        ip
    }

    /// The container added last.
    pub fn container(&self, n: usize) -> &Netns {
        &self.containers[n]
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            h.agent.kill();
        }
        self.etcd.stop();
    }
}

impl Lab {
    /// Write `entries` (key, value) into etcd with etcdctl run in etcd's namespace, in
    /// transactions of 100 puts (etcd's default limit is 128 operations).
    pub fn etcd_put(&self, entries: &[(String, String)]) {
        for chunk in entries.chunks(100) {
            let mut script = String::from("\n");
            for (k, v) in chunk {
                assert!(!v.contains(['"', '\\', ' ']), "etcdctl txn takes simple values only: {v}");
                script.push_str(&format!("put {k} \"{v}\"\n"));
            }
            script.push_str("\n\n");
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &self.etcd.ns.name, "etcdctl", "--endpoints", &self.etcd.url(), "txn"]);
            cmd.env("ETCDCTL_API", "3").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let out = run_command(cmd, script.as_bytes());
            assert!(out.ok() && out.stdout.starts_with("SUCCESS"), "etcdctl txn: {out:#?}");
        }
    }

    /// `n` made-up remote nodes on the hosts' subnet (`fake<i>` at `<SUBNET>.<101+i%150>`),
    /// each with `blocks` blocks of [`BIG_POOL`] from `10.192.64.0` on. Returns the blocks.
    pub fn fake_nodes(&self, n: usize, blocks: usize) -> Vec<String> {
        let mut entries = Vec::new();
        let mut all = Vec::new();
        for i in 0..n {
            let name = format!("fake{i}");
            entries.push((format!("/calico/v1/host/{name}/metadata"), "{}".to_owned()));
            entries.push((format!("/calico/bgp/v1/host/{name}/ip_addr_v4"), format!("{SUBNET}.{}", 101 + i % 150)));
            entries.push((format!("/calico/bgp/v1/host/{name}/network_v4"), format!("{SUBNET}.0/24")));
            for b in 0..blocks {
                let k = 256 + i * blocks + b; // /26 number inside the pool, past the real hosts'
                let block = big_pool_block(k);
                entries.push((format!("/calico/ipam/v2/host/{name}/ipv4/block/{block}-26"), "{}".into()));
                all.push(format!("{block}/26"));
            }
        }
        self.etcd_put(&entries);
        all
    }
}
