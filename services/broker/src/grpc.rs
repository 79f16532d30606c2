//! The broker's gRPC service: spans, metrics and translation only, including
//! the one place a [`Failure`] becomes the error fields of a gRPC answer.

use std::sync::Arc;
use std::time::Instant;

use runnel_common::acl::{Operation, ResourceType};
use runnel_common::grpc_auth::{GrpcAuth, GrpcCaller};
use runnel_common::telemetry::server_span;
use runnel_proto::broker::v1 as pb;
use runnel_proto::broker::v1::broker_server::Broker as BrokerApi;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::metadata::MetadataCache;
use crate::service::{Broker, Failure, Listener};

/// The broker's callers, authenticated and authorized against its metadata image.
pub type BrokerAuth = GrpcAuth<MetadataCache>;
type Caller = GrpcCaller<MetadataCache>;

/// The gRPC face of a [`Broker`].
#[derive(Debug, Clone)]
pub struct BrokerService {
    broker: Arc<Broker>,
    listener: Listener,
    auth: BrokerAuth,
}

impl BrokerService {
    /// Serves `broker` on its (internal) listener.
    pub fn new(broker: Arc<Broker>, auth: BrokerAuth) -> Self {
        Self::on(broker, Listener::Internal, auth)
    }

    /// Serves `broker` on `listener`, whose clients get its addresses in metadata.
    pub fn on(broker: Arc<Broker>, listener: Listener, auth: BrokerAuth) -> Self {
        BrokerService {
            broker,
            listener,
            auth,
        }
    }
}

/// `caller` may do `operation` on every topic in `topics`, else the
/// refusal naming the first it may not (checked before the topic is looked
/// up, so the answer says nothing of whether it exists).
fn check_topics<'a>(
    caller: &Caller,
    operation: Operation,
    topics: impl IntoIterator<Item = &'a str>,
) -> Result<(), Status> {
    if !caller.enabled() {
        return Ok(());
    }
    let mut checked = std::collections::HashSet::new();
    for topic in topics {
        if checked.insert(topic) {
            caller.check(operation, ResourceType::Topic, topic)?;
        }
    }
    Ok(())
}

async fn handle<T>(
    method: &'static str,
    metadata: &tonic::metadata::MetadataMap,
    fut: impl Future<Output = T>,
) -> Result<Response<T>, Status> {
    let start = Instant::now();
    let result = fut
        .instrument(server_span("broker", method, metadata))
        .await;
    metrics::counter!("runnel_broker_requests_total", "method" => method).increment(1);
    metrics::histogram!("runnel_broker_request_seconds", "method" => method)
        .record(start.elapsed().as_secs_f64());
    Ok(Response::new(result))
}

