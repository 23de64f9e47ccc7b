//! scripts/install.sh against temporary directories only (never /opt/cni/bin, /etc/cni/net.d,
//! /usr/local/bin or /var/lib/calico: --prefix, and conflists whose datastore_path is a temp
//! file): a fresh install, an idempotent re-run, refusing to replace a conflist that differs,
//! --force, the pools the conflist names, calicoctl on the PATH, calico-node and its systemd
//! unit (whose command, run in a throwaway netns, finds the conflist's store), a missing
//! chained plugin, and bad usage.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use calico_tests::netns::Netns;
use calico_tests::{bin_dir, calicoctl, run_command, Invocation, Outcome};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/install.sh");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../netconf-examples/cnitool-podman.conflist");
const BINS: [&str; 3] = ["calico-cni", "calico-ipam", "calicoctl"];

/// A throwaway prefix (bin, conf and calicoctl dirs inside one temp dir, so nothing else is
/// touched), and beside it a store dir holding the embedded store the conflists name.
struct Target {
    dir: tempfile::TempDir,
    store: tempfile::TempDir,
}

impl Target {
    fn new() -> Target {
        let t = Target {
            dir: tempfile::Builder::new().prefix("calico-install-").tempdir().unwrap(),
            store: tempfile::Builder::new().prefix("calico-install-store-").tempdir().unwrap(),
        };
        std::fs::write(t.conf_src(), t.example(EXAMPLE)).unwrap();
        t
    }

    /// An example conflist with its datastore_path moved into the store dir.
    fn example(&self, path: &str) -> String {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains("/var/lib/calico/calico-store.db"), "{path}");
        text.replace("/var/lib/calico/calico-store.db", &self.db())
    }

    fn db(&self) -> String {
        self.store.path().join("calico-store.db").display().to_string()
    }

    /// The conflist installed by default (the podman example on the temp store).
    fn conf_src(&self) -> PathBuf {
        self.store.path().join("src.conflist")
    }

    fn ctl_link(&self) -> PathBuf {
        self.dir.path().join("usr/local/bin/calicoctl")
    }

    fn unit(&self) -> PathBuf {
        self.dir.path().join("etc/systemd/system/calico-node.service")
    }

    /// The pools in the temp store, as `calicoctl pool show -o json` lists them.
    fn pools(&self) -> Vec<String> {
        let out = calicoctl(&[], &["--datastore-path", &self.db(), "pool", "show", "-o", "json"]);
        assert!(out.ok(), "{out:#?}");
        out.json().as_array().unwrap().iter().map(|p| p["cidr"].as_str().unwrap().to_string()).collect()
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

    /// install.sh with the temp prefix, the binaries these tests were built with, the
    /// default conflist on the temp store (unless `extra` names one), and `extra`.
    fn install(&self, extra: &[&str]) -> Outcome {
        let (prefix, from, src) = (self.dir.path(), bin_dir(), self.conf_src());
        let mut args: Vec<&str> = vec!["--prefix", prefix.to_str().unwrap(), "--from", from.to_str().unwrap()];
        if !extra.contains(&"--conf-file") {
            args.extend_from_slice(&["--conf-file", src.to_str().unwrap()]);
        }
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
    cmd.arg(SCRIPT).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    run_command(cmd, b"")
}

fn assert_installed(t: &Target) {
    for b in BINS {
        let dest = t.bin().join(b);
        let mode = std::fs::metadata(&dest).unwrap_or_else(|e| panic!("{}: {e}", dest.display())).permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{}", dest.display());
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(bin_dir().join(b)).unwrap(),
            "{b} differs from the build"
        );
    }
    assert_eq!(std::fs::read_link(t.bin().join("calico")).unwrap(), Path::new("calico-cni"));
    assert_eq!(std::fs::read_to_string(t.conflist()).unwrap(), std::fs::read_to_string(t.conf_src()).unwrap());
    // calicoctl is on the PATH (a link to the installed one), and the conflist's pool exists.
    assert_eq!(std::fs::read_link(t.ctl_link()).unwrap(), t.bin().join("calicoctl"));
    // calico-node beside it, and its unit naming it and the conflist's store.
    let node = t.ctl_link().with_file_name("calico-node");
    assert!(std::fs::read(&node).unwrap() == std::fs::read(bin_dir().join("calico-node")).unwrap(), "calico-node");
    let unit = std::fs::read_to_string(t.unit()).unwrap();
    let exec = format!("ExecStart={} --health-listen 127.0.0.1:9099", node.display());
    assert!(unit.lines().any(|l| l.starts_with(&exec)), "{unit}");
    assert!(unit.contains(&format!("Environment=\"CALICO_DATASTORE_PATH={}\"\n", t.db())), "{unit}");
    assert!(unit.contains("[Install]\nWantedBy=multi-user.target"), "{unit}");
    assert_eq!(t.pools(), ["10.199.0.0/24"]);
    // The installed `calico` answers as a CNI plugin.
    let version = Invocation::new("VERSION", "").run(&t.bin().join("calico"), br#"{"cniVersion":"1.0.0"}"#).expect_ok();
    assert!(version["supportedVersions"].as_array().is_some_and(|v| v.contains(&"1.0.0".into())), "{version}");
    // No temporary files left beside them.
    for dir in [t.bin(), t.conf(), t.ctl_link().parent().unwrap().to_path_buf()] {
        let stray: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().starts_with('.') || e.file_name().to_string_lossy().contains(".tmp.")
            })
            .map(|e| e.file_name())
            .collect();
        assert!(stray.is_empty(), "{}: temporary files left: {stray:?}", dir.display());
    }
}

