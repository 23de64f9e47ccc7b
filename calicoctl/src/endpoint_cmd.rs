//! `calicoctl endpoint show`: the workload endpoints calico-cni recorded, with their
//! addresses, host veth and host port mappings.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use datastore::Datastore;
use model::endpoint::{Endpoint, PortMapping};
use model::keys;

use crate::Output;

#[derive(Subcommand)]
pub enum EndpointCommand {
    /// List the workload endpoints: node, workload, interface, addresses, host veth, and the
    /// host ports mapped to each (capability portMappings)
    Show {
        /// only this node's endpoints
        #[arg(long)]
        node: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
}

pub fn run(store: &dyn Datastore, cmd: EndpointCommand) -> anyhow::Result<ExitCode> {
    let EndpointCommand::Show { node, output } = cmd;
    let prefix = match &node {
        Some(n) => keys::endpoint_node_prefix(n),
        None => keys::ENDPOINT_HOST_PREFIX.to_owned(),
    };
    let mut endpoints = Vec::new();
    for kv in store.list(&prefix).context("listing the workload endpoints")? {
        if !keys::is_endpoint(&kv.key) {
            continue;
        }
        match model::decode::<Endpoint>(&kv.key, &kv.value) {
            Ok(ep) => endpoints.push(ep),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    match output {
        Output::Json => {
            let shown: Vec<serde_json::Value> = endpoints
                .iter()
                .map(|ep| {
                    let mut v = serde_json::to_value(ep).expect("an endpoint is JSON");
                    // The result is the runtime's copy; the mappings are always listed.
                    if let Some(o) = v.as_object_mut() {
                        o.remove("result");
                        o.insert("port_mappings".into(), serde_json::to_value(&ep.port_mappings).expect("JSON"));
                    }
                    v
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        Output::Table => {
            println!(
                "{:<16} {:<40} {:<12} {:<8} {:<20} {:<16} {:<16} PORTS",
                "NODE", "WORKLOAD", "CONTAINER", "IFNAME", "IPS", "HOST VETH", "PROFILES"
            );
            for ep in &endpoints {
                println!(
                    "{:<16} {:<40} {:<12} {:<8} {:<20} {:<16} {:<16} {}",
                    ep.node,
                    format!("{}/{}", ep.orchestrator, ep.workload_id),
                    short_id(&ep.container_id),
                    ep.ifname,
                    ep.ips.join(","),
                    ep.host_veth,
                    if ep.profiles.is_empty() { "-".to_owned() } else { ep.profiles.join(",") },
                    ports(ep)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `[hostIP:]hostPort/proto->containerIP:containerPort`, IPv6 addresses in brackets.
fn port(m: &PortMapping) -> String {
    let addr = |ip: std::net::IpAddr| if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
    let host = m.host_ip.map(|h| format!("{}:", addr(h))).unwrap_or_default();
    format!("{host}{}/{}->{}:{}", m.host_port, m.protocol, addr(m.container_ip), m.container_port)
}

/// A container id as `docker ps` shows it: its first 12 characters (enough for
/// `calicoctl container <C>`, which takes a unique prefix).
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// An endpoint's port mappings, comma-separated, or `-`.
pub fn ports(ep: &model::endpoint::Endpoint) -> String {
    let ports: Vec<String> = ep.port_mappings.iter().map(port).collect();
    if ports.is_empty() {
        "-".to_owned()
    } else {
        ports.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_read_like_docker_ps() {
        let m = |host_ip: Option<&str>, ip: &str| PortMapping {
            protocol: "tcp".into(),
            host_ip: host_ip.map(|h| h.parse().unwrap()),
            host_port: 8080,
            container_ip: ip.parse().unwrap(),
            container_port: 80,
        };
        assert_eq!(port(&m(None, "10.0.0.5")), "8080/tcp->10.0.0.5:80");
        assert_eq!(port(&m(Some("192.168.1.1"), "10.0.0.5")), "192.168.1.1:8080/tcp->10.0.0.5:80");
        assert_eq!(port(&m(Some("fd00::1"), "fd00::5")), "[fd00::1]:8080/tcp->[fd00::5]:80");
    }
}
