//! BGP for real: calico-node driving BIRD 2 in each host (network namespaces), etcd, a
//! top-of-rack router running its own BIRD (AS 65000, config written here) with a host on
//! each of two subnets behind it, a client behind the router reaching containers by their
//! own addresses with no NAT; the node-to-node mesh; kill -9 and restart under graceful
//! restart; a stopped host withdrawn within the hold time; bad input refused; a config BIRD
//! rejects never loaded.

mod bgp_common;
mod node_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use bgp_common::{block_of, client, in_pool, tor_lab, Tor, HOLD, POOL};
use calico_tests::netns::Netns;
use node_common::{http_get, wait_for, Lab, RouteMonitor};

/// Accept one TCP connection on `port` in `ns` (within 10 s): the peer's address and what
/// it sent.
fn accept_one(ns: &Netns, port: u16) -> std::thread::JoinHandle<Option<(SocketAddr, String)>> {
    let listener = ns.run_in(|| TcpListener::bind(("0.0.0.0", port))).expect("listen in the container");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false).ok()?;
                    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                    let mut text = String::new();
                    s.read_to_string(&mut text).ok()?;
                    return Some((peer, text));
                }
                Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => return None,
            }
        }
    })
}

#[test]
fn a_tor_learns_each_hosts_blocks_and_clients_reach_containers_without_nat() {
    let (mut lab, tor) = tor_lab();
    let ips = [lab.add_container(0), lab.add_container(1)];
    let blocks = [block_of(&ips[0]), block_of(&ips[1])];
    let took = wait_for("both blocks on the ToR", Duration::from_secs(10), || {
        let routes = tor.kernel_routes();
        routes.contains(&format!("{} via 10.200.0.1 ", blocks[0]))
            && routes.contains(&format!("{} via 10.200.1.1 ", blocks[1]))
    });
    eprintln!("blocks on the ToR {took:?} after the last ADD");
    // BIRD's table on the ToR: the two blocks, nothing outside the pool (no host route, no
    // default route, no /32 of a workload).
    let prefixes = tor.prefixes();
    assert!(!prefixes.is_empty() && prefixes.iter().all(|p| in_pool(p) && p.ends_with("/26")), "{prefixes:?}");
    assert!(blocks.iter().all(|b| prefixes.contains(b)), "{prefixes:?}");
    let table = tor.birdc(&["show", "route"]);
    assert!(table.contains("via 10.200.0.1 on eth0") && table.contains("via 10.200.1.1 on eth1"), "{table}");

    // A client behind the router, which knows only its default route.
    let router = lab.router.as_ref().unwrap();
    let cl = client(router);
    // Profiles (issue 13): the network's profile admits only its own members until a rule
    // lets the outside in; with no NAT anywhere, a cidr rule on the client's own address works.
    lab.ctl(0, &["profile", "nodenet", "rule", "add", "inbound", "allow", "from", "cidr", "10.200.9.0/24"]).success();
    for ip in &ips {
        wait_for(&format!("the client to reach {ip}"), Duration::from_secs(5), || cl.ping(ip));
    }
    let accepted = accept_one(lab.container(0), 7000);
    let target: SocketAddr = format!("{}:7000", ips[0]).parse().unwrap();
    cl.run_in(|| {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect("connect to the container");
        s.write_all(b"hello from outside").unwrap();
    });
    let (peer, text) = accepted.join().unwrap().expect("the container accepted nothing");
    assert_eq!(text, "hello from outside");
    assert_eq!(peer.ip().to_string(), "10.200.9.1", "the container sees the client's own address: no NAT");

    // Container to container across the subnets, over the routes learned through BGP.
    let learned = lab.hosts[0].ns.ip(&["route", "show", "proto", "bird"]);
    assert!(learned.contains(&format!("{} via 10.200.0.254 dev eth0", blocks[1])), "{learned}");
    assert!(!lab.hosts[0].our_routes().contains(&blocks[1]), "the agent leaves it to BGP");
    assert!(lab.container(0).ping(&ips[1]), "host1's container cannot reach host2's");
    assert!(lab.container(1).ping(&ips[0]), "host2's container cannot reach host1's");

    // calicoctl node show: the session, read from BIRD.
    let shown = lab.ctl(0, &["node", "show", "--bird-socket", &lab.hosts[0].bird_socket()]);
    let line = shown.stdout.lines().find(|l| l.starts_with("10.200.0.254")).unwrap_or_default().to_owned();
    assert!(line.contains("node") && line.contains("up") && line.contains("Established"), "{shown:#?}");
    // A new block needs no reconfiguration: BIRD learns its route from the kernel.
    let before = reconfigurations(&lab.hosts[0]);
    lab.etcd_put(&[("/calico/ipam/v2/host/host1/ipv4/block/10.201.200.0-26".into(), "{}".into())]);
    wait_for("the new block on the ToR", Duration::from_secs(5), || {
        tor.kernel_routes().contains("10.201.200.0/26 via 10.200.0.1 ")
    });
    assert_eq!(reconfigurations(&lab.hosts[0]), before, "no BIRD reconfiguration for a new block\n{}", tor.log());

    // Removing a node removes its own peers too.
    let peers = lab.ctl(0, &["node", "bgp", "peer", "show", "--node", "host2", "-o", "json"]).expect_ok();
    assert_eq!(peers, serde_json::json!([{"ip": "10.200.1.254", "as_num": 65000}]));
    lab.hosts[1].agent.kill();
    lab.ctl(0, &["node", "remove", "host2", "--remove-endpoints"]).success();
    let peers = lab.ctl(0, &["node", "bgp", "peer", "show", "--node", "host2", "-o", "json"]).expect_ok();
    assert_eq!(peers, serde_json::json!([]));
}

