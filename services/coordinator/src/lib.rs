//! `runnel-coordinator`: the group coordinator service.
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
//! - [`internal_topic`]: that sink on the brokers for `__consumer_offsets`
//!   and `__transaction_state` (acks=all, fenced per partition by owner
//!   epoch), and the reader a coordinator replays its partitions with.
//! - [`ownership`]: registration with the controller, the session, and
//!   taking over and releasing the partitions the controller assigns.
//! - [`transaction`]: one transactional id's state machine (Kafka's
//!   transaction protocol: InitProducerId with fencing and KIP-360,
//!   AddPartitionsToTxn, EndTxn, timeouts, expiry), pure like [`group`];
//!   the transaction coordinator builds on it.
//! - [`transactions`]: the transaction coordinator: the transactional ids
//!   of the `__transaction_state` partitions this coordinator owns (each
//!   goes with the same-numbered partition of `__consumer_offsets`), their
//!   requests, the markers that end their transactions, and timeouts.
//!
//! The `__consumer_offsets` batches, the subscription and assignment bytes
//! and the server-side assignors are `runnel-records`; `runnel-client`
//! provides the connections, the admin calls and the consumer that replays
//! partitions.

mod config;
pub mod consumer_group;
pub mod group;
pub mod grpc;
pub mod image;
pub mod internal_topic;
pub mod manager;
pub mod offsets;
pub mod ownership;
pub mod transaction;
pub mod transactions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runnel_common::admin::{self, Readiness};
use runnel_common::backoff::Backoff;
use runnel_common::service::{BindError, Tasks, bind};
use runnel_common::shutdown::CancellationToken;
use runnel_proto::coordinator::v1::coordinator_server::CoordinatorServer;

pub use config::Config;

/// Why a coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The gRPC TLS settings or files are not usable.
    #[error("coordinator gRPC TLS: {0}")]
    Tls(#[from] runnel_common::tls::TlsError),
}

/// The coordinator's RPC only other services may call: a broker's word
/// that it wrote a transaction marker.
const INTERNAL_RPCS: &[&str] = &["/runnel.coordinator.v1.Coordinator/CompleteTransaction"];

/// How often the service certificate is looked at for a renewal.
const TLS_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// A running coordinator.
#[derive(Debug)]
pub struct CoordinatorHandle {
    /// Where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_addr: SocketAddr,
    /// The groups (for in-process callers and tests).
    pub manager: Arc<manager::GroupManager>,
    /// The transactions (for in-process callers and tests).
    pub transactions: Arc<transactions::TxnManager>,
    tasks: Tasks,
    /// Cancelled by `kill`: the gRPC answers stop with the tasks.
    crashed: CancellationToken,
}

impl CoordinatorHandle {
    /// Stops serving and returns when every task has ended.
    pub async fn shutdown(mut self) {
        self.tasks.stop().await;
    }

    /// Stops at once, as a crash would: nothing is said to the controller,
    /// so this coordinator's partitions move only when its session expires.
    pub async fn kill(mut self) {
        self.crashed.cancel();
        self.tasks.abort().await;
    }

    /// Waits until the coordinator stops (its token was cancelled).
    pub async fn wait(mut self) {
        self.tasks.join().await;
        tracing::info!("coordinator stopped");
    }
}

