//! How a cluster starts: its members' command lines.

use super::{free_port, ClientTls, EtcdCluster, Member};
use crate::etcd::Certs;
use crate::netns::Netns;

/// How to start an [`EtcdCluster`]: `EtcdCluster::builder().members(3).start()`.
pub struct EtcdBuilder<'a> {
    members: usize,
    certs: Option<&'a Certs>,
    netns: Option<(&'a Netns, String)>,
    fast_elections: bool,
}

impl<'a> EtcdBuilder<'a> {
    pub(super) fn new() -> Self {
        EtcdBuilder { members: 1, certs: None, netns: None, fast_elections: false }
    }

    /// How many members (1 unless told).
    pub fn members(mut self, n: usize) -> Self {
        assert!(n > 0, "a cluster has at least one member");
        self.members = n;
        self
    }

    /// https client URLs that require a client certificate signed by `certs`' CA (the server
    /// certificate must name the address the members listen on).
    pub fn tls(mut self, certs: &'a Certs) -> Self {
        self.certs = Some(certs);
        self
    }

    /// Run the members inside `netns` (`ip netns exec`), listening on `address`, one of its
    /// own addresses, instead of the test's loopback.
    pub fn in_netns(mut self, netns: &'a Netns, address: &str) -> Self {
        self.netns = Some((netns, address.to_owned()));
        self
    }

    /// Heartbeats every 50 ms and elections after 500 ms (etcd's defaults: 100 ms, 1 s), so
    /// that a failover test waits less for a new leader. On a busy machine a member may then
    /// call an election it did not need.
    pub fn fast_elections(mut self) -> Self {
        self.fast_elections = true;
        self
    }

    /// Start every member and wait until each one answers.
    pub fn start(self) -> EtcdCluster {
        let scheme = if self.certs.is_some() { "https" } else { "http" };
        let host = self.netns.as_ref().map_or("127.0.0.1", |(_, address)| address.as_str()).to_owned();
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let token = format!("calico-test-{}-{}", std::process::id(), free_port());
        let ports: Vec<(u16, u16)> = (0..self.members).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://{host}:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let netns = self.netns.as_ref().map(|(ns, _)| ns.name.clone());
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let dir = tempfile::Builder::new().prefix("calico-etcd-").tempdir().expect("tempdir for etcd");
                let name = format!("m{i}");
                let client_url = format!("{scheme}://{host}:{client}");
                let peer_url = format!("http://{host}:{peer}");
                let mut args: Vec<String> = [
                    ("--name", name.as_str()),
                    ("--data-dir", &dir.path().join("data").display().to_string()),
                    ("--listen-client-urls", &client_url),
                    ("--advertise-client-urls", &client_url),
                    ("--listen-peer-urls", &peer_url),
                    ("--initial-advertise-peer-urls", &peer_url),
                    ("--initial-cluster", &initial),
                    ("--initial-cluster-token", &token),
                    ("--initial-cluster-state", "new"),
                    ("--log-level", "warn"),
                ]
                .iter()
                .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
                .collect();
                if self.fast_elections {
                    args.extend(["--heartbeat-interval", "50", "--election-timeout", "500"].map(String::from));
                }
                if let Some(c) = self.certs {
                    args.push("--client-cert-auth".into());
                    for (flag, file) in
                        [("--trusted-ca-file", "ca.crt"), ("--cert-file", "server.crt"), ("--key-file", "server.key")]
                    {
                        args.extend([flag.to_string(), c.path(file).display().to_string()]);
                    }
                }
                Member { name, client_url, args, netns: netns.clone(), child: None, dir }
            })
            .collect();
        let tls = self.certs.map(|c| ClientTls { ca: c.ca(), cert: c.client_cert(), key: c.client_key() });
        let mut cluster = EtcdCluster { members, tls, netns };
        for m in &mut cluster.members {
            m.spawn();
        }
        cluster.wait_ready();
        cluster
    }
}
