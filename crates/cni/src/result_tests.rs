use serde_json::json;

use super::*;
use crate::CniCode;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Dual-stack, two interfaces, routes with 1.1.0 fields, two IPv4 addresses.
fn sample() -> CniResult {
    CniResult {
        interfaces: vec![
            Interface { name: "cali12345".into(), mac: Some("ee:ee:ee:ee:ee:ee".into()), ..Interface::default() },
            Interface {
                name: "eth0".into(),
                mac: Some("0a:58:0a:00:00:05".into()),
                mtu: Some(1450),
                sandbox: Some("/var/run/netns/pod".into()),
                socket_path: Some("/run/vhost.sock".into()),
                pci_id: Some("0000:00:1f.6".into()),
            },
        ],
        ips: vec![
            IpConfig { address: net("10.0.0.5/26"), gateway: Some(ip("169.254.1.1")), interface: Some(1) },
            IpConfig { address: net("fd00::5/122"), gateway: None, interface: Some(1) },
            IpConfig { address: net("10.0.0.6/26"), gateway: None, interface: Some(1) },
        ],
        routes: vec![
            Route {
                mtu: Some(1400),
                advmss: Some(1360),
                priority: Some(10),
                table: Some(100),
                scope: Some(0),
                ..Route::new(net("0.0.0.0/0"), Some(ip("169.254.1.1")))
            },
            Route::new(net("::/0"), Some(ip("fe80::1"))),
            Route::new(net("10.96.0.0/12"), None),
        ],
        dns: Dns {
            nameservers: vec!["10.96.0.10".into()],
            domain: Some("cluster.local".into()),
            search: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        },
    }
}

fn dns_json() -> Value {
    json!({
        "nameservers": ["10.96.0.10"],
        "domain": "cluster.local",
        "search": ["default.svc.cluster.local"],
        "options": ["ndots:5"],
    })
}

fn golden_legacy(v: &str) -> Value {
    json!({
        "cniVersion": v,
        "ip4": {
            "ip": "10.0.0.5/26",
            "gateway": "169.254.1.1",
            "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "10.96.0.0/12"}],
        },
        "ip6": {"ip": "fd00::5/122", "routes": [{"dst": "::/0", "gw": "fe80::1"}]},
        "dns": dns_json(),
    })
}

fn golden_03x(v: &str) -> Value {
    json!({
        "cniVersion": v,
        "interfaces": [
            {"name": "cali12345", "mac": "ee:ee:ee:ee:ee:ee"},
            {"name": "eth0", "mac": "0a:58:0a:00:00:05", "sandbox": "/var/run/netns/pod"},
        ],
        "ips": [
            {"version": "4", "address": "10.0.0.5/26", "gateway": "169.254.1.1", "interface": 1},
            {"version": "6", "address": "fd00::5/122", "interface": 1},
            {"version": "4", "address": "10.0.0.6/26", "interface": 1},
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
            {"dst": "::/0", "gw": "fe80::1"},
            {"dst": "10.96.0.0/12"},
        ],
        "dns": dns_json(),
    })
}

fn golden_100() -> Value {
    let mut v = golden_03x("1.0.0");
    for ip in v["ips"].as_array_mut().unwrap() {
        ip.as_object_mut().unwrap().remove("version");
    }
    v
}

fn golden_110() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "cali12345", "mac": "ee:ee:ee:ee:ee:ee"},
            {"name": "eth0", "mac": "0a:58:0a:00:00:05", "mtu": 1450, "sandbox": "/var/run/netns/pod",
             "socketPath": "/run/vhost.sock", "pciID": "0000:00:1f.6"},
        ],
        "ips": [
            {"address": "10.0.0.5/26", "gateway": "169.254.1.1", "interface": 1},
            {"address": "fd00::5/122", "interface": 1},
            {"address": "10.0.0.6/26", "interface": 1},
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "169.254.1.1", "mtu": 1400, "advmss": 1360, "priority": 10,
             "table": 100, "scope": 0},
            {"dst": "::/0", "gw": "fe80::1"},
            {"dst": "10.96.0.0/12"},
        ],
        "dns": dns_json(),
    })
}

fn golden(v: Version) -> Value {
    match v {
        Version::V0_1_0 | Version::V0_2_0 => golden_legacy(v.as_str()),
        Version::V0_3_0 | Version::V0_3_1 | Version::V0_4_0 => golden_03x(v.as_str()),
        Version::V1_0_0 => golden_100(),
        Version::V1_1_0 => golden_110(),
    }
}

#[test]
fn golden_every_version() {
    let r = sample();
    for v in Version::ALL {
        assert_eq!(r.to_json(v), golden(v), "version {v}");
    }
}

#[test]
fn round_trip_every_version() {
    let r = sample();
    for v in Version::ALL {
        let written = r.to_json(v);
        let parsed = CniResult::from_json(&written).unwrap();
        assert_eq!(parsed.to_json(v), written, "version {v}");
    }
    assert_eq!(CniResult::from_json(&r.to_json(Version::V1_1_0)).unwrap(), r);
    // Each older version loses exactly what it cannot say.
    let legacy = CniResult::from_json(&r.to_json(Version::V0_2_0)).unwrap();
    assert!(legacy.interfaces.is_empty());
    assert_eq!(legacy.ips.len(), 2);
    assert_eq!(legacy.routes.len(), 3);
    assert_eq!(legacy.dns, r.dns);
    let v100 = CniResult::from_json(&r.to_json(Version::V1_0_0)).unwrap();
    assert_eq!(v100.ips, r.ips);
    assert_eq!(v100.routes[0], Route::new(net("0.0.0.0/0"), Some(ip("169.254.1.1"))));
    assert_eq!(v100.interfaces[1].mtu, None);
}