/// The reconfigurations of host `h`'s BIRD so far (its metric).
fn reconfigurations(h: &node_common::Host) -> String {
    let m = h.metrics();
    m.lines().find(|l| l.starts_with("calico_node_bird_reconfigurations ")).map(str::to_owned).expect("the metric")
}

#[test]
fn a_borrowed_address_is_exported_as_a_32_and_reached_across_the_subnets() {
    let (mut lab, tor) = tor_lab();
    let ips = [lab.add_container(0), lab.add_container(1)];
    let blocks = [block_of(&ips[0]), block_of(&ips[1])];
    wait_for("both blocks on the ToR", Duration::from_secs(10), || {
        let routes = tor.kernel_routes();
        routes.contains(&format!("{} via 10.200.0.1 ", blocks[0]))
            && routes.contains(&format!("{} via 10.200.1.1 ", blocks[1]))
    });
    lab.ctl(0, &["profile", "nodenet", "rule", "add", "inbound", "allow", "from", "cidr", "10.200.9.0/24"]).success();

    // host2's container takes an address in host1's block: the block's route leads to host1,
    // on the other subnet, so only a /32 of host2's gets traffic to it.
    let base: std::net::Ipv4Addr = blocks[0].split('/').next().unwrap().parse().unwrap();
    let borrowed = std::net::Ipv4Addr::from(u32::from(base) + 40).to_string();
    let id = format!("ctr-{}", lab.container(1).name);
    let before = [reconfigurations(&lab.hosts[0]), reconfigurations(&lab.hosts[1])];
    lab.ctl(1, &["container", &id, "ip", "add", &borrowed]).success();
    let took = wait_for("the borrowed /32 on the ToR, via host2", Duration::from_secs(10), || {
        tor.kernel_routes().contains(&format!("{borrowed} via 10.200.1.1 "))
    });
    eprintln!("borrowed /32 on the ToR {took:?} after calicoctl");
    wait_for("host1 to learn the /32 over BGP", Duration::from_secs(10), || {
        lab.hosts[0]
            .ns
            .ip(&["route", "show", "proto", "bird"])
            .contains(&format!("{borrowed} via 10.200.0.254 dev eth0"))
    });
    // It is host2's export alone: host1's BIRD was not reconfigured, and host2 keeps its /32 to
    // the veth (BIRD never puts its blackhole into the kernel).
    assert_eq!(reconfigurations(&lab.hosts[0]), before[0]);
    assert_ne!(reconfigurations(&lab.hosts[1]), before[1]);
    let local = lab.hosts[1].ns.ip(&["route", "show", &borrowed]);
    assert!(local.contains("dev cali") && !local.contains("blackhole"), "{local}");
    let prefixes = tor.prefixes();
    assert!(prefixes.iter().all(|p| in_pool(p)) && prefixes.contains(&format!("{borrowed}/32")), "{prefixes:?}");

    // Reached from host1's container (whose host owns the block) and from behind the ToR.
    assert!(lab.container(0).ping(&borrowed), "host1's container cannot reach the borrowed address");
    let cl = client(lab.router.as_ref().unwrap());
    wait_for("the client to reach the borrowed address", Duration::from_secs(5), || cl.ping(&borrowed));

    // Given back: withdrawn everywhere.
    lab.ctl(1, &["container", &id, "ip", "remove", &borrowed]).success();
    wait_for("the ToR to withdraw the /32", Duration::from_secs(10), || {
        !tor.kernel_routes().contains(&format!("{borrowed} via"))
    });
    wait_for("host1 to drop the /32", Duration::from_secs(10), || {
        !lab.hosts[0].ns.ip(&["route", "show", "proto", "bird"]).contains(&borrowed)
    });
}

