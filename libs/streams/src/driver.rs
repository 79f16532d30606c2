//! Runs a topology without a cluster (Kafka's `TopologyTestDriver`): pipe
//! records into its input topics, read what it wrote to its output topics.
//! Records are processed one at a time, in the order piped, each through
//! the whole graph before the next.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use bytes::Bytes;

use crate::error::StreamsError;
use crate::serde::{Serde, read};
use crate::topology::{OutputRecord, Topology};

/// A topology run in memory.
pub struct TestDriver {
    topology: Topology,
    outputs: BTreeMap<String, Vec<OutputRecord>>,
}

impl TestDriver {
    /// A driver for `topology`.
    pub fn new(topology: Topology) -> TestDriver {
        TestDriver {
            topology,
            outputs: BTreeMap::new(),
        }
    }

    /// Processes one record of `topic` given as bytes (`None`: null).
    pub fn pipe_raw(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<(), StreamsError> {
        let mut out = Vec::new();
        self.topology
            .process(topic, key, value, timestamp, &[], &mut out)?;
        for r in out {
            self.outputs.entry(r.topic.clone()).or_default().push(r);
        }
        Ok(())
    }

    /// An input topic taking typed records written with the serdes given
    /// (Kafka's `createInputTopic`).
    pub fn input<K, V, KS: Serde<K>, VS: Serde<V>>(
        &mut self,
        topic: &str,
        key_serde: KS,
        value_serde: VS,
    ) -> TestInput<'_, K, V, KS, VS> {
        TestInput {
            driver: self,
            topic: topic.to_owned(),
            key_serde,
            value_serde,
            types: PhantomData,
        }
    }

    /// Takes every record written to `topic` so far, as bytes.
    pub fn read_raw(&mut self, topic: &str) -> Vec<OutputRecord> {
        self.outputs.remove(topic).unwrap_or_default()
    }

    /// Takes every record written to `topic` so far, read with the serdes
    /// given: (key, value, timestamp).
    pub fn read<K, V>(
        &mut self,
        topic: &str,
        key_serde: &impl Serde<K>,
        value_serde: &impl Serde<V>,
    ) -> Result<Vec<(K, V, i64)>, StreamsError> {
        self.read_raw(topic)
            .into_iter()
            .map(|r| {
                let k = read(key_serde, topic, r.key.as_ref().map(Bytes::as_ref))?;
                let v = read(value_serde, topic, r.value.as_ref().map(Bytes::as_ref))?;
                Ok((k, v, r.timestamp))
            })
            .collect()
    }
}

/// Typed records into one input topic of a [`TestDriver`].
pub struct TestInput<'a, K, V, KS, VS> {
    driver: &'a mut TestDriver,
    topic: String,
    key_serde: KS,
    value_serde: VS,
    types: PhantomData<fn(K, V)>,
}

impl<K, V, KS: Serde<K>, VS: Serde<V>> TestInput<'_, K, V, KS, VS> {
    /// Processes one record.
    pub fn pipe(&mut self, key: K, value: V, timestamp: i64) -> Result<(), StreamsError> {
        let k = self.key_serde.serialize_nullable(&self.topic, &key)?;
        let v = self.value_serde.serialize_nullable(&self.topic, &value)?;
        self.driver
            .pipe_raw(&self.topic, k.as_deref(), v.as_deref(), timestamp)
    }
}
