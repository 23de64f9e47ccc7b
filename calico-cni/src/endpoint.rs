//! Workload endpoint records: what calico-cni set up for one (container, interface), under
//! `/calico/v1/host/<node>/workload/<orchestrator>/<workload id>/endpoint/<ifname>`.
//! Repeated ADDs answer from it, DEL and GC find the host veth through it, and calicoctl
//! reads it.

use datastore::{Datastore, Op};
use serde::{Deserialize, Serialize};

use crate::Error;

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
}

/// Where the endpoints of `node` live.
pub fn node_prefix(node: &str) -> String {
    format!("/calico/v1/host/{node}/workload/")
}

pub fn key(node: &str, orchestrator: &str, workload_id: &str, ifname: &str) -> String {
    format!(
        "{}{orchestrator}/{workload_id}/endpoint/{ifname}",
        node_prefix(node)
    )
}

impl Endpoint {
    pub fn key(&self) -> String {
        key(
            &self.node,
            &self.orchestrator,
            &self.workload_id,
            &self.ifname,
        )
    }
}

pub fn get(store: &dyn Datastore, key: &str) -> Result<Option<Endpoint>, Error> {
    store.get(key)?.map(|kv| decode(&kv)).transpose()
}

fn decode(kv: &datastore::KeyValue) -> Result<Endpoint, Error> {
    serde_json::from_slice(&kv.value).map_err(|source| Error::CorruptEndpoint {
        key: kv.key.clone(),
        source,
    })
}

/// Write (or overwrite a stale) record.
pub fn put(store: &dyn Datastore, ep: &Endpoint) -> Result<(), Error> {
    let value = serde_json::to_vec(ep).map_err(|source| Error::CorruptEndpoint {
        key: ep.key(),
        source,
    })?;
    store.txn(
        &[],
        &[Op::Put {
            key: ep.key(),
            value,
        }],
    )?;
    Ok(())
}

pub fn delete(store: &dyn Datastore, key: &str) -> Result<(), Error> {
    store.txn(
        &[],
        &[Op::Delete {
            key: key.to_owned(),
        }],
    )?;
    Ok(())
}

/// Every endpoint record of `node`.
pub fn list(store: &dyn Datastore, node: &str) -> Result<Vec<Endpoint>, Error> {
    store.list(&node_prefix(node))?.iter().map(decode).collect()
}
