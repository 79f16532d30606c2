//! State stores: the keyed state of aggregations, in serialized bytes as
//! Kafka Streams keeps it, so what a store holds is exactly what its
//! changelog topic carries.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::StreamsError;

/// A task's key-value store.
pub trait KeyValueStore: Send {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StreamsError>;
    /// Sets `key` to `value`; `None` deletes it.
    fn put(&mut self, key: &[u8], value: Option<Bytes>) -> Result<(), StreamsError>;
}

/// A store in memory (what the test driver runs on).
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: BTreeMap<Bytes, Bytes>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl KeyValueStore for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StreamsError> {
        Ok(self.entries.get(key).cloned())
    }
    fn put(&mut self, key: &[u8], value: Option<Bytes>) -> Result<(), StreamsError> {
        match value {
            Some(v) => {
                self.entries.insert(Bytes::copy_from_slice(key), v);
            }
            None => {
                self.entries.remove(key);
            }
        }
        Ok(())
    }
}
