//! A long-lived process (the node agent) deletes veths through the detached helper for
//! months: each deletion must leave no zombie and no mapping behind. Its own test binary, so
//! that no other test's threads change this process's mappings meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::Lab;
use dataplane::VethEnd;

/// Lines of /proc/self/maps: one per mapping.
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").expect("maps").lines().count()
}

/// Children of this process that have exited and wait to be reaped.
fn zombies() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .expect("proc")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let mut fields = rest.split_whitespace();
            fields.next() == Some("Z") && fields.next() == Some(me.as_str())
        })
        .count()
}

/// Waits until every helper has exited and been reaped.
fn settle() {
    let deadline = Instant::now() + Duration::from_secs(10);
    while detach::reap() > 0 {
        assert!(Instant::now() < deadline, "detached helpers still running after 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_thousand_detached_deletions_leave_no_zombie_and_no_mapping() {
    let lab = Lab::new(0);
    lab.in_host(|| {
        let host = dataplane::Namespace::current().expect("host netns");
        let nl = host.netlink();
        let cycle = |i: usize| {
            nl.create_veth(&VethEnd::host("calilong0", None), &VethEnd::container("calilong1", None), host.netns())
                .unwrap_or_else(|e| panic!("create veth {i}: {e}"));
            assert!(host.delete_link_detached("calilong0").expect("delete"), "deletion {i}");
            assert!(nl.link_by_name("calilong1").expect("get").is_none(), "peer gone at {i}");
        };
        // Warm up: the allocator, the helpers' registry, netlink buffers.
        for i in 0..10 {
            cycle(i);
        }
        settle();
        let (maps0, zombies0) = (mappings(), zombies());
        let mut most_running = 0;
        for i in 0..1000 {
            cycle(i);
            most_running = most_running.max(detach::reap());
            if i % 100 == 99 {
                // While deletions keep coming, only the helpers still in their RCU barrier
                // hold a mapping (two lines of maps each: guard page and stack), and never
                // more than the cap, however slow the kernel is: not one per deletion so far.
                let bound = maps0 + 2 * detach::MAX_RUNNING;
                assert!(mappings() <= bound, "mappings grew to {} from {maps0} after {i}", mappings());
            }
        }
        settle();
        assert!(most_running <= detach::MAX_RUNNING, "{most_running} helpers ran at once");
        assert_eq!(zombies(), zombies0, "zombies left behind");
        assert!(mappings() <= maps0 + 2, "mappings {} after 1000 deletions, {maps0} before", mappings());
        eprintln!("at most {most_running} helpers running at once; mappings {maps0} -> {}", mappings());
    });
}
