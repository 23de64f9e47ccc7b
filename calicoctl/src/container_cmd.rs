//! `calicoctl container <C> endpoint show`, `calicoctl container <C> profile
//! set|append|remove <P>...` and `calicoctl container <C> ip add|remove <IP>`: a container's
//! endpoints (every interface Calico attached it with), found by its id as the runtime gave
//! it, or a unique prefix of it.
//!
//! A profile change rewrites the endpoint records in one transaction conditional on their
//! revisions; calico-node applies it to the kernel. An address change is
//! [`calico_cni::container_ip`]'s: IPAM, the container, the host route, the tag sets and the
//! record, in an order that a failure undoes.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand};

use calico_cni::container_ip::{self, More, Record};
use datastore::{Compare, Datastore, Op, Read};
use ipnetwork::IpNetwork;
use model::endpoint::Endpoint;
use model::keys;
use model::profile::is_valid_name;

use crate::Output;

/// What follows `calicoctl container <C>`.
#[derive(Parser)]
#[command(no_binary_name = true, name = "calicoctl container <CONTAINER>")]
struct Named {
    #[command(subcommand)]
    command: ContainerCommand,
}

#[derive(Subcommand)]
enum ContainerCommand {
    /// The container's endpoints
    Endpoint {
        #[command(subcommand)]
        command: EndpointCommand,
    },
    /// The container's profiles
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// The container's addresses
    Ip {
        #[command(subcommand)]
        command: IpCommand,
    },
}

#[derive(Subcommand)]
enum IpCommand {
    /// Assign one more address (an IP, one from `ipv4` or `ipv6` pools, or one from the pool
    /// with this CIDR) and configure it in the container
    Add {
        address: String,
        /// The container's interface (needed when Calico attached it with several)
        #[arg(long)]
        interface: Option<String>,
    },
    /// Remove an address from the container and release it
    Remove {
        address: IpAddr,
        /// The container's interface (default: the one holding the address)
        #[arg(long)]
        interface: Option<String>,
    },
}

