//! The store under hostile conditions, with the real binaries: a read-only or full file
//! system (in a private mount namespace, so the machine never sees the mount), umask 0,
//! planted symbolic links and loose modes, and etcd URLs holding credentials.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use calico_tests::{bin, run_command, Backend, Invocation, Outcome};
use serde_json::{json, Value};

/// A tmpfs mounted at `mnt` inside a mount namespace of its own, held by a child process
/// whose stdin is ours: when the test ends (or dies), the holder exits and the mount is gone.
struct PrivateTmpfs {
    holder: Child,
    pid: String,
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl PrivateTmpfs {
    fn new(size: &str) -> PrivateTmpfs {
        let dir = tempfile::Builder::new().prefix("calico-hard-").tempdir().expect("tempdir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let script = format!(
            "mount -t tmpfs -o size={size},mode=0755 calico-test '{}' && echo ready && exec cat",
            mnt.display()
        );
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "mounting the tmpfs failed");
        let pid = holder.id().to_string();
        PrivateTmpfs { holder, pid, _dir: dir, mnt }
    }

    fn db(&self) -> String {
        self.mnt.join("store.db").display().to_string()
    }

    /// `argv` run inside the namespace.
    fn command(&self, mut nsenter: Command, argv: &[&str]) -> Command {
        nsenter.args(["-t", &self.pid, "-m", "--"]).args(argv);
        nsenter
    }

    fn sh(&self, script: &str) -> Outcome {
        let cmd = self.command(Command::new("nsenter"), &["sh", "-c", script]);
        let out = run_command(cmd, b"");
        assert!(out.ok(), "{script}: {out:#?}");
        out
    }

    fn plugin(&self, inv: &Invocation, name: &str, stdin: &[u8]) -> Outcome {
        let plugin = bin(name);
        let cmd = self.command(inv.command(Path::new("nsenter")), &[plugin.to_str().unwrap()]);
        run_command(cmd, stdin)
    }

