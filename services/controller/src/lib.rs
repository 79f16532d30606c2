//! `runnel-controller`: the owner of cluster metadata.
//!
//! Brokers register and heartbeat here; admin requests create and delete
//! topics, add partitions and change configs. Every change is a record in the
//! metadata log, kept in SQLite with the state it produces (see `store`), and
//! streamed to brokers through `Watch`.
//!
//! - [`Config`] and [`start`]: run a controller (the `runnel-controller`
//!   binary and `runnel dev` both call this).
//! - `controller`: the rules; `grpc`: the API over them; `placement`:
//!   replica assignment; `store`: SQLite.

mod config;
pub mod controller;
pub mod coordinators;
pub mod election;
mod grpc;
mod placement;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runnel_common::admin::{self, Readiness};
use runnel_common::shutdown::CancellationToken;
use runnel_proto::controller::v1::controller_server::ControllerServer;
use runnel_proto::metadata::v1::Endpoint;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use config::Config;
pub use controller::{Controller, ControllerError, Settings};
pub use grpc::ControllerService;

/// Why a controller could not start.
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
}

/// A running controller.
#[derive(Debug)]
pub struct ControllerHandle {
    /// Where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin_addr: SocketAddr,
    /// The controller itself (for in-process callers and tests).
    pub controller: Arc<Controller>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl ControllerHandle {
    /// Stops accepting, lets in-flight requests finish, and returns when done.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.controller.store().close().await;
    }

    /// A token that stops the controller when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the controller stops (its token was cancelled).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
        self.controller.store().close().await;
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Starts a controller: opens the store, binds its listeners and serves
/// until `shutdown` is cancelled (or [`ControllerHandle::shutdown`]).
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<ControllerHandle, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        dir: config.data_dir.display().to_string(),
        source,
    })?;
    let grpc_listener = bind(config.listen).await?;
    let admin_listener = bind(config.admin_listen).await?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: config.admin_listen,
            source,
        })?;
    let host = config
        .advertised_host
        .clone()
        .unwrap_or_else(|| grpc_addr.ip().to_string());

    let mut endpoints =
        runnel_common::metadata::service_endpoints(&host, grpc_addr.port(), admin_addr.port());
    if let Some(external_host) = &config.external_advertised_host {
        // The name brokers' external listeners look for (runnel-broker's
        // `EXTERNAL_GRPC_ENDPOINT`; services share no crate, so it is spelled twice).
        endpoints.push(Endpoint {
            name: "grpc-external".into(),
            host: external_host.clone(),
            port: u32::from(config.external_advertised_port.unwrap_or(grpc_addr.port())),
        });
    }
    let store = store::Store::open(&config.data_dir.join("controller.db")).await?;
    let settings = Settings {
        node_id: config.node_id,
        endpoints,
        num_partitions: config.num_partitions,
        default_replication_factor: config.default_replication_factor,
        broker_session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
    };
    let controller = Arc::new(Controller::load(store, settings).await?);

    let mut tasks = JoinSet::new();
    let readiness = Readiness::new();
    let service = ControllerService::new(Arc::clone(&controller), shutdown.clone());
    let token = shutdown.clone();
    tasks.spawn(async move {
        let incoming = runnel_common::transport::incoming(grpc_listener);
        if let Err(e) = runnel_common::transport::server()
            .add_service(ControllerServer::new(service))
            .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "controller gRPC server failed");
        }
    });
    let token = shutdown.clone();
    let ready = readiness.clone();
    tasks.spawn(async move {
        if let Err(e) = admin::serve(admin_listener, ready, token).await {
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
            if let Err(e) = liveness.fence_expired_brokers().await {
                tracing::error!(error = %e, "fencing expired brokers failed");
            }
            if let Err(e) = liveness.fence_expired_coordinators().await {
                tracing::error!(error = %e, "fencing expired coordinators failed");
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
                if let Err(e) = rebalance.elect_preferred_leaders().await {
                    tracing::error!(error = %e, "preferred leader election failed");
                }
            }
        });
    }
    readiness.set(true);
    tracing::info!(%grpc_addr, %admin_addr, data_dir = %config.data_dir.display(), "controller started");
    Ok(ControllerHandle {
        grpc_addr,
        admin_addr,
        controller,
        shutdown,
        tasks,
    })
}
