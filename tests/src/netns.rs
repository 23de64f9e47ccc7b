//! The netns harness (`testkit::netns`, re-exported here) and what the plugins need in
//! one: running a plugin inside a host netns, and a CNI_PATH directory.

pub use testkit::ip;
pub use testkit::netns::*;

use crate::{Invocation, Outcome};

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
