//! Many calico-ipam processes at once, and processes killed mid-flight: no address handed
//! out twice, nothing leaked.

use std::collections::HashSet;
use std::io::Write;
use std::process::Child;
use std::time::{Duration, Instant};

use calico_tests::{bin, result_ips, Backend, Invocation};
use serde_json::json;

fn conf(backend: &Backend, node: &str) -> Vec<u8> {
    let mut c = json!({"cniVersion": "1.0.0", "name": "stress", "type": "calico", "nodename": node,
                       "ipam": {"type": "calico-ipam"}});
    backend.apply(&mut c);
    serde_json::to_vec(&c).unwrap()
}

fn spawn(inv: &Invocation, stdin: &[u8]) -> Child {
    let mut child = inv
        .command(&bin("calico-ipam"))
        .spawn()
        .expect("spawn calico-ipam");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child
}

/// A small deterministic generator: the seed is printed so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn sixty_four_concurrent_adds_get_distinct_addresses() {
    let backend = Backend::embedded();
    backend.ctl(&["pool", "add", "10.90.0.0/16"]).success();
    let stdin = conf(&backend, "node1");
    let children: Vec<Child> = (0..64)
        .map(|i| spawn(&Invocation::new("ADD", &format!("p{i}")), &stdin))
        .collect();
    let mut seen = HashSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ADD failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for ip in result_ips(&v) {
            assert!(seen.insert(ip.clone()), "{ip} handed out twice");
        }
    }
    assert_eq!(seen.len(), 64);
    assert_eq!(backend.used(), 64);
    let dels: Vec<Child> = (0..64)
        .map(|i| spawn(&Invocation::new("DEL", &format!("p{i}")), &stdin))
        .collect();
    for child in dels {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "DEL failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_eq!(backend.used(), 0);
    backend.assert_clean();
}

#[test]
fn kill_9_at_random_moments_leaks_nothing_after_del() {
    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill -9 test seed: {seed} (replay with KILL_SEED={seed})");
    let mut rng = Lcg(seed);
    for backend in Backend::all() {
        let name = backend.name();
        backend
            .ctl(&["pool", "add", "10.91.0.0/16", "--block-size", "28"])
            .success();
        let stdin = conf(&backend, "node1");
        for round in 0..4 {
            let ids: Vec<String> = (0..24).map(|i| format!("k{round}-{i}")).collect();
            let mut children: Vec<(Child, Duration)> = ids
                .iter()
                .map(|id| {
                    (
                        spawn(&Invocation::new("ADD", id), &stdin),
                        Duration::from_micros(rng.next(6000)),
                    )
                })
                .collect();
            let start = Instant::now();
            for (child, after) in children.iter_mut() {
                if rng.next(3) > 0 {
                    while start.elapsed() < *after {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    let _ = child.kill();
                }
            }
            // Those that had not finished yet died of the signal (no exit code).
            let killed = children
                .into_iter()
                .filter_map(|(mut c, _)| c.wait().ok())
                .filter(|s| s.code().is_none())
                .count();
            eprintln!("[{name}] round {round}: {killed} of 24 ADDs killed mid-flight");
            // The runtime retries DEL for every container whose ADD it lost.
            for id in &ids {
                Invocation::new("DEL", id)
                    .run(&bin("calico-ipam"), &stdin)
                    .expect_ok();
            }
            assert_eq!(backend.used(), 0, "[{name}] round {round} (seed {seed})");
            backend.assert_clean();
        }
    }
}