#[test]
fn kill_9_and_restart_keep_the_routes_on_the_router_and_a_stopped_host_is_withdrawn() {
    let (mut lab, tor) = tor_lab();
    let ip = lab.add_container(0);
    let block = block_of(&ip);
    let on_tor = |tor: &Tor| tor.kernel_routes().contains(&format!("{block} via 10.200.0.1 "));
    wait_for("the block on the ToR", Duration::from_secs(10), || on_tor(&tor));
    let router = lab.router.as_ref().unwrap().name.clone();
    let monitor = RouteMonitor::start(&router);
    // kill -9: calico-node, and with it its BIRD; the ToR keeps the routes (graceful restart).
    lab.hosts[0].agent.kill();
    wait_for("the ToR to see host1 go", Duration::from_secs(10), || !tor.established("host1"));
    lab.start_agent(0);
    wait_for("host1 ready again", Duration::from_secs(20), || lab.hosts[0].ready());
    wait_for("the session back", Duration::from_secs(30), || tor.established("host1"));
    std::thread::sleep(Duration::from_secs(3));
    let deleted = monitor.deletions(&block);
    assert!(deleted.is_empty(), "the ToR withdrew the block around the restart: {deleted:?}\n{}", tor.log());
    assert!(on_tor(&tor));
    let starts = lab.hosts[0].metrics();
    assert!(starts.contains("calico_node_bird_starts 1"), "{starts}");

    // The host stops (its link goes, then its agent): the ToR withdraws within the hold time.
    lab.hosts[0].ns.ip(&["link", "set", "eth0", "down"]);
    lab.hosts[0].agent.kill();
    let gone = wait_for("the ToR to withdraw host1's block", Duration::from_secs(HOLD + 4), || !on_tor(&tor));
    eprintln!("withdrawn {gone:?} after host1 stopped (hold time {HOLD} s)");
}

#[test]
fn a_mesh_of_three_learns_each_others_blocks_until_it_is_turned_off() {
    let mut lab = Lab::named("bgm", &[3]);
    lab.bgp = true;
    lab.ctl(0, &["pool", "add", POOL]).success();
    lab.start_agents();
    let ips: Vec<String> = (0..3).map(|i| lab.add_container(i)).collect();
    let blocks: Vec<String> = ips.iter().map(|ip| block_of(ip)).collect();
    for (i, h) in lab.hosts.iter().enumerate() {
        wait_for(&format!("{}'s mesh sessions", h.name), Duration::from_secs(30), || {
            h.birdc(&["show", "protocols"])
                .lines()
                .filter(|l| l.starts_with("Mesh_") && l.contains("Established"))
                .count()
                == 2
        });
        wait_for(&format!("{}'s learned routes", h.name), Duration::from_secs(10), || {
            let learned = h.ns.ip(&["route", "show", "proto", "bird"]);
            (0..3).filter(|j| *j != i).all(|j| learned.contains(&format!("{} via {} ", blocks[j], lab.hosts[j].ip)))
        });
        let learned = h.ns.ip(&["route", "show", "proto", "bird"]);
        assert!(!learned.contains(&blocks[i]), "{}: its own block came back: {learned}", h.name);
        assert!(learned.lines().all(|l| l.contains("metric 1024")), "{learned}");
        // The agent's own routes (metric 0) stand beside BIRD's, each programmed.
        assert!(h.ready(), "{}", h.log());
        assert!(!h.log().contains("route not programmed"), "{}", h.log());
    }
    // One session per pair: the lower address is passive.
    let conf = std::fs::read_to_string(lab.hosts[0].dir.path().join("bird.conf")).unwrap();
    assert_eq!(conf.matches("passive on;").count(), 2, "host1 (.1) waits for both: {conf}");
    assert!(lab.container(0).ping(&ips[2]));

    assert_eq!(lab.ctl(0, &["bgp", "node-mesh"]).stdout.trim(), "on");
    lab.ctl(0, &["bgp", "node-mesh", "off"]).success();
    assert_eq!(lab.ctl(0, &["bgp", "node-mesh"]).stdout.trim(), "off");
    for h in &lab.hosts {
        wait_for(&format!("{}'s mesh sessions gone", h.name), Duration::from_secs(10), || {
            !h.birdc(&["show", "protocols"]).contains("Mesh_")
                && h.ns.ip(&["route", "show", "proto", "bird"]).is_empty()
        });
    }
    assert!(lab.container(0).ping(&ips[2]), "the agent's own routes stay");
}

