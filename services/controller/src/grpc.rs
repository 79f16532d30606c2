//! The controller's gRPC service: translates requests into calls on
//! [`Controller`] and its errors into statuses. No rules live here.
//!
//! Every controller answers every call: a controller that is not the active
//! one forwards the call to the one that is (one hop; a forwarded call is
//! never forwarded again) and passes its answer back, so brokers and
//! clients need any live controller, not the active one. `Watch` is served
//! by each controller from its own applied log.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use runnel_common::acl::{CLUSTER_NAME, Operation, ResourceType};
use runnel_common::errors::status;
use runnel_common::grpc_auth::{GrpcAuth, GrpcCaller};
use runnel_common::netfault::{NetFault, PEER_HEADER, PeerName};
use runnel_common::shutdown::CancellationToken;
use runnel_common::telemetry::server_span;
use runnel_common::tls::ClientTls;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::controller::v1::controller_client::ControllerClient;
use runnel_proto::controller::v1::controller_server::Controller as ControllerApi;
use runnel_proto::metadata::v1::{ConfigResourceType, MetadataEvent};
use tokio::sync::broadcast::error::RecvError;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::controller::{Controller, ControllerError, Refusal};

type Caller = GrpcCaller<Controller>;

/// `caller` may do `operation` on the config resource `resource` (a topic,
/// or the cluster for broker configs), as Kafka's DescribeConfigs and
/// AlterConfigs require.
fn check_config(
    caller: &Caller,
    operation: Operation,
    resource: Option<&runnel_proto::metadata::v1::ConfigResource>,
) -> Result<(), Status> {
    match resource {
        Some(r) if r.r#type == ConfigResourceType::Topic as i32 => {
            caller.check(operation, ResourceType::Topic, &r.name)
        }
        _ => caller.check_cluster(operation),
    }
}

/// Events per watch response when catching up from the store.
const WATCH_PAGE: i64 = 1000;

/// Marks a call one controller forwarded to another.
const FORWARDED_HEADER: &str = "runnel-forwarded";

/// The gRPC face of a [`Controller`].
#[derive(Debug, Clone)]
pub struct ControllerService {
    controller: Arc<Controller>,
    fault: NetFault,
    /// TLS to the other controllers, with this one's service certificate.
    tls: Option<Arc<ClientTls>>,
    /// Who calls, and what they may do.
    auth: GrpcAuth<Controller>,
    shutdown: CancellationToken,
    /// Clients for the other controllers, by address.
    peers: Arc<parking_lot::Mutex<HashMap<String, ControllerClient<Channel>>>>,
}

impl ControllerService {
    /// Serves `controller`; `fault` cuts its forwarding in tests; watch
    /// streams end when `shutdown` fires.
    pub fn new(
        controller: Arc<Controller>,
        fault: NetFault,
        tls: Option<Arc<ClientTls>>,
        auth: GrpcAuth<Controller>,
        shutdown: CancellationToken,
    ) -> Self {
        ControllerService {
            controller,
            fault,
            tls,
            auth,
            shutdown,
            peers: Arc::default(),
        }
    }

