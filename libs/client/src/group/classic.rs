//! The classic group protocol (Kafka's JoinGroup and SyncGroup): joining
//! and rejoining a generation, and the leader's job of running the
//! assignor over every member's subscription.

use runnel_common::backoff::Backoff;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;
use runnel_records::assignor::{GroupMember, PartitionAssignor, RebalanceProtocol, assignor_named};
use runnel_records::consumer_protocol::{MemberAssignment, Subscription};
use tokio::time::Instant;

use super::{GroupConsumer, MemberState, coordinator_moved, server};
use crate::error::{ClientError, Result};

impl GroupConsumer {
    /// Notices topics that now match the subscription, and (as leader)
    /// partitions added to assigned topics: either needs a new generation.
    pub(super) async fn check_metadata(&mut self) {
        if self.shared.lock().state != MemberState::Stable
            || self.last_metadata_check.elapsed() < self.config.metadata_max_age
        {
            return;
        }
        self.last_metadata_check = Instant::now();
        let Ok(topics) = self.resolve_topics().await else {
            return;
        };
        let changed_topics = topics.keys().ne(self.topics.keys());
        let changed_counts = self.leader
            && topics
                .iter()
                .any(|(t, n)| self.assigned_from.get(t).is_some_and(|m| m != n));
        if changed_topics || changed_counts {
            tracing::info!(group = %self.config.group_id, "subscribed topics changed; rejoining");
            self.shared.lock().state = MemberState::Rejoin;
        }
    }

    fn assignors(&self) -> Result<Vec<Box<dyn PartitionAssignor>>> {
        self.config
            .assignment_strategy
            .iter()
            .map(|n| {
                assignor_named(n)
                    .ok_or_else(|| ClientError::Invalid(format!("unknown assignor {n:?}")))
            })
            .collect()
    }

