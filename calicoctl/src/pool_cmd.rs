//! `calicoctl pool add|remove|show`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use ipnetwork::IpNetwork;

use datastore::Datastore;
use ipam::pool;
use model::pool::{EncapMode, Pool};

use crate::Output;

#[derive(Subcommand)]
pub enum PoolCommand {
    /// Add an IP pool
    Add {
        cidr: String,
        /// encapsulate traffic to other hosts in IPIP (always, or only across subnets)
        #[arg(long, value_name = "MODE", num_args = 0..=1, default_missing_value = "always")]
        ipip: Option<Mode>,
        /// encapsulate traffic to other hosts in VXLAN
        #[arg(long, value_name = "MODE", num_args = 0..=1, default_missing_value = "always")]
        vxlan: Option<Mode>,
        /// masquerade traffic leaving the pool
        #[arg(long)]
        nat_outgoing: bool,
        /// never allocate from this pool
        #[arg(long)]
        disabled: bool,
        /// prefix length of the blocks handed to hosts (default 26 for IPv4, 122 for IPv6)
        #[arg(long)]
        block_size: Option<u8>,
    },
    /// Remove an IP pool (refused while addresses are allocated, unless --force)
    Remove {
        cidr: String,
        #[arg(long)]
        force: bool,
    },
    /// List IP pools
    Show {
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Mode {
    Always,
    CrossSubnet,
}

impl From<Mode> for EncapMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Always => EncapMode::Always,
            Mode::CrossSubnet => EncapMode::CrossSubnet,
        }
    }
}

pub fn parse_cidr(s: &str) -> anyhow::Result<IpNetwork> {
    s.parse::<IpNetwork>().with_context(|| format!("{s:?} is not a valid CIDR"))
}

pub fn run(store: &dyn Datastore, cmd: PoolCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PoolCommand::Add { cidr, ipip, vxlan, nat_outgoing, disabled, block_size } => {
            let mut p = Pool::new(parse_cidr(&cidr)?);
            p.ipip = ipip.map(Into::into).unwrap_or_default();
            p.vxlan = vxlan.map(Into::into).unwrap_or_default();
            p.nat_outgoing = nat_outgoing;
            p.disabled = disabled;
            if let Some(b) = block_size {
                p.block_size = b;
            }
            pool::add(store, &p)?;
            println!("Added pool {}", p.cidr);
        }
        PoolCommand::Remove { cidr, force } => {
            let cidr = parse_cidr(&cidr)?;
            let dropped = pool::remove(store, &cidr, force)?;
            if dropped > 0 {
                println!("Removed pool {cidr} and released {dropped} allocated address(es)");
            } else {
                println!("Removed pool {cidr}");
            }
        }
        PoolCommand::Show { output } => {
            let pools = pool::list(store, None)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&pools)?),
                Output::Table => {
                    println!(
                        "{:<42} {:>6} {:<13} {:<13} {:<5} {:<8}",
                        "CIDR", "BLOCK", "IPIP", "VXLAN", "NAT", "DISABLED"
                    );
                    for p in pools {
                        println!(
                            "{:<42} {:>6} {:<13} {:<13} {:<5} {:<8}",
                            p.cidr.to_string(),
                            format!("/{}", p.block_size),
                            mode(p.ipip),
                            mode(p.vxlan),
                            p.nat_outgoing,
                            p.disabled
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn mode(m: EncapMode) -> &'static str {
    match m {
        EncapMode::Off => "off",
        EncapMode::Always => "always",
        EncapMode::CrossSubnet => "cross-subnet",
    }
}
