//! Throwaway network namespaces for the dataplane tests: a "host" netns the plugins run in
//! (with an uplink, so proxy ARP has a default route to answer for) and "container"
//! namespaces. Everything is deleted on drop, also when the test fails.

use std::process::{Command, Output, Stdio};

use crate::{unique, Invocation, Outcome};

/// `ip ARGS...`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Run a command inside the namespace.
    pub fn exec(&self, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec")
    }

    /// Ping `target` from inside this namespace (3 tries, short timeouts).
    pub fn ping(&self, target: &str) -> bool {
        self.exec(&["ping", "-c", "1", "-W", "2", "-w", "4", target]).status.success()
    }

    pub fn sysctl(&self, key: &str) -> String {
        let out = self.exec(&["cat", &format!("/proc/sys/{}", key.replace('.', "/"))]);
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
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// Where the test host's uplink answers, for pings from containers to "the host".
pub const HOST_V4: &str = "10.255.255.1";
pub const HOST_V6: &str = "fd99::1";

/// A "host": a netns with an uplink veth (both ends local) holding the host's address and a
/// default route, as a real node has.
pub fn host() -> Netns {
    let h = Netns::new("ch");
    h.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    h.ip(&["addr", "add", "10.255.255.1/30", "dev", "up0"]);
    h.ip(&["-6", "addr", "add", "fd99::1/64", "dev", "up0", "nodad"]);
    h.ip(&["link", "set", "up0", "up"]);
    h.ip(&["link", "set", "up1", "up"]);
    h.ip(&["route", "add", "default", "via", "10.255.255.2"]);
    h.ip(&["-6", "route", "add", "default", "via", "fd99::2"]);
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

impl Invocation {
    /// Exec `plugin` inside the netns `host`, as a runtime living there would.
    pub fn run_in(&self, host: &Netns, plugin: &std::path::Path, stdin: &[u8]) -> Outcome {
        let mut cmd = self.command(std::path::Path::new("ip"));
        cmd.args(["netns", "exec", &host.name]).arg(plugin);
        crate::run_command(cmd, stdin)
    }
}

/// A CNI_PATH directory of links: our binaries (with `calico` for `calico-cni`, as the
/// installer makes it) and Debian's reference plugins.
pub struct CniBinDir {
    pub dir: tempfile::TempDir,
}

impl CniBinDir {
    pub fn new() -> CniBinDir {
        let dir = tempfile::Builder::new().prefix("calico-cnibin-").tempdir().expect("tempdir");
        let link = |name: &str, target: std::path::PathBuf| {
            std::os::unix::fs::symlink(target, dir.path().join(name)).expect("symlink");
        };
        for name in ["calico-cni", "calico-ipam"] {
            link(name, crate::bin(name));
        }
        link("calico", crate::bin("calico-cni"));
        if let Ok(entries) = std::fs::read_dir("/usr/lib/cni") {
            for e in entries.flatten() {
                link(&e.file_name().to_string_lossy(), e.path());
            }
        }
        CniBinDir { dir }
    }

    pub fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    pub fn plugin(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for CniBinDir {
    fn default() -> Self {
        Self::new()
    }
}
