//! Connections to the cluster and the client's view of its metadata.
//!
//! One HTTP/2 channel per address, reused by every request to it. Metadata
//! (brokers, leaders, the controller) comes from any broker's `Metadata`
//! call and is refreshed when a request meets a stale leader.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use runnel_common::backoff::Backoff;
use runnel_common::telemetry::TraceInterceptor;
use runnel_common::tls::ClientTls;
use runnel_common::transport;
use runnel_proto::broker::v1 as pb;
use runnel_proto::broker::v1::broker_client::BrokerClient;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1::controller_client::ControllerClient;
use runnel_proto::coordinator::v1::coordinator_client::CoordinatorClient;
use tonic::codegen::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::{ClientError, Result};

/// A broker client that propagates trace context.
pub type Broker = BrokerClient<InterceptedService<Channel, ClientInterceptor>>;
/// A group coordinator client that propagates trace context.
pub type Coordinator = CoordinatorClient<InterceptedService<Channel, ClientInterceptor>>;
/// A controller client that propagates trace context.
pub type Controller = ControllerClient<InterceptedService<Channel, ClientInterceptor>>;

/// The default bootstrap address: a local broker (`runnel dev`).
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9094";

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `bootstrap.servers`: broker gRPC addresses, `host:port`, comma-separated.
    pub bootstrap: String,
    /// `request.timeout.ms`: longest wait for any one request.
    pub request_timeout: Duration,
    /// How long to try to open a connection.
    pub connect_timeout: Duration,
    /// Largest message sent or received (the broker's `socket.request.max.bytes`).
    pub max_message_bytes: usize,
    /// TLS to the cluster's gRPC listeners (the CA to trust, and a client
    /// certificate when the client has one); `None` connects in clear.
    pub tls: Option<Arc<ClientTls>>,
    /// The user to sign in as, checked against the cluster's SCRAM
    /// credentials; `None` signs in with the client certificate, if any.
    pub credentials: Option<Credentials>,
}

/// A user and password to sign in to a secure cluster with.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password (sent over the connection, so use it over TLS).
    pub password: String,
}

// The password stays out of logs and debug output.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Adds the caller's trace context and credentials to every call.
#[derive(Debug, Clone, Default)]
pub struct ClientInterceptor {
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for ClientInterceptor {
    fn call(
        &mut self,
        request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        let mut request = TraceInterceptor.call(request)?;
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert(runnel_common::grpc_auth::AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap: DEFAULT_BOOTSTRAP.to_owned(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_message_bytes: 100 * 1024 * 1024,
            tls: None,
            credentials: None,
        }
    }
}

impl ClientConfig {
    /// A config bootstrapping from `bootstrap`.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ClientConfig {
            bootstrap: bootstrap.into(),
            ..Self::default()
        }
    }
}

/// One partition as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition index.
    pub partition: i32,
    /// Leader broker id (-1: none).
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
}

/// One topic as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Partitions in index order.
    pub partitions: Vec<PartitionMetadata>,
}

/// A broker as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    /// Broker id.
    pub id: i32,
    /// gRPC address, `host:port`.
    pub addr: String,
    /// Rack.
    pub rack: String,
    /// Whether the controller has fenced it.
    pub fenced: bool,
}

/// What the client knows about the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetadata {
    /// Brokers by id.
    pub brokers: HashMap<i32, BrokerMetadata>,
    /// The controller's gRPC address, if known.
    pub controller: Option<String>,
    /// Known topics.
    pub topics: HashMap<String, TopicMetadata>,
    /// Topics the cluster said do not exist (or cannot be used), with why.
    pub topic_errors: HashMap<String, (ErrorCode, String)>,
    /// Cluster id.
    pub cluster_id: String,
    /// Live group coordinators: id → gRPC address.
    pub coordinators: HashMap<i32, String>,
}

fn grpc_addr(endpoints: &[runnel_proto::metadata::v1::Endpoint]) -> Option<String> {
    endpoints
        .iter()
        .find(|e| e.name == "grpc")
        .map(|e| format!("{}:{}", e.host, e.port))
}

/// Connections and metadata shared by admin, producers and consumers.
#[derive(Debug)]
pub struct Cluster {
    config: ClientConfig,
    /// The `authorization` value of the credentials, made once.
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    channels: Mutex<HashMap<String, Channel>>,
    metadata: RwLock<Arc<ClusterMetadata>>,
    /// Bumped whenever `metadata` is replaced, so callers can cache what they derive from it.
    generation: std::sync::atomic::AtomicU64,
    refreshing: tokio::sync::Mutex<()>,
}