    /// Joins (or rejoins) the group and takes up the new assignment.
    pub(super) async fn rejoin(&mut self, poll_deadline: Instant) -> Result<()> {
        let assignors = self.assignors()?;
        if assignors.is_empty() {
            return Err(ClientError::Invalid(
                "partition.assignment.strategy is empty".into(),
            ));
        }
        let state = self.shared.lock().state;
        if state == MemberState::Lost {
            let lost = std::mem::take(&mut self.owned);
            if !lost.is_empty() {
                tracing::warn!(group = %self.config.group_id, partitions = lost.len(), "partitions lost: the group dropped this member");
                if let Some(l) = self.listener.as_mut() {
                    l.on_partitions_lost(&lost);
                }
            }
            self.consumer.assign(Vec::new()).await?;
            let mut s = self.shared.lock();
            if self.config.group_instance_id.is_none() {
                s.member_id.clear();
            }
            s.generation = -1;
        }
        let cooperative = assignors
            .iter()
            .all(|a| a.protocol() == RebalanceProtocol::Cooperative);
        if !cooperative && !self.owned.is_empty() {
            // Eager: give everything up before joining.
            self.revoke(self.owned.clone()).await;
            self.owned.clear();
            self.consumer.assign(Vec::new()).await?;
        }
        // A join may wait for the whole rebalance timeout; give it that long.
        let deadline = poll_deadline.max(Instant::now() + self.config.max_poll_interval);
        self.topics = self.resolve_topics().await?;
        let (member_id, generation) = {
            let s = self.shared.lock();
            (s.member_id.clone(), s.generation)
        };
        let subscription = Subscription {
            topics: self.topics.keys().cloned().collect(),
            user_data: self.config.subscription_user_data.clone(),
            owned_partitions: self.owned.clone(),
            generation,
            rack: None,
        }
        .encode();
        let mut member_id = member_id;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout {
                    what: format!("joining group {}", self.config.group_id),
                    ms: self.config.max_poll_interval.as_millis() as u64,
                });
            }
            let mut c = self.coordinator(deadline).await?;
            let join = c
                .join_group(pb::JoinGroupRequest {
                    group_id: self.config.group_id.clone(),
                    session_timeout_ms: self.config.session_timeout.as_millis() as i32,
                    rebalance_timeout_ms: self.config.max_poll_interval.as_millis() as i32,
                    member_id: member_id.clone(),
                    group_instance_id: self.config.group_instance_id.clone().unwrap_or_default(),
                    protocol_type: "consumer".into(),
                    protocols: assignors
                        .iter()
                        .map(|a| pb::GroupProtocol {
                            name: a.name().into(),
                            metadata: subscription.clone().into(),
                        })
                        .collect(),
                    client_id: self.config.client_id.clone(),
                    member_id_not_required: false,
                })
                .await;
            let join = match join {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    tracing::debug!(%status, "JoinGroup failed; finding the coordinator again");
                    self.forget_coordinator();
                    backoff.wait().await;
                    continue;
                }
            };
            match join.error_code() {
                ErrorCode::None => {}
                ErrorCode::MemberIdRequired => {
                    member_id = join.member_id;
                    continue;
                }
                ErrorCode::UnknownMemberId => {
                    member_id.clear();
                    continue;
                }
                ErrorCode::RebalanceInProgress => continue,
                code if coordinator_moved(code) => {
                    self.forget_coordinator();
                    backoff.wait().await;
                    continue;
                }
                code => return Err(server(code, join.error_message)),
            }
            member_id = join.member_id.clone();
            let leader = join.leader == join.member_id;
            let protocol = join.protocol_name.clone();
            let Some(assignor) = assignors.iter().find(|a| a.name() == protocol) else {
                return Err(server(
                    ErrorCode::InconsistentGroupProtocol,
                    format!("the group chose assignor {protocol:?}, which this member lacks"),
                ));
            };
            let assignments = if leader {
                self.assign(assignor.as_ref(), &join.members).await?
            } else {
                Vec::new()
            };
            let sync = c
                .sync_group(pb::SyncGroupRequest {
                    group_id: self.config.group_id.clone(),
                    generation_id: join.generation_id,
                    member_id: member_id.clone(),
                    group_instance_id: self.config.group_instance_id.clone().unwrap_or_default(),
                    assignments,
                })
                .await;
            let sync = match sync {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    tracing::debug!(%status, "SyncGroup failed; rejoining");
                    self.forget_coordinator();
                    continue;
                }
            };
            match sync.error_code() {
                ErrorCode::None => {}
                ErrorCode::UnknownMemberId => {
                    member_id.clear();
                    continue;
                }
                ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration => continue,
                code if coordinator_moved(code) => {
                    self.forget_coordinator();
                    continue;
                }
                code => return Err(server(code, sync.error_message)),
            }
            let assignment = MemberAssignment::decode(&sync.assignment)
                .map_err(|e| server(ErrorCode::InconsistentGroupProtocol, e.to_string()))?;
            {
                let mut s = self.shared.lock();
                s.member_id = member_id.clone();
                s.generation = join.generation_id;
                s.state = MemberState::Stable;
                s.last_poll = Instant::now();
            }
            self.leader = leader;
            self.protocol = Some(assignor.protocol());
            tracing::info!(
                group = %self.config.group_id,
                member = %member_id,
                generation = join.generation_id,
                partitions = assignment.partitions.len(),
                "joined group"
            );
            self.take_assignment(assignment.partitions, assignor.protocol())
                .await?;
            self.ensure_heartbeat();
            return Ok(());
        }
    }

    /// The leader's job: every member's share.
    async fn assign(
        &mut self,
        assignor: &dyn PartitionAssignor,
        members: &[pb::JoinGroupMember],
    ) -> Result<Vec<pb::SyncGroupAssignment>> {
        let mut group = Vec::with_capacity(members.len());
        let mut topics = BTreeSet::new();
        for m in members {
            let s = Subscription::decode(&m.metadata).unwrap_or_else(|e| {
                tracing::warn!(member = %m.member_id, error = %e, "unreadable subscription; assigning it nothing");
                Subscription::default()
            });
            topics.extend(s.topics.iter().cloned());
            group.push(GroupMember {
                member_id: m.member_id.clone(),
                group_instance_id: (!m.group_instance_id.is_empty())
                    .then(|| m.group_instance_id.clone()),
                topics: s.topics,
                owned: s.owned_partitions,
                generation: s.generation,
            });
        }
        let md = self.cluster.refresh(&[], false).await?;
        let counts: BTreeMap<String, i32> = topics
            .into_iter()
            .filter_map(|t| {
                let n = md.topics.get(&t)?.partitions.len() as i32;
                Some((t, n))
            })
            .collect();
        let assignment = assignor.assign(&counts, &group);
        self.assigned_from = counts;
        Ok(assignment
            .into_iter()
            .map(|(member_id, partitions)| pb::SyncGroupAssignment {
                member_id,
                assignment: MemberAssignment {
                    partitions,
                    user_data: None,
                }
                .encode()
                .into(),
            })
            .collect())
    }
}
