//! TCP between namespaces, for the tests that look at who a connection comes from (NAT, port
//! mapping, profiles).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// How long a connection may take to arrive or to be made.
const WITHIN: Duration = Duration::from_secs(5);

/// A listener on `addr`. The previous test's listener on the same port may still be held
/// for a moment by a child another test thread is forking (its copy of our descriptors
/// lives until its exec closes them): EADDRINUSE is retried for up to 2 s.
fn listen(addr: &str) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("listen on {addr}: {e}"),
        }
    }
}

/// Accepts one connection on `addr` inside `ns` while `client` runs; who connected. Panics
/// (instead of waiting forever) when nothing arrives within 5 s of `client`'s return.
pub fn peer_of(ns: &Netns, addr: &str, client: impl FnOnce() + Send) -> SocketAddr {
    let listener = ns.run_in(|| listen(addr));
    listener.set_nonblocking(true).expect("non-blocking listener");
    std::thread::scope(|s| {
        let (done, client_done) = std::sync::mpsc::channel::<()>();
        let server = s.spawn(move || {
            let mut deadline: Option<Instant> = None;
            loop {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        conn.set_nonblocking(false).expect("blocking connection");
                        conn.write_all(b"hi").expect("greeting");
                        return peer;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if deadline.is_none() && client_done.try_recv().is_ok() {
                            deadline = Some(Instant::now() + WITHIN);
                        }
                        assert!(deadline.is_none_or(|d| Instant::now() < d), "no connection to {addr}");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept on {addr}: {e}"),
                }
            }
        });
        // The client's panic (connection refused, timed out) ends the server's wait too.
        let client_result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(client));
        let _ = done.send(());
        if let Err(panic) = client_result {
            std::panic::resume_unwind(panic);
        }
        server.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Connects from inside `ns` to `to` and reads the listener's greeting.
pub fn connect(ns: &Netns, to: &str) {
    let to: SocketAddr = to.parse().unwrap_or_else(|e| panic!("{to}: {e}"));
    ns.run_in(|| {
        let mut c = TcpStream::connect_timeout(&to, WITHIN).unwrap_or_else(|e| panic!("to {to}: {e}"));
        let mut buf = [0; 2];
        c.read_exact(&mut buf).unwrap_or_else(|e| panic!("greeting from {to}: {e}"));
    });
}
