use super::*;
use crate::CniCode;

/// A plugin config shaped like the plugins' own: shared part flattened, plus own fields.
#[derive(Debug, Deserialize)]
struct PluginConf {
    #[serde(flatten)]
    common: NetConf,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    log_level: Option<String>,
}

/// A plugin's own view of a shared section: parsed alongside NetConf, not flattened.
#[derive(Debug, Deserialize)]
struct IpamPluginConf {
    ipam: PluginIpam,
}

#[derive(Debug, Deserialize)]
struct PluginIpam {
    #[serde(default)]
    ipv4_pools: Vec<String>,
}

/// No flatten: a required field, nested.
#[derive(Debug, Deserialize)]
struct Strict {
    #[allow(dead_code)]
    inner: Inner,
}

#[derive(Debug, Deserialize)]
struct Inner {
    #[allow(dead_code)]
    pool: String,
}

fn field_of(err: &Error) -> &str {
    match err {
        Error::InvalidConfig { field, .. } => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn full_netconf() {
    let conf: NetConf = parse_config(
        br#"{
            "cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "calico",
            "ipam": {"type": "calico-ipam", "assign_ipv4": "true"},
            "prevResult": {"ips": []},
            "runtimeConfig": {"ips": ["10.0.0.5/24"], "mac": "aa:bb:cc:dd:ee:ff",
                "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]},
            "args": {"cni": {"ips": ["10.0.0.6"]}},
            "cni.dev/attachments": [{"containerID": "abc", "ifname": "eth0"}]
        }"#,
    )
    .unwrap();
    assert_eq!(conf.cni_version, "1.1.0");
    assert_eq!(conf.name, "k8s-pod-network");
    assert_eq!(conf.plugin_type, "calico");
    assert_eq!(conf.ipam.unwrap().plugin_type, "calico-ipam");
    assert!(conf.prev_result.is_some());
    assert_eq!(conf.runtime_config.mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
    assert_eq!(
        conf.runtime_config.port_mappings,
        vec![PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: None }]
    );
    assert_eq!(conf.valid_attachments, Some(vec![Attachment { container_id: "abc".into(), ifname: "eth0".into() }]));
}

#[test]
fn empty_object_gives_defaults() {
    let conf: NetConf = parse_config(b"{}").unwrap();
    assert_eq!(conf.cni_version, "");
    assert!(conf.ipam.is_none());
    assert!(conf.requested_ips().unwrap().is_empty());
}

#[test]
fn malformed_json_is_decode() {
    for bad in [&b""[..], b"{", b"{\"name\": }", b"not json", b"{} trailing", b"{\"a\":1}}"] {
        let err = parse_config::<NetConf>(bad).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{:?}: {err:?}", String::from_utf8_lossy(bad));
        assert_eq!(err.cni_code(), 6);
    }
}

#[test]
fn wrong_type_in_own_field_with_flatten() {
    let err = parse_config::<PluginConf>(br#"{"name": "n", "mtu": "x"}"#).unwrap_err();
    assert_eq!(err.cni_code(), 7);
    assert_eq!(field_of(&err), "mtu");
    assert!(err.to_string().contains("mtu"), "{err}");
    assert!(!err.to_string().contains("line 1"), "{err}");
}

#[test]
fn wrong_type_in_flattened_netconf() {
    let err = parse_config::<PluginConf>(br#"{"name": 5}"#).unwrap_err();
    assert_eq!(err.cni_code(), 7);
    assert_eq!(field_of(&err), "name");

    let err = parse_config::<PluginConf>(br#"{"name": "n", "runtimeConfig": {"ips": ["a", 7]}}"#).unwrap_err();
    assert_eq!(field_of(&err), "runtimeConfig.ips[1]");
}

#[test]
fn nested_own_field_path() {
    let json = br#"{"name": "n", "ipam": {"type": "calico-ipam", "ipv4_pools": ["10.0.0.0/8", 5]}}"#;
    let err = parse_plugin_config::<IpamPluginConf>(json).unwrap_err();
    assert_eq!(field_of(&err), "ipam.ipv4_pools[1]");
    assert!(err.to_string().contains("invalid type: integer `5`"), "{err}");
}

#[test]
fn shared_section_read_by_both() {
    let json = br#"{"name": "n", "mtu": 1400, "ipam": {"type": "calico-ipam", "ipv4_pools": ["10.0.0.0/8"]}}"#;
    let (common, own) = parse_plugin_config::<IpamPluginConf>(json).unwrap();
    assert_eq!(common.ipam.unwrap().plugin_type, "calico-ipam");
    assert_eq!(own.ipam.ipv4_pools, ["10.0.0.0/8"]);
    let flat: PluginConf = parse_config(json).unwrap();
    assert_eq!(flat.common.ipam.unwrap().plugin_type, "calico-ipam");
    assert_eq!(flat.mtu, Some(1400));
    assert_eq!(flat.log_level, None);
}

#[test]
fn missing_field_names_it() {
    let err = parse_config::<Strict>(br#"{"inner": {}}"#).unwrap_err();
    assert_eq!(field_of(&err), "inner.pool");
    let err = parse_config::<Strict>(br#"{}"#).unwrap_err();
    assert_eq!(field_of(&err), "inner");
    let err = parse_config::<NetConf>(br#"{"ipam": {}}"#).unwrap_err();
    assert_eq!(field_of(&err), "ipam.type");
    let err = parse_config::<PluginConf>(br#"{"ipam": {}}"#).unwrap_err();
    assert_eq!(field_of(&err), "ipam.type");
    let err = parse_plugin_config::<IpamPluginConf>(br#"{"name": "n"}"#).unwrap_err();
    assert_eq!(field_of(&err), "ipam");
}

#[test]
fn top_level_wrong_type() {
    let err = parse_config::<NetConf>(br#""a string""#).unwrap_err();
    assert_eq!(err.cni_code(), 7);
    assert_eq!(field_of(&err), "(top level)");
    // serde reads a struct from an array positionally: the error names the element.
    let err = parse_config::<NetConf>(b"[1, 2]").unwrap_err();
    assert_eq!(err.cni_code(), 7);
}

#[test]
fn requested_ips_union() {
    let conf: NetConf = parse_config(
        br#"{"runtimeConfig": {"ips": ["10.0.0.5/24", "fd00::5"]},
             "args": {"cni": {"ips": ["10.0.0.5", "10.0.0.6"]}}}"#,
    )
    .unwrap();
    let ips: Vec<String> = conf.requested_ips().unwrap().iter().map(|ip| ip.to_string()).collect();
    assert_eq!(ips, ["10.0.0.5", "fd00::5", "10.0.0.6"]);
}

#[test]
fn requested_ips_invalid_names_field() {
    for (json, field) in [
        (&br#"{"runtimeConfig": {"ips": ["10.0.0.5", "10.0.0.x"]}}"#[..], "runtimeConfig.ips[1]"),
        (br#"{"args": {"cni": {"ips": ["10.0.0.5/33"]}}}"#, "args.cni.ips[0]"),
        (br#"{"args": {"cni": {"ips": ["fd00::1/129"]}}}"#, "args.cni.ips[0]"),
    ] {
        let conf: NetConf = parse_config(json).unwrap();
        let err = conf.requested_ips().unwrap_err();
        assert_eq!(err.cni_code(), 7);
        assert_eq!(field_of(&err), field);
    }
}

#[test]
fn every_object_field_must_be_an_object() {
    // serde's derived structs would read these arrays by position.
    for (json, field) in [
        (&br#"{"ipam": ["calico-ipam"]}"#[..], "ipam"),
        (br#"{"ipam": 5}"#, "ipam"),
        (br#"{"runtimeConfig": [["10.77.0.9"]]}"#, "runtimeConfig"),
        (br#"{"runtimeConfig": {"portMappings": [[80, 8080]]}}"#, "runtimeConfig.portMappings[0]"),
        (br#"{"args": [[["10.77.0.9"]]]}"#, "args"),
        (br#"{"args": {"cni": [["10.77.0.9"]]}}"#, "args.cni"),
        (br#"{"prevResult": []}"#, "prevResult"),
        (br#"{"prevResult": "x"}"#, "prevResult"),
        (br#"{"cni.dev/valid-attachments": [["c1", "eth0"]]}"#, "cni.dev/valid-attachments[0]"),
        (br#"{"capabilities": [true]}"#, "capabilities"),
        (br#"["1.0.0", "n"]"#, "(top level)"),
    ] {
        let err = parse_config::<NetConf>(json).unwrap_err();
        assert_eq!(err.cni_code(), 7, "{err}");
        assert_eq!(field_of(&err), field, "{err}");
        assert!(err.to_string().contains("expected an object"), "{err}");
    }
    // Objects (and null for the optional ones) still read.
    let conf: NetConf = parse_config(
        br#"{"ipam": null, "prevResult": {}, "args": {"cni": null}, "capabilities": {"ips": true},
            "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 8080}]}}"#,
    )
    .unwrap();
    assert!(conf.ipam.is_none() && conf.prev_result.is_some());
    assert_eq!(conf.runtime_config.port_mappings[0].host_port, 80);
}
