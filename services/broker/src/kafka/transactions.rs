//! Kafka's transaction APIs, relayed to the transaction coordinator that
//! serves each transactional id (every broker names itself as that
//! coordinator in FindCoordinator, as for groups): InitProducerId with a
//! transactional id, AddPartitionsToTxn (a client's, or a broker's
//! verify-only batch from KIP-890), AddOffsetsToTxn, EndTxn,
//! DescribeTransactions and ListTransactions; TxnOffsetCommit, relayed to
//! the group's coordinator; and the KIP-890 check of a transactional Produce.

use std::collections::HashMap;

use runnel_common::metadata::{OFFSETS_TOPIC, offsets_partition_for};
use runnel_kafka::kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use runnel_kafka::kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use runnel_kafka::kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;

use runnel_common::acl::{Operation, ResourceType};

use super::{Caller, KafkaApi, by_topic, code, error_code, raw_code, topic_name, wire};

/// Kafka answers PRODUCER_FENCED only to request versions that know it
/// (KIP-588: from `since`); older ones get INVALID_PRODUCER_EPOCH.
pub(super) fn fenced(code: i16, version: i16, since: i16) -> i16 {
    if code == ErrorCode::ProducerFenced as i16 && version < since {
        ErrorCode::InvalidProducerEpoch as i16
    } else {
        code
    }
}

impl KafkaApi {
    /// The partition of `__consumer_offsets` holding `group` (`None`
    /// while the topic does not exist).
    fn offsets_partition_of(&self, group: &str) -> Option<i32> {
        self.metadata.with(|image| {
            let n = image.topics.get(OFFSETS_TOPIC)?.partitions.len() as i32;
            Some(offsets_partition_for(group, n))
        })
    }

