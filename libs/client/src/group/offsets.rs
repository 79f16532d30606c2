//! Committed offsets: commits (sync, async, automatic every
//! `auto.commit.interval.ms`, and on revocation), fetching what the group
//! committed, and lag.

use runnel_common::backoff::Backoff;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{GroupConsumer, MemberState, Membership, coordinator_moved, server};
use crate::admin::Admin;
use crate::cluster::Cluster;
use crate::consumer::TopicPartition;
use crate::error::{ClientError, Result};

impl GroupConsumer {
    pub(super) fn positions_of(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        partitions
            .iter()
            .filter_map(|tp| Some((tp.clone(), self.consumer.position(tp)?)))
            .collect()
    }

    pub(super) async fn maybe_auto_commit(&mut self) {
        if !self.config.enable_auto_commit
            || self.last_auto_commit.elapsed() < self.config.auto_commit_interval
        {
            return;
        }
        self.last_auto_commit = Instant::now();
        if let Err(e) = self.commit_sync().await {
            tracing::warn!(group = %self.config.group_id, error = %e, "auto commit failed");
        }
    }

    /// Commits the position of every partition this member reads, waiting
    /// for the coordinator to store it. Fails with REBALANCE_IN_PROGRESS,
    /// ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID when the generation moved on
    /// (Kafka's `CommitFailedException`): the partitions may be another's now.
    pub async fn commit_sync(&mut self) -> Result<()> {
        let offsets = self.positions_of(&self.owned);
        self.commit_offsets(offsets).await
    }

    /// Commits these offsets (the next offset to read, per partition).
    pub async fn commit_offsets(&self, offsets: Vec<(TopicPartition, i64)>) -> Result<()> {
        let offsets = offsets
            .into_iter()
            .map(|(tp, offset)| (tp, offset, String::new()))
            .collect();
        self.commit_offsets_with_metadata(offsets).await
    }

    /// Commits these offsets, each with a metadata string stored beside it
    /// (Kafka's `OffsetAndMetadata`; [`GroupConsumer::committed_with_metadata`]
    /// reads it back).
    pub async fn commit_offsets_with_metadata(
        &self,
        offsets: Vec<(TopicPartition, i64, String)>,
    ) -> Result<()> {
        commit(
            &self.cluster,
            &self.shared,
            &self.config.group_id,
            self.config.group_instance_id.as_deref().unwrap_or_default(),
            offsets,
            Instant::now() + self.cluster.config().request_timeout,
        )
        .await
    }

    /// Starts committing every position now and returns at once; the
    /// handle gives the outcome.
    pub fn commit_async(&self) -> JoinHandle<Result<()>> {
        let offsets = self.positions_of(&self.owned);
        let (cluster, shared) = (Arc::clone(&self.cluster), Arc::clone(&self.shared));
        let group = self.config.group_id.clone();
        let instance = self.config.group_instance_id.clone().unwrap_or_default();
        let deadline = Instant::now() + self.cluster.config().request_timeout;
        let offsets = offsets
            .into_iter()
            .map(|(tp, offset)| (tp, offset, String::new()))
            .collect();
        tokio::spawn(async move {
            commit(&cluster, &shared, &group, &instance, offsets, deadline).await
        })
    }

    /// The group's committed offsets for `partitions` (None: nothing committed).
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<i64>>> {
        Ok(self
            .committed_with_metadata(partitions)
            .await?
            .into_iter()
            .map(|(tp, c)| (tp, c.map(|(offset, _)| offset)))
            .collect())
    }

