//! Profiles enforced on nftables (the `inet calico-policy` table), with the real calico-cni
//! in a host netns: containers of one profile reach each other, a container of another
//! profile does not, until calico-node applies a rule that lets it; DEL leaves no element,
//! map entry or chain behind.

use std::time::{Duration, Instant};

use calico_tests::cni_host::CniHost;
use calico_tests::netns::{host, Netns};
use calico_tests::{result_ips, Invocation};
use serde_json::{json, Value};

const POOL: &str = "10.76.0.0/24";

fn conf(cni: &CniHost, network: &str, profiles: Option<Value>) -> Vec<u8> {
    let mut c: Value = serde_json::from_slice(&cni.conf("1.0.0", json!({}))).unwrap();
    c["name"] = json!(network);
    if let Some(p) = profiles {
        c["profiles"] = p;
    }
    serde_json::to_vec(&c).unwrap()
}

/// One quick ping (1 s): for the answers that must not come.
fn pings(from: &Netns, to: &str) -> bool {
    from.exec(&["ping", "-c", "1", "-W", "1", to]).status.success()
}

fn nft(cni: &CniHost) -> String {
    let out = cni.host.exec(&["nft", "list", "table", "inet", "calico-policy"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Ctr {
    ns: Netns,
    add: Invocation,
    conf: Vec<u8>,
    ip: String,
}

fn add(cni: &CniHost, network: &str, profiles: Option<Value>) -> Ctr {
    let ns = Netns::new("pf");
    let conf = conf(cni, network, profiles);
    let add = cni.inv("ADD", &format!("pf-{}", ns.name), &ns);
    let ip = result_ips(&cni.run(&add, &conf).expect_ok())[0].clone();
    Ctr { ns, add, conf, ip }
}

fn del(cni: &CniHost, c: &Ctr) {
    cni.run(&c.add.with_command("DEL"), &c.conf).expect_ok();
}

/// calico-node in the host netns on the test's store, killed on drop.
struct Agent(std::process::Child, std::path::PathBuf);

impl Agent {
    fn start(cni: &CniHost, name: &str) -> Agent {
        Agent::start_with(cni, name, &[])
    }

    fn start_with(cni: &CniHost, name: &str, extra: &[&str]) -> Agent {
        let log = cni.store.dir().join(format!("agent-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &cni.host.name]).arg(calico_tests::bin("calico-node"));
        // No BGP: BIRD's config and socket would be the machine's (/etc/calico, /run/calico).
        cmd.args(["--nodename", name, "--log-level", "debug", "--bgp=none"]);
        cmd.arg("--mtu-file").arg(cni.store.dir().join("mtu")).args(extra);
        cmd.env_remove("ETCD_ENDPOINTS").env_remove("CALICO_DATASTORE_PATH").env_remove("NODENAME");
        for (k, v) in cni.store.ctl_env() {
            cmd.env(k, v);
        }
        cmd.stdin(std::process::Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file);
        let agent = Agent(cmd.spawn().expect("start calico-node"), log);
        let ready = within(Duration::from_secs(10), || agent.log().contains("policy table replaced"));
        assert!(ready.is_some(), "calico-node never wrote the policy:\n{}", agent.log());
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to `limit` for `f`; how long it took.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_profile_admits_its_own_and_refuses_others_and_del_leaves_nothing() {
    let cni = CniHost::new(host(), &[POOL], json!({"name": "pfa"}));
    let a1 = add(&cni, "pfa", None);
    let a2 = add(&cni, "pfa", None);
    let b1 = add(&cni, "pfb", None);
    assert!(a1.ns.ping(&a2.ip), "same profile: a1 -> a2\n{}", nft(&cni));
    assert!(a2.ns.ping(&a1.ip), "same profile: a2 -> a1");
    assert!(!pings(&b1.ns, &a1.ip), "b1 reached a1 without a rule\n{}", nft(&cni));
    assert!(!pings(&a1.ns, &b1.ip), "a1 reached b1 without a rule");
    // The host itself reaches its containers (health checks).
    assert!(pings(&cni.host, &a1.ip) && pings(&cni.host, &b1.ip), "host -> containers\n{}", nft(&cni));
    let table = nft(&cni);
    assert!(table.contains("chain pi-pfa") && table.contains("set tag4-pfa"), "{table}");
    assert!(table.contains(&a1.ip) && table.contains(&b1.ip), "{table}");
    // The verdict maps list each host veth by its name (nft reads the keys' byte order from
    // the set's userdata, as nft itself writes it).
    for veth in cni.host.cali_links() {
        assert!(table.contains(&format!("\"{veth}\" : jump ei-{veth}")), "{veth} not in to-ep: {table}");
    }

    // A container with both profiles reaches, and is reached by, both.
    let ab = add(&cni, "pfab", Some(json!(["pfa", "pfb"])));
    assert!(ab.ns.ping(&a1.ip) && ab.ns.ping(&b1.ip), "ab -> a1, b1");
    assert!(a1.ns.ping(&ab.ip) && b1.ns.ping(&ab.ip), "a1, b1 -> ab");

    for c in [&a1, &a2, &b1, &ab] {
        del(&cni, c);
        del(&cni, c);
    }
    let table = nft(&cni);
    for c in [&a1, &a2, &b1, &ab] {
        assert!(!table.contains(&c.ip), "{} left in\n{table}", c.ip);
    }
    assert!(!table.contains("ei-cali") && !table.contains("eo-cali") && !table.contains(": jump"), "{table}");
    cni.assert_nothing_left("after DEL");
}

/// calico-node applies rule, tag and profile changes within 1 s, in one transaction.
#[test]
fn rule_changes_reach_the_kernel_within_a_second_through_calico_node() {
    let cni = CniHost::new(host(), &[POOL], json!({"name": "pfa"}));
    let node = Agent::start(&cni, "node1");
    let a1 = add(&cni, "pfa", None);
    let b1 = add(&cni, "pfb", None);
    assert!(!pings(&b1.ns, &a1.ip), "b1 reached a1 without a rule");
    let ctl = |args: &[&str]| cni.store.ctl(args).success().stdout.clone();

    // Timed from calicoctl's start to the first answer, in steps of a 100 ms ping.
    let fast = |from: &Netns, to: &str| from.ping_once(to, Duration::from_millis(100));
    let started = Instant::now();
    ctl(&["profile", "pfa", "rule", "add", "inbound", "allow", "from", "tag", "pfb"]);
    let took = within(Duration::from_secs(3), || fast(&b1.ns, &a1.ip)).map(|_| started.elapsed());
    assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "allow from tag pfb took {took:?}\n{}", nft(&cni));
    let started = Instant::now();
    ctl(&["profile", "pfa", "rule", "remove", "inbound", "allow", "from", "tag", "pfb"]);
    let took = within(Duration::from_secs(3), || !fast(&b1.ns, &a1.ip)).map(|_| started.elapsed());
    assert!(took.is_some_and(|t| t < Duration::from_secs(1)), "removing the rule took {took:?}");
    assert!(!pings(&b1.ns, &a1.ip), "the removed rule still admits");

    // Outbound deny blocks, and icmp rules match only ICMP.
    ctl(&["profile", "pfb", "rule", "add", "inbound", "allow", "icmp"]);
    assert!(within(Duration::from_secs(2), || pings(&a1.ns, &b1.ip)).is_some(), "icmp allowed in");
    let _listener = b1.ns.run_in(|| std::net::TcpListener::bind("0.0.0.0:80").unwrap());
    assert!(!connects(&a1.ns, &format!("{}:80", b1.ip)), "an icmp rule admitted TCP");
    ctl(&["profile", "pfa", "rule", "add", "outbound", "--at=1", "deny", "icmp"]);
    assert!(within(Duration::from_secs(2), || !pings(&a1.ns, &b1.ip)).is_some(), "outbound icmp denied");

    // A tag added to a profile makes its endpoints members, with no rule rewritten.
    ctl(&["profile", "pfa", "rule", "remove", "outbound", "--at=1"]);
    ctl(&["profile", "pfb", "tag", "add", "pfa"]);
    assert!(within(Duration::from_secs(2), || pings(&b1.ns, &a1.ip)).is_some(), "b1 tagged pfa reaches a1");
    drop(node);
    del(&cni, &a1);
    del(&cni, &b1);
}

/// Whether a TCP connection from inside `ns` to `to` is answered within a second.
fn connects(ns: &Netns, to: &str) -> bool {
    let to: std::net::SocketAddr = to.parse().unwrap();
    ns.run_in(|| std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok())
}

/// The outside reaches a container only as its profile allows: a mapped port once the
/// seed's `rule add inbound allow tcp to ports 80` is there, ICMP once a cidr rule admits
/// the outside's network.
#[test]
fn the_outside_and_mapped_ports_obey_the_profile() {
    use calico_tests::netns::HOST_V4;
    let h = host();
    h.run_in(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")).unwrap();
    let outside = Netns::new("pf-out");
    h.ip(&["link", "set", "up1", "netns", &outside.name]);
    outside.ip(&["addr", "add", "10.255.255.2/30", "dev", "up1"]);
    outside.ip(&["link", "set", "up1", "up"]);
    outside.ip(&["route", "add", POOL, "via", HOST_V4]);
    let cni = CniHost::new(h, &[POOL], json!({"name": "pfo"}));
    let node = Agent::start(&cni, "node1");
    let ns = Netns::new("pf");
    let mut c: Value = serde_json::from_slice(&conf(&cni, "pfo", None)).unwrap();
    c["capabilities"] = json!({"portMappings": true});
    c["runtimeConfig"] = json!({"portMappings": [{"hostPort": 18090, "containerPort": 80, "protocol": "tcp"}]});
    let c = serde_json::to_vec(&c).unwrap();
    let add = cni.inv("ADD", "pf-mapped", &ns);
    let ip = result_ips(&cni.run(&add, &c).expect_ok())[0].clone();
    let _listener = ns.run_in(|| std::net::TcpListener::bind("0.0.0.0:80").unwrap());
    let mapped = format!("{HOST_V4}:18090");
    assert!(!connects(&outside, &mapped), "the mapped port is open without a rule\n{}", nft(&cni));
    assert!(connects(&cni.host, &mapped), "the host itself reaches it (host_to_workloads)");
    assert!(!pings(&outside, &ip), "the outside pings the container without a rule");

    cni.store.ctl(&["profile", "pfo", "rule", "add", "inbound", "allow", "tcp", "to", "ports", "80"]).success();
    let took = within(Duration::from_secs(3), || connects(&outside, &mapped));
    assert!(took.is_some(), "the seed's rule did not open the mapped port\n{}", nft(&cni));
    assert!(connects(&outside, &format!("{ip}:80")), "routed, to the container's own port");
    assert!(!pings(&outside, &ip), "a tcp rule admitted ICMP");

    cni.store
        .ctl(&["profile", "pfo", "rule", "add", "inbound", "allow", "icmp", "from", "cidr", "10.255.255.0/30"])
        .success();
    assert!(
        within(Duration::from_secs(3), || pings(&outside, &ip)).is_some(),
        "the cidr rule did not admit the outside"
    );
    drop(node);
    cni.run(&add.with_command("DEL"), &c).expect_ok();
}

/// An ADD killed (SIGKILL) at any point, then DEL: no map entry, chain or set element is
/// left, and nothing in IPAM.
#[test]
fn a_killed_add_leaves_nothing_after_del() {
    use std::io::Write;
    let cni = CniHost::new(host(), &[POOL], json!({"name": "pfk"}));
    let plugin = cni.bins.plugin("calico");
    let conf = conf(&cni, "pfk", None);
    let mut seed = std::process::id() as u64;
    let mut killed = 0;
    for i in 0..16 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let delay = Duration::from_micros((seed >> 33) % 40_000);
        let ns = Netns::new("pf");
        let inv = cni.inv("ADD", &format!("pf-kill-{i}"), &ns);
        let mut cmd = inv.command(std::path::Path::new("ip"));
        cmd.args(["netns", "exec", &cni.host.name]).arg(&plugin);
        cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(&conf).unwrap();
        std::thread::sleep(delay);
        // Killed only if still running; a kill that came too late is counted, not pretended.
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        cni.run(&inv.with_command("DEL"), &conf).expect_ok();
        let table = nft(&cni);
        assert!(!table.contains("elements"), "after a kill at {delay:?} and DEL:\n{table}");
        assert!(!table.contains("chain ei-") && !table.contains("chain eo-"), "after {delay:?}:\n{table}");
    }
    assert!(killed > 0, "no ADD was killed while it ran: the delays are too long for this machine");
    cni.assert_nothing_left("killed ADDs, then DEL");
}

/// `--host-to-workloads=false`: the host's own traffic to its containers obeys their inbound
/// rules too.
#[test]
fn host_to_workloads_false_holds_the_host_to_the_profiles() {
    let cni = CniHost::new(host(), &[POOL], json!({"name": "pfh"}));
    let a = add(&cni, "pfh", None);
    assert!(pings(&cni.host, &a.ip), "by default the host reaches its containers");
    let node = Agent::start_with(&cni, "node1", &["--host-to-workloads", "false"]);
    assert!(
        within(Duration::from_secs(2), || !pings(&cni.host, &a.ip)).is_some(),
        "the host still reaches it\n{}",
        nft(&cni)
    );
    cni.store.ctl(&["profile", "pfh", "rule", "add", "inbound", "allow", "icmp"]).success();
    assert!(
        within(Duration::from_secs(3), || pings(&cni.host, &a.ip)).is_some(),
        "the icmp rule did not admit the host"
    );
    drop(node);
    del(&cni, &a);
}
