//! Topic administration: creating topics (name rules, defaults, replica
//! placement), deleting them, and adding partitions to them. Each topic of
//! a request is accepted or refused on its own; the accepted ones are
//! committed together.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use runnel_common::metadata::{MetadataImage, OFFSETS_TOPIC};
use runnel_common::topics::{collision_key, validate_topic_name};
use runnel_log::TopicConfig;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::{
    ConfigSet, MetadataRecord, PartitionCreated, TopicCreated, TopicDeleted,
    metadata_record::Record,
};

use super::configs::topic_resource;
use super::{Controller, ControllerError, Refusal, record};
use crate::{placement, reassignment};

/// The result for one item of a batch request (a topic to create, say).
type ItemResult = Result<(), Refusal>;

impl Controller {
    /// Creates topics; each gets its own result.
    pub async fn create_topics(
        &self,
        req: pb::CreateTopicsRequest,
    ) -> Result<Vec<pb::TopicResult>, ControllerError> {
        let mut inner = self.lock_active().await?;
        let mut records = Vec::new();
        let mut results = Vec::new();
        // Names created by this request, so two colliding names in one request are caught.
        let mut taken: BTreeSet<String> = inner
            .image
            .topics
            .keys()
            .map(|n| collision_key(n))
            .collect();
        // As Kafka: a name listed twice in one request is refused every time.
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &req.topics {
            *counts.entry(t.name.as_str()).or_default() += 1;
        }
        let duplicated: BTreeSet<String> = counts
            .into_iter()
            .filter(|&(_, n)| n > 1)
            .map(|(name, _)| name.to_owned())
            .collect();
        for topic in req.topics {
            let result = if duplicated.contains(&topic.name) {
                Err(Refusal::TopicListedTwice {
                    topic: topic.name.clone(),
                })
            } else {
                self.plan_topic(&inner.image, &topic, &mut taken)
            };
            match result {
                Ok(mut topic_records) => {
                    if !req.validate_only {
                        records.append(&mut topic_records);
                    }
                    results.push(topic_result(&topic.name, Ok(())));
                }
                Err(e) => results.push(topic_result(&topic.name, Err(e))),
            }
        }
        self.commit(&mut inner, records).await?;
        for r in &results {
            if r.error_code == ErrorCode::None as i32 && !req.validate_only {
                tracing::info!(topic = %r.name, "topic created");
            }
        }
        Ok(results)
    }

