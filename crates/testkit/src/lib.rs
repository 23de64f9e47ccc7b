//! The tests' harness, for every crate's tests and the `tests` crate (a dev-dependency only,
//! never published):
//! - [`netns`]: throwaway network namespaces (a "host" with an uplink, a bare host, containers,
//!   and a [`netns::Fabric`] bridging several hosts), removed on drop;
//! - [`etcd`]: real etcd members (one, or a cluster), on loopback or inside a netns, killed
//!   and their data removed on drop;
//! - [`vm`]: a command run under Debian's kernel in a qemu VM (virtme-ng), for what this
//!   machine's kernel lacks (IPIP).
//!
//! It knows none of the workspace's crates: it makes namespaces and starts processes, and
//! hands back names, paths and URLs, so that no crate's types come in two copies.

pub mod etcd;
pub mod netns;
pub mod vm;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A name unique to this process and call: `PREFIX<pid>x<n>`, for namespaces, links and
/// containers. Short enough for a link name (15 bytes) with a prefix of up to 3.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Run `cmd ARGS...`, panicking with its stderr on failure; its stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip ARGS...`, panicking with its stderr on failure; its stdout.
pub fn ip(args: &[&str]) -> String {
    run("ip", args)
}
