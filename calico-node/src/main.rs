//! calico-node: the per-host agent. Writes this node's record, then keeps the routes to
//! every block in the cluster programmed (see the `node` crate).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ipnetwork::{Ipv4Network, Ipv6Network};

#[derive(Parser)]
#[command(
    name = "calico-node",
    version,
    about = "The per-host agent: this node's record and the routes to other hosts' blocks"
)]
struct Cli {
    /// this node's name [default: the contents of --nodename-file, else the hostname]
    #[arg(long, env = "NODENAME")]
    nodename: Option<String>,
    /// the file holding the node name, as the plugins read it [default:
    /// /var/lib/calico/nodename, skipped when missing]
    #[arg(long)]
    nodename_file: Option<PathBuf>,
    /// this node's IPv4 address with its subnet's prefix, e.g. 10.0.0.5/24 [default: the
    /// address of the interface holding the default route, else of the first that is up]
    #[arg(long, value_parser = node::parse_ipv4_with_prefix)]
    ip: Option<Ipv4Network>,
    /// this node's IPv6 address with its prefix, e.g. fd00::5/64
    #[arg(long, value_parser = node::parse_ipv6_with_prefix)]
    ip6: Option<Ipv6Network>,
    /// autodetect the IPv4 address on this interface only
    #[arg(long)]
    interface: Option<String>,
    /// this node's BGP AS number
    #[arg(long = "as", value_name = "AS")]
    as_number: Option<u32>,
    #[command(flatten)]
    store: datastore::config::StoreArgs,
    /// how often to compare everything with the datastore and the kernel
    #[arg(long, default_value = "90s", value_parser = node::parse_duration)]
    resync_interval: Duration,
    /// debug, info, warning or error
    #[arg(long, default_value = "info", value_parser = ["trace", "debug", "info", "warning", "warn", "error"])]
    log_level: String,
    /// the MTU of vxlan.calico [default: the uplink's MTU - 50]
    #[arg(long, value_parser = clap::value_parser!(u32).range(68..=65535))]
    vxlan_mtu: Option<u32>,
    /// the MTU of tunl0 [default: the uplink's MTU - 20]
    #[arg(long, value_parser = clap::value_parser!(u32).range(68..=65535))]
    ipip_mtu: Option<u32>,
    /// where to write the MTU for workloads (calico-cni reads it when its netconf has none)
    #[arg(long, default_value = calico_netconf::DEFAULT_MTU_FILE)]
    mtu_file: PathBuf,
    /// one full sync, then exit: 0, or 1 naming what could not be programmed
    #[arg(long)]
    once: bool,
    /// let this host reach its own containers whatever their profiles (health checks); false
    /// holds the host's traffic to them to their inbound rules too
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    host_to_workloads: bool,
    /// serve /liveness, /readiness and /metrics on this address, e.g. 127.0.0.1:9099
    #[arg(long, value_name = "ADDR:PORT")]
    health_listen: Option<SocketAddr>,
    /// bird: run and configure BIRD as this node's BGP speaker; none: no BGP at all (e.g. a
    /// pure VXLAN cluster)
    #[arg(long, default_value = "bird", value_parser = ["bird", "none"])]
    bgp: String,
    /// the config file calico-node writes for BIRD
    #[arg(long, default_value = node::bgp::DEFAULT_CONFIG)]
    bird_config: PathBuf,
    /// BIRD's control socket (calicoctl node show reads the sessions there)
    #[arg(long, default_value = node::bgp::DEFAULT_SOCKET)]
    bird_socket: PathBuf,
    /// the BIRD program
    #[arg(long, default_value = "bird")]
    bird_binary: PathBuf,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.bgp == "bird" && !cli.once {
        // Fail now, not later in readiness, when BIRD is not there at all.
        let program = &cli.bird_binary;
        std::process::Command::new(program).arg("--version").output().map_err(|e| {
            anyhow::anyhow!("cannot run BIRD ({}): {e}; install bird2, or run with --bgp=none", program.display())
        })?;
    }
    // The plugins' rule, by the plugins' code.
    let conf =
        calico_netconf::CalicoConf { nodename: cli.nodename, nodename_file: cli.nodename_file, ..Default::default() };
    let name = conf.nodename().map_err(node::Error::NodeName)?;
    let store = datastore::config::open(&cli.store.config(false)).context("opening the datastore")?;
    let kernel = node::kernel::NetlinkKernel::new().context("opening netlink")?;
    let health = Arc::new(node::health::Health::new());
    if let Some(addr) = cli.health_listen {
        let bound = node::health::serve(health.clone(), addr)?;
        tracing::info!(%bound, "serving /liveness, /readiness and /metrics");
    }
    let config = node::agent::Config {
        name,
        addresses: node::local::AddressChoice { ipv4: cli.ip, ipv6: cli.ip6, interface: cli.interface },
        as_number: cli.as_number,
        resync_interval: cli.resync_interval,
        vxlan_mtu: cli.vxlan_mtu,
        ipip_mtu: cli.ipip_mtu,
        mtu_file: Some(cli.mtu_file),
        // A one-shot sync leaves BGP alone.
        bgp: (cli.bgp == "bird" && !cli.once).then_some(node::bgp::Options {
            paths: node::bgp::Paths { program: cli.bird_binary, config: cli.bird_config, socket: cli.bird_socket },
        }),
    };
    let node_name = config.name.clone();
    let resync = config.resync_interval;
    // The pool sets of the `inet calico` table (outgoing NAT), over netlink.
    let firewall = firewall::nft::Nftables::new();
    let mut agent = node::agent::Agent::new(&*store, &kernel, health.clone(), config)?.with_firewall(&firewall);
    if cli.once {
        agent.run_once()?;
        let nft = firewall::nft::Nftables::new();
        node::policy::PolicySync::new(&*store, &nft, &node_name, cli.host_to_workloads).sync(true)?;
        return Ok(());
    }
    // Security profiles on their own thread (and their own watch), beside the routes.
    let store = &*store;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let nft = firewall::nft::Nftables::new();
            let mut sync =
                node::policy::PolicySync::new(store, &nft, &node_name, cli.host_to_workloads).with_health(health);
            sync.run(resync, &|| stop.load(std::sync::atomic::Ordering::Relaxed));
        });
        let result = agent.run(&|| false);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    })?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cni::logging::init(Some(&cli.log_level), None);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calico-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
