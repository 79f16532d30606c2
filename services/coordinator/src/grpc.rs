//! The coordinator's gRPC API over a [`GroupManager`]: translation only.
//! Errors travel in each response's `error_code`, as in Kafka's group APIs.

use std::sync::Arc;

use runnel_client::Cluster;
use runnel_client::partition_set::{from_partition_set, to_partition_set};
use runnel_common::acl::{CLUSTER_NAME, Operation, ResourceType};
use runnel_common::grpc_auth::{GrpcAuth, GrpcCaller};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;
use runnel_proto::coordinator::v1::coordinator_server::Coordinator;
use tonic::{Request, Response, Status};

use crate::consumer_group::Heartbeat;
use crate::group::JoinRequest;
use crate::image::FollowedImage;
use crate::manager::{GroupManager, OffsetCommit};
use crate::transaction::ExpectedProducer;
use crate::transactions::{Refusal, TxnManager};

/// The gRPC face of a [`GroupManager`] and a [`TxnManager`].
#[derive(Debug, Clone)]
pub struct CoordinatorService {
    manager: Arc<GroupManager>,
    txns: Arc<TxnManager>,
    cluster: Arc<Cluster>,
    auth: GrpcAuth<FollowedImage>,
}

impl CoordinatorService {
    /// Serves `manager` and `txns`; FindCoordinator asks the brokers of
    /// `cluster`; `auth` decides who may call.
    pub fn new(
        manager: Arc<GroupManager>,
        txns: Arc<TxnManager>,
        cluster: Arc<Cluster>,
        auth: GrpcAuth<FollowedImage>,
    ) -> Self {
        CoordinatorService {
            manager,
            txns,
            cluster,
            auth,
        }
    }

    /// The caller of `request`, authenticated.
    fn caller<T>(&self, request: &Request<T>, api: &'static str) -> Result<Caller, Status> {
        self.auth.caller(request, api)
    }
}

type Caller = GrpcCaller<FollowedImage>;

/// `caller` may do `operation` on every topic named, else the refusal
/// naming the first it may not.
fn check_topics<'a>(
    caller: &Caller,
    operation: Operation,
    topics: impl IntoIterator<Item = &'a str>,
) -> Result<(), Status> {
    if !caller.enabled() {
        return Ok(());
    }
    for topic in topics {
        caller.check(operation, ResourceType::Topic, topic)?;
    }
    Ok(())
}

/// The commits an OffsetCommit or TxnOffsetCommit asks for.
fn commits_of(partitions: &[pb::OffsetCommitPartition]) -> Vec<OffsetCommit> {
    partitions
        .iter()
        .map(|p| OffsetCommit {
            topic: p.topic.clone(),
            partition: p.partition,
            offset: p.offset,
            leader_epoch: p.leader_epoch,
            metadata: p.metadata.clone(),
        })
        .collect()
}

/// Every partition of a commit answered with `code`.
fn commit_results(
    partitions: Vec<pb::OffsetCommitPartition>,
    code: ErrorCode,
) -> Vec<pb::OffsetCommitPartitionResult> {
    partitions
        .into_iter()
        .map(|p| pb::OffsetCommitPartitionResult {
            topic: p.topic,
            partition: p.partition,
            error_code: code as i32,
            error_message: message(code),
        })
        .collect()
}

/// A producer epoch from the wire (an int16 in Kafka).
fn epoch(e: i32) -> Result<i16, Refusal> {
    i16::try_from(e).map_err(|_| {
        (
            ErrorCode::InvalidRequest,
            format!("producer epoch {e} does not fit an int16"),
        )
    })
}

fn instance(id: &str) -> Option<&str> {
    (!id.is_empty()).then_some(id)
}

fn check_group_id(id: &str) -> Result<(), (ErrorCode, String)> {
    if id.is_empty() {
        return Err((ErrorCode::InvalidGroupId, "the group id is empty".into()));
    }
    Ok(())
}

