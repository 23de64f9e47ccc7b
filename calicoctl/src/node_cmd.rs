//! `calicoctl node show`: the node records calico-node wrote, with their blocks.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use datastore::{Compare, Datastore, Op, Read};
use model::keys;
use model::node::{self, Node};
use serde_json::json;

use crate::Output;

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List the nodes: name, addresses, AS, tunnel addresses, blocks
    Show {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
        /// BIRD's control socket on this host: the table ends with its BGP sessions
        #[arg(long, default_value = ::node::bgp::DEFAULT_SOCKET)]
        bird_socket: std::path::PathBuf,
    },
    /// This node's own BGP peers: `node bgp peer add <IP> as <AS> [--node NAME]`, remove, show
    Bgp {
        #[command(subcommand)]
        command: crate::bgp_cmd::NodeBgpCommand,
    },
    /// Remove a node that is gone: release its tunnel addresses, free its empty blocks (the
    /// others lose their affinity), delete its affinities and record; the other nodes then
    /// remove its routes. Stop its calico-node first.
    Remove {
        name: String,
        /// also release the addresses of its workload endpoints and delete their records
        #[arg(long)]
        remove_endpoints: bool,
    },
}

/// Node name → its blocks.
type Blocks = BTreeMap<String, Vec<String>>;

/// Every node record and the blocks affine to each node, read in one snapshot.
fn nodes(store: &dyn Datastore) -> anyhow::Result<(BTreeMap<String, Node>, Blocks)> {
    let reads = [node::BGP_HOST_PREFIX, node::HOST_PREFIX, keys::IPAM_HOST_PREFIX].map(|p| Read::Prefix(p.into()));
    let found = store.read_many(&reads)?;
    let (records, errors) =
        node::decode_all(found[..2].iter().flatten().map(|kv| (kv.key.as_str(), kv.value.as_slice())));
    for e in errors {
        eprintln!("warning: {e}");
    }
    let mut blocks = Blocks::new();
    for kv in &found[2] {
        let parts: Vec<&str> = kv.key.trim_start_matches(keys::IPAM_HOST_PREFIX).split('/').collect();
        if let [name, "ipv4" | "ipv6", "block", segment] = parts.as_slice() {
            if let Some(cidr) = keys::parse_cidr_segment(segment) {
                blocks.entry((*name).to_owned()).or_default().push(cidr.to_string());
            }
        }
    }
    // Workload endpoints also live under the host prefix: a node is one with a record.
    let records = records.into_iter().filter(|(_, n)| n.registered || n.ipv4.is_some() || n.ipv6.is_some()).collect();
    Ok((records, blocks))
}

/// The IPAM handles of a node's tunnel addresses, as calico-node names them.
fn tunnel_handles(name: &str) -> [String; 2] {
    [format!("vxlan-tunnel-addr-{name}"), format!("ipip-tunnel-addr-{name}")]
}

