//! CNI_NETNS and CNI_IFNAME values that must never harm the host or hang: the plugin's own
//! netns, files that are not network namespaces (a FIFO used to hang ADD and DEL in open()),
//! and the DELs a runtime would otherwise retry forever (CNI_IFNAME lo, a trailing slash, a
//! corrupt endpoint record). Each asserts the code and that nothing is left behind.

use std::path::Path;
use std::process::Command;

use calico_tests::netns::{bare_host, CniBinDir, Netns};
use calico_tests::{run_command, Backend, Invocation, Outcome};
use datastore::{Datastore, Op};
use serde_json::{json, Value};

struct Env {
    host: Netns,
    bins: CniBinDir,
    store: Backend,
}

impl Env {
    fn new(store: Backend) -> Env {
        store.ctl(&["pool", "add", "10.126.0.0/16"]).success();
        let host = bare_host();
        // A host interface named like the pod's, which nothing may touch.
        host.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "hostpeer0"]);
        Env { host, bins: CniBinDir::new(), store }
    }

    fn conf(&self) -> Vec<u8> {
        let mut c = json!({"cniVersion": "1.0.0", "name": "safenet", "type": "calico", "nodename": "node1",
                           "log_level": "debug", "ipam": {"type": "calico-ipam"}});
        self.store.apply(&mut c);
        serde_json::to_vec(&c).unwrap()
    }

    fn inv(&self, command: &str, id: &str, netns: &str) -> Invocation {
        Invocation::new(command, id).netns(netns).path(&self.bins.path())
    }

    /// Runs the plugin in the host netns, killed after 20 s so that a hang fails the test.
    fn run(&self, inv: &Invocation, stdin: &[u8]) -> Outcome {
        let mut cmd = inv.command(Path::new("timeout"));
        cmd.args(["20", "ip", "netns", "exec", &self.host.name]).arg(self.bins.plugin("calico"));
        let out = run_command(cmd, stdin);
        assert_ne!(out.code, 124, "the plugin hung: {out:#?}");
        out
    }

    fn store(&self) -> Box<dyn Datastore> {
        self.store.open()
    }

    fn endpoint_records(&self) -> Vec<String> {
        self.store()
            .list(model::keys::ENDPOINT_HOST_PREFIX)
            .expect("listing endpoints")
            .into_iter()
            .map(|kv| kv.key)
            .collect()
    }

    /// Nothing of ours left, and the host's own eth0 untouched.
    fn assert_nothing_left(&self, what: &str) {
        assert_eq!(self.host.cali_links(), Vec::<String>::new(), "{what}: cali links left");
        let routes = self.host.routes();
        assert!(!routes.contains("10.126.") && !routes.contains("169.254.1.1"), "{what}: routes left:\n{routes}");
        assert_eq!(self.store.used(), 0, "{what}: addresses left allocated");
        assert_eq!(self.endpoint_records(), Vec::<String>::new(), "{what}: endpoint records left");
        let eth0 = self.host.ip(&["addr", "show", "eth0"]);
        assert!(!eth0.contains("inet "), "{what}: the host's eth0 got an address:\n{eth0}");
        assert!(!eth0.contains(",UP"), "{what}: the host's eth0 was set up:\n{eth0}");
    }
}

fn message(err: &Value) -> String {
    format!("{} {}", err["msg"].as_str().unwrap_or_default(), err["details"].as_str().unwrap_or_default())
}

#[test]
fn own_netns_is_refused_by_add_and_left_alone_by_del() {
    let env = Env::new(Backend::embedded());
    let conf = env.conf();
    for path in ["/proc/self/ns/net".to_owned(), "/proc/thread-self/ns/net".to_owned(), env.host.path()] {
        let add = env.inv("ADD", "own", &path);
        let err = env.run(&add, &conf).expect_err(4);
        assert!(message(&err).contains("own network namespace"), "{path}: {err}");
        env.assert_nothing_left(&format!("ADD {path}"));
        env.run(&add.with_command("DEL"), &conf).expect_ok();
        env.assert_nothing_left(&format!("DEL {path}"));
        assert!(env.host.links().contains(&"eth0".to_owned()), "DEL {path} deleted the host's eth0");
    }
    // A real attachment, then DEL with the plugin's own netns: the host veth and the
    // address go, the host's eth0 stays.
    let c = Netns::new("cs");
    env.run(&env.inv("ADD", "own2", &c.path()), &conf).expect_ok();
    let del = env.inv("DEL", "own2", "/proc/self/ns/net");
    env.run(&del, &conf).expect_ok();
    env.run(&del, &conf).expect_ok();
    env.assert_nothing_left("DEL of a real attachment with the own netns");
    assert!(env.host.links().contains(&"eth0".to_owned()), "DEL deleted the host's eth0");
}

