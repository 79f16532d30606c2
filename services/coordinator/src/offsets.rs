//! What the coordinator keeps in the compacted topic `__consumer_offsets`:
//! committed offsets and group metadata, as keyed records (latest per key
//! wins, a tombstone deletes), and the state those records fold into. A
//! coordinator that takes over a partition of the topic replays it through
//! [`OffsetsState::apply`] and has every group of that partition back.

use std::collections::BTreeMap;

use prost::Message;
use runnel_proto::coordinator::v1::{
    CommittedOffsetKey, CommittedOffsetValue, ConsumerGroupKey, ConsumerGroupValue, GroupKey,
    GroupValue, OffsetsKey, OwnerKey, OwnerValue, offsets_key,
};

/// The internal topic's name (Kafka's).
pub use runnel_common::metadata::OFFSETS_TOPIC;

/// `offsets.topic.num.partitions` default.
pub const DEFAULT_OFFSETS_PARTITIONS: i32 = 50;

/// A record of `__consumer_offsets` that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The key or value is not a record of this topic.
    #[error("malformed __consumer_offsets record: {0}")]
    Malformed(String),
}

pub use runnel_common::metadata::offsets_partition_for as partition_for;

/// A group's committed position in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset to read.
    pub offset: i64,
    /// Leader epoch of the last record read, or -1.
    pub leader_epoch: i32,
    /// The committer's metadata string.
    pub metadata: String,
    /// When it was committed.
    pub commit_timestamp_ms: i64,
}

/// The key and value (None: a tombstone) of a committed-offset record.
pub fn offset_record(
    group: &str,
    topic: &str,
    partition: i32,
    value: Option<&CommittedOffset>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = OffsetsKey {
        key: Some(offsets_key::Key::Offset(CommittedOffsetKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
        })),
    };
    let value = value.map(|v| {
        CommittedOffsetValue {
            offset: v.offset,
            leader_epoch: v.leader_epoch,
            metadata: v.metadata.clone(),
            commit_timestamp_ms: v.commit_timestamp_ms,
        }
        .encode_to_vec()
    });
    (key.encode_to_vec(), value)
}

/// The key and value (None: a tombstone) of a KIP-848 group's record.
pub fn consumer_group_record(
    group: &str,
    value: Option<&ConsumerGroupValue>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = OffsetsKey {
        key: Some(offsets_key::Key::ConsumerGroup(ConsumerGroupKey {
            group: group.to_owned(),
        })),
    };
    (key.encode_to_vec(), value.map(Message::encode_to_vec))
}

/// The key and value (None: a tombstone) of a group-metadata record.
pub fn group_record(group: &str, value: Option<&GroupValue>) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = OffsetsKey {
        key: Some(offsets_key::Key::Group(GroupKey {
            group: group.to_owned(),
        })),
    };
    (key.encode_to_vec(), value.map(Message::encode_to_vec))
}

/// The marker a new owner of `partition` writes first (see `OwnerKey`).
pub fn owner_record(
    partition: i32,
    coordinator_id: i32,
    owner_epoch: i32,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = OffsetsKey {
        key: Some(offsets_key::Key::Owner(OwnerKey { partition })),
    };
    let value = OwnerValue {
        coordinator_id,
        owner_epoch,
    };
    (key.encode_to_vec(), Some(value.encode_to_vec()))
}

/// Committed offsets and group metadata of the groups in some partitions of
/// `__consumer_offsets`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OffsetsState {
    offsets: BTreeMap<String, BTreeMap<(String, i32), CommittedOffset>>,
    groups: BTreeMap<String, GroupValue>,
    consumer_groups: BTreeMap<String, ConsumerGroupValue>,
}

