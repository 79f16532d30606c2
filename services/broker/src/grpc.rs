//! The broker's gRPC service: spans, metrics and translation only, including
//! the one place a [`Failure`] becomes the error fields of a gRPC answer.

use std::sync::Arc;
use std::time::Instant;

use runnel_common::telemetry::server_span;
use runnel_common::transport::PeerInfo;
use runnel_proto::broker::v1 as pb;
use runnel_proto::broker::v1::broker_server::Broker as BrokerApi;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::service::{Broker, Failure, Listener};

/// The gRPC face of a [`Broker`].
#[derive(Debug, Clone)]
pub struct BrokerService {
    broker: Arc<Broker>,
    listener: Listener,
}

impl BrokerService {
    /// Serves `broker` on its (internal) listener.
    pub fn new(broker: Arc<Broker>) -> Self {
        Self::on(broker, Listener::Internal)
    }

    /// Serves `broker` on `listener`, whose clients get its addresses in metadata.
    pub fn on(broker: Arc<Broker>, listener: Listener) -> Self {
        BrokerService { broker, listener }
    }
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
        let (meta, _, req) = request.into_parts();
        handle("Produce", &meta, self.broker.produce(req)).await
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        if request.get_ref().replica.is_some() {
            // A follower's fetch moves the ISR and the high watermark: only
            // another broker may send one.
            self.broker.security().guard.check(PeerInfo::of(&request))?;
        }
        let (meta, _, req) = request.into_parts();
        handle("Fetch", &meta, self.broker.fetch(req)).await
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        handle("ListOffsets", &meta, self.broker.list_offsets(req)).await
    }

    async fn offset_for_leader_epoch(
        &self,
        request: Request<pb::OffsetForLeaderEpochRequest>,
    ) -> Result<Response<pb::OffsetForLeaderEpochResponse>, Status> {
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
        let (meta, _, req) = request.into_parts();
        handle("InitProducerId", &meta, self.broker.init_producer_id(req)).await
    }

    async fn find_coordinator(
        &self,
        request: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
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
        let (meta, _, req) = request.into_parts();
        handle("Metadata", &meta, self.broker.metadata(req, self.listener)).await
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
