//! `runnel-connect`: the connect worker. It moves data between Runnel and
//! files, databases and HTTP services with connectors configured by files
//! or through a REST API in Kafka Connect's shape, and keeps its state in
//! Runnel itself, so a restarted worker resumes where it stopped and
//! several workers share the work.
//!
//! - [`Config`] and [`start`]: run a worker (the `runnel-connect` binary and
//!   `runnel dev` both call this).
//! - [`store`]: the internal compacted topics (connector configs, source
//!   offsets, statuses) every worker reads and writes.
//! - [`membership`]: the worker group on the coordinator that shares
//!   connectors and tasks among workers.
//! - [`worker`]: running the units a worker was given: source tasks
//!   produce (acks=all) and commit source offsets once acknowledged; sink
//!   tasks consume in a group and commit after flushing.
//! - [`plugins`]: the connector classes (`FileStreamSource`, `FileStreamSink`).
//! - [`data`]: the converters (string, JSON with and without schemas, bytes).
//! - [`configdef`]: connector config keys and validation.
//! - [`rest`] and [`files`]: the two ways connectors are configured.

pub mod config;
pub mod configdef;
pub mod data;
pub mod files;
pub mod membership;
pub mod plugins;
pub mod rest;
pub mod store;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runnel_client::{Admin, ClientConfig, Cluster, Producer, ProducerConfig};
use runnel_common::admin::{self, Readiness};
use runnel_common::backoff::Backoff;
use runnel_common::service::{BindError, Tasks, bind};
use runnel_common::shutdown::CancellationToken;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

pub use config::{Config, ExactlyOnceSourceSupport};

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The gRPC TLS settings or files are not usable.
    #[error("connect gRPC TLS: {0}")]
    Tls(#[from] runnel_common::tls::TlsError),
}

/// A running worker.
#[derive(Debug)]
pub struct ConnectHandle {
    /// Where the REST API listens.
    pub rest_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_addr: SocketAddr,
    /// This worker's id (its advertised REST address).
    pub worker_id: String,
    halt: CancellationToken,
    /// The units' tasks (connectors and tasks), awaited by a kill.
    units: TaskTracker,
    tasks: Tasks,
}

impl ConnectHandle {
    /// Stops every task cleanly (committing what was delivered), leaves the
    /// worker group and returns when everything has ended.
    pub async fn shutdown(mut self) {
        self.tasks.stop().await;
    }

    /// Stops at once, as a crash would: nothing is committed or said to the
    /// group; its units move when its session expires.
    pub async fn kill(mut self) {
        self.halt.cancel();
        self.tasks.abort().await;
        // Units see the halt at their next poll; a crash leaves nothing
        // running, so neither may a kill (a unit finishing a poll after it
        // could still read input or write output).
        self.units.close();
        self.units.wait().await;
    }

    /// Waits until the worker stops (its token was cancelled).
    pub async fn wait(mut self) {
        self.tasks.join().await;
    }
}

/// Starts a worker: binds its listeners, then (in the background, retrying
/// until the cluster answers) reads the internal topics, serves the REST
/// API, joins the worker group and runs what it is given until `shutdown`.
/// `/readyz` answers once the first assignment has been taken up.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<ConnectHandle, StartError> {
    let grpc_tls = config.grpc_tls()?;
    let admin_tls = config.admin_tls()?;
    let rest_tls = config.rest_tls()?;
    let (rest_listener, rest_addr) = bind(config.listen).await?;
    let (admin_listener, admin_addr) = bind(config.admin_listen).await?;
    let host = config
        .rest_advertised_host_name
        .clone()
        .unwrap_or_else(|| rest_addr.ip().to_string());
    let worker_id = format!("{host}:{}", rest_addr.port());
    let readiness = Readiness::new();
    let mut tasks = Tasks::new(shutdown.clone());
    let (token, ready) = (shutdown.clone(), readiness.clone());
    tasks.spawn(async move {
        if let Err(e) = admin::serve(admin_listener, ready, admin_tls, token).await {
            tracing::error!(error = %e, "connect admin server failed");
        }
    });
    let halt = CancellationToken::new();
    let units = TaskTracker::new();
    let (token, id) = (shutdown.clone(), worker_id.clone());
    if let Some(tls) = &grpc_tls {
        tasks.spawn(Arc::clone(tls).watch(TLS_RELOAD_INTERVAL, shutdown.clone()));
    }
    tasks.spawn(run(
        config,
        grpc_tls,
        id,
        (rest_listener, rest_tls),
        readiness,
        token,
        halt.clone(),
        units.clone(),
    ));
    tracing::info!(%rest_addr, %admin_addr, %worker_id, "connect worker started");
    Ok(ConnectHandle {
        rest_addr,
        admin_addr,
        worker_id,
        halt,
        units,
        tasks,
    })
}

