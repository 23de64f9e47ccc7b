//! `calicoctl bgp ...` and `calicoctl node bgp ...`: BGP peers (of every node, or of one),
//! the node-to-node mesh and the default AS number, in the syntax of Calico v0.x
//! (`bgp peer add 10.0.0.1 as 65000`).

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use datastore::{Datastore, Op};
use model::bgp::{AsNumber, NodeMesh, Peer};
use model::keys;
use serde_json::json;

use crate::Output;

#[derive(Subcommand)]
pub enum BgpCommand {
    /// Global BGP peers: every node peers with them
    Peer {
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// Show, or turn on or off, the full node-to-node BGP mesh (on unless turned off)
    NodeMesh {
        #[arg(value_parser = ["on", "off"])]
        state: Option<String>,
    },
    /// Show, or set, the AS number of nodes started without --as (default 64512)
    DefaultNodeAs { as_number: Option<String> },
}

#[derive(Subcommand)]
pub enum PeerCommand {
    /// Add a peer: `add <IP> as <AS>`
    Add {
        ip: String,
        /// the word `as`
        #[arg(value_name = "as")]
        as_word: String,
        #[arg(value_name = "AS")]
        as_number: String,
    },
    /// Remove a peer
    Remove { ip: String },
    /// List the peers
    Show {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
}

/// `--node`: the node whose peers these are (default: this host's node name).
#[derive(clap::Args)]
pub struct NodeArg {
    /// the node [default: $NODENAME, else /var/lib/calico/nodename, else the hostname]
    #[arg(long, global = true)]
    node: Option<String>,
}

#[derive(Subcommand)]
pub enum NodeBgpCommand {
    /// This node's own BGP peers (e.g. its top-of-rack router)
    Peer {
        #[command(subcommand)]
        command: PeerCommand,
        #[command(flatten)]
        node: NodeArg,
    },
}

/// An AS number as typed: 1 to 4294967295 (4-byte AS numbers).
pub fn parse_as(text: &str) -> anyhow::Result<u32> {
    match text.trim().parse::<u64>() {
        Ok(n) if (1..=u64::from(u32::MAX)).contains(&n) => Ok(n as u32),
        _ => bail!("Invalid AS Number specified: {text:?} (an AS number is 1 to 4294967295)."),
    }
}

fn parse_ip(text: &str) -> anyhow::Result<IpAddr> {
    let ip: IpAddr = text
        .parse()
        .map_err(|_| anyhow::anyhow!("Invalid IP address specified: {text:?} (an IPv4 or IPv6 address)."))?;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
    {
        bail!("Invalid IP address specified: {ip} cannot be a BGP peer.");
    }
    Ok(ip)
}

/// The node that has `ip` as its own address, if one does.
fn node_with_address(store: &dyn Datastore, ip: &IpAddr) -> anyhow::Result<Option<String>> {
    let Some(kv) = store.get(&keys::node_address_claim(ip))? else {
        // Older records without a claim: look at the node records themselves.
        let found = store.list(model::node::BGP_HOST_PREFIX)?;
        let (records, _) = model::node::decode_all(found.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())));
        return Ok(records.into_values().find(|n| n.addrs().contains(ip)).map(|n| n.name));
    };
    Ok(Some(String::from_utf8_lossy(&kv.value).into_owned()))
}

fn peers(store: &dyn Datastore, node: Option<&str>) -> anyhow::Result<Vec<Peer>> {
    let mut all = Vec::new();
    for family in [4, 6] {
        let prefix = match node {
            None => keys::global_peer_prefix(family),
            Some(n) => keys::node_peer_prefix(n, family),
        };
        for kv in store.list(&prefix)? {
            match model::decode::<Peer>(&kv.key, &kv.value) {
                Ok(p) => all.push(p),
                Err(e) => eprintln!("warning: {e}"),
            }
        }
    }
    Ok(all)
}

