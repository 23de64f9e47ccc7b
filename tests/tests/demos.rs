//! The two demos the README starts with, run as a user runs them (on the binaries these tests
//! were built with, through `CALICO_BIN_DIR`): each must finish with exit 0, having shown what
//! it says it shows. A demo that broke would otherwise only be noticed by the next reader.

use std::process::{Command, Stdio};

use calico_tests::{bin_dir, run_command, Outcome};

fn demo(script: &str) -> Outcome {
    let mut cmd = Command::new("bash");
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/").to_owned() + script);
    cmd.env("CALICO_BIN_DIR", bin_dir()).env_remove("ETCD_ENDPOINTS").env_remove("CALICO_DATASTORE_PATH");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = run_command(cmd, b"");
    assert!(out.ok(), "{script} failed: {out:#?}");
    out
}

#[test]
fn the_quickstart_demo_runs_to_its_end() {
    let out = demo("demo.sh");
    let text = &out.stdout;
    // Four pings of A <-> B, A -> host, and B -> A's second address, all answered.
    assert_eq!(text.matches(" 0% packet loss").count(), 4, "{text}");
    assert!(text.contains("B got: hello-from-outside"), "the mapped port: {text}");
    assert!(text.contains("tcp dport 80 accept"), "the profile rule: {text}");
    assert!(text.contains("demo finished"), "{text}");
}

#[test]
fn the_cluster_demo_runs_to_its_end() {
    let out = demo("demo-cluster.sh");
    let text = &out.stdout;
    assert_eq!(text.matches(" 0% packet loss").count(), 3, "pings across the three hosts: {text}");
    assert_eq!(text.matches("Established").count(), 2, "host1's two mesh sessions: {text}");
    assert!(text.contains("demo finished"), "{text}");
}
