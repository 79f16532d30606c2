//! Transaction administration on [`Admin`] (Kafka's
//! `kafka-transactions.sh`): list and describe transactional ids, the
//! producers a partition tracks, hanging transactions, and aborting one by
//! hand.

use std::collections::BTreeMap;

use runnel_proto::broker::v1 as bpb;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;

use crate::admin::Admin;
use crate::consumer::TopicPartition;
use crate::error::{ClientError, Result};

/// A transactional id as ListTransactions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTransaction {
    /// The transactional id.
    pub transactional_id: String,
    /// Its producer id.
    pub producer_id: i64,
    /// Kafka's state name (Empty, Ongoing, PrepareCommit, ...).
    pub state: String,
    /// The coordinator serving it.
    pub coordinator_id: i32,
}

/// A transactional id as DescribeTransactions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    /// The transactional id.
    pub transactional_id: String,
    /// The coordinator serving it.
    pub coordinator_id: i32,
    /// Kafka's state name.
    pub state: String,
    /// Its producer id and epoch.
    pub producer_id: i64,
    /// Its producer epoch.
    pub producer_epoch: i32,
    /// `transaction.timeout.ms`.
    pub timeout_ms: i32,
    /// When the open transaction began (ms), or -1.
    pub start_ms: i64,
    /// The partitions of the open transaction.
    pub partitions: Vec<TopicPartition>,
}

/// A producer as a partition's leader tracks it (Kafka's DescribeProducers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerDescription {
    /// The producer id.
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i32,
    /// Its last sequence number, or -1.
    pub last_sequence: i32,
    /// When the leader last appended for it (ms).
    pub last_timestamp_ms: i64,
    /// The coordinator epoch of its last marker, or -1.
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction here, or -1.
    pub current_txn_start_offset: i64,
}

/// A transaction open in a partition that its coordinator does not know to
/// be open there, or that has been open longer than the longest timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HangingTransaction {
    /// The partition.
    pub partition: TopicPartition,
    /// What the leader knows of the producer.
    pub producer: ProducerDescription,
}

/// A described transaction, from the coordinator `coordinator_id`'s answer.
fn description(coordinator_id: i32, t: pb::DescribedTransaction) -> TransactionDescription {
    TransactionDescription {
        coordinator_id,
        partitions: t
            .topics
            .iter()
            .flat_map(|tp| {
                tp.partitions
                    .iter()
                    .map(|&p| TopicPartition::new(&tp.topic, p))
            })
            .collect(),
        transactional_id: t.transactional_id,
        state: t.state,
        producer_id: t.producer_id,
        producer_epoch: t.producer_epoch,
        timeout_ms: t.timeout_ms,
        start_ms: t.start_ms,
    }
}

fn server(code: ErrorCode, message: String) -> ClientError {
    ClientError::Server { code, message }
}