fn peer_cmd(store: &dyn Datastore, node: Option<&str>, cmd: PeerCommand) -> anyhow::Result<ExitCode> {
    let key = |ip: &IpAddr| match node {
        None => keys::global_peer(ip),
        Some(n) => keys::node_peer(n, ip),
    };
    let whose = match node {
        None => "global".to_owned(),
        Some(n) => format!("node {n}'s"),
    };
    match cmd {
        PeerCommand::Add { ip, as_word, as_number } => {
            let ip = parse_ip(&ip)?;
            if as_word != "as" {
                bail!("expected `{ip} as <AS>`, got {as_word:?} for `as`");
            }
            let as_num = AsNumber(parse_as(&as_number)?);
            if let Some(owner) = node_with_address(store, &ip)? {
                if node.is_none_or(|n| n == owner) {
                    bail!("{ip} is node {owner}'s own address: a node cannot peer with itself");
                }
            }
            if let Some(n) = node {
                model::node::validate_name(n)?;
            }
            let value = model::encode(&Peer { ip, as_num });
            store.txn(&[], &[Op::Put { key: key(&ip), value }])?;
            println!("Added {whose} BGP peer {ip} as {as_num}");
        }
        PeerCommand::Remove { ip } => {
            let ip = parse_ip(&ip)?;
            if store.get(&key(&ip))?.is_none() {
                bail!("{ip} is not a {whose} BGP peer");
            }
            store.txn(&[], &[Op::Delete { key: key(&ip) }])?;
            println!("Removed {whose} BGP peer {ip}");
        }
        PeerCommand::Show { output } => {
            let list = peers(store, node)?;
            match output {
                Output::Json => {
                    let rows: Vec<_> =
                        list.iter().map(|p| json!({"ip": p.ip.to_string(), "as_num": p.as_num.0})).collect();
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                }
                Output::Table => {
                    println!("{:<40} AS", "PEER");
                    for p in &list {
                        println!("{:<40} {}", p.ip, p.as_num);
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(store: &dyn Datastore, cmd: BgpCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BgpCommand::Peer { command } => peer_cmd(store, None, command),
        BgpCommand::NodeMesh { state: None } => {
            let mesh = match store.get(keys::BGP_NODE_MESH)? {
                Some(kv) => model::decode::<NodeMesh>(keys::BGP_NODE_MESH, &kv.value)?,
                None => NodeMesh::default(),
            };
            println!("{}", if mesh.enabled { "on" } else { "off" });
            Ok(ExitCode::SUCCESS)
        }
        BgpCommand::NodeMesh { state: Some(state) } => {
            let value = model::encode(&NodeMesh { enabled: state == "on" });
            store.txn(&[], &[Op::Put { key: keys::BGP_NODE_MESH.into(), value }])?;
            println!("The node-to-node BGP mesh is {state}");
            Ok(ExitCode::SUCCESS)
        }
        BgpCommand::DefaultNodeAs { as_number: None } => {
            let current = match store.get(keys::BGP_AS_NUMBER)? {
                Some(kv) => model::decode::<AsNumber>(keys::BGP_AS_NUMBER, &kv.value)?.0,
                None => ::node::bgp::DEFAULT_AS,
            };
            println!("{current}");
            Ok(ExitCode::SUCCESS)
        }
        BgpCommand::DefaultNodeAs { as_number: Some(text) } => {
            let as_num = AsNumber(parse_as(&text)?);
            store.txn(&[], &[Op::Put { key: keys::BGP_AS_NUMBER.into(), value: model::encode(&as_num) }])?;
            println!("Nodes without their own AS number are now in AS {as_num}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn run_node(store: &dyn Datastore, cmd: NodeBgpCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NodeBgpCommand::Peer { command, node } => {
            let name = match node.node {
                Some(n) => n,
                None => crate::this_node().context("the node of the peer")?,
            };
            peer_cmd(store, Some(&name), command)
        }
    }
}

/// The table of this host's BGP sessions, from BIRD's control socket at `socket`.
pub fn print_sessions(socket: &std::path::Path) {
    println!();
    match ::node::bgp::bird::protocols(socket) {
        Err(e) => println!("BGP sessions: none to show ({})", ::node::chain(&e)),
        Ok(protocols) => {
            println!("BGP sessions of this host (BIRD at {}):", socket.display());
            println!("{:<18} {:<7} {:<7} {:<14} INFO", "PEER", "TYPE", "STATE", "SINCE");
            for p in protocols.iter().filter(|p| p.proto == "BGP") {
                let (kind, peer) = match ::node::bgp::render::parse_protocol_name(&p.name) {
                    Some((kind, ip)) => (kind.prefix().to_ascii_lowercase(), ip.to_string()),
                    None => ("other".into(), p.name.clone()),
                };
                println!("{:<18} {:<7} {:<7} {:<14} {}", peer, kind, p.state, p.since, p.info);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_numbers_and_addresses() {
        assert_eq!(parse_as("64512").unwrap(), 64512);
        assert_eq!(parse_as("4294967295").unwrap(), u32::MAX);
        for bad in ["0", "4294967296", "abc", "-1", ""] {
            let e = parse_as(bad).unwrap_err().to_string();
            assert!(e.starts_with("Invalid AS Number specified"), "{bad}: {e}");
        }
        assert!(parse_ip("fd00::1").is_ok());
        for bad in ["10.0.0.300", "bogus", "0.0.0.0", "127.0.0.1", "224.0.0.1"] {
            assert!(parse_ip(bad).unwrap_err().to_string().starts_with("Invalid IP address specified"), "{bad}");
        }
    }
}