#[derive(Subcommand)]
enum EndpointCommand {
    Show {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// Replace the profiles with these, in this order
    Set {
        #[arg(required = true)]
        profiles: Vec<String>,
    },
    /// Add these after the profiles the container has
    Append {
        #[arg(required = true)]
        profiles: Vec<String>,
    },
    /// Remove these
    Remove {
        #[arg(required = true)]
        profiles: Vec<String>,
    },
}

/// `args`: the container id (or prefix), then the command.
pub fn run(store: &dyn Datastore, args: Vec<String>) -> anyhow::Result<ExitCode> {
    let Some((id, rest)) = args.split_first() else { bail!("a container id") };
    let named = match Named::try_parse_from(rest) {
        Ok(n) => n,
        Err(e) => e.exit(),
    };
    let (endpoints, revisions) = find(store, id, crate::this_node().ok().as_deref())?;
    match named.command {
        ContainerCommand::Ip { command } => ip(store, &endpoints, &revisions, command)?,
        ContainerCommand::Endpoint { command: EndpointCommand::Show { output } } => show(&endpoints, output)?,
        ContainerCommand::Profile { command } => {
            let (names, how) = match &command {
                ProfileCommand::Set { profiles } => (profiles, "set"),
                ProfileCommand::Append { profiles } => (profiles, "append"),
                ProfileCommand::Remove { profiles } => (profiles, "remove"),
            };
            check_profiles(store, names, how != "remove")?;
            let mut ops = Vec::new();
            for ep in &endpoints {
                let mut ep = ep.clone();
                match how {
                    "set" => ep.profiles = names.clone(),
                    "append" => {
                        for p in names {
                            if ep.profiles.contains(p) {
                                bail!("container {} already has profile {p}", ep.container_id);
                            }
                            ep.profiles.push(p.clone());
                        }
                    }
                    _ => {
                        for p in names {
                            if !ep.profiles.contains(p) {
                                bail!("container {} does not have profile {p}", ep.container_id);
                            }
                        }
                        ep.profiles.retain(|p| !names.contains(p));
                    }
                }
                ops.push(Op::Put { key: ep.key(), value: model::encode(&ep) });
            }
            let compares: Vec<Compare> =
                endpoints.iter().zip(&revisions).map(|(ep, r)| Compare::Revision(ep.key(), *r)).collect();
            if !store.txn(&compares, &ops)?.committed() {
                bail!("the container's endpoint changed meanwhile; try again");
            }
            let now = match &ops[0] {
                Op::Put { value, .. } => model::decode::<Endpoint>("", value)?.profiles.join(", "),
                Op::Delete { .. } => String::new(),
            };
            println!(
                "Profiles of container {}: {}",
                endpoints[0].container_id,
                if now.is_empty() { "none" } else { &now }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ip(store: &dyn Datastore, endpoints: &[Endpoint], revisions: &[i64], command: IpCommand) -> anyhow::Result<()> {
    let pick = |interface: Option<&String>, holding: Option<IpAddr>| -> anyhow::Result<Record> {
        let names = || endpoints.iter().map(|e| e.ifname.as_str()).collect::<Vec<_>>().join(", ");
        let container = &endpoints[0].container_id;
        let found = match (interface, holding) {
            (Some(name), _) => endpoints.iter().position(|e| &e.ifname == name).ok_or_else(|| {
                anyhow::anyhow!(
                    "container {container} has no interface {name} that Calico attached (it has {})",
                    names()
                )
            })?,
            (None, Some(ip)) => endpoints
                .iter()
                .position(|e| e.addresses().contains(&ip))
                .ok_or_else(|| anyhow::anyhow!("container {container} does not have address {ip}"))?,
            (None, None) if endpoints.len() == 1 => 0,
            (None, None) => {
                bail!("container {container} has several interfaces ({}); choose one with --interface", names())
            }
        };
        Ok(Record { endpoint: endpoints[found].clone(), revision: revisions[found] })
    };
    match command {
        IpCommand::Add { address, interface } => {
            let more = parse_more(&address)?;
            let record = pick(interface.as_ref(), None)?;
            let (ip, ep) = container_ip::add_here(store, &record, more)?;
            println!("IP {ip} added to container {} ({})", ep.container_id, ep.ifname);
        }
        IpCommand::Remove { address, interface } => {
            let record = pick(interface.as_ref(), Some(address))?;
            let ep = container_ip::remove_here(store, &record, address)?;
            println!("IP {address} removed from container {} ({})", ep.container_id, ep.ifname);
        }
    }
    Ok(())
}

/// `ip add`'s argument: an address, `ipv4`, `ipv6`, or a pool's CIDR.
fn parse_more(arg: &str) -> anyhow::Result<More> {
    Ok(match arg.to_ascii_lowercase().as_str() {
        "ipv4" => More::Family(4),
        "ipv6" => More::Family(6),
        _ if arg.contains('/') => {
            let cidr: IpNetwork = arg.parse().map_err(|e| anyhow::anyhow!("invalid pool CIDR {arg:?}: {e}"))?;
            More::Pool(cidr)
        }
        _ => More::Ip(arg.parse().map_err(|_| {
            anyhow::anyhow!("invalid address {arg:?}: give an IP address, ipv4, ipv6, or the CIDR of a pool")
        })?),
    })
}

/// The endpoints of the one container whose id is or starts with `id`, with their revisions.
///
/// The commands run on the container's host (`ip add|remove` only works there), so this
/// host's endpoints (`local`, its node name) are searched first: the usual lookup lists one
/// node's endpoints, not the cluster's. Only when none of them matches are every node's
/// searched, so `endpoint show` and `profile` also reach a container on another host.
fn find(store: &dyn Datastore, id: &str, local: Option<&str>) -> anyhow::Result<(Vec<Endpoint>, Vec<i64>)> {
    if let Some(node) = local {
        let found = matching(store, &keys::endpoint_node_prefix(node), id)?;
        if !found.is_empty() {
            return one_container(id, found);
        }
    }
    one_container(id, matching(store, keys::ENDPOINT_HOST_PREFIX, id)?)
}

/// The endpoints under `prefix` whose container id is or starts with `id`.
fn matching(store: &dyn Datastore, prefix: &str, id: &str) -> anyhow::Result<Vec<(Endpoint, i64)>> {
    let mut found = Vec::new();
    for kv in store.list(prefix)?.iter().filter(|kv| keys::is_endpoint(&kv.key)) {
        let ep: Endpoint = model::decode(&kv.key, &kv.value)?;
        if !id.is_empty() && ep.container_id.starts_with(id) {
            found.push((ep, kv.mod_revision));
        }
    }
    Ok(found)
}

/// `found`, when it is one container's endpoints (or holds the container named exactly `id`).
fn one_container(id: &str, mut found: Vec<(Endpoint, i64)>) -> anyhow::Result<(Vec<Endpoint>, Vec<i64>)> {
    if found.is_empty() {
        bail!("Container {id} is unknown to Calico.");
    }
    let mut ids: Vec<String> = found.iter().map(|(ep, _)| ep.container_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let exact = ids.iter().any(|i| i == id);
    if ids.len() > 1 && !exact {
        bail!("{id:?} is the start of several containers' ids ({}); give more of it", ids.join(", "));
    }
    let one = ids.len() == 1;
    found.retain(|(ep, _)| one || ep.container_id == id);
    Ok(found.into_iter().unzip())
}

fn check_profiles(store: &dyn Datastore, names: &[String], must_exist: bool) -> anyhow::Result<()> {
    if let Some(bad) = names.iter().find(|n| !is_valid_name(n)) {
        bail!("invalid profile name {bad:?}: letters, digits, '.', '_' and '-' only");
    }
    if must_exist {
        let found = store.read_many(&names.iter().map(|n| Read::Key(keys::profile_rules(n))).collect::<Vec<_>>())?;
        if let Some((n, _)) = names.iter().zip(found).find(|(_, kv)| kv.is_empty()) {
            bail!("Profile {n} not found.");
        }
    }
    Ok(())
}

fn show(endpoints: &[Endpoint], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(endpoints)?),
        Output::Table => {
            println!(
                "{:<16} {:<6} {:<24} {:<16} {:<10} {:<16} {:<30} {:<16} PORTS",
                "NODE", "ORCH", "WORKLOAD", "CONTAINER", "INTERFACE", "HOST VETH", "IPS", "PROFILES"
            );
            for ep in endpoints {
                println!(
                    "{:<16} {:<6} {:<24} {:<16} {:<10} {:<16} {:<30} {:<16} {}",
                    ep.node,
                    ep.orchestrator,
                    ep.workload_id,
                    crate::endpoint_cmd::short_id(&ep.container_id),
                    ep.ifname,
                    ep.host_veth,
                    ep.ips.join(","),
                    if ep.profiles.is_empty() { "-".to_owned() } else { ep.profiles.join(",") },
                    crate::endpoint_cmd::ports(ep)
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore::memory::MemoryStore;
    use std::sync::atomic::Ordering;

    fn endpoint(store: &MemoryStore, node: &str, container: &str) {
        let ep = Endpoint {
            node: node.into(),
            orchestrator: "cni".into(),
            workload_id: container.into(),
            container_id: container.into(),
            ifname: "eth0".into(),
            netns: format!("/var/run/netns/{container}"),
            network: "net".into(),
            host_veth: format!("cali{container}"),
            mac: "ee:ee:ee:ee:ee:ee".into(),
            ips: vec!["10.0.0.1/32".into()],
            result: serde_json::Value::Null,
            port_mappings: Vec::new(),
            profiles: vec!["net".into()],
        };
        let put = Op::Put { key: ep.key(), value: serde_json::to_vec(&ep).unwrap() };
        assert!(store.txn(&[], &[put]).unwrap().committed());
    }

    fn ids(found: anyhow::Result<(Vec<Endpoint>, Vec<i64>)>) -> Vec<String> {
        found.unwrap().0.into_iter().map(|ep| format!("{}/{}", ep.node, ep.container_id)).collect()
    }

    #[test]
    fn a_container_is_looked_up_on_this_host_first_then_everywhere() {
        let store = MemoryStore::new();
        endpoint(&store, "here", "abc1");
        endpoint(&store, "there", "abc2");
        endpoint(&store, "there", "def1");

        // Found here: one list, of this node's endpoints only, and the remote `abc2` that the
        // prefix also matches does not make it ambiguous.
        let before = store.calls.load(Ordering::Relaxed);
        assert_eq!(ids(find(&store, "abc", Some("here"))), ["here/abc1"]);
        assert_eq!(store.calls.load(Ordering::Relaxed) - before, 1);

        // Not here: every node's, with the same rules as before.
        assert_eq!(ids(find(&store, "def", Some("here"))), ["there/def1"]);
        assert_eq!(ids(find(&store, "def1", None)), ["there/def1"]);
        let several = find(&store, "abc", None).unwrap_err().to_string();
        assert!(several.contains("several containers") && several.contains("abc1, abc2"), "{several}");
        let unknown = find(&store, "nope", Some("here")).unwrap_err().to_string();
        assert_eq!(unknown, "Container nope is unknown to Calico.");
        assert!(find(&store, "", Some("here")).is_err(), "an empty id names no container");
    }
}
