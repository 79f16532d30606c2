//! Partition leadership and ISR changes, as pure functions of the metadata image.
//!
//! Every function here reads a [`MetadataImage`] and returns the
//! `PartitionChanged` records that would bring it to the wanted state; the
//! controller commits them (with whatever record caused them) in one batch.
//! Kafka's rules (KRaft's `PartitionChangeBuilder`):
//!
//! - A new leader comes from the ISR, the first eligible one in replica
//!   order, so the preferred replica wins when it can. Only with
//!   `unclean.leader.election.enable` may an out-of-sync replica lead, and
//!   then the ISR restarts as just that replica.
//! - A fenced broker leaves every ISR, except that an ISR never becomes empty:
//!   its last member stays (so it can come back as leader without data loss)
//!   and the partition goes offline (leader -1) meanwhile.
//! - Every change bumps the partition epoch; every leader change also bumps
//!   the leader epoch.

use runnel_common::metadata::{MetadataImage, PartitionState, TopicState};
use runnel_log::TopicConfig;
use runnel_proto::metadata::v1::{PartitionChanged, ReplicaAssignment};

use crate::error::Refusal;

/// No leader: the partition is offline.
pub const NO_LEADER: i32 = -1;

/// Topic `name` and its partition `partition`, if both exist.
pub(crate) fn partition<'a>(
    image: &'a MetadataImage,
    name: &str,
    partition: i32,
) -> Option<(&'a TopicState, &'a PartitionState)> {
    image
        .topics
        .get(name)
        .and_then(|t| t.partitions.get(&partition).map(|p| (t, p)))
}

/// As [`partition`], refused with UNKNOWN_TOPIC_OR_PARTITION when missing.
pub(crate) fn known_partition<'a>(
    image: &'a MetadataImage,
    name: &str,
    index: i32,
) -> Result<(&'a TopicState, &'a PartitionState), Refusal> {
    partition(image, name, index).ok_or_else(|| Refusal::UnknownPartition {
        topic: name.to_owned(),
        partition: index,
    })
}

/// Whether broker `id` is registered and not fenced.
pub(crate) fn eligible(image: &MetadataImage, id: i32) -> bool {
    image.brokers.get(&id).is_some_and(|b| !b.fenced)
}

fn unclean_allowed(topic: &TopicState) -> bool {
    TopicConfig::from_pairs(topic.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map(|c| c.unclean_leader_election_enable)
        .unwrap_or(false)
}

/// The state a partition change moves a partition to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Replicas, preferred leader first (during a reassignment, target then leaving).
    pub replicas: Vec<i32>,
    /// Replicas a reassignment adds.
    pub adding: Vec<i32>,
    /// Replicas a reassignment removes.
    pub removing: Vec<i32>,
    /// The leader (-1: none).
    pub leader: i32,
    /// In-sync replicas.
    pub isr: Vec<i32>,
}

impl Target {
    /// Where `p` is now.
    pub fn of(p: &PartitionState) -> Target {
        Target {
            replicas: p.replicas.clone(),
            adding: p.adding_replicas.clone(),
            removing: p.removing_replicas.clone(),
            leader: p.leader,
            isr: p.isr.clone(),
        }
    }

    /// `p` with a new leader and ISR, replicas as they are.
    fn leader_and_isr(p: &PartitionState, leader: i32, isr: Vec<i32>) -> Target {
        Target {
            leader,
            isr,
            ..Target::of(p)
        }
    }

    /// Completes the reassignment in progress if every target replica is in
    /// the ISR (Kafka's `maybeCompleteReassignment`): the leaving replicas
    /// go, and a leaving leader hands over to the first in-sync target replica.
    pub fn completing(mut self, image: &MetadataImage) -> Target {
        if self.adding.is_empty() && self.removing.is_empty() {
            return self;
        }
        let removing = std::mem::take(&mut self.removing);
        let isr: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| !removing.contains(r))
            .collect();
        let replicas: Vec<i32> = self
            .replicas
            .iter()
            .copied()
            .filter(|r| !removing.contains(r))
            .collect();
        if isr.is_empty() || !replicas.iter().all(|r| isr.contains(r)) {
            self.removing = removing;
            return self;
        }
        if !replicas.contains(&self.leader) {
            self.leader = replicas
                .iter()
                .copied()
                .find(|&r| isr.contains(&r) && eligible(image, r))
                .unwrap_or(NO_LEADER);
        }
        self.replicas = replicas;
        self.isr = isr;
        self.adding.clear();
        self
    }
}