impl Cluster {
    /// A cluster reached through `config.bootstrap`; connects lazily.
    pub fn new(config: ClientConfig) -> Arc<Cluster> {
        // A user or password that cannot be an HTTP/2 header value (a
        // newline) would be refused by every server: sent without, the
        // server says the credentials are missing.
        let authorization = config.credentials.as_ref().and_then(|c| {
            runnel_common::grpc_auth::basic_authorization(&c.user, &c.password)
                .parse()
                .ok()
        });
        Arc::new(Cluster {
            config,
            authorization,
            channels: Mutex::new(HashMap::new()),
            metadata: RwLock::new(Arc::new(ClusterMetadata::default())),
            generation: std::sync::atomic::AtomicU64::new(0),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The interceptor that signs calls in with the configured credentials.
    fn interceptor(&self) -> ClientInterceptor {
        ClientInterceptor {
            authorization: self.authorization.clone(),
        }
    }

    /// The client config.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn channel(&self, addr: &str) -> Result<Channel> {
        if let Some(c) = self.channels.lock().get(addr) {
            return Ok(c.clone());
        }
        let invalid = |e: tonic::transport::Error| {
            ClientError::Invalid(format!("invalid address {addr:?}: {e}"))
        };
        let channel = transport::connect_lazy(
            transport::endpoint(Endpoint::from_shared(format!("http://{addr}")).map_err(invalid)?)
                .connect_timeout(self.config.connect_timeout)
                .timeout(self.config.request_timeout),
            self.config.tls.as_ref(),
        );
        self.channels
            .lock()
            .insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// A client for the broker at `addr`.
    pub fn broker_at(&self, addr: &str) -> Result<Broker> {
        let max = self.config.max_message_bytes;
        Ok(
            BrokerClient::with_interceptor(self.channel(addr)?, self.interceptor())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
    }

    /// A client for the controller (found through the brokers' metadata).
    pub async fn controller(&self) -> Result<(String, Controller)> {
        let known = self.metadata().controller.clone();
        let addr = match known {
            Some(a) => a,
            None => self
                .refresh(&[], false)
                .await?
                .controller
                .clone()
                .ok_or_else(|| {
                    ClientError::server(
                        ErrorCode::NotController,
                        "the cluster reported no controller",
                    )
                })?,
        };
        let client = ControllerClient::with_interceptor(self.channel(&addr)?, self.interceptor());
        Ok((addr, client))
    }

    /// Calls the controller with `call(client, request)`, following the
    /// active controller when it moves: a controller that is down, or that
    /// answers NOT_CONTROLLER (it knows no active controller, or lost that
    /// role), is looked up again through the brokers and the call retried
    /// until the request timeout. A retried write may have been applied the
    /// first time (as in Kafka, a retried CreateTopics can then answer
    /// TOPIC_ALREADY_EXISTS).
    pub async fn call_controller<Req, T, F, Fut>(
        &self,
        request: Req,
        mut call: F,
    ) -> Result<tonic::Response<T>>
    where
        Req: Clone,
        F: FnMut(Controller, Req) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = std::time::Instant::now() + self.config.request_timeout;
        // Short: an election takes about a second and the caller waits on it.
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(200));
        loop {
            let (addr, client) = self.controller().await?;
            let error = match call(client, request.clone()).await {
                Ok(response) => return Ok(response),
                Err(status) => ClientError::from_status(&addr, status),
            };
            let moved = matches!(error, ClientError::Unreachable { .. })
                || matches!(
                    error,
                    ClientError::Server {
                        code: ErrorCode::NotController,
                        ..
                    }
                );
            let delay = backoff.next_delay();
            if !moved || std::time::Instant::now() + delay > deadline {
                return Err(error);
            }
            tracing::debug!(controller = %addr, error = %error, "controller moved; looking it up again");
            tokio::time::sleep(delay).await;
            // Brokers learn the active controller from their heartbeats.
            let _ = self.refresh(&[], false).await;
        }
    }

    /// The metadata as last fetched.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        Arc::clone(&self.metadata.read())
    }

    /// Addresses to ask when any broker will do: the bootstrap list, then every known broker.
    pub fn broker_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self
            .config
            .bootstrap
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        for b in self.metadata().brokers.values() {
            if !addrs.contains(&b.addr) {
                addrs.push(b.addr.clone());
            }
        }
        addrs
    }

    /// Fetches metadata for `topics` (all topics when empty) from the
    /// bootstrap brokers or any known broker, creating missing topics if
    /// `auto_create` and the broker allows it.
    pub async fn refresh(
        &self,
        topics: &[String],
        auto_create: bool,
    ) -> Result<Arc<ClusterMetadata>> {
        let _one_at_a_time = self.refreshing.lock().await;
        let addrs = self.broker_addrs();
        let mut last_error = ClientError::Invalid("no bootstrap address given".into());
        for addr in addrs {
            let mut client = self.broker_at(&addr)?;
            let request = pb::MetadataRequest {
                topics: topics.to_vec(),
                allow_auto_topic_creation: auto_create,
            };
            match client.metadata(request).await {
                Ok(response) => {
                    let fresh = Arc::new(self.merge(response.into_inner(), topics));
                    *self.metadata.write() = Arc::clone(&fresh);
                    self.generation
                        .fetch_add(1, std::sync::atomic::Ordering::Release);
                    return Ok(fresh);
                }
                Err(status) => last_error = ClientError::from_status(&addr, status),
            }
        }
        Err(last_error)
    }

