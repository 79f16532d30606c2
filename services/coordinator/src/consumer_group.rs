//! One consumer group under the next-generation protocol (KIP-848): one
//! `ConsumerGroupHeartbeat` call instead of JoinGroup, SyncGroup and
//! Heartbeat, with the assignment computed here rather than by a leader.
//!
//! The group has an epoch, bumped whenever membership, subscriptions or
//! the subscribed topics' partition counts change; the server assignor
//! (`uniform` or `range`) then computes a target assignment for that epoch.
//! Each member moves towards its target on its own, without stopping the
//! others: first it gives up what it must (it keeps its epoch and is told
//! to revoke), and once its heartbeat shows it no longer owns those, it
//! takes the new epoch and whichever of its new partitions no other member
//! still holds; the rest follow as their previous owners release them. So
//! no partition is ever held by two members. Pure and driven by the
//! caller's clock, like [`crate::group`].

use std::collections::{BTreeMap, BTreeSet};

use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1::{ConsumerGroupValue, ConsumerMemberValue, TopicPartitionRef};
use runnel_records::TopicPartition;
use runnel_records::assignor::{GroupMember, PartitionAssignor, RangeAssignor, UniformAssignor};

use crate::group::Ms;

fn refs<'a>(tps: impl IntoIterator<Item = &'a TopicPartition>) -> Vec<TopicPartitionRef> {
    tps.into_iter()
        .map(|tp| TopicPartitionRef {
            topic: tp.topic.clone(),
            partition: tp.partition,
        })
        .collect()
}

fn from_refs(refs: &[TopicPartitionRef]) -> BTreeSet<TopicPartition> {
    refs.iter()
        .map(|r| TopicPartition::new(r.topic.clone(), r.partition))
        .collect()
}

/// The member epoch a member joins with.
pub const JOIN_EPOCH: i32 = 0;
/// The member epoch a member leaves with.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch a static member leaves with, keeping its place for
/// the session timeout.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// Group-wide settings (Kafka's `group.consumer.*` configs).
#[derive(Debug, Clone)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: Ms,
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: Ms,
    /// `group.consumer.max.size`.
    pub max_size: usize,
    /// The assignor used when members name none (`uniform`).
    pub default_assignor: String,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: usize::MAX,
            default_assignor: "uniform".into(),
        }
    }
}

/// The server assignors, by name.
pub fn server_assignor(name: &str) -> Option<Box<dyn PartitionAssignor>> {
    match name {
        "uniform" => Some(Box::new(UniformAssignor)),
        "range" => Some(Box::new(RangeAssignor)),
        _ => None,
    }
}

/// A `ConsumerGroupHeartbeat` request. Fields that are `None` are
/// unchanged since the member's previous heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// The member id; a joining member (epoch 0) without one gets `fresh_member_id`.
    pub member_id: String,
    /// What the member was given to use if it has no id yet.
    pub fresh_member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member to leave; otherwise
    /// the epoch the member is in.
    pub member_epoch: i32,
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// How long the member may take to revoke partitions.
    pub rebalance_timeout_ms: Option<Ms>,
    /// Topics subscribed to.
    pub subscribed_topics: Option<Vec<String>>,
    /// `group.remote.assignor`.
    pub server_assignor: Option<String>,
    /// The partitions the member owns now.
    pub owned: Option<Vec<TopicPartition>>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// NONE, or why the heartbeat was refused.
    pub error: ErrorCode,
    /// The member's id.
    pub member_id: String,
    /// The member's epoch now (-1 after leaving).
    pub member_epoch: i32,
    /// How often to heartbeat.
    pub heartbeat_interval_ms: Ms,
    /// The partitions the member is to own now (it revokes anything else).
    pub assignment: Vec<TopicPartition>,
}

impl HeartbeatResponse {
    fn error(error: ErrorCode, member_id: &str, interval: Ms) -> Self {
        HeartbeatResponse {
            error,
            member_id: member_id.to_owned(),
            member_epoch: LEAVE_EPOCH,
            heartbeat_interval_ms: interval,
            assignment: Vec::new(),
        }
    }
}