    fn plan_topic(
        &self,
        image: &MetadataImage,
        topic: &pb::CreatableTopic,
        taken: &mut BTreeSet<String>,
    ) -> Result<Vec<MetadataRecord>, Refusal> {
        let name = &topic.name;
        validate_topic_name(name)?;
        if image.topics.contains_key(name) {
            return Err(Refusal::TopicAlreadyExists {
                topic: name.clone(),
            });
        }
        if taken.contains(&collision_key(name)) {
            return Err(Refusal::TopicNameCollision {
                topic: name.clone(),
            });
        }
        let brokers: Vec<(i32, String)> = image
            .live_brokers()
            .map(|(id, b)| (id, b.rack.clone()))
            .collect();
        let placed = if topic.assignments.is_empty() {
            let partitions = if topic.partitions == -1 {
                self.settings.num_partitions
            } else {
                topic.partitions
            };
            if partitions < 1 {
                return Err(Refusal::TooFewPartitions { partitions });
            }
            let rf = if topic.replication_factor == -1 {
                self.settings.default_replication_factor
            } else {
                topic.replication_factor
            };
            if rf < 1 {
                return Err(Refusal::ReplicationFactorTooSmall {
                    replication_factor: rf,
                });
            }
            if rf as usize > brokers.len() {
                return Err(Refusal::NotEnoughBrokers {
                    replication_factor: rf as usize,
                    brokers: brokers.len(),
                });
            }
            auto_place(&brokers, 0, partitions as usize, rf as usize)
        } else {
            if topic.partitions != -1 || topic.replication_factor != -1 {
                return Err(Refusal::AssignmentWithCounts);
            }
            let mut assignments: Vec<&pb::ManualAssignment> = topic.assignments.iter().collect();
            assignments.sort_by_key(|a| a.partition);
            if assignments
                .iter()
                .enumerate()
                .any(|(i, a)| a.partition != i as i32)
            {
                return Err(Refusal::AssignmentNotConsecutive);
            }
            let rf = assignments[0].replicas.len();
            manual(
                image,
                0,
                assignments.iter().map(|a| a.replicas.as_slice()),
                rf,
            )?
        };
        TopicConfig::from_pairs(topic.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;

        let id = *uuid::Uuid::new_v4().as_bytes();
        let mut records = vec![record(Record::TopicCreated(TopicCreated {
            name: name.clone(),
            topic_id: id.to_vec().into(),
        }))];
        records.extend(partition_records(name, &id, 0, placed));
        for (key, value) in &topic.configs {
            records.push(record(Record::ConfigSet(ConfigSet {
                resource: Some(topic_resource(name)),
                key: key.clone(),
                value: value.clone(),
            })));
        }
        taken.insert(collision_key(name));
        Ok(records)
    }

    /// Deletes topics; each gets its own result.
    pub async fn delete_topics(
        &self,
        names: Vec<String>,
    ) -> Result<Vec<pb::TopicResult>, ControllerError> {
        let mut inner = self.lock_active().await?;
        let mut records = Vec::new();
        let mut results = Vec::new();
        let mut seen = BTreeSet::new();
        for name in names {
            let result = match inner.image.topics.get(&name) {
                Some(_) if name == OFFSETS_TOPIC => Err(Refusal::InternalTopic {
                    topic: name.clone(),
                }),
                Some(t) if seen.insert(name.clone()) => {
                    records.push(record(Record::TopicDeleted(TopicDeleted {
                        name: name.clone(),
                        topic_id: t.id.to_vec().into(),
                    })));
                    Ok(())
                }
                Some(_) => Ok(()),
                None => Err(Refusal::UnknownTopic {
                    topic: name.clone(),
                }),
            };
            results.push(topic_result(&name, result));
        }
        self.commit(&mut inner, records).await?;
        for r in &results {
            if r.error_code == ErrorCode::None as i32 {
                tracing::info!(topic = %r.name, "topic deleted");
            }
        }
        Ok(results)
    }

    /// Grows a topic to `count` partitions; shrinking is refused.
    pub async fn create_partitions(
        &self,
        req: pb::CreatePartitionsRequest,
    ) -> Result<pb::TopicResult, ControllerError> {
        let mut inner = self.lock_active().await?;
        let name = req.topic.clone();
        let planned = (|| {
            let t = inner
                .image
                .topics
                .get(&name)
                .ok_or_else(|| Refusal::UnknownTopic {
                    topic: name.clone(),
                })?;
            let current = t.partitions.len() as i32;
            if req.count < current {
                return Err(Refusal::PartitionsCannotShrink {
                    topic: name.clone(),
                    current,
                    requested: req.count,
                });
            }
            if req.count == current {
                return Err(Refusal::PartitionCountUnchanged {
                    topic: name.clone(),
                    current,
                });
            }
            // The replicas partition 0 has, or is moving to.
            let rf = t
                .partitions
                .get(&0)
                .map_or(1, |p| p.target_replicas().len());
            let additional = req.count - current;
            let placed = if req.assignments.is_empty() {
                let brokers: Vec<(i32, String)> = inner
                    .image
                    .live_brokers()
                    .map(|(id, b)| (id, b.rack.clone()))
                    .collect();
                if rf > brokers.len() {
                    return Err(Refusal::NotEnoughBrokers {
                        replication_factor: rf,
                        brokers: brokers.len(),
                    });
                }
                auto_place(&brokers, current as usize, additional as usize, rf)
            } else {
                if req.assignments.len() != additional as usize {
                    return Err(Refusal::AssignmentCountMismatch {
                        additional,
                        assignments: req.assignments.len(),
                    });
                }
                manual(
                    &inner.image,
                    current,
                    req.assignments.iter().map(|a| a.broker_ids.as_slice()),
                    rf,
                )?
            };
            Ok(partition_records(&name, &t.id, current as usize, placed))
        })();
        let result = match planned {
            Ok(records) => {
                if !req.validate_only {
                    self.commit(&mut inner, records).await?;
                    tracing::info!(topic = %name, partitions = req.count, "partitions added");
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
        Ok(topic_result(&name, result))
    }
}

fn topic_result(name: &str, result: ItemResult) -> pb::TopicResult {
    match result {
        Ok(()) => pb::TopicResult {
            name: name.to_owned(),
            error_code: ErrorCode::None as i32,
            error_message: String::new(),
        },
        Err(refused) => pb::TopicResult {
            name: name.to_owned(),
            error_code: refused.code() as i32,
            error_message: refused.to_string(),
        },
    }
}

/// Replicas, leader and ISR of one new partition.
struct Placed {
    replicas: Vec<i32>,
    leader: i32,
    isr: Vec<i32>,
}

/// The controller's placement of partitions `first..first + count` over
/// `brokers` and their racks (every replica in sync, the first leading).
fn auto_place(brokers: &[(i32, String)], first: usize, count: usize, rf: usize) -> Vec<Placed> {
    let mut rng = rand::rng();
    let n = brokers.len();
    placement::assign_with_racks(
        brokers,
        first,
        count,
        rf,
        rng.random_range(0..n),
        rng.random_range(0..n),
    )
    .into_iter()
    .map(|replicas| Placed {
        leader: replicas[0],
        isr: replicas.clone(),
        replicas,
    })
    .collect()
}

/// Manual assignments of partitions `first..`, checked as Kafka checks them
/// (`rf` replicas each, registered brokers, not all fenced).
fn manual<'a>(
    image: &MetadataImage,
    first: i32,
    assignments: impl Iterator<Item = &'a [i32]>,
    rf: usize,
) -> Result<Vec<Placed>, Refusal> {
    assignments
        .enumerate()
        .map(|(i, replicas)| {
            reassignment::check_assignment(image, replicas, Some(rf))?;
            let (leader, isr) =
                reassignment::initial_leadership(image, first + i as i32, replicas)?;
            Ok(Placed {
                replicas: replicas.to_vec(),
                leader,
                isr,
            })
        })
        .collect()
}

/// Records for new partitions `first..` of a topic.
fn partition_records(
    name: &str,
    id: &[u8; 16],
    first: usize,
    placed: Vec<Placed>,
) -> Vec<MetadataRecord> {
    placed
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            record(Record::PartitionCreated(PartitionCreated {
                topic: name.to_owned(),
                topic_id: id.to_vec().into(),
                partition: (first + i) as i32,
                leader: p.leader,
                isr: p.isr,
                replicas: p.replicas,
                leader_epoch: 0,
                partition_epoch: 0,
            }))
        })
        .collect()
}
