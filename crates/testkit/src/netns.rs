//! Throwaway network namespaces, never the machine's own: each is named [`unique`]ly after
//! its role, starts with `lo` up and IPv4 forwarding off (the kernel's defaults, whatever the
//! machine has), and is deleted on drop, also when the test panics; its links go with it.
//! - [`host`]: a netns playing the host, with an uplink and default routes, as a real node has;
//! - [`bare_host`]: a host with only loopback addresses and no default route;
//! - [`Fabric`]: a netns holding a bridge, joining several hosts on one L2 subnet.

use std::ffi::OsStr;
use std::fs::File;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

use crate::{ip, unique};

/// One `ip netns` namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new namespace named `ROLE<pid>x<n>`.
    pub fn new(role: &str) -> Netns {
        let name = unique(role);
        ip(&["netns", "add", &name]);
        // From here on, dropping `ns` deletes the namespace, whatever fails next.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        // A new netns takes its IPv4 settings from the machine's: start from the kernel's.
        let reset = ns.run_in(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "0"));
        reset.unwrap_or_else(|e| panic!("resetting ip_forward in {}: {e}", ns.name));
        ns
    }

    /// `/var/run/netns/NAME`, as runtimes pass it in `CNI_NETNS` (`/var/run` is a link to
    /// `/run`).
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// `ip -n NAME ARGS...`, panicking with its stderr on failure; its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// `ip netns exec NAME PROGRAM`, to add arguments to and spawn.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Run `argv` inside the namespace and wait for it.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let (program, args) = argv.split_first().expect("a command to run");
        self.command(program).args(args).stdin(Stdio::null()).output().expect("ip netns exec")
    }

    /// Ping `target` from inside this namespace: one answer within 4 s (a request a second),
    /// since the first may race neighbour resolution. No timing is asserted.
    pub fn ping(&self, target: &str) -> bool {
        self.exec(&["ping", "-c", "1", "-W", "2", "-w", "4", target]).status.success()
    }

    /// One ping of `target` from inside this namespace, answered within `wait` (at least
    /// 10 ms): for timing how soon something becomes reachable, in small steps.
    pub fn ping_once(&self, target: &str, wait: Duration) -> bool {
        let secs = format!("{:.3}", wait.as_secs_f64().max(0.01));
        self.exec(&["ping", "-c", "1", "-W", &secs, target]).status.success()
    }

    /// A sysctl of this namespace, read with `cat` (not with the code under test): `key` is
    /// a path under /proc/sys (`net/ipv4/ip_forward`) or, without a `/`, sysctl's dotted form.
    pub fn sysctl(&self, key: &str) -> String {
        let path = if key.contains('/') { key.to_owned() } else { key.replace('.', "/") };
        let out = self.exec(&["cat", &format!("/proc/sys/{path}")]);
        assert!(out.status.success(), "cannot read {key} in {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Names of the links in this namespace.
    pub fn links(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect()
    }

    /// Links whose name starts with `cali`.
    pub fn cali_links(&self) -> Vec<String> {
        self.links().into_iter().filter(|l| l.starts_with("cali")).collect()
    }

    /// Routes of both families, one per line.
    pub fn routes(&self) -> String {
        format!("{}{}", self.ip(&["-4", "route", "show"]), self.ip(&["-6", "route", "show"]))
    }

    /// Run `f` on a new thread that has entered this namespace (the thread ends with `f`, so
    /// it never has to switch back). A panic in `f` comes through with its own message.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(self.path()).unwrap_or_else(|e| panic!("opening {}: {e}", self.path()));
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("entering {}: {e}", self.name));
                f()
            });
            thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Never panics: a drop during a panic's unwinding must not abort the test binary.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// Where the test host's uplink answers, for pings from containers to "the host".
pub const HOST_V4: &str = "10.255.255.1";
pub const HOST_V6: &str = "fd99::1";

