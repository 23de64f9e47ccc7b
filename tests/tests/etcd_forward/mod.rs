//! Reaching the tests' etcd from inside a netns, for tests that run calico-cni in a netns
//! playing the host (`mod etcd_forward;` in the test file).

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use calico_tests::netns::Netns;
use calico_tests::Backend;

/// Makes the test's etcd (on the machine's loopback) reachable from inside `ns` at the same
/// address: a listener opened in the netns by a thread of this process, each connection
/// spliced to etcd by threads in the initial netns. Nothing is configured in any netns. The
/// listener closes when the returned guard drops, so the netns can go. `None` for the
/// embedded store, which needs no network.
pub struct Forward(Arc<AtomicBool>);

impl Drop for Forward {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub fn forward_etcd(ns: &Netns, backend: &Backend) -> Option<Forward> {
    let Backend::Etcd(etcd, _) = backend else {
        return None;
    };
    let target = etcd.client_url.trim_start_matches("http://").to_owned();
    let port: u16 = target.rsplit(':').next().unwrap().parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (accepted, to_splice) = mpsc::channel::<TcpStream>();
    let (ready, listening) = mpsc::channel();
    let (path, done) = (ns.path(), stop.clone());
    std::thread::spawn(move || {
        let netns = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a file descriptor we own; it moves only this thread.
        assert_eq!(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("listen in the netns");
        listener.set_nonblocking(true).unwrap();
        ready.send(()).unwrap();
        while !done.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    let _ = accepted.send(conn);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
                Err(_) => break,
            }
        }
    });
    std::thread::spawn(move || {
        for inner in to_splice {
            let Ok(outer) = TcpStream::connect(&target) else {
                continue;
            };
            for (mut from, mut to) in [(inner.try_clone().unwrap(), outer.try_clone().unwrap()), (outer, inner)] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    listening.recv().unwrap();
    Some(Forward(stop))
}
