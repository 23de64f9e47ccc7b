//! `calicoctl profile add|remove|show` and `calicoctl profile <P> tag|rule ...`.
//!
//! Every change reads the profile's keys, changes them and writes them back in one
//! transaction conditional on their revisions (retried when another writer came between), so
//! a change is whole or absent. The rule grammar is the model's ([`model::rule_syntax`]).

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use datastore::{Compare, Datastore, Op, Read};
use model::endpoint::Endpoint;
use model::profile::{is_valid_name, Profile, Rules};
use model::rule_syntax::{self, Direction};
use model::{keys, rule_syntax::validate};

use crate::Output;

#[derive(Subcommand)]
pub enum ProfileCommand {
    /// List profiles (--detailed: with the endpoints that use each)
    Show {
        #[arg(long)]
        detailed: bool,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Add a profile: tag <P>, inbound `allow from tag <P>`, outbound `allow`
    Add { name: String },
    /// Remove a profile (refused while endpoints use it, unless --no-check)
    Remove {
        name: String,
        #[arg(long)]
        no_check: bool,
    },
    /// `profile <P> tag ...` and `profile <P> rule ...`
    #[command(external_subcommand)]
    Named(Vec<String>),
}

/// What follows `calicoctl profile <P>`.
#[derive(Parser)]
#[command(no_binary_name = true, name = "calicoctl profile <PROFILE>")]
struct Named {
    #[command(subcommand)]
    command: NamedCommand,
}

#[derive(Subcommand)]
enum NamedCommand {
    /// The profile's tags
    Tag {
        #[command(subcommand)]
        command: TagCommand,
    },
    /// The profile's rules
    Rule {
        #[command(subcommand)]
        command: RuleCommand,
    },
}

#[derive(Subcommand)]
enum TagCommand {
    Show,
    Add { tag: String },
    Remove { tag: String },
}

#[derive(Subcommand)]
enum RuleCommand {
    /// Insert a rule: (inbound|outbound) [--at=N] (allow|deny) [tcp|udp|icmp ...] [from ...] [to ...]
    Add {
        direction: String,
        /// 1-based position (default: after the last)
        #[arg(long)]
        at: Option<usize>,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        rule: Vec<String>,
    },
    /// Remove a rule by position (--at=N) or by its words as `rule show` prints them
    Remove {
        direction: String,
        #[arg(long)]
        at: Option<usize>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rule: Vec<String>,
    },
    /// Print the rules, numbered from 1
    Show,
    /// Print the rules as JSON
    Json,
    /// Replace the rules with JSON read from stdin (as `rule json` prints them)
    Update,
}

pub fn run(store: &dyn Datastore, cmd: ProfileCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ProfileCommand::Show { detailed, output } => show(store, detailed, output)?,
        ProfileCommand::Add { name } => {
            check_name(&name)?;
            if create(store, &Profile::new(&name))? {
                println!("Created profile {name}");
            } else {
                bail!("Profile {name} already exists.");
            }
        }
        ProfileCommand::Remove { name, no_check } => {
            let (_, revs) = load(store, &name)?;
            if !no_check {
                let users: Vec<String> = ipam::report::endpoints(store)?
                    .iter()
                    .filter(|ep| ep.profiles.contains(&name))
                    .map(describe)
                    .collect();
                if !users.is_empty() {
                    bail!(
                        "Profile {name} is in use by {} endpoint(s): {}. Remove them first, or pass --no-check.",
                        users.len(),
                        users.join(", ")
                    );
                }
            }
            let compares = conditions(&name, &revs);
            let ops = [keys::profile_rules(&name), keys::profile_tags(&name), keys::profile_labels(&name)]
                .map(|key| Op::Delete { key });
            if !store.txn(&compares, &ops)?.committed() {
                bail!("Profile {name} changed while it was being removed; try again.");
            }
            println!("Removed profile {name}");
        }
        ProfileCommand::Named(args) => {
            let (name, rest) = args.split_first().context("a profile name")?;
            // Help and usage errors print as clap prints them, with its exit code.
            let named = match Named::try_parse_from(rest) {
                Ok(n) => n,
                Err(e) => e.exit(),
            };
            return named_command(store, name, named.command);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if !is_valid_name(name) {
        bail!("invalid profile name {name:?}: letters, digits, '.', '_' and '-' only");
    }
    Ok(())
}

fn describe(ep: &Endpoint) -> String {
    format!("{}/{}/{}/{}", ep.node, ep.orchestrator, ep.workload_id, ep.ifname)
}

/// Writes a new profile unless one of that name exists; whether it did.
pub fn create(store: &dyn Datastore, p: &Profile) -> anyhow::Result<bool> {
    let compares: Vec<Compare> = p.records().iter().map(|(k, _)| Compare::Absent(k.clone())).collect();
    let ops: Vec<Op> = p.records().into_iter().map(|(key, value)| Op::Put { key, value }).collect();
    Ok(store.txn(&compares, &ops)?.committed())
}

/// The revisions of a profile's three keys (0: absent).
type Revisions = [i64; 3];

fn load(store: &dyn Datastore, name: &str) -> anyhow::Result<(Profile, Revisions)> {
    check_name(name)?;
    let ks = [keys::profile_rules(name), keys::profile_tags(name), keys::profile_labels(name)];
    let got = store.read_many(&ks.clone().map(Read::Key))?;
    let revs = [0, 1, 2].map(|i| got[i].first().map_or(0, |kv| kv.mod_revision));
    let records = got.iter().flatten().map(|kv| (kv.key.as_str(), kv.value.as_slice()));
    let profile = Profile::gather(records)?.into_iter().next();
    match profile {
        Some(p) => Ok((p, revs)),
        None => bail!("Profile {name} not found."),
    }
}

fn conditions(name: &str, revs: &Revisions) -> Vec<Compare> {
    [keys::profile_rules(name), keys::profile_tags(name), keys::profile_labels(name)]
        .into_iter()
        .zip(revs)
        .map(|(k, r)| if *r == 0 { Compare::Absent(k) } else { Compare::Revision(k, *r) })
        .collect()
}

/// Applies `change` to the stored profile and writes it back, retrying when someone else
/// wrote in between. `change` fails to leave the profile as it was.
fn modify(
    store: &dyn Datastore,
    name: &str,
    mut change: impl FnMut(&mut Profile) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for _ in 0..10 {
        let (mut p, revs) = load(store, name)?;
        change(&mut p)?;
        let ops: Vec<Op> = p.records().into_iter().map(|(key, value)| Op::Put { key, value }).collect();
        if store.txn(&conditions(name, &revs), &ops)?.committed() {
            return Ok(());
        }
    }
    bail!("Profile {name} keeps changing under us; try again.")
}

fn direction(word: &str) -> anyhow::Result<Direction> {
    Direction::parse(word).with_context(|| format!("expected inbound or outbound, not {word:?}"))
}

fn named_command(store: &dyn Datastore, name: &str, cmd: NamedCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        NamedCommand::Tag { command: TagCommand::Show } => {
            for t in load(store, name)?.0.tags {
                println!("{t}");
            }
        }
        NamedCommand::Tag { command: TagCommand::Add { tag } } => {
            if !is_valid_name(&tag) {
                bail!("invalid tag name {tag:?}: letters, digits, '.', '_' and '-' only");
            }
            let mut had = false;
            modify(store, name, |p| {
                had = p.tags.contains(&tag);
                if !had {
                    p.tags.push(tag.clone());
                }
                Ok(())
            })?;
            if had {
                println!("Profile {name} already has tag {tag}");
            } else {
                println!("Tag {tag} added to profile {name}");
            }
        }
        NamedCommand::Tag { command: TagCommand::Remove { tag } } => {
            modify(store, name, |p| {
                let before = p.tags.len();
                p.tags.retain(|t| *t != tag);
                if p.tags.len() == before {
                    bail!("Tag {tag} is not in profile {name}.");
                }
                Ok(())
            })?;
            println!("Tag {tag} removed from profile {name}");
        }
        NamedCommand::Rule { command } => rule_command(store, name, command)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn rule_command(store: &dyn Datastore, name: &str, cmd: RuleCommand) -> anyhow::Result<()> {
    match cmd {
        RuleCommand::Add { direction: d, at, rule } => {
            let d = direction(&d)?;
            let rule = rule_syntax::parse(&rule)?;
            modify(store, name, |p| {
                let list = p.rules.of_mut(d);
                let at = at.unwrap_or(list.len() + 1);
                if at == 0 || at > list.len() + 1 {
                    bail!(
                        "--at={at} is out of range: profile {name} has {} {} rule(s), so a new one goes at 1 to {}",
                        list.len(),
                        d.name(),
                        list.len() + 1
                    );
                }
                list.insert(at - 1, rule.clone());
                Ok(())
            })?;
            println!("Rule added to {} rules of profile {name}: {rule}", d.name());
        }
        RuleCommand::Remove { direction: d, at, rule } => {
            let d = direction(&d)?;
            let wanted = match (at, rule.is_empty()) {
                (Some(_), false) => bail!("give either --at=N or the rule, not both"),
                (None, true) => bail!("give the rule's position (--at=N) or the rule itself"),
                (None, false) => Some(rule_syntax::parse(&rule)?),
                (Some(_), true) => None,
            };
            let mut removed = None;
            modify(store, name, |p| {
                let list = p.rules.of_mut(d);
                let i = match (&wanted, at) {
                    (Some(w), _) => list
                        .iter()
                        .position(|r| r == w)
                        .with_context(|| format!("profile {name} has no {} rule {w}", d.name()))?,
                    (None, at) => {
                        let at = at.unwrap_or(0);
                        if at == 0 || at > list.len() {
                            bail!("--at={at} is out of range: profile {name} has {} {} rule(s)", list.len(), d.name());
                        }
                        at - 1
                    }
                };
                removed = Some(list.remove(i));
                Ok(())
            })?;
            if let Some(r) = removed {
                println!("Rule removed from {} rules of profile {name}: {r}", d.name());
            }
        }
        RuleCommand::Show => {
            let (p, _) = load(store, name)?;
            for d in [Direction::Inbound, Direction::Outbound] {
                println!("{} rules:", if d == Direction::Inbound { "Inbound" } else { "Outbound" });
                for (i, r) in p.rules.of(d).iter().enumerate() {
                    println!("  {:>2} {r}", i + 1);
                }
            }
        }
        RuleCommand::Json => {
            let (p, _) = load(store, name)?;
            println!("{}", serde_json::to_string_pretty(&p.rules)?);
        }
        RuleCommand::Update => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading the rules from stdin")?;
            let mut rules: Rules =
                serde_json::from_str(&text).context("the rules on stdin are not valid JSON rules")?;
            for d in [Direction::Inbound, Direction::Outbound] {
                for (i, r) in rules.of(d).iter().enumerate() {
                    validate(r).with_context(|| format!("{} rule {}", d.name(), i + 1))?;
                }
            }
            if rules.id.as_deref().is_some_and(|id| id != name) {
                bail!("the rules' id {:?} is not the profile's name {name:?}", rules.id.unwrap_or_default());
            }
            rules.id = Some(name.to_owned());
            modify(store, name, |p| {
                p.rules = rules.clone();
                Ok(())
            })?;
            println!("Rules of profile {name} updated");
        }
    }
    Ok(())
}

fn show(store: &dyn Datastore, detailed: bool, output: Output) -> anyhow::Result<()> {
    let kvs = store.list(keys::PROFILE_PREFIX)?;
    let profiles = Profile::gather(kvs.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())))?;
    let endpoints = if detailed { ipam::report::endpoints(store)? } else { Vec::new() };
    let users =
        |p: &Profile| -> Vec<&Endpoint> { endpoints.iter().filter(|ep| ep.profiles.contains(&p.name)).collect() };
    match output {
        Output::Json => {
            let list: Vec<serde_json::Value> = profiles
                .iter()
                .map(|p| {
                    let mut v = serde_json::json!({"name": p.name, "tags": p.tags, "rules": p.rules});
                    if detailed {
                        v["endpoints"] = users(p)
                            .into_iter()
                            .map(|ep| {
                                serde_json::json!({"node": ep.node, "orchestrator": ep.orchestrator,
                                    "workload": ep.workload_id, "container": ep.container_id,
                                    "interface": ep.ifname, "ips": ep.ips})
                            })
                            .collect();
                    }
                    v
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Output::Table if !detailed => {
            println!("NAME");
            for p in &profiles {
                println!("{}", p.name);
            }
        }
        Output::Table => {
            println!("{:<20} {:<16} {:<6} {:<24} {:<10} IPS", "NAME", "NODE", "ORCH", "WORKLOAD", "INTERFACE");
            for p in &profiles {
                let mut any = false;
                for ep in users(p) {
                    any = true;
                    println!(
                        "{:<20} {:<16} {:<6} {:<24} {:<10} {}",
                        p.name,
                        ep.node,
                        ep.orchestrator,
                        ep.workload_id,
                        ep.ifname,
                        ep.ips.join(",")
                    );
                }
                if !any {
                    println!("{:<20} (no endpoints)", p.name);
                }
            }
        }
    }
    Ok(())
}