/// The record that moves `p` of `topic` to `target` (bumping the epochs as
/// needed), or `None` if that is where it already is.
///
/// Every change bumps the partition epoch; a new leader, or replicas
/// leaving the replica set, bump the leader epoch too (as KRaft does, so a
/// removed replica's fetches with the old epoch are fenced).
pub fn change_to(
    name: &str,
    topic: &TopicState,
    partition: i32,
    p: &PartitionState,
    target: Target,
) -> Option<PartitionChanged> {
    let now = Target::of(p);
    if target == now {
        return None;
    }
    let replicas_changed = target.replicas != now.replicas
        || target.adding != now.adding
        || target.removing != now.removing;
    let replicas_left = now.replicas.iter().any(|r| !target.replicas.contains(r));
    Some(PartitionChanged {
        topic: name.to_owned(),
        topic_id: topic.id.to_vec().into(),
        partition,
        leader: target.leader,
        isr: target.isr,
        leader_epoch: if target.leader == p.leader && !replicas_left {
            p.leader_epoch
        } else {
            p.leader_epoch + 1
        },
        partition_epoch: p.partition_epoch + 1,
        assignment: replicas_changed.then_some(ReplicaAssignment {
            replicas: target.replicas,
            adding_replicas: target.adding,
            removing_replicas: target.removing,
        }),
    })
}

/// The record that moves `p` of `topic` to `leader` and `isr`, or `None` if
/// that is where it already is.
fn change(
    name: &str,
    topic: &TopicState,
    partition: i32,
    p: &PartitionState,
    leader: i32,
    isr: Vec<i32>,
) -> Option<PartitionChanged> {
    change_to(
        name,
        topic,
        partition,
        p,
        Target::leader_and_isr(p, leader, isr),
    )
}

/// Where `p` should be with `gone` no longer able to serve: out of the ISR
/// (unless it is the last member) and, if it led, replaced.
fn without(
    image: &MetadataImage,
    topic: &TopicState,
    p: &PartitionState,
    gone: i32,
) -> (i32, Vec<i32>) {
    let mut isr: Vec<i32> = p.isr.iter().copied().filter(|&r| r != gone).collect();
    if isr.is_empty() {
        // Keep the last in-sync replica on record: it holds every acknowledged write.
        isr = p.isr.clone();
    }
    let leader = if p.leader == gone || p.leader == NO_LEADER {
        elect(image, topic, p, &isr, gone)
    } else {
        Some(p.leader)
    };
    match leader {
        Some(l) if !isr.contains(&l) => (l, vec![l]),
        Some(l) => (l, isr),
        None => (NO_LEADER, isr),
    }
}

/// A leader for `p`: the first replica in the ISR that can serve, else (when
/// the topic allows it) the first replica that can serve at all.
fn elect(
    image: &MetadataImage,
    topic: &TopicState,
    p: &PartitionState,
    isr: &[i32],
    exclude: i32,
) -> Option<i32> {
    let can = |r: i32| r != exclude && eligible(image, r);
    p.replicas
        .iter()
        .copied()
        .find(|&r| isr.contains(&r) && can(r))
        .or_else(|| {
            unclean_allowed(topic)
                .then(|| p.replicas.iter().copied().find(|&r| can(r)))
                .flatten()
        })
}

/// The changes after broker `id` is fenced (session expired or shutting down).
pub fn on_broker_fenced(image: &MetadataImage, id: i32) -> Vec<PartitionChanged> {
    let mut out = Vec::new();
    for (name, topic) in &image.topics {
        for (&partition, p) in &topic.partitions {
            if p.leader != id && !p.isr.contains(&id) {
                continue;
            }
            let (leader, isr) = without(image, topic, p, id);
            out.extend(change(name, topic, partition, p, leader, isr));
        }
    }
    out
}

/// The changes once broker `id` can serve again: offline partitions it can
/// lead get it as leader.
pub fn on_broker_unfenced(image: &MetadataImage, id: i32) -> Vec<PartitionChanged> {
    let mut out = Vec::new();
    for (name, topic) in &image.topics {
        for (&partition, p) in &topic.partitions {
            out.extend(leader_for_leaderless(image, id, name, topic, partition, p));
        }
    }
    out
}

/// A leader for `p` if it has none and broker `id` holds one of its
/// replicas (in sync if one can serve; else, where the topic allows, any).
fn leader_for_leaderless(
    image: &MetadataImage,
    id: i32,
    name: &str,
    topic: &TopicState,
    partition: i32,
    p: &PartitionState,
) -> Option<PartitionChanged> {
    if p.leader != NO_LEADER || !p.replicas.contains(&id) {
        return None;
    }
    let leader = elect(image, topic, p, &p.isr, NO_LEADER)?;
    let isr = if p.isr.contains(&leader) {
        p.isr.clone()
    } else {
        vec![leader]
    };
    change(name, topic, partition, p, leader, isr)
}