#[tonic::async_trait]
impl BrokerApi for BrokerService {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let caller = self.auth.caller(&request, "Produce")?;
        let req = request.get_ref();
        if !req.transactional_id.is_empty() {
            caller.check(
                Operation::Write,
                ResourceType::TransactionalId,
                &req.transactional_id,
            )?;
        }
        check_topics(
            &caller,
            Operation::Write,
            req.partitions.iter().map(|p| p.topic.as_str()),
        )?;
        let (meta, _, req) = request.into_parts();
        handle("Produce", &meta, self.broker.produce(req)).await
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let caller = self.auth.caller(&request, "Fetch")?;
        if request.get_ref().replica.is_some() {
            // A follower's fetch moves the ISR and the high watermark: only
            // another broker may send one.
            self.broker
                .security()
                .guard
                .check(runnel_common::transport::PeerInfo::of(&request))?;
        } else {
            check_topics(
                &caller,
                Operation::Read,
                request
                    .get_ref()
                    .partitions
                    .iter()
                    .map(|p| p.topic.as_str()),
            )?;
        }
        let (meta, _, req) = request.into_parts();
        handle("Fetch", &meta, self.broker.fetch(req)).await
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let caller = self.auth.caller(&request, "ListOffsets")?;
        check_topics(
            &caller,
            Operation::Describe,
            request
                .get_ref()
                .partitions
                .iter()
                .map(|p| p.topic.as_str()),
        )?;
        let (meta, _, req) = request.into_parts();
        handle("ListOffsets", &meta, self.broker.list_offsets(req)).await
    }

    async fn offset_for_leader_epoch(
        &self,
        request: Request<pb::OffsetForLeaderEpochRequest>,
    ) -> Result<Response<pb::OffsetForLeaderEpochResponse>, Status> {
        let caller = self.auth.caller(&request, "OffsetForLeaderEpoch")?;
        check_topics(
            &caller,
            Operation::Describe,
            request
                .get_ref()
                .partitions
                .iter()
                .map(|p| p.topic.as_str()),
        )?;
        let (meta, _, req) = request.into_parts();
        handle(
            "OffsetForLeaderEpoch",
            &meta,
            self.broker.offset_for_leader_epoch(req),
        )
        .await
    }

    async fn init_producer_id(
        &self,
        request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let caller = self.auth.caller(&request, "InitProducerId")?;
        let id = &request.get_ref().transactional_id;
        if !id.is_empty() {
            caller.check(Operation::Write, ResourceType::TransactionalId, id)?;
        } else if caller.enabled()
            && !caller.sees(
                Operation::IdempotentWrite,
                ResourceType::Cluster,
                runnel_common::acl::CLUSTER_NAME,
            )
            && !caller.allowed_on_any(Operation::Write, ResourceType::Topic)
        {
            // Kafka's rule: an idempotent producer needs IDEMPOTENT_WRITE
            // on the cluster or WRITE on some topic.
            caller.check_cluster(Operation::IdempotentWrite)?;
        }
        let (meta, _, req) = request.into_parts();
        handle("InitProducerId", &meta, self.broker.init_producer_id(req)).await
    }

    async fn find_coordinator(
        &self,
        request: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        let caller = self.auth.caller(&request, "FindCoordinator")?;
        let req = request.get_ref();
        let resource_type = if req.key_type == pb::CoordinatorKeyType::Transaction as i32 {
            ResourceType::TransactionalId
        } else {
            ResourceType::Group
        };
        caller.check(Operation::Describe, resource_type, &req.key)?;
        let (meta, _, req) = request.into_parts();
        let listener = self.listener;
        handle("FindCoordinator", &meta, async {
            self.broker.find_coordinator(&req, listener)
        })
        .await
    }

    async fn write_txn_markers(
        &self,
        request: Request<pb::WriteTxnMarkersRequest>,
    ) -> Result<Response<pb::WriteTxnMarkersResponse>, Status> {
        if self.listener == Listener::External {
            // Only the transaction coordinator ends transactions (Kafka's
            // ClusterAction), and it dials brokers inside the cluster.
            return Err(runnel_common::errors::status(
                runnel_proto::common::v1::ErrorCode::InvalidRequest,
                "WriteTxnMarkers is served on the internal listener only",
            ));
        }
        let (meta, _, req) = request.into_parts();
        handle("WriteTxnMarkers", &meta, self.broker.write_txn_markers(req)).await
    }

    async fn describe_producers(
        &self,
        request: Request<pb::DescribeProducersRequest>,
    ) -> Result<Response<pb::DescribeProducersResponse>, Status> {
        self.auth.caller(&request, "DescribeProducers")?.check(
            Operation::Read,
            ResourceType::Topic,
            &request.get_ref().topic,
        )?;
        let (meta, _, req) = request.into_parts();
        handle("DescribeProducers", &meta, async {
            match self.broker.producers(&req.topic, req.partition) {
                Ok(producers) => pb::DescribeProducersResponse {
                    producers: producers
                        .into_iter()
                        .map(|p| pb::ProducerState {
                            producer_id: p.producer_id,
                            producer_epoch: i32::from(p.epoch),
                            last_sequence: p.last_sequence,
                            last_timestamp_ms: p.last_timestamp,
                            coordinator_epoch: p.coordinator_epoch,
                            current_txn_start_offset: p.current_txn_start_offset,
                        })
                        .collect(),
                    ..Default::default()
                },
                Err(failure) => pb::DescribeProducersResponse::default().failed(&failure),
            }
        })
        .await
    }

    async fn metadata(
        &self,
        request: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        let caller = self.auth.caller(&request, "Metadata")?;
        let (meta, _, mut req) = request.into_parts();
        if !caller.enabled() {
            return handle("Metadata", &meta, self.broker.metadata(req, self.listener)).await;
        }
        // Topics the caller may not describe are answered
        // TOPIC_AUTHORIZATION_FAILED (when named) or left out (when all are
        // listed), whether they exist or not, and are never auto-created.
        let (named, hidden): (Vec<String>, Vec<String>) = req
            .topics
            .drain(..)
            .partition(|t| caller.allowed(Operation::Describe, ResourceType::Topic, t));
        let listing = named.is_empty() && hidden.is_empty();
        if req.allow_auto_topic_creation
            && !caller.sees(
                Operation::Create,
                ResourceType::Cluster,
                runnel_common::acl::CLUSTER_NAME,
            )
            && !named
                .iter()
                .all(|t| caller.sees(Operation::Create, ResourceType::Topic, t))
        {
            req.allow_auto_topic_creation = false;
        }
        req.topics = named;
        let ask_none = !listing && req.topics.is_empty();
        let listener = self.listener;
        let broker = &self.broker;
        handle("Metadata", &meta, async move {
            let mut answer = if ask_none {
                // Only unauthorized topics were named: an empty list would
                // ask for every topic.
                let mut all = broker.metadata(req, listener).await;
                all.topics.clear();
                all
            } else {
                broker.metadata(req, listener).await
            };
            if listing {
                answer
                    .topics
                    .retain(|t| caller.sees(Operation::Describe, ResourceType::Topic, &t.name));
            }
            answer.topics.extend(hidden.into_iter().map(|name| {
                let failure =
                    Failure::unauthorized(Operation::Describe, ResourceType::Topic, &name);
                pb::TopicInfo {
                    name,
                    ..Default::default()
                }
                .failed(&failure)
            }));
            answer
        })
        .await
    }
}

/// A gRPC answer (or one partition's part of it) that carries a failure in
/// its `error_code` and `error_message` fields.
pub(crate) trait Failed {
    /// This answer, failed with `failure`'s code and message.
    fn failed(self, failure: &Failure) -> Self;
}

macro_rules! failed {
    ($($answer:ty),* $(,)?) => {$(
        impl Failed for $answer {
            fn failed(mut self, failure: &Failure) -> Self {
                self.error_code = failure.code() as i32;
                self.error_message = failure.to_string();
                self
            }
        }
    )*};
}

failed!(
    pb::ProducePartitionResult,
    pb::FetchPartitionResult,
    pb::EpochEndOffset,
    pb::ListOffsetsPartitionResult,
    pb::TopicInfo,
    pb::InitProducerIdResponse,
    pb::FindCoordinatorResponse,
    pb::MarkerPartitionResult,
    pb::DescribeProducersResponse,
);