#[test]
fn empty_result_writes_only_version_and_dns() {
    let r = CniResult::default();
    assert_eq!(r.to_json(Version::V0_2_0), json!({"cniVersion": "0.2.0", "dns": {}}));
    assert_eq!(r.to_json(Version::V1_0_0), json!({"cniVersion": "1.0.0", "dns": {}}));
}

#[test]
fn ipam_result_without_interfaces() {
    let r = CniResult {
        ips: vec![IpConfig { address: net("10.0.0.5/32"), gateway: None, interface: None }],
        ..CniResult::default()
    };
    assert_eq!(
        r.to_json(Version::V0_3_1),
        json!({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.0.0.5/32"}], "dns": {}})
    );
}

#[test]
fn host_local_outputs() {
    let v031 = json!({
        "cniVersion": "0.3.1",
        "ips": [{"version": "4", "address": "10.22.0.2/16", "gateway": "10.22.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {}
    });
    let v040 = json!({
        "cniVersion": "0.4.0",
        "ips": [
            {"version": "4", "address": "10.22.0.2/16", "gateway": "10.22.0.1"},
            {"version": "6", "address": "2001:db8::2/64", "gateway": "2001:db8::1"}
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        "dns": {}
    });
    let v100 = json!({
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.22.0.2/16", "gateway": "10.22.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {}
    });
    let expect_v4 = IpConfig { address: net("10.22.0.2/16"), gateway: Some(ip("10.22.0.1")), interface: None };
    for doc in [&v031, &v040, &v100] {
        let r = CniResult::from_json(doc).unwrap();
        assert!(r.interfaces.is_empty());
        assert_eq!(r.ips[0], expect_v4);
        assert_eq!(r.routes[0], Route::new(net("0.0.0.0/0"), None));
        assert_eq!(r.dns, Dns::default());
        // Written back in its own version, it is the same document.
        let v = Version::parse(doc["cniVersion"].as_str().unwrap()).unwrap();
        assert_eq!(&r.to_json(v), doc);
    }
    let r = CniResult::from_json(&v040).unwrap();
    assert_eq!(r.ips[1].address, net("2001:db8::2/64"));
}

#[test]
fn legacy_and_ptp_like_inputs() {
    let v020 = json!({
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.2.3/24", "gateway": "10.1.2.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "dns": {"nameservers": ["8.8.8.8"]}
    });
    let r = CniResult::from_json(&v020).unwrap();
    assert_eq!(r.ips.len(), 1);
    assert_eq!(r.routes.len(), 1);
    assert_eq!(r.dns.nameservers, ["8.8.8.8"]);
    // No cniVersion: the shape decides.
    let r = CniResult::from_json(&json!({"ip6": {"ip": "fd00::1/64"}})).unwrap();
    assert_eq!(r.ips[0].address, net("fd00::1/64"));

    let ptp = json!({
        "cniVersion": "0.4.0",
        "interfaces": [
            {"name": "veth1234", "mac": "aa:aa:aa:aa:aa:aa"},
            {"name": "eth0", "mac": "bb:bb:bb:bb:bb:bb", "sandbox": "/var/run/netns/x"}
        ],
        "ips": [{"version": "4", "interface": 1, "address": "10.1.1.2/24", "gateway": "10.1.1.1"}],
        "routes": null,
        "dns": {"nameservers": null, "domain": ""}
    });
    let r = CniResult::from_json(&ptp).unwrap();
    assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/var/run/netns/x"));
    assert_eq!(r.ips[0].interface, Some(1));
    assert!(r.routes.is_empty());
    assert_eq!(r.dns, Dns::default());
}

#[test]
fn malformed_results() {
    let cases = [
        json!([1]),
        json!({"cniVersion": "9.9.9"}),
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/24"}]}),
        json!({"cniVersion": "1.0.0", "ips": [{"gateway": "10.0.0.1"}]}),
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/24", "interface": 0}]}),
        json!({"cniVersion": "1.0.0", "routes": [{"dst": "x"}]}),
        json!({"cniVersion": "0.2.0", "ip4": {"gateway": "10.0.0.1"}}),
    ];
    for doc in cases {
        let err = CniResult::from_json(&doc).unwrap_err();
        assert!(matches!(err, Error::InvalidResult { .. }), "{doc}: {err:?}");
        assert_eq!(err.cni_code(), 6);
    }
    let err = CniResult::from_json(&json!({"cniVersion": "1.0.0", "routes": [{"dst": "x"}]})).unwrap_err();
    assert!(err.to_string().contains("routes[0].dst"), "{err}");
}

#[test]
fn results_are_objects_all_the_way_down() {
    // serde would read these arrays by position.
    for bad in [
        json!([]),
        json!({"ips": [["10.0.0.5/32"]]}),
        json!({"interfaces": [["eth0"]]}),
        json!({"dns": [["10.0.0.53"]]}),
        json!({"cniVersion": "0.2.0", "ip4": ["10.0.0.5/32"]}),
    ] {
        let err = CniResult::from_json(&bad).unwrap_err();
        // The JSON error is the cause: in `details`, once.
        let failure = crate::Failure::from_error(err.cni_code(), &err);
        assert!(failure.msg.starts_with("invalid CNI result: field "), "{bad}: {failure}");
        assert!(failure.details.contains("expected an object"), "{bad}: {failure}");
    }
}