#[test]
fn fresh_install_then_an_idempotent_rerun() {
    let t = Target::new();
    let out = t.install(&[]);
    assert!(out.ok(), "{out:#?}");
    assert_installed(&t);
    assert!(out.stdout.lines().filter(|l| l.starts_with("installed")).count() == 6, "{}", out.stdout);
    assert!(out.stdout.contains("systemctl enable --now calico-node"), "{}", out.stdout);
    assert!(out.stdout.lines().filter(|l| l.starts_with("linked")).count() == 2, "{}", out.stdout);
    assert!(out.stdout.contains("created    pool 10.199.0.0/24"), "{}", out.stdout);

    let before = t.snapshot();
    let again = t.install(&[]);
    assert!(again.ok(), "{again:#?}");
    assert!(again.stdout.lines().all(|l| l.starts_with("unchanged")), "re-run changed something:\n{}", again.stdout);
    assert_eq!(again.stdout.lines().count(), 9, "{}", again.stdout);
    assert_eq!(t.snapshot(), before, "the re-run touched files");
    assert_installed(&t);
}

#[test]
fn a_different_conflist_is_kept_unless_forced() {
    let t = Target::new();
    std::fs::create_dir_all(t.conf()).unwrap();
    let theirs = "{\"cniVersion\":\"1.0.0\",\"name\":\"theirs\",\"plugins\":[{\"type\":\"ptp\"}]}\n";
    std::fs::write(t.conflist(), theirs).unwrap();

    let out = t.install(&[]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("--force") && out.stderr.contains("10-calico.conflist"), "{out:#?}");
    assert_eq!(std::fs::read_to_string(t.conflist()).unwrap(), theirs, "the conflist was replaced");
    assert!(!t.bin().exists(), "a refused install still installed binaries");

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
    assert!(out.stdout.contains("updated") && out.stdout.contains("linked"), "{}", out.stdout);
    assert_installed(&t);
}

#[test]
fn conf_file_and_name_can_be_chosen() {
    let t = Target::new();
    let dual = t.store.path().join("dual.conflist");
    std::fs::write(&dual, t.example(concat!(env!("CARGO_MANIFEST_DIR"), "/../netconf-examples/dual-stack.conflist")))
        .unwrap();
    let out = t.install(&["--conf-file", dual.to_str().unwrap(), "--conf-name", "20-dual.conflist"]);
    assert!(out.ok(), "{out:#?}");
    assert_eq!(std::fs::read(t.conf().join("20-dual.conflist")).unwrap(), std::fs::read(&dual).unwrap());
    assert!(!t.conflist().exists());
    // Both families' pools were created.
    let pools = t.pools();
    assert!(pools.len() == 2 && pools.iter().any(|p| p.contains(':')), "{pools:?}");
}

