//! A command run under Debian's own kernel in a qemu VM, for what this machine's kernel
//! cannot do (it has no `CONFIG_NET_IPIP`). virtme-ng (`vng`) boots the newest
//! `/boot/vmlinuz-*-amd64` under software emulation with the host's root filesystem as the
//! guest's (read-only, with writable overlays), so the binaries we built are there as they
//! are. Nothing is skipped: a missing `vng` or kernel fails the test, naming
//! `scripts/deps.sh`, which installs both.
//!
//! - [`Vm::run`] runs one command in the guest and hands back its exit status and output;
//!   a results directory is shared with the guest read-write ([`VmRun::results`]).
//! - [`run_this_test`] runs the calling `#[test]` again inside the guest, where
//!   [`in_guest`] is true: one boot for a whole scenario.
//!
//! Booting takes about 15 s (no KVM: with it, qemu aborts or hangs on these machines).

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// Set (to `1`) in the guest's environment by [`Vm::run`].
pub const GUEST_ENV: &str = "TESTKIT_VM_GUEST";
/// The results directory, as the guest sees it (the same path as on the host).
pub const RESULTS_ENV: &str = "TESTKIT_VM_RESULTS";

/// Whether this process runs inside a [`Vm`].
pub fn in_guest() -> bool {
    std::env::var_os(GUEST_ENV).is_some_and(|v| v == "1")
}

/// The kernel to boot: the newest `/boot/vmlinuz-*-amd64` (versions compared number by
/// number, never a hard-coded one).
pub fn kernel() -> PathBuf {
    let images = std::fs::read_dir("/boot").map(|d| {
        d.filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("vmlinuz-") && n.ends_with("-amd64"))
            .collect::<Vec<_>>()
    });
    let newest = images.unwrap_or_default().into_iter().max_by(|a, b| version_key(a).cmp(&version_key(b)));
    let name = newest.unwrap_or_else(|| {
        panic!("no /boot/vmlinuz-*-amd64: the VM tests boot Debian's kernel; run scripts/deps.sh (it installs linux-image-amd64)")
    });
    PathBuf::from("/boot").join(name)
}

/// `6.1.0-57-amd64` as `[6, 1, 0, 57]` (non-digits separate numbers), for ordering.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap_or(u64::MAX)).collect()
}

/// virtme-ng's `vng`: `VNG` if set, else on `PATH`, else pyenv's shims (pip installs it
/// there on these machines).
pub fn vng() -> PathBuf {
    if let Some(path) = std::env::var_os("VNG") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    let pyenv = std::env::var_os("PYENV_ROOT").map(PathBuf::from).unwrap_or_else(|| "/root/.pyenv".into());
    dirs.extend([pyenv.join("shims"), "/usr/local/bin".into()]);
    dirs.into_iter().map(|d| d.join("vng")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("vng (virtme-ng) is not installed: the VM tests need it and qemu-system-x86; run scripts/deps.sh")
    })
}

/// A VM to run commands in: one CPU, 1 GiB, a 300 s limit unless told otherwise. Each
/// [`Vm::run`] boots a fresh guest.
pub struct Vm {
    cpus: u32,
    memory_mib: u32,
    timeout: Duration,
    env: Vec<(String, String)>,
}

/// What one [`Vm::run`] produced.
pub struct VmRun {
    /// The command's exit status in the guest (`None`: killed by a signal).
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// From starting `vng` to its exit: boot, the command and shutdown.
    pub elapsed: Duration,
    /// The directory the guest could write, with `stdout`, `stderr` and `status` in it and
    /// whatever else the command wrote there; removed on drop.
    pub results: TempDir,
    console: String,
}

impl VmRun {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The end of the guest's console (kernel messages), for failure messages.
    pub fn console_tail(&self) -> String {
        tail(&self.console, 40)
    }

    /// Everything a failure message needs.
    pub fn report(&self) -> String {
        format!(
            "exit status {:?} after {:.1} s\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- console (end) ---\n{}",
            self.status,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr,
            self.console_tail()
        )
    }
}

impl Default for Vm {
    fn default() -> Self {
        Vm::new()
    }
}

impl Vm {
    pub fn new() -> Vm {
        Vm { cpus: 1, memory_mib: 1024, timeout: Duration::from_secs(300), env: Vec::new() }
    }

