//! `runnel-broker`: hosts partition logs and serves produce, fetch, offset
//! lookups and metadata.
//!
//! - [`Config`] and [`start`]: run a broker (the `runnel-broker` binary and
//!   `runnel dev` both call this).
//! - `metadata`: registration, heartbeats and the metadata watch.
//! - `log_manager`: the hosted logs, kept in line with the metadata;
//!   `partition`: one of them; `checkpoint`: their high watermarks on disk.
//! - `service`: the request logic, one file per family of requests
//!   (`service/produce.rs`, `service/fetch.rs`, ...); `grpc`: the API over
//!   it; `kafka`: the Kafka wire protocol over it (`kafka/produce.rs`,
//!   `kafka/fetch.rs`, ...); `errors`: why a request failed.
//! - `io`: the disk I/O threads; `maintenance`: retention, flushing, compaction.
//! - `quotas`: client quotas (byte rates, request time, mutations) on the
//!   Kafka listeners.

pub mod authz;
mod checkpoint;
mod config;
mod errors;
mod grpc;
pub mod io;
pub mod kafka;
pub mod log_manager;
mod maintenance;
pub mod metadata;
pub mod partition;
pub mod quotas;
mod replica;
pub mod replication_quota;
pub mod service;

use runnel_common::transport::GrpcSecurity;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runnel_common::admin::{self, Readiness};
use runnel_common::service::{BindError, Tasks, bind};
use runnel_common::shutdown::CancellationToken;
use runnel_log::CleanerConfig;
use runnel_proto::broker::v1::broker_server::BrokerServer;
use runnel_proto::metadata::v1::Endpoint;
use tokio::net::TcpListener;

pub use config::Config;
pub use grpc::BrokerService;

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The data directory or I/O threads could not be set up.
    #[error("cannot set up {what}: {source}")]
    Setup {
        /// What.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A setting is invalid.
    #[error("invalid broker config: {0}")]
    Config(String),
    /// The controller address is malformed.
    #[error("invalid controller address {addr:?}: {message}")]
    Controller {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
}

/// A running broker.
#[derive(Debug)]
pub struct BrokerHandle {
    /// Where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// Where the external gRPC listener listens, if configured.
    pub external_grpc_addr: Option<SocketAddr>,
    /// Where the Kafka protocol listener listens.
    pub kafka_addr: SocketAddr,
    /// Where the external Kafka listener listens, if configured.
    pub external_kafka_addr: Option<SocketAddr>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_addr: SocketAddr,
    /// Ready once registered and caught up with the metadata.
    pub readiness: Readiness,
    /// The hosted logs.
    pub logs: Arc<log_manager::LogManager>,
    /// The metadata as this broker has applied it.
    pub metadata: Arc<metadata::MetadataCache>,
    servers: Tasks,
    link: tokio::task::JoinHandle<()>,
    io: Arc<io::IoPool>,
}

impl BrokerHandle {
    /// Stops the broker cleanly: stops accepting, finishes in-flight
    /// requests, tells the controller, flushes and closes every log.
    pub async fn shutdown(mut self) {
        self.servers.stop().await;
        self.wait().await;
    }

    /// Stops the broker without flushing or closing its logs, as a crash
    /// would (what was written stays in the page cache, as after `kill -9`);
    /// the next start recovers the logs.
    pub async fn kill(mut self) {
        self.servers.stop().await;
        self.link.abort();
        let _ = self.link.await;
        self.logs.abandon();
    }

    /// A token that stops the broker when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.servers.token()
    }

    /// Waits until the broker has stopped (its token was cancelled).
    pub async fn wait(mut self) {
        self.servers.join().await;
        let _ = self.link.await;
        self.logs.close_all().await;
        drop(self.logs);
        if let Ok(io) = Arc::try_unwrap(self.io) {
            io.shutdown();
        }
        tracing::info!("broker stopped");
    }
}

