//! calico-cni's bad-input matrix: every verb and spec version against malformed JSON, wrong
//! shapes (arrays, numbers and strings where objects go, for every object field), bad CNI_*
//! variables, odd netns paths and interface names. Each case must answer with its CNI code
//! (error JSON on stdout, non-zero exit, no panic) and leave nothing behind: no link or route
//! in the host netns (the plugin runs inside a throwaway one), no link in the container, no
//! IPAM handle, no endpoint record. Every run is killed after 10 s, so a hang fails.

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use calico_tests::netns::{host, CniBinDir, Netns};
use calico_tests::{bin, Backend, Invocation, Outcome, VERSIONS};
use datastore::Datastore;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(10);
const VERBS: [&str; 5] = ["ADD", "DEL", "CHECK", "GC", "STATUS"];

struct Rig {
    host: Netns,
    container: Netns,
    bins: CniBinDir,
    store: Backend,
    db: Box<dyn Datastore>,
    host_links: Vec<String>,
}

impl Rig {
    fn new() -> Rig {
        let store = Backend::embedded();
        store.ctl(&["pool", "add", "10.96.0.0/24"]).success();
        let db = match &store {
            Backend::Embedded(dir) => datastore::config::open(&datastore::config::Config {
                datastore_path: Some(dir.db().into()),
                ..Default::default()
            })
            .expect("opening the test store"),
            Backend::Etcd(..) => unreachable!("the matrix runs on the embedded store"),
        };
        let host = host();
        let host_links = host.links();
        let bins = CniBinDir::new();
        // Another name for calico-cni in CNI_PATH, to try delegating to ourselves by it.
        std::os::unix::fs::symlink(bin("calico-cni"), bins.dir.path().join("sneaky-ipam")).unwrap();
        Rig { host, container: Netns::new("cbi"), bins, store, db, host_links }
    }

    /// A netconf every verb accepts: a prevResult for CHECK, the attachments for GC.
    fn base(&self, version: &str) -> Value {
        let mut c = json!({"cniVersion": version, "name": "badcni", "type": "calico", "nodename": "n1",
                           "ipam": {"type": "calico-ipam"},
                           "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.96.0.5/32"}]},
                           "cni.dev/valid-attachments": []});
        self.store.apply(&mut c);
        c
    }

    fn inv(&self, verb: &str) -> Invocation {
        Invocation::new(verb, "bad-cni-1").netns(&self.container.path()).path(&self.bins.path())
    }

    /// Run calico (calico-cni) inside the host netns, killed after [`TIMEOUT`].
    fn run(&self, inv: &Invocation, stdin: &[u8]) -> Outcome {
        let mut cmd = inv.command(std::path::Path::new("ip"));
        cmd.args(["netns", "exec", &self.host.name]).arg(self.bins.plugin("calico"));
        run_with_timeout(cmd, stdin)
    }

    /// Nothing of ours anywhere.
    fn assert_nothing_left(&self, what: &str) {
        assert_eq!(self.host.links(), self.host_links, "{what}: links changed in the host netns");
        let routes = self.host.routes();
        assert!(!routes.contains("10.96.0."), "{what}: routes left:\n{routes}");
        assert_eq!(self.container.links(), ["lo"], "{what}: links left in the container");
        for (prefix, kind) in
            [(model::keys::HANDLE_PREFIX, "IPAM handles"), (model::keys::ENDPOINT_HOST_PREFIX, "endpoint records")]
        {
            let left: Vec<String> =
                self.db.list(prefix).expect("listing the store").into_iter().map(|kv| kv.key).collect();
            assert!(left.is_empty(), "{what}: {kind} left: {left:?}");
        }
    }

    /// Run one case and check its code and that nothing was left behind.
    fn expect(&self, what: &str, inv: &Invocation, stdin: &[u8], codes: &[u64]) {
        let out = self.run(inv, stdin);
        assert!(!out.ok(), "{what}: expected failure with {codes:?}, got success: {out:#?}");
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: stdout is not error JSON ({e}): {out:#?}"));
        let code = v["code"].as_u64().unwrap_or_default();
        assert!(codes.contains(&code), "{what}: code {code}, wanted {codes:?}: {out:#?}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{what}: no msg: {out:#?}");
        assert!(!out.stderr.contains("panicked"), "{what}: panicked: {}", out.stderr);
        self.assert_nothing_left(what);
    }

    fn expect_ok(&self, what: &str, inv: &Invocation, stdin: &[u8]) {
        let out = self.run(inv, stdin);
        assert!(out.ok(), "{what}: expected success: {out:#?}");
        self.assert_nothing_left(what);
    }
}