impl OffsetsState {
    /// Applies one record (in log order).
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), RecordError> {
        let key = OffsetsKey::decode(key)
            .map_err(|e| RecordError::Malformed(format!("key: {e}")))?
            .key
            .ok_or_else(|| RecordError::Malformed("empty key".into()))?;
        match key {
            offsets_key::Key::Offset(k) => {
                let offsets = self.offsets.entry(k.group.clone()).or_default();
                match value {
                    Some(bytes) => {
                        let v = CommittedOffsetValue::decode(bytes)
                            .map_err(|e| RecordError::Malformed(format!("offset value: {e}")))?;
                        offsets.insert(
                            (k.topic, k.partition),
                            CommittedOffset {
                                offset: v.offset,
                                leader_epoch: v.leader_epoch,
                                metadata: v.metadata,
                                commit_timestamp_ms: v.commit_timestamp_ms,
                            },
                        );
                    }
                    None => {
                        offsets.remove(&(k.topic, k.partition));
                    }
                }
                if offsets.is_empty() {
                    self.offsets.remove(&k.group);
                }
            }
            // Ownership markers fence writers; they hold no group state.
            offsets_key::Key::Owner(_) => {}
            offsets_key::Key::ConsumerGroup(k) => match value {
                Some(bytes) => {
                    let v = ConsumerGroupValue::decode(bytes).map_err(|e| {
                        RecordError::Malformed(format!("consumer group value: {e}"))
                    })?;
                    self.consumer_groups.insert(k.group, v);
                }
                None => {
                    self.consumer_groups.remove(&k.group);
                }
            },
            offsets_key::Key::Group(k) => match value {
                Some(bytes) => {
                    let v = GroupValue::decode(bytes)
                        .map_err(|e| RecordError::Malformed(format!("group value: {e}")))?;
                    self.groups.insert(k.group, v);
                }
                None => {
                    self.groups.remove(&k.group);
                }
            },
        }
        Ok(())
    }

    /// Keeps only the groups `keep` accepts (a partition moved away).
    pub fn retain_groups(&mut self, keep: impl Fn(&str) -> bool) {
        self.offsets.retain(|id, _| keep(id));
        self.groups.retain(|id, _| keep(id));
        self.consumer_groups.retain(|id, _| keep(id));
    }

    /// A group's committed offset for a partition.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.offsets.get(group)?.get(&(topic.to_owned(), partition))
    }

    /// Every committed offset of a group, by (topic, partition).
    pub fn group_offsets(
        &self,
        group: &str,
    ) -> impl Iterator<Item = (&(String, i32), &CommittedOffset)> {
        self.offsets.get(group).into_iter().flatten()
    }

    /// A KIP-848 group's latest state.
    pub fn consumer_group(&self, group: &str) -> Option<&ConsumerGroupValue> {
        self.consumer_groups.get(group)
    }

    /// A group's latest metadata.
    pub fn group(&self, group: &str) -> Option<&GroupValue> {
        self.groups.get(group)
    }

    /// Every group with metadata or committed offsets.
    pub fn group_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .groups
            .keys()
            .chain(self.consumer_groups.keys())
            .chain(self.offsets.keys())
            .map(String::as_str)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Offsets to delete under `offsets.retention.minutes`: those of groups
    /// without members whose last commit and last state change are both
    /// older than `retention_ms` (Kafka's rule since KIP-211).
    pub fn expired_offsets(&self, now_ms: i64, retention_ms: i64) -> Vec<(String, String, i32)> {
        let mut out = Vec::new();
        for (group, offsets) in &self.offsets {
            let meta = self.groups.get(group);
            if meta.is_some_and(|g| !g.members.is_empty())
                || self
                    .consumer_groups
                    .get(group)
                    .is_some_and(|g| !g.members.is_empty())
            {
                continue;
            }
            let since = meta.map_or(i64::MIN, |g| g.state_timestamp_ms);
            for ((topic, partition), c) in offsets {
                if now_ms - since.max(c.commit_timestamp_ms) >= retention_ms {
                    out.push((group.clone(), topic.clone(), *partition));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_proto::coordinator::v1::GroupMemberValue;

    #[test]
    fn groups_land_on_the_partition_kafka_picks() {
        // Java's String.hashCode, computed independently.
        for (group, partition) in [
            ("", 0),
            ("a", 47),
            ("hello", 22),
            ("my-group", 12),
            ("console-consumer-12345", 6),
            ("grüße", 23),
            ("g😀", 32),
        ] {
            assert_eq!(partition_for(group, 50), partition, "{group}");
        }
    }

    fn offset(offset: i64, at: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: at,
        }
    }

    #[test]
    fn replay_keeps_the_latest_per_key_and_tombstones_delete() {
        let mut s = OffsetsState::default();
        let records = [
            offset_record("g", "t", 0, Some(&offset(10, 1))),
            offset_record("g", "t", 1, Some(&offset(5, 1))),
            offset_record("g", "t", 0, Some(&offset(20, 2))),
            offset_record("h", "t", 0, Some(&offset(7, 2))),
            offset_record("g", "t", 1, None),
            group_record(
                "g",
                Some(&GroupValue {
                    protocol_type: "consumer".into(),
                    generation: 4,
                    members: vec![GroupMemberValue {
                        member_id: "m1".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            ),
        ];
        for (k, v) in &records {
            s.apply(k, v.as_deref()).unwrap();
        }
        assert_eq!(s.committed("g", "t", 0), Some(&offset(20, 2)));
        assert_eq!(s.committed("g", "t", 1), None);
        assert_eq!(s.group_offsets("g").count(), 1);
        assert_eq!(s.group("g").unwrap().generation, 4);
        assert_eq!(s.group_ids(), ["g", "h"]);
        // Keys are deterministic: compaction sees one key per group and partition.
        assert_eq!(records[0].0, records[2].0);
        assert_ne!(records[0].0, records[1].0);
        assert!(s.apply(b"\xff\xff", None).is_err());
    }

    #[test]
    fn offsets_of_empty_groups_expire_after_retention() {
        let mut s = OffsetsState::default();
        for (k, v) in [
            offset_record("empty", "t", 0, Some(&offset(1, 1_000))),
            offset_record("busy", "t", 0, Some(&offset(1, 1_000))),
            group_record(
                "busy",
                Some(&GroupValue {
                    members: vec![GroupMemberValue::default()],
                    ..Default::default()
                }),
            ),
        ] {
            s.apply(&k, v.as_deref()).unwrap();
        }
        assert!(s.expired_offsets(1_500, 1_000).is_empty());
        assert_eq!(
            s.expired_offsets(2_000, 1_000),
            vec![("empty".to_owned(), "t".to_owned(), 0)]
        );
    }
}
