//! `calicoctl container <C> endpoint show` and `calicoctl container <C> profile
//! set|append|remove <P>...`: a container's endpoints (every interface Calico attached it
//! with), found by its id as the runtime gave it, or a unique prefix of it.
//!
//! A profile change rewrites the endpoint records in one transaction conditional on their
//! revisions; calico-node applies it to the kernel.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand};

use datastore::{Compare, Datastore, Op, Read};
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
    let (endpoints, revisions) = find(store, id)?;
    match named.command {
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

/// The endpoints of the one container whose id is or starts with `id`, with their revisions.
fn find(store: &dyn Datastore, id: &str) -> anyhow::Result<(Vec<Endpoint>, Vec<i64>)> {
    let mut found: Vec<(Endpoint, i64)> = Vec::new();
    for kv in store.list(keys::ENDPOINT_HOST_PREFIX)?.iter().filter(|kv| keys::is_endpoint(&kv.key)) {
        let ep: Endpoint = model::decode(&kv.key, &kv.value)?;
        if !id.is_empty() && ep.container_id.starts_with(id) {
            found.push((ep, kv.mod_revision));
        }
    }
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
                "{:<16} {:<6} {:<24} {:<16} {:<10} {:<16} {:<30} PROFILES",
                "NODE", "ORCH", "WORKLOAD", "CONTAINER", "INTERFACE", "HOST VETH", "IPS"
            );
            for ep in endpoints {
                let short: String = ep.container_id.chars().take(12).collect();
                println!(
                    "{:<16} {:<6} {:<24} {:<16} {:<10} {:<16} {:<30} {}",
                    ep.node,
                    ep.orchestrator,
                    ep.workload_id,
                    short,
                    ep.ifname,
                    ep.host_veth,
                    ep.ips.join(","),
                    ep.profiles.join(",")
                );
            }
        }
    }
    Ok(())
}
