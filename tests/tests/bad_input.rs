//! The bad-input matrix: every case gets the spec's code, error JSON on stdout, a non-zero
//! exit, and leaves nothing allocated.

use calico_tests::{bin, Backend, Invocation};
use serde_json::{json, Value};

fn good(backend: &Backend) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": "bad", "type": "calico", "nodename": "n1",
                       "ipam": {"type": "calico-ipam"}});
    backend.apply(&mut c);
    c
}

fn with(mut base: Value, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    f(&mut base);
    serde_json::to_vec(&base).unwrap()
}

#[test]
fn every_bad_input_gets_its_code_and_allocates_nothing() {
    let backend = Backend::embedded();
    backend.ctl(&["pool", "add", "10.95.0.0/24"]).success();
    let base = good(&backend);
    let add = Invocation::new("ADD", "bad1");
    let big = {
        let mut v = base.clone();
        v["padding"] = Value::from("x".repeat(10 << 20));
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<(&str, Invocation, Vec<u8>, &[u64])> = vec![
        (
            "malformed JSON",
            add.clone(),
            b"{\"cniVersion\": \"1.0.0\", ".to_vec(),
            &[6],
        ),
        ("not an object", add.clone(), b"[1,2,3]".to_vec(), &[6, 7]),
        ("empty stdin", add.clone(), Vec::new(), &[6, 7]),
        (
            "missing network name",
            add.clone(),
            with(base.clone(), |v| {
                v.as_object_mut().unwrap().remove("name");
            }),
            &[7],
        ),
        (
            "wrong type: name",
            add.clone(),
            with(base.clone(), |v| v["name"] = json!(42)),
            &[7],
        ),
        (
            "wrong type: ipam",
            add.clone(),
            with(base.clone(), |v| v["ipam"] = json!("calico-ipam")),
            &[7],
        ),
        (
            "wrong type: pools",
            add.clone(),
            with(base.clone(), |v| {
                v["ipam"]["ipv4_pools"] = json!("10.95.0.0/24")
            }),
            &[7],
        ),
        (
            "wrong type: assign_ipv4",
            add.clone(),
            with(base.clone(), |v| v["ipam"]["assign_ipv4"] = json!(5)),
            &[7],
        ),
        (
            "invalid CIDR",
            add.clone(),
            with(base.clone(), |v| {
                v["ipam"]["ipv4_pools"] = json!(["10.300.0.0/24"])
            }),
            &[7],
        ),
        (
            "IPv6 CIDR in ipv4_pools",
            add.clone(),
            with(base.clone(), |v| {
                v["ipam"]["ipv4_pools"] = json!(["fd00::/64"])
            }),
            &[7],
        ),
        (
            "invalid runtimeConfig ip",
            add.clone(),
            with(base.clone(), |v| {
                v["runtimeConfig"] = json!({"ips": ["10.95.0.999"]})
            }),
            &[7],
        ),
        (
            "unknown version",
            add.clone(),
            with(base.clone(), |v| v["cniVersion"] = json!("9.9.9")),
            &[1],
        ),
        ("10 MB stdin", add.clone(), big, &[6, 7]),
        (
            "unreachable store",
            add.clone(),
            with(base.clone(), |v| {
                v["datastore_path"] = json!("/proc/none/store.db")
            }),
            &[5, 11],
        ),
        (
            "missing CNI_CONTAINERID",
            Invocation::new("ADD", ""),
            serde_json::to_vec(&base).unwrap(),
            &[4],
        ),
        (
            "bad CNI_CONTAINERID",
            Invocation::new("ADD", "-leading-dash"),
            serde_json::to_vec(&base).unwrap(),
            &[4],
        ),
        (
            "CNI_CONTAINERID with a slash",
            Invocation::new("ADD", "a/b"),
            serde_json::to_vec(&base).unwrap(),
            &[4],
        ),
        (
            "CNI_IFNAME too long",
            add.clone().ifname("a-very-long-ifname"),
            serde_json::to_vec(&base).unwrap(),
            &[4],
        ),
        (
            "CNI_IFNAME with a colon",
            add.clone().ifname("eth:0"),
            serde_json::to_vec(&base).unwrap(),
            &[4],
        ),
        (
            "CNI_IFNAME is ..",
            add.clone().ifname(".."),
            serde_json::to_vec(&base).unwrap(),
            &[4],
        ),
        (
            "missing CNI_IFNAME",
            add.clone().ifname(""),
            serde_json::to_vec(&base).unwrap(),
            &[4],
        ),
        (
            "missing CNI_PATH",
            add.clone().path(""),
            serde_json::to_vec(&base).unwrap(),
            &[4],
        ),
        (
            "unknown CNI_COMMAND",
            add.with_command("FROB"),
            serde_json::to_vec(&base).unwrap(),
            &[4],
        ),
        (
            "missing CNI_COMMAND",
            add.with_command(""),
            serde_json::to_vec(&base).unwrap(),
            &[4],
        ),
        (
            "unknown CNI_ARGS key",
            add.clone().args("FOO=bar"),
            serde_json::to_vec(&base).unwrap(),
            &[4],
        ),
        (
            "malformed CNI_ARGS",
            add.clone().args("IP"),
            serde_json::to_vec(&base).unwrap(),
            &[4],
        ),
        (
            "bad IP in CNI_ARGS",
            add.clone().args("IP=10.95.0.500"),
            serde_json::to_vec(&base).unwrap(),
            &[4],
        ),
    ];
    for (name, inv, stdin, codes) in cases {
        let out = inv.run(&bin("calico-ipam"), &stdin);
        assert!(!out.ok(), "{name}: expected failure, got {out:#?}");
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: stdout is not error JSON ({e}): {out:#?}"));
        let code = v["code"].as_u64().unwrap_or_default();
        assert!(
            codes.contains(&code),
            "{name}: code {code}, wanted {codes:?}: {out:#?}"
        );
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: no msg"
        );
        assert!(
            !out.stderr.contains("panicked"),
            "{name}: panicked: {}",
            out.stderr
        );
        assert_eq!(backend.used(), 0, "{name}: something was allocated");
    }
    backend.assert_clean();
}