    fn peer(&self, addr: &str) -> Result<ControllerClient<Channel>, Status> {
        let mut peers = self.peers.lock();
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let channel =
            runnel_common::transport::lazy_channel(addr, Duration::from_secs(1), self.tls.as_ref())
                .map_err(|source| {
                    to_status(ControllerError::PeerAddress {
                        addr: addr.to_owned(),
                        source,
                    })
                })?;
        let client = ControllerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        peers.insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    /// The caller of `request`, authenticated.
    fn caller<T>(&self, request: &Request<T>, api: &'static str) -> Result<Caller, Status> {
        self.auth.caller(request, api)
    }

    /// Whether this call should go to the active controller instead.
    fn should_forward(&self, meta: &tonic::metadata::MetadataMap) -> bool {
        !self.controller.is_active() && meta.get(FORWARDED_HEADER).is_none()
    }

    /// Sends `req` to the active controller with `call` and returns its answer.
    async fn forward<Req, Resp, F, Fut>(&self, req: Req, call: F) -> Result<Resp, Status>
    where
        F: FnOnce(ControllerClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let Some((_, addr)) = self
            .controller
            .active()
            .filter(|(id, _)| *id != self.controller.node_id())
        else {
            return Err(to_status(self.controller.not_active()));
        };
        if self.fault.is_isolated() {
            return Err(to_status(ControllerError::ForwardingCut));
        }
        let mut request = Request::new(req);
        request.metadata_mut().insert(
            FORWARDED_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        request.metadata_mut().insert(
            PEER_HEADER,
            PeerName::controller(self.controller.node_id()).header_value(),
        );
        call(self.peer(&addr)?, request)
            .await
            .map(Response::into_inner)
    }
}

/// Answers the call on the active controller: forwards it there unless
/// this is the active controller (or the call was already forwarded once).
macro_rules! on_active {
    ($self:ident, $meta:ident, $req:ident, $name:literal, $method:ident) => {
        if $self.should_forward(&$meta) {
            return handle(
                $name,
                &$meta,
                $self.forward($req, |mut c, r| async move { c.$method(r).await }),
            )
            .await;
        }
    };
}

/// The one place a controller error becomes a status: its code and message.
fn to_status(e: ControllerError) -> Status {
    if matches!(e, ControllerError::Store(_) | ControllerError::Apply(_)) {
        tracing::error!(error = %e, "controller operation failed");
    }
    status(e.code(), e.to_string())
}

/// What woke a watch stream up.
enum WatchWake {
    /// Events applied (or the subscription lagged or closed).
    Applied(Result<Arc<Vec<MetadataEvent>>, RecvError>),
    /// Another controller became active, or none is known.
    Elected(Option<i32>),
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
        .unwrap_or_else(|e| Err(to_status(ControllerError::TaskFailed(e))))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ControllerApi for ControllerService {
    async fn register_broker(
        &self,
        request: Request<pb::RegisterBrokerRequest>,
    ) -> Result<Response<pb::RegisterBrokerResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "RegisterBroker", register_broker);
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
        on_active!(self, meta, req, "BrokerHeartbeat", broker_heartbeat);
        let controller = Arc::clone(&self.controller);
        handle(
            "BrokerHeartbeat",
            &meta,
            detached(async move {
                let mut response = controller.heartbeat(req).await.map_err(to_status)?;
                response.controller_endpoints = controller.endpoints().to_vec();
                Ok(response)
            }),
        )
        .await
    }

    async fn alter_partition(
        &self,
        request: Request<pb::AlterPartitionRequest>,
    ) -> Result<Response<pb::AlterPartitionResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "AlterPartition", alter_partition);
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
        on_active!(
            self,
            meta,
            req,
            "AllocateProducerIds",
            allocate_producer_ids
        );
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
        on_active!(self, meta, req, "RegisterCoordinator", register_coordinator);
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
        on_active!(
            self,
            meta,
            req,
            "CoordinatorHeartbeat",
            coordinator_heartbeat
        );
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
        let caller = self.caller(&request, "CreateTopics")?;
        if caller.enabled() && !caller.sees(Operation::Create, ResourceType::Cluster, CLUSTER_NAME)
        {
            for topic in &request.get_ref().topics {
                caller.check(Operation::Create, ResourceType::Topic, &topic.name)?;
            }
        }
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "CreateTopics", create_topics);
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
        let caller = self.caller(&request, "DeleteTopics")?;
        for name in &request.get_ref().names {
            caller.check(Operation::Delete, ResourceType::Topic, name)?;
        }
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "DeleteTopics", delete_topics);
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
        self.caller(&request, "CreatePartitions")?.check(
            Operation::Alter,
            ResourceType::Topic,
            &request.get_ref().topic,
        )?;
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "CreatePartitions", create_partitions);
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
        self.caller(&request, "DescribeCluster")?;
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "DescribeCluster", describe_cluster);
        handle("DescribeCluster", &meta, async {
            Ok(self.controller.describe_cluster().await)
        })
        .await
    }

    async fn get_metadata(
        &self,
        request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let caller = self.caller(&request, "GetMetadata")?;
        // Named topics the caller may not describe are refused; a listing
        // of every topic leaves them out.
        for topic in &request.get_ref().topics {
            caller.check(Operation::Describe, ResourceType::Topic, topic)?;
        }
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "GetMetadata", get_metadata);
        handle("GetMetadata", &meta, async {
            let mut answer = self.controller.metadata(req.topics).await;
            if caller.enabled() {
                answer
                    .topics
                    .retain(|t| caller.sees(Operation::Describe, ResourceType::Topic, &t.name));
            }
            Ok(answer)
        })
        .await
    }

    async fn describe_configs(
        &self,
        request: Request<pb::DescribeConfigsRequest>,
    ) -> Result<Response<pb::DescribeConfigsResponse>, Status> {
        let caller = self.caller(&request, "DescribeConfigs")?;
        for resource in &request.get_ref().resources {
            check_config(&caller, Operation::DescribeConfigs, Some(resource))?;
        }
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "DescribeConfigs", describe_configs);
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
        let caller = self.caller(&request, "AlterConfigs")?;
        check_config(
            &caller,
            Operation::AlterConfigs,
            request.get_ref().resource.as_ref(),
        )?;
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "AlterConfigs", alter_configs);
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

    async fn alter_user_scram_credentials(
        &self,
        request: Request<pb::AlterUserScramCredentialsRequest>,
    ) -> Result<Response<pb::AlterUserScramCredentialsResponse>, Status> {
        self.caller(&request, "AlterUserScramCredentials")?
            .check_cluster(Operation::Alter)?;
        let (meta, _, req) = request.into_parts();
        on_active!(
            self,
            meta,
            req,
            "AlterUserScramCredentials",
            alter_user_scram_credentials
        );
        let controller = Arc::clone(&self.controller);
        handle(
            "AlterUserScramCredentials",
            &meta,
            detached(async move {
                let results = controller
                    .alter_user_scram_credentials(req)
                    .await
                    .map_err(to_status)?;
                Ok(pb::AlterUserScramCredentialsResponse { results })
            }),
        )
        .await
    }

    async fn describe_user_scram_credentials(
        &self,
        request: Request<pb::DescribeUserScramCredentialsRequest>,
    ) -> Result<Response<pb::DescribeUserScramCredentialsResponse>, Status> {
        self.caller(&request, "DescribeUserScramCredentials")?
            .check_cluster(Operation::Describe)?;
        let (meta, _, req) = request.into_parts();
        on_active!(
            self,
            meta,
            req,
            "DescribeUserScramCredentials",
            describe_user_scram_credentials
        );
        let controller = Arc::clone(&self.controller);
        handle("DescribeUserScramCredentials", &meta, async move {
            Ok(pb::DescribeUserScramCredentialsResponse {
                users: controller.describe_user_scram_credentials(),
            })
        })
        .await
    }

    async fn alter_client_quotas(
        &self,
        request: Request<pb::AlterClientQuotasRequest>,
    ) -> Result<Response<pb::AlterClientQuotasResponse>, Status> {
        self.caller(&request, "AlterClientQuotas")?
            .check_cluster(Operation::AlterConfigs)?;
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "AlterClientQuotas", alter_client_quotas);
        let controller = Arc::clone(&self.controller);
        handle(
            "AlterClientQuotas",
            &meta,
            detached(async move {
                let results = controller
                    .alter_client_quotas(req)
                    .await
                    .map_err(to_status)?;
                Ok(pb::AlterClientQuotasResponse { results })
            }),
        )
        .await
    }

    async fn describe_client_quotas(
        &self,
        request: Request<pb::DescribeClientQuotasRequest>,
    ) -> Result<Response<pb::DescribeClientQuotasResponse>, Status> {
        self.caller(&request, "DescribeClientQuotas")?
            .check_cluster(Operation::DescribeConfigs)?;
        let (meta, _, req) = request.into_parts();
        on_active!(
            self,
            meta,
            req,
            "DescribeClientQuotas",
            describe_client_quotas
        );
        let controller = Arc::clone(&self.controller);
        handle("DescribeClientQuotas", &meta, async move {
            Ok(match controller.describe_client_quotas(&req) {
                Ok(entries) => pb::DescribeClientQuotasResponse {
                    entries,
                    ..Default::default()
                },
                Err(message) => pb::DescribeClientQuotasResponse {
                    error_code: ErrorCode::InvalidRequest as i32,
                    error_message: message,
                    entries: Vec::new(),
                },
            })
        })
        .await
    }

    async fn create_acls(
        &self,
        request: Request<pb::CreateAclsRequest>,
    ) -> Result<Response<pb::CreateAclsResponse>, Status> {
        self.caller(&request, "CreateAcls")?
            .check_cluster(Operation::Alter)?;
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "CreateAcls", create_acls);
        let controller = Arc::clone(&self.controller);
        handle(
            "CreateAcls",
            &meta,
            detached(async move {
                let results = controller.create_acls(req).await.map_err(to_status)?;
                Ok(pb::CreateAclsResponse { results })
            }),
        )
        .await
    }

    async fn describe_acls(
        &self,
        request: Request<pb::DescribeAclsRequest>,
    ) -> Result<Response<pb::DescribeAclsResponse>, Status> {
        self.caller(&request, "DescribeAcls")?
            .check_cluster(Operation::Describe)?;
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "DescribeAcls", describe_acls);
        let controller = Arc::clone(&self.controller);
        handle("DescribeAcls", &meta, async move {
            Ok(
                match controller.describe_acls(&req.filter.unwrap_or_default()) {
                    Ok(acls) => pb::DescribeAclsResponse {
                        acls,
                        ..Default::default()
                    },
                    Err(message) => pb::DescribeAclsResponse {
                        error_code: ErrorCode::InvalidRequest as i32,
                        error_message: message,
                        acls: Vec::new(),
                    },
                },
            )
        })
        .await
    }

    async fn delete_acls(
        &self,
        request: Request<pb::DeleteAclsRequest>,
    ) -> Result<Response<pb::DeleteAclsResponse>, Status> {
        self.caller(&request, "DeleteAcls")?
            .check_cluster(Operation::Alter)?;
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "DeleteAcls", delete_acls);
        let controller = Arc::clone(&self.controller);
        handle(
            "DeleteAcls",
            &meta,
            detached(async move {
                let results = controller.delete_acls(req).await.map_err(to_status)?;
                Ok(pb::DeleteAclsResponse { results })
            }),
        )
        .await
    }

    async fn alter_partition_reassignments(
        &self,
        request: Request<pb::AlterPartitionReassignmentsRequest>,
    ) -> Result<Response<pb::AlterPartitionReassignmentsResponse>, Status> {
        self.caller(&request, "AlterPartitionReassignments")?
            .check_cluster(Operation::Alter)?;
        let (meta, _, req) = request.into_parts();
        on_active!(
            self,
            meta,
            req,
            "AlterPartitionReassignments",
            alter_partition_reassignments
        );
        let controller = Arc::clone(&self.controller);
        handle(
            "AlterPartitionReassignments",
            &meta,
            detached(async move {
                let partitions = controller
                    .alter_partition_reassignments(req)
                    .await
                    .map_err(to_status)?;
                Ok(pb::AlterPartitionReassignmentsResponse { partitions })
            }),
        )
        .await
    }

    async fn elect_leaders(
        &self,
        request: Request<pb::ElectLeadersRequest>,
    ) -> Result<Response<pb::ElectLeadersResponse>, Status> {
        self.caller(&request, "ElectLeaders")?
            .check_cluster(Operation::Alter)?;
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "ElectLeaders", elect_leaders);
        let controller = Arc::clone(&self.controller);
        handle(
            "ElectLeaders",
            &meta,
            detached(async move {
                let partitions = controller.elect_leaders(req).await.map_err(to_status)?;
                Ok(pb::ElectLeadersResponse { partitions })
            }),
        )
        .await
    }

    async fn list_partition_reassignments(
        &self,
        request: Request<pb::ListPartitionReassignmentsRequest>,
    ) -> Result<Response<pb::ListPartitionReassignmentsResponse>, Status> {
        self.caller(&request, "ListPartitionReassignments")?
            .check_cluster(Operation::Describe)?;
        let (meta, _, req) = request.into_parts();
        on_active!(
            self,
            meta,
            req,
            "ListPartitionReassignments",
            list_partition_reassignments
        );
        handle("ListPartitionReassignments", &meta, async {
            Ok(pb::ListPartitionReassignmentsResponse {
                reassignments: self.controller.list_partition_reassignments(&req.topics),
            })
        })
        .await
    }

    async fn add_controller(
        &self,
        request: Request<pb::AddControllerRequest>,
    ) -> Result<Response<pb::AddControllerResponse>, Status> {
        self.caller(&request, "AddController")?
            .check_cluster(Operation::Alter)?;
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "AddController", add_controller);
        let controller = Arc::clone(&self.controller);
        handle(
            "AddController",
            &meta,
            detached(async move {
                controller
                    .add_controller(req.controller_id, req.address)
                    .await
                    .map_err(to_status)?;
                Ok(pb::AddControllerResponse {})
            }),
        )
        .await
    }

    async fn remove_controller(
        &self,
        request: Request<pb::RemoveControllerRequest>,
    ) -> Result<Response<pb::RemoveControllerResponse>, Status> {
        self.caller(&request, "RemoveController")?
            .check_cluster(Operation::Alter)?;
        let (meta, _, req) = request.into_parts();
        on_active!(self, meta, req, "RemoveController", remove_controller);
        let controller = Arc::clone(&self.controller);
        handle(
            "RemoveController",
            &meta,
            detached(async move {
                controller
                    .remove_controller(req.controller_id)
                    .await
                    .map_err(to_status)?;
                Ok(pb::RemoveControllerResponse {})
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
            return Err(to_status(Refusal::NegativeWatchOffset { from }.into()));
        }
        metrics::counter!("runnel_controller_requests_total", "method" => "Watch", "outcome" => "ok").increment(1);
        let controller = Arc::clone(&self.controller);
        let shutdown = self.shutdown.clone();
        let stream = async_stream::try_stream! {
            // Subscribe before reading the store: every event is then either
            // in the store read or in the channel (or both; offsets dedupe).
            let mut live = controller.subscribe();
            let mut active = controller.active_changes();
            let active_id = |a: Option<i32>| a.unwrap_or(-1);
            let mut next = from;
            loop {
                loop {
                    let page = controller.store().read_log(next, WATCH_PAGE).await
                        .map_err(|e| to_status(e.into()))?;
                    let Some(last) = page.last() else { break };
                    next = last.offset + 1;
                    yield pb::WatchResponse { events: page, active_controller_id: active_id(active.current()) };
                }
                loop {
                    let received = tokio::select! {
                        () = shutdown.cancelled() => return,
                        r = live.recv() => WatchWake::Applied(r),
                        changed = active.changed() => match changed {
                            Ok(now) => WatchWake::Elected(now),
                            Err(_) => return,
                        },
                    };
                    match received {
                        // Told alone, at once: the broker heartbeats the new one.
                        WatchWake::Elected(now) => {
                            yield pb::WatchResponse { events: Vec::new(), active_controller_id: active_id(now) };
                        }
                        WatchWake::Applied(Ok(events)) => {
                            let fresh: Vec<_> = events.iter().filter(|e| e.offset >= next).cloned().collect();
                            if let Some(last) = fresh.last() {
                                next = last.offset + 1;
                            }
                            // In pages, as from the store: the creation of a
                            // 100,000-partition topic is one entry, and as one
                            // message it would pass a client's 4 MB limit.
                            for page in fresh.chunks(WATCH_PAGE as usize) {
                                yield pb::WatchResponse { events: page.to_vec(), active_controller_id: active_id(active.current()) };
                            }
                        }
                        // Fell behind the channel: catch up from the store again.
                        WatchWake::Applied(Err(RecvError::Lagged(_))) => break,
                        WatchWake::Applied(Err(RecvError::Closed)) => return,
                    }
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
