//! The real table in a throwaway netns: each test runs on a thread of its own that unshares
//! its network namespace, which dies with the thread (nftables tables are per netns).

use std::process::Command;

use firewall::nft::Nftables;
use firewall::{Element, Error, Firewall, PoolSet, PortMap, Proto};

fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: changes only this thread's network namespace.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// `nft list table inet calico` as the kernel holds it (inspection only; the code under
/// test never execs).
fn nft_list() -> String {
    let out = Command::new("nft").args(["list", "table", "inet", "calico"]).output().expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn port(host_port: u16, target: &str, owner: &str) -> Element {
    Element::Port {
        map: PortMap { proto: Proto::Tcp, host_ip: None, host_port, target: target.parse().unwrap() },
        owner: owner.into(),
    }
}

#[test]
fn table_elements_conflicts_and_removal() {
    in_new_netns(|| {
        let fw = Nftables::new();
        assert_eq!(fw.list().unwrap(), vec![], "no table yet");
        let pool = Element::Pool { set: PoolSet::Masq, cidr: "10.65.0.0/16".parse().unwrap() };
        let all = Element::Pool { set: PoolSet::All, cidr: "10.65.0.0/16".parse().unwrap() };
        let all6 = Element::Pool { set: PoolSet::All, cidr: "fd65::/64".parse().unwrap() };
        assert_eq!(fw.missing(std::slice::from_ref(&pool)).unwrap(), vec![pool.clone()]);
        let mine = port(8080, "10.65.0.5:80", "c1/eth0");
        let hostip = Element::Port {
            map: PortMap {
                proto: Proto::Udp,
                host_ip: Some("192.0.2.1".parse().unwrap()),
                host_port: 53,
                target: "10.65.0.5:5353".parse().unwrap(),
            },
            owner: "c1/eth0".into(),
        };
        let v6 = Element::Port {
            map: PortMap { proto: Proto::Sctp, host_ip: None, host_port: 9, target: "[fd65::5]:99".parse().unwrap() },
            owner: "c1/eth0".into(),
        };
        let hairpin = Element::Hairpin { addr: "10.65.0.5".parse().unwrap(), owner: "c1/eth0".into() };
        let all_of_them =
            vec![pool.clone(), all.clone(), all6.clone(), mine.clone(), hostip.clone(), v6.clone(), hairpin.clone()];
        fw.add(&all_of_them).unwrap();
        let listing = nft_list();
        assert!(listing.contains("masquerade"), "{listing}");
        assert!(listing.contains("10.65.0.0/16"), "{listing}");
        assert!(listing.contains("c1/eth0"), "{listing}");
        let mut got = fw.list().unwrap();
        got.sort();
        let mut want = all_of_them.clone();
        want.sort();
        assert_eq!(got, want, "{listing}");
        assert_eq!(fw.missing(&all_of_them).unwrap(), vec![]);

        // The same key for another owner: refused, naming the holder, nothing added.
        let theirs = port(8080, "10.65.0.9:80", "c2/eth0");
        let other = port(8081, "10.65.0.9:80", "c2/eth0");
        let err = fw.add(&[other.clone(), theirs.clone()]).unwrap_err();
        assert!(matches!(&err, Error::PortTaken { holder, .. } if holder == "c1/eth0"), "{err}");
        assert!(err.to_string().contains("8080/tcp"), "{err}");
        assert_eq!(fw.missing(std::slice::from_ref(&other)).unwrap(), vec![other.clone()], "the batch added nothing");
        assert_eq!(fw.missing(std::slice::from_ref(&theirs)).unwrap(), vec![theirs.clone()]);

        // The same owner again (an ADD repeated after a crash): replaced.
        fw.add(std::slice::from_ref(&mine)).unwrap();
        // Removal by another owner leaves ours.
        fw.remove(&[theirs]).unwrap();
        assert_eq!(fw.missing(std::slice::from_ref(&mine)).unwrap(), vec![]);
        fw.remove(&[mine.clone(), hostip.clone(), v6.clone(), hairpin.clone(), pool.clone()]).unwrap();
        let mut left = fw.list().unwrap();
        left.sort();
        assert_eq!(left, vec![all.clone(), all6.clone()]);
        // Removing what is gone is no error; an ensured table is kept.
        fw.remove(&[mine, pool]).unwrap();
        fw.ensure_table().unwrap();
        assert!(fw.round_trips() > 0);
    });
}

#[test]
fn an_add_is_one_round_trip_once_the_table_exists() {
    in_new_netns(|| {
        let fw = Nftables::new();
        fw.ensure_table().unwrap();
        let before = fw.round_trips();
        let pool = Element::Pool { set: PoolSet::All, cidr: "10.66.0.0/24".parse().unwrap() };
        assert_eq!(fw.missing(&[pool.clone(), port(1, "10.66.0.2:1", "x")]).unwrap().len(), 2);
        fw.add(&[pool, port(1, "10.66.0.2:1", "x")]).unwrap();
        assert_eq!(fw.round_trips() - before, 2);
    });
}

#[test]
fn coexists_with_other_tables() {
    in_new_netns(|| {
        let st = Command::new("nft").args(["add", "table", "ip", "theirs"]).status().unwrap();
        assert!(st.success());
        let fw = Nftables::new();
        fw.add(&[port(80, "10.0.0.1:80", "a")]).unwrap();
        fw.remove(&[port(80, "10.0.0.1:80", "a")]).unwrap();
        let out = Command::new("nft").args(["list", "tables"]).output().unwrap();
        let tables = String::from_utf8_lossy(&out.stdout);
        assert!(tables.contains("table ip theirs") && tables.contains("table inet calico"), "{tables}");
    });
}

#[test]
fn a_table_of_another_version_is_replaced_and_ours_is_kept() {
    in_new_netns(|| {
        // An older build's table: no comment, and an element that goes with it.
        let old = "table inet calico {\n set all-pools4 {\n type ipv4_addr\n flags interval\n elements = { 10.67.0.0/24 }\n }\n}\n";
        let path = std::env::temp_dir().join(format!("calico-old-table-{}.nft", std::process::id()));
        std::fs::write(&path, old).unwrap();
        let made = Command::new("nft").arg("-f").arg(&path).output().expect("nft");
        let _ = std::fs::remove_file(&path);
        assert!(made.status.success(), "{made:?}");
        let fw = Nftables::new();
        assert!(fw.ensure_table().unwrap(), "another version's table is made again");
        let listing = nft_list();
        assert!(listing.contains("comment \"calico: pool sets and port maps"), "{listing}");
        assert!(listing.contains("masquerade"), "this build's rules: {listing}");
        assert!(!listing.contains("10.67.0.0"), "the old table went whole: {listing}");
        assert!(!fw.ensure_table().unwrap(), "ours is kept");
        let pool = Element::Pool { set: PoolSet::All, cidr: "10.67.0.0/24".parse().unwrap() };
        fw.add(std::slice::from_ref(&pool)).unwrap();
        assert!(!fw.ensure_table().unwrap());
        assert_eq!(fw.list().unwrap(), vec![pool], "kept with its elements");
    });
}
