//! The BGP tests' lab: two hosts on two subnets behind a top-of-rack router that runs its
//! own BIRD (AS 65000, config written here), each host with the ToR as its node peer.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::Duration;

use calico_tests::netns::Netns;

use crate::node_common::{wait_for, Lab, Proc};

/// The pool: no encapsulation, no NAT.
pub const POOL: &str = "10.201.0.0/16";
/// The ToR's hold time (seconds), which the sessions negotiate.
pub const HOLD: u64 = 6;

/// The block (a /26 of the pool) holding `ip`.
pub fn block_of(ip: &str) -> String {
    let o: Vec<u32> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    format!("{}.{}.{}.{}/26", o[0], o[1], o[2], o[3] & !63)
}

/// Is `prefix` (a.b.c.d/n) inside [`POOL`]?
pub fn in_pool(prefix: &str) -> bool {
    let (ip, len) = prefix.split_once('/').unwrap();
    ip.starts_with("10.201.") && len.parse::<u32>().unwrap() >= 16
}

/// The data centre's router: BIRD in the lab's router namespace.
pub struct Tor {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub ns: String,
}

impl Tor {
    /// BIRD on the router, peering (AS 65000) with each `(our address, host, host AS)`.
    pub fn start(router: &Netns, peers: &[(&str, &str, u32)]) -> Tor {
        let dir = tempfile::Builder::new().prefix("bgp-tor-").tempdir().expect("tempdir");
        let mut conf = String::from(
            "router id 10.200.0.254;\nlog stderr all;\ndebug protocols { states, events };\nprotocol device { scan time 10; }\n\
             # Forward to what the hosts announce.\nprotocol kernel { ipv4 { import none; export all; }; }\n",
        );
        for (i, (local, host, asn)) in peers.iter().enumerate() {
            conf.push_str(&format!(
                "protocol bgp host{n} {{\n  local {local} as 65000;\n  neighbor {host} as {asn};\n  \
                 hold time {HOLD};\n  keepalive time 2;\n  graceful restart on;\n  \
                 ipv4 {{ import all; export all; }};\n}}\n",
                n = i + 1
            ));
        }
        let path = dir.path().join("bird.conf");
        std::fs::write(&path, conf).expect("write the ToR config");
        let log = std::fs::File::create(dir.path().join("bird.log")).expect("log");
        let child = router
            .command("bird")
            .arg("-f")
            .arg("-c")
            .arg(&path)
            .arg("-s")
            .arg(dir.path().join("bird.ctl"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the ToR's bird");
        let tor = Tor { proc: Proc(Some(child)), dir, ns: router.name.clone() };
        wait_for("the ToR's BIRD", Duration::from_secs(10), || tor.birdc(&["show", "status"]).contains("Daemon is up"));
        tor
    }

    pub fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "birdc", "-s"])
            .arg(self.dir.path().join("bird.ctl"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The prefixes in the ToR's BIRD table.
    pub fn prefixes(&self) -> Vec<String> {
        self.birdc(&["show", "route"])
            .lines()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.contains('/'))
            .map(str::to_owned)
            .collect()
    }

    /// The ToR's kernel routes from BGP (`proto bird`).
    pub fn kernel_routes(&self) -> String {
        calico_tests::netns::ip(&["-n", &self.ns, "route", "show", "proto", "bird"])
    }

    pub fn established(&self, name: &str) -> bool {
        self.birdc(&["show", "protocols"]).lines().any(|l| l.starts_with(name) && l.contains("Established"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bird.log")).unwrap_or_default()
    }
}

impl Drop for Tor {
    fn drop(&mut self) {
        self.proc.kill();
    }
}

/// A client behind the router (10.200.9.1, default route to it, nothing else).
pub fn client(router: &Netns) -> Netns {
    let c = Netns::new("bgcl");
    router.ip(&["link", "add", "eth9", "type", "veth", "peer", "name", "eth0", "netns", &c.name]);
    router.ip(&["addr", "add", "10.200.9.254/24", "dev", "eth9"]);
    router.ip(&["link", "set", "eth9", "up"]);
    c.ip(&["addr", "add", "10.200.9.1/24", "dev", "eth0"]);
    c.ip(&["link", "set", "eth0", "up"]);
    c.ip(&["route", "add", "default", "via", "10.200.9.254"]);
    c
}

/// Two hosts on two subnets behind a ToR, each with the ToR as its node peer (its own AS:
/// an AS per rack), the mesh off, a no-NAT no-encapsulation pool, the agents ready.
pub fn tor_lab() -> (Lab, Tor) {
    let mut lab = Lab::named("bg", &[1, 1]);
    lab.bgp = true;
    lab.hosts[0].flags = vec!["--as".into(), "65001".into()];
    lab.hosts[1].flags = vec!["--as".into(), "65002".into()];
    lab.ctl(0, &["pool", "add", POOL]).success();
    lab.ctl(0, &["bgp", "node-mesh", "off"]).success();
    lab.ctl(0, &["node", "bgp", "peer", "add", "10.200.0.254", "as", "65000", "--node", "host1"]).success();
    lab.ctl(1, &["node", "bgp", "peer", "add", "10.200.1.254", "as", "65000", "--node", "host2"]).success();
    let router = lab.router.as_ref().expect("two subnets have a router");
    let tor = Tor::start(router, &[("10.200.0.254", "10.200.0.1", 65001), ("10.200.1.254", "10.200.1.1", 65002)]);
    lab.start_agents();
    for name in ["host1", "host2"] {
        wait_for(&format!("the ToR's session with {name}"), Duration::from_secs(30), || tor.established(name));
    }
    (lab, tor)
}