#[test]
fn help_and_bad_usage() {
    let help = script(&["--help"]);
    assert!(help.ok(), "{help:#?}");
    for opt in [
        "--prefix",
        "--bin-dir",
        "--conf-dir",
        "--ctl-dir",
        "--conf-file",
        "--conf-name",
        "--from",
        "--force",
        "--no-pool",
        "--no-node",
        "--unit-dir",
        "/etc/systemd/system",
        "/opt/cni/bin",
        "/etc/cni/net.d",
        "/usr/local/bin",
    ] {
        assert!(help.stdout.contains(opt), "--help does not mention {opt}:\n{}", help.stdout);
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
    let out = t.install(&["--from", empty.path().to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("calico-cni"), "{out:#?}");
    assert!(!bin.exists() && !conf.exists() && !t.ctl_link().exists(), "a failed install left files");
}

#[test]
fn the_installed_conflist_allocates_from_its_pool() {
    let t = Target::new();
    assert!(t.install(&[]).ok());
    // The conflist's calico plugin, as a runtime hands it to calico-ipam.
    let list: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(t.conflist()).unwrap()).unwrap();
    let mut conf = list["plugins"][0].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    conf["ipam"]["lock_file"] = t.store.path().join("ipam.lock").display().to_string().into();
    let stdin = serde_json::to_vec(&conf).unwrap();
    let ipam = t.bin().join("calico-ipam");
    let add = Invocation::new("ADD", "install-check").path(t.bin().to_str().unwrap());
    let result = add.run(&ipam, &stdin).expect_ok();
    let ip = result["ips"][0]["address"].as_str().unwrap_or_default().to_string();
    assert!(ip.starts_with("10.199.0."), "{result}");
    add.with_command("DEL").run(&ipam, &stdin).success();
}

#[test]
fn no_pool_leaves_the_store_alone() {
    let t = Target::new();
    let out = t.install(&["--no-pool"]);
    assert!(out.ok(), "{out:#?}");
    assert!(!out.stdout.contains("pool"), "{}", out.stdout);
    assert!(!Path::new(&t.db()).exists(), "--no-pool created the store");
}

#[test]
fn a_missing_chained_plugin_is_refused_before_anything_is_installed() {
    let t = Target::new();
    let conf = t.store.path().join("chained.conflist");
    let text = t.example(EXAMPLE).replace("\"type\": \"portmap\"", "\"type\": \"calico-test-no-such-plugin\"");
    std::fs::write(&conf, text).unwrap();
    let out = t.install(&["--conf-file", conf.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("calico-test-no-such-plugin") && out.stderr.contains("/usr/lib/cni"), "{out:#?}");
    assert!(!t.bin().exists() && !t.conf().exists() && !t.ctl_link().exists(), "a refused install installed files");
    assert!(!Path::new(&t.db()).exists(), "a refused install created the store");

    // The default conflist's portmap is found where Debian puts it (or where the install goes).
    if Path::new("/usr/lib/cni/portmap").exists() {
        assert!(t.install(&[]).ok());
    }
}

/// The unit's Environment= pairs and ExecStart= words (install.sh writes no quoting but the
/// Environment lines' double quotes).
fn unit_command(unit: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut env = Vec::new();
    let mut argv = Vec::new();
    for line in unit.lines() {
        if let Some(pair) = line.strip_prefix("Environment=") {
            let (k, v) = pair.trim_matches('"').split_once('=').unwrap();
            env.push((k.to_owned(), v.to_owned()));
        } else if let Some(cmd) = line.strip_prefix("ExecStart=") {
            argv = cmd.split_whitespace().map(str::to_owned).collect();
        }
    }
    (env, argv)
}

#[test]
fn the_units_command_runs_calico_node_on_the_conflists_store() {
    let t = Target::new();
    let conf = t.store.path().join("named.conflist");
    let text =
        t.example(EXAMPLE).replacen("\"type\": \"calico\",", "\"type\": \"calico\", \"nodename\": \"unit-host\",", 1);
    assert!(text.contains("unit-host"), "{text}");
    std::fs::write(&conf, text).unwrap();
    let out = t.install(&["--conf-file", conf.to_str().unwrap()]);
    assert!(out.ok(), "{out:#?}");
    let unit = std::fs::read_to_string(t.unit()).unwrap();
    let (env, argv) = unit_command(&unit);
    assert!(env.contains(&("NODENAME".into(), "unit-host".into())), "{unit}");
    if !Path::new("/usr/sbin/bird").exists() && !Path::new("/usr/bin/bird").exists() {
        assert!(argv.contains(&"--bgp=none".to_string()) && out.stdout.contains("bird"), "{unit}\n{}", out.stdout);
    }

    // As systemd would start it (with --once, an MTU file of the test's own and no BGP), in a
    // host netns of its own (its health port is that netns's): it registers the node in the
    // store the conflist names.
    let (host, peer) = (Netns::new("unit"), Netns::new("unitpeer"));
    host.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &peer.name]);
    host.ip(&["addr", "add", "10.213.0.5/24", "dev", "eth0"]);
    host.ip(&["link", "set", "eth0", "up"]);
    let mut cmd = host.command(&argv[0]);
    cmd.args(&argv[1..]).arg("--once").arg("--mtu-file").arg(t.store.path().join("mtu"));
    if !argv.iter().any(|a| a == "--bgp=none") {
        cmd.arg("--bgp=none"); // not the machine's BIRD config
    }
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).envs(env);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let ran = run_command(cmd, b"");
    assert!(ran.ok(), "{ran:#?}");
    let nodes = calicoctl(&[], &["--datastore-path", &t.db(), "node", "show", "-o", "json"]);
    assert!(nodes.ok(), "{nodes:#?}");
    assert!(nodes.stdout.contains("unit-host") && nodes.stdout.contains("10.213.0.5"), "{nodes:#?}");
}

#[test]
fn no_node_installs_neither_calico_node_nor_its_unit() {
    let t = Target::new();
    let out = t.install(&["--no-node"]);
    assert!(out.ok(), "{out:#?}");
    assert!(!t.unit().exists() && !t.ctl_link().with_file_name("calico-node").exists(), "{}", out.stdout);
    assert!(!out.stdout.contains("calico-node"), "{}", out.stdout);

    // A unit of the operator's own is kept unless --force.
    std::fs::create_dir_all(t.unit().parent().unwrap()).unwrap();
    std::fs::write(t.unit(), "[Service]\nExecStart=/bin/true\n").unwrap();
    let kept = t.install(&[]);
    assert_eq!(kept.code, 1, "{kept:#?}");
    assert!(kept.stderr.contains("calico-node.service") && kept.stderr.contains("--force"), "{kept:#?}");
    assert_eq!(std::fs::read_to_string(t.unit()).unwrap(), "[Service]\nExecStart=/bin/true\n");
    assert!(t.install(&["--force"]).ok());
    assert!(std::fs::read_to_string(t.unit()).unwrap().contains("calico-node --health-listen"));
}
