//! What a short-lived plugin process pays to talk to etcd: the store's set-up, the first
//! request (which carries the TCP and HTTP/2 handshakes) and the requests after it.
//!
//! ```text
//! etcd --data-dir /tmp/e --listen-client-urls http://127.0.0.1:2379 \
//!      --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380
//! cargo run --release -p datastore --example etcd_first_rpc -- http://127.0.0.1:2379
//! /usr/bin/time -v target/release/examples/etcd_first_rpc http://127.0.0.1:2379
//! ```
//!
//! The argument is Calico's `etcd_endpoints` (comma-separated URLs); TLS files come from
//! `ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE` and `ETCD_KEY_FILE` when set.

use std::time::{Duration, Instant};

use datastore::{Compare, Config, Datastore, EtcdStore, Op};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let file = |var: &str| std::env::var_os(var).map(Into::into);
    let cfg = Config {
        etcd_endpoints: Config::parse_endpoints(&endpoints),
        etcd_ca_cert_file: file("ETCD_CA_CERT_FILE"),
        etcd_cert_file: file("ETCD_CERT_FILE"),
        etcd_key_file: file("ETCD_KEY_FILE"),
        ..Config::default()
    };

    let (store, connect) = timed(|| EtcdStore::connect(&cfg));
    let store = store?;
    let (answer, first) = timed(|| store.get("/calico/first-rpc"));
    answer?;
    let (answer, second) = timed(|| store.get("/calico/first-rpc"));
    answer?;
    let key = "/calico/first-rpc-probe";
    let (answer, txn) = timed(|| {
        store.txn(
            &[Compare::Absent(key.into())],
            &[Op::Put {
                key: key.into(),
                value: b"1".to_vec(),
            }],
        )
    });
    answer?;
    let (answer, delete) = timed(|| store.txn(&[], &[Op::Delete { key: key.into() }]));
    answer?;

    println!("endpoints      {endpoints}");
    println!("connect        {}", ms(connect));
    println!(
        "first get      {}  (TCP + HTTP/2 set-up + request)",
        ms(first)
    );
    println!("second get     {}", ms(second));
    println!("txn (put)      {}", ms(txn));
    println!("txn (delete)   {}", ms(delete));
    println!("round trips    {}", store.round_trips());
    Ok(())
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}