/// The changes once broker `id` reports replicas of `partitions` it cannot
/// open (a full or failed disk, say): they leave their ISRs (the last
/// member stays, as for a fenced broker) and lose their leaderships.
pub fn on_replicas_offline<'a>(
    image: &MetadataImage,
    id: i32,
    partitions: impl IntoIterator<Item = &'a (String, i32)>,
) -> Vec<PartitionChanged> {
    let mut out = Vec::new();
    for (name, partition) in partitions {
        let Some((topic, p)) = self::partition(image, name, *partition) else {
            continue;
        };
        if p.leader != id && !p.isr.contains(&id) {
            continue;
        }
        let (leader, isr) = without(image, topic, p, id);
        out.extend(change(name, topic, *partition, p, leader, isr));
    }
    out
}

/// The changes once broker `id`'s replicas of `partitions` open again:
/// those left without a leader get one (it, if it is the one in sync).
pub fn on_replicas_back<'a>(
    image: &MetadataImage,
    id: i32,
    partitions: impl IntoIterator<Item = &'a (String, i32)>,
) -> Vec<PartitionChanged> {
    let mut out = Vec::new();
    for (name, partition) in partitions {
        let Some((topic, p)) = self::partition(image, name, *partition) else {
            continue;
        };
        out.extend(leader_for_leaderless(image, id, name, topic, *partition, p));
    }
    out
}

/// Moves leadership back to preferred replicas that are in sync and serving
/// (`auto.leader.rebalance.enable`).
pub fn preferred_leaders(image: &MetadataImage) -> Vec<PartitionChanged> {
    let mut out = Vec::new();
    for (name, topic) in &image.topics {
        for (&partition, p) in &topic.partitions {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            if p.leader != preferred && p.isr.contains(&preferred) && eligible(image, preferred) {
                out.extend(change(name, topic, partition, p, preferred, p.isr.clone()));
            }
        }
    }
    out
}

/// Kafka's ElectLeaders for one partition: the preferred replica (the
/// first) takes over if it is in sync and serving; with `unclean`, a
/// partition without a serving leader gets the first serving replica, in
/// sync if one is (else, as Kafka's unclean election, any, restarting the ISR).
pub fn elect_leader(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    unclean: bool,
) -> Result<PartitionChanged, Refusal> {
    let (t, p) = known_partition(image, topic, partition)?;
    let not_needed = || Refusal::ElectionNotNeeded {
        topic: topic.to_owned(),
        partition,
    };
    if unclean {
        if p.leader != NO_LEADER && eligible(image, p.leader) {
            return Err(not_needed());
        }
        let in_sync = p
            .replicas
            .iter()
            .copied()
            .find(|&r| p.isr.contains(&r) && eligible(image, r));
        let (leader, isr) = match in_sync {
            Some(r) => (r, p.isr.clone()),
            None => match p.replicas.iter().copied().find(|&r| eligible(image, r)) {
                Some(r) => (r, vec![r]),
                None => {
                    return Err(Refusal::EligibleLeadersNotAvailable {
                        topic: topic.to_owned(),
                        partition,
                    });
                }
            },
        };
        return change(topic, t, partition, p, leader, isr).ok_or_else(not_needed);
    }
    let Some(&preferred) = p.replicas.first() else {
        return Err(not_needed());
    };
    if p.leader == preferred {
        return Err(not_needed());
    }
    if !p.isr.contains(&preferred) || !eligible(image, preferred) {
        return Err(Refusal::PreferredLeaderNotAvailable {
            topic: topic.to_owned(),
            partition,
            preferred,
        });
    }
    change(topic, t, partition, p, preferred, p.isr.clone()).ok_or_else(not_needed)
}

/// A leader's request to change its partition's ISR (Kafka's AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The broker asking: it must be the leader.
    pub leader: i32,
    /// The leader epoch it leads in.
    pub leader_epoch: i32,
    /// The partition epoch its view is based on.
    pub partition_epoch: i32,
    /// The ISR it wants.
    pub isr: Vec<i32>,
}