fn message(code: ErrorCode) -> String {
    if code == ErrorCode::None {
        String::new()
    } else {
        code.as_str_name().to_owned()
    }
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn init_producer_id(
        &self,
        request: Request<pb::TxnInitProducerIdRequest>,
    ) -> Result<Response<pb::TxnInitProducerIdResponse>, Status> {
        self.caller(&request, "InitProducerId")?.check(
            Operation::Write,
            ResourceType::TransactionalId,
            &request.get_ref().transactional_id,
        )?;
        let req = request.into_inner();
        let result = async {
            let expected = (req.producer_id >= 0).then_some(ExpectedProducer {
                producer_id: req.producer_id,
                producer_epoch: epoch(req.producer_epoch)?,
            });
            self.txns
                .init_producer_id(
                    &req.transactional_id,
                    req.transaction_timeout_ms,
                    expected,
                    (req.new_producer_id >= 0).then_some(req.new_producer_id),
                )
                .await
        }
        .await;
        Ok(Response::new(match result {
            Ok((producer_id, producer_epoch)) => pb::TxnInitProducerIdResponse {
                producer_id,
                producer_epoch: i32::from(producer_epoch),
                ..Default::default()
            },
            Err((code, message)) => pb::TxnInitProducerIdResponse {
                error_code: code as i32,
                error_message: message,
                producer_id: -1,
                producer_epoch: -1,
            },
        }))
    }

    async fn add_partitions_to_txn(
        &self,
        request: Request<pb::AddPartitionsToTxnRequest>,
    ) -> Result<Response<pb::AddPartitionsToTxnResponse>, Status> {
        {
            let caller = self.caller(&request, "AddPartitionsToTxn")?;
            let req = request.get_ref();
            caller.check(
                Operation::Write,
                ResourceType::TransactionalId,
                &req.transactional_id,
            )?;
            check_topics(
                &caller,
                Operation::Write,
                req.topics.iter().map(|t| t.topic.as_str()),
            )?;
        }
        let req = request.into_inner();
        let partitions: Vec<(String, i32)> = req
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.clone(), p)))
            .collect();
        let result = async {
            self.txns
                .add_partitions(
                    &req.transactional_id,
                    req.producer_id,
                    epoch(req.producer_epoch)?,
                    partitions.clone(),
                    req.verify_only,
                )
                .await
        }
        .await;
        let result_of =
            |(topic, partition): (String, i32), code: ErrorCode| pb::TxnPartitionResult {
                topic,
                partition,
                error_code: code as i32,
            };
        Ok(Response::new(match result {
            Ok(results) => pb::AddPartitionsToTxnResponse {
                results: results.into_iter().map(|(p, c)| result_of(p, c)).collect(),
                ..Default::default()
            },
            Err((code, message)) => pb::AddPartitionsToTxnResponse {
                error_code: code as i32,
                error_message: message,
                results: partitions.into_iter().map(|p| result_of(p, code)).collect(),
            },
        }))
    }

    async fn end_txn(
        &self,
        request: Request<pb::EndTxnRequest>,
    ) -> Result<Response<pb::EndTxnResponse>, Status> {
        self.caller(&request, "EndTxn")?.check(
            Operation::Write,
            ResourceType::TransactionalId,
            &request.get_ref().transactional_id,
        )?;
        let req = request.into_inner();
        let result = async {
            self.txns
                .end_txn(
                    &req.transactional_id,
                    req.producer_id,
                    epoch(req.producer_epoch)?,
                    req.committed,
                )
                .await
        }
        .await;
        let (code, message) = result.err().unwrap_or((ErrorCode::None, String::new()));
        Ok(Response::new(pb::EndTxnResponse {
            error_code: code as i32,
            error_message: message,
        }))
    }

    async fn describe_transactions(
        &self,
        request: Request<pb::DescribeTransactionsRequest>,
    ) -> Result<Response<pb::DescribeTransactionsResponse>, Status> {
        {
            let caller = self.caller(&request, "DescribeTransactions")?;
            for id in &request.get_ref().transactional_ids {
                caller.check(Operation::Describe, ResourceType::TransactionalId, id)?;
            }
        }
        let req = request.into_inner();
        let transactions = self
            .txns
            .describe(&req.transactional_ids)
            .into_iter()
            .map(|(id, found)| match found {
                Ok(m) => {
                    let mut topics: Vec<pb::TopicPartitions> = Vec::new();
                    for (topic, partition) in &m.partitions {
                        match topics.last_mut() {
                            Some(t) if &t.topic == topic => t.partitions.push(*partition),
                            _ => topics.push(pb::TopicPartitions {
                                topic: topic.clone(),
                                partitions: vec![*partition],
                            }),
                        }
                    }
                    pb::DescribedTransaction {
                        error_code: ErrorCode::None as i32,
                        transactional_id: id,
                        state: m.state.as_str().to_owned(),
                        timeout_ms: m.timeout_ms,
                        start_ms: m.txn_start_ms,
                        producer_id: m.producer_id,
                        producer_epoch: i32::from(m.producer_epoch),
                        topics,
                    }
                }
                Err(code) => pb::DescribedTransaction {
                    error_code: code as i32,
                    transactional_id: id,
                    producer_id: -1,
                    producer_epoch: -1,
                    start_ms: -1,
                    ..Default::default()
                },
            })
            .collect();
        Ok(Response::new(pb::DescribeTransactionsResponse {
            transactions,
        }))
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let caller = self.caller(&request, "ListTransactions")?;
        let req = request.into_inner();
        let transactions = self
            .txns
            .list(&req.states, &req.producer_ids, req.duration_filter_ms)
            .into_iter()
            .filter(|m| {
                caller.sees(
                    Operation::Describe,
                    ResourceType::TransactionalId,
                    &m.transactional_id,
                )
            })
            .map(|m| pb::ListedTransaction {
                transactional_id: m.transactional_id,
                producer_id: m.producer_id,
                state: m.state.as_str().to_owned(),
            })
            .collect();
        Ok(Response::new(pb::ListTransactionsResponse { transactions }))
    }

    async fn consumer_group_heartbeat(
        &self,
        request: Request<pb::ConsumerGroupHeartbeatRequest>,
    ) -> Result<Response<pb::ConsumerGroupHeartbeatResponse>, Status> {
        {
            let caller = self.caller(&request, "ConsumerGroupHeartbeat")?;
            let req = request.get_ref();
            caller.check(Operation::Read, ResourceType::Group, &req.group_id)?;
            check_topics(
                &caller,
                Operation::Describe,
                req.subscribed_topics
                    .iter()
                    .flat_map(|t| t.names.iter().map(String::as_str)),
            )?;
        }
        let req = request.into_inner();
        let refuse = |code: ErrorCode, msg: String| {
            Ok(Response::new(pb::ConsumerGroupHeartbeatResponse {
                error_code: code as i32,
                error_message: msg,
                member_id: req.member_id.clone(),
                member_epoch: -1,
                ..Default::default()
            }))
        };
        if let Err((code, msg)) = check_group_id(&req.group_id) {
            return refuse(code, msg);
        }
        let mut topics: Vec<String> = self
            .manager
            .consumer_group_topics(&req.group_id)
            .into_iter()
            .collect();
        if let Some(t) = &req.subscribed_topics {
            topics.extend(t.names.iter().cloned());
        }
        topics.sort();
        topics.dedup();
        let counts = if topics.is_empty() {
            Default::default()
        } else {
            match self.cluster.refresh(&topics, false).await {
                Ok(md) => md
                    .topics
                    .iter()
                    .filter(|(t, _)| topics.contains(t))
                    .map(|(t, m)| (t.clone(), m.partitions.len() as i32))
                    .collect(),
                Err(e) => {
                    return refuse(
                        ErrorCode::CoordinatorNotAvailable,
                        format!("cannot read the subscribed topics' metadata: {e}"),
                    );
                }
            }
        };
        let heartbeat = Heartbeat {
            fresh_member_id: uuid::Uuid::new_v4().to_string(),
            member_id: req.member_id.clone(),
            member_epoch: req.member_epoch,
            instance_id: instance(&req.instance_id).map(str::to_owned),
            rebalance_timeout_ms: (req.rebalance_timeout_ms > 0)
                .then(|| i64::from(req.rebalance_timeout_ms)),
            subscribed_topics: req.subscribed_topics.as_ref().map(|t| t.names.clone()),
            server_assignor: (!req.server_assignor.is_empty()).then(|| req.server_assignor.clone()),
            owned: req.owned.as_ref().map(from_partition_set),
        };
        let r = self
            .manager
            .consumer_heartbeat(&req.group_id, heartbeat, &counts)
            .await;
        Ok(Response::new(pb::ConsumerGroupHeartbeatResponse {
            error_code: r.error as i32,
            error_message: message(r.error),
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            heartbeat_interval_ms: r.heartbeat_interval_ms as i32,
            assignment: (r.error == ErrorCode::None).then(|| to_partition_set(&r.assignment)),
        }))
    }

    async fn consumer_group_describe(
        &self,
        request: Request<pb::ConsumerGroupDescribeRequest>,
    ) -> Result<Response<pb::ConsumerGroupDescribeResponse>, Status> {
        {
            let caller = self.caller(&request, "ConsumerGroupDescribe")?;
            for id in &request.get_ref().group_ids {
                caller.check(Operation::Describe, ResourceType::Group, id)?;
            }
        }
        let req = request.into_inner();
        let groups = req
            .group_ids
            .into_iter()
            .map(|id| {
                let refused =
                    |id: String, code: ErrorCode, text: String| pb::DescribedConsumerGroup {
                        group_id: id,
                        error_code: code as i32,
                        error_message: text,
                        ..Default::default()
                    };
                if let Err(code) = self.manager.check_owner(&id) {
                    return refused(id, code, message(code));
                }
                match self.manager.describe_consumer_group(&id) {
                    Some(g) => g,
                    None => {
                        let text =
                            format!("group {id} is not a consumer group (group.protocol=consumer)");
                        refused(id, ErrorCode::GroupIdNotFound, text)
                    }
                }
            })
            .collect();
        Ok(Response::new(pb::ConsumerGroupDescribeResponse { groups }))
    }

    async fn find_coordinator(
        &self,
        request: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        self.caller(&request, "FindCoordinator")?.check(
            Operation::Describe,
            ResourceType::Group,
            &request.get_ref().group_id,
        )?;
        let req = request.into_inner();
        let mut r = pb::FindCoordinatorResponse {
            coordinator_id: -1,
            ..Default::default()
        };
        if let Err((code, msg)) = check_group_id(&req.group_id) {
            r.error_code = code as i32;
            r.error_message = msg;
            return Ok(Response::new(r));
        }
        match self.cluster.find_coordinator(&req.group_id).await {
            Ok((id, addr)) => {
                let (host, port) = addr.rsplit_once(':').unwrap_or((&addr, "0"));
                r.coordinator_id = id;
                r.host = host.to_owned();
                r.port = port.parse().unwrap_or(0);
            }
            Err(e) => {
                r.error_code = e.code().unwrap_or(ErrorCode::CoordinatorNotAvailable) as i32;
                r.error_message = e.to_string();
            }
        }
        Ok(Response::new(r))
    }

    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::JoinGroupResponse>, Status> {
        self.caller(&request, "JoinGroup")?.check(
            Operation::Read,
            ResourceType::Group,
            &request.get_ref().group_id,
        )?;
        let req = request.into_inner();
        if let Err((code, msg)) = check_group_id(&req.group_id) {
            return Ok(Response::new(pb::JoinGroupResponse {
                error_code: code as i32,
                error_message: msg,
                generation_id: -1,
                ..Default::default()
            }));
        }
        let client_id = if req.client_id.is_empty() {
            "consumer".to_owned()
        } else {
            req.client_id.clone()
        };
        let join = JoinRequest {
            member_id: req.member_id,
            group_instance_id: instance(&req.group_instance_id).map(str::to_owned),
            fresh_member_id: format!("{client_id}-{}", uuid::Uuid::new_v4()),
            client_id,
            session_timeout_ms: i64::from(req.session_timeout_ms),
            rebalance_timeout_ms: i64::from(req.rebalance_timeout_ms.max(req.session_timeout_ms)),
            protocol_type: req.protocol_type,
            protocols: req
                .protocols
                .into_iter()
                .map(|p| (p.name, p.metadata.to_vec()))
                .collect(),
            // KIP-394: a new dynamic member learns its id before it counts.
            require_known_member_id: !req.member_id_not_required,
        };
        let r = self.manager.join(&req.group_id, join).await;
        Ok(Response::new(pb::JoinGroupResponse {
            error_code: r.error as i32,
            error_message: message(r.error),
            generation_id: r.generation_id,
            protocol_name: r.protocol_name,
            leader: r.leader,
            member_id: r.member_id,
            members: r
                .members
                .into_iter()
                .map(|m| pb::JoinGroupMember {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id.unwrap_or_default(),
                    metadata: m.metadata.into(),
                })
                .collect(),
        }))
    }

    async fn sync_group(
        &self,
        request: Request<pb::SyncGroupRequest>,
    ) -> Result<Response<pb::SyncGroupResponse>, Status> {
        self.caller(&request, "SyncGroup")?.check(
            Operation::Read,
            ResourceType::Group,
            &request.get_ref().group_id,
        )?;
        let req = request.into_inner();
        let assignments = req
            .assignments
            .into_iter()
            .map(|a| (a.member_id, a.assignment.to_vec()))
            .collect();
        let r = self
            .manager
            .sync(
                &req.group_id,
                &req.member_id,
                instance(&req.group_instance_id),
                req.generation_id,
                assignments,
            )
            .await;
        Ok(Response::new(pb::SyncGroupResponse {
            error_code: r.error as i32,
            error_message: message(r.error),
            assignment: r.assignment.into(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.caller(&request, "Heartbeat")?.check(
            Operation::Read,
            ResourceType::Group,
            &request.get_ref().group_id,
        )?;
        let req = request.into_inner();
        let code = self
            .manager
            .heartbeat(
                &req.group_id,
                &req.member_id,
                instance(&req.group_instance_id),
                req.generation_id,
            )
            .err()
            .unwrap_or(ErrorCode::None);
        Ok(Response::new(pb::HeartbeatResponse {
            error_code: code as i32,
            error_message: message(code),
        }))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        self.caller(&request, "LeaveGroup")?.check(
            Operation::Read,
            ResourceType::Group,
            &request.get_ref().group_id,
        )?;
        let req = request.into_inner();
        let code = self
            .manager
            .leave(
                &req.group_id,
                &req.member_id,
                instance(&req.group_instance_id),
            )
            .err()
            .unwrap_or(ErrorCode::None);
        Ok(Response::new(pb::LeaveGroupResponse {
            error_code: code as i32,
            error_message: message(code),
        }))
    }

    async fn offset_commit(
        &self,
        request: Request<pb::OffsetCommitRequest>,
    ) -> Result<Response<pb::OffsetCommitResponse>, Status> {
        {
            let caller = self.caller(&request, "OffsetCommit")?;
            let req = request.get_ref();
            caller.check(Operation::Read, ResourceType::Group, &req.group_id)?;
            check_topics(
                &caller,
                Operation::Read,
                req.partitions.iter().map(|p| p.topic.as_str()),
            )?;
        }
        let req = request.into_inner();
        let commits = commits_of(&req.partitions);
        let code = match check_group_id(&req.group_id) {
            Err((code, _)) => code,
            Ok(()) => self
                .manager
                .commit(
                    &req.group_id,
                    &req.member_id,
                    instance(&req.group_instance_id),
                    req.generation_id,
                    commits,
                )
                .await
                .err()
                .unwrap_or(ErrorCode::None),
        };
        Ok(Response::new(pb::OffsetCommitResponse {
            partitions: commit_results(req.partitions, code),
        }))
    }

    async fn offset_fetch(
        &self,
        request: Request<pb::OffsetFetchRequest>,
    ) -> Result<Response<pb::OffsetFetchResponse>, Status> {
        let caller = self.caller(&request, "OffsetFetch")?;
        caller.check(
            Operation::Describe,
            ResourceType::Group,
            &request.get_ref().group_id,
        )?;
        check_topics(
            &caller,
            Operation::Describe,
            request.get_ref().topics.iter().map(|t| t.topic.as_str()),
        )?;
        let req = request.into_inner();
        if let Err(code) = self.manager.check_owner(&req.group_id) {
            return Ok(Response::new(pb::OffsetFetchResponse {
                error_code: code as i32,
                error_message: message(code),
                partitions: Vec::new(),
            }));
        }
        let fetched = |topic: &str, partition: i32| {
            if req.require_stable
                && self
                    .manager
                    .has_pending_commit(&req.group_id, topic, partition)
            {
                return pb::OffsetFetchPartition {
                    topic: topic.to_owned(),
                    partition,
                    offset: -1,
                    leader_epoch: -1,
                    error_code: ErrorCode::UnstableOffsetCommit as i32,
                    ..Default::default()
                };
            }
            let c = self.manager.committed(&req.group_id, topic, partition);
            pb::OffsetFetchPartition {
                topic: topic.to_owned(),
                partition,
                offset: c.as_ref().map_or(-1, |c| c.offset),
                leader_epoch: c.as_ref().map_or(-1, |c| c.leader_epoch),
                metadata: c.map(|c| c.metadata).unwrap_or_default(),
                error_code: ErrorCode::None as i32,
            }
        };
        let partitions = if req.topics.is_empty() {
            // All of the group's offsets: those of topics the caller may
            // not describe are left out, as Kafka does.
            self.manager
                .group_offsets(&req.group_id)
                .into_iter()
                .filter(|(topic, _, _)| {
                    caller.sees(Operation::Describe, ResourceType::Topic, topic)
                })
                .map(|(topic, partition, _)| fetched(&topic, partition))
                .collect()
        } else {
            req.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|&p| fetched(&t.topic, p)))
                .collect()
        };
        Ok(Response::new(pb::OffsetFetchResponse {
            partitions,
            ..Default::default()
        }))
    }

    async fn txn_offset_commit(
        &self,
        request: Request<pb::TxnOffsetCommitRequest>,
    ) -> Result<Response<pb::TxnOffsetCommitResponse>, Status> {
        {
            let caller = self.caller(&request, "TxnOffsetCommit")?;
            let req = request.get_ref();
            caller.check(
                Operation::Write,
                ResourceType::TransactionalId,
                &req.transactional_id,
            )?;
            caller.check(Operation::Read, ResourceType::Group, &req.group_id)?;
            check_topics(
                &caller,
                Operation::Read,
                req.partitions.iter().map(|p| p.topic.as_str()),
            )?;
        }
        let req = request.into_inner();
        let commits = commits_of(&req.partitions);
        let code = match (
            check_group_id(&req.group_id),
            i16::try_from(req.producer_epoch),
        ) {
            (Err((code, _)), _) => code,
            (_, Err(_)) => ErrorCode::InvalidRequest,
            (Ok(()), Ok(epoch)) => self
                .manager
                .txn_commit(
                    &req.group_id,
                    &req.transactional_id,
                    req.producer_id,
                    epoch,
                    &req.member_id,
                    instance(&req.group_instance_id),
                    req.generation_id,
                    commits,
                )
                .await
                .err()
                .unwrap_or(ErrorCode::None),
        };
        Ok(Response::new(pb::TxnOffsetCommitResponse {
            partitions: commit_results(req.partitions, code),
        }))
    }

    async fn complete_transaction(
        &self,
        request: Request<pb::CompleteTransactionRequest>,
    ) -> Result<Response<pb::CompleteTransactionResponse>, Status> {
        let req = request.into_inner();
        let settled = self.manager.complete_transaction(
            req.offsets_partition,
            req.producer_id,
            req.committed,
        );
        if settled > 0 {
            tracing::debug!(
                partition = req.offsets_partition,
                producer_id = req.producer_id,
                committed = req.committed,
                settled,
                "transactional offset commits settled"
            );
        }
        Ok(Response::new(pb::CompleteTransactionResponse::default()))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let caller = self.caller(&request, "ListGroups")?;
        let all = caller.sees(Operation::Describe, ResourceType::Cluster, CLUSTER_NAME);
        let req = request.into_inner();
        let groups = self
            .manager
            .list()
            .into_iter()
            .filter(|g| {
                (all || caller.sees(Operation::Describe, ResourceType::Group, &g.group_id))
                    && (req.states.is_empty() || req.states.iter().any(|s| s == g.state.name()))
                    && (req.types.is_empty()
                        || req
                            .types
                            .iter()
                            .any(|t| t.eq_ignore_ascii_case(g.group_type)))
            })
            .map(|g| pb::ListedGroup {
                group_id: g.group_id,
                protocol_type: g.protocol_type,
                state: g.state.name().into(),
                group_type: g.group_type.into(),
            })
            .collect();
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn describe_groups(
        &self,
        request: Request<pb::DescribeGroupsRequest>,
    ) -> Result<Response<pb::DescribeGroupsResponse>, Status> {
        {
            let caller = self.caller(&request, "DescribeGroups")?;
            for id in &request.get_ref().group_ids {
                caller.check(Operation::Describe, ResourceType::Group, id)?;
            }
        }
        let req = request.into_inner();
        let groups = req
            .group_ids
            .into_iter()
            .map(|id| {
                match self
                    .manager
                    .check_owner(&id)
                    .map(|()| self.manager.describe(&id))
                {
                    Err(code) => pb::DescribedGroup {
                        group_id: id,
                        error_code: code as i32,
                        error_message: message(code),
                        ..Default::default()
                    },
                    Ok(Some(d)) => pb::DescribedGroup {
                        group_id: id,
                        state: d.state.name().into(),
                        protocol_type: d.protocol_type,
                        protocol: d.protocol,
                        generation_id: d.generation,
                        members: d
                            .members
                            .into_iter()
                            .map(|m| pb::DescribedMember {
                                member_id: m.member_id,
                                group_instance_id: m.group_instance_id.unwrap_or_default(),
                                client_id: m.client_id,
                                client_host: String::new(),
                                assignment: m.assignment.into(),
                                metadata: m.metadata.into(),
                            })
                            .collect(),
                        ..Default::default()
                    },
                    // Kafka describes an unknown group as Dead, without an error.
                    Ok(None) => pb::DescribedGroup {
                        group_id: id,
                        state: "Dead".into(),
                        ..Default::default()
                    },
                }
            })
            .collect();
        Ok(Response::new(pb::DescribeGroupsResponse { groups }))
    }

    async fn delete_groups(
        &self,
        request: Request<pb::DeleteGroupsRequest>,
    ) -> Result<Response<pb::DeleteGroupsResponse>, Status> {
        {
            let caller = self.caller(&request, "DeleteGroups")?;
            for id in &request.get_ref().group_ids {
                caller.check(Operation::Delete, ResourceType::Group, id)?;
            }
        }
        let req = request.into_inner();
        let mut groups = Vec::with_capacity(req.group_ids.len());
        for id in req.group_ids {
            let code = self
                .manager
                .delete(&id)
                .await
                .err()
                .unwrap_or(ErrorCode::None);
            groups.push(pb::DeletedGroup {
                group_id: id,
                error_code: code as i32,
                error_message: message(code),
            });
        }
        Ok(Response::new(pb::DeleteGroupsResponse { groups }))
    }
}
