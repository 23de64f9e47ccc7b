//! The netfilter socket keeper (crates/firewall/src/keeper.rs): after calico-cni's ADD or
//! DEL, one process of the host netns holds the plugins' netfilter sockets, listening on
//! `@calico-nft-keeper`, and lets them go and exits once nobody has handed it one for a
//! quarter of a second: nothing stays behind on a quiet host.

use std::time::{Duration, Instant};

use calico_tests::cni_host::CniHost;
use calico_tests::netns::{host, Netns};
use serde_json::json;

/// Whether `@calico-nft-keeper` is listening in `ns`.
fn keeper_listens(ns: &Netns) -> bool {
    let out = ns.exec(&["ss", "-xl"]);
    String::from_utf8_lossy(&out.stdout).contains("@calico-nft-keeper")
}

/// The processes of calico-cni (installed as `calico` too) whose network namespace is `ns`'s.
fn plugin_processes(ns: &Netns) -> Vec<String> {
    let target = std::fs::metadata(ns.path()).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let net = std::fs::metadata(entry.path().join("ns/net")).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        if matches!(comm.trim(), "calico" | "calico-cni") && net.is_ok_and(|i| i == target) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn one_keeper_holds_the_sockets_and_leaves_when_the_host_is_quiet() {
    let cni = CniHost::new(host(), &["10.79.0.0/24"], json!({"name": "keepnet"}));
    let conf = cni.conf("1.0.0", json!({}));
    let mut containers = Vec::new();
    for _ in 0..3 {
        let ns = Netns::new("kp");
        let add = cni.inv("ADD", &format!("kp-{}", ns.name), &ns);
        cni.run(&add, &conf).expect_ok();
        containers.push((ns, add));
    }
    assert!(keeper_listens(&cni.host), "no keeper right after three ADDs");
    let holders = plugin_processes(&cni.host);
    assert_eq!(holders.len(), 1, "one keeper for the three ADDs: {holders:?}");
    for (_, add) in &containers {
        cni.run(&add.with_command("DEL"), &conf).expect_ok();
    }
    let start = Instant::now();
    while (keeper_listens(&cni.host) || !plugin_processes(&cni.host).is_empty())
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!keeper_listens(&cni.host), "the keeper is still there 5 s after the last DEL");
    assert_eq!(plugin_processes(&cni.host), Vec::<String>::new(), "calico-cni processes left");
    eprintln!("the keeper left {:?} after the last DEL", start.elapsed());
    cni.assert_nothing_left("ADD and DEL with the keeper");
}
