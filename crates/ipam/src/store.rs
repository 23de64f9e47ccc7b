//! Reading and writing model records through the datastore, with IPAM's errors.

use datastore::{KeyValue, Read};
use model::handle::Handle;
use model::keys;
use serde::de::DeserializeOwned;

use crate::Error;

pub use model::encode;

pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, Error> {
    serde_json::from_slice(&kv.value).map_err(|source| Error::Corrupt { key: kv.key.clone(), source })
}

/// Reads of the blocks a handle holds addresses in.
pub trait BlockReads {
    fn block_reads(&self) -> Vec<Read>;
}

impl BlockReads for Handle {
    fn block_reads(&self) -> Vec<Read> {
        self.blocks().iter().map(|c| Read::Key(keys::block(c))).collect()
    }
}