    fn merge(&self, response: pb::MetadataResponse, asked: &[String]) -> ClusterMetadata {
        let old = self.metadata();
        let mut md = ClusterMetadata {
            brokers: response
                .brokers
                .iter()
                .filter_map(|b| {
                    Some((
                        b.broker_id,
                        BrokerMetadata {
                            id: b.broker_id,
                            addr: grpc_addr(&b.endpoints)?,
                            rack: b.rack.clone(),
                            fenced: b.fenced,
                        },
                    ))
                })
                .collect(),
            controller: grpc_addr(&response.controller_endpoints),
            // A refresh of some topics keeps what is known of the others.
            topics: if asked.is_empty() {
                HashMap::new()
            } else {
                old.topics.clone()
            },
            topic_errors: if asked.is_empty() {
                HashMap::new()
            } else {
                old.topic_errors.clone()
            },
            cluster_id: response.cluster_id,
            coordinators: response
                .coordinators
                .iter()
                .filter_map(|c| Some((c.coordinator_id, grpc_addr(&c.endpoints)?)))
                .collect(),
        };
        for t in response.topics {
            if t.error_code() == ErrorCode::None {
                md.topic_errors.remove(&t.name);
                md.topics.insert(
                    t.name.clone(),
                    TopicMetadata {
                        name: t.name,
                        partitions: t
                            .partitions
                            .into_iter()
                            .map(|p| PartitionMetadata {
                                partition: p.partition,
                                leader: p.leader,
                                leader_epoch: p.leader_epoch,
                                replicas: p.replicas,
                                isr: p.isr,
                            })
                            .collect(),
                    },
                );
            } else {
                md.topics.remove(&t.name);
                md.topic_errors
                    .insert(t.name.clone(), (t.error_code(), t.error_message));
            }
        }
        md
    }

    /// A topic's metadata, fetching it if not known yet.
    pub async fn topic(&self, name: &str, auto_create: bool) -> Result<TopicMetadata> {
        if let Some(t) = self.metadata().topics.get(name) {
            return Ok(t.clone());
        }
        let md = self.refresh(&[name.to_owned()], auto_create).await?;
        if let Some(t) = md.topics.get(name) {
            return Ok(t.clone());
        }
        let (code, message) = md.topic_errors.get(name).cloned().unwrap_or((
            ErrorCode::UnknownTopicOrPartition,
            format!("topic {name} does not exist"),
        ));
        Err(ClientError::server(code, message))
    }

    /// The coordinator of `group` (Kafka's FindCoordinator), asked of any
    /// broker: its id and gRPC address. COORDINATOR_NOT_AVAILABLE while no
    /// live coordinator owns the group's partition of `__consumer_offsets`.
    pub async fn find_coordinator(&self, group: &str) -> Result<(i32, String)> {
        self.find(group, pb::CoordinatorKeyType::Group).await
    }

    /// The transaction coordinator serving `transactional_id` (Kafka's
    /// FindCoordinator with key type TRANSACTION): its id and gRPC address.
    pub async fn find_transaction_coordinator(
        &self,
        transactional_id: &str,
    ) -> Result<(i32, String)> {
        self.find(transactional_id, pb::CoordinatorKeyType::Transaction)
            .await
    }

    async fn find(&self, key: &str, key_type: pb::CoordinatorKeyType) -> Result<(i32, String)> {
        let mut last_error = ClientError::Invalid("no bootstrap address given".into());
        for addr in self.broker_addrs() {
            let mut client = self.broker_at(&addr)?;
            let request = pb::FindCoordinatorRequest {
                key: key.to_owned(),
                key_type: key_type as i32,
            };
            match client.find_coordinator(request).await {
                Ok(r) => {
                    let r = r.into_inner();
                    return match r.error_code() {
                        ErrorCode::None => Ok((r.coordinator_id, format!("{}:{}", r.host, r.port))),
                        code => Err(ClientError::server(code, r.error_message)),
                    };
                }
                Err(status) => last_error = ClientError::from_status(&addr, status),
            }
        }
        Err(last_error)
    }

    /// A client for the group coordinator at `addr`.
    pub fn coordinator_at(&self, addr: &str) -> Result<Coordinator> {
        Ok(CoordinatorClient::with_interceptor(
            self.channel(addr)?,
            self.interceptor(),
        ))
    }

    /// Changes whenever the metadata is refreshed.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// How many partitions `topic` has in the current metadata (no request).
    pub fn partition_count(&self, topic: &str) -> Option<usize> {
        self.metadata()
            .topics
            .get(topic)
            .map(|t| t.partitions.len())
    }

    /// The address of the broker leading `topic`-`partition`, from the current metadata.
    pub fn leader_addr(&self, topic: &str, partition: i32) -> Option<(i32, String)> {
        let md = self.metadata();
        let leader = md
            .topics
            .get(topic)?
            .partitions
            .get(partition as usize)?
            .leader;
        md.brokers.get(&leader).map(|b| (leader, b.addr.clone()))
    }
}