    /// The group's committed offsets for `partitions`, each with the
    /// metadata string committed with it (None: nothing committed).
    pub async fn committed_with_metadata(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<(i64, String)>>> {
        if partitions.is_empty() {
            return Ok(HashMap::new());
        }
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let request = pb::OffsetFetchRequest {
            group_id: self.config.group_id.clone(),
            topics: by_topic
                .into_iter()
                .map(|(t, ps)| pb::OffsetFetchTopic {
                    topic: t.to_owned(),
                    partitions: ps,
                })
                .collect(),
            // A read_committed consumer must not start from an offset an
            // open transaction may still replace (Kafka's require_stable).
            require_stable: self.config.consumer.isolation_level
                == crate::consumer::IsolationLevel::ReadCommitted,
        };
        let deadline = Instant::now() + self.cluster.config().request_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let mut c = self.coordinator(deadline).await?;
            let error = match c.offset_fetch(request.clone()).await {
                Ok(r) => {
                    let r = r.into_inner();
                    let unstable = r
                        .partitions
                        .iter()
                        .any(|p| p.error_code() == ErrorCode::UnstableOffsetCommit);
                    match r.error_code() {
                        ErrorCode::None if unstable => {
                            // The transaction ends soon: ask again (as Kafka's consumer).
                            if Instant::now() >= deadline {
                                return Err(server(
                                    ErrorCode::UnstableOffsetCommit,
                                    "an open transaction still holds an offset commit",
                                ));
                            }
                            backoff.wait().await;
                            continue;
                        }
                        ErrorCode::None => {
                            return Ok(r
                                .partitions
                                .into_iter()
                                .map(|p| {
                                    let committed =
                                        (p.offset >= 0).then_some((p.offset, p.metadata));
                                    (TopicPartition::new(p.topic, p.partition), committed)
                                })
                                .collect());
                        }
                        code if coordinator_moved(code) => server(code, r.error_message),
                        code => return Err(server(code, r.error_message)),
                    }
                }
                Err(status) => ClientError::from_status("coordinator", status),
            };
            self.forget_coordinator();
            if Instant::now() >= deadline {
                return Err(error);
            }
            backoff.wait().await;
        }
    }

    /// How far behind the log end each of this member's partitions is
    /// (log end offset minus position).
    pub async fn lag(&self) -> Result<Vec<(TopicPartition, i64)>> {
        let admin = Admin::with_cluster(Arc::clone(&self.cluster));
        let mut out = Vec::with_capacity(self.owned.len());
        for tp in &self.owned {
            let (_, end) = admin.offsets(&tp.topic, tp.partition).await?;
            let position = self.consumer.position(tp).unwrap_or(end);
            out.push((tp.clone(), (end - position).max(0)));
        }
        Ok(out)
    }
}

async fn commit(
    cluster: &Cluster,
    shared: &Mutex<Membership>,
    group: &str,
    instance: &str,
    offsets: Vec<(TopicPartition, i64, String)>,
    deadline: Instant,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        let (member_id, generation, addr) = {
            let s = shared.lock();
            (s.member_id.clone(), s.generation, s.coordinator.clone())
        };
        let addr = match addr {
            Some(a) => a,
            None => match cluster.find_coordinator(group).await {
                Ok((_, a)) => {
                    shared.lock().coordinator = Some(a.clone());
                    a
                }
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    backoff.wait().await;
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let request = pb::OffsetCommitRequest {
            group_id: group.to_owned(),
            generation_id: generation,
            member_id,
            group_instance_id: instance.to_owned(),
            partitions: offsets
                .iter()
                .map(|(tp, offset, metadata)| pb::OffsetCommitPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: *offset,
                    leader_epoch: -1,
                    metadata: metadata.clone(),
                })
                .collect(),
        };
        let result = cluster.coordinator_at(&addr)?.offset_commit(request).await;
        let error = match result {
            Ok(r) => {
                let failed = r
                    .into_inner()
                    .partitions
                    .into_iter()
                    .find(|p| p.error_code() != ErrorCode::None);
                match failed {
                    None => return Ok(()),
                    Some(p) if coordinator_moved(p.error_code()) => {
                        server(p.error_code(), p.error_message)
                    }
                    // KIP-848: the member's epoch moved on while the commit
                    // was in flight; the same offsets go again with the new
                    // one, once the heartbeat that moved it has been read
                    // (the coordinator may answer the commit first).
                    Some(p)
                        if p.error_code() == ErrorCode::StaleMemberEpoch
                            && Instant::now() < deadline =>
                    {
                        if shared.lock().generation == generation {
                            backoff.wait().await;
                        }
                        continue;
                    }
                    Some(p) => {
                        let code = p.error_code();
                        if matches!(
                            code,
                            ErrorCode::RebalanceInProgress
                                | ErrorCode::IllegalGeneration
                                | ErrorCode::UnknownMemberId
                        ) {
                            let mut s = shared.lock();
                            if s.state == MemberState::Stable {
                                s.state = if code == ErrorCode::RebalanceInProgress {
                                    MemberState::Rejoin
                                } else {
                                    MemberState::Lost
                                };
                            }
                        }
                        return Err(server(
                            code,
                            format!(
                                "commit of {}-{} refused: {}",
                                p.topic, p.partition, p.error_message
                            ),
                        ));
                    }
                }
            }
            Err(status) => ClientError::from_status(&addr, status),
        };
        shared.lock().coordinator = None;
        if Instant::now() >= deadline {
            return Err(error);
        }
        backoff.wait().await;
    }
}
