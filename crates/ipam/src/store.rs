//! JSON encoding of stored values.

use datastore::KeyValue;
use serde::{de::DeserializeOwned, Serialize};

use crate::Error;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our value types are plain structs of strings, numbers and maps: they always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, Error> {
    serde_json::from_slice(&kv.value).map_err(|source| Error::Corrupt {
        key: kv.key.clone(),
        source,
    })
}
