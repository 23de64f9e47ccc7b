//! Test harness: throwaway network namespaces from `testkit`, never the real host's.
//!
//! Every test makes its own "host" namespace (with an uplink veth and a default route, as a
//! real host has) and "container" namespaces, and runs its body on a thread that has entered
//! the test host namespace. Dropping the [`Lab`] deletes the namespaces, and with them every
//! link the test created, even when the test panics.

#![allow(dead_code)]

pub mod steps;

use testkit::netns::Netns;

/// A test "host" namespace plus container namespaces.
pub struct Lab {
    pub host: Netns,
    pub containers: Vec<Netns>,
}

impl Lab {
    /// A host namespace with an uplink and default routes, and `n` empty container
    /// namespaces.
    pub fn new(n: usize) -> Lab {
        let containers = (0..n).map(|i| Netns::new(&format!("dc{i}"))).collect();
        Lab { host: testkit::netns::host(), containers }
    }

    /// Runs `f` on a thread inside the test host namespace, propagating its panic (with the
    /// original message) to the test.
    pub fn in_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.host.run_in(f)
    }

    /// Runs `f` inside the test host namespace with that namespace and the first
    /// container's, each with its netlink client.
    pub fn with_host_and_container<T: Send>(
        &self,
        f: impl FnOnce(&dataplane::Namespace, &dataplane::Namespace) -> T + Send,
    ) -> T {
        let path = self.containers[0].path();
        self.in_host(|| {
            let host = dataplane::Namespace::current().expect("host namespace");
            let container = dataplane::Namespace::open(&path).expect("open c0");
            f(&host, &container)
        })
    }
}

/// Inode of the calling thread's network namespace.
pub fn thread_netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").expect("stat thread netns").ino()
}
