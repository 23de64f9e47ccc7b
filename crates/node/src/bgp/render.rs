//! `bird.conf` from the datastore: a pure function, so that what BIRD is told is tested
//! without BIRD, and a change that renders the same text costs nothing.
//!
//! What the text says:
//! - **Export**: this node's blocks, and the addresses its workloads borrowed. BIRD's kernel
//!   protocol learns the blackhole routes the agent programs for its own blocks (`proto
//!   80`), as they appear (on Linux it hears netlink's notifications; the scan is only a
//!   backstop), so a new block needs no reconfiguration. Only blackholes of proto 80 inside
//!   a pool are learned: never the host's own routes or a default route. A workload address
//!   outside this node's blocks (borrowed from another node's block, or in nobody's) is a
//!   /32 of a static protocol ([`BORROWED_PROTOCOL`]), as Calico exports it: the block's
//!   route leads to another node, which may be on another subnet. Such an address appearing
//!   or going is a reconfiguration; BIRD never puts these routes into the kernel.
//! - **Import**: blocks inside the pools, from any peer; only those of pools without
//!   encapsulation reach the kernel, with BIRD's own protocol number and metric
//!   [`KERNEL_METRIC`], so the agent's routes (metric 0) win wherever both exist, and nothing
//!   covering the host's own subnet is taken.
//! - **Peers**: the mesh (every other node, one session per pair: the side with the lower
//!   address is passive and waits, as Calico does since node#79), global peers and this
//!   node's own peers, each with graceful restart on.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use model::bgp::LogLevel;

/// The kernel metric of the routes BIRD programs (the agent's have 0, which wins).
pub const KERNEL_METRIC: u32 = 1024;
/// The protocol number of the agent's routes, whose blackholes BIRD learns.
pub const AGENT_PROTOCOL: u8 = crate::routes::PROTOCOL;
/// How long a restarted BIRD waits for its peers' End-of-RIB before it exports anyway (BIRD's
/// default is 240 s: a peer that is down would hold back our routes that long).
pub const GR_WAIT: u32 = 30;
/// The name of the kernel protocol in the rendered config.
pub const KERNEL_PROTOCOL: &str = "calico_kernel";
/// The name of the static protocol holding the borrowed addresses' /32s.
pub const BORROWED_PROTOCOL: &str = "calico_borrowed";

/// Who a peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerKind {
    /// Another node of the mesh.
    Mesh,
    /// A peer of this node only (`calicoctl node bgp peer add`).
    Node,
    /// A peer of every node (`calicoctl bgp peer add`).
    Global,
}

impl PeerKind {
    /// The prefix of the BIRD protocol name (the names Calico's templates use).
    pub fn prefix(self) -> &'static str {
        match self {
            PeerKind::Mesh => "Mesh",
            PeerKind::Node => "Node",
            PeerKind::Global => "Global",
        }
    }
}

/// One BGP session to configure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    pub kind: PeerKind,
    pub ip: Ipv4Addr,
    pub as_number: u32,
    /// For the mesh: the node's name (in the description).
    pub node: Option<String>,
}

/// The protocol name of a session: `Mesh_10_0_0_2`.
pub fn protocol_name(kind: PeerKind, ip: Ipv4Addr) -> String {
    format!("{}_{}", kind.prefix(), ip.to_string().replace('.', "_"))
}

/// The other direction of [`protocol_name`]: the kind and address of a session's name.
pub fn parse_protocol_name(name: &str) -> Option<(PeerKind, Ipv4Addr)> {
    let (prefix, rest) = name.split_once('_')?;
    let kind = [PeerKind::Mesh, PeerKind::Node, PeerKind::Global].into_iter().find(|k| k.prefix() == prefix)?;
    Some((kind, rest.replace('_', ".").parse().ok()?))
}

/// Everything the config depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// This node's name.
    pub node: String,
    /// This node's address and subnet: the router id and every session's source address.
    pub ipv4: Ipv4Network,
    /// This node's AS number.
    pub as_number: u32,
    /// Every IPv4 pool (exported, and learned from peers).
    pub pools: Vec<Ipv4Network>,
    /// The pools without encapsulation (their routes learned over BGP reach the kernel).
    pub direct_pools: Vec<Ipv4Network>,
    /// The sessions, in order, each address once, never this node's own.
    pub peers: Vec<PeerSpec>,
    /// This node's workloads' IPv4 addresses outside its own blocks (/32s), in order.
    pub borrowed: Vec<Ipv4Network>,
    /// How much BIRD logs.
    pub log_level: LogLevel,
}