/// Starts a broker: binds its listeners, registers with the controller (in
/// the background, retrying until it answers) and serves until `shutdown`.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<BrokerHandle, StartError> {
    let protocol = |name: &str| config::SecurityProtocol::parse(name).map_err(StartError::Config);
    let internal_protocol = protocol(&config.kafka_security_protocol)?;
    let external_protocol = protocol(&config.kafka_external_security_protocol)?;
    let sasl_mechanisms = config.sasl_mechanisms().map_err(StartError::Config)?;
    let kafka_tls = if internal_protocol.tls()
        || (config.kafka_external_listen.is_some() && external_protocol.tls())
    {
        Some(config.kafka_tls().map_err(StartError::Config)?)
    } else {
        None
    };
    let security = config.grpc_security().map_err(StartError::Config)?;
    let admin_tls = config
        .admin_tls()
        .map_err(|e| StartError::Config(e.to_string()))?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::Setup {
        what: format!("data directory {}", config.data_dir.display()),
        source,
    })?;
    let (grpc_listener, grpc_addr) = bind(config.listen).await?;
    let (admin_listener, admin_addr) = bind(config.admin_listen).await?;
    let external = match config.external_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let (kafka_listener, kafka_addr) = bind(config.kafka_listen).await?;
    let kafka_external = match config.kafka_external_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let host = config
        .advertised_host
        .clone()
        .unwrap_or_else(|| grpc_addr.ip().to_string());
    let threads = if config.io_threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.io_threads
    };
    let io = Arc::new(
        io::IoPool::new(threads, config.io_queue_depth).map_err(|source| StartError::Setup {
            what: "I/O threads".into(),
            source,
        })?,
    );
    let logs = Arc::new(
        log_manager::LogManager::new(
            config.data_dir.clone(),
            config.broker_id,
            Arc::clone(&io),
            log_manager::open_files_budget(config.log_max_open_files),
        )
        .map_err(|source| StartError::Setup {
            what: format!("data directory {}", config.data_dir.display()),
            source,
        })?,
    );
    let cache = Arc::new(metadata::MetadataCache::default());
    let controller = metadata::controller_client(&config.controller, security.client.as_ref())
        .map_err(|e| StartError::Controller {
            addr: config.controller.clone(),
            message: e.to_string(),
        })?;
    let readiness = Readiness::new();

    let mut endpoints =
        runnel_common::metadata::service_endpoints(&host, grpc_addr.port(), admin_addr.port());
    if let Some((_, addr)) = &external {
        endpoints.push(Endpoint {
            name: service::EXTERNAL_GRPC_ENDPOINT.into(),
            host: config
                .external_advertised_host
                .clone()
                .unwrap_or_else(|| addr.ip().to_string()),
            port: u32::from(config.external_advertised_port.unwrap_or(addr.port())),
        });
    }
    endpoints.push(Endpoint {
        name: kafka::KAFKA_ENDPOINT.into(),
        host: config
            .kafka_advertised_host
            .clone()
            .or_else(|| config.advertised_host.clone())
            .unwrap_or_else(|| kafka_addr.ip().to_string()),
        port: u32::from(config.kafka_advertised_port.unwrap_or(kafka_addr.port())),
    });
    if let Some((_, addr)) = &kafka_external {
        endpoints.push(Endpoint {
            name: kafka::KAFKA_EXTERNAL_ENDPOINT.into(),
            host: config
                .kafka_external_advertised_host
                .clone()
                .unwrap_or_else(|| addr.ip().to_string()),
            port: u32::from(config.kafka_external_advertised_port.unwrap_or(addr.port())),
        });
    }
    let identity = metadata::Identity {
        broker_id: config.broker_id,
        endpoints,
        rack: config.rack.clone(),
        incarnation_id: uuid::Uuid::new_v4().simple().to_string(),
        heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms.max(10)),
        net_fault: config.net_fault.clone(),
    };
    // The link outlives the servers: it sends the goodbye heartbeat after
    // they stop, so it gets its own token, cancelled once the servers are done.
    let link_token = CancellationToken::new();
    let link = tokio::spawn(metadata::run_link(
        controller.clone(),
        identity,
        Arc::clone(&cache),
        Arc::clone(&logs),
        readiness.clone(),
        link_token.clone(),
    ));

    let isr_controller = controller.clone();
    let kafka_controller = controller.clone();
    let broker = Arc::new(service::Broker::new(
        service::Limits {
            broker_id: config.broker_id,
            auto_create_topics_enable: config.auto_create_topics_enable,
            num_partitions: config.num_partitions,
            default_replication_factor: config.default_replication_factor,
        },
        Arc::clone(&logs),
        Arc::clone(&cache),
        controller,
        security.clone(),
        shutdown.clone(),
    ));
    let grpc_auth = grpc::BrokerAuth::from_settings(
        &security,
        config.grpc_authentication_required,
        config.authorizer(),
        Arc::clone(&cache),
    )
    .map_err(|e| StartError::Config(e.to_string()))?;
    let mut servers = Tasks::new(shutdown.clone());
    let done = link_token.clone();
    let internal = serve_grpc(
        grpc_listener,
        BrokerService::new(Arc::clone(&broker), grpc_auth.clone()),
        &config,
        &security,
        shutdown.clone(),
    );
    servers.spawn(async move {
        internal.await;
        done.cancel();
    });
    let external_grpc_addr = external.as_ref().map(|(_, addr)| *addr);
    if let Some((listener, _)) = external {
        servers.spawn(serve_grpc(
            listener,
            BrokerService::on(
                Arc::clone(&broker),
                service::Listener::External,
                grpc_auth.clone(),
            ),
            &config,
            &security,
            shutdown.clone(),
        ));
    }
    let external_kafka_addr = kafka_external.as_ref().map(|(_, addr)| *addr);
    let versions = Arc::new(kafka::versions());
    let sasl = Arc::new(runnel_kafka::auth::SaslSettings {
        mechanisms: sasl_mechanisms,
        max_reauth: (config.connections_max_reauth_ms > 0)
            .then(|| Duration::from_millis(config.connections_max_reauth_ms)),
        ..runnel_kafka::auth::SaslSettings::new(Arc::clone(&cache) as _)
    });
    let kafka_listeners = std::iter::once((
        kafka_listener,
        service::Listener::Internal,
        "internal",
        internal_protocol,
    ))
    .chain(kafka_external.map(|(listener, _)| {
        (
            listener,
            service::Listener::External,
            "external",
            external_protocol,
        )
    }));
    let authorizer = authz::Authorizer::new(config.authorizer(), Arc::clone(&cache));
    // One set of meters for both listeners: a client's quota is per broker.
    let quotas = Arc::new(quotas::Quotas::new(
        Arc::clone(&cache),
        runnel_common::quota::QuotaWindows {
            samples: config.quota_window_num.clamp(1, 1000),
            window: Duration::from_secs(config.quota_window_size_seconds.clamp(1, 3600)),
        },
    ));
    for (listener, side, name, protocol) in kafka_listeners {
        let api = kafka::KafkaApi::new(
            Arc::clone(&broker),
            Arc::clone(&cache),
            kafka_controller.clone(),
            side,
            config.broker_id,
            authorizer.clone(),
            Arc::clone(&quotas),
        );
        servers.spawn(runnel_kafka::server::serve(
            listener,
            Arc::new(api),
            Arc::clone(&versions),
            runnel_kafka::server::ServerConfig {
                max_request_bytes: config.socket_request_max_bytes,
                listener: name,
                sasl: protocol.sasl().then(|| Arc::clone(&sasl)),
                tls: kafka_tls.clone().filter(|_| protocol.tls()),
                ..Default::default()
            },
            shutdown.clone(),
        ));
    }
    let replication_quotas = Arc::clone(broker.replication_quotas());
    drop(broker);
    if let Some(tls) = kafka_tls {
        servers.spawn(tls.config.watch(
            Duration::from_millis(config.ssl_reload_interval_ms.max(100)),
            shutdown.clone(),
        ));
    }
    servers.spawn(security.watch(
        Duration::from_millis(config.ssl_reload_interval_ms.max(100)),
        shutdown.clone(),
    ));
    let token = shutdown.clone();
    let ready = readiness.clone();
    servers.spawn(async move {
        if let Err(e) = admin::serve(admin_listener, ready, admin_tls, token).await {
            tracing::error!(error = %e, "broker admin server failed");
        }
    });
    servers.spawn(
        replica::Fetchers::new(
            config.broker_id,
            Arc::clone(&logs),
            Arc::clone(&cache),
            config.net_fault.clone(),
            security.client.clone(),
            replication_quotas,
            shutdown.clone(),
        )
        .supervise(),
    );
    servers.spawn(replica::manage_isr(
        config.broker_id,
        Arc::clone(&logs),
        Arc::clone(&cache),
        isr_controller,
        config.net_fault.clone(),
        Duration::from_millis(config.replica_lag_time_max_ms.max(10)),
        shutdown.clone(),
    ));
    servers.spawn(maintenance::run(
        Arc::clone(&logs),
        Arc::clone(&cache),
        maintenance::Upkeep {
            retention_interval: Duration::from_millis(config.log_retention_check_interval_ms),
            cleaner: CleanerConfig {
                dedupe_buffer_bytes: config.log_cleaner_dedupe_buffer_size,
            },
            producer_id_expiration_ms: config.producer_id_expiration_ms,
        },
        shutdown.clone(),
    ));
    tracing::info!(broker = config.broker_id, %grpc_addr, external_grpc_addr = ?external_grpc_addr, %kafka_addr, external_kafka_addr = ?external_kafka_addr, %admin_addr, data_dir = %config.data_dir.display(), controller = %config.controller, "broker started");
    Ok(BrokerHandle {
        grpc_addr,
        external_grpc_addr,
        kafka_addr,
        external_kafka_addr,
        admin_addr,
        readiness,
        logs,
        metadata: cache,
        servers,
        link,
        io,
    })
}

/// The broker's RPCs only other services may call (a replica's fetch is
/// guarded where its replica id is read).
const INTERNAL_RPCS: &[&str] = &["/runnel.broker.v1.Broker/WriteTxnMarkers"];

/// Serves the broker's gRPC API on `listener` until `shutdown`.
fn serve_grpc(
    listener: TcpListener,
    service: BrokerService,
    config: &Config,
    security: &GrpcSecurity,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let max = config.socket_request_max_bytes;
    let net_fault = config.net_fault.clone();
    let guard = security.guard.layer(INTERNAL_RPCS);
    let tls = security.server.clone();
    async move {
        let service = BrokerServer::new(service)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        if let Err(e) = runnel_common::transport::server()
            .layer(runnel_common::netfault::NetFaultLayer::new(net_fault))
            .layer(guard)
            .add_service(service)
            .serve_with_incoming_shutdown(
                runnel_common::transport::incoming(listener, tls),
                shutdown.cancelled_owned(),
            )
            .await
        {
            tracing::error!(error = %e, "broker gRPC server failed");
        }
    }
}