/// Spawn `cmd`, feed `stdin`, and wait at most [`TIMEOUT`] (then kill it: a failure).
fn run_with_timeout(mut cmd: Command, stdin: &[u8]) -> Outcome {
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = reader(Box::new(child.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the plugin") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {TIMEOUT:?}: killed; stderr: {}", stderr.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = writer.join();
    Outcome {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// What a case breaks, which decides its code per verb and version.
#[derive(Clone, Copy)]
enum Breaks {
    /// Not JSON: 6 before anything else.
    Json,
    /// The config itself is not an object (or its name is bad): 7 before the version checks.
    Header,
    /// A field the plugin reads: `code`, except 1 for a verb the version does not have and
    /// 50 for STATUS (calico-cni cannot serve ADD with this netconf).
    Conf(u64),
    /// The IPAM plugin refuses to run: 7 on every verb the version has.
    Delegation,
    /// A CNI_* variable: 4, before stdin is read.
    Env,
}

fn supported(verb: &str, version: &str) -> bool {
    match verb {
        "CHECK" => version >= "0.4.0",
        "GC" | "STATUS" => version >= "1.1.0",
        _ => true,
    }
}

fn expected(breaks: Breaks, verb: &str, version: &str) -> u64 {
    match breaks {
        Breaks::Json => 6,
        Breaks::Header => 7,
        Breaks::Env => 4,
        _ if !supported(verb, version) => 1,
        Breaks::Conf(_) if verb == "STATUS" => 50,
        Breaks::Conf(code) => code,
        Breaks::Delegation => 7,
    }
}

/// The config with the field at `path` (keys, outermost first) set to `value`.
fn set(mut conf: Value, path: &[&str], value: Value) -> Vec<u8> {
    let (last, parents) = path.split_last().unwrap();
    let mut at = &mut conf;
    for key in parents {
        at = &mut at[*key];
    }
    at[*last] = value;
    serde_json::to_vec(&conf).unwrap()
}

type Verbs = &'static [&'static str];
type Tweak = fn(Invocation) -> Invocation;

/// One case: a name, what it breaks, the verbs it applies to, and how it changes the base
/// invocation and config.
struct Case {
    name: String,
    breaks: Breaks,
    verbs: Verbs,
    inv: Tweak,
    stdin: Box<dyn Fn(Value) -> Vec<u8>>,
}

fn case(name: &str, breaks: Breaks, verbs: Verbs, stdin: impl Fn(Value) -> Vec<u8> + 'static) -> Case {
    Case { name: name.into(), breaks, verbs, inv: |i| i, stdin: Box::new(stdin) }
}

fn env_case(name: &str, verbs: Verbs, inv: Tweak) -> Case {
    Case { name: name.into(), breaks: Breaks::Env, verbs, inv, stdin: Box::new(|c| serde_json::to_vec(&c).unwrap()) }
}

/// Every object field of the netconf, and values of the wrong shape for it.
const OBJECT_FIELDS: [&[&str]; 9] = [
    &["ipam"],
    &["container_settings"],
    &["runtimeConfig"],
    &["args"],
    &["args", "cni"],
    &["prevResult"],
    &["capabilities"],
    &["runtimeConfig", "portMappings", "0"],
    &["cni.dev/valid-attachments", "0"],
];

fn cases() -> Vec<Case> {
    let mut cases = vec![
        case("truncated JSON", Breaks::Json, &VERBS, |_| b"{\"cniVersion\": \"1.0.0\", ".to_vec()),
        case("empty stdin", Breaks::Json, &VERBS, |_| Vec::new()),
        case("trailing garbage", Breaks::Json, &VERBS, |c| [serde_json::to_vec(&c).unwrap(), b"}x".to_vec()].concat()),
        case("config is an array", Breaks::Header, &VERBS, |c| {
            serde_json::to_vec(&json!([c["cniVersion"], c["name"]])).unwrap()
        }),
        case("config is a number", Breaks::Header, &VERBS, |_| b"5".to_vec()),
        case("config is a string", Breaks::Header, &VERBS, |_| b"\"calico\"".to_vec()),
        case("config is null", Breaks::Header, &VERBS, |_| b"null".to_vec()),
        case("name is a number", Breaks::Header, &VERBS, |c| set(c, &["name"], json!(42))),
        // The positional readings serde's derive gave: IP forwarding on, an address requested.
        case("container_settings: [true]", Breaks::Conf(7), &VERBS, |c| set(c, &["container_settings"], json!([true]))),
        case("runtimeConfig: [[ip]]", Breaks::Conf(7), &VERBS, |c| set(c, &["runtimeConfig"], json!([["10.96.0.9"]]))),
        case("prevResult: []", Breaks::Conf(7), &VERBS, |c| set(c, &["prevResult"], json!([]))),
        case("ipam: [type]", Breaks::Conf(7), &VERBS, |c| set(c, &["ipam"], json!(["calico-ipam"]))),
        case("ipam.type calico", Breaks::Conf(7), &VERBS, |c| set(c, &["ipam", "type"], json!("calico"))),
        case("ipam.type calico-cni", Breaks::Conf(7), &VERBS, |c| set(c, &["ipam", "type"], json!("calico-cni"))),
        case("ipam.type is calico-cni by another name", Breaks::Delegation, &VERBS, |c| {
            set(c, &["ipam", "type"], json!("sneaky-ipam"))
        }),
        case("runtimeConfig.mac with a sign", Breaks::Conf(7), &["ADD"], |c| {
            set(c, &["runtimeConfig"], json!({"mac": "+a:58:0a:f4:00:05"}))
        }),
        env_case("missing CNI_CONTAINERID", &["ADD", "DEL", "CHECK"], |i| Invocation {
            container_id: String::new(),
            ..i
        }),
        env_case("CNI_CONTAINERID with a leading dash", &VERBS, |i| Invocation { container_id: "-x".into(), ..i }),
        env_case("CNI_CONTAINERID with a slash", &VERBS, |i| Invocation { container_id: "a/b".into(), ..i }),
        env_case("CNI_CONTAINERID with a space", &VERBS, |i| Invocation { container_id: "a b".into(), ..i }),
        env_case("missing CNI_IFNAME", &["ADD", "DEL", "CHECK"], |i| i.ifname("")),
        env_case("CNI_IFNAME too long", &VERBS, |i| i.ifname("a-very-long-ifname")),
        env_case("CNI_IFNAME ..", &VERBS, |i| i.ifname("..")),
        env_case("CNI_IFNAME .", &VERBS, |i| i.ifname(".")),
        env_case("CNI_IFNAME with a slash", &VERBS, |i| i.ifname("eth/0")),
        env_case("CNI_IFNAME with a colon", &VERBS, |i| i.ifname("eth:0")),
        env_case("CNI_IFNAME with a space", &VERBS, |i| i.ifname("eth 0")),
        env_case("missing CNI_NETNS", &["ADD", "CHECK"], |i| i.netns("")),
        env_case("missing CNI_PATH", &["ADD", "DEL", "CHECK", "GC"], |i| i.path("")),
        env_case("unknown CNI_COMMAND", &VERBS, |i| i.with_command("FROB")),
        env_case("lower-case CNI_COMMAND", &VERBS, |i| {
            let lower = i.command.to_lowercase();
            i.with_command(&lower)
        }),
    ];
    // CNI_ARGS is read by the plugin, after the version checks.
    let args_cases: [(&str, u64, Verbs, Tweak); 4] = [
        ("CNI_ARGS MAC with a sign", 7, &["ADD"], |i| i.args("MAC=+a:58:0a:f4:00:05")),
        ("unknown CNI_ARGS key", 4, &VERBS, |i| i.args("FOO=bar")),
        ("malformed CNI_ARGS", 4, &VERBS, |i| i.args("IP")),
        ("bad IP in CNI_ARGS", 4, &VERBS, |i| i.args("IP=10.96.0.500")),
    ];
    for (name, code, verbs, inv) in args_cases {
        cases.push(Case {
            name: name.into(),
            breaks: Breaks::Conf(code),
            verbs,
            inv,
            stdin: Box::new(|c| serde_json::to_vec(&c).unwrap()),
        });
    }
    // Every object field: an array, a number and a string instead.
    for path in OBJECT_FIELDS {
        for wrong in [json!([]), json!([true, "calico-ipam", ["10.96.0.9"]]), json!(5), json!("x")] {
            let name = format!("{}: {wrong}", path.join("."));
            let path: Vec<&'static str> = path.to_vec();
            cases.push(case(&name, Breaks::Conf(7), &VERBS, move |c| {
                let mut full = c.clone();
                // Lists of objects: make the list, then break its first element.
                if path.last() == Some(&"0") {
                    let list = &path[..path.len() - 1];
                    let mut at = &mut full;
                    for key in list {
                        at = &mut at[*key];
                    }
                    *at = json!([wrong.clone()]);
                    return serde_json::to_vec(&full).unwrap();
                }
                set(full, &path, wrong.clone())
            }));
        }
    }
    cases
}

/// Cases run for every spec version (the rest run for 1.1.0, which has every verb).
const EVERY_VERSION: [&str; 9] = [
    "truncated JSON",
    "config is an array",
    "container_settings: [true]",
    "runtimeConfig: [[ip]]",
    "prevResult: []",
    "ipam.type calico",
    "ipam.type is calico-cni by another name",
    "missing CNI_CONTAINERID",
    "CNI_IFNAME with a colon",
];

#[test]
fn every_bad_input_gets_its_code_and_leaves_nothing() {
    let rig = Rig::new();
    // The base config works (so every failure below is the case's own), and is cleaned up.
    let base = serde_json::to_vec(&rig.base("1.1.0")).unwrap();
    let ok = rig.run(&rig.inv("ADD"), &base);
    assert!(ok.ok(), "the base config fails: {ok:#?}");
    rig.run(&rig.inv("DEL"), &base).success();
    rig.assert_nothing_left("base ADD + DEL");

    let started = Instant::now();
    let mut runs = 0;
    for case in cases() {
        let versions: &[&str] = if EVERY_VERSION.contains(&case.name.as_str()) { &VERSIONS } else { &["1.1.0"] };
        for version in versions {
            for verb in case.verbs {
                let inv = (case.inv)(rig.inv(verb));
                let stdin = (case.stdin)(rig.base(version));
                let code = expected(case.breaks, verb, version);
                rig.expect(&format!("{} ({verb}, {version})", case.name), &inv, &stdin, &[code]);
                runs += 1;
            }
        }
    }
    assert_eq!(rig.store.used(), 0);
    rig.store.assert_clean();
    eprintln!("{runs} bad-input runs in {:?}", started.elapsed());
}

#[test]
fn self_delegation_names_the_plugin_itself() {
    let rig = Rig::new();
    for ipam in ["calico", "calico-cni", "sneaky-ipam"] {
        let stdin = set(rig.base("1.0.0"), &["ipam", "type"], json!(ipam));
        let out = rig.run(&rig.inv("ADD"), &stdin);
        let v = out.expect_err(7);
        let msg = v["msg"].as_str().unwrap();
        assert!(msg.contains("names this plugin itself"), "{ipam}: {msg}");
        rig.assert_nothing_left(ipam);
    }
}

/// An IPAM plugin that succeeds without an address: its own code (not I/O), named in `msg`,
/// and the rollback's IPAM DEL leaves nothing behind.
#[test]
fn an_ipam_plugin_that_returns_no_address_gets_its_own_code() {
    use std::os::unix::fs::PermissionsExt;
    let rig = Rig::new();
    let fake = rig.bins.plugin("empty-ipam");
    std::fs::write(&fake, "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"ips\":[]}'\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stdin = set(rig.base("1.0.0"), &["ipam", "type"], json!("empty-ipam"));
    let v = rig.run(&rig.inv("ADD"), &stdin).expect_err(calico_cni::CODE_NO_ADDRESS.into());
    assert_eq!(v["msg"], "the IPAM plugin empty-ipam returned no address", "{v}");
    rig.assert_nothing_left("empty-ipam");
}

#[test]
fn help_and_version_flags_print_usage_without_cni_command() {
    for plugin in ["calico-cni", "calico-ipam"] {
        for flag in ["--help", "-h", "--version"] {
            let out = calico_tests::run_command(
                {
                    let mut cmd = Command::new(bin(plugin));
                    cmd.arg(flag)
                        .env_remove("CNI_COMMAND")
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped());
                    cmd
                },
                b"",
            );
            assert!(out.ok(), "{plugin} {flag}: {out:#?}");
            assert!(out.stdout.starts_with(&format!("{plugin} ")), "{plugin} {flag}: {}", out.stdout);
            if flag != "--version" {
                for needle in ["CNI plugin", "CNI_COMMAND", "README"] {
                    assert!(out.stdout.contains(needle), "{plugin} {flag}: {needle}: {}", out.stdout);
                }
            }
        }
        // With CNI_COMMAND set the flags change nothing: VERSION answers as usual.
        let mut cmd = Invocation::new("VERSION", "").command(&bin(plugin));
        cmd.arg("--help");
        let out = calico_tests::run_command(cmd, b"");
        assert!(out.expect_ok()["supportedVersions"].is_array(), "{out:#?}");
        // Another argument without CNI_COMMAND is the usual CNI error.
        let mut cmd = Invocation::new("", "").command(&bin(plugin));
        cmd.arg("--frob");
        calico_tests::run_command(cmd, b"").expect_err(4);
    }
}

/// Netns paths that are no netns, our own netns, and the loopback as CNI_IFNAME: ADD is
/// code 4 and changes nothing; DEL succeeds and removes nothing it should not.
#[test]
fn netns_and_ifname_cases() {
    let rig = Rig::new();
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("file");
    std::fs::write(&file, b"not a netns").unwrap();
    let fifo = scratch.path().join("fifo");
    let c_fifo = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo only reads the NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    let missing = scratch.path().join("missing");
    let paths = [
        ("a regular file", file.display().to_string()),
        ("a FIFO", fifo.display().to_string()),
        ("a directory", scratch.path().display().to_string()),
        ("nonexistent", missing.display().to_string()),
        ("our own netns", "/proc/self/ns/net".to_string()),
    ];
    for version in ["0.3.1", "1.0.0"] {
        let base = serde_json::to_vec(&rig.base(version)).unwrap();
        for (what, path) in &paths {
            let add = rig.inv("ADD").netns(path);
            rig.expect(&format!("ADD, netns {what} ({version})"), &add, &base, &[4]);
            rig.expect_ok(&format!("DEL, netns {what} ({version})"), &add.with_command("DEL"), &base);
        }
        let lo = rig.inv("ADD").ifname("lo");
        rig.expect(&format!("ADD of lo ({version})"), &lo, &base, &[4]);
        rig.expect_ok(&format!("DEL of lo ({version})"), &lo.with_command("DEL"), &base);
        assert!(rig.container.links().contains(&"lo".to_string()), "DEL removed the container's lo");
        let slash = rig.inv("DEL").netns(&format!("{}/", rig.container.path()));
        rig.expect_ok(&format!("DEL, netns with a trailing slash ({version})"), &slash, &base);
    }
}