    pub fn cpus(mut self, n: u32) -> Vm {
        self.cpus = n;
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Vm {
        self.memory_mib = mib;
        self
    }

    /// The whole run's limit, boot included; past it the VM is killed and the test fails.
    pub fn timeout(mut self, limit: Duration) -> Vm {
        self.timeout = limit;
        self
    }

    /// An environment variable for the command (the guest does not inherit ours; it gets
    /// our `PATH`, `RUST_BACKTRACE` and `RUST_LOG`).
    pub fn env(mut self, key: &str, value: &str) -> Vm {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Boot the guest, run `argv` in it (in our current directory, stdin empty), and shut
    /// down. Panics when the guest cannot be booted or does not finish the command in time;
    /// the command's own failure is in [`VmRun::status`].
    pub fn run(&self, argv: &[impl AsRef<OsStr>]) -> VmRun {
        assert!(!argv.is_empty(), "Vm::run needs a command");
        let (vng, kernel) = (vng(), kernel());
        // The results dir lives in /tmp like every test's: the guest's /tmp is an overlay,
        // but a --rwdir is the host's directory itself.
        let results = tempfile::Builder::new().prefix("testkit-vm-").tempdir().expect("tempdir for the VM's results");
        let dir = results.path();
        let script = dir.join("run.sh");
        std::fs::write(&script, self.script(dir, argv)).expect("writing the guest's script");
        let console_path = dir.join("console.log");
        let console = std::fs::File::create(&console_path).expect("console log");

        let started = Instant::now();
        let mut cmd = Command::new(&vng);
        cmd.arg("--disable-kvm")
            .arg("--run")
            .arg(&kernel)
            .args(["--user", "root", "--cpus", &self.cpus.to_string(), "--memory", &format!("{}M", self.memory_mib)])
            .arg("--rwdir")
            .arg(dir)
            .arg("--exec")
            .arg(format!("sh {}", script.display()))
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("console log"))
            .stderr(console)
            // Its own process group, so that a timeout kills qemu too, and only what we started.
            .process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}; run scripts/deps.sh", vng.display()));
        let vng_status = loop {
            if let Some(status) = child.try_wait().expect("waiting for vng") {
                break status;
            }
            if started.elapsed() > self.timeout {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                let console = std::fs::read_to_string(&console_path).unwrap_or_default();
                let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
                panic!(
                    "the VM ({}) did not finish within {:?}; killed it\n--- stdout so far ---\n{}\n--- console (end) ---\n{}",
                    kernel.display(),
                    self.timeout,
                    tail(&stdout, 40),
                    tail(&console, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let elapsed = started.elapsed();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let console = read("console.log");
        let status = read("status");
        if status.is_empty() {
            panic!(
                "the VM ({}) did not run the command to its end (vng: {vng_status}, after {:.1} s)\n--- stdout ---\n{}\n--- console (end) ---\n{}",
                kernel.display(),
                elapsed.as_secs_f64(),
                tail(&read("stdout"), 40),
                tail(&console, 40)
            );
        }
        // sh reports a death by signal N as 128+N.
        let status = status.trim().parse::<i32>().ok().filter(|s| *s < 128);
        VmRun { status, stdout: read("stdout"), stderr: read("stderr"), elapsed, console, results }
    }

    /// The guest's script: the environment, our directory, `argv` with its output in `dir`,
    /// then its exit status in `dir/status` (written last: its presence means it finished).
    fn script(&self, dir: &Path, argv: &[impl AsRef<OsStr>]) -> String {
        let mut env = vec![(GUEST_ENV.to_owned(), "1".to_owned()), (RESULTS_ENV.to_owned(), dir.display().to_string())];
        for key in ["PATH", "RUST_BACKTRACE", "RUST_LOG"] {
            if let Ok(value) = std::env::var(key) {
                env.push((key.to_owned(), value));
            }
        }
        env.extend(self.env.iter().cloned());
        let cwd = std::env::current_dir().expect("current directory");
        let mut s = String::from("#!/bin/sh\n");
        for (key, value) in &env {
            let _ = writeln!(s, "export {key}={}", quote(value));
        }
        let _ = writeln!(s, "cd {} || exit 1", quote(&cwd.display().to_string()));
        let command: Vec<String> = argv.iter().map(|a| quote(&a.as_ref().to_string_lossy())).collect();
        let out = |name: &str| quote(&dir.join(name).display().to_string());
        let _ = writeln!(s, "{} </dev/null >{} 2>{}", command.join(" "), out("stdout"), out("stderr"));
        let _ = writeln!(s, "echo $? >{}.tmp && mv {0}.tmp {0}", out("status"));
        s
    }
}

/// Run the calling test (its full name, `module::test`) again inside a fresh guest, as
/// `<this test binary> --exact NAME --nocapture`, and panic with the guest's output unless
/// it passed there. Guards against a name that matches nothing: the guest must report one
/// test passed.
pub fn run_this_test(vm: &Vm, name: &str) -> VmRun {
    let exe = std::env::current_exe().expect("test executable path");
    let exe = exe.to_string_lossy();
    let run = vm.run(&[exe.as_ref(), "--exact", name, "--nocapture", "--test-threads=1"]);
    eprintln!("VM run of {name}: {:.1} s (boot included)", run.elapsed.as_secs_f64());
    assert!(run.success(), "{name} failed in the VM:\n{}", run.report());
    // `--exact` runs at most this one test: "1 passed" is it.
    let ok = "test result: ok. 1 passed;";
    assert!(run.stdout.contains(ok), "the VM did not report `{ok}` (a wrong test name?):\n{}", run.report());
    run
}

/// `s` in single quotes for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_kernel_by_number_not_by_text() {
        let mut names = ["vmlinuz-6.10.0-1-amd64", "vmlinuz-6.1.0-57-amd64", "vmlinuz-6.1.0-9-amd64"];
        names.sort_by_key(|n| version_key(n));
        assert_eq!(names, ["vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-57-amd64", "vmlinuz-6.10.0-1-amd64"]);
    }

    #[test]
    fn the_script_exports_runs_and_records_the_status_last() {
        let vm = Vm::new().env("K", "it's");
        let s = vm.script(Path::new("/tmp/r"), &["/bin/echo", "a b"]);
        assert!(s.contains("export TESTKIT_VM_GUEST='1'\n"), "{s}");
        assert!(s.contains("export TESTKIT_VM_RESULTS='/tmp/r'\n"), "{s}");
        assert!(s.contains(r"export K='it'\''s'"), "{s}");
        assert!(s.contains("'/bin/echo' 'a b' </dev/null >'/tmp/r/stdout' 2>'/tmp/r/stderr'\n"), "{s}");
        assert!(s.ends_with("echo $? >'/tmp/r/status'.tmp && mv '/tmp/r/status'.tmp '/tmp/r/status'\n"), "{s}");
    }

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
