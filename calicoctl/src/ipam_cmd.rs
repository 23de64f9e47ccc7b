//! `calicoctl ipam show|check|release`.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use datastore::Datastore;
use ipam::report;

use crate::Output;

#[derive(Subcommand)]
pub enum IpamCommand {
    /// Addresses in use, per pool and per block
    Show {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Find allocations without a handle, handles without an allocation, blocks whose
    /// counts disagree, and endpoints and allocations that have lost each other (exit
    /// status 1 when anything is found)
    Check {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Release an address, whoever holds it (refused while a workload endpoint uses it,
    /// unless --force)
    Release {
        #[arg(long)]
        ip: String,
        /// release it even though a workload endpoint holds it
        #[arg(long)]
        force: bool,
    },
}

pub fn run(store: &dyn Datastore, cmd: IpamCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        IpamCommand::Show { output } => {
            let usage = report::usage(store)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&usage)?),
                Output::Table => {
                    println!("{:<42} {:>12} {:>8} {:>8}", "POOL / BLOCK", "ADDRESSES", "IN USE", "HOST");
                    for u in usage {
                        println!("{:<42} {:>12} {:>8}", u.pool.cidr.to_string(), u.capacity, u.used);
                        for b in u.blocks {
                            println!(
                                "  {:<40} {:>12} {:>8} {:>8}",
                                b.cidr.to_string(),
                                b.size,
                                b.used,
                                b.host.unwrap_or_default()
                            );
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        IpamCommand::Check { output } => {
            let mut r = report::check(store)?;
            let endpoints = report::endpoints(store)?;
            report::check_endpoints(store, &endpoints, &mut r)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                Output::Table => {
                    println!(
                        "Checked {} block(s), {} handle(s), {} allocation(s), {} endpoint(s).",
                        r.blocks, r.handles, r.allocations, r.endpoints
                    );
                    for p in &r.problems {
                        println!("problem: {p}");
                    }
                    if r.is_clean() {
                        println!("No problems found.");
                    }
                }
            }
            Ok(if r.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        IpamCommand::Release { ip, force } => {
            let ip: IpAddr = ip.parse().with_context(|| format!("{ip:?} is not an IP address"))?;
            if let Some(ep) = report::endpoints(store)?.into_iter().find(|ep| ep.addresses().contains(&ip)) {
                let holder = format!(
                    "endpoint {} (container {}, interface {}, node {})",
                    ep.key(),
                    ep.container_id,
                    ep.ifname,
                    ep.node
                );
                if !force {
                    anyhow::bail!(
                        "{ip} is in use by {holder}; remove the container (CNI DEL), or use --force to release it anyway"
                    );
                }
                eprintln!("Warning: {ip} is in use by {holder}; releasing it anyway (--force)");
            }
            let released = ipam::Ipam::new(store, String::new()).release_ips(&[ip])?;
            for (ip, handle) in released {
                println!("Released {ip} (handle {})", handle.unwrap_or_else(|| "none".into()));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
