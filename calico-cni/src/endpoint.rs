//! Reading and writing workload endpoint records ([`model::endpoint::Endpoint`]): what
//! calico-cni set up for one (container, interface). Repeated ADDs answer from it, and DEL
//! and GC find the host veth through it.

use datastore::{Datastore, Op};
use model::endpoint::Endpoint;
use model::keys;

use crate::Error;

pub fn get(store: &dyn Datastore, key: &str) -> Result<Option<Endpoint>, Error> {
    store.get(key)?.map(|kv| decode(&kv)).transpose()
}

pub fn decode(kv: &datastore::KeyValue) -> Result<Endpoint, Error> {
    serde_json::from_slice(&kv.value).map_err(|source| Error::CorruptEndpoint { key: kv.key.clone(), source })
}

/// Write (or overwrite a stale) record.
pub fn put(store: &dyn Datastore, ep: &Endpoint) -> Result<(), Error> {
    let value = serde_json::to_vec(ep).map_err(|source| Error::CorruptEndpoint { key: ep.key(), source })?;
    store.txn(&[], &[Op::Put { key: ep.key(), value }])?;
    Ok(())
}

pub fn delete(store: &dyn Datastore, key: &str) -> Result<(), Error> {
    store.txn(&[], &[Op::Delete { key: key.to_owned() }])?;
    Ok(())
}

/// Every endpoint record of `node`.
pub fn list(store: &dyn Datastore, node: &str) -> Result<Vec<Endpoint>, Error> {
    store.list(&keys::endpoint_node_prefix(node))?.iter().map(decode).collect()
}
