//! calico-cni first in a conflist, chained with Debian's portmap, bandwidth and tuning, run
//! with libcni's semantics by a small runner: ADD in order (each result is the next plugin's
//! `prevResult`), CHECK in order and DEL in reverse with the final result. The chain runs in
//! a netns playing the host, so portmap's iptables rules live and die there.
//!
//! The conflist is netconf-examples/cnitool-podman.conflist (calico → portmap) with the store
//! and pool patched, and bandwidth and tuning appended.
//!
//! Debian's portmap 1.1.1 fails every CHECK of an IPv4 container: it also looks for the IPv4
//! DNAT rules in ip6tables, where it never puts them (containernetworking/plugins#819, fixed
//! upstream after 1.1.1). The test accepts exactly that failure, and checks the rules itself.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use calico_tests::netns::{host, CniBinDir, Netns, HOST_V4};
use calico_tests::{result_ips, Backend, Invocation, Outcome};
use serde_json::{json, Value};

/// The example the podman e2e test uses too.
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../netconf-examples/cnitool-podman.conflist");
const POOL: &str = "10.124.0.0/24";
const HOST_PORT: u16 = 8080;

/// A conflist run the way libcni runs it.
struct Chain<'a> {
    list: Value,
    host: &'a Netns,
    bins: &'a CniBinDir,
}

impl Chain<'_> {
    fn plugins(&self) -> &Vec<Value> {
        self.list["plugins"].as_array().expect("plugins")
    }

    /// One plugin's stdin: its entry plus the list's `cniVersion` and `name`, `runtimeConfig`
    /// for the capabilities it declares, and `prevResult`.
    fn plugin_conf(&self, i: usize, runtime: &Value, prev: Option<&Value>) -> Vec<u8> {
        let mut c = self.plugins()[i].clone();
        c["cniVersion"] = self.list["cniVersion"].clone();
        c["name"] = self.list["name"].clone();
        let mut rc = serde_json::Map::new();
        for (cap, on) in c["capabilities"].as_object().cloned().unwrap_or_default() {
            if on == json!(true) {
                if let Some(v) = runtime.get(&cap) {
                    rc.insert(cap, v.clone());
                }
            }
        }
        if !rc.is_empty() {
            c["runtimeConfig"] = Value::Object(rc);
        }
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        serde_json::to_vec(&c).unwrap()
    }

    fn try_exec(&self, i: usize, inv: &Invocation, stdin: &[u8]) -> Outcome {
        let plugin = self.plugins()[i]["type"].as_str().expect("type");
        inv.run_in(self.host, &self.bins.plugin(plugin), stdin)
    }

    fn exec(&self, i: usize, inv: &Invocation, stdin: &[u8]) -> Outcome {
        let out = self.try_exec(i, inv, stdin);
        assert!(out.ok(), "{} {} (plugin {i} of the chain) failed: {out:#?}", inv.command, self.plugins()[i]["type"]);
        out
    }

    fn add(&self, inv: &Invocation, runtime: &Value) -> Value {
        let mut prev: Option<Value> = None;
        for i in 0..self.plugins().len() {
            let out = self.exec(i, inv, &self.plugin_conf(i, runtime, prev.as_ref()));
            prev = Some(out.json());
        }
        prev.expect("an empty chain")
    }

    /// CHECK every plugin in order; `accept` may excuse a failure (plugin type, outcome).
    fn check(&self, inv: &Invocation, runtime: &Value, result: &Value, accept: impl Fn(&str, &Outcome) -> bool) {
        for i in 0..self.plugins().len() {
            let out = self.try_exec(i, &inv.with_command("CHECK"), &self.plugin_conf(i, runtime, Some(result)));
            let plugin = self.plugins()[i]["type"].as_str().unwrap_or_default();
            assert!(out.ok() || accept(plugin, &out), "CHECK {plugin} (plugin {i} of the chain) failed: {out:#?}");
        }
    }

    fn del(&self, inv: &Invocation, runtime: &Value, result: &Value) {
        for i in (0..self.plugins().len()).rev() {
            self.exec(i, &inv.with_command("DEL"), &self.plugin_conf(i, runtime, Some(result)));
        }
    }
}

/// The example with this test's store and pool, and bandwidth + tuning appended.
fn conflist(version: &str, store: &Backend, tuning_dir: &Path) -> Value {
    let mut list: Value =
        serde_json::from_str(&std::fs::read_to_string(EXAMPLE).expect(EXAMPLE)).expect("example JSON");
    assert_eq!(list["plugins"][0]["type"], "calico", "{EXAMPLE}: calico must come first");
    assert_eq!(list["plugins"][1]["type"], "portmap", "{EXAMPLE}: portmap must follow calico");
    store.apply(&mut list["plugins"][0]);
    list["plugins"][0]["ipam"]["ipv4_pools"] = json!([POOL]);
    list["cniVersion"] = json!(version);
    let plugins = list["plugins"].as_array_mut().unwrap();
    plugins.push(json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}));
    // The MAC goes to calico-cni (its own `mac` capability), not to tuning: a MAC change
    // after ADD makes the kernel flush the container's neighbour table, and with it the
    // gateway's permanent entry (README, "What the verbs do").
    plugins[0]["capabilities"]["mac"] = json!(true);
    plugins.push(json!({"type": "tuning",
                        "sysctl": {"net.core.somaxconn": "777"},
                        "dataDir": tuning_dir.display().to_string()}));
    list
}

