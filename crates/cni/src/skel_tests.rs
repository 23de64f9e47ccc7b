use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::Value;

use super::*;
use crate::{IpConfig, Route};

#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error("datastore unavailable")]
    Unavailable(#[source] io::Error),
}

impl CniCode for TestError {
    fn cni_code(&self) -> u32 {
        code::TRY_AGAIN_LATER
    }
}

/// Behaviour chosen by the config's `"behaviour"`: "fail", "panic", or succeed.
#[derive(Default)]
struct TestPlugin {
    calls: RefCell<Vec<(Command, Version)>>,
}

#[derive(Deserialize)]
struct TestConf {
    #[serde(default)]
    behaviour: String,
}

impl TestPlugin {
    fn call(&self, req: &Request) -> Result<(), TestError> {
        self.calls.borrow_mut().push((req.env.command, req.version));
        let conf: TestConf = serde_json::from_slice(&req.stdin).unwrap_or(TestConf { behaviour: String::new() });
        match conf.behaviour.as_str() {
            "fail" => Err(TestError::Unavailable(io::Error::other("connection refused"))),
            "panic" => panic!("boom"),
            _ => Ok(()),
        }
    }
}

fn sample_result() -> CniResult {
    CniResult {
        ips: vec![IpConfig { address: "10.0.0.5/32".parse().unwrap(), gateway: None, interface: None }],
        routes: vec![Route::new("0.0.0.0/0".parse().unwrap(), None)],
        ..CniResult::default()
    }
}

impl Plugin for TestPlugin {
    type Error = TestError;
    fn add(&self, req: &Request) -> Result<CniResult, TestError> {
        self.call(req).map(|()| sample_result())
    }
    fn del(&self, req: &Request) -> Result<(), TestError> {
        self.call(req)
    }
    fn check(&self, req: &Request) -> Result<(), TestError> {
        self.call(req)
    }
    fn gc(&self, req: &Request) -> Result<(), TestError> {
        self.call(req)
    }
    fn status(&self, req: &Request) -> Result<(), TestError> {
        self.call(req)
    }
}

struct Outcome {
    status: ExitCode,
    stdout: String,
}

impl Outcome {
    /// The one JSON document on stdout.
    fn doc(&self) -> Value {
        assert_eq!(self.stdout.matches('\n').count(), 1, "{:?}", self.stdout);
        serde_json::from_str(&self.stdout).unwrap()
    }

    fn failure(&self) -> Failure {
        assert_eq!(self.status, ExitCode::FAILURE);
        serde_json::from_value(self.doc()).unwrap()
    }
}

fn vars(command: &str) -> HashMap<&'static str, String> {
    HashMap::from([
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", "ctr".to_string()),
        ("CNI_NETNS", "/var/run/netns/ctr".to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", "/opt/cni/bin".to_string()),
    ])
}

fn run_plugin(plugin: &TestPlugin, env: &HashMap<&'static str, String>, stdin: Option<&[u8]>) -> Outcome {
    let mut out = Vec::new();
    let mut input = stdin;
    let status = run_with(plugin, |k| env.get(k).cloned(), input.as_mut().map(|r| r as &mut dyn Read), &mut out);
    Outcome { status, stdout: String::from_utf8(out).unwrap() }
}