    /// AddPartitionsToTxn: v0–3 a client's one transaction, v4+ a batch of
    /// transactions (brokers verifying, KIP-890).
    pub(super) async fn add_partitions_to_txn(
        &self,
        r: AddPartitionsToTxnRequest,
        version: i16,
        caller: &Caller<'_>,
    ) -> AddPartitionsToTxnResponse {
        if version <= 3 {
            let topics = self
                .add_partitions_one(
                    r.v3_and_below_transactional_id,
                    (r.v3_and_below_producer_id.0, r.v3_and_below_producer_epoch),
                    r.v3_and_below_topics
                        .into_iter()
                        .map(|t| (t.name.to_string(), t.partitions))
                        .collect(),
                    false,
                    version,
                    Some(caller),
                )
                .await;
            return AddPartitionsToTxnResponse::default()
                .with_results_by_topic_v3_and_below(topics);
        }
        // v4+ batches come from brokers verifying produces (KIP-890).
        if let Err(failure) = caller.check_cluster(Operation::ClusterAction) {
            return AddPartitionsToTxnResponse::default().with_error_code(error_code(&failure));
        }
        let mut results = Vec::with_capacity(r.transactions.len());
        for t in r.transactions {
            let id = t.transactional_id.clone();
            let topics = self
                .add_partitions_one(
                    t.transactional_id,
                    (t.producer_id.0, t.producer_epoch),
                    t.topics
                        .into_iter()
                        .map(|t| (t.name.to_string(), t.partitions))
                        .collect(),
                    t.verify_only,
                    version,
                    Some(caller),
                )
                .await;
            results.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(id)
                    .with_topic_results(topics),
            );
        }
        AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
    }

    async fn add_partitions_one(
        &self,
        transactional_id: TransactionalId,
        (producer_id, producer_epoch): (i64, i16),
        topics: Vec<(String, Vec<i32>)>,
        verify_only: bool,
        version: i16,
        caller: Option<&Caller<'_>>,
    ) -> Vec<AddPartitionsToTxnTopicResult> {
        let id = transactional_id.to_string();
        // With a caller to check: WRITE on the id and on each topic; if any
        // is refused, nothing is added and the other partitions answer
        // OPERATION_NOT_ATTEMPTED, as Kafka does.
        let all = |code: &dyn Fn(&str) -> i16| -> HashMap<(String, i32), i16> {
            topics
                .iter()
                .flat_map(|(t, ps)| {
                    let c = code(t);
                    ps.iter().map(move |p| ((t.clone(), *p), c))
                })
                .collect()
        };
        let denied = caller.and_then(|caller| {
            if let Err(failure) = caller.check(Operation::Write, ResourceType::TransactionalId, &id)
            {
                let c = error_code(&failure);
                return Some(all(&|_| c));
            }
            let refused: Vec<&str> = topics
                .iter()
                .map(|(t, _)| t.as_str())
                .filter(|t| !caller.allowed(Operation::Write, ResourceType::Topic, t))
                .collect();
            (!refused.is_empty()).then(|| {
                all(&|t| {
                    if refused.contains(&t) {
                        code(ErrorCode::TopicAuthorizationFailed)
                    } else {
                        code(ErrorCode::OperationNotAttempted)
                    }
                })
            })
        });
        let request = pb::AddPartitionsToTxnRequest {
            transactional_id: id.clone(),
            producer_id,
            producer_epoch: i32::from(producer_epoch),
            topics: topics
                .iter()
                .map(|(topic, partitions)| pb::TopicPartitions {
                    topic: topic.clone(),
                    partitions: partitions.clone(),
                })
                .collect(),
            verify_only,
        };
        let relayed = match denied {
            Some(codes) => Err(codes),
            None => Ok(self
                .broker
                .relay_txn(&id, |mut c| async move {
                    c.add_partitions_to_txn(request).await
                })
                .await),
        };
        let codes: HashMap<(String, i32), i16> = match relayed {
            Err(codes) => codes,
            Ok(Ok(a)) => a
                .results
                .into_iter()
                .map(|p| ((p.topic, p.partition), raw_code(p.error_code)))
                .collect(),
            Ok(Err(failure)) => {
                let code = error_code(&failure);
                topics
                    .iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |p| ((t.clone(), *p), code)))
                    .collect()
            }
        };
        let results = topics.into_iter().flat_map(|(topic, partitions)| {
            let codes = &codes;
            partitions.into_iter().map(move |p| {
                let code = fenced(
                    codes.get(&(topic.clone(), p)).copied().unwrap_or(0),
                    version,
                    2,
                );
                (
                    topic.clone(),
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(p)
                        .with_partition_error_code(code),
                )
            })
        });
        by_topic(results.collect::<Vec<_>>())
            .into_iter()
            .map(|(topic, partitions)| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(topic_name(&topic))
                    .with_results_by_partition(partitions)
            })
            .collect()
    }

    /// AddOffsetsToTxn: the group's partition of `__consumer_offsets` joins
    /// the transaction, so its commit marker settles the offsets the
    /// producer commits there with TxnOffsetCommit.
    pub(super) async fn add_offsets_to_txn(
        &self,
        r: AddOffsetsToTxnRequest,
        version: i16,
        caller: &Caller<'_>,
    ) -> AddOffsetsToTxnResponse {
        let group = r.group_id.to_string();
        if let Err(failure) = caller
            .check(
                Operation::Write,
                ResourceType::TransactionalId,
                &r.transactional_id,
            )
            .and_then(|()| caller.check(Operation::Read, ResourceType::Group, &group))
        {
            return AddOffsetsToTxnResponse::default().with_error_code(error_code(&failure));
        }
        let Some(partition) = self.offsets_partition_of(&group) else {
            return AddOffsetsToTxnResponse::default()
                .with_error_code(code(ErrorCode::CoordinatorNotAvailable));
        };
        let results = self
            .add_partitions_one(
                r.transactional_id,
                (r.producer_id.0, r.producer_epoch),
                vec![(OFFSETS_TOPIC.to_owned(), vec![partition])],
                false,
                // Mapped below, by this request's own version.
                i16::MAX,
                // Checked above: the group's partition of __consumer_offsets
                // is the broker's business, not a topic the producer writes.
                None,
            )
            .await;
        let error = results
            .iter()
            .flat_map(|t| &t.results_by_partition)
            .map(|p| p.partition_error_code)
            .find(|c| *c != 0)
            .unwrap_or(0);
        AddOffsetsToTxnResponse::default().with_error_code(fenced(error, version, 2))
    }

    /// TxnOffsetCommit, relayed to the coordinator of the group, which
    /// stores the offsets as the producer's transactional batch (whose
    /// partition's leader first checks with the transaction coordinator
    /// that the group's partition of `__consumer_offsets` is in the
    /// transaction, KIP-890, so no batch hangs there unended).
    pub(super) async fn txn_offset_commit(
        &self,
        r: TxnOffsetCommitRequest,
        version: i16,
        caller: &Caller<'_>,
    ) -> TxnOffsetCommitResponse {
        let group = r.group_id.to_string();
        // WRITE on the transactional id, READ on the group, READ on each topic.
        let denied: Option<i16> = caller
            .check(
                Operation::Write,
                ResourceType::TransactionalId,
                &r.transactional_id,
            )
            .and_then(|()| caller.check(Operation::Read, ResourceType::Group, &group))
            .err()
            .map(|f| error_code(&f));
        let topic_denied: std::collections::HashSet<String> = r
            .topics
            .iter()
            .map(|t| t.name.to_string())
            .filter(|t| {
                denied.is_none() && !caller.allowed(Operation::Read, ResourceType::Topic, t)
            })
            .collect();
        let request = pb::TxnOffsetCommitRequest {
            transactional_id: r.transactional_id.to_string(),
            group_id: group.clone(),
            producer_id: r.producer_id.0,
            producer_epoch: i32::from(r.producer_epoch),
            generation_id: r.generation_id,
            member_id: r.member_id.to_string(),
            group_instance_id: r
                .group_instance_id
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            partitions: r
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| pb::OffsetCommitPartition {
                        topic: t.name.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                    })
                })
                .collect(),
        };
        let relayed = match denied {
            Some(code) => Err(code),
            None if !topic_denied.is_empty() => Err(code(ErrorCode::OperationNotAttempted)),
            None => self
                .relay_group(
                    &group,
                    |mut c| async move { c.txn_offset_commit(request).await },
                )
                .await
                .map_err(|failure| error_code(&failure)),
        };
        let codes: HashMap<(String, i32), i16> = match relayed {
            Ok(a) => a
                .partitions
                .into_iter()
                .map(|p| ((p.topic, p.partition), raw_code(p.error_code)))
                .collect(),
            Err(code) => r
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(move |p| ((t.name.to_string(), p.partition_index), code))
                })
                .collect(),
        };
        let topics = r
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.to_string();
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let code = if topic_denied.contains(&name) {
                            code(ErrorCode::TopicAuthorizationFailed)
                        } else {
                            codes
                                .get(&(name.clone(), p.partition_index))
                                .copied()
                                .unwrap_or(0)
                        };
                        TxnOffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(fenced(code, version, 3))
                    })
                    .collect();
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        TxnOffsetCommitResponse::default().with_topics(topics)
    }

    pub(super) async fn end_txn(
        &self,
        r: EndTxnRequest,
        version: i16,
        caller: &Caller<'_>,
    ) -> EndTxnResponse {
        let id = r.transactional_id.to_string();
        if let Err(failure) = caller.check(Operation::Write, ResourceType::TransactionalId, &id) {
            return EndTxnResponse::default()
                .with_error_code(error_code(&failure))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
        }
        let request = pb::EndTxnRequest {
            transactional_id: id.clone(),
            producer_id: r.producer_id.0,
            producer_epoch: i32::from(r.producer_epoch),
            committed: r.committed,
        };
        let error = match self
            .broker
            .relay_txn(&id, |mut c| async move { c.end_txn(request).await })
            .await
        {
            Ok(a) => {
                if a.error_code != 0 {
                    tracing::debug!(transactional_id = %id, error = %a.error_message, "EndTxn refused");
                }
                raw_code(a.error_code)
            }
            Err(failure) => error_code(&failure),
        };
        EndTxnResponse::default()
            .with_error_code(fenced(error, version, 2))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    }

    pub(super) async fn describe_transactions(
        &self,
        r: DescribeTransactionsRequest,
        caller: &Caller<'_>,
    ) -> DescribeTransactionsResponse {
        use runnel_kafka::kafka_protocol::messages::describe_transactions_response::{
            TopicData, TransactionState,
        };
        let mut states = Vec::with_capacity(r.transactional_ids.len());
        for id in r.transactional_ids {
            let key = id.to_string();
            let request = pb::DescribeTransactionsRequest {
                transactional_ids: vec![key.clone()],
            };
            let out = TransactionState::default()
                .with_transactional_id(id)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1)
                .with_transaction_state(wire(""));
            if let Err(failure) =
                caller.check(Operation::Describe, ResourceType::TransactionalId, &key)
            {
                states.push(out.with_error_code(error_code(&failure)));
                continue;
            }
            let described = self
                .broker
                .relay_txn(&key, |mut c| async move {
                    c.describe_transactions(request).await
                })
                .await
                .map(|a| a.transactions.into_iter().next());
            states.push(match described {
                Ok(Some(t)) if t.error_code == 0 => out
                    .with_transaction_state(wire(t.state))
                    .with_transaction_timeout_ms(t.timeout_ms)
                    .with_transaction_start_time_ms(t.start_ms)
                    .with_producer_id(ProducerId(t.producer_id))
                    .with_producer_epoch(i16::try_from(t.producer_epoch).unwrap_or(-1))
                    .with_topics(
                        t.topics
                            .into_iter()
                            // Only the topics the caller may describe, as Kafka.
                            .filter(|tp| {
                                caller.sees(Operation::Describe, ResourceType::Topic, &tp.topic)
                            })
                            .map(|tp| {
                                TopicData::default()
                                    .with_topic(topic_name(&tp.topic))
                                    .with_partitions(tp.partitions)
                            })
                            .collect(),
                    ),
                Ok(Some(t)) => out.with_error_code(raw_code(t.error_code)),
                Ok(None) => out.with_error_code(code(ErrorCode::UnknownServerError)),
                Err(failure) => out.with_error_code(error_code(&failure)),
            });
        }
        DescribeTransactionsResponse::default().with_transaction_states(states)
    }

    /// ListTransactions: Kafka's admin client asks every broker and joins
    /// the answers, while every Runnel broker reaches every coordinator; so
    /// the lowest-numbered live broker answers for all and the others with
    /// none, and each transaction is listed once.
    pub(super) async fn list_transactions(
        &self,
        r: ListTransactionsRequest,
        caller: &Caller<'_>,
    ) -> ListTransactionsResponse {
        use runnel_kafka::kafka_protocol::messages::list_transactions_response::TransactionState;
        const KNOWN: [&str; 8] = [
            "Empty",
            "Ongoing",
            "PrepareCommit",
            "PrepareAbort",
            "CompleteCommit",
            "CompleteAbort",
            "Dead",
            "PrepareEpochFence",
        ];
        let unknown: Vec<_> = r
            .state_filters
            .iter()
            .filter(|s| !KNOWN.contains(&s.as_str()))
            .cloned()
            .collect();
        let (first_broker, coordinators) = self.metadata.with(|image| {
            let first = image.live_brokers().map(|(id, _)| id).min();
            let addrs: Vec<String> = image
                .live_coordinators()
                .filter_map(|(_, c)| c.grpc_address())
                .collect();
            (first, addrs)
        });
        let mut states = Vec::new();
        if first_broker == Some(self.broker_id) {
            let request = pb::ListTransactionsRequest {
                states: r.state_filters.iter().map(|s| s.to_string()).collect(),
                producer_ids: r.producer_id_filters.iter().map(|p| p.0).collect(),
                duration_filter_ms: r.duration_filter,
            };
            for addr in coordinators {
                let Ok(mut client) = self.broker.coordinator_client(&addr) else {
                    continue;
                };
                match client.list_transactions(request.clone()).await {
                    Ok(a) => states.extend(
                        a.into_inner()
                            .transactions
                            .into_iter()
                            .filter(|t| {
                                caller.sees(
                                    Operation::Describe,
                                    ResourceType::TransactionalId,
                                    &t.transactional_id,
                                )
                            })
                            .map(|t| {
                                TransactionState::default()
                                    .with_transactional_id(TransactionalId(wire(
                                        t.transactional_id,
                                    )))
                                    .with_producer_id(ProducerId(t.producer_id))
                                    .with_transaction_state(wire(t.state))
                            }),
                    ),
                    Err(status) => {
                        tracing::debug!(%addr, error = %status, "ListTransactions: a coordinator did not answer");
                        return ListTransactionsResponse::default()
                            .with_error_code(code(ErrorCode::CoordinatorNotAvailable));
                    }
                }
            }
        }
        ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(states)
    }
}
