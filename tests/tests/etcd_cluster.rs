//! calico-ipam on etcd as a cluster of hosts uses it: hosts racing each other for blocks, a
//! 3-member etcd losing members, client-certificate TLS, and the round trips one ADD costs.
//! Everything goes through the real `calico-ipam` and `calicoctl`, exec'd as a runtime does.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use calico_tests::etcd::{Certs, Etcd, EtcdCluster};
use calico_tests::{bin, calicoctl, result_ips, Invocation, Outcome};
use model::keys::{HANDLE_PREFIX as HANDLES, IPAM_HOST_PREFIX as AFFINITIES};
use serde_json::{json, Value};

/// These tests load both cores with hundreds of processes; one at a time keeps a busy
/// machine from starving another test's etcd into a leader election.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// How plugins and calicoctl reach the store: endpoints, TLS files, and a scratch dir that
/// holds each simulated host's lock file.
struct Site {
    endpoints: String,
    tls: Option<[(&'static str, PathBuf); 3]>,
    dir: tempfile::TempDir,
}

impl Site {
    fn new(endpoints: &str) -> Site {
        let dir = tempfile::Builder::new().prefix("calico-site-").tempdir().expect("tempdir");
        Site { endpoints: endpoints.into(), tls: None, dir }
    }

    fn with_tls(endpoints: &str, certs: &Certs) -> Site {
        let mut site = Site::new(endpoints);
        site.tls = Some([
            ("etcd_ca_cert_file", certs.ca()),
            ("etcd_cert_file", certs.client_cert()),
            ("etcd_key_file", certs.client_key()),
        ]);
        site
    }

    /// The netconf of host `node`, with its own host lock.
    fn conf(&self, node: &str, log_level: &str) -> Vec<u8> {
        let lock = self.dir.path().join(format!("{node}.lock"));
        let mut c = json!({"cniVersion": "1.1.0", "name": "etcdnet", "type": "calico", "nodename": node,
                           "log_level": log_level, "etcd_endpoints": self.endpoints,
                           "ipam": {"type": "calico-ipam", "lock_file": lock}});
        for (field, path) in self.tls.iter().flatten() {
            c[*field] = json!(path);
        }
        serde_json::to_vec(&c).unwrap()
    }

    fn ctl(&self, args: &[&str]) -> Outcome {
        let mut env = vec![("ETCD_ENDPOINTS".to_owned(), self.endpoints.clone())];
        for (field, path) in self.tls.iter().flatten() {
            env.push((field.to_ascii_uppercase(), path.display().to_string()));
        }
        calicoctl(&env, args)
    }

    fn used(&self) -> u64 {
        let v = self.ctl(&["ipam", "show", "-o", "json"]).expect_ok();
        v.as_array().map(|pools| pools.iter().filter_map(|p| p["used"].as_u64()).sum()).unwrap_or(0)
    }

    fn assert_clean(&self) {
        let out = self.ctl(&["ipam", "check"]);
        assert!(out.ok(), "ipam check is not clean: {out:#?}");
    }
}

fn ipam(inv: &Invocation, stdin: &[u8]) -> Outcome {
    inv.run(&bin("calico-ipam"), stdin)
}

fn spawn(inv: &Invocation, stdin: &[u8]) -> Child {
    let mut child = inv.command(&bin("calico-ipam")).spawn().expect("spawn calico-ipam");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child
}

/// `"10.100.0.16-28"` (the last segment of a block or affinity key) as (network, prefix).
fn block_cidr(segment: &str) -> (Ipv4Addr, u32) {
    let (ip, prefix) = segment.rsplit_once('-').expect("block segment");
    (ip.parse().expect("block address"), prefix.parse().expect("block prefix"))
}

fn contains((net, prefix): (Ipv4Addr, u32), ip: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net)
}

/// Block → the hosts holding an affinity for it, from the affinity keys in etcd.
fn affinities(keys: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Beside its affinities a host keeps one allocation cursor per family (a hint).
    for key in keys.iter().filter(|k| !k.ends_with("/cursor")) {
        // /calico/ipam/v2/host/<node>/ipv4/block/<cidr>
        let rest = key.strip_prefix(AFFINITIES).expect("affinity key");
        let parts: Vec<&str> = rest.split('/').collect();
        assert_eq!(parts.len(), 4, "unexpected affinity key {key}");
        out.entry(parts[3].to_owned()).or_default().push(parts[0].to_owned());
    }
    out
}

/// Start `per_host` ADDs on every host all at once (interleaved), then collect them:
/// host → its addresses. Every ADD must succeed.
fn add_all_at_once(site: &Site, hosts: &[String], per_host: usize) -> BTreeMap<String, Vec<Ipv4Addr>> {
    let confs: Vec<Vec<u8>> = hosts.iter().map(|h| site.conf(h, "info")).collect();
    let start = Instant::now();
    let mut children = Vec::new();
    for i in 0..per_host {
        for (h, host) in hosts.iter().enumerate() {
            children.push((host.clone(), spawn(&Invocation::new("ADD", &format!("{host}-c{i}")), &confs[h])));
        }
    }
    let mut ips: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    for (host, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ADD on {host} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let got = result_ips(&v);
        assert_eq!(got.len(), 1, "{v}");
        ips.entry(host).or_default().push(got[0].parse().unwrap());
    }
    eprintln!("{} concurrent ADDs on {} hosts took {:?}", per_host * hosts.len(), hosts.len(), start.elapsed());
    ips
}

/// DEL every container of `add_all_at_once`, all at once; each must succeed.
fn del_all_at_once(site: &Site, hosts: &[String], per_host: usize) {
    let mut children = Vec::new();
    for host in hosts {
        let conf = site.conf(host, "info");
        for i in 0..per_host {
            children.push(spawn(&Invocation::new("DEL", &format!("{host}-c{i}")), &conf));
        }
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "DEL failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn assert_distinct(ips: &BTreeMap<String, Vec<Ipv4Addr>>, expected: usize) {
    let mut seen = HashSet::new();
    for ip in ips.values().flatten() {
        assert!(seen.insert(*ip), "{ip} handed out twice");
    }
    assert_eq!(seen.len(), expected);
}

/// After DEL of everything: no handle, no allocation, nothing inconsistent.
fn assert_all_released(site: &Site, etcd: &Etcd) {
    assert_eq!(etcd.keys(HANDLES), Vec::<String>::new(), "handles left behind");
    assert_eq!(site.used(), 0);
    site.assert_clean();
}

#[test]
fn four_hosts_of_64_concurrent_adds_get_distinct_addresses_from_their_own_blocks() {
    let _serial = one_at_a_time();
    let etcd = Etcd::start();
    let site = Site::new(&etcd.client_url);
    site.ctl(&["pool", "add", "10.100.0.0/16", "--block-size", "28"]).success();
    let hosts: Vec<String> = (0..4).map(|h| format!("host{h}")).collect();

    let ips = add_all_at_once(&site, &hosts, 64);
    assert_distinct(&ips, 256);
    assert_eq!(site.used(), 256);
    let affine = affinities(&etcd.keys(AFFINITIES));
    for (block, owners) in &affine {
        assert_eq!(owners.len(), 1, "block {block} is affine to {owners:?}");
    }
    // Each host filled its own blocks before claiming another: 64 addresses, 4 blocks of 16.
    for host in &hosts {
        let n = affine.values().filter(|o| o[0] == *host).count();
        assert_eq!(n, 4, "{host} holds {n} blocks: {affine:?}");
    }
    for (host, addrs) in &ips {
        let own: Vec<(Ipv4Addr, u32)> =
            affine.iter().filter(|(_, o)| o[0] == *host).map(|(b, _)| block_cidr(b)).collect();
        for ip in addrs {
            assert!(own.iter().any(|b| contains(*b, *ip)), "{host} got {ip}, outside its blocks {own:?}");
        }
    }
    // calicoctl agrees: every block in use names one host.
    let show = site.ctl(&["ipam", "show", "-o", "json"]).expect_ok();
    let blocks = show[0]["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), affine.len(), "{show}");
    assert!(blocks.iter().all(|b| b["host"].is_string()), "{show}");
    site.assert_clean();

    del_all_at_once(&site, &hosts, 64);
    assert_all_released(&site, &etcd);
}

#[test]
fn hosts_borrow_when_the_pool_has_fewer_blocks_than_hosts() {
    let _serial = one_at_a_time();
    let etcd = Etcd::start();
    let site = Site::new(&etcd.client_url);
    // Two blocks of 16 for four hosts of 7 containers each: two hosts get no block at all.
    site.ctl(&["pool", "add", "10.101.0.0/27", "--block-size", "28"]).success();
    let hosts: Vec<String> = (0..4).map(|h| format!("host{h}")).collect();

    let ips = add_all_at_once(&site, &hosts, 7);
    assert_distinct(&ips, 28);
    assert_eq!(etcd.keys(&model::keys::block_prefix(4)).len(), 2);
    let affine = affinities(&etcd.keys(AFFINITIES));
    assert!(affine.values().all(|owners| owners.len() == 1), "{affine:?}");
    let borrowed: usize = ips
        .iter()
        .map(|(host, addrs)| {
            let own: Vec<(Ipv4Addr, u32)> =
                affine.iter().filter(|(_, o)| o[0] == *host).map(|(b, _)| block_cidr(b)).collect();
            addrs.iter().filter(|ip| !own.iter().any(|b| contains(*b, **ip))).count()
        })
        .sum();
    assert!(borrowed >= 14, "at least two hosts' addresses are borrowed, got {borrowed}");
    site.assert_clean();

    del_all_at_once(&site, &hosts, 7);
    assert_all_released(&site, &etcd);
}

#[test]
fn three_member_cluster_loses_a_member_then_all_of_them() {
    let _serial = one_at_a_time();
    let mut cluster = EtcdCluster::start(3);
    // The leader first: every process tries it first, so stopping it exercises both the
    // failover to the next endpoint and the election of a new leader.
    let leader = cluster.leader();
    let order: Vec<usize> = std::iter::once(leader).chain((0..3).filter(|&i| i != leader)).collect();
    let endpoints = order.iter().map(|&i| cluster.members[i].client_url.clone()).collect::<Vec<_>>().join(",");
    let site = Site::new(&endpoints);
    site.ctl(&["pool", "add", "10.102.0.0/24"]).success();
    let conf = site.conf("node1", "info");

    let mut held = HashSet::new();
    for i in 0..30 {
        if i == 10 {
            cluster.stop_member(leader);
        }
        let start = Instant::now();
        let out = ipam(&Invocation::new("ADD", &format!("c{i}")), &conf);
        assert!(out.ok(), "ADD {i} failed with {} of 3 members up: {out:#?}", cluster.running());
        if i == 10 {
            eprintln!("first ADD after the leader was stopped took {:?}", start.elapsed());
        }
        assert!(held.insert(result_ips(&out.json())[0].clone()));
    }

    for i in 0..3 {
        cluster.stop_member(i);
    }
    let start = Instant::now();
    let err = ipam(&Invocation::new("ADD", "down"), &conf).expect_err(11);
    let took = start.elapsed();
    eprintln!("ADD with every member down: code 11 after {took:?}: {}", err["msg"]);
    assert!(took < Duration::from_secs(5), "ADD took {took:?} to give up");
    let status = Invocation { container_id: String::new(), ifname: String::new(), ..Invocation::new("STATUS", "") };
    ipam(&status, &conf).expect_err(50);
    // DEL cannot release anything now: the runtime has to retry it later.
    let start = Instant::now();
    ipam(&Invocation::new("DEL", "c0"), &conf).expect_err(11);
    assert!(start.elapsed() < Duration::from_secs(5), "DEL took {:?} to give up", start.elapsed());

    for i in 0..3 {
        cluster.start_member(i);
    }
    // Nothing of the failed ADD, everything of the successful ones.
    let handles = cluster.keys(HANDLES);
    assert_eq!(handles.len(), 30, "{handles:?}");
    assert!(!handles.iter().any(|k| k.ends_with("etcdnet.down")), "{handles:?}");
    assert_eq!(site.used(), 30);
    site.assert_clean();
    ipam(&status, &conf).expect_ok();
    let again = ipam(&Invocation::new("ADD", "down"), &conf).expect_ok();
    assert!(held.insert(result_ips(&again)[0].clone()));

    for i in 0..30 {
        ipam(&Invocation::new("DEL", &format!("c{i}")), &conf).expect_ok();
    }
    ipam(&Invocation::new("DEL", "down"), &conf).expect_ok();
    assert_eq!(cluster.keys(HANDLES), Vec::<String>::new());
    assert_eq!(site.used(), 0);
    site.assert_clean();
}

#[test]
fn tls_with_client_certificates() {
    let _serial = one_at_a_time();
    let certs = Certs::generate();
    let etcd = Etcd::start_tls(&certs);
    assert!(etcd.client_url.starts_with("https://"));
    let site = Site::with_tls(&etcd.client_url, &certs);
    site.ctl(&["pool", "add", "10.103.0.0/24"]).success();
    let conf = site.conf("node1", "info");

    let add = Invocation::new("ADD", "tls1");
    let ips = result_ips(&ipam(&add, &conf).expect_ok());
    assert!(ips[0].starts_with("10.103.0."), "{ips:?}");
    ipam(&add.with_command("CHECK"), &conf).expect_ok();
    ipam(&add.with_command("DEL"), &conf).expect_ok();

    // The CA alone: the server refuses the connection without a client certificate.
    let mut no_client: Value = serde_json::from_slice(&conf).unwrap();
    let obj = no_client.as_object_mut().unwrap();
    obj.remove("etcd_cert_file");
    obj.remove("etcd_key_file");
    let out = ipam(&Invocation::new("ADD", "tls2"), &serde_json::to_vec(&no_client).unwrap());
    assert!(!out.ok(), "ADD without a client certificate succeeded: {out:#?}");
    let msg = out.json()["msg"].as_str().unwrap_or_default().to_ascii_lowercase();
    assert!(msg.contains("certificate") || msg.contains("tls"), "unclear error: {out:#?}");
    eprintln!("without a client certificate: code {}: {msg}", out.json()["code"]);

    assert_all_released(&site, &etcd);
}

/// The etcd requests of one process, from its debug log line `round_trips=N verb="V"`.
fn round_trips(out: &Outcome, verb: &str) -> u64 {
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("datastore round trips") && l.contains(&format!("verb=\"{verb}\"")))
        .unwrap_or_else(|| panic!("no round-trip count in the {verb} log: {out:#?}"));
    let n = line.split("round_trips=").nth(1).and_then(|r| r.split_whitespace().next());
    n.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unreadable round-trip count: {line}"))
}

#[test]
fn add_and_del_round_trips_are_counted_and_bounded() {
    let _serial = one_at_a_time();
    let etcd = Etcd::start();
    let site = Site::new(&etcd.client_url);
    site.ctl(&["pool", "add", "10.104.0.0/24"]).success();
    let conf = site.conf("node1", "debug");

    let first = round_trips(ipam(&Invocation::new("ADD", "rt0"), &conf).success(), "ADD");
    let steady: Vec<u64> =
        (1..5).map(|i| round_trips(ipam(&Invocation::new("ADD", &format!("rt{i}")), &conf).success(), "ADD")).collect();
    let repeat = round_trips(ipam(&Invocation::new("ADD", "rt1"), &conf).success(), "ADD");
    let del: Vec<u64> =
        (0..5).map(|i| round_trips(ipam(&Invocation::new("DEL", &format!("rt{i}")), &conf).success(), "DEL")).collect();
    let del_unknown = round_trips(ipam(&Invocation::new("DEL", "rt0"), &conf).success(), "DEL");
    eprintln!("round trips: first ADD {first}, steady ADD {steady:?}, repeated ADD {repeat}, DEL {del:?}, DEL of nothing {del_unknown}");
    // The first ADD claims a block (no note of the host's blocks yet); after it, the block is
    // read ahead in the first round trip (ipam::hint) and each call takes two.
    assert!(first <= 3, "first ADD (claims a block): {first}");
    assert!(steady.iter().all(|&n| n <= 2), "steady-state ADD: {steady:?}");
    assert!(del.iter().all(|&n| n <= 2), "DEL: {del:?}");
    assert!(repeat <= 2 && del_unknown <= 2, "repeated ADD {repeat}, DEL of nothing {del_unknown}");
    assert_all_released(&site, &etcd);
}
