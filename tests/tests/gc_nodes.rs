//! GC on a shared store: two nodes allocate for the same network, and a runtime's GC on one
//! node (its list of valid attachments is its own host's view) releases only that node's
//! allocations, endpoint records and veths, never the other node's.

mod etcd_forward;

use calico_tests::netns::{host, CniBinDir, Netns};
use calico_tests::{bin, Backend, Invocation, Outcome};
use etcd_forward::forward_etcd;
use serde_json::{json, Value};

fn netconf(backend: &Backend, node: &str, plugin: &str) -> Value {
    let mut conf = json!({
        "cniVersion": "1.1.0",
        "name": "sharednet",
        "type": plugin,
        "nodename": node,
        "log_level": "debug",
        "ipam": {"type": "calico-ipam"},
    });
    backend.apply(&mut conf);
    // Each node has its own host lock (and, on etcd, its own block note beside it).
    conf["ipam"]["lock_file"] = json!(backend.dir().join(format!("{node}.lock")).display().to_string());
    conf
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// GC with an empty list of valid attachments: the runtime on this node has nothing left.
fn gc_all(conf: &Value) -> Vec<u8> {
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    bytes(&gc)
}

fn with_prev(conf: &Value, result: &Value) -> Vec<u8> {
    let mut c = conf.clone();
    c["prevResult"] = result.clone();
    bytes(&c)
}

fn no_attachment(command: &str) -> Invocation {
    Invocation {
        container_id: String::new(),
        ifname: String::new(),
        netns: String::new(),
        ..Invocation::new(command, "")
    }
}

#[test]
fn ipam_gc_on_one_node_leaves_the_other_nodes_allocations() {
    for backend in Backend::all() {
        let name = backend.name();
        backend.ctl(&["pool", "add", "10.71.0.0/24"]).success();
        let (n1, n2) = (netconf(&backend, "node-1", "calico"), netconf(&backend, "node-2", "calico"));
        let ipam = |inv: &Invocation, stdin: &[u8]| inv.run(&bin("calico-ipam"), stdin);
        ipam(&Invocation::new("ADD", "a1"), &bytes(&n1)).expect_ok();
        let b1 = ipam(&Invocation::new("ADD", "b1"), &bytes(&n2)).expect_ok();
        ipam(&Invocation::new("ADD", "b2").ifname("net1"), &bytes(&n2)).expect_ok();

        ipam(&no_attachment("GC"), &gc_all(&n1)).expect_ok();
        assert_eq!(backend.used(), 2, "[{name}] GC on node-1 released node-2's addresses");
        ipam(&Invocation::new("CHECK", "b1"), &with_prev(&n2, &b1)).expect_ok();
        ipam(&Invocation::new("CHECK", "b2").ifname("net1"), &bytes(&n2)).expect_ok();
        ipam(&Invocation::new("CHECK", "a1"), &bytes(&n1)).expect_err(112);
        // A second ADD elsewhere must not be handed node-2's live address.
        let again = ipam(&Invocation::new("ADD", "a2"), &bytes(&n1)).expect_ok();
        assert_ne!(calico_tests::result_ips(&again), calico_tests::result_ips(&b1), "[{name}]");

        ipam(&no_attachment("GC"), &gc_all(&n2)).expect_ok();
        assert_eq!(backend.used(), 1, "[{name}] node-2's GC leaves node-1's a2");
        ipam(&no_attachment("GC"), &gc_all(&n1)).expect_ok();
        assert_eq!(backend.used(), 0, "[{name}]");
        backend.assert_clean();
    }
}

/// One node: a netns playing its host, with a container attached through calico-cni.
struct Node {
    host: Netns,
    conf: Value,
}

impl Node {
    fn run(&self, bins: &CniBinDir, inv: &Invocation, stdin: &[u8]) -> Outcome {
        inv.clone().path(&bins.path()).run_in(&self.host, &bins.plugin("calico"), stdin)
    }
}

#[test]
fn cni_gc_on_one_node_leaves_the_other_nodes_endpoints_and_veths() {
    let bins = CniBinDir::new();
    for backend in Backend::all() {
        let name = backend.name();
        backend.ctl(&["pool", "add", "10.72.0.0/24"]).success();
        let node1 = Node { host: host(), conf: netconf(&backend, "node-1", "calico") };
        let node2 = Node { host: host(), conf: netconf(&backend, "node-2", "calico") };
        let _reach = (forward_etcd(&node1.host, &backend), forward_etcd(&node2.host, &backend));
        let (c1, c2) = (Netns::new("gn"), Netns::new("gn"));
        let add1 = Invocation::new("ADD", "on-node-1").netns(&c1.path());
        let add2 = Invocation::new("ADD", "on-node-2").netns(&c2.path());
        node1.run(&bins, &add1, &bytes(&node1.conf)).expect_ok();
        let r2 = node2.run(&bins, &add2, &bytes(&node2.conf)).expect_ok();
        assert_eq!(node1.host.cali_links().len(), 1);
        assert_eq!(node2.host.cali_links().len(), 1);

        node1.run(&bins, &no_attachment("GC"), &gc_all(&node1.conf)).expect_ok();
        assert_eq!(node1.host.cali_links(), Vec::<String>::new(), "[{name}] node-1's own veth goes");
        assert_eq!(node2.host.cali_links().len(), 1, "[{name}] node-2's veth stays");
        assert_eq!(backend.used(), 1, "[{name}] node-2's address stays");
        // CHECK on node-2 sees its allocation, endpoint record, container and host veth.
        node2.run(&bins, &add2.with_command("CHECK"), &with_prev(&node2.conf, &r2)).expect_ok();
        backend.assert_clean();

        node2.run(&bins, &no_attachment("GC"), &gc_all(&node2.conf)).expect_ok();
        assert_eq!(node2.host.cali_links(), Vec::<String>::new(), "[{name}]");
        assert_eq!(backend.used(), 0, "[{name}]");
        backend.assert_clean();
    }
}
