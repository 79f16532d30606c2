//! The broker as a client of the coordinators: one gRPC client per
//! coordinator address, shared by every listener; the transaction
//! coordinator serving a transactional id; InitProducerId relayed for a
//! transactional producer; and KIP-890's check of a transactional Produce
//! (a batch to a partition where the producer has no transaction open yet
//! is written only once its coordinator says the partition is in the
//! transaction, so no hanging transaction can start).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use runnel_common::errors::code_of;
use runnel_common::telemetry::TraceInterceptor;
use runnel_proto::broker::v1 as bpb;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;
use runnel_proto::coordinator::v1::coordinator_client::CoordinatorClient;
use runnel_records::batch::BatchHeader;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

use super::{Broker, Failure, by_topic};
use crate::grpc::Failed;

/// A gRPC client of one coordinator.
pub type Client = CoordinatorClient<InterceptedService<Channel, TraceInterceptor>>;

/// Clients for the coordinators, by address, made once each.
#[derive(Debug, Default)]
pub struct Coordinators {
    clients: Mutex<HashMap<String, Client>>,
}

/// Calls a coordinator; its refusal, or a transport failure (which reads
/// as COORDINATOR_NOT_AVAILABLE and sends the client to FindCoordinator),
/// becomes a [`Failure::Coordinator`].
pub async fn call_coordinator<T, F, Fut>(client: Client, call: F) -> Result<T, Failure>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match call(client).await {
        Ok(r) => Ok(r.into_inner()),
        Err(status) => Err(Failure::Coordinator {
            code: code_of(&status),
            message: status.message().to_owned(),
        }),
    }
}

impl Broker {
    /// A client for the coordinator at `addr`, made once.
    pub fn coordinator_client(&self, addr: &str) -> Result<Client, Failure> {
        let mut clients = self.coordinators.clients.lock();
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let channel = runnel_common::transport::lazy_channel(
            addr,
            Duration::from_secs(1),
            self.security.client.as_ref(),
        )
        .map_err(|source| Failure::CoordinatorUnreachable {
            addr: addr.to_owned(),
            source,
        })?;
        let client = CoordinatorClient::with_interceptor(channel, TraceInterceptor);
        clients.insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    /// The client for the coordinator serving `transactional_id` now.
    pub fn txn_coordinator(&self, transactional_id: &str) -> Result<Client, Failure> {
        let addr = self.metadata.with(|image| {
            image
                .transaction_coordinator(transactional_id)
                .and_then(|(_, c, _)| c.grpc_address())
        });
        let Some(addr) = addr else {
            return Err(Failure::NoTransactionCoordinator {
                transactional_id: transactional_id.to_owned(),
            });
        };
        self.coordinator_client(&addr)
    }

    /// Calls the coordinator serving `transactional_id`.
    pub async fn relay_txn<T, F, Fut>(&self, transactional_id: &str, call: F) -> Result<T, Failure>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        call_coordinator(self.txn_coordinator(transactional_id)?, call).await
    }

    /// InitProducerId for a transactional producer, relayed to its
    /// transaction coordinator with a fresh id from this broker's block,
    /// for the coordinator to use if the transactional id needs one.
    pub async fn init_transactional_producer(
        &self,
        req: bpb::InitProducerIdRequest,
    ) -> bpb::InitProducerIdResponse {
        let refused = bpb::InitProducerIdResponse {
            producer_id: -1,
            producer_epoch: -1,
            ..Default::default()
        };
        let fresh = self.new_producer_id().await;
        if fresh.error_code != 0 {
            return fresh;
        }
        let transactional_id = req.transactional_id;
        let request = pb::TxnInitProducerIdRequest {
            transactional_id: transactional_id.clone(),
            transaction_timeout_ms: req.transaction_timeout_ms,
            producer_id: req.producer_id,
            producer_epoch: req.producer_epoch,
            new_producer_id: fresh.producer_id,
        };
        match self
            .relay_txn(&transactional_id, |mut c| async move {
                c.init_producer_id(request).await
            })
            .await
        {
            Ok(a) if a.error_code == 0 => bpb::InitProducerIdResponse {
                producer_id: a.producer_id,
                producer_epoch: a.producer_epoch,
                ..Default::default()
            },
            Ok(a) => {
                tracing::debug!(%transactional_id, error = %a.error_message, "transactional InitProducerId refused");
                bpb::InitProducerIdResponse {
                    error_code: a.error_code,
                    error_message: a.error_message,
                    ..refused
                }
            }
            Err(failure) => refused.failed(&failure),
        }
    }