fn conf(version: &str, extra: &str) -> Vec<u8> {
    format!(r#"{{"cniVersion":"{version}","name":"net1","type":"calico"{extra}}}"#).into_bytes()
}

#[test]
fn add_prints_result_in_requested_version() {
    for v in Version::ALL {
        let plugin = TestPlugin::default();
        let out = run_plugin(&plugin, &vars("ADD"), Some(&conf(v.as_str(), "")));
        assert_eq!(out.status, ExitCode::SUCCESS, "{v}: {}", out.stdout);
        assert_eq!(out.doc(), sample_result().to_json(v), "{v}");
        assert_eq!(*plugin.calls.borrow(), [(Command::Add, v)]);
    }
}

#[test]
fn missing_cni_version_is_0_1_0() {
    let plugin = TestPlugin::default();
    let out = run_plugin(&plugin, &vars("ADD"), Some(br#"{"name":"net1"}"#));
    assert_eq!(out.doc()["cniVersion"], "0.1.0");
    assert_eq!(out.doc()["ip4"]["ip"], "10.0.0.5/32");
}

#[test]
fn config_errors() {
    let cases: [(&[u8], u32, &str); 5] = [
        (br#"{"cniVersion":"0.9.0","name":"n"}"#, 1, "0.9.0"),
        (b"{not json", 6, "malformed"),
        (br#"{"cniVersion":"1.0.0"}"#, 7, "name"),
        (br#"{"cniVersion":"1.0.0","name":"bad name"}"#, 7, "bad name"),
        (br#"{"cniVersion":"1.0.0","name":7}"#, 7, "name"),
    ];
    for (stdin, code, needle) in cases {
        let plugin = TestPlugin::default();
        let out = run_plugin(&plugin, &vars("ADD"), Some(stdin));
        let f = out.failure();
        assert_eq!(f.code, code, "{}", out.stdout);
        assert!(f.msg.contains(needle) || f.details.contains(needle), "{}", out.stdout);
        assert!(plugin.calls.borrow().is_empty());
    }
    // Errors found after the version is known are printed in it.
    let out = run_plugin(&TestPlugin::default(), &vars("DEL"), Some(br#"{"cniVersion":"0.3.1"}"#));
    assert_eq!(out.failure().cni_version, "0.3.1");
}

#[test]
fn env_errors_are_code_4_and_plugin_not_called() {
    let plugin = TestPlugin::default();
    let mut env = vars("ADD");
    env.remove("CNI_IFNAME");
    let out = run_plugin(&plugin, &env, Some(&conf("1.0.0", "")));
    let f = out.failure();
    assert_eq!(f.code, 4);
    assert!(f.msg.contains("CNI_IFNAME"), "{}", f.msg);
    assert_eq!(f.cni_version, "1.1.0");
    assert!(plugin.calls.borrow().is_empty());
}

#[test]
fn check_gc_status_gated_by_version() {
    for (command, too_old, ok) in [("CHECK", "0.3.1", "0.4.0"), ("GC", "1.0.0", "1.1.0"), ("STATUS", "1.0.0", "1.1.0")]
    {
        let plugin = TestPlugin::default();
        let f = run_plugin(&plugin, &vars(command), Some(&conf(too_old, ""))).failure();
        assert_eq!(f.code, 1, "{command}");
        assert!(f.msg.contains(command) && f.msg.contains(too_old), "{}", f.msg);
        assert!(plugin.calls.borrow().is_empty());

        let out = run_plugin(&plugin, &vars(command), Some(&conf(ok, "")));
        assert_eq!(out.status, ExitCode::SUCCESS, "{command}: {}", out.stdout);
        assert_eq!(out.stdout, "");
        assert_eq!(plugin.calls.borrow().len(), 1);
    }
}

#[test]
fn del_prints_nothing() {
    let plugin = TestPlugin::default();
    let mut env = vars("DEL");
    env.remove("CNI_NETNS");
    let out = run_plugin(&plugin, &env, Some(&conf("0.2.0", "")));
    assert_eq!(out.status, ExitCode::SUCCESS);
    assert_eq!(out.stdout, "");
    assert_eq!(*plugin.calls.borrow(), [(Command::Del, Version::V0_2_0)]);
}

#[test]
fn plugin_error_keeps_code_and_chain() {
    let plugin = TestPlugin::default();
    let out = run_plugin(&plugin, &vars("ADD"), Some(&conf("0.4.0", r#","behaviour":"fail""#)));
    let f = out.failure();
    assert_eq!(f.code, 11);
    assert_eq!(f.msg, "datastore unavailable");
    assert_eq!(f.details, "connection refused");
    assert_eq!(f.cni_version, "0.4.0");
}

#[test]
fn panic_becomes_code_100() {
    let plugin = TestPlugin::default();
    let out = run_plugin(&plugin, &vars("DEL"), Some(&conf("1.0.0", r#","behaviour":"panic""#)));
    let f = out.failure();
    assert_eq!(f.code, 100);
    assert!(f.msg.contains("boom"), "{}", f.msg);
    assert_eq!(f.cni_version, "1.0.0");
}

#[test]
fn version_command() {
    let env = HashMap::from([("CNI_COMMAND", "VERSION".to_string())]);
    let plugin = TestPlugin::default();
    let out = run_plugin(&plugin, &env, None);
    assert_eq!(out.status, ExitCode::SUCCESS);
    assert_eq!(out.doc(), crate::version_info(Version::LATEST));
    let out = run_plugin(&plugin, &env, Some(br#"{"cniVersion":"0.3.1"}"#));
    assert_eq!(out.doc()["cniVersion"], "0.3.1");
    assert_eq!(out.doc()["supportedVersions"].as_array().unwrap().len(), 7);
    for junk in [&b"garbage"[..], br#"{"cniVersion":"7.0.0"}"#, b""] {
        let out = run_plugin(&plugin, &env, Some(junk));
        assert_eq!(out.doc()["cniVersion"], "1.1.0");
    }
    assert!(plugin.calls.borrow().is_empty());
}

#[test]
fn stdin_limits_and_failures() {
    let plugin = TestPlugin::default();
    let env = vars("ADD");
    let mut big = io::repeat(b' ').take(STDIN_LIMIT as u64 + 1);
    let mut out = Vec::new();
    let status = run_with(&plugin, |k| env.get(k).cloned(), Some(&mut big), &mut out);
    assert_eq!(status, ExitCode::FAILURE);
    let f: Failure = serde_json::from_slice(&out).unwrap();
    assert_eq!(f.code, 7);
    assert!(f.msg.contains("4194304"), "{}", f.msg);

    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("EIO"))
        }
    }
    let mut out = Vec::new();
    run_with(&plugin, |k| env.get(k).cloned(), Some(&mut Broken), &mut out);
    let f: Failure = serde_json::from_slice(&out).unwrap();
    assert_eq!(f.code, 5);
    assert_eq!(f.details, "EIO");

    // No stdin at all (a terminal): an empty config.
    let f = run_plugin(&plugin, &env, None).failure();
    assert_eq!(f.code, 6);
    assert!(plugin.calls.borrow().is_empty());
}

#[test]
fn usage_for_help_and_version_only() {
    for flag in ["--help", "-h"] {
        let text = usage("calico", "does things", flag).unwrap();
        assert!(text.starts_with("calico 0."), "{text}");
        for needle in ["does things", "CNI plugin", "CNI_COMMAND", "CNI_NETNS", "stdin", "README", "1.1.0"] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }
    let text = usage("calico-ipam", "x", "--version").unwrap();
    assert!(text.starts_with("calico-ipam 0.") && text.contains("0.1.0, "), "{text}");
    for other in ["", "--frob", "help", "-v"] {
        assert!(usage("calico", "x", other).is_none(), "{other}");
    }
}