/// A "host": a netns with an uplink veth (both ends in it) holding the host's address and a
/// default route, as a real node has. Proxy ARP answers only for destinations routed out of
/// another interface, so the default route matters.
pub fn host() -> Netns {
    let h = Netns::new("ch");
    h.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    h.ip(&["addr", "add", &format!("{HOST_V4}/30"), "dev", "up0"]);
    h.ip(&["-6", "addr", "add", &format!("{HOST_V6}/64"), "dev", "up0", "nodad"]);
    h.ip(&["link", "set", "up0", "up"]);
    h.ip(&["link", "set", "up1", "up"]);
    h.ip(&["route", "add", "default", "via", "10.255.255.2", "dev", "up0"]);
    h.ip(&["-6", "route", "add", "default", "via", "fd99::2", "dev", "up0"]);
    h
}

/// The address of a [`bare_host`], on its loopback.
pub const BARE_HOST_V4: &str = "10.254.77.1";
pub const BARE_HOST_V6: &str = "fd98::1";

/// A "host" with no uplink and no default route: only loopback addresses (a /32 and a /128
/// on `lo`), so the host has no route to 169.254.1.1 for proxy ARP to answer with.
pub fn bare_host() -> Netns {
    let h = Netns::new("cb");
    h.ip(&["addr", "add", &format!("{BARE_HOST_V4}/32"), "dev", "lo"]);
    h.ip(&["-6", "addr", "add", &format!("{BARE_HOST_V6}/128"), "dev", "lo"]);
    h
}

/// One L2 subnet for multi-host tests: a netns holding a bridge `br0` with the fabric's own
/// address ([`Fabric::V4`], where an etcd for every host can listen), and one veth into it per
/// [`Fabric::join`]ed host. The subnet is the benchmarking range 198.18.0.0/24 (and
/// fd18::/64), which no test uses for pools. Every fabric has the same addresses: each is in
/// namespaces of its own.
pub struct Fabric {
    pub ns: Netns,
    joined: AtomicU32,
}

/// A host joined to a [`Fabric`]: its netns (the `Deref` target), whose `eth0` holds `v4`/24
/// and `v6`/64 on the fabric, with default routes via the fabric's address.
pub struct FabricHost {
    pub ns: Netns,
    pub v4: String,
    pub v6: String,
}

impl std::ops::Deref for FabricHost {
    type Target = Netns;

    fn deref(&self) -> &Netns {
        &self.ns
    }
}

impl Fabric {
    /// The fabric's own address on the bridge, and the hosts' default gateway.
    pub const V4: &'static str = "198.18.0.254";
    pub const V6: &'static str = "fd18::fe";

    pub fn new() -> Fabric {
        let ns = Netns::new("cf");
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["addr", "add", &format!("{}/24", Self::V4), "dev", "br0"]);
        ns.ip(&["-6", "addr", "add", &format!("{}/64", Self::V6), "dev", "br0", "nodad"]);
        ns.ip(&["link", "set", "br0", "up"]);
        Fabric { ns, joined: AtomicU32::new(0) }
    }

    /// A new host netns (role `role`) plugged into the bridge: the n-th gets 198.18.0.n and
    /// fd18::n (n from 1, at most 253 hosts).
    pub fn join(&self, role: &str) -> FabricHost {
        let n = self.joined.fetch_add(1, Ordering::Relaxed) + 1;
        assert!(n < 254, "a fabric holds at most 253 hosts");
        let ns = Netns::new(role);
        let port = format!("h{n}");
        self.ns.ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name]);
        self.ns.ip(&["link", "set", &port, "master", "br0", "up"]);
        let (v4, v6) = (format!("198.18.0.{n}"), format!("fd18::{n:x}"));
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
        ns.ip(&["-6", "addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", Self::V4, "dev", "eth0"]);
        ns.ip(&["-6", "route", "add", "default", "via", Self::V6, "dev", "eth0"]);
        FabricHost { ns, v4, v6 }
    }
}

impl Default for Fabric {
    fn default() -> Self {
        Self::new()
    }
}
