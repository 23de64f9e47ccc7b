//! Test harness: throwaway network namespaces, never the real host's.
//!
//! Every test makes its own "host" namespace (with an uplink veth and a
//! default route, as a real host has) and "container" namespaces, all named
//! `dp<pid>x<n><role>`, and runs its body on a thread that has entered the
//! test host namespace. Dropping the [`Lab`] deletes the namespaces, and with
//! them every link the test created, even when the test panics.

#![allow(dead_code)]

pub mod steps;

use std::{
    fs::File,
    os::fd::AsFd,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

use nix::sched::{setns, CloneFlags};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One `ip netns` namespace, deleted on drop.
pub struct TestNs {
    pub name: String,
    pub path: PathBuf,
}

impl TestNs {
    fn new(role: &str) -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("dp{}x{n}{role}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = TestNs { path: PathBuf::from(format!("/run/netns/{name}")), name };
        ns.ip(&["link", "set", "lo", "up"]);
        // A new netns inherits IPv4 settings from the machine's own netns: start every test
        // namespace from the kernel default instead, whatever the machine has.
        assert!(ns.exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=0"]));
        ns
    }

    /// `ip -n NAME args...`; panics on failure, returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `ip netns exec NAME cmd args...`, returning success.
    pub fn exec_ok(&self, cmd: &str, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args)
            .output()
            .map(|out| out.status.success())
            .unwrap_or(false)
    }

    /// Reads a sysctl in this namespace with `cat`, independently of the
    /// library under test.
    pub fn sysctl(&self, path: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "cat", &format!("/proc/sys/{path}")])
            .output()
            .expect("run ip netns exec");
        assert!(out.status.success(), "cannot read {path} in {}", self.name);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Pings `dst` from this namespace; a few attempts, since the first
    /// packet may race neighbour resolution. No timing is asserted.
    pub fn ping(&self, dst: &str) -> bool {
        (0..3).any(|_| self.exec_ok("ping", &["-c", "1", "-W", "2", dst]))
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(std::process::Stdio::null()).status();
    }
}

/// Runs a command, panicking with its stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawn command");
    assert!(out.status.success(), "{cmd} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test "host" namespace plus container namespaces.
pub struct Lab {
    pub host: TestNs,
    pub containers: Vec<TestNs>,
}

/// The test host's own address on its uplink (what containers ping).
pub const HOST_V4: &str = "192.0.2.1";
pub const HOST_V6: &str = "2001:db8::1";

impl Lab {
    /// A host namespace with an uplink and default routes, and `n` empty
    /// container namespaces.
    pub fn new(n: usize) -> Lab {
        let host = TestNs::new("h");
        // Proxy ARP only answers for destinations routed out of *another*
        // interface, so the host needs a default route, like a real one.
        host.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
        host.ip(&["addr", "add", &format!("{HOST_V4}/24"), "dev", "up0"]);
        host.ip(&["-6", "addr", "add", &format!("{HOST_V6}/64"), "dev", "up0", "nodad"]);
        host.ip(&["link", "set", "up0", "up"]);
        host.ip(&["link", "set", "up1", "up"]);
        host.ip(&["route", "add", "default", "via", "192.0.2.2", "dev", "up0"]);
        host.ip(&["-6", "route", "add", "default", "via", "2001:db8::2", "dev", "up0"]);
        let containers = (0..n).map(|i| TestNs::new(&format!("c{i}"))).collect();
        Lab { host, containers }
    }

    /// Runs `f` on a thread inside the test host namespace, propagating its
    /// panic (with the original message) to the test.
    pub fn in_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(&self.host.path).expect("open host netns");
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("enter host netns");
                f()
            });
            handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Lab {
    /// Runs `f` inside the test host namespace with that namespace and the first
    /// container's, each with its netlink client.
    pub fn with_host_and_container<T: Send>(
        &self,
        f: impl FnOnce(&dataplane::Namespace, &dataplane::Namespace) -> T + Send,
    ) -> T {
        let path = &self.containers[0].path;
        self.in_host(|| {
            let host = dataplane::Namespace::current().expect("host namespace");
            let container = dataplane::Namespace::open(path).expect("open c0");
            f(&host, &container)
        })
    }
}

/// Inode of the calling thread's network namespace.
pub fn thread_netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").expect("stat thread netns").ino()
}