#[test]
fn bad_input_is_refused_and_a_config_bird_rejects_is_never_loaded() {
    let mut lab = Lab::named("bgb", &[1]);
    lab.bgp = true;
    lab.ctl(0, &["pool", "add", POOL]).success();
    lab.start_agents();
    let fails = |args: &[&str], message: &str| {
        let out = lab.ctl(0, args);
        assert!(!out.ok() && out.stderr.contains(message), "{args:?}: {out:#?}");
    };
    for bad in ["0", "4294967296", "abc"] {
        fails(&["bgp", "peer", "add", "10.200.0.77", "as", bad], "Invalid AS Number specified");
        fails(
            &["node", "bgp", "peer", "add", "10.200.0.77", "as", bad, "--node", "host1"],
            "Invalid AS Number specified",
        );
        fails(&["bgp", "default-node-as", bad], "Invalid AS Number specified");
    }
    fails(&["bgp", "peer", "add", "10.200.0.300", "as", "65000"], "Invalid IP address specified");
    fails(&["bgp", "peer", "add", "bogus", "as", "65000"], "Invalid IP address specified");
    fails(&["bgp", "peer", "add", "10.200.0.1", "as", "65000"], "node host1's own address");
    fails(&["node", "bgp", "peer", "add", "10.200.0.1", "as", "65000", "--node", "host1"], "cannot peer with itself");
    fails(&["bgp", "peer", "add", "10.200.0.77", "at", "65000"], "expected `10.200.0.77 as <AS>`");
    fails(&["bgp", "peer", "remove", "10.200.0.77"], "is not a global BGP peer");
    assert_eq!(lab.ctl(0, &["bgp", "peer", "show", "-o", "json"]).stdout.trim(), "[]", "nothing written");
    assert_eq!(lab.ctl(0, &["bgp", "default-node-as"]).stdout.trim(), "64512");
    lab.ctl(0, &["bgp", "peer", "add", "10.200.0.77", "as", "4294967295"]).success();
    let shown = lab.ctl(0, &["bgp", "peer", "show"]);
    assert!(shown.stdout.contains("10.200.0.77") && shown.stdout.contains("4294967295"), "{shown:#?}");

    // A peer whose AS is 0, written past calicoctl: BIRD rejects the config, so it is never
    // loaded; BIRD keeps the one it runs, and readiness says why.
    let h = &lab.hosts[0];
    let conf_path = h.dir.path().join("bird.conf");
    wait_for("the good peer in BIRD", Duration::from_secs(10), || {
        h.birdc(&["show", "protocols"]).contains("Global_10_200_0_77")
    });
    let good = std::fs::read_to_string(&conf_path).unwrap();
    let put = |args: &[&str]| {
        let out = lab
            .etcd
            .ns
            .command("etcdctl")
            .args(["--endpoints", &lab.etcd.url()])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    put(&["put", "/calico/bgp/v1/global/peer_v4/10.200.0.88", r#"{"ip":"10.200.0.88","as_num":0}"#]);
    wait_for("readiness to say why", Duration::from_secs(10), || {
        http_get(&h.ns, h.health_port, "/readiness")
            .is_some_and(|(s, body)| s.contains(" 503") && body.contains("BIRD rejected the config"))
    });
    let (_, body) = http_get(&h.ns, h.health_port, "/readiness").unwrap();
    assert!(body.contains("Remote AS number"), "BIRD's own words: {body}");
    assert_eq!(std::fs::read_to_string(&conf_path).unwrap(), good, "the running config is untouched");
    let protocols = h.birdc(&["show", "protocols"]);
    assert!(protocols.contains("Global_10_200_0_77") && !protocols.contains("10_200_0_88"), "{protocols}");
    put(&["del", "/calico/bgp/v1/global/peer_v4/10.200.0.88"]);
    wait_for("ready again", Duration::from_secs(10), || h.ready());
    lab.ctl(0, &["bgp", "peer", "remove", "10.200.0.77"]).success();
    wait_for("the peer gone from BIRD", Duration::from_secs(10), || {
        !h.birdc(&["show", "protocols"]).contains("Global_")
    });

    // BIRD dies: calico-node starts it again, on the config it had.
    let pid = bird_pid(&h.bird_socket()).expect("host1's bird");
    Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    wait_for("BIRD started again", Duration::from_secs(10), || {
        bird_pid(&h.bird_socket()).is_some_and(|p| p != pid) && h.metrics().contains("calico_node_bird_starts 2")
    });
    wait_for("BIRD answering again", Duration::from_secs(10), || {
        h.birdc(&["show", "protocols"]).contains("calico_kernel")
    });
    assert!(h.ready());

    // Without BIRD installed, --bgp=bird is refused at start, naming the way out.
    let out = lab.agent_command(0, &["--bgp=bird", "--bird-binary", "/nonexistent/bird"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("install bird2, or run with --bgp=none"), "{stderr}");
}

/// The pid of the `bird` whose control socket is `socket`.
fn bird_pid(socket: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_bird = args.first().is_some_and(|a| a.ends_with(b"bird"));
        (is_bird && args.contains(&socket.as_bytes())).then_some(pid)
    })
}
