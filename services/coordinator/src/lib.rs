//! `runnel-coordinator`: the group coordinator service (issue 6, in progress).
//!
//! Consumers in a group share a topic's partitions, each partition read by
//! one member at a time. The coordinator runs Kafka's classic group
//! protocol: members join, one of them (the leader) assigns partitions with
//! a client-side assignor, the coordinator hands every member its share and
//! watches heartbeats; a member that joins, leaves or goes silent starts a
//! new generation. Committed offsets are fenced by generation and member.
//!
//! - [`Config`] and [`start`]: run a coordinator (the `runnel-coordinator`
//!   binary and `runnel dev` both call this).
//! - [`group`]: one group's membership and rebalance state machine, pure
//!   and driven by the caller's clock, so every timing rule is tested
//!   without sleeping. The gRPC service and the `__consumer_offsets`
//!   storage build on it.
//! - [`offsets`]: the records of `__consumer_offsets` (committed offsets,
//!   group metadata), the state they replay into, offset retention, and
//!   which partition (so which coordinator) holds a group.
//! - [`manager`]: the groups of one coordinator with their waiting callers
//!   and committed offsets; what must survive a restart goes through a
//!   [`manager::RecordSink`] into `__consumer_offsets` before it is acknowledged.
//! - [`grpc`]: the Coordinator gRPC API over the manager.
//! - [`offsets_topic`]: that sink on the brokers (acks=all, idempotent), and
//!   the reader a coordinator replays its partitions with.

mod config;
pub mod group;
pub mod grpc;
pub mod manager;
pub mod offsets;
pub mod offsets_topic;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runnel_common::admin::{self, Readiness};
use runnel_common::shutdown::CancellationToken;
use runnel_proto::coordinator::v1::coordinator_server::CoordinatorServer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use config::Config;

/// Why a coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A running coordinator.
#[derive(Debug)]
pub struct CoordinatorHandle {
    /// Where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_addr: SocketAddr,
    /// The groups (for in-process callers and tests).
    pub manager: Arc<manager::GroupManager>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl CoordinatorHandle {
    /// Stops serving and returns when every task has ended.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits until the coordinator stops (its token was cancelled).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok(listener)
}

fn local(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

/// Starts a coordinator: binds its listeners, makes sure `__consumer_offsets`
/// exists, replays it (this coordinator owns every partition of it until
/// the controller shares them among several), then serves the group API
/// until `shutdown` is cancelled. `/readyz` answers once the replay is done.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<CoordinatorHandle, StartError> {
    let grpc_listener = bind(config.listen).await?;
    let admin_listener = bind(config.admin_listen).await?;
    let grpc_addr = local(&grpc_listener, config.listen)?;
    let admin_addr = local(&admin_listener, config.admin_listen)?;
    let host = config
        .advertised_host
        .clone()
        .unwrap_or_else(|| grpc_addr.ip().to_string());
    let cluster =
        runnel_client::Cluster::new(runnel_client::ClientConfig::new(config.bootstrap.clone()));
    let topic = Arc::new(offsets_topic::OffsetsTopic::new(cluster));
    let manager = Arc::new(
        manager::GroupManager::new(config.group_config(), topic.clone())
            .offsets_partitions(config.offsets_topic_num_partitions),
    );
    let readiness = Readiness::new();
    let mut tasks = JoinSet::new();
    let (token, ready) = (shutdown.clone(), readiness.clone());
    tasks.spawn(async move {
        if let Err(e) = admin::serve(admin_listener, ready, token).await {
            tracing::error!(error = %e, "coordinator admin server failed");
        }
    });
    let service = grpc::CoordinatorService::new(
        Arc::clone(&manager),
        grpc::Advertised {
            id: config.coordinator_id,
            host,
            port: grpc_addr.port(),
        },
    );
    let (token, loader, ready) = (shutdown.clone(), Arc::clone(&manager), readiness.clone());
    tasks.spawn(async move {
        // Groups are answered only once every committed offset is back.
        tokio::select! {
            () = token.cancelled() => return,
            () = load(&topic, &loader, &config) => {}
        }
        ready.set(true);
        tracing::info!(%grpc_addr, "coordinator serving");
        let incoming = runnel_common::transport::incoming(grpc_listener);
        if let Err(e) = runnel_common::transport::server()
            .add_service(CoordinatorServer::new(service))
            .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "coordinator gRPC server failed");
        }
    });
    let (token, ticker) = (shutdown.clone(), Arc::clone(&manager));
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => ticker.tick(),
            }
        }
    });
    tracing::info!(%grpc_addr, %admin_addr, "coordinator started; loading __consumer_offsets");
    Ok(CoordinatorHandle {
        grpc_addr,
        admin_addr,
        manager,
        shutdown,
        tasks,
    })
}

/// Creates `__consumer_offsets` if needed and replays every partition,
/// retrying while the cluster is not there yet.
async fn load(
    topic: &offsets_topic::OffsetsTopic,
    manager: &manager::GroupManager,
    config: &Config,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match try_load(topic, manager, config).await {
            Ok(records) => {
                tracing::info!(records, "__consumer_offsets loaded");
                return;
            }
            Err(e) => {
                tracing::info!(error = %e, "cannot load __consumer_offsets yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn try_load(
    topic: &offsets_topic::OffsetsTopic,
    manager: &manager::GroupManager,
    config: &Config,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    topic
        .ensure(
            config.offsets_topic_num_partitions,
            config.offsets_topic_replication_factor,
        )
        .await?;
    let mut total = 0;
    for partition in 0..config.offsets_topic_num_partitions {
        let records = topic.read_partition(partition).await?;
        total += records.len();
        manager.load(&records)?;
    }
    Ok(total)
}