impl Admin {
    /// Every transactional id every coordinator serves, filtered by state
    /// names and producer ids (empty: any).
    pub async fn list_transactions(
        &self,
        states: &[String],
        producer_ids: &[i64],
    ) -> Result<Vec<ListedTransaction>> {
        let md = self.cluster.refresh(&[], false).await?;
        let mut out = Vec::new();
        for (&id, addr) in &md.coordinators {
            let mut c = self.cluster.coordinator_at(addr)?;
            let r = c
                .list_transactions(pb::ListTransactionsRequest {
                    states: states.to_vec(),
                    producer_ids: producer_ids.to_vec(),
                    duration_filter_ms: -1,
                })
                .await
                .map_err(|s| ClientError::from_status(addr, s))?
                .into_inner();
            out.extend(r.transactions.into_iter().map(|t| ListedTransaction {
                transactional_id: t.transactional_id,
                producer_id: t.producer_id,
                state: t.state,
                coordinator_id: id,
            }));
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(out)
    }

    /// The state of `transactional_id`, from the coordinator serving it.
    pub async fn describe_transaction(
        &self,
        transactional_id: &str,
    ) -> Result<TransactionDescription> {
        let md = self.cluster.refresh(&[], false).await?;
        let mut last = ErrorCode::CoordinatorNotAvailable;
        for (&id, addr) in &md.coordinators {
            for t in self
                .describe_at(addr, vec![transactional_id.to_owned()])
                .await?
            {
                match t.error_code() {
                    ErrorCode::None => return Ok(description(id, t)),
                    ErrorCode::NotCoordinator => {}
                    code => last = code,
                }
            }
        }
        Err(server(
            last,
            format!("no coordinator describes transactional id {transactional_id}"),
        ))
    }

    /// DescribeTransactions of `ids` at the coordinator at `addr`.
    async fn describe_at(
        &self,
        addr: &str,
        ids: Vec<String>,
    ) -> Result<Vec<pb::DescribedTransaction>> {
        let r = self
            .cluster
            .coordinator_at(addr)?
            .describe_transactions(pb::DescribeTransactionsRequest {
                transactional_ids: ids,
            })
            .await
            .map_err(|s| ClientError::from_status(addr, s))?
            .into_inner();
        Ok(r.transactions)
    }

    /// The producers `topic-partition`'s leader tracks.
    pub async fn describe_producers(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<ProducerDescription>> {
        let addr = self.leader(topic, partition).await?;
        let r = self
            .cluster
            .broker_at(&addr)?
            .describe_producers(bpb::DescribeProducersRequest {
                topic: topic.to_owned(),
                partition,
            })
            .await
            .map_err(|s| ClientError::from_status(&addr, s))?
            .into_inner();
        if r.error_code() != ErrorCode::None {
            return Err(server(r.error_code(), r.error_message));
        }
        Ok(r.producers
            .into_iter()
            .map(|p| ProducerDescription {
                producer_id: p.producer_id,
                producer_epoch: p.producer_epoch,
                last_sequence: p.last_sequence,
                last_timestamp_ms: p.last_timestamp_ms,
                coordinator_epoch: p.coordinator_epoch,
                current_txn_start_offset: p.current_txn_start_offset,
            })
            .collect())
    }

    /// Transactions open in `partitions` that no coordinator has open with
    /// that partition, or that have been silent longer than
    /// `max_timeout_ms` (`transaction.max.timeout.ms`): nothing will end
    /// them but [`Admin::abort_transaction`].
    pub async fn find_hanging_transactions(
        &self,
        partitions: &[TopicPartition],
        max_timeout_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<HangingTransaction>> {
        // The open transactions' partitions, one DescribeTransactions per coordinator.
        let mut by_coordinator: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        for t in self.list_transactions(&["Ongoing".into()], &[]).await? {
            by_coordinator
                .entry(t.coordinator_id)
                .or_default()
                .push(t.transactional_id);
        }
        let md = self.cluster.metadata();
        let mut open: BTreeMap<i64, Vec<TopicPartition>> = BTreeMap::new();
        for (id, ids) in by_coordinator {
            let Some(addr) = md.coordinators.get(&id) else {
                continue;
            };
            for t in self.describe_at(addr, ids).await? {
                if t.error_code() == ErrorCode::None {
                    let d = description(id, t);
                    open.entry(d.producer_id).or_default().extend(d.partitions);
                }
            }
        }
        let mut hanging = Vec::new();
        for tp in partitions {
            for p in self.describe_producers(&tp.topic, tp.partition).await? {
                if p.current_txn_start_offset < 0 {
                    continue;
                }
                let known = open.get(&p.producer_id).is_some_and(|ps| ps.contains(tp));
                let silent = now_ms.saturating_sub(p.last_timestamp_ms) > max_timeout_ms;
                if !known || silent {
                    hanging.push(HangingTransaction {
                        partition: tp.clone(),
                        producer: p,
                    });
                }
            }
        }
        Ok(hanging)
    }

    /// Ends a hanging transaction by hand: an abort marker for
    /// `producer_id` at `producer_epoch` in `topic-partition`, written by
    /// its leader as if from coordinator epoch `coordinator_epoch`.
    pub async fn abort_transaction(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i32,
        coordinator_epoch: i32,
    ) -> Result<()> {
        let addr = self.leader(topic, partition).await?;
        let r = self
            .cluster
            .broker_at(&addr)?
            .write_txn_markers(bpb::WriteTxnMarkersRequest {
                markers: vec![bpb::TxnMarker {
                    producer_id,
                    producer_epoch,
                    committed: false,
                    coordinator_epoch,
                    partitions: vec![bpb::MarkerPartition {
                        topic: topic.to_owned(),
                        partition,
                    }],
                }],
                timeout_ms: 30_000,
            })
            .await
            .map_err(|s| ClientError::from_status(&addr, s))?
            .into_inner();
        let p = r
            .markers
            .into_iter()
            .flat_map(|m| m.partitions)
            .next()
            .ok_or_else(|| {
                server(
                    ErrorCode::UnknownServerError,
                    "empty WriteTxnMarkers answer".into(),
                )
            })?;
        match p.error_code() {
            ErrorCode::None => Ok(()),
            code => Err(server(code, p.error_message)),
        }
    }
}