/// The record for an ISR change, or why it cannot be made. A change equal to
/// the current state returns `Ok(None)` (a retry of one already applied).
pub fn alter_isr(
    image: &MetadataImage,
    req: &IsrChange,
) -> Result<Option<PartitionChanged>, Refusal> {
    let (topic, p) = known_partition(image, &req.topic, req.partition)?;
    if p.leader != req.leader || p.leader_epoch != req.leader_epoch {
        return Err(Refusal::FencedLeaderEpoch {
            topic: req.topic.clone(),
            partition: req.partition,
            broker: req.leader,
            leader_epoch: req.leader_epoch,
            leader: p.leader,
            current_leader_epoch: p.leader_epoch,
        });
    }
    if req.partition_epoch != p.partition_epoch {
        if req.isr == p.isr {
            return Ok(None);
        }
        return Err(Refusal::StalePartitionEpoch {
            topic: req.topic.clone(),
            partition: req.partition,
            partition_epoch: req.partition_epoch,
            current_partition_epoch: p.partition_epoch,
        });
    }
    if !req.isr.contains(&req.leader) {
        return Err(Refusal::IsrWithoutLeader {
            topic: req.topic.clone(),
            partition: req.partition,
            isr: req.isr.clone(),
        });
    }
    let mut seen = Vec::new();
    for &r in &req.isr {
        if seen.contains(&r) {
            return Err(Refusal::DuplicateIsrMember {
                topic: req.topic.clone(),
                partition: req.partition,
                broker: r,
            });
        }
        seen.push(r);
        if !p.replicas.contains(&r) {
            return Err(Refusal::NotAReplica {
                topic: req.topic.clone(),
                partition: req.partition,
                broker: r,
                replicas: p.replicas.clone(),
            });
        }
        // Only a serving broker may join; one already in the ISR may stay.
        if !p.isr.contains(&r) && !eligible(image, r) {
            return Err(Refusal::FencedReplica {
                topic: req.topic.clone(),
                partition: req.partition,
                broker: r,
            });
        }
    }
    // The last target replica joining the ISR completes a reassignment.
    let target = Target::leader_and_isr(p, p.leader, req.isr.clone()).completing(image);
    Ok(change_to(&req.topic, topic, req.partition, p, target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_proto::common::v1::ErrorCode;
    use runnel_proto::metadata::v1::metadata_record::Record;
    use runnel_proto::metadata::v1::{
        BrokerFenced, BrokerRegistered, BrokerUnfenced, ConfigResource, ConfigResourceType,
        ConfigSet, MetadataRecord, PartitionCreated, TopicCreated,
    };

    const ID: [u8; 16] = [7; 16];

    struct Image(MetadataImage);

    impl Image {
        fn apply(&mut self, r: Record) {
            let offset = self.0.next_offset;
            self.0
                .apply(offset, &MetadataRecord { record: Some(r) })
                .unwrap();
        }

        fn apply_changes(&mut self, changes: Vec<PartitionChanged>) {
            for c in changes {
                self.apply(Record::PartitionChanged(c));
            }
        }

        fn epoch(&self, id: i32) -> i64 {
            self.0.brokers[&id].epoch
        }

        fn fence(&mut self, id: i32) {
            let broker_epoch = self.epoch(id);
            self.apply(Record::BrokerFenced(BrokerFenced {
                broker_id: id,
                broker_epoch,
            }));
        }

        fn unfence(&mut self, id: i32) {
            let broker_epoch = self.epoch(id);
            self.apply(Record::BrokerUnfenced(BrokerUnfenced {
                broker_id: id,
                broker_epoch,
            }));
        }

        fn p(&self) -> &PartitionState {
            &self.0.topics["t"].partitions[&0]
        }
    }

    /// Brokers 1..=3 serving; topic `t` partition 0 on replicas `replicas`, all in sync.
    fn cluster(replicas: &[i32]) -> Image {
        let mut image = Image(MetadataImage::default());
        for id in 1..=3 {
            let broker_epoch = image.0.next_offset;
            image.apply(Record::BrokerRegistered(BrokerRegistered {
                broker_id: id,
                broker_epoch,
                ..Default::default()
            }));
            image.unfence(id);
        }
        image.apply(Record::TopicCreated(TopicCreated {
            name: "t".into(),
            topic_id: ID.to_vec().into(),
        }));
        image.apply(Record::PartitionCreated(PartitionCreated {
            topic: "t".into(),
            topic_id: ID.to_vec().into(),
            partition: 0,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader: replicas[0],
            leader_epoch: 0,
            partition_epoch: 0,
        }));
        image
    }

    #[test]
    fn a_fenced_leader_is_replaced_by_the_next_in_sync_replica() {
        let mut image = cluster(&[1, 2, 3]);
        image.fence(1);
        let changes = on_broker_fenced(&image.0, 1);
        assert_eq!(changes.len(), 1);
        image.apply_changes(changes);
        let p = image.p();
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2, 3]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (1, 1));
    }

    #[test]
    fn a_fenced_follower_leaves_the_isr_without_a_leader_change() {
        let mut image = cluster(&[1, 2, 3]);
        image.fence(3);
        image.apply_changes(on_broker_fenced(&image.0, 3));
        let p = image.p();
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1, 2]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (0, 1));
    }

    #[test]
    fn the_last_in_sync_replica_stays_and_the_partition_goes_offline_until_it_returns() {
        let mut image = cluster(&[1, 2, 3]);
        for id in [3, 2, 1] {
            image.fence(id);
            image.apply_changes(on_broker_fenced(&image.0, id));
        }
        let p = image.p();
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![1]));
        // Broker 2 comes back: out of sync, so it may not lead (no unclean election).
        image.unfence(2);
        assert!(on_broker_unfenced(&image.0, 2).is_empty());
        // Broker 1, the last in-sync replica, comes back and leads again.
        image.unfence(1);
        image.apply_changes(on_broker_unfenced(&image.0, 1));
        let p = image.p();
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1]));
        assert_eq!(p.leader_epoch, 2);
    }

    #[test]
    fn unclean_election_picks_an_out_of_sync_replica_when_the_topic_allows_it() {
        let mut image = cluster(&[1, 2]);
        image.apply(Record::ConfigSet(ConfigSet {
            resource: Some(ConfigResource {
                r#type: ConfigResourceType::Topic as i32,
                name: "t".into(),
            }),
            key: "unclean.leader.election.enable".into(),
            value: "true".into(),
        }));
        // Broker 2 falls out of sync; then the leader dies.
        let shrink = IsrChange {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            isr: vec![1],
        };
        image.apply_changes(alter_isr(&image.0, &shrink).unwrap().into_iter().collect());
        image.fence(1);
        image.apply_changes(on_broker_fenced(&image.0, 1));
        let p = image.p();
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
    }

    #[test]
    fn preferred_leaders_come_back_once_in_sync() {
        let mut image = cluster(&[1, 2, 3]);
        image.fence(1);
        image.apply_changes(on_broker_fenced(&image.0, 1));
        image.unfence(1);
        // Back but not in the ISR yet: no move.
        assert!(preferred_leaders(&image.0).is_empty());
        let expand = IsrChange {
            topic: "t".into(),
            partition: 0,
            leader: 2,
            leader_epoch: 1,
            partition_epoch: 1,
            isr: vec![2, 3, 1],
        };
        image.apply_changes(alter_isr(&image.0, &expand).unwrap().into_iter().collect());
        image.apply_changes(preferred_leaders(&image.0));
        let p = image.p();
        assert_eq!((p.leader, p.leader_epoch), (1, 2));
        assert!(preferred_leaders(&image.0).is_empty());
    }

    #[test]
    fn isr_changes_are_checked_against_leader_and_partition_epoch() {
        let image = cluster(&[1, 2, 3]);
        let base = IsrChange {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            isr: vec![1, 2],
        };
        assert!(alter_isr(&image.0, &base).unwrap().is_some());
        let code = |r: IsrChange| alter_isr(&image.0, &r).unwrap_err().code();
        assert_eq!(
            code(IsrChange {
                leader: 2,
                ..base.clone()
            }),
            ErrorCode::FencedLeaderEpoch
        );
        assert_eq!(
            code(IsrChange {
                partition_epoch: 5,
                ..base.clone()
            }),
            ErrorCode::InvalidUpdateVersion
        );
        assert_eq!(
            code(IsrChange {
                isr: vec![2, 3],
                ..base.clone()
            }),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(IsrChange {
                isr: vec![1, 4],
                ..base.clone()
            }),
            ErrorCode::IneligibleReplica
        );
        assert_eq!(
            code(IsrChange {
                isr: vec![1, 1],
                ..base.clone()
            }),
            ErrorCode::InvalidRequest
        );
        // The current ISR again, from a stale epoch: already done.
        assert_eq!(
            alter_isr(
                &image.0,
                &IsrChange {
                    partition_epoch: 9,
                    isr: vec![1, 2, 3],
                    ..base
                }
            ),
            Ok(None)
        );
    }

    #[test]
    fn a_fenced_broker_cannot_join_the_isr() {
        let mut image = cluster(&[1, 2, 3]);
        image.fence(3);
        image.apply_changes(on_broker_fenced(&image.0, 3));
        let rejoin = IsrChange {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 1,
            isr: vec![1, 2, 3],
        };
        assert_eq!(
            alter_isr(&image.0, &rejoin).unwrap_err().code(),
            ErrorCode::IneligibleReplica
        );
    }
}
