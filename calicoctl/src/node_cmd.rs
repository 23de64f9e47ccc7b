//! `calicoctl node show`: the node records calico-node wrote, with their blocks.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Subcommand;
use datastore::{Datastore, Read};
use model::node::{self, Node};
use serde_json::json;

use crate::Output;

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List the nodes: name, addresses, AS, tunnel addresses, blocks
    Show {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
}

/// Node name → its blocks.
type Blocks = BTreeMap<String, Vec<String>>;

/// Every node record and the blocks affine to each node, read in one snapshot.
fn nodes(store: &dyn Datastore) -> anyhow::Result<(BTreeMap<String, Node>, Blocks)> {
    let reads = [node::BGP_HOST_PREFIX, node::HOST_PREFIX, ipam::keys::HOST_PREFIX].map(|p| Read::Prefix(p.into()));
    let found = store.read_many(&reads)?;
    let (records, errors) =
        node::decode_all(found[..2].iter().flatten().map(|kv| (kv.key.as_str(), kv.value.as_slice())));
    for e in errors {
        eprintln!("warning: {e}");
    }
    let mut blocks = Blocks::new();
    for kv in &found[2] {
        let parts: Vec<&str> = kv.key.trim_start_matches(ipam::keys::HOST_PREFIX).split('/').collect();
        if let [name, "ipv4" | "ipv6", "block", segment] = parts.as_slice() {
            if let Some(cidr) = ipam::keys::parse_cidr_segment(segment) {
                blocks.entry((*name).to_owned()).or_default().push(cidr.to_string());
            }
        }
    }
    // Workload endpoints also live under the host prefix: a node is one with a record.
    let records = records.into_iter().filter(|(_, n)| n.registered || n.ipv4.is_some() || n.ipv6.is_some()).collect();
    Ok((records, blocks))
}

pub fn run(store: &dyn Datastore, cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    let NodeCommand::Show { output } = cmd;
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
        }
    }
    Ok(ExitCode::SUCCESS)
}
