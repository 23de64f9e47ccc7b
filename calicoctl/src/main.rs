//! calicoctl: the admin tool for pools, IPAM and container addresses.
//!
//! The datastore is chosen as the plugins choose it: `--etcd-endpoints` / `ETCD_ENDPOINTS`
//! for etcd, otherwise `--datastore-path` / `CALICO_DATASTORE_PATH` for the embedded store.

mod ipam_cmd;
mod pool_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "calicoctl",
    version,
    about = "Manage Calico IP pools and IP address management"
)]
struct Cli {
    /// etcd endpoints, comma-separated (selects the etcd datastore)
    #[arg(long, env = "ETCD_ENDPOINTS", global = true)]
    etcd_endpoints: Option<String>,
    #[arg(long, env = "ETCD_KEY_FILE", global = true)]
    etcd_key_file: Option<PathBuf>,
    #[arg(long, env = "ETCD_CERT_FILE", global = true)]
    etcd_cert_file: Option<PathBuf>,
    #[arg(long, env = "ETCD_CA_CERT_FILE", global = true)]
    etcd_ca_cert_file: Option<PathBuf>,
    /// the embedded datastore file (when no etcd endpoints are given)
    #[arg(long, env = "CALICO_DATASTORE_PATH", global = true)]
    datastore_path: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage IP pools
    Pool {
        #[command(subcommand)]
        command: pool_cmd::PoolCommand,
    },
    /// Inspect and repair IP address management
    Ipam {
        #[command(subcommand)]
        command: ipam_cmd::IpamCommand,
    },
}

/// Output format of show commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

fn main() -> ExitCode {
    // Like any Unix tool, end quietly when the reader of our output goes away
    // (`calicoctl ipam show | head`) instead of panicking on a broken pipe.
    // SAFETY: setting a signal disposition to SIG_DFL before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let cfg = datastore::config::Config {
        etcd_endpoints: cli
            .etcd_endpoints
            .as_deref()
            .map(datastore::config::Config::parse_endpoints)
            .unwrap_or_default(),
        etcd_key_file: cli.etcd_key_file,
        etcd_cert_file: cli.etcd_cert_file,
        etcd_ca_cert_file: cli.etcd_ca_cert_file,
        datastore_path: cli.datastore_path,
    };
    let result = datastore::config::open(&cfg)
        .map_err(anyhow::Error::from)
        .and_then(|store| match cli.command {
            Command::Pool { command } => pool_cmd::run(&*store, command),
            Command::Ipam { command } => ipam_cmd::run(&*store, command),
        });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