/// Where a member is on its way to its target assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// It owns its target (for its epoch).
    Stable,
    /// It must first give up `revoking`; it keeps its previous epoch.
    UnrevokedPartitions,
    /// It has the new epoch and waits for partitions others still hold.
    UnreleasedPartitions,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// Its epoch.
    pub epoch: i32,
    /// Its epoch before the last bump (a heartbeat answered with the new
    /// epoch may be lost; the member then retries with this one).
    pub previous_epoch: i32,
    /// Where it is on the way to its target.
    pub state: MemberState,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// The assignor it asked for.
    pub server_assignor: Option<String>,
    /// What it owns now, as far as the coordinator has handed out.
    pub assigned: BTreeSet<TopicPartition>,
    /// What it was told to give up and has not yet confirmed.
    pub revoking: BTreeSet<TopicPartition>,
    /// Last heartbeat.
    pub last_heartbeat: Ms,
    /// How long it may take to revoke.
    pub rebalance_timeout_ms: Ms,
    /// When revoking started (it is fenced if it takes longer than its rebalance timeout).
    pub revoking_since: Ms,
    /// A static member that left with [`STATIC_LEAVE_EPOCH`]: it keeps its
    /// partitions for the session timeout, and a new member with its
    /// instance id may take its place.
    pub released: bool,
}

/// A consumer group under KIP-848.
#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    config: ConsumerGroupConfig,
    epoch: i32,
    members: BTreeMap<String, Member>,
    /// Partition counts of the subscribed topics the target was computed from.
    counts: BTreeMap<String, i32>,
    /// The target assignment and the group epoch it was computed for.
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    target_epoch: i32,
}

impl ConsumerGroup {
    /// An empty group.
    pub fn new(config: ConsumerGroupConfig) -> ConsumerGroup {
        ConsumerGroup {
            config,
            epoch: 0,
            members: BTreeMap::new(),
            counts: BTreeMap::new(),
            target: BTreeMap::new(),
            target_epoch: 0,
        }
    }

    /// The group as its `__consumer_offsets` record stores it.
    pub fn value(&self) -> ConsumerGroupValue {
        ConsumerGroupValue {
            epoch: self.epoch,
            target_epoch: self.target_epoch,
            counts: self.counts.clone().into_iter().collect(),
            members: self
                .members
                .iter()
                .map(|(id, m)| ConsumerMemberValue {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone().unwrap_or_default(),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    state: match m.state {
                        MemberState::Stable => 0,
                        MemberState::UnrevokedPartitions => 1,
                        MemberState::UnreleasedPartitions => 2,
                    },
                    topics: m.topics.clone(),
                    server_assignor: m.server_assignor.clone().unwrap_or_default(),
                    assigned: refs(&m.assigned),
                    revoking: refs(&m.revoking),
                    target: refs(self.target.get(id).into_iter().flatten()),
                    rebalance_timeout_ms: m.rebalance_timeout_ms as i32,
                })
                .collect(),
        }
    }

    /// A group as its last stored state left it (a coordinator taking over
    /// its partition); members' sessions start now.
    pub fn restore(config: ConsumerGroupConfig, value: &ConsumerGroupValue, now: Ms) -> Self {
        let mut g = ConsumerGroup::new(config);
        g.epoch = value.epoch;
        g.target_epoch = value.target_epoch;
        g.counts = value.counts.clone().into_iter().collect();
        for m in &value.members {
            g.target.insert(m.member_id.clone(), from_refs(&m.target));
            g.members.insert(
                m.member_id.clone(),
                Member {
                    instance_id: (!m.instance_id.is_empty()).then(|| m.instance_id.clone()),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    state: match m.state {
                        1 => MemberState::UnrevokedPartitions,
                        2 => MemberState::UnreleasedPartitions,
                        _ => MemberState::Stable,
                    },
                    topics: m.topics.clone(),
                    server_assignor: (!m.server_assignor.is_empty())
                        .then(|| m.server_assignor.clone()),
                    assigned: from_refs(&m.assigned),
                    revoking: from_refs(&m.revoking),
                    last_heartbeat: now,
                    rebalance_timeout_ms: Ms::from(m.rebalance_timeout_ms),
                    revoking_since: now,
                    released: false,
                },
            );
        }
        g
    }

