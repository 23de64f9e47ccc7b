//! Workload endpoint records: what calico-cni set up for one (container, interface), under
//! `/calico/v1/host/<node>/workload/<orchestrator>/<workload id>/endpoint/<ifname>`.
//! Repeated ADDs answer from it, DEL and GC find the host veth through it, and calicoctl
//! reads it.

use serde::{Deserialize, Serialize};

use crate::keys;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub node: String,
    /// `k8s` when the runtime passed K8S_POD_NAMESPACE and K8S_POD_NAME, else `cni`.
    pub orchestrator: String,
    pub workload_id: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub network: String,
    pub host_veth: String,
    pub mac: String,
    /// Addresses with their prefix (`10.0.0.5/32`).
    pub ips: Vec<String>,
    /// The result handed to the runtime (latest spec version), for repeated ADDs.
    pub result: serde_json::Value,
    /// The host ports mapped to this endpoint (capability `portMappings`), so DEL and GC
    /// remove exactly these, also when the netns is gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// The security profiles the endpoint's traffic is evaluated against, in order (netconf
    /// `profiles`, default the network's name). An older record without them has none.
    #[serde(default)]
    pub profiles: Vec<String>,
}

/// One host port forwarded to the endpoint: one per container address of the family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Only traffic to this host address; absent: any of the host's addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<std::net::IpAddr>,
    pub host_port: u16,
    pub container_ip: std::net::IpAddr,
    pub container_port: u16,
}

impl Endpoint {
    pub fn key(&self) -> String {
        keys::endpoint(&self.node, &self.orchestrator, &self.workload_id, &self.ifname)
    }

    /// The endpoint's addresses without their prefix length (unparsable entries skipped).
    pub fn addresses(&self) -> Vec<std::net::IpAddr> {
        self.ips.iter().filter_map(|ip| ip.split('/').next()?.parse().ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let json = br#"{"node":"n1","orchestrator":"k8s","workload_id":"ns.pod","container_id":"abc","ifname":"eth0",
            "netns":"/var/run/netns/x","network":"net","host_veth":"cali0123456789a","mac":"ee:ee:ee:ee:ee:ee",
            "ips":["10.0.0.5/32","fd00::5/128","junk"],"result":{"cniVersion":"1.0.0"}}"#;
        let ep: Endpoint = crate::decode("k", json).unwrap();
        assert_eq!(ep.key(), "/calico/v1/host/n1/workload/k8s/ns.pod/endpoint/eth0");
        assert_eq!(ep.addresses(), vec!["10.0.0.5".parse::<std::net::IpAddr>().unwrap(), "fd00::5".parse().unwrap()]);
        assert_eq!(crate::decode::<Endpoint>("k", &crate::encode(&ep)).unwrap(), ep);
    }
}