#[test]
fn files_that_are_not_network_namespaces_give_code_4_and_never_hang() {
    let env = Env::new(Backend::embedded());
    let conf = env.conf();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let file = dir.path().join("file");
    std::fs::write(&file, "not a netns").unwrap();
    let socket = dir.path().join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let cases = [
        (fifo.display().to_string(), "a FIFO"),
        (file.display().to_string(), "a regular file"),
        (dir.path().display().to_string(), "a directory"),
        (socket.display().to_string(), "a socket"),
        ("/dev/null".to_owned(), "a character device"),
        ("/proc/self/ns/mnt".to_owned(), "a mount namespace"),
    ];
    for (path, what) in cases {
        let add = env.inv("ADD", "bad", &path);
        let err = env.run(&add, &conf).expect_err(4);
        let msg = message(&err);
        assert!(msg.contains("not a network namespace") && msg.contains(what), "{path}: {err}");
        env.assert_nothing_left(&format!("ADD {path}"));
        env.run(&add.with_command("DEL"), &conf).expect_ok();
        env.assert_nothing_left(&format!("DEL {path}"));
    }
}

#[test]
fn loopback_ifname_is_refused_by_add_and_del_succeeds() {
    let env = Env::new(Backend::embedded());
    let conf = env.conf();
    let c = Netns::new("cs");
    let add = env.inv("ADD", "lo1", &c.path()).ifname("lo");
    let err = env.run(&add, &conf).expect_err(4);
    assert!(message(&err).contains("CNI_IFNAME"), "{err}");
    env.assert_nothing_left("ADD lo");
    for _ in 0..2 {
        env.run(&add.with_command("DEL"), &conf).expect_ok();
    }
    env.assert_nothing_left("DEL lo");
    assert!(c.links().contains(&"lo".to_owned()), "DEL deleted the container's loopback");
}

#[test]
fn del_with_a_trailing_slash_succeeds_every_time() {
    let env = Env::new(Backend::embedded());
    let conf = env.conf();
    let c = Netns::new("cs");
    env.run(&env.inv("ADD", "slash", &c.path()), &conf).expect_ok();
    let del = env.inv("DEL", "slash", &format!("{}/", c.path()));
    for _ in 0..2 {
        env.run(&del, &conf).expect_ok();
    }
    env.assert_nothing_left("DEL with a trailing slash");
}

#[test]
fn del_with_a_corrupt_endpoint_record_cleans_up() {
    // The embedded store only: the plugin runs in the test's host netns, which cannot reach
    // the test etcd; the record is decoded the same way whatever store it came from.
    for store in [Backend::embedded()] {
        let env = Env::new(store);
        let what = env.store.name();
        let conf = env.conf();
        let c = Netns::new("cs");
        env.run(&env.inv("ADD", "corrupt", &c.path()), &conf).expect_ok();
        let keys = env.endpoint_records();
        assert_eq!(keys.len(), 1, "[{what}] {keys:?}");
        env.store().txn(&[], &[Op::Put { key: keys[0].clone(), value: b"{not json".to_vec() }]).unwrap();
        let del = env.inv("DEL", "corrupt", &c.path());
        for _ in 0..2 {
            env.run(&del, &conf).expect_ok();
        }
        env.assert_nothing_left(&format!("[{what}] DEL with a corrupt record"));
        assert_eq!(c.links(), vec!["lo".to_owned()], "[{what}] the container end is left");
    }
}

#[test]
fn a_second_interface_error_reads_as_text() {
    let env = Env::new(Backend::embedded());
    let conf = env.conf();
    let c = Netns::new("cs");
    env.run(&env.inv("ADD", "two", &c.path()), &conf).expect_ok();
    let second = env.inv("ADD", "two", &c.path()).ifname("eth1");
    let out = env.run(&second, &conf);
    let err = out.expect_err(120);
    let msg = message(&err);
    assert!(msg.contains("route 169.254.1.1/32 dev eth1 scope link"), "{err}");
    assert!(!msg.contains('{') && !msg.contains("RouteSpec"), "a Debug dump in the error: {err}");
    env.run(&env.inv("DEL", "two", &c.path()), &conf).expect_ok();
    env.run(&second.with_command("DEL"), &conf).expect_ok();
    env.assert_nothing_left("second interface");
}
