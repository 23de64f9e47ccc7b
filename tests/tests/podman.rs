//! End to end with a real runtime: podman 4.3 (CNI backend) and runc run busybox containers
//! on netconf-examples/cnitool-podman.conflist (calico → portmap), with only the store path and
//! the pool patched.
//!
//! Podman creates the container netns and runs the plugins in the machine's own netns, so the
//! cali veths and /32 routes are made there. To keep that small and leave the machine as it
//! was, everything podman and the plugins use is ours and temporary: podman's root, runroot,
//! tmpdir, runc's state root, containers.conf, the network config dir, the store, a dedicated
//! pool in 10.199.0.0/16, and a cgroup parent. [`Podman`]'s drop removes every container,
//! any cali link or route left in the pool, the cgroups, portmap's top-level chains and
//! calico-cni's `inet calico` nftables table if they were not there before (else this pool's
//! elements in it), and the CNI cache directory podman's libcni creates under /var/lib.
//! The tests run one at a time (an flock, also across processes): they share the machine's netns.
//!
//! "The host" the containers ping is a /32 on a veth pair of the test's own (the cali veths
//! have no address, and the machine's own addresses are not ours to use). Host ports are
//! reached from a second container via that address (PREROUTING DNAT), and from the machine
//! via that address and 127.0.0.1 (OUTPUT DNAT; portmap sets route_localnet on the cali veth).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use calico_tests::netns::{ip, CniBinDir};
use calico_tests::{unique, Backend};
use serde_json::{json, Value};

/// calico-cni's nftables table, as `nft list tables` prints it.
const CALICO_TABLE: &str = "table inet calico";
/// calico-cni's profile table.
const POLICY_TABLE: &str = "table inet calico-policy";

/// The example the chaining test uses too.
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../netconf-examples/cnitool-podman.conflist");
const NATIVE_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../netconf-examples/podman-native-ports.conflist");

/// One podman test at a time, across threads and processes: they share the machine's netns.
/// An flock on this source file, which always exists, so the lock leaves nothing behind.
struct Serial(#[allow(dead_code)] std::fs::File);

impl Serial {
    fn lock() -> Serial {
        let f = std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/podman.rs")).expect("podman.rs");
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        Serial(f)
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// What of the machine's state a podman run may change, to compare and restore.
#[derive(Clone, Debug, PartialEq)]
struct Machine {
    cni_cache: bool,
    runc_root: bool,
    netns: BTreeSet<String>,
    nat4: BTreeSet<String>,
    nat6: BTreeSet<String>,
    /// `nft list tables`: iptables-nft makes the nat tables when portmap first uses them.
    tables: BTreeSet<String>,
}

fn nat_chains(tool: &str) -> BTreeSet<String> {
    let out = Command::new(tool).args(["-w", "-t", "nat", "-S"]).output();
    let out = out.unwrap_or_else(|e| panic!("{tool} (Debian package iptables): {e}"));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.strip_prefix("-N ")).map(str::to_owned).collect()
}

fn nft_tables() -> BTreeSet<String> {
    let out = Command::new("nft").args(["list", "tables"]).output();
    let out = out.unwrap_or_else(|e| panic!("nft (Debian package nftables, scripts/deps.sh): {e}"));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

impl Machine {
    fn now() -> Machine {
        let netns = std::fs::read_dir("/run/netns")
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        Machine {
            cni_cache: Path::new("/var/lib/cni").exists(),
            runc_root: Path::new("/run/runc").exists(),
            netns,
            nat4: nat_chains("iptables"),
            nat6: nat_chains("ip6tables"),
            tables: nft_tables(),
        }
    }
}

/// An address on a veth pair of our own in the machine's netns: "the host" for the
/// containers to ping (the cali veths have none). Deleted on drop.
struct HostAddr {
    link: String,
    addr: String,
}

impl HostAddr {
    fn new(addr: &str) -> HostAddr {
        let link = unique("cph");
        ip(&["link", "add", &link, "type", "veth", "peer", "name", &format!("{link}p")]);
        let h = HostAddr { link, addr: addr.to_owned() };
        ip(&["addr", "add", &format!("{addr}/32"), "dev", &h.link]);
        ip(&["link", "set", &h.link, "up"]);
        ip(&["link", "set", &format!("{}p", h.link), "up"]);
        h
    }
}

impl Drop for HostAddr {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.link]).stderr(Stdio::null()).status();
    }
}

