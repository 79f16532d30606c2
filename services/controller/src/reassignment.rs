//! Moving partitions' replicas (Kafka's KIP-455), as pure functions of the
//! metadata image, and the checks manual replica assignments share with
//! topic creation.
//!
//! A reassignment to target replicas `T` of a partition on replicas `O`
//! first grows the replica set to `T` followed by `O - T`, with `T - O`
//! adding and `O - T` removing. The new replicas fetch from the leader like
//! any follower and the leader adds them to the ISR once caught up; the ISR
//! change that makes every replica of `T` in sync completes the move: the
//! leaving replicas drop out of the replica set and the ISR, and if the
//! leader was one of them, the first in-sync replica of `T` takes over.
//! Nothing acknowledged is at risk on the way: the leaving replicas stay in
//! the ISR, counted for acks=all, until the new ones are in it.
//!
//! Cancelling (or replacing) a reassignment in progress first reverts it
//! (Kafka's `PartitionReassignmentRevert`): the adding replicas leave the
//! replica set and the ISR, the original replicas stay.

use std::collections::BTreeSet;

use runnel_common::metadata::{MetadataImage, PartitionState};
use runnel_proto::metadata::v1::PartitionChanged;

use crate::election::{NO_LEADER, Target, change_to, eligible, known_partition};
use crate::error::Refusal;

/// Checks a manual replica assignment for one partition (Kafka's
/// `validateManualPartitionAssignment`): not empty, no broker twice, every
/// broker registered, and, when `replication_factor` is given, that many replicas.
pub fn check_assignment(
    image: &MetadataImage,
    replicas: &[i32],
    replication_factor: Option<usize>,
) -> Result<(), Refusal> {
    if replicas.is_empty() {
        return Err(Refusal::EmptyAssignment);
    }
    let mut seen = BTreeSet::new();
    for &r in replicas {
        if !image.brokers.contains_key(&r) {
            return Err(Refusal::AssignmentToUnknownBroker { broker: r });
        }
        if !seen.insert(r) {
            return Err(Refusal::AssignmentRepeatsBroker { broker: r });
        }
    }
    match replication_factor {
        Some(rf) if rf != replicas.len() => Err(Refusal::InconsistentAssignment {
            replicas: replicas.len(),
            replication_factor: rf,
        }),
        _ => Ok(()),
    }
}

/// The leader and ISR of a new partition placed on `replicas` by hand: the
/// ISR is its unfenced replicas and the first of them leads; refused when
/// every one is fenced.
pub fn initial_leadership(
    image: &MetadataImage,
    partition: i32,
    replicas: &[i32],
) -> Result<(i32, Vec<i32>), Refusal> {
    let isr: Vec<i32> = replicas
        .iter()
        .copied()
        .filter(|&r| eligible(image, r))
        .collect();
    match isr.first() {
        Some(&leader) => Ok((leader, isr)),
        None => Err(Refusal::AssignmentAllFenced { partition }),
    }
}

/// The record that starts moving `topic`-`partition` to `target` replicas,
/// or cancels the move in progress when `target` is `None`; `Ok(None)` when
/// the partition is already where it is asked to be.
pub fn reassign(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
    allow_replication_factor_change: bool,
) -> Result<Option<PartitionChanged>, Refusal> {
    let (t, p) = known_partition(image, topic, partition)?;
    if target.is_none() && !p.is_reassigning() {
        return Err(Refusal::NoReassignmentInProgress {
            topic: topic.to_owned(),
            partition,
        });
    }
    let reverted = revert(image, p);
    let next = match target {
        None => reverted,
        Some(target) => {
            check_assignment(image, target, None)?;
            if !allow_replication_factor_change && target.len() != reverted.replicas.len() {
                return Err(Refusal::ReplicationFactorChange {
                    from: reverted.replicas.len(),
                    to: target.len(),
                });
            }
            let original = &reverted.replicas;
            let mut replicas = target.to_vec();
            replicas.extend(original.iter().filter(|r| !target.contains(r)));
            Target {
                adding: target
                    .iter()
                    .copied()
                    .filter(|r| !original.contains(r))
                    .collect(),
                removing: original
                    .iter()
                    .copied()
                    .filter(|r| !target.contains(r))
                    .collect(),
                replicas,
                ..reverted
            }
            .completing(image)
        }
    };
    Ok(change_to(topic, t, partition, p, next))
}

