//! scripts/install.sh against temporary directories only (never /opt/cni/bin or
//! /etc/cni/net.d): a fresh install, an idempotent re-run, refusing to replace a conflist that
//! differs, --force, and bad usage.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use calico_tests::{bin_dir, run_command, Invocation, Outcome};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/install.sh");
const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../netconf-examples/cnitool-podman.conflist"
);
const BINS: [&str; 3] = ["calico-cni", "calico-ipam", "calicoctl"];

/// A throwaway bin dir and conf dir (inside one temp dir, so nothing else is touched).
struct Target {
    dir: tempfile::TempDir,
}

impl Target {
    fn new() -> Target {
        Target {
            dir: tempfile::Builder::new()
                .prefix("calico-install-")
                .tempdir()
                .unwrap(),
        }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("opt/cni/bin")
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("etc/cni/net.d")
    }

    fn conflist(&self) -> PathBuf {
        self.conf().join("10-calico.conflist")
    }

    /// install.sh with the target dirs, the binaries these tests were built with, and `extra`.
    fn install(&self, extra: &[&str]) -> Outcome {
        let (bin, conf, from) = (self.bin(), self.conf(), bin_dir());
        let mut args: Vec<&str> = vec![
            "--bin-dir",
            bin.to_str().unwrap(),
            "--conf-dir",
            conf.to_str().unwrap(),
        ];
        args.extend_from_slice(&["--from", from.to_str().unwrap()]);
        args.extend_from_slice(extra);
        script(&args)
    }

    /// Every file under the temp dir with its inode and mtime, to prove a run changed nothing.
    fn snapshot(&self) -> Vec<(PathBuf, u64, i64, i64)> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                }
                out.push((e.path(), m.ino(), m.mtime(), m.mtime_nsec()));
            }
        }
        out.sort();
        out
    }
}

fn script(args: &[&str]) -> Outcome {
    let mut cmd = Command::new("bash");
    cmd.arg(SCRIPT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_command(cmd, b"")
}

fn assert_installed(t: &Target) {
    for b in BINS {
        let dest = t.bin().join(b);
        let mode = std::fs::metadata(&dest)
            .unwrap_or_else(|e| panic!("{}: {e}", dest.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{}", dest.display());
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(bin_dir().join(b)).unwrap(),
            "{b} differs from the build"
        );
    }
    assert_eq!(
        std::fs::read_link(t.bin().join("calico")).unwrap(),
        Path::new("calico-cni")
    );
    assert_eq!(
        std::fs::read_to_string(t.conflist()).unwrap(),
        std::fs::read_to_string(EXAMPLE).unwrap()
    );
    // The installed `calico` answers as a CNI plugin.
    let version = Invocation::new("VERSION", "")
        .run(&t.bin().join("calico"), br#"{"cniVersion":"1.0.0"}"#)
        .expect_ok();
    assert!(
        version["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&"1.0.0".into())),
        "{version}"
    );
    // No temporary files left beside them.
    for dir in [t.bin(), t.conf()] {
        let stray: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().starts_with('.')
                    || e.file_name().to_string_lossy().contains(".tmp.")
            })
            .map(|e| e.file_name())
            .collect();
        assert!(
            stray.is_empty(),
            "{}: temporary files left: {stray:?}",
            dir.display()
        );
    }
}

#[test]
fn fresh_install_then_an_idempotent_rerun() {
    let t = Target::new();
    let out = t.install(&[]);
    assert!(out.ok(), "{out:#?}");
    assert_installed(&t);
    assert!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("installed"))
            .count()
            == 4,
        "{}",
        out.stdout
    );

    let before = t.snapshot();
    let again = t.install(&[]);
    assert!(again.ok(), "{again:#?}");
    assert!(
        again.stdout.lines().all(|l| l.starts_with("unchanged")),
        "re-run changed something:\n{}",
        again.stdout
    );
    assert_eq!(again.stdout.lines().count(), 5, "{}", again.stdout);
    assert_eq!(t.snapshot(), before, "the re-run touched files");
    assert_installed(&t);
}

#[test]
fn a_different_conflist_is_kept_unless_forced() {
    let t = Target::new();
    std::fs::create_dir_all(t.conf()).unwrap();
    let theirs =
        "{\"cniVersion\":\"1.0.0\",\"name\":\"theirs\",\"plugins\":[{\"type\":\"ptp\"}]}\n";
    std::fs::write(t.conflist(), theirs).unwrap();

    let out = t.install(&[]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("--force") && out.stderr.contains("10-calico.conflist"),
        "{out:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(t.conflist()).unwrap(),
        theirs,
        "the conflist was replaced"
    );
    assert!(
        !t.bin().exists(),
        "a refused install still installed binaries"
    );

    let forced = t.install(&["--force"]);
    assert!(forced.ok(), "{forced:#?}");
    assert!(forced.stdout.contains("replaced"), "{}", forced.stdout);
    assert_installed(&t);

    // --force with an identical file is still a no-op.
    let before = t.snapshot();
    assert!(t.install(&["--force"]).ok());
    assert_eq!(t.snapshot(), before);
}

#[test]
fn updates_changed_binaries_and_a_foreign_calico_link() {
    let t = Target::new();
    std::fs::create_dir_all(t.bin()).unwrap();
    std::fs::write(t.bin().join("calico-ipam"), b"#!/bin/sh\nexit 1\n").unwrap();
    std::os::unix::fs::symlink("/bin/false", t.bin().join("calico")).unwrap();
    let out = t.install(&[]);
    assert!(out.ok(), "{out:#?}");
    assert!(
        out.stdout.contains("updated") && out.stdout.contains("linked"),
        "{}",
        out.stdout
    );
    assert_installed(&t);
}

#[test]
fn conf_file_and_name_can_be_chosen() {
    let t = Target::new();
    let dual = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../netconf-examples/dual-stack.conflist"
    );
    let out = t.install(&["--conf-file", dual, "--conf-name", "20-dual.conflist"]);
    assert!(out.ok(), "{out:#?}");
    assert_eq!(
        std::fs::read(t.conf().join("20-dual.conflist")).unwrap(),
        std::fs::read(dual).unwrap()
    );
    assert!(!t.conflist().exists());
}

#[test]
fn help_and_bad_usage() {
    let help = script(&["--help"]);
    assert!(help.ok(), "{help:#?}");
    for opt in [
        "--bin-dir",
        "--conf-dir",
        "--conf-file",
        "--conf-name",
        "--from",
        "--force",
        "/opt/cni/bin",
        "/etc/cni/net.d",
    ] {
        assert!(
            help.stdout.contains(opt),
            "--help does not mention {opt}:\n{}",
            help.stdout
        );
    }
    let unknown = script(&["--bogus"]);
    assert_eq!(unknown.code, 2, "{unknown:#?}");
    assert!(unknown.stderr.contains("--bogus"), "{unknown:#?}");
    let no_value = script(&["--bin-dir"]);
    assert_eq!(no_value.code, 2, "{no_value:#?}");

    // Binaries missing from --from: an error naming them, and nothing installed.
    let t = Target::new();
    let empty = tempfile::tempdir().unwrap();
    let (bin, conf) = (t.bin(), t.conf());
    let out = script(&[
        "--from",
        empty.path().to_str().unwrap(),
        "--bin-dir",
        bin.to_str().unwrap(),
        "--conf-dir",
        conf.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("calico-cni"), "{out:#?}");
    assert!(
        !bin.exists() && !conf.exists(),
        "a failed install left files"
    );
}