    fn ctl(&self, args: &[&str]) -> Outcome {
        let ctl = bin("calicoctl");
        let mut argv = vec![ctl.to_str().unwrap()];
        argv.extend_from_slice(args);
        let mut cmd = self.command(Command::new("nsenter"), &argv);
        cmd.env("CALICO_DATASTORE_PATH", self.db()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        run_command(cmd, b"")
    }

    fn used(&self) -> u64 {
        let v: Value = serde_json::from_str(&self.ctl(&["ipam", "show", "-o", "json"]).success().stdout).unwrap();
        v.as_array().unwrap().iter().filter_map(|p| p["used"].as_u64()).sum()
    }

    /// Fill the file system up to `pages_left` free pages.
    fn fill(&self, pages_left: u64) {
        let m = self.mnt.display();
        self.sh(&format!(
            "rm -f '{m}/fill'; n=$(( $(stat -f -c %a '{m}') - {pages_left} )); \
             [ $n -gt 0 ] && dd if=/dev/zero of='{m}/fill' bs=4096 count=$n 2>/dev/null; true"
        ));
    }

    fn unfill(&self) {
        self.sh(&format!("rm -f '{}/fill'", self.mnt.display()));
    }
}

impl Drop for PrivateTmpfs {
    fn drop(&mut self) {
        drop(self.holder.stdin.take());
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn ipam_conf(db: &str, dual: bool) -> Vec<u8> {
    let conf = json!({"cniVersion": "1.1.0", "name": "hardnet", "type": "calico-ipam",
                      "nodename": "node1", "datastore_path": db,
                      "ipam": {"type": "calico-ipam", "assign_ipv6": dual}});
    serde_json::to_vec(&conf).unwrap()
}

fn cni_conf(db: &str) -> Vec<u8> {
    let conf = json!({"cniVersion": "1.1.0", "name": "hardnet", "type": "calico",
                      "nodename": "node1", "datastore_path": db, "ipam": {"type": "calico-ipam"}});
    serde_json::to_vec(&conf).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o777
}

#[test]
fn status_is_50_when_the_store_cannot_take_writes() {
    let fs = PrivateTmpfs::new("4m");
    fs.ctl(&["pool", "add", "10.77.0.0/24"]).success();
    let status = Invocation::new("STATUS", "status");
    fs.plugin(&status, "calico-ipam", &ipam_conf(&fs.db(), false)).expect_ok();
    fs.plugin(&status, "calico-cni", &cni_conf(&fs.db())).expect_ok();

    // A read-only file system.
    fs.sh(&format!("mount -o remount,ro '{}'", fs.mnt.display()));
    let err = fs.plugin(&status, "calico-ipam", &ipam_conf(&fs.db(), false)).expect_err(50);
    assert!(err["details"].as_str().unwrap().contains("read-only"), "{err}");
    fs.plugin(&status, "calico-cni", &cni_conf(&fs.db())).expect_err(50);
    let add = fs.plugin(&Invocation::new("ADD", "ro"), "calico-ipam", &ipam_conf(&fs.db(), false));
    assert!(!add.ok(), "ADD on a read-only store succeeded: {add:#?}");
    fs.sh(&format!("mount -o remount,rw '{}'", fs.mnt.display()));
    fs.plugin(&status, "calico-ipam", &ipam_conf(&fs.db(), false)).expect_ok();

    // A read-only bind mount of the store's directory (root ignores permission bits).
    let m = fs.mnt.display();
    fs.sh(&format!("mount --bind '{m}' '{m}' && mount -o remount,bind,ro '{m}'"));
    fs.plugin(&status, "calico-ipam", &ipam_conf(&fs.db(), false)).expect_err(50);
    fs.plugin(&status, "calico-cni", &cni_conf(&fs.db())).expect_err(50);
    fs.sh(&format!("umount '{m}'"));
    fs.plugin(&status, "calico-ipam", &ipam_conf(&fs.db(), false)).expect_ok();

    // A full file system.
    fs.fill(0);
    let err = fs.plugin(&status, "calico-ipam", &ipam_conf(&fs.db(), false)).expect_err(50);
    assert!(err["details"].as_str().unwrap().contains("free"), "{err}");
    fs.plugin(&status, "calico-cni", &cni_conf(&fs.db())).expect_err(50);
    fs.unfill();
    fs.plugin(&status, "calico-cni", &cni_conf(&fs.db())).expect_ok();
    assert_eq!(fs.used(), 0);
}

/// An ADD on a nearly full disk either fails with 5 having taken nothing, or (its commit
/// fitted, a later write or its rollback did not) keeps an address under its handle; the DEL
/// after space returns releases it either way. Every amount of free space from none to 24
/// pages, dual-stack so that an ADD makes two commits.
#[test]
fn a_full_disk_leaves_nothing_that_del_cannot_release() {
    let fs = PrivateTmpfs::new("2m");
    fs.ctl(&["pool", "add", "10.78.0.0/24"]).success();
    fs.ctl(&["pool", "add", "fd00:78::/120"]).success();
    let conf = ipam_conf(&fs.db(), true);
    let (mut failed, mut kept) = (0, 0);
    for pages in 0..=24 {
        let id = format!("full{pages}");
        fs.fill(pages);
        let add = fs.plugin(&Invocation::new("ADD", &id), "calico-ipam", &conf);
        let del_full = fs.plugin(&Invocation::new("DEL", &id), "calico-ipam", &conf);
        fs.unfill();
        if !add.ok() {
            failed += 1;
            let code = add.json()["code"].as_u64();
            assert!(matches!(code, Some(5 | 11)), "{pages} pages free: {add:#?}");
            if fs.used() > 0 {
                kept += 1;
            }
        }
        if !del_full.ok() {
            del_full.expect_err(5);
        }
        fs.plugin(&Invocation::new("DEL", &id), "calico-ipam", &conf).expect_ok();
        assert_eq!(fs.used(), 0, "{pages} pages free: DEL after space returned left addresses");
    }
    eprintln!("full disk: {failed} ADDs failed, {kept} of them kept an address until DEL");
    assert!(failed > 0, "the disk never filled up");
    fs.ctl(&["ipam", "check"]).success();
}

#[test]
fn umask_0_gives_no_loose_modes() {
    for backend in Backend::all() {
        let dir = backend.dir().to_owned();
        let mut conf = json!({"cniVersion": "1.1.0", "name": "hardnet", "type": "calico-ipam",
                              "nodename": "node1", "ipam": {"type": "calico-ipam"}});
        backend.apply(&mut conf);
        let db = dir.join("new/store/s.db");
        let log = dir.join("logs/deep/cni.log");
        let lock = dir.join("run/calico/ipam.lock");
        conf["log_file_path"] = json!(log);
        if matches!(backend, Backend::Embedded(_)) {
            conf["datastore_path"] = json!(db);
            conf["ipam"].as_object_mut().unwrap().remove("lock_file");
        } else {
            conf["ipam"]["lock_file"] = json!(lock);
        }
        backend.ctl(&["pool", "add", "10.79.0.0/24"]);
        let stdin = serde_json::to_vec(&conf).unwrap();
        let inv = Invocation::new("ADD", "umask");
        let mut cmd = inv.command(Path::new("sh"));
        cmd.args(["-c", "umask 0; exec \"$0\""]).arg(bin("calico-ipam"));
        run_command(cmd, &stdin).expect_ok();
        let name = backend.name();
        assert_eq!(mode(&log), 0o600, "[{name}] log file");
        assert_eq!(mode(log.parent().unwrap()), 0o755, "[{name}] log directory");
        assert_eq!(mode(&dir.join("logs")), 0o755, "[{name}] log directory");
        if matches!(backend, Backend::Embedded(_)) {
            for f in ["s.db", "s.db-wal", "s.db-shm", "s.db.lock"] {
                assert_eq!(mode(&db.with_file_name(f)), 0o600, "[{name}] {f}");
            }
            assert_eq!(mode(db.parent().unwrap()), 0o700, "[{name}] store directory");
        } else {
            assert_eq!(mode(&lock), 0o600, "[{name}] lock file");
            assert_eq!(mode(lock.parent().unwrap()), 0o755, "[{name}] lock directory");
            let note = dir.join("run/calico/ipam.lock.node1.blocks");
            assert_eq!(mode(&note), 0o600, "[{name}] block note");
        }
        let mut cmd = inv.with_command("DEL").command(Path::new("sh"));
        cmd.args(["-c", "umask 0; exec \"$0\""]).arg(bin("calico-ipam"));
        run_command(cmd, &stdin).expect_ok();
    }
}

#[test]
fn loose_wal_and_shm_are_tightened_and_links_never_followed() {
    let backend = Backend::embedded();
    let db = PathBuf::from(match &backend {
        Backend::Embedded(d) => d.db(),
        _ => unreachable!(),
    });
    backend.ctl(&["pool", "add", "10.80.0.0/24"]).success();
    let conf = ipam_conf(db.to_str().unwrap(), false);
    let run = |command: &str| Invocation::new(command, "links").run(&bin("calico-ipam"), &conf);
    run("ADD").expect_ok();
    for f in ["store.db-wal", "store.db-shm"] {
        let path = db.with_file_name(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    run("CHECK").expect_ok();
    for f in ["store.db", "store.db-wal", "store.db-shm"] {
        assert_eq!(mode(&db.with_file_name(f)), 0o600, "{f} after CHECK");
    }

    // A datastore_path that is a link: refused, its target's mode untouched.
    let target = backend.dir().join("elsewhere.db");
    std::fs::write(&target, b"").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = backend.dir().join("link.db");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let linked = ipam_conf(link.to_str().unwrap(), false);
    Invocation::new("ADD", "viaLink").run(&bin("calico-ipam"), &linked).expect_err(5);
    Invocation::new("STATUS", "viaLink").run(&bin("calico-ipam"), &linked).expect_err(50);
    assert_eq!(mode(&target), 0o644, "the link's target was chmod'ed");
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 0, "the link's target was written");

    // A -wal planted as a link: refused too, the target untouched.
    run("DEL").expect_ok();
    let wal = db.with_file_name("store.db-wal");
    let _ = std::fs::remove_file(&wal);
    std::os::unix::fs::symlink(&target, &wal).unwrap();
    run("ADD").expect_err(5);
    assert_eq!(mode(&target), 0o644);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 0);
}

#[test]
fn the_block_note_never_writes_through_a_link() {
    let backend = Backend::etcd();
    backend.ctl(&["pool", "add", "10.81.0.0/24"]).success();
    let mut conf = json!({"cniVersion": "1.1.0", "name": "hardnet", "type": "calico-ipam",
                          "nodename": "node1", "ipam": {"type": "calico-ipam"}});
    backend.apply(&mut conf);
    let stdin = serde_json::to_vec(&conf).unwrap();
    let note = backend.dir().join("ipam.lock.node1.blocks");
    let target = backend.dir().join("precious");
    std::fs::write(&target, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&target, &note).unwrap();
    Invocation::new("ADD", "note").run(&bin("calico-ipam"), &stdin).expect_ok();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    let meta = std::fs::symlink_metadata(&note).unwrap();
    assert!(meta.is_file(), "the note replaced the link");
    assert_eq!(meta.mode() & 0o777, 0o600);
    Invocation::new("DEL", "note").run(&bin("calico-ipam"), &stdin).expect_ok();
    let leftovers: Vec<_> = std::fs::read_dir(backend.dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".blocks."))
        .collect();
    assert!(leftovers.is_empty(), "temporary notes left: {leftovers:?}");
}

#[test]
fn etcd_credentials_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("ipam.lock");
    for endpoints in ["http://calico:s3cr3tpw@127.0.0.1:9", "http://calico:s3cr3tpw@[::1"] {
        let conf = json!({"cniVersion": "1.1.0", "name": "hardnet", "type": "calico-ipam",
                          "nodename": "node1", "etcd_endpoints": endpoints, "log_level": "debug",
                          "ipam": {"type": "calico-ipam", "lock_file": lock}});
        let stdin = serde_json::to_vec(&conf).unwrap();
        for command in ["ADD", "DEL", "STATUS"] {
            let out = Invocation::new(command, "creds").run(&bin("calico-ipam"), &stdin);
            assert!(!out.ok(), "{command} with etcd down succeeded");
            for text in [&out.stdout, &out.stderr] {
                assert!(!text.contains("s3cr3tpw"), "{command} printed the password: {out:#?}");
                assert!(!text.contains("transport error: transport error"), "{command}: {out:#?}");
            }
        }
        let ctl = calico_tests::calicoctl(&[("ETCD_ENDPOINTS".into(), endpoints.into())], &["pool", "show"]);
        assert!(!ctl.ok());
        assert!(!ctl.stdout.contains("s3cr3tpw") && !ctl.stderr.contains("s3cr3tpw"), "{ctl:#?}");
    }
}