    /// KIP-890's check of a transactional Produce: each partition's
    /// transactional batch whose producer has no transaction open there yet
    /// is verified with `transactional_id`'s coordinator. Returns the
    /// refusal of each partition that is not in the producer's transaction
    /// (or of all asked, when the coordinator cannot say).
    pub async fn verify_transactions(
        &self,
        transactional_id: &str,
        partitions: &[bpb::ProducePartition],
    ) -> HashMap<(String, i32), Failure> {
        let mut to_verify: HashMap<(i64, i16), Vec<(String, i32)>> = HashMap::new();
        for p in partitions {
            let Ok(h) = BatchHeader::parse(&p.records) else {
                continue;
            };
            if h.is_transactional()
                && h.has_producer_id()
                && !self.transaction_open(&p.topic, p.partition, h.producer_id, h.producer_epoch)
            {
                to_verify
                    .entry((h.producer_id, h.producer_epoch))
                    .or_default()
                    .push((p.topic.clone(), p.partition));
            }
        }
        let mut failed = HashMap::new();
        for ((producer_id, producer_epoch), asked) in to_verify {
            failed.extend(
                self.verify_in_transaction(transactional_id, producer_id, producer_epoch, asked)
                    .await,
            );
        }
        failed
    }

    /// Asks `transactional_id`'s coordinator whether `partitions` are in
    /// the open transaction of `producer_id` at `producer_epoch`; returns
    /// the refusal of each that is not.
    pub async fn verify_in_transaction(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
    ) -> Vec<((String, i32), Failure)> {
        let topics = by_topic(partitions.iter().cloned())
            .into_iter()
            .map(|(topic, partitions)| pb::TopicPartitions { topic, partitions })
            .collect();
        let request = pb::AddPartitionsToTxnRequest {
            transactional_id: transactional_id.to_owned(),
            producer_id,
            producer_epoch: i32::from(producer_epoch),
            topics,
            verify_only: true,
        };
        match self
            .relay_txn(transactional_id, |mut c| async move {
                c.add_partitions_to_txn(request).await
            })
            .await
        {
            Ok(a) => a
                .results
                .into_iter()
                .filter(|p| p.error_code != 0)
                .map(|p| {
                    let failure = match p.error_code() {
                        ErrorCode::InvalidTxnState => Failure::PartitionNotInTransaction {
                            transactional_id: transactional_id.to_owned(),
                            producer_id,
                            topic: p.topic.clone(),
                            partition: p.partition,
                        },
                        // The coordinator moving, loading, or ending the
                        // last transaction: the producer retries.
                        code @ (ErrorCode::NotCoordinator
                        | ErrorCode::CoordinatorNotAvailable
                        | ErrorCode::CoordinatorLoadInProgress
                        | ErrorCode::ConcurrentTransactions) => Failure::Coordinator {
                            code: ErrorCode::NotEnoughReplicas,
                            message: format!(
                                "cannot verify the transaction now ({code:?}); retry"
                            ),
                        },
                        // As Kafka answers a Produce from a fenced producer.
                        ErrorCode::ProducerFenced | ErrorCode::InvalidProducerEpoch => {
                            Failure::Coordinator {
                                code: ErrorCode::InvalidProducerEpoch,
                                message: format!(
                                    "producer {producer_id} at epoch {producer_epoch} of transactional id {transactional_id:?} has been fenced"
                                ),
                            }
                        }
                        code => Failure::Coordinator {
                            code,
                            message: format!(
                                "the transaction coordinator refused {}-{} ({code:?})",
                                p.topic, p.partition
                            ),
                        },
                    };
                    ((p.topic, p.partition), failure)
                })
                .collect(),
            // The producer retries NOT_ENOUGH_REPLICAS, as KIP-890 answers
            // a coordinator that cannot be asked.
            Err(failure) => partitions
                .into_iter()
                .map(|p| {
                    let refusal = Failure::Coordinator {
                        code: ErrorCode::NotEnoughReplicas,
                        message: format!("cannot verify the transaction: {failure}"),
                    };
                    (p, refusal)
                })
                .collect(),
        }
    }
}
