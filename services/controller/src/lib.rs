//! `runnel-controller`: the owner of cluster metadata.
//!
//! Brokers register and heartbeat here; admin requests create and delete
//! topics, add partitions and change configs. Every change is a record in the
//! metadata log, kept in SQLite with the state it produces (see `store`), and
//! streamed to brokers through `Watch`.
//!
//! - [`Config`] and [`start`]: run a controller (the `runnel-controller`
//!   binary and `runnel dev` both call this).
//! - [`controller`]: the rules, one file per concern around a core that
//!   holds the active controller's decision lock and `commit`:
//!   `controller/topics.rs` creates and deletes topics and adds partitions
//!   (with replica placement), `controller/leader_and_isr.rs` takes ISR
//!   changes (AlterPartition) and elects preferred leaders,
//!   `controller/brokers.rs` and `controller/coordinators.rs` register,
//!   heartbeat and fence brokers and group coordinators,
//!   `controller/configs.rs`, `controller/membership.rs` (controllers of
//!   the quorum), `controller/producer_ids.rs`, and `controller/describe.rs`
//!   (DescribeCluster, GetMetadata).
//! - [`election`]: leader and ISR rules as pure functions of the metadata
//!   image; [`offsets_assignment`]: which coordinator owns which
//!   `__consumer_offsets` partition; `placement`: replica assignment;
//!   `metrics`: gauges of partition health, from the image.
//! - `error`: [`ControllerError`] (a call failed as a whole) and [`Refusal`]
//!   (the rules turned a request or one item of it down), each variant
//!   mapped to its stable error code there and nowhere else.
//! - `grpc`: the API over the rules (errors become statuses in one place);
//!   [`store`]: SQLite; [`quorum`]: Raft between controllers (the metadata
//!   log is the Raft log, the store its state machine); only the active
//!   controller decides, the others forward.

mod config;
pub mod controller;
pub mod election;
mod error;
mod grpc;
mod metrics;
pub mod offsets_assignment;
mod placement;
pub mod quorum;
pub mod reassignment;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runnel_common::admin::{self, Readiness};
use runnel_common::service::{BindError, Tasks, bind};
use runnel_common::shutdown::CancellationToken;
use runnel_proto::controller::v1::controller_quorum_server::ControllerQuorumServer;
use runnel_proto::controller::v1::controller_server::ControllerServer;

pub use config::{Config, Voter, parse_voters};
pub use controller::{Controller, Settings};
pub use error::{ControllerError, Refusal};
pub use grpc::ControllerService;

/// Why a controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The data directory could not be created.
    #[error("cannot create data directory {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store or state could not be loaded.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The Raft log could not be opened.
    #[error("controller Raft log: {0}")]
    RaftLog(#[from] sqlx::Error),
    /// The quorum settings are invalid or Raft could not start.
    #[error("controller quorum: {0}")]
    Quorum(String),
    /// The gRPC TLS settings or files are not usable.
    #[error("controller gRPC TLS: {0}")]
    Tls(#[from] runnel_common::tls::TlsError),
}

/// The controller's RPCs only other services may call: brokers' and
/// coordinators' registrations and heartbeats, the metadata stream (it
/// carries SCRAM credentials and ACLs), ISR changes, producer id blocks,
/// and the quorum's own Raft messages.
const INTERNAL_RPCS: &[&str] = &[
    "/runnel.controller.v1.Controller/RegisterBroker",
    "/runnel.controller.v1.Controller/BrokerHeartbeat",
    "/runnel.controller.v1.Controller/Watch",
    "/runnel.controller.v1.Controller/AlterPartition",
    "/runnel.controller.v1.Controller/AllocateProducerIds",
    "/runnel.controller.v1.Controller/RegisterCoordinator",
    "/runnel.controller.v1.Controller/CoordinatorHeartbeat",
    "/runnel.controller.v1.ControllerQuorum/AppendEntries",
    "/runnel.controller.v1.ControllerQuorum/Vote",
    "/runnel.controller.v1.ControllerQuorum/InstallSnapshot",
];

/// How often services without their own setting look for renewed
/// certificates.
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// A running controller.
#[derive(Debug)]
pub struct ControllerHandle {
    /// Where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_addr: SocketAddr,
    /// The controller itself (for in-process callers and tests).
    pub controller: Arc<Controller>,
    tasks: Tasks,
    raft_log: quorum::log_store::LogStore,
}

impl ControllerHandle {
    /// Stops accepting, lets in-flight requests finish, and returns when done.
    pub async fn shutdown(mut self) {
        self.tasks.stop().await;
        self.close().await;
    }

    async fn close(&self) {
        if let Err(e) = self.controller.raft().shutdown().await {
            tracing::warn!(error = %e, "controller Raft node did not stop cleanly");
        }
        self.controller.store().close().await;
        self.raft_log.close().await;
    }

    /// Stops at once, as a crash would: in-flight calls are dropped, Raft
    /// stops without a word to its peers. (What it acknowledged is already
    /// on disk: every Raft write is synced.)
    pub async fn kill(mut self) {
        self.tasks.token().cancel();
        self.tasks.abort().await;
        self.close().await;
    }

    /// A token that stops the controller when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.tasks.token()
    }

    /// Waits until the controller stops (its token was cancelled).
    pub async fn wait(mut self) {
        self.tasks.join().await;
        self.close().await;
        tracing::info!("controller stopped");
    }
}