/// Starts a coordinator: binds its listeners, makes sure `__consumer_offsets`
/// exists, registers with the controller and serves the groups of the
/// partitions the controller gives it (see [`ownership`]) until `shutdown`
/// is cancelled. `/readyz` answers once it is registered and every
/// partition it owns is loaded.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<CoordinatorHandle, StartError> {
    let security = config.grpc_security()?;
    let admin_tls = config.admin_tls()?;
    let (grpc_listener, grpc_addr) = bind(config.listen).await?;
    let (admin_listener, admin_addr) = bind(config.admin_listen).await?;
    let (_, endpoints) = runnel_common::metadata::advertised_endpoints(
        config.advertised_host.as_deref(),
        grpc_addr,
        admin_addr.port(),
        config.external_advertised_host.as_deref(),
        config.external_advertised_port,
    );
    let cluster = runnel_client::Cluster::new(runnel_client::ClientConfig {
        tls: security.client.clone(),
        ..runnel_client::ClientConfig::new(config.bootstrap.clone())
    });
    let topic = Arc::new(internal_topic::InternalTopic::offsets(Arc::clone(&cluster)));
    let manager = Arc::new(
        manager::GroupManager::new(config.group_config(), topic.clone())
            .offsets_partitions(config.offsets_topic_num_partitions)
            .consumer_group_config(config.consumer_group_config())
            .owning_assigned_partitions(),
    );
    let txn_topic = Arc::new(internal_topic::InternalTopic::transaction_state(
        Arc::clone(&cluster),
    ));
    let txns = Arc::new(transactions::TxnManager::new(
        config.txn_config(),
        config.transaction_state_log_num_partitions,
        config.offsets_topic_num_partitions,
        txn_topic.clone(),
        Arc::new(transactions::BrokerMarkers::new(Arc::clone(&cluster))),
    ));
    let readiness = Readiness::new();
    let mut tasks = Tasks::new(shutdown.clone());
    let (token, ready) = (shutdown.clone(), readiness.clone());
    tasks.spawn(async move {
        if let Err(e) = admin::serve(admin_listener, ready, admin_tls, token).await {
            tracing::error!(error = %e, "coordinator admin server failed");
        }
    });
    let image = Arc::new(image::FollowedImage::default());
    let auth = runnel_common::grpc_auth::GrpcAuth::from_settings(
        &security,
        config.grpc_authentication_required,
        config.authorizer(),
        Arc::clone(&image),
    )?;
    if auth.enabled() || config.grpc_authentication_required {
        tasks.spawn(image.follow(Arc::clone(&cluster), shutdown.clone()));
    }
    let service = grpc::CoordinatorService::new(
        Arc::clone(&manager),
        Arc::clone(&txns),
        Arc::clone(&cluster),
        auth,
    );
    let token = shutdown.clone();
    let crashed = CancellationToken::new();
    let crash = crashed.clone();
    let guard = security.guard.layer(INTERNAL_RPCS);
    let tls = security.server.clone();
    tasks.spawn(security.watch(TLS_RELOAD_INTERVAL, shutdown.clone()));
    tasks.spawn(async move {
        tracing::info!(%grpc_addr, "coordinator serving");
        let incoming = runnel_common::transport::incoming(grpc_listener, tls);
        if let Err(e) = runnel_common::transport::server()
            .layer(runnel_common::netfault::CrashLayer::new(crash))
            .layer(guard)
            .add_service(CoordinatorServer::new(service))
            .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "coordinator gRPC server failed");
        }
    });
    for (topic, partitions, rf) in [
        (
            Arc::clone(&topic),
            config.offsets_topic_num_partitions,
            config.offsets_topic_replication_factor,
        ),
        (
            Arc::clone(&txn_topic),
            config.transaction_state_log_num_partitions,
            config.transaction_state_log_replication_factor,
        ),
    ] {
        let token = shutdown.clone();
        tasks.spawn(async move {
            // The controller shares the offsets topic's partitions once it exists.
            tokio::select! {
                () = token.cancelled() => {}
                () = ensure_topic(&topic, partitions, rf) => {}
            }
        });
    }
    let me = ownership::Identity {
        id: config.coordinator_id,
        endpoints,
        incarnation_id: uuid::Uuid::new_v4().to_string(),
    };
    let served = ownership::Served {
        offsets: Arc::clone(&topic),
        groups: Arc::clone(&manager),
        txn_state: Arc::clone(&txn_topic),
        txns: Arc::clone(&txns),
    };
    tasks.spawn(ownership::run(
        me,
        cluster,
        served,
        readiness,
        shutdown.clone(),
    ));
    let (token, txn_ticker) = (shutdown.clone(), Arc::clone(&txns));
    let txn_check_every = Duration::from_millis(
        config
            .transaction_abort_timed_out_transaction_cleanup_interval_ms
            .max(10),
    );
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(txn_check_every);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {
                    txn_ticker.tick().await;
                }
            }
        }
    });
    let (token, ticker) = (shutdown.clone(), Arc::clone(&manager));
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {
                    ticker.tick();
                    ticker.store_emptied().await;
                    ticker.tick_consumer_groups().await;
                }
            }
        }
    });
    let (token, expirer) = (shutdown.clone(), Arc::clone(&manager));
    let retention_ms =
        i64::try_from(config.offsets_retention_minutes.saturating_mul(60_000)).unwrap_or(i64::MAX);
    let check_every = Duration::from_millis(config.offsets_retention_check_interval_ms.max(100));
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(check_every);
        tick.tick().await;
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {
                    expirer.expire_offsets(retention_ms).await;
                }
            }
        }
    });
    tracing::info!(%grpc_addr, %admin_addr, "coordinator started");
    Ok(CoordinatorHandle {
        grpc_addr,
        admin_addr,
        manager,
        transactions: txns,
        tasks,
        crashed,
    })
}

/// Creates an internal topic if needed, retrying while the cluster is not
/// there yet.
async fn ensure_topic(topic: &internal_topic::InternalTopic, partitions: i32, rf: i32) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match topic.ensure(partitions, rf).await {
            Ok(()) => return,
            Err(e) => {
                tracing::info!(topic = topic.name(), error = %e, "cannot create the internal topic yet; retrying");
                backoff.wait().await;
            }
        }
    }
}