    /// The group epoch.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// The epoch of the current target assignment.
    pub fn target_epoch(&self) -> i32 {
        self.target_epoch
    }

    /// The members.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    /// The target assignment of `member` (empty if none).
    pub fn target_of(&self, member: &str) -> Vec<TopicPartition> {
        self.target
            .get(member)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every topic some member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.topics.iter().cloned())
            .collect()
    }

    /// Kafka's state name: Empty, Assigning, Reconciling or Stable.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.target_epoch < self.epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.target_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Handles a heartbeat at `now`; `counts` gives the partition count of
    /// every topic that exists (the caller's metadata).
    pub fn heartbeat(
        &mut self,
        req: Heartbeat,
        counts: &BTreeMap<String, i32>,
        now: Ms,
    ) -> HeartbeatResponse {
        let interval = self.config.heartbeat_interval_ms;
        if let Some(a) = &req.server_assignor
            && server_assignor(a).is_none()
        {
            return HeartbeatResponse::error(
                ErrorCode::UnsupportedAssignor,
                &req.member_id,
                interval,
            );
        }
        let id = match req.member_epoch {
            // A static member's place (and partitions) wait for it for the
            // session timeout; anyone else's go at once.
            STATIC_LEAVE_EPOCH
                if self
                    .members
                    .get(&req.member_id)
                    .is_some_and(|m| m.instance_id.is_some()) =>
            {
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.released = true;
                }
                return HeartbeatResponse {
                    error: ErrorCode::None,
                    member_id: req.member_id,
                    member_epoch: req.member_epoch,
                    heartbeat_interval_ms: interval,
                    assignment: Vec::new(),
                };
            }
            LEAVE_EPOCH | STATIC_LEAVE_EPOCH => {
                if self.members.remove(&req.member_id).is_some() {
                    self.epoch += 1;
                }
                return HeartbeatResponse {
                    error: ErrorCode::None,
                    member_id: req.member_id,
                    member_epoch: req.member_epoch,
                    heartbeat_interval_ms: interval,
                    assignment: Vec::new(),
                };
            }
            JOIN_EPOCH => match self.join(&req, now) {
                Ok(id) => id,
                Err(e) => return HeartbeatResponse::error(e, &req.member_id, interval),
            },
            epoch => {
                let Some(m) = self.members.get(&req.member_id) else {
                    // Another member took this one's instance id: Kafka
                    // fences the old one by its instance id.
                    let replaced = req.instance_id.as_ref().is_some_and(|i| {
                        self.members
                            .values()
                            .any(|m| m.instance_id.as_ref() == Some(i))
                    });
                    return HeartbeatResponse::error(
                        if replaced {
                            ErrorCode::FencedInstanceId
                        } else {
                            ErrorCode::UnknownMemberId
                        },
                        &req.member_id,
                        interval,
                    );
                };
                // A lost answer: the member retries with its previous epoch,
                // owning only what it had then.
                let retried = epoch == m.previous_epoch
                    && req
                        .owned
                        .as_ref()
                        .is_some_and(|o| o.iter().all(|tp| m.assigned.contains(tp)));
                if epoch != m.epoch && !retried {
                    return HeartbeatResponse::error(
                        ErrorCode::FencedMemberEpoch,
                        &req.member_id,
                        interval,
                    );
                }
                req.member_id.clone()
            }
        };
        let Some(m) = self.members.get_mut(&id) else {
            return HeartbeatResponse::error(ErrorCode::UnknownMemberId, &id, interval);
        };
        m.last_heartbeat = now;
        if let Some(t) = req.rebalance_timeout_ms {
            m.rebalance_timeout_ms = t;
        }
        let mut changed = false;
        if let Some(mut topics) = req.subscribed_topics.clone() {
            topics.sort();
            topics.dedup();
            if topics != m.topics {
                m.topics = topics;
                changed = true;
            }
        }
        if req.server_assignor.is_some() && req.server_assignor != m.server_assignor {
            m.server_assignor = req.server_assignor.clone();
            changed = true;
        }
        if let Some(owned) = &req.owned {
            // What it confirms it gave up is free for others.
            let owned: BTreeSet<&TopicPartition> = owned.iter().collect();
            m.revoking.retain(|tp| owned.contains(tp));
        }
        let subscribed: BTreeMap<String, i32> = self
            .subscribed_topics()
            .into_iter()
            .filter_map(|t| counts.get(&t).map(|n| (t, *n)))
            .collect();
        if subscribed != self.counts {
            self.counts = subscribed;
            changed = true;
        }
        if changed {
            self.epoch += 1;
        }
        self.compute_target();
        self.reconcile(&id, now);
        self.respond(&id)
    }

    fn join(&mut self, req: &Heartbeat, now: Ms) -> Result<String, ErrorCode> {
        // A static member coming back takes its old place (and partitions),
        // once the member holding its instance id has left with
        // STATIC_LEAVE_EPOCH; while that one is active, the instance id is
        // not free (Kafka's UNRELEASED_INSTANCE_ID).
        if let Some(instance) = &req.instance_id
            && let Some((old, released)) = self
                .members
                .iter()
                .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
                .map(|(id, m)| (id.clone(), m.released))
        {
            let id = if req.member_id.is_empty() {
                req.fresh_member_id.clone()
            } else {
                req.member_id.clone()
            };
            if old != id && !released {
                return Err(ErrorCode::UnreleasedInstanceId);
            }
            if let Some(m) = self.members.get_mut(&old) {
                m.released = false;
            }
            if old != id
                && let Some(mut m) = self.members.remove(&old)
            {
                m.last_heartbeat = now;
                self.members.insert(id.clone(), m);
                if let Some(t) = self.target.remove(&old) {
                    self.target.insert(id.clone(), t);
                }
            }
            return Ok(id);
        }
        // Rejoining with a known id: it lost everything it had.
        if self.members.remove(&req.member_id).is_some() {
            self.epoch += 1;
        }
        if self.members.len() >= self.config.max_size {
            return Err(ErrorCode::GroupMaxSizeReached);
        }
        let id = if req.member_id.is_empty() {
            req.fresh_member_id.clone()
        } else {
            req.member_id.clone()
        };
        if id.is_empty() {
            return Err(ErrorCode::InvalidRequest);
        }
        self.members.insert(
            id.clone(),
            Member {
                instance_id: req.instance_id.clone(),
                epoch: JOIN_EPOCH,
                previous_epoch: JOIN_EPOCH,
                state: MemberState::Stable,
                topics: Vec::new(),
                server_assignor: None,
                assigned: BTreeSet::new(),
                revoking: BTreeSet::new(),
                last_heartbeat: now,
                rebalance_timeout_ms: req.rebalance_timeout_ms.unwrap_or(300_000),
                revoking_since: now,
                released: false,
            },
        );
        self.epoch += 1;
        Ok(id)
    }

    /// The server assignor in use: the first member's choice, else the default.
    pub fn assignor_name(&self) -> String {
        self.members
            .values()
            .find_map(|m| m.server_assignor.clone())
            .unwrap_or_else(|| self.config.default_assignor.clone())
    }

    /// Recomputes the target when the group epoch moved past it.
    fn compute_target(&mut self) {
        if self.target_epoch == self.epoch {
            return;
        }
        let name = self.assignor_name();
        let assignor = server_assignor(&name)
            .or_else(|| server_assignor("uniform"))
            .unwrap_or_else(|| Box::new(UniformAssignor));
        let members: Vec<GroupMember> = self
            .members
            .iter()
            .map(|(id, m)| GroupMember {
                member_id: id.clone(),
                group_instance_id: m.instance_id.clone(),
                topics: m.topics.clone(),
                owned: m.assigned.iter().cloned().collect(),
                generation: m.epoch,
            })
            .collect();
        self.target = assignor
            .assign(&self.counts, &members)
            .into_iter()
            .map(|(id, ps)| (id, ps.into_iter().collect()))
            .collect();
        self.target_epoch = self.epoch;
    }

    /// Whether another member than `id` holds or is still giving up `tp`.
    fn held_elsewhere(&self, id: &str, tp: &TopicPartition) -> bool {
        self.members
            .iter()
            .any(|(other, m)| other != id && (m.assigned.contains(tp) || m.revoking.contains(tp)))
    }

    /// Moves member `id` as far towards its target as is safe now.
    fn reconcile(&mut self, id: &str, now: Ms) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let target_epoch = self.target_epoch;
        let Some(m) = self.members.get(id) else {
            return;
        };
        if !m.revoking.is_empty() {
            // Still giving up partitions: nothing new until it confirms.
            return;
        }
        let to_revoke: BTreeSet<TopicPartition> = m.assigned.difference(&target).cloned().collect();
        if !to_revoke.is_empty() {
            if let Some(m) = self.members.get_mut(id) {
                m.assigned = m.assigned.intersection(&target).cloned().collect();
                m.revoking = to_revoke;
                m.revoking_since = now;
                m.state = MemberState::UnrevokedPartitions;
            }
            return;
        }
        let free: Vec<TopicPartition> = target
            .iter()
            .filter(|tp| !m.assigned.contains(*tp) && !self.held_elsewhere(id, tp))
            .cloned()
            .collect();
        let waiting = target
            .iter()
            .any(|tp| !m.assigned.contains(tp) && !free.contains(tp));
        if let Some(m) = self.members.get_mut(id) {
            m.assigned.extend(free);
            if m.epoch != target_epoch {
                m.previous_epoch = m.epoch;
                m.epoch = target_epoch;
            }
            m.state = if waiting {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            };
        }
    }

    fn respond(&self, id: &str) -> HeartbeatResponse {
        let m = &self.members[id];
        HeartbeatResponse {
            error: ErrorCode::None,
            member_id: id.to_owned(),
            member_epoch: m.epoch,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            assignment: m.assigned.iter().cloned().collect(),
        }
    }

    fn overdue(&self, m: &Member, now: Ms) -> bool {
        now - m.last_heartbeat > self.config.session_timeout_ms
            || (!m.revoking.is_empty() && now - m.revoking_since > m.rebalance_timeout_ms)
    }

    /// Whether [`Self::tick`] would drop a member now.
    pub fn has_overdue(&self, now: Ms) -> bool {
        self.members.values().any(|m| self.overdue(m, now))
    }

    /// Removes members whose session expired or who took longer than their
    /// rebalance timeout to revoke; returns their ids.
    pub fn tick(&mut self, now: Ms) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| self.overdue(m, now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.members.remove(id);
        }
        if !gone.is_empty() {
            self.epoch += 1;
        }
        gone
    }

    /// Whether an offset commit from `member_id` at `epoch` is accepted:
    /// only in the member's current epoch (STALE_MEMBER_EPOCH otherwise),
    /// or with epoch -1 while the group is empty.
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> Result<(), ErrorCode> {
        // A consumer that does not use the group (assign() + commit(), or
        // the admin client) commits with epoch -1: Kafka takes it while the
        // group has no members, whatever member id it names.
        if epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        match self.members.get(member_id) {
            None => Err(ErrorCode::UnknownMemberId),
            Some(m) if m.epoch != epoch => Err(ErrorCode::StaleMemberEpoch),
            Some(_) => Ok(()),
        }
    }
}
