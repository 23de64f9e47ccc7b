//! calicoctl: the admin tool for pools, IPAM, container addresses, endpoints, nodes and BGP.
//!
//! The datastore is chosen as the plugins choose it: `--etcd-endpoints` / `ETCD_ENDPOINTS`
//! for etcd, otherwise `--datastore-path` / `CALICO_DATASTORE_PATH` for the embedded store.

mod bgp_cmd;
mod container_cmd;
mod endpoint_cmd;
mod ipam_cmd;
mod node_cmd;
mod pool_cmd;
mod profile_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "calicoctl", version, about = "Manage Calico IP pools and IP address management, and inspect nodes")]
struct Cli {
    #[command(flatten)]
    store: datastore::config::StoreArgs,
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
    /// BGP: global peers, the node-to-node mesh, the default AS number
    Bgp {
        #[command(subcommand)]
        command: bgp_cmd::BgpCommand,
    },
    /// Inspect the nodes calico-node registered, and their BGP peers
    Node {
        #[command(subcommand)]
        command: node_cmd::NodeCommand,
    },
    /// A container's endpoints, profiles and addresses: `container <C> endpoint show`,
    /// `container <C> profile set|append|remove <P>...`, `container <C> ip add|remove <IP>`
    Container {
        /// the container id (or a unique prefix), then the command
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Manage security profiles: `profile add|remove|show`, `profile <P> tag|rule ...`
    Profile {
        #[command(subcommand)]
        command: profile_cmd::ProfileCommand,
    },
    /// Inspect the workload endpoints calico-cni set up (addresses, port mappings)
    Endpoint {
        #[command(subcommand)]
        command: endpoint_cmd::EndpointCommand,
    },
}

impl Command {
    fn may_create_store(&self) -> bool {
        matches!(self, Command::Pool { command: pool_cmd::PoolCommand::Add { .. } })
    }
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
    // Only `pool add` may create the embedded store: every other command reads or changes
    // what is there, and a mistyped path must be an error, not a new empty store.
    let cfg = cli.store.config(!cli.command.may_create_store());
    let result = datastore::config::open(&cfg).map_err(anyhow::Error::from).and_then(|store| match cli.command {
        Command::Pool { command } => pool_cmd::run(&*store, command),
        Command::Ipam { command } => ipam_cmd::run(&*store, command),
        Command::Node { command } => node_cmd::run(&*store, command),
        Command::Profile { command } => profile_cmd::run(&*store, command),
        Command::Container { args } => container_cmd::run(&*store, args),
        Command::Endpoint { command } => endpoint_cmd::run(&*store, command),
        Command::Bgp { command } => bgp_cmd::run(&*store, command),
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// This host's node name, by the rule calico-node and the plugins share
/// ([`calico_netconf::CalicoConf::nodename`]): `$NODENAME`, else `/var/lib/calico/nodename`,
/// else the hostname (lowercased).
fn this_node() -> anyhow::Result<String> {
    let conf = calico_netconf::CalicoConf { nodename: std::env::var("NODENAME").ok(), ..Default::default() };
    anyhow::Context::context(conf.nodename(), "cannot tell this host's node name: give it with --node NAME")
}