/// How often the worker's certificate is looked at for a renewal.
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

// One call site; a struct for its arguments would only rename them.
#[allow(clippy::too_many_arguments)]
async fn run(
    config: Config,
    grpc_tls: Option<Arc<runnel_common::tls::ClientTls>>,
    worker_id: String,
    (rest_listener, rest_tls): (TcpListener, Option<runnel_common::transport::ServerTls>),
    readiness: Readiness,
    shutdown: CancellationToken,
    halt: CancellationToken,
    units: TaskTracker,
) {
    // The internal topics are read until every unit has stopped (their
    // last status and offset writes wait for the readers), or a kill.
    let readers = halt.child_token();
    let cluster = Cluster::new(ClientConfig {
        tls: grpc_tls,
        ..ClientConfig::new(config.bootstrap.clone())
    });
    let topics = store::Topics {
        configs: config.config_storage_topic.clone(),
        offsets: config.offset_storage_topic.clone(),
        statuses: config.status_storage_topic.clone(),
        offsets_partitions: config.offset_storage_partitions,
        status_partitions: config.status_storage_partitions,
        replication_factor: config.storage_replication_factor,
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let store = loop {
        match store::Store::open(Arc::clone(&cluster), topics.clone(), readers.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the connect topics yet; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = backoff.wait() => {}
                }
            }
        }
    };
    let cluster_id = Admin::with_cluster(Arc::clone(&cluster))
        .describe_cluster()
        .await
        .map(|c| c.cluster_id)
        .unwrap_or_default();
    let producer = Producer::with_cluster(Arc::clone(&cluster), ProducerConfig::default());
    let worker = worker::Worker::new(
        worker::Settings {
            worker_id: worker_id.clone(),
            offset_flush_interval: Duration::from_millis(config.offset_flush_interval_ms),
            offset_flush_timeout: Duration::from_millis(config.offset_flush_timeout_ms),
            task_shutdown_graceful_timeout: Duration::from_millis(
                config.task_shutdown_graceful_timeout_ms,
            ),
            key_converter: config.key_converter.clone(),
            value_converter: config.value_converter.clone(),
            schemas_enable: config.schemas_enable,
            consumer_session_timeout: Duration::from_millis(config.consumer_session_timeout_ms),
            consumer_heartbeat_interval: Duration::from_millis(
                config.consumer_heartbeat_interval_ms,
            ),
            consumer_max_poll_records: config.consumer_max_poll_records.max(1),
            exactly_once_source: config.exactly_once_source_support
                == ExactlyOnceSourceSupport::Enabled,
            group_id: config.group_id.clone(),
        },
        Arc::clone(&cluster),
        Arc::clone(&store),
        producer,
        halt,
        units,
    );
    let mut tasks = JoinSet::new();
    let app = rest::router(rest::RestState {
        store: Arc::clone(&store),
        cluster_id,
    });
    let token = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = runnel_common::https::serve(rest_listener, app, rest_tls, token).await {
            tracing::error!(error = %e, "connect REST server failed");
        }
    });
    if let Some(dir) = config.connectors_dir.clone() {
        tasks.spawn(files::watch(dir, Arc::clone(&store), shutdown.clone()));
    }
    let timing = membership::Timing {
        session: Duration::from_millis(config.session_timeout_ms),
        heartbeat: Duration::from_millis(config.heartbeat_interval_ms),
        rebalance: Duration::from_millis(config.rebalance_timeout_ms),
    };
    let who = membership::Participant {
        cluster: Arc::clone(&cluster),
        group_id: config.group_id.clone(),
        url: worker_id,
        timing,
        worker,
        store,
    };
    tasks.spawn(membership::run(who, readiness, shutdown.clone()));
    while tasks.join_next().await.is_some() {}
    readers.cancel();
}
