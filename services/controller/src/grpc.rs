//! The controller's gRPC service: translates requests into calls on
//! [`Controller`] and its errors into statuses. No rules live here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use runnel_common::errors::status;
use runnel_common::shutdown::CancellationToken;
use runnel_common::telemetry::server_span;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::controller::v1::controller_server::Controller as ControllerApi;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::controller::{Controller, ControllerError};

/// Events per watch response when catching up from the store.
const WATCH_PAGE: i64 = 1000;

/// The gRPC face of a [`Controller`].
#[derive(Debug, Clone)]
pub struct ControllerService {
    controller: Arc<Controller>,
    shutdown: CancellationToken,
}

impl ControllerService {
    /// Serves `controller`; watch streams end when `shutdown` fires.
    pub fn new(controller: Arc<Controller>, shutdown: CancellationToken) -> Self {
        ControllerService {
            controller,
            shutdown,
        }
    }
}

fn to_status(e: ControllerError) -> Status {
    if matches!(e, ControllerError::Store(_) | ControllerError::Apply(_)) {
        tracing::error!(error = %e, "controller operation failed");
    }
    status(e.code(), e.to_string())
}

/// Runs one request inside its span, counting it and timing it.
async fn handle<T>(
    method: &'static str,
    metadata: &tonic::metadata::MetadataMap,
    fut: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let start = Instant::now();
    let result = fut
        .instrument(server_span("controller", method, metadata))
        .await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("runnel_controller_requests_total", "method" => method, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("runnel_controller_request_seconds", "method" => method)
        .record(start.elapsed().as_secs_f64());
    result.map(Response::new)
}

/// Runs a request that changes the metadata as its own task, so a caller
/// that goes away (a killed broker, a timed-out client) cannot cancel it
/// between writing the store and updating the in-memory image.
async fn detached<T: Send + 'static>(
    fut: impl Future<Output = Result<T, Status>> + Send + 'static,
) -> Result<T, Status> {
    tokio::spawn(fut.in_current_span())
        .await
        .unwrap_or_else(|e| Err(status(ErrorCode::UnknownServerError, e.to_string())))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ControllerApi for ControllerService {
    async fn register_broker(
        &self,
        request: Request<pb::RegisterBrokerRequest>,
    ) -> Result<Response<pb::RegisterBrokerResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let controller = Arc::clone(&self.controller);
        handle(
            "RegisterBroker",
            &meta,
            detached(async move {
                let broker_epoch = controller.register_broker(req).await.map_err(to_status)?;
                Ok(pb::RegisterBrokerResponse { broker_epoch })
            }),
        )
        .await
    }

    async fn broker_heartbeat(
        &self,
        request: Request<pb::BrokerHeartbeatRequest>,
    ) -> Result<Response<pb::BrokerHeartbeatResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let controller = Arc::clone(&self.controller);
        handle(
            "BrokerHeartbeat",
            &meta,
            detached(async move { controller.heartbeat(req).await.map_err(to_status) }),
        )
        .await
    }

    async fn alter_partition(
        &self,
        request: Request<pb::AlterPartitionRequest>,
    ) -> Result<Response<pb::AlterPartitionResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let controller = Arc::clone(&self.controller);
        handle(
            "AlterPartition",
            &meta,
            detached(async move {
                let partitions = controller.alter_partition(req).await.map_err(to_status)?;
                Ok(pb::AlterPartitionResponse { partitions })
            }),
        )
        .await
    }

    async fn allocate_producer_ids(
        &self,
        request: Request<pb::AllocateProducerIdsRequest>,
    ) -> Result<Response<pb::AllocateProducerIdsResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let controller = Arc::clone(&self.controller);
        handle(
            "AllocateProducerIds",
            &meta,
            detached(async move {
                let start = controller
                    .allocate_producer_ids(req.broker_id, req.broker_epoch)
                    .await
                    .map_err(to_status)?;
                Ok(pb::AllocateProducerIdsResponse {
                    producer_id_start: start,
                    producer_id_len: crate::controller::PRODUCER_ID_BLOCK_SIZE as i32,
                })
            }),
        )
        .await
    }

    async fn register_coordinator(
        &self,
        request: Request<pb::RegisterCoordinatorRequest>,
    ) -> Result<Response<pb::RegisterCoordinatorResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let controller = Arc::clone(&self.controller);
        handle(
            "RegisterCoordinator",
            &meta,
            detached(async move {
                let coordinator_epoch = controller
                    .register_coordinator(req)
                    .await
                    .map_err(to_status)?;
                Ok(pb::RegisterCoordinatorResponse {
                    coordinator_epoch,
                    session_timeout_ms: controller.coordinator_session_timeout().as_millis() as i64,
                })
            }),
        )
        .await
    }

    async fn coordinator_heartbeat(
        &self,
        request: Request<pb::CoordinatorHeartbeatRequest>,
    ) -> Result<Response<pb::CoordinatorHeartbeatResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let controller = Arc::clone(&self.controller);
        handle(
            "CoordinatorHeartbeat",
            &meta,
            detached(async move {
                controller
                    .coordinator_heartbeat(req)
                    .await
                    .map_err(to_status)
            }),
        )
        .await
    }

    async fn create_topics(
        &self,
        request: Request<pb::CreateTopicsRequest>,
    ) -> Result<Response<pb::CreateTopicsResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let controller = Arc::clone(&self.controller);
        handle(
            "CreateTopics",
            &meta,
            detached(async move {
                let topics = controller.create_topics(req).await.map_err(to_status)?;
                Ok(pb::CreateTopicsResponse { topics })
            }),
        )
        .await
    }

    async fn delete_topics(
        &self,
        request: Request<pb::DeleteTopicsRequest>,
    ) -> Result<Response<pb::DeleteTopicsResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let controller = Arc::clone(&self.controller);
        handle(
            "DeleteTopics",
            &meta,
            detached(async move {
                let topics = controller
                    .delete_topics(req.names)
                    .await
                    .map_err(to_status)?;
                Ok(pb::DeleteTopicsResponse { topics })
            }),
        )
        .await
    }

    async fn create_partitions(
        &self,
        request: Request<pb::CreatePartitionsRequest>,
    ) -> Result<Response<pb::CreatePartitionsResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let controller = Arc::clone(&self.controller);
        handle(
            "CreatePartitions",
            &meta,
            detached(async move {
                let result = controller.create_partitions(req).await.map_err(to_status)?;
                Ok(pb::CreatePartitionsResponse {
                    result: Some(result),
                })
            }),
        )
        .await
    }

    async fn describe_cluster(
        &self,
        request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        let (meta, _, _) = request.into_parts();
        handle("DescribeCluster", &meta, async {
            Ok(self.controller.describe_cluster().await)
        })
        .await
    }

    async fn get_metadata(
        &self,
        request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        handle("GetMetadata", &meta, async {
            Ok(self.controller.metadata(req.topics).await)
        })
        .await
    }

    async fn describe_configs(
        &self,
        request: Request<pb::DescribeConfigsRequest>,
    ) -> Result<Response<pb::DescribeConfigsResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        handle("DescribeConfigs", &meta, async {
            let resources = self.controller.describe_configs(req.resources).await;
            Ok(pb::DescribeConfigsResponse { resources })
        })
        .await
    }

    async fn alter_configs(
        &self,
        request: Request<pb::AlterConfigsRequest>,
    ) -> Result<Response<pb::AlterConfigsResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let controller = Arc::clone(&self.controller);
        handle(
            "AlterConfigs",
            &meta,
            detached(async move {
                controller.alter_configs(req).await.map_err(to_status)?;
                Ok(pb::AlterConfigsResponse {})
            }),
        )
        .await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let from = request.get_ref().from_offset;
        if from < 0 {
            return Err(status(
                ErrorCode::InvalidRequest,
                format!("watch offset {from} is negative"),
            ));
        }
        metrics::counter!("runnel_controller_requests_total", "method" => "Watch", "outcome" => "ok").increment(1);
        let controller = Arc::clone(&self.controller);
        let shutdown = self.shutdown.clone();
        let stream = async_stream::try_stream! {
            // Subscribe before reading the store: every event is then either
            // in the store read or in the channel (or both; offsets dedupe).
            let mut live = controller.subscribe();
            let mut next = from;
            loop {
                loop {
                    let page = controller.store().read_log(next, WATCH_PAGE).await
                        .map_err(|e| status(ErrorCode::UnknownServerError, e.to_string()))?;
                    let Some(last) = page.last() else { break };
                    next = last.offset + 1;
                    yield pb::WatchResponse { events: page };
                }
                loop {
                    let received = tokio::select! {
                        () = shutdown.cancelled() => return,
                        r = live.recv() => r,
                    };
                    match received {
                        Ok(events) => {
                            let fresh: Vec<_> = events.iter().filter(|e| e.offset >= next).cloned().collect();
                            if let Some(last) = fresh.last() {
                                next = last.offset + 1;
                                yield pb::WatchResponse { events: fresh };
                            }
                        }
                        // Fell behind the channel: catch up from the store again.
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return,
                    }
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