fn remove(store: &dyn Datastore, name: &str, remove_endpoints: bool) -> anyhow::Result<ExitCode> {
    let (records, blocks) = nodes(store)?;
    let endpoints: Vec<model::endpoint::Endpoint> = store
        .list(&keys::endpoint_node_prefix(name))
        .context("reading its workload endpoints")?
        .iter()
        .filter(|kv| keys::is_endpoint(&kv.key))
        .map(|kv| model::decode(&kv.key, &kv.value))
        .collect::<Result<_, _>>()?;
    if !records.contains_key(name) && !blocks.contains_key(name) && endpoints.is_empty() {
        let known: Vec<&str> = records.keys().map(String::as_str).collect();
        bail!(
            "unknown node {name:?} (the nodes are: {})",
            if known.is_empty() { "none".into() } else { known.join(", ") }
        );
    }
    if !endpoints.is_empty() && !remove_endpoints {
        bail!(
            "node {name:?} still has {} workload endpoint(s); --remove-endpoints releases their addresses and \
             deletes them",
            endpoints.len()
        );
    }
    let ipam = ipam::Ipam::new(store, name.to_owned());
    let mut released = 0;
    for ep in &endpoints {
        let handle = model::handle::handle_id(&ep.network, &ep.container_id, &ep.ifname);
        released += ipam.release_handle(&handle)?.len();
        store.txn(&[], &[Op::Delete { key: ep.key() }])?;
    }
    for handle in tunnel_handles(name) {
        released += ipam.release_handle(&handle)?.len();
    }
    let freed = release_blocks(store, name)?;
    let mut ops: Vec<Op> = node::keys_of(name).into_iter().map(|key| Op::Delete { key }).collect();
    for family in [4, 6] {
        ops.push(Op::Delete { key: keys::cursor(name, family) });
        // Its own BGP peers go with it.
        for kv in store.list(&keys::node_peer_prefix(name, family))? {
            ops.push(Op::Delete { key: kv.key });
        }
    }
    // Its address claims, unless another node has taken one over meanwhile.
    let mut compares = Vec::new();
    for ip in records.get(name).map(node::Node::addrs).unwrap_or_default() {
        let key = keys::node_address_claim(&ip);
        if let Some(kv) = store.get(&key)?.filter(|kv| kv.value == name.as_bytes()) {
            compares.push(datastore::Compare::Revision(key.clone(), kv.mod_revision));
            ops.push(Op::Delete { key });
        }
    }
    if let datastore::TxnOutcome::Conflict = store.txn(&compares, &ops)? {
        bail!("node {name:?}: an address claim changed while removing it; run the command again");
    }
    println!(
        "Removed node {name}: {} endpoint(s), {released} address(es) released, {freed} block(s) freed",
        endpoints.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Delete the node's affinities; its empty blocks go with them, the others stay (their
/// addresses are still in use) with no affinity. Returns how many blocks were freed.
fn release_blocks(store: &dyn Datastore, name: &str) -> anyhow::Result<usize> {
    let mut freed = 0;
    for family in [4, 6] {
        let mut done = false;
        for _attempt in 0..32 {
            let mine: Vec<(model::block::Block, i64)> = ipam::allocator::blocks_of(store, family)?
                .into_iter()
                .filter(|(b, _)| b.host() == Some(name))
                .collect();
            let mut compares = Vec::new();
            let mut ops = Vec::new();
            let mut empty = 0;
            for (block, revision) in &mine {
                let key = keys::block(&block.cidr);
                compares.push(Compare::Revision(key.clone(), *revision));
                ops.push(Op::Delete { key: keys::affinity(name, &block.cidr) });
                if block.used() == 0 {
                    ops.push(Op::Delete { key });
                    empty += 1;
                } else {
                    let mut orphan = block.clone();
                    orphan.affinity = None;
                    ops.push(Op::Put { key, value: serde_json::to_vec(&orphan)? });
                }
            }
            // Affinities without a block (left by an interrupted claim) go too.
            let prefix = keys::affinity_prefix(name, family);
            for kv in store.list(&prefix)? {
                if !ops.iter().any(|op| matches!(op, Op::Delete { key } if *key == kv.key)) {
                    ops.push(Op::Delete { key: kv.key });
                }
            }
            if ops.is_empty() || store.txn(&compares, &ops)?.committed() {
                freed += empty;
                done = true;
                break;
            }
        }
        if !done {
            bail!("the blocks of node {name:?} kept changing (32 attempts): is its calico-node or a plugin still running?");
        }
    }
    Ok(freed)
}

pub fn run(store: &dyn Datastore, cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    let (output, socket) = match cmd {
        NodeCommand::Show { output, bird_socket } => (output, bird_socket),
        NodeCommand::Remove { name, remove_endpoints } => return remove(store, &name, remove_endpoints),
        NodeCommand::Bgp { command } => return crate::bgp_cmd::run_node(store, command),
    };
    let (records, blocks) = nodes(store)?;
    let none = || "-".to_owned();
    let text = |v: Option<String>| v.unwrap_or_else(none);
    match output {
        Output::Json => {
            let list: Vec<_> = records
                .values()
                .map(|n| {
                    json!({
                        "name": n.name,
                        "ipv4": n.ipv4.map(|a| a.to_string()),
                        "ipv6": n.ipv6.map(|a| a.to_string()),
                        "as_number": n.as_number,
                        "ipip_tunnel_addr": n.ipip_tunnel_addr.map(|a| a.to_string()),
                        "vxlan_tunnel_addr": n.vxlan_tunnel_addr.map(|a| a.to_string()),
                        "vxlan_tunnel_mac": n.vxlan_tunnel_mac.map(|m| m.to_string()),
                        "blocks": blocks.get(&n.name).cloned().unwrap_or_default(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Output::Table => {
            println!("{:<20} {:<18} {:<24} {:<7} {:<15} {:<15} BLOCKS", "NAME", "IPV4", "IPV6", "AS", "IPIP", "VXLAN");
            for n in records.values() {
                println!(
                    "{:<20} {:<18} {:<24} {:<7} {:<15} {:<15} {}",
                    n.name,
                    text(n.ipv4.map(|a| a.to_string())),
                    text(n.ipv6.map(|a| a.to_string())),
                    text(n.as_number.map(|a| a.to_string())),
                    text(n.ipip_tunnel_addr.map(|a| a.to_string())),
                    text(n.vxlan_tunnel_addr.map(|a| a.to_string())),
                    blocks.get(&n.name).map_or_else(none, |b| b.join(",")),
                );
            }
            crate::bgp_cmd::print_sessions(&socket);
        }
    }
    Ok(ExitCode::SUCCESS)
}
