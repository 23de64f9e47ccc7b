//! calicoctl against workload endpoint records: `ipam release --ip` refuses an address a live
//! endpoint holds (unless --force), and `ipam check` reports endpoints and allocations that
//! have lost each other, without flagging calico-ipam's own (endpoint-less) allocations.

mod etcd_forward;

use calico_tests::netns::{host, CniBinDir, Netns};
use calico_tests::{bin, result_ips, Backend, Invocation};
use datastore::Op;
use etcd_forward::forward_etcd;
use serde_json::json;

fn netconf(backend: &Backend) -> Vec<u8> {
    let mut conf = json!({"cniVersion": "1.0.0", "name": "epnet", "type": "calico", "nodename": "node-1",
                          "log_level": "debug", "ipam": {"type": "calico-ipam"}});
    backend.apply(&mut conf);
    serde_json::to_vec(&conf).unwrap()
}

fn check(backend: &Backend) -> (bool, String) {
    let out = backend.ctl(&["ipam", "check"]);
    (out.ok(), out.stdout)
}

#[test]
fn release_refuses_live_endpoints_and_check_cross_checks_them() {
    let bins = CniBinDir::new();
    for backend in Backend::all() {
        let name = backend.name();
        backend.ctl(&["pool", "add", "10.73.0.0/24"]).success();
        let node = host();
        let _reach = forward_etcd(&node, &backend);
        let conf = netconf(&backend);
        let run = |inv: &Invocation| inv.clone().path(&bins.path()).run_in(&node, &bins.plugin("calico"), &conf);
        let (c1, c2) = (Netns::new("ce"), Netns::new("ce"));
        let add1 = Invocation::new("ADD", "ep-one").netns(&c1.path());
        let add2 = Invocation::new("ADD", "ep-two").netns(&c2.path());
        let ip1 = result_ips(&run(&add1).expect_ok())[0].clone();
        run(&add2).expect_ok();
        // calico-ipam on its own (as when chained with ptp): an allocation without an
        // endpoint record, which is not a problem.
        let solo = Invocation::new("ADD", "solo");
        solo.run(&bin("calico-ipam"), &conf).expect_ok();
        let (clean, report) = check(&backend);
        assert!(clean, "[{name}] {report}");
        assert!(report.contains("2 endpoint(s)"), "[{name}] {report}");

        // Release refuses an address a live endpoint holds, and names the endpoint.
        let out = backend.ctl(&["ipam", "release", "--ip", &ip1]);
        assert!(!out.ok(), "[{name}] released a live endpoint's address: {out:#?}");
        assert!(
            out.stderr.contains("ep-one") && out.stderr.contains("node-1") && out.stderr.contains("--force"),
            "{out:#?}"
        );
        assert_eq!(backend.used(), 3, "[{name}]");
        // Forced: released, and check now sees the endpoint whose address is gone.
        backend.ctl(&["ipam", "release", "--ip", &ip1, "--force"]).success();
        assert_eq!(backend.used(), 2, "[{name}]");
        let (clean, report) = check(&backend);
        assert!(!clean && report.contains(&format!("holds {ip1}, which is not allocated")), "[{name}] {report}");

        // An allocation whose endpoint record is gone.
        let store = backend.open();
        let key = model::keys::endpoint("node-1", "cni", "ep-two", "eth0");
        assert!(store.get(&key).unwrap().is_some(), "[{name}] no endpoint record at {key}");
        store.txn(&[], &[Op::Delete { key }]).unwrap();
        let (_, report) = check(&backend);
        assert!(
            report.contains("handle epnet.ep-two") && report.contains("endpoint record is gone"),
            "[{name}] {report}"
        );

        for inv in [&add1, &add2] {
            run(&inv.with_command("DEL")).expect_ok();
        }
        solo.with_command("DEL").run(&bin("calico-ipam"), &conf).expect_ok();
        assert_eq!(node.cali_links(), Vec::<String>::new(), "[{name}]");
        assert_eq!(backend.used(), 0, "[{name}]");
        backend.assert_clean();
    }
}

#[test]
fn endpoint_show_lists_each_endpoints_port_mappings() {
    let bins = CniBinDir::new();
    let backend = Backend::embedded();
    backend.ctl(&["pool", "add", "10.74.0.0/24"]).success();
    let node = host();
    let plain = netconf(&backend);
    let mut mapped: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    mapped["capabilities"] = json!({"portMappings": true});
    mapped["runtimeConfig"] = json!({"portMappings": [
        {"hostPort": 18400, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 18401, "containerPort": 53, "protocol": "udp", "hostIP": calico_tests::netns::HOST_V4}]});
    let mapped = serde_json::to_vec(&mapped).unwrap();
    let run =
        |inv: &Invocation, conf: &[u8]| inv.clone().path(&bins.path()).run_in(&node, &bins.plugin("calico"), conf);
    let (c1, c2) = (Netns::new("ce"), Netns::new("ce"));
    let add1 = Invocation::new("ADD", "ep-mapped").netns(&c1.path());
    let add2 = Invocation::new("ADD", "ep-plain").netns(&c2.path());
    let ip1 = result_ips(&run(&add1, &mapped).expect_ok())[0].clone();
    run(&add2, &plain).expect_ok();

    let table = backend.ctl(&["endpoint", "show"]).success().stdout.clone();
    let line =
        |id: &str| table.lines().find(|l| l.contains(id)).unwrap_or_else(|| panic!("no {id}: {table}")).to_owned();
    let host_v4 = calico_tests::netns::HOST_V4;
    assert!(table.starts_with("NODE") && table.lines().next().unwrap().ends_with("PORTS"), "{table}");
    assert!(table.lines().next().unwrap().contains(" CONTAINER "), "{table}");
    // The container id, which `calicoctl container <C>` takes, and the mappings, per container.
    let shown = backend.ctl(&["container", "ep-mapped", "endpoint", "show"]).success().stdout.clone();
    assert!(shown.lines().next().unwrap().ends_with("PORTS"), "{shown}");
    assert!(shown.lines().nth(1).unwrap().ends_with(&format!("18400/tcp->{ip1}:80,{host_v4}:18401/udp->{ip1}:53")));
    assert!(line("ep-mapped").ends_with(&format!("18400/tcp->{ip1}:80,{host_v4}:18401/udp->{ip1}:53")), "{table}");
    assert!(line("ep-plain").ends_with(" -"), "{table}");

    let shown = backend.ctl(&["endpoint", "show", "-o", "json"]).expect_ok();
    let by_id = |id: &str| shown.as_array().unwrap().iter().find(|e| e["container_id"] == id).cloned().unwrap();
    assert_eq!(
        by_id("ep-mapped")["port_mappings"],
        json!([{"protocol": "tcp", "host_port": 18400, "container_ip": ip1, "container_port": 80},
               {"protocol": "udp", "host_ip": host_v4, "host_port": 18401, "container_ip": ip1, "container_port": 53}]),
        "{shown}"
    );
    assert_eq!(by_id("ep-plain")["port_mappings"], json!([]), "{shown}");
    assert!(by_id("ep-plain").get("result").is_none(), "{shown}");
    assert_eq!(backend.ctl(&["endpoint", "show", "--node", "node-2", "-o", "json"]).expect_ok(), json!([]));

    run(&add1.with_command("DEL"), &mapped).expect_ok();
    run(&add2.with_command("DEL"), &plain).expect_ok();
    assert_eq!(backend.ctl(&["endpoint", "show", "-o", "json"]).expect_ok(), json!([]));
    backend.assert_clean();
}