/// Starts a controller: opens the store, binds its listeners and serves
/// until `shutdown` is cancelled (or [`ControllerHandle::shutdown`]).
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<ControllerHandle, StartError> {
    let security = config.grpc_security()?;
    let admin_tls = config.admin_tls()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        dir: config.data_dir.display().to_string(),
        source,
    })?;
    let (grpc_listener, grpc_addr) = bind(config.listen).await?;
    let (admin_listener, admin_addr) = bind(config.admin_listen).await?;
    let (host, endpoints) = runnel_common::metadata::advertised_endpoints(
        config.advertised_host.as_deref(),
        grpc_addr,
        admin_addr.port(),
        config.external_advertised_host.as_deref(),
        config.external_advertised_port,
    );
    if config.node_id < 0 {
        return Err(StartError::Quorum(format!(
            "node_id {} is negative",
            config.node_id
        )));
    }
    let mut voters = parse_voters(&config.quorum_voters).map_err(StartError::Quorum)?;
    if voters.is_empty() {
        voters.push(Voter {
            id: config.node_id,
            address: format!("{host}:{}", grpc_addr.port()),
        });
    } else if !voters.iter().any(|v| v.id == config.node_id) {
        return Err(StartError::Quorum(format!(
            "quorum_voters does not list this controller (node_id {})",
            config.node_id
        )));
    }
    let store = store::Store::open(&config.data_dir.join("controller.db")).await?;
    let state_machine =
        quorum::state_machine::StateMachine::open(store.clone(), &config.data_dir).await?;
    let shared = state_machine.shared();
    let raft_log = quorum::log_store::LogStore::open(&config.data_dir.join("raft.db")).await?;
    let election = config.quorum_election_timeout_ms.max(10);
    let raft_config = openraft::Config {
        cluster_name: "runnel-controllers".into(),
        heartbeat_interval: (election / 5).max(5),
        election_timeout_min: election,
        // openraft waits out the old leader's lease (this maximum) before
        // the randomized timeout, so a narrow range keeps failover short.
        election_timeout_max: election * 3 / 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
            config.quorum_snapshot_entries.max(1),
        ),
        max_in_snapshot_log_to_keep: (config.quorum_snapshot_entries / 5).min(1000),
        ..openraft::Config::default()
    }
    .validate()
    .map_err(|e| StartError::Quorum(e.to_string()))?;
    let raft = openraft::Raft::new(
        quorum::raft_id(config.node_id),
        std::sync::Arc::new(raft_config),
        quorum::network::Network::new(
            config.net_fault.clone(),
            runnel_common::netfault::PeerName::controller(config.node_id),
            security.client.clone(),
        ),
        raft_log.clone(),
        state_machine,
    )
    .await
    .map_err(|e| StartError::Quorum(e.to_string()))?;
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Quorum(e.to_string()))?;
    if !initialized && !config.quorum_join {
        let members: std::collections::BTreeMap<u64, openraft::BasicNode> = voters
            .iter()
            .map(|v| {
                (
                    quorum::raft_id(v.id),
                    openraft::BasicNode::new(v.address.clone()),
                )
            })
            .collect();
        // Every voter does this with the same list: all start from the same
        // first entry, whichever of them wins the first election.
        if let Err(e) = raft.initialize(members).await {
            tracing::info!(error = %e, "quorum already initialized");
        }
    }
    // The quorum as stored (it may have grown since `quorum_voters` was
    // written: `runnel controllers add`), not as configured.
    let me = quorum::raft_id(config.node_id);
    let alone = raft
        .with_raft_state(move |state| {
            state
                .membership_state
                .effective()
                .voter_ids()
                .eq(std::iter::once(me))
        })
        .await
        .map_err(|e| StartError::Quorum(e.to_string()))?;
    if alone {
        // A quorum of one: elect now rather than after an election timeout,
        // and be the active controller before serving.
        let _ = raft.trigger().elect().await;
        raft.wait(Some(Duration::from_secs(30)))
            .state(
                openraft::ServerState::Leader,
                "single controller elects itself",
            )
            .await
            .map_err(|e| StartError::Quorum(e.to_string()))?;
    }
    let settings = Settings {
        node_id: config.node_id,
        endpoints,
        num_partitions: config.num_partitions,
        default_replication_factor: config.default_replication_factor,
        broker_session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
    };
    let controller = Arc::new(Controller::new(store, shared, raft.clone(), settings));

    let mut tasks = Tasks::new(shutdown.clone());
    let readiness = Readiness::new();
    let service = ControllerService::new(
        Arc::clone(&controller),
        config.net_fault.clone(),
        security.client.clone(),
        runnel_common::grpc_auth::GrpcAuth::from_settings(
            &security,
            config.grpc_authentication_required,
            config.authorizer(),
            Arc::clone(&controller),
        )?,
        shutdown.clone(),
    );
    let quorum_service = quorum::network::QuorumService::new(raft.clone());
    let token = shutdown.clone();
    let net_fault = config.net_fault.clone();
    let guard = security.guard.layer(INTERNAL_RPCS);
    let tls = security.server.clone();
    tasks.spawn(security.watch(TLS_RELOAD_INTERVAL, shutdown.clone()));
    tasks.spawn(async move {
        let incoming = runnel_common::transport::incoming(grpc_listener, tls);
        if let Err(e) = runnel_common::transport::server()
            .layer(runnel_common::netfault::NetFaultLayer::new(net_fault))
            .layer(guard)
            .add_service(ControllerServer::new(service))
            .add_service(ControllerQuorumServer::new(quorum_service))
            .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "controller gRPC server failed");
        }
    });
    let token = shutdown.clone();
    let ready = readiness.clone();
    tasks.spawn(async move {
        if let Err(e) = admin::serve(admin_listener, ready, admin_tls, token).await {
            tracing::error!(error = %e, "controller admin server failed");
        }
    });
    let token = shutdown.clone();
    let liveness = Arc::clone(&controller);
    // Checked often: a dead broker's partitions wait for this on top of the timeout.
    let period = (Duration::from_millis(config.broker_session_timeout_ms) / 20)
        .max(Duration::from_millis(50));
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !liveness.is_active() {
                continue;
            }
            if let Err(e) = liveness.fence_expired_brokers().await {
                log_task_failure("fencing expired brokers", &e);
            }
            if let Err(e) = liveness.fence_expired_coordinators().await {
                log_task_failure("fencing expired coordinators", &e);
            }
        }
    });
    if config.auto_leader_rebalance_enable {
        let token = shutdown.clone();
        let rebalance = Arc::clone(&controller);
        let period = Duration::from_millis(config.leader_imbalance_check_interval_ms.max(10));
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if !rebalance.is_active() {
                    continue;
                }
                if let Err(e) = rebalance.elect_preferred_leaders().await {
                    log_task_failure("preferred leader election", &e);
                }
            }
        });
    }
    let token = shutdown.clone();
    let mut metrics_rx = raft.metrics();
    let ready = readiness.clone();
    tasks.spawn(async move {
        loop {
            {
                let m = metrics_rx.borrow_and_update();
                quorum::publish_metrics(&m);
                // Ready while an active controller is known (forwarding works).
                ready.set(m.current_leader.is_some());
            }
            tokio::select! {
                () = token.cancelled() => return,
                changed = metrics_rx.changed() => if changed.is_err() { return },
            }
        }
    });
    tracing::info!(%grpc_addr, %admin_addr, data_dir = %config.data_dir.display(), "controller started");
    Ok(ControllerHandle {
        grpc_addr,
        admin_addr,
        controller,
        tasks,
        raft_log,
    })
}

/// Logs a failed run of a periodic task of the active controller. Losing
/// the role is expected (a restarted former leader believes it leads until
/// it hears of the newer term), so that is not an error.
fn log_task_failure(task: &str, e: &controller::ControllerError) {
    if matches!(e, controller::ControllerError::NotActive { .. }) {
        tracing::debug!(error = %e, "{task} skipped: not the active controller");
    } else {
        tracing::error!(error = %e, "{task} failed");
    }
}
