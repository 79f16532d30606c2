//! Consumer-group administration on [`Admin`]: list, describe, read and
//! reset committed offsets, delete (Kafka's `kafka-consumer-groups.sh`).

use runnel_common::backoff::Backoff;
use std::collections::BTreeMap;
use std::time::Duration;

use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;
use runnel_records::consumer_protocol::{MemberAssignment, Subscription};

use crate::admin::Admin;
use crate::cluster::Coordinator;
use crate::consumer::TopicPartition;
use crate::error::{ClientError, Result};
use crate::group::coordinator_moved;

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    /// Group id.
    pub group_id: String,
    /// Kafka's state name: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead.
    pub state: String,
    /// The coordinator serving it.
    pub coordinator_id: i32,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberDescription {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`, if static.
    pub group_instance_id: Option<String>,
    /// `client.id`.
    pub client_id: String,
    /// The partitions it reads.
    pub partitions: Vec<TopicPartition>,
    /// The user data of its subscription (what an application puts there
    /// for the others to read, e.g. Kafka Streams' `application.server`).
    pub user_data: Option<Vec<u8>>,
}

/// A group's state and members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// Kafka's state name (Dead for a group that does not exist).
    pub state: String,
    /// The assignor in use.
    pub protocol: String,
    /// The generation.
    pub generation: i32,
    /// The coordinator serving it.
    pub coordinator_id: i32,
    /// Members.
    pub members: Vec<GroupMemberDescription>,
}

fn server(code: ErrorCode, message: String) -> ClientError {
    ClientError::Server { code, message }
}

impl Admin {
    /// Runs `call` against `group`'s coordinator, finding it again while it
    /// moves or loads (up to the request timeout).
    async fn with_coordinator<T, F, Fut>(&self, group: &str, mut call: F) -> Result<(i32, T)>
    where
        F: FnMut(Coordinator) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.cluster.config().request_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let attempt = async {
                let (id, addr) = self.cluster.find_coordinator(group).await?;
                let client = self.cluster.coordinator_at(&addr)?;
                Ok::<_, ClientError>((id, call(client).await?))
            }
            .await;
            match attempt {
                Ok(r) => return Ok(r),
                Err(e) if e.is_retriable() && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, group, "group coordinator busy; retrying");
                    backoff.wait().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Every group of every live coordinator, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<ListedGroup>> {
        let md = self.cluster.refresh(&[], false).await?;
        let mut out = Vec::new();
        for (&id, addr) in &md.coordinators {
            let mut c = self.cluster.coordinator_at(addr)?;
            let r = c
                .list_groups(pb::ListGroupsRequest::default())
                .await
                .map_err(|s| ClientError::from_status(addr, s))?
                .into_inner();
            out.extend(r.groups.into_iter().map(|g| ListedGroup {
                group_id: g.group_id,
                state: g.state,
                coordinator_id: id,
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// A group's state, protocol, generation and members with their partitions.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let (coordinator_id, g) = self
            .with_coordinator(group, |mut c| async move {
                let r = c
                    .describe_groups(pb::DescribeGroupsRequest {
                        group_ids: vec![group.to_owned()],
                    })
                    .await
                    .map_err(|s| ClientError::from_status("coordinator", s))?
                    .into_inner();
                let g = r.groups.into_iter().next().ok_or_else(|| {
                    server(ErrorCode::UnknownServerError, "empty DescribeGroups".into())
                })?;
                match g.error_code() {
                    ErrorCode::None => Ok(g),
                    code => Err(server(code, g.error_message)),
                }
            })
            .await?;
        Ok(GroupDescription {
            group_id: g.group_id,
            state: g.state,
            protocol: g.protocol,
            generation: g.generation_id,
            coordinator_id,
            members: g
                .members
                .into_iter()
                .map(|m| GroupMemberDescription {
                    member_id: m.member_id,
                    group_instance_id: (!m.group_instance_id.is_empty())
                        .then_some(m.group_instance_id),
                    client_id: m.client_id,
                    partitions: MemberAssignment::decode(&m.assignment)
                        .map(|a| a.partitions)
                        .unwrap_or_default(),
                    user_data: Subscription::decode(&m.metadata)
                        .ok()
                        .and_then(|s| s.user_data),
                })
                .collect(),
        })
    }

    /// Every offset `group` has committed, by partition.
    pub async fn group_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, i64>> {
        let (_, offsets) = self
            .with_coordinator(group, |mut c| async move {
                let r = c
                    .offset_fetch(pb::OffsetFetchRequest {
                        group_id: group.to_owned(),
                        topics: Vec::new(),
                        require_stable: false,
                    })
                    .await
                    .map_err(|s| ClientError::from_status("coordinator", s))?
                    .into_inner();
                match r.error_code() {
                    ErrorCode::None => Ok(r
                        .partitions
                        .into_iter()
                        .filter(|p| p.offset >= 0)
                        .map(|p| (TopicPartition::new(p.topic, p.partition), p.offset))
                        .collect()),
                    code => Err(server(code, r.error_message)),
                }
            })
            .await?;
        Ok(offsets)
    }

    /// Sets `group`'s committed offsets (the group must have no members:
    /// Kafka's `--reset-offsets --execute`).
    pub async fn alter_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let partitions: Vec<pb::OffsetCommitPartition> = offsets
            .iter()
            .map(|(tp, offset)| pb::OffsetCommitPartition {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: *offset,
                leader_epoch: -1,
                metadata: String::new(),
            })
            .collect();
        self.with_coordinator(group, |mut c| {
            let partitions = partitions.clone();
            async move {
                let r = c
                    .offset_commit(pb::OffsetCommitRequest {
                        group_id: group.to_owned(),
                        generation_id: -1,
                        member_id: String::new(),
                        group_instance_id: String::new(),
                        partitions,
                    })
                    .await
                    .map_err(|s| ClientError::from_status("coordinator", s))?
                    .into_inner();
                match r.partitions.into_iter().find(|p| p.error_code() != ErrorCode::None) {
                    None => Ok(()),
                    Some(p) if coordinator_moved(p.error_code()) => Err(server(p.error_code(), p.error_message)),
                    // A classic group with members answers ILLEGAL_GENERATION,
                    // a KIP-848 one UNKNOWN_MEMBER_ID (as Kafka).
                    Some(p) if matches!(p.error_code(), ErrorCode::IllegalGeneration | ErrorCode::UnknownMemberId) => Err(server(
                        ErrorCode::NonEmptyGroup,
                        format!("group {group} has active members: stop them before resetting its offsets"),
                    )),
                    Some(p) => Err(server(p.error_code(), p.error_message)),
                }
            }
        })
        .await?;
        Ok(())
    }

    /// Deletes a group without members, with its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        self.with_coordinator(group, |mut c| async move {
            let r = c
                .delete_groups(pb::DeleteGroupsRequest {
                    group_ids: vec![group.to_owned()],
                })
                .await
                .map_err(|s| ClientError::from_status("coordinator", s))?
                .into_inner();
            let g = r.groups.into_iter().next().ok_or_else(|| {
                server(ErrorCode::UnknownServerError, "empty DeleteGroups".into())
            })?;
            match g.error_code() {
                ErrorCode::None => Ok(()),
                code => Err(server(code, g.error_message)),
            }
        })
        .await?;
        Ok(())
    }
}