/// `p` with the reassignment in progress undone: the original replicas,
/// the ISR without the adding ones, and a leader from what remains (the
/// first live original replica if none of them is in sync any more).
fn revert(image: &MetadataImage, p: &PartitionState) -> Target {
    let replicas = p.original_replicas();
    let mut isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    let mut leader = p.leader;
    if !isr.contains(&leader) {
        leader = replicas
            .iter()
            .copied()
            .find(|&r| isr.contains(&r) && eligible(image, r))
            .unwrap_or(NO_LEADER);
    }
    if isr.is_empty() {
        // Only adding replicas were in sync: as Kafka, an unclean choice
        // among the original replicas rather than a partition with no ISR.
        match replicas.iter().copied().find(|&r| eligible(image, r)) {
            Some(r) => {
                leader = r;
                isr = vec![r];
            }
            None => {
                leader = NO_LEADER;
                isr = replicas.iter().copied().take(1).collect();
            }
        }
    }
    Target {
        replicas,
        adding: Vec::new(),
        removing: Vec::new(),
        leader,
        isr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::{IsrChange, alter_isr, on_broker_fenced};
    use runnel_proto::common::v1::ErrorCode;
    use runnel_proto::metadata::v1::metadata_record::Record;
    use runnel_proto::metadata::v1::{
        BrokerFenced, BrokerRegistered, BrokerUnfenced, MetadataRecord, PartitionCreated,
        TopicCreated,
    };

    /// Brokers 1..=4 serving; topic `t` partition 0 on 1,2,3, all in sync, 1 leading.
    fn cluster() -> MetadataImage {
        let mut image = MetadataImage::default();
        let apply = |image: &mut MetadataImage, r: Record| {
            let offset = image.next_offset;
            image
                .apply(offset, &MetadataRecord { record: Some(r) })
                .unwrap();
        };
        for id in 1..=4 {
            let broker_epoch = image.next_offset;
            apply(
                &mut image,
                Record::BrokerRegistered(BrokerRegistered {
                    broker_id: id,
                    broker_epoch,
                    ..Default::default()
                }),
            );
            apply(
                &mut image,
                Record::BrokerUnfenced(BrokerUnfenced {
                    broker_id: id,
                    broker_epoch,
                }),
            );
        }
        apply(
            &mut image,
            Record::TopicCreated(TopicCreated {
                name: "t".into(),
                topic_id: vec![7; 16].into(),
            }),
        );
        apply(
            &mut image,
            Record::PartitionCreated(PartitionCreated {
                topic: "t".into(),
                topic_id: vec![7; 16].into(),
                partition: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            }),
        );
        image
    }

    fn apply(image: &mut MetadataImage, change: PartitionChanged) {
        let offset = image.next_offset;
        image
            .apply(
                offset,
                &MetadataRecord {
                    record: Some(Record::PartitionChanged(change)),
                },
            )
            .unwrap();
    }

    fn p(image: &MetadataImage) -> &PartitionState {
        &image.topics["t"].partitions[&0]
    }

    /// The leader's ISR change to `isr`, applied.
    fn isr(image: &mut MetadataImage, isr: &[i32]) {
        let state = p(image).clone();
        let change = alter_isr(
            image,
            &IsrChange {
                topic: "t".into(),
                partition: 0,
                leader: state.leader,
                leader_epoch: state.leader_epoch,
                partition_epoch: state.partition_epoch,
                isr: isr.to_vec(),
            },
        )
        .unwrap()
        .unwrap();
        apply(image, change);
    }

    #[test]
    fn a_move_adds_first_and_removes_once_the_new_replicas_are_in_sync() {
        let mut image = cluster();
        let start = reassign(&image, "t", 0, Some(&[4, 2, 3]), true)
            .unwrap()
            .unwrap();
        apply(&mut image, start);
        let s = p(&image);
        assert_eq!(s.replicas, vec![4, 2, 3, 1]);
        assert_eq!(
            (s.adding_replicas.clone(), s.removing_replicas.clone()),
            (vec![4], vec![1])
        );
        assert_eq!(
            (s.leader, s.isr.clone()),
            (1, vec![1, 2, 3]),
            "the leader stays meanwhile"
        );
        assert_eq!(s.leader_epoch, 0, "adding replicas fences nobody");
        assert_eq!(
            image.topics["t"].partitions[&0].target_replicas(),
            vec![4, 2, 3]
        );

        // The new replica catches up: the ISR change completes the move and
        // the leaving leader hands over to the first in-sync target replica.
        isr(&mut image, &[1, 2, 3, 4]);
        let s = p(&image);
        assert_eq!(s.replicas, vec![4, 2, 3]);
        assert!(!s.is_reassigning());
        assert_eq!((s.leader, s.isr.clone()), (4, vec![2, 3, 4]));
        assert_eq!(s.leader_epoch, 1);
    }

    #[test]
    fn a_move_within_the_isr_completes_at_once_and_a_retry_changes_nothing() {
        let mut image = cluster();
        let change = reassign(&image, "t", 0, Some(&[3, 2]), true)
            .unwrap()
            .unwrap();
        apply(&mut image, change);
        let s = p(&image);
        assert_eq!(
            (s.replicas.clone(), s.isr.clone(), s.leader),
            (vec![3, 2], vec![2, 3], 3)
        );
        assert_eq!(s.leader_epoch, 1, "a replica left: the leader epoch moves");
        assert!(!s.is_reassigning());
        assert_eq!(reassign(&image, "t", 0, Some(&[3, 2]), true), Ok(None));
    }

    #[test]
    fn cancelling_restores_the_original_replicas() {
        let mut image = cluster();
        let before = p(&image).clone();
        let change = reassign(&image, "t", 0, Some(&[4]), true).unwrap().unwrap();
        apply(&mut image, change);
        assert!(p(&image).is_reassigning());
        let cancel = reassign(&image, "t", 0, None, true).unwrap().unwrap();
        apply(&mut image, cancel);
        let s = p(&image);
        assert_eq!(
            (s.replicas.clone(), s.isr.clone(), s.leader),
            (before.replicas, before.isr, before.leader)
        );
        assert!(!s.is_reassigning());
        let refused = reassign(&image, "t", 0, None, true).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::NoReassignmentInProgress);
    }

    #[test]
    fn a_new_target_replaces_the_move_in_progress() {
        let mut image = cluster();
        let change = reassign(&image, "t", 0, Some(&[4, 2, 3]), true)
            .unwrap()
            .unwrap();
        apply(&mut image, change);
        let change = reassign(&image, "t", 0, Some(&[1, 2, 4]), true)
            .unwrap()
            .unwrap();
        apply(&mut image, change);
        let s = p(&image);
        assert_eq!(s.replicas, vec![1, 2, 4, 3]);
        assert_eq!(
            (s.adding_replicas.clone(), s.removing_replicas.clone()),
            (vec![4], vec![3])
        );
    }

    #[test]
    fn a_fenced_leaving_replica_does_not_stop_the_move() {
        let mut image = cluster();
        let change = reassign(&image, "t", 0, Some(&[4, 2, 3]), true)
            .unwrap()
            .unwrap();
        apply(&mut image, change);
        let epoch = image.brokers[&1].epoch;
        let offset = image.next_offset;
        image
            .apply(
                offset,
                &MetadataRecord {
                    record: Some(Record::BrokerFenced(BrokerFenced {
                        broker_id: 1,
                        broker_epoch: epoch,
                    })),
                },
            )
            .unwrap();
        for c in on_broker_fenced(&image, 1) {
            apply(&mut image, c);
        }
        assert_eq!((p(&image).leader, p(&image).isr.clone()), (2, vec![2, 3]));
        isr(&mut image, &[2, 3, 4]);
        let s = p(&image);
        assert_eq!((s.replicas.clone(), s.leader), (vec![4, 2, 3], 2));
        assert!(!s.is_reassigning());
    }

    #[test]
    fn bad_targets_are_refused_with_kafkas_codes() {
        let image = cluster();
        let code = |target: Option<&[i32]>, topic: &str, partition: i32, allow: bool| {
            reassign(&image, topic, partition, target, allow)
                .unwrap_err()
                .code()
        };
        assert_eq!(
            code(Some(&[1, 9]), "t", 0, true),
            ErrorCode::InvalidReplicaAssignment
        );
        assert_eq!(
            code(Some(&[1, 1]), "t", 0, true),
            ErrorCode::InvalidReplicaAssignment
        );
        assert_eq!(
            code(Some(&[]), "t", 0, true),
            ErrorCode::InvalidReplicaAssignment
        );
        assert_eq!(
            code(Some(&[1]), "t", 0, false),
            ErrorCode::InvalidReplicationFactor
        );
        assert_eq!(
            code(Some(&[1]), "t", 1, true),
            ErrorCode::UnknownTopicOrPartition
        );
        assert_eq!(
            code(Some(&[1]), "u", 0, true),
            ErrorCode::UnknownTopicOrPartition
        );
    }
}