fn prefix_set(nets: &[Ipv4Network]) -> String {
    if nets.is_empty() {
        // An empty set is not BIRD syntax: one nothing can match (a pool is never /0 exactly).
        return "[ 0.0.0.0/32{32,32} ]".into();
    }
    let items: Vec<String> = nets.iter().map(|n| format!("{}/{}+", n.network(), n.prefix())).collect();
    format!("[ {} ]", items.join(", "))
}

/// The text of `bird.conf`.
pub fn render(input: &Input) -> String {
    let me = input.ipv4.ip();
    let subnet = Ipv4Network::new(input.ipv4.network(), input.ipv4.prefix()).unwrap_or(input.ipv4);
    let mut out = String::new();
    let log = match input.log_level {
        LogLevel::None => "{ fatal, bug }",
        LogLevel::Info => "{ info, remote, warning, error, auth, fatal, bug }",
        LogLevel::Debug => "all",
    };
    let _ = write!(
        out,
        "\
# bird.conf of node {node}: written by calico-node from the datastore on every change.
# Do not edit: the next change overwrites it.
router id {me};
log stderr {log};
# After a restart (bird -R), wait at most this long for the peers before exporting anyway.
graceful restart wait {GR_WAIT};
{debug}
# Every pool: only blocks inside them leave this node or are learned from peers.
define CALICO_POOLS = {pools};
# The pools without encapsulation: only their routes learned over BGP reach the kernel.
define CALICO_DIRECT_POOLS = {direct};

# This node's blocks: the blackhole routes calico-node programs (proto {proto}), inside a
# pool. Never the host's own routes, a default route, or /32s of borrowed addresses.
filter calico_own_blocks {{
  if krt_source = {proto} && dest = RTD_BLACKHOLE && net ~ CALICO_POOLS then accept;
  reject;
}}

# What the peers are told: what the kernel protocol learned (this node's blocks), and the
# /32s of the addresses this node's workloads borrowed.
filter calico_export {{
  if proto = \"{kernel}\" && net ~ CALICO_POOLS then accept;
  if proto = \"{borrowed}\" && net ~ CALICO_POOLS then accept;
  reject;
}}

# What is taken from peers: blocks inside the pools, nothing covering this host's subnet.
filter calico_import {{
  if net ~ [ {subnet}+ ] then reject;
  if {me} ~ net then reject;
  if net ~ CALICO_POOLS then accept;
  reject;
}}

# What reaches the kernel: routes learned over BGP for pools without encapsulation.
filter calico_to_kernel {{
  if source = RTS_BGP && net ~ CALICO_DIRECT_POOLS then accept;
  reject;
}}

protocol device {{
  scan time 10;
}}

# Interface routes, to resolve the next hops of multihop sessions; never exported.
protocol direct {{
  ipv4;
  interface -\"cali*\", -\"vxlan.calico\", -\"tunl0\", \"*\";
}}

protocol kernel {kernel} {{
  ipv4 {{
    preference 250;
    import filter calico_own_blocks;
    export filter calico_to_kernel;
  }};
  learn;
  persist;
  scan time 10;
  graceful restart;
  metric {metric};
  merge paths on;
}}

template bgp calico_peer {{
  local {me} as {as_number};
  graceful restart on;
  connect delay time 2;
  connect retry time 5;
  error wait time 5, 30;
}}
",
        node = input.node,
        debug = if input.log_level == LogLevel::Debug { "debug protocols { states, events };\n" } else { "" },
        pools = prefix_set(&input.pools),
        direct = prefix_set(&input.direct_pools),
        proto = AGENT_PROTOCOL,
        kernel = KERNEL_PROTOCOL,
        borrowed = BORROWED_PROTOCOL,
        metric = KERNEL_METRIC,
        as_number = input.as_number,
    );
    if !input.borrowed.is_empty() {
        // Blackholes in BIRD's table only: calico_to_kernel takes BGP's routes alone.
        let _ = writeln!(
            out,
            "\n# This node's workloads' addresses outside its blocks (borrowed): exported one by one.\n\
             protocol static {BORROWED_PROTOCOL} {{\n  ipv4 {{ preference 250; }};"
        );
        for net in &input.borrowed {
            let _ = writeln!(out, "  route {net} blackhole;");
        }
        let _ = writeln!(out, "}}");
    }
    for peer in &input.peers {
        let name = protocol_name(peer.kind, peer.ip);
        let what = match (&peer.kind, &peer.node) {
            (PeerKind::Mesh, Some(node)) => format!("mesh: node {node}"),
            (PeerKind::Mesh, None) => "mesh".into(),
            (PeerKind::Node, _) => "peer of this node".into(),
            (PeerKind::Global, _) => "global peer".into(),
        };
        let _ = writeln!(out, "\nprotocol bgp {name} from calico_peer {{");
        let _ = writeln!(out, "  description \"{what}\";");
        let _ = writeln!(out, "  neighbor {} as {};", peer.ip, peer.as_number);
        let direct = subnet.contains(peer.ip);
        let _ = writeln!(out, "  {};", if direct { "direct" } else { "multihop" });
        // One session per pair: the node with the lower address waits for the other.
        if peer.kind == PeerKind::Mesh && peer.ip > me {
            let _ = writeln!(out, "  passive on;");
        }
        let gateway = if direct { "direct" } else { "recursive" };
        let _ = write!(
            out,
            "  ipv4 {{\n    import filter calico_import;\n    export filter calico_export;\n    next hop self;\n    \
             gateway {gateway};\n  }};\n}}\n"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Input {
        Input {
            node: "host1".into(),
            ipv4: "10.200.0.5/24".parse().unwrap(),
            as_number: 64512,
            pools: vec!["10.201.0.0/16".parse().unwrap(), "10.202.0.0/16".parse().unwrap()],
            direct_pools: vec!["10.201.0.0/16".parse().unwrap()],
            peers: vec![
                PeerSpec {
                    kind: PeerKind::Mesh,
                    ip: "10.200.0.9".parse().unwrap(),
                    as_number: 64512,
                    node: Some("host2".into()),
                },
                PeerSpec {
                    kind: PeerKind::Mesh,
                    ip: "10.200.0.2".parse().unwrap(),
                    as_number: 64512,
                    node: Some("host3".into()),
                },
                PeerSpec { kind: PeerKind::Node, ip: "10.200.0.254".parse().unwrap(), as_number: 65000, node: None },
                PeerSpec { kind: PeerKind::Global, ip: "192.0.2.1".parse().unwrap(), as_number: 65001, node: None },
            ],
            borrowed: vec![],
            log_level: LogLevel::Info,
        }
    }

    #[test]
    fn borrowed_addresses_are_static_blackholes_that_only_the_peers_get() {
        let plain = render(&input());
        assert!(!plain.contains("protocol static"), "{plain}");
        let mut i = input();
        i.borrowed = vec!["10.201.3.7/32".parse().unwrap(), "10.201.9.1/32".parse().unwrap()];
        let text = render(&i);
        let static_protocol = "protocol static calico_borrowed {\n  ipv4 { preference 250; };\n  \
                               route 10.201.3.7/32 blackhole;\n  route 10.201.9.1/32 blackhole;\n}\n";
        assert!(text.contains(static_protocol), "{text}");
        assert!(text.contains("if proto = \"calico_borrowed\" && net ~ CALICO_POOLS then accept;"), "{text}");
        // The kernel is given BGP's routes only, never these blackholes.
        assert!(text.contains(
            "filter calico_to_kernel {\n  if source = RTS_BGP && net ~ CALICO_DIRECT_POOLS then accept;\n  reject;\n}"
        ));
    }

    #[test]
    fn the_header_filters_and_kernel_protocol() {
        let text = render(&input());
        assert!(text.contains("router id 10.200.0.5;\n"), "{text}");
        assert!(text.contains("graceful restart wait 30;\n"), "{text}");
        assert!(text.contains("define CALICO_POOLS = [ 10.201.0.0/16+, 10.202.0.0/16+ ];\n"), "{text}");
        assert!(text.contains("define CALICO_DIRECT_POOLS = [ 10.201.0.0/16+ ];\n"), "{text}");
        assert!(text.contains("if krt_source = 80 && dest = RTD_BLACKHOLE && net ~ CALICO_POOLS then accept;"));
        assert!(text.contains("if net ~ [ 10.200.0.0/24+ ] then reject;\n  if 10.200.0.5 ~ net then reject;"));
        assert!(text.contains("  learn;\n  persist;\n  scan time 10;\n  graceful restart;\n  metric 1024;"));
        assert!(text.contains("  local 10.200.0.5 as 64512;\n  graceful restart on;"));
    }

    #[test]
    fn peers_one_protocol_each_and_the_mesh_passive_side() {
        let text = render(&input());
        let higher = "protocol bgp Mesh_10_200_0_9 from calico_peer {\n  description \"mesh: node host2\";\n  \
                      neighbor 10.200.0.9 as 64512;\n  direct;\n  passive on;\n  ipv4 {\n    \
                      import filter calico_import;\n    export filter calico_export;\n    next hop self;\n    \
                      gateway direct;\n  };\n}\n";
        assert!(text.contains(higher), "{text}");
        let lower = "protocol bgp Mesh_10_200_0_2 from calico_peer {\n  description \"mesh: node host3\";\n  \
                     neighbor 10.200.0.2 as 64512;\n  direct;\n  ipv4 {";
        assert!(text.contains(lower), "{text}");
        let tor = "protocol bgp Node_10_200_0_254 from calico_peer {\n  description \"peer of this node\";\n  \
                   neighbor 10.200.0.254 as 65000;\n  direct;\n  ipv4 {";
        assert!(text.contains(tor), "{text}");
        let far = "protocol bgp Global_192_0_2_1 from calico_peer {\n  description \"global peer\";\n  \
                   neighbor 192.0.2.1 as 65001;\n  multihop;\n  ipv4 {";
        assert!(text.contains(far), "{text}");
        assert!(text.contains("next hop self;\n    gateway recursive;\n  };\n}\n"), "{text}");
    }

    #[test]
    fn no_pools_match_nothing_and_levels() {
        let mut i = input();
        i.pools.clear();
        i.direct_pools.clear();
        i.log_level = LogLevel::Debug;
        let text = render(&i);
        assert!(text.contains("define CALICO_POOLS = [ 0.0.0.0/32{32,32} ];"), "{text}");
        assert!(text.contains("log stderr all;\n"), "{text}");
        assert!(text.contains("\ndebug protocols { states, events };\n"), "{text}");
        i.log_level = LogLevel::None;
        assert!(render(&i).contains("log stderr { fatal, bug };"));
    }

    /// What is rendered, BIRD parses (`bird -p`), when BIRD is installed.
    #[test]
    fn bird_parses_what_is_rendered() {
        // scripts/deps.sh installs bird2: a missing BIRD fails here rather than skipping.
        assert!(
            std::process::Command::new("bird").arg("--version").output().is_ok(),
            "bird (Debian's bird2) is not installed: run scripts/deps.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut cases = vec![input()];
        let mut empty = input();
        (empty.pools, empty.direct_pools, empty.peers, empty.log_level) = (vec![], vec![], vec![], LogLevel::Debug);
        cases.push(empty);
        let mut borrowing = input();
        borrowing.borrowed = vec!["10.201.3.7/32".parse().unwrap()];
        cases.push(borrowing);
        for (i, case) in cases.iter().enumerate() {
            let path = dir.path().join(format!("bird{i}.conf"));
            std::fs::write(&path, render(case)).unwrap();
            let out = std::process::Command::new("bird").arg("-p").arg("-c").arg(&path).output().unwrap();
            assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), render(case));
        }
    }

    #[test]
    fn names_round_trip() {
        let ip: Ipv4Addr = "10.1.2.3".parse().unwrap();
        assert_eq!(protocol_name(PeerKind::Global, ip), "Global_10_1_2_3");
        assert_eq!(parse_protocol_name("Global_10_1_2_3"), Some((PeerKind::Global, ip)));
        assert_eq!(parse_protocol_name("calico_kernel"), None);
        assert_eq!(parse_protocol_name("device1"), None);
    }
}