fn runtime(mac: &str, port: bool) -> Value {
    let mut rt = json!({
        "bandwidth": {"ingressRate": 100_000_000u64, "ingressBurst": 8_000_000u64,
                      "egressRate": 100_000_000u64, "egressBurst": 8_000_000u64},
        "mac": mac,
    });
    if port {
        rt["portMappings"] = json!([{"hostPort": HOST_PORT, "containerPort": 80, "protocol": "tcp"}]);
    }
    rt
}

/// A listener on port 80 inside `ns` (busybox nc, one connection), killed on drop.
struct Listener(Child);

impl Listener {
    fn start(ns: &Netns) -> Listener {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "busybox", "nc", "-l", "-p", "80"])
            // A stdin that stays open: at EOF nc would close the connection it accepted.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox nc (Debian package busybox-static)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ns.exec(&["ss", "-Hltn", "sport", "= :80"]).stdout.starts_with(b"LISTEN") {
            assert!(Instant::now() < deadline, "nc -l -p 80 never listened in {}", ns.name);
            std::thread::sleep(Duration::from_millis(20));
        }
        Listener(child)
    }

    /// What the listener received, once its connection closed (waits up to 10 s).
    fn received(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut got = String::new();
        let _ = self.0.stdout.take().unwrap().read_to_string(&mut got);
        got
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Send `msg` from inside `ns` to `addr:port`.
fn send(ns: &Netns, addr: &str, port: u16, msg: &str) {
    let script = format!("echo {msg} | busybox nc -w 3 {addr} {port}");
    let out = ns.exec(&["sh", "-c", &script]);
    assert!(out.status.success(), "nc to {addr}:{port} from {}: {}", ns.name, String::from_utf8_lossy(&out.stderr));
}

/// Debian's portmap 1.1.1 CHECK of an IPv4 container (containernetworking/plugins#819):
/// "could not check ipv6 dnat: chain CNI-DN-… not found in iptables table nat".
fn portmap_check_bug(plugin: &str, out: &Outcome) -> bool {
    plugin == "portmap" && out.stdout.contains("could not check ipv6 dnat: chain CNI-DN-")
}

/// The nat tables of both families in `host`.
fn nat_rules(host: &Netns) -> String {
    let mut rules = String::new();
    for tool in ["iptables", "ip6tables"] {
        let out = host.exec(&[tool, "-w", "-t", "nat", "-S"]);
        assert!(out.status.success(), "{tool} (Debian package iptables): {}", String::from_utf8_lossy(&out.stderr));
        rules.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    rules
}

fn tools_present() {
    for (tool, package) in
        [("busybox", "busybox-static"), ("iptables", "iptables"), ("tc", "iproute2"), ("ss", "iproute2")]
    {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status();
        assert!(
            found.is_ok_and(|s| s.success()),
            "{tool} is missing: install the Debian package {package} (scripts/deps.sh)"
        );
    }
    for plugin in ["portmap", "bandwidth", "tuning"] {
        assert!(
            Path::new("/usr/lib/cni").join(plugin).exists(),
            "/usr/lib/cni/{plugin} is missing: install containernetworking-plugins (scripts/deps.sh)"
        );
    }
}

#[test]
fn calico_portmap_bandwidth_tuning_add_check_traffic_del() {
    tools_present();
    let store = Backend::embedded();
    store.ctl(&["pool", "add", POOL]).success();
    let (h, bins) = (host(), CniBinDir::new());
    let tuning_dir = tempfile::Builder::new().prefix("calico-tuning-").tempdir().unwrap();
    for version in ["1.0.0", "0.4.0"] {
        let chain = Chain { list: conflist(version, &store, tuning_dir.path()), host: &h, bins: &bins };
        let (server, client) = (Netns::new("cs"), Netns::new("cs"));
        let (srv_id, cli_id) = (format!("srv-{}", server.name), format!("cli-{}", client.name));
        let srv = Invocation::new("ADD", &srv_id).netns(&server.path()).path(&bins.path());
        let cli = Invocation::new("ADD", &cli_id).netns(&client.path()).path(&bins.path());
        let (srv_rt, cli_rt) = (runtime("0e:00:00:00:12:01", true), runtime("0e:00:00:00:12:02", false));

        let result = chain.add(&srv, &srv_rt);
        let cli_result = chain.add(&cli, &cli_rt);
        assert_eq!(result["cniVersion"], version, "{result}");
        let ip = result_ips(&result)[0].clone();
        assert!(ip.starts_with("10.124.0."), "{version}: {ip} is not from {POOL}");
        let veth = result["interfaces"][0]["name"].as_str().expect("host interface").to_owned();
        assert!(veth.starts_with("cali"), "{result}");
        // tuning: its MAC is in the final result and on the interface, its sysctl applied.
        assert_eq!(result["interfaces"][1]["mac"], "0e:00:00:00:12:01", "{version}: {result}");
        assert!(server.ip(&["link", "show", "eth0"]).contains("0e:00:00:00:12:01"));
        assert_eq!(server.sysctl("net.core.somaxconn"), "777", "{version}");
        // bandwidth: tbf on the host veth, and an ifb for egress.
        let qdisc = h.exec(&["tc", "qdisc", "show", "dev", &veth]);
        assert!(String::from_utf8_lossy(&qdisc.stdout).contains("tbf"), "{version}: no tbf on {veth}: {qdisc:?}");
        assert!(h.links().iter().any(|l| l.starts_with("bwp")), "{version}: no ifb: {:?}", h.links());
        // portmap: this container's DNAT rule (checked here, since portmap's CHECK is broken).
        let nat = nat_rules(&h);
        assert!(nat.contains(&srv_id), "{version}: no portmap rule:\n{nat}");
        assert!(nat.contains(&format!("--dport {HOST_PORT} -j DNAT --to-destination {ip}:80")), "{version}:\n{nat}");
        chain.check(&srv, &srv_rt, &result, portmap_check_bug);
        chain.check(&cli, &cli_rt, &cli_result, portmap_check_bug);

        // host port -> container port 80: from another container (PREROUTING) and from the
        // host itself (OUTPUT), both to the host's address.
        for (from, label, addr) in [(&client, "container", HOST_V4), (&h, "host", HOST_V4)] {
            let listener = Listener::start(&server);
            let msg = format!("hello-from-{label}-{}", version.replace('.', "-"));
            send(from, addr, HOST_PORT, &msg);
            let got = listener.received();
            assert!(
                got.contains(&msg),
                "{version}: {label} -> [{addr}]:{HOST_PORT} did not reach the container: {got:?}"
            );
        }

        for (inv, rt, res) in [(&srv, &srv_rt, &result), (&cli, &cli_rt, &cli_result)] {
            chain.del(inv, rt, res);
            chain.del(inv, rt, res); // DEL is idempotent through the whole chain
        }
        let nat = nat_rules(&h);
        assert!(!nat.contains(&srv_id) && !nat.contains("CNI-DN-"), "{version}: portmap rules left:\n{nat}");
        assert_eq!(h.cali_links(), Vec::<String>::new(), "{version}: cali links left");
        assert!(!h.links().iter().any(|l| l.starts_with("bwp")), "{version}: ifb left: {:?}", h.links());
        assert!(!h.routes().contains("10.124.0."), "{version}: routes left:\n{}", h.routes());
        assert_eq!(store.used(), 0, "{version}: addresses left allocated");
        store.assert_clean();
        let tuning_left: Vec<_> =
            std::fs::read_dir(tuning_dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(tuning_left.is_empty(), "{version}: tuning state left: {tuning_left:?}");
    }
}

#[test]
fn a_failing_plugin_later_in_the_chain_leaves_nothing_after_del() {
    // A runtime whose chain ADD fails calls DEL for the whole list (prevResult absent).
    tools_present();
    let store = Backend::embedded();
    store.ctl(&["pool", "add", POOL]).success();
    let (h, bins) = (host(), CniBinDir::new());
    let tuning_dir = tempfile::Builder::new().prefix("calico-tuning-").tempdir().unwrap();
    let mut list = conflist("1.0.0", &store, tuning_dir.path());
    list["plugins"][3]["sysctl"] = json!({"net.no.such.key": "1"});
    let chain = Chain { list, host: &h, bins: &bins };
    let c = Netns::new("cs");
    let inv = Invocation::new("ADD", "failing").netns(&c.path()).path(&bins.path());
    let rt = runtime("0e:00:00:00:12:03", true);
    let mut prev: Option<Value> = None;
    for i in 0..3 {
        prev = Some(chain.exec(i, &inv, &chain.plugin_conf(i, &rt, prev.as_ref())).json());
    }
    let out = inv.run_in(&h, &bins.plugin("tuning"), &chain.plugin_conf(3, &rt, prev.as_ref()));
    assert!(!out.ok(), "tuning accepted a sysctl that does not exist: {out:#?}");
    for i in (0..4).rev() {
        chain.exec(i, &inv.with_command("DEL"), &chain.plugin_conf(i, &rt, None));
    }
    assert!(!nat_rules(&h).contains("failing"), "portmap rules left:\n{}", nat_rules(&h));
    assert_eq!(h.cali_links(), Vec::<String>::new());
    assert!(!h.links().iter().any(|l| l.starts_with("bwp")), "ifb left: {:?}", h.links());
    assert_eq!(store.used(), 0);
}