/// The example with this test's store and pool: cnitool-podman.conflist (calico, then
/// portmap), or with `native` podman-native-ports.conflist (calico-cni alone, mapping the
/// ports itself through the capability portMappings).
fn conflist(store: &Backend, pool: &str, native: bool) -> Value {
    let file = if native { NATIVE_EXAMPLE } else { EXAMPLE };
    let mut list: Value = serde_json::from_str(&std::fs::read_to_string(file).expect(file)).expect("example JSON");
    assert_eq!(list["plugins"][0]["type"], "calico", "{file}: calico must come first");
    if native {
        assert_eq!(list["plugins"].as_array().map(Vec::len), Some(1), "{file}: calico alone");
        list["name"] = json!("calico-podman-native");
    } else {
        assert_eq!(list["plugins"][1]["type"], "portmap", "{file}: portmap must follow calico");
    }
    store.apply(&mut list["plugins"][0]);
    list["plugins"][0]["ipam"]["ipv4_pools"] = json!([pool]);
    list
}

/// One podman installation of our own, on one pool.
struct Podman {
    dir: tempfile::TempDir,
    bins: CniBinDir,
    store: Backend,
    pool: String,
    net: String,
    cgroup: String,
    before: Machine,
    _serial: Serial,
}

/// A container with `nc -l -p 80` in a loop, its port 80 published on a free host port; each
/// connection's data is appended to a file read from outside. `-i` keeps nc's stdin open: at
/// EOF it would close the connection it just accepted.
struct NcServer {
    name: String,
    ip: Ipv4Addr,
    port: u16,
    got: PathBuf,
}

impl NcServer {
    fn received(&self) -> String {
        std::fs::read_to_string(&self.got).unwrap_or_default()
    }

    /// Whether `msg` arrives within 10 s.
    fn wait_for(&self, msg: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.received().contains(msg) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.received().contains(msg)
    }
}

impl Podman {
    /// Podman on the pool 10.199.`k`.0/26 (distinct per test), calico → portmap.
    fn new(k: u8) -> Podman {
        Podman::with(k, false)
    }

    /// Podman on the pool 10.199.`k`.0/26 with calico-cni alone mapping the ports.
    fn native(k: u8) -> Podman {
        Podman::with(k, true)
    }

    fn with(k: u8, native: bool) -> Podman {
        let serial = Serial::lock();
        let tools = [
            ("podman", "podman"),
            ("runc", "runc"),
            ("conmon", "conmon"),
            ("busybox", "busybox-static"),
            ("nft", "nftables"),
        ];
        for (tool, package) in tools {
            let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status();
            assert!(
                found.is_ok_and(|s| s.success()),
                "{tool} is missing: install the Debian package {package} (scripts/deps.sh)"
            );
        }
        let pool = format!("10.199.{k}.0/26");
        let routes = ip(&["-4", "route", "show", "root", &pool]);
        assert!(routes.trim().is_empty(), "the machine already routes into {pool}, pick another pool:\n{routes}");

        let store = Backend::embedded();
        store.ctl(&["pool", "add", &pool]).success();
        let list = conflist(&store, &pool, native);
        let p = Podman {
            dir: tempfile::Builder::new().prefix("calico-podman-").tempdir().expect("tempdir"),
            bins: CniBinDir::new(),
            store,
            pool,
            net: list["name"].as_str().expect("name").to_owned(),
            cgroup: unique("calico-podman-"),
            before: Machine::now(),
            _serial: serial,
        };
        for sub in ["root", "runroot", "tmp", "runc", "net", "rootfs/bin"] {
            std::fs::create_dir_all(p.path(sub)).unwrap();
        }
        std::fs::copy("/bin/busybox", p.path("rootfs/bin/busybox")).expect("copying /bin/busybox (busybox-static)");
        for cmd in ["sh", "ip", "ping", "nc", "wget", "sleep", "cat", "echo", "ls"] {
            std::os::unix::fs::symlink("busybox", p.path("rootfs/bin").join(cmd)).unwrap();
        }
        let conf = format!(
            "[containers]\ndefault_ulimits = []\n\n[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n\n\
             [engine]\nevents_logger = \"none\"\n",
            p.bins.path()
        );
        std::fs::write(p.path("containers.conf"), conf).unwrap();

        std::fs::write(p.path("net/calico.conflist"), serde_json::to_vec_pretty(&list).unwrap()).unwrap();
        p
    }

    fn nc_server(&self) -> NcServer {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let out_dir = self.path("out");
        std::fs::create_dir_all(&out_dir).unwrap();
        let volume = format!("{}:/out", out_dir.display());
        let publish = format!("{port}:80");
        let name = self.start(
            &["-i", "-p", &publish, "-v", &volume],
            &["sh", "-c", "while true; do nc -l -p 80 >> /out/got; done"],
        );
        let ip = self.addr(&name);
        NcServer { name, ip, port, got: out_dir.join("got") }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// `podman ARGS...` on our own root, config and runtime state.
    fn podman(&self, args: &[&str]) -> Output {
        let p = |s: &str| self.path(s).display().to_string();
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", p("containers.conf"))
            .args(["--root", &p("root"), "--runroot", &p("runroot"), "--tmpdir", &p("tmp")])
            .args(["--storage-driver", "vfs", "--network-config-dir", &p("net")])
            .args(["--runtime", "runc", "--runtime-flag", &format!("root={}", p("runc"))])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(args)
            .stdin(Stdio::null());
        let out = cmd.output().expect("running podman");
        if !out.status.success() {
            eprintln!("podman {}: {}", args.join(" "), text(&out));
        }
        out
    }

    /// `podman run --rm` of `argv` in a fresh container on our network.
    fn run(&self, extra: &[&str], argv: &[&str]) -> Output {
        let name = unique("calico-pod-");
        let rootfs = self.path("rootfs").display().to_string();
        let cgroup = format!("/{}", self.cgroup);
        let mut args = vec!["run", "--rm", "--name", &name, "--network", &self.net, "--cgroup-parent", &cgroup];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--rootfs", &rootfs]);
        args.extend_from_slice(argv);
        self.podman(&args)
    }

    /// A detached container running `argv`; its name.
    fn start(&self, extra: &[&str], argv: &[&str]) -> String {
        let name = unique("calico-pod-");
        let rootfs = self.path("rootfs").display().to_string();
        let cgroup = format!("/{}", self.cgroup);
        let mut args = vec!["run", "-d", "--name", &name, "--network", &self.net, "--cgroup-parent", &cgroup];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--rootfs", &rootfs]);
        args.extend_from_slice(argv);
        let out = self.podman(&args);
        assert!(out.status.success(), "podman run -d: {}", text(&out));
        name
    }

    /// The container's IPv4 address, as it sees it on eth0.
    fn addr(&self, name: &str) -> Ipv4Addr {
        let out = self.podman(&["exec", name, "ip", "-4", "-o", "addr", "show", "eth0"]);
        assert!(out.status.success(), "{}", text(&out));
        let s = String::from_utf8_lossy(&out.stdout);
        let cidr =
            s.split_whitespace().skip_while(|w| *w != "inet").nth(1).unwrap_or_else(|| panic!("no IPv4 on eth0: {s}"));
        assert!(cidr.ends_with("/32"), "Calico gives a /32: {s}");
        cidr.trim_end_matches("/32").parse().expect("an IPv4 address")
    }

    fn in_pool(&self, a: Ipv4Addr) -> bool {
        let (net, len) = self.pool.split_once('/').unwrap();
        let (net, len): (Ipv4Addr, u32) = (net.parse().unwrap(), len.parse().unwrap());
        u32::from(a) >> (32 - len) == u32::from(net) >> (32 - len)
    }

    fn remove(&self, name: &str) {
        let out = self.podman(&["rm", "-f", "-t", "0", name]);
        assert!(out.status.success(), "podman rm: {}", text(&out));
    }

    /// Nothing of ours left: no container, no cali link or route into the pool, no
    /// allocation, no portmap rule, no netns, no cache entry.
    fn assert_nothing_left(&self, what: &str) {
        let ps = self.podman(&["ps", "-a", "-q"]);
        assert!(ps.status.success() && ps.stdout.is_empty(), "{what}: containers left: {}", text(&ps));
        let routes = ip(&["-4", "route", "show", "root", &self.pool]);
        assert!(routes.trim().is_empty(), "{what}: routes into {} left:\n{routes}", self.pool);
        assert_eq!(self.store.used(), 0, "{what}: addresses left allocated");
        self.store.assert_clean();
        let nat = Command::new("iptables").args(["-w", "-t", "nat", "-S"]).output().unwrap();
        let nat = String::from_utf8_lossy(&nat.stdout);
        assert!(!nat.contains("CNI-DN-") && !nat.contains(&self.net), "{what}: portmap rules left:\n{nat}");
        // No map or hairpin element of this network in calico-cni's table (each names its
        // owner, network first, in its comment).
        let ours = Command::new("nft").args(["list", "table", "inet", "calico"]).output().unwrap();
        let ours = String::from_utf8_lossy(&ours.stdout);
        assert!(!ours.contains(&format!("\"{}/", self.net)), "{what}: port mappings left:\n{ours}");
        let now = Machine::now();
        let new_netns: Vec<_> = now.netns.difference(&self.before.netns).filter(|n| n.starts_with("netns-")).collect();
        assert!(new_netns.is_empty(), "{what}: podman netns left: {new_netns:?}");
        let cached: Vec<_> = std::fs::read_dir("/var/lib/cni/results")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&self.net))
                    .collect()
            })
            .unwrap_or_default();
        assert!(cached.is_empty(), "{what}: libcni cache entries left: {cached:?}");
    }

    /// Undo whatever a run left on the machine (idempotent; also runs on drop).
    fn cleanup(&self) {
        let _ = self.podman(&["rm", "-a", "-f", "-t", "0"]);
        // Links and routes into the pool: only if a plugin DEL failed.
        if let Ok(routes) = Command::new("ip").args(["-4", "route", "show", "root", &self.pool]).output() {
            for line in String::from_utf8_lossy(&routes.stdout).lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let Some(dev) = words.iter().position(|w| *w == "dev").and_then(|i| words.get(i + 1)) {
                    if dev.starts_with("cali") {
                        let _ = Command::new("ip").args(["link", "del", dev]).status();
                    }
                }
                let _ = Command::new("ip").args(["route", "del", words[0]]).stderr(Stdio::null()).status();
            }
        }
        remove_cgroups(&self.cgroup);
        let now = Machine::now();
        for n in now.netns.difference(&self.before.netns).filter(|n| n.starts_with("netns-")) {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        remove_new_chains("iptables", &self.before.nat4);
        remove_new_chains("ip6tables", &self.before.nat6);
        for (table, save) in [("table ip nat", "iptables-save"), ("table ip6 nat", "ip6tables-save")] {
            let rules = Command::new(save).args(["-t", "nat"]).output().map(|o| text(&o)).unwrap_or_default();
            let empty = !rules.lines().any(|l| l.starts_with("-A ") || (l.starts_with(':') && !builtin(l)));
            if empty && !self.before.tables.contains(table) && Machine::now().tables.contains(table) {
                let words: Vec<&str> = table.split_whitespace().collect();
                let _ = Command::new("nft").args(["delete", words[0], words[1], words[2]]).status();
            }
        }
        // calico-cni's own table (crates/firewall): podman runs the plugins in the machine's
        // netns, so the ADDs made it there. Remove it if it is new; else only this pool's
        // elements (the pools stay in the sets by design: calico-node owns them).
        if !self.before.tables.contains(CALICO_TABLE) {
            if Machine::now().tables.contains(CALICO_TABLE) {
                let _ = Command::new("nft").args(["delete", "table", "inet", "calico"]).status();
            }
        } else {
            for set in ["all-pools4", "masq-pools4"] {
                let element = format!("{{ {} }}", self.pool);
                let _ = Command::new("nft")
                    .args(["delete", "element", "inet", "calico", set, &element])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // calico-cni's profile table (crates/firewall/src/policy.rs), if these ADDs made it.
        if !self.before.tables.contains(POLICY_TABLE) && Machine::now().tables.contains(POLICY_TABLE) {
            let _ = Command::new("nft").args(["delete", "table", "inet", "calico-policy"]).status();
        }
        if !self.before.cni_cache {
            // Only when empty: podman's libcni cache (not configurable) that it created.
            let _ = std::fs::remove_dir("/var/lib/cni/results");
            let _ = std::fs::remove_dir("/var/lib/cni");
        }
        if !self.before.runc_root {
            let _ = std::fs::remove_dir("/run/runc");
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn builtin(chain_line: &str) -> bool {
    ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"].iter().any(|c| chain_line.starts_with(&format!(":{c} ")))
}

/// rmdir the cgroup `name` (and its children) in every hierarchy, retrying while it empties.
fn remove_cgroups(name: &str) {
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for root in roots.flatten() {
        let top = root.path().join(name);
        if !top.is_dir() {
            continue;
        }
        let mut stack = vec![top];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&d) {
                stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            dirs.push(d);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for d in dirs.iter().rev() {
        while std::fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Remove nat chains named CNI-* that were not there `before`, and the rules jumping to them.
fn remove_new_chains(tool: &str, before: &BTreeSet<String>) {
    let new: Vec<String> = nat_chains(tool).difference(before).filter(|c| c.starts_with("CNI-")).cloned().collect();
    if new.is_empty() {
        return;
    }
    let rules = Command::new(tool).args(["-w", "-t", "nat", "-S"]).output().unwrap();
    for rule in String::from_utf8_lossy(&rules.stdout).lines() {
        let Some(spec) = rule.strip_prefix("-A ") else {
            continue;
        };
        let words: Vec<&str> = spec.split_whitespace().collect();
        let jumps_to_new = words.windows(2).any(|w| w[0] == "-j" && new.iter().any(|c| c == w[1]));
        if jumps_to_new && !new.iter().any(|c| c == words[0]) {
            // Re-split with the quoting iptables -S uses (comments are quoted).
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &format!("{tool} -w -t nat -D {spec}")]);
            let _ = cmd.status();
        }
    }
    for c in &new {
        let _ = Command::new(tool).args(["-w", "-t", "nat", "-F", c]).status();
    }
    for c in &new {
        let _ = Command::new(tool).args(["-w", "-t", "nat", "-X", c]).status();
    }
}

/// calico-cni turns host forwarding on at ADD (as Calico does); podman runs it in the
/// machine's own netns, so after the first container it must be on there.
fn assert_forwarding() {
    let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    assert_eq!(fwd.trim(), "1", "calico-cni's ADD should have turned net.ipv4.ip_forward on");
}

/// A shell line that sends `msg` to `addr:port` with `nc` (the command given), retried for
/// about 5 s: the listener starts again after each connection (`while true; do nc -l ...`),
/// and a connection that falls in between is refused.
fn send_line(nc: &str, msg: &str, addr: &str, port: u16) -> String {
    format!("for i in 1 2 3 4 5 6 7 8 9 10; do echo {msg} | {nc} -w 2 {addr} {port} && exit 0; sleep 0.5; done; exit 1")
}

#[test]
fn containers_get_pool_addresses_and_reach_the_host_and_each_other() {
    let p = Podman::new(1);
    let host = HostAddr::new("10.199.255.1");
    let a = p.start(&[], &["sleep", "300"]);
    assert_forwarding();
    let a_ip = p.addr(&a);
    assert!(p.in_pool(a_ip), "{a_ip} is not in {}", p.pool);
    let script =
        format!("ip -4 -o addr show eth0 && ip -4 route && ping -c 1 -W 2 {} && ping -c 1 -W 2 {a_ip}", host.addr);
    let out = p.run(&[], &["sh", "-c", &script]);
    let got = text(&out);
    assert!(out.status.success(), "second container: {got}");
    assert!(got.contains("default via 169.254.1.1 dev eth0"), "{got}");
    let b_ip: Ipv4Addr = got
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|c| c.trim_end_matches("/32").parse().ok())
        .unwrap_or_else(|| panic!("no address in {got}"));
    assert!(p.in_pool(b_ip) && b_ip != a_ip, "{b_ip} (A is {a_ip})");
    assert_eq!(got.matches("1 packets received").count(), 2, "pings to the host and to A: {got}");
    p.remove(&a);
    p.assert_nothing_left("after podman rm");
    drop(host);
}

#[test]
fn host_port_reaches_the_container_through_chained_portmap() {
    let p = Podman::new(2);
    let host = HostAddr::new("10.199.255.2");
    let server = p.nc_server();
    let (port, server_ip) = (server.port, server.ip);
    let received = || server.received();
    let wait_for = |msg: &str| server.wait_for(msg);

    // The container-facing path: another container to the host's address (PREROUTING DNAT),
    // retried while the listener starts.
    let send = send_line("nc", "from-container", &host.addr, port);
    let out = p.run(&[], &["sh", "-c", &send]);
    assert!(out.status.success(), "client container: {}", text(&out));
    assert!(
        wait_for("from-container"),
        "container -> {}:{port} did not reach {server_ip}:80: {:?}",
        host.addr,
        received()
    );

    // From the machine itself, to the same address (OUTPUT DNAT) and to 127.0.0.1 (portmap's
    // route_localnet + masquerade path).
    for (addr, msg) in [(host.addr.as_str(), "from-host"), ("127.0.0.1", "from-localhost")] {
        let script = send_line("busybox nc", msg, addr, port);
        let out = Command::new("sh").args(["-c", &script]).output().expect("sh");
        assert!(out.status.success(), "nc {addr} {port}: {}", text(&out));
        assert!(wait_for(msg), "{addr}:{port} did not reach {server_ip}:80: {:?}", received());
    }

    let nat = Command::new("iptables").args(["-w", "-t", "nat", "-S"]).output().unwrap();
    let nat = String::from_utf8_lossy(&nat.stdout);
    assert!(nat.contains(&format!("--to-destination {server_ip}:80")), "no DNAT to the container:\n{nat}");
    p.remove(&server.name);
    p.assert_nothing_left("after podman rm");
    p.cleanup();
    let after = Machine::now();
    assert_eq!(
        (after.nat4, after.nat6, after.tables),
        (p.before.nat4.clone(), p.before.nat6.clone(), p.before.tables.clone()),
        "nat chains and tables not restored"
    );
    drop(host);
}

/// An "outside" netns (the internet) joined to the machine by a veth pair of ours: its end in
/// the machine holds `host` (/32, "the host's address"), the outside end `outside`, each
/// routed to the other by a /32 route on the pair. The link (and so its routes) goes on drop.
struct Outside {
    ns: calico_tests::netns::Netns,
    link: String,
    host: String,
    addr: String,
}

impl Outside {
    fn new(host: &str, outside: &str) -> Outside {
        let ns = calico_tests::netns::Netns::new("edout");
        let link = unique("edo");
        ip(&["link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns.name]);
        let o = Outside { ns, link, host: host.to_owned(), addr: outside.to_owned() };
        ip(&["addr", "add", &format!("{host}/32"), "dev", &o.link]);
        ip(&["link", "set", &o.link, "up"]);
        ip(&["route", "add", &format!("{outside}/32"), "dev", &o.link]);
        o.ns.ip(&["addr", "add", &format!("{outside}/32"), "dev", "eth0"]);
        o.ns.ip(&["link", "set", "eth0", "up"]);
        o.ns.ip(&["route", "add", &format!("{host}/32"), "dev", "eth0"]);
        o.ns.ip(&["route", "add", "default", "via", host, "dev", "eth0", "onlink"]);
        o
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.link]).stderr(Stdio::null()).status();
    }
}

#[test]
fn host_port_mapped_by_calico_cni_alone_from_outside_the_host_and_hairpin() {
    let p = Podman::native(4);
    let out = Outside::new("10.199.255.4", "10.199.254.4");
    // The seed's flow under profiles (issue 13): the mapped port is open to the outside once
    // the network's profile allows inbound TCP to the container's port. No calico-node runs
    // here, so the rule is in before the ADD that programs the profile.
    p.store.ctl(&["profile", "add", &p.net]).success();
    p.store.ctl(&["profile", &p.net, "rule", "add", "inbound", "allow", "tcp", "to", "ports", "80"]).success();
    let server = p.nc_server();
    let (port, server_ip) = (server.port, server.ip);
    let received = || server.received();
    let wait_for = |msg: &str| server.wait_for(msg);
    let table = Command::new("nft").args(["list", "table", "inet", "calico"]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.lines().any(|l| l.contains(&format!("tcp . {port} ")) && l.contains(&format!(": {server_ip} . 80"))),
        "no map element to the container:\n{table}"
    );
    let nat = Command::new("iptables").args(["-w", "-t", "nat", "-S"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&nat.stdout).contains("CNI-DN-"), "portmap ran: it is not in the conflist");

    // From the outside netns to the host's address (prerouting DNAT), retried while the
    // listener starts.
    let to: std::net::SocketAddr = format!("{}:{port}", out.host).parse().unwrap();
    let sent = out.ns.run_in(|| {
        use std::io::Write;
        for _ in 0..20 {
            if let Ok(mut c) = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                let peer = c.local_addr().unwrap();
                c.write_all(format!("from-outside {peer}\n").as_bytes()).unwrap();
                return Some(peer);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        None
    });
    let sent = sent.unwrap_or_else(|| panic!("outside -> {to} never connected"));
    assert_eq!(sent.ip().to_string(), out.addr);
    assert!(wait_for("from-outside"), "outside -> {to} did not reach {server_ip}:80: {:?}", received());

    // From the machine itself (output DNAT), and hairpin: the container to its own mapping.
    let script = send_line("busybox nc", "from-host", &out.host, port);
    let sh = Command::new("sh").args(["-c", &script]).output().expect("sh");
    assert!(sh.status.success(), "nc {}:{port}: {}", out.host, text(&sh));
    assert!(wait_for("from-host"), "host -> {}:{port}: {:?}", out.host, received());
    let script = send_line("busybox nc", "from-localhost", "127.0.0.1", port);
    let sh = Command::new("sh").args(["-c", &script]).output().expect("sh");
    assert!(sh.status.success(), "nc 127.0.0.1:{port}: {}", text(&sh));
    assert!(wait_for("from-localhost"), "host -> 127.0.0.1:{port}: {:?}", received());
    let hairpin = send_line("nc", "from-itself", &out.host, port);
    let ex = p.podman(&["exec", &server.name, "sh", "-c", &hairpin]);
    assert!(ex.status.success(), "hairpin: {}", text(&ex));
    assert!(wait_for("from-itself"), "hairpin to {}:{port}: {:?}", out.host, received());

    p.remove(&server.name);
    p.assert_nothing_left("after podman rm");
    let table = Command::new("nft").args(["list", "table", "inet", "calico"]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(!table.contains(&format!("{server_ip} . ")), "a mapping or hairpin element left:\n{table}");
    drop(out);
}

#[test]
fn a_failed_run_leaves_nothing() {
    // The container's command does not exist: podman sets the network up, then tears it down.
    let p = Podman::new(3);
    let out = p.run(&[], &["/bin/no-such-command"]);
    assert!(!out.status.success(), "podman ran a command that does not exist: {}", text(&out));
    p.assert_nothing_left("after a failed run");
}
