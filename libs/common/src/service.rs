//! What every service's start-up and shutdown share.
//!
//! Each service is a library with a thin binary: [`main`] is the binary's
//! whole life (logs, config from file, environment and flags, start, wait
//! for SIGTERM); [`bind`] and [`BindError`] are how every `start` binds its
//! listeners; [`Tasks`] holds a running service's tasks and the token that
//! stops them, so every handle stops, kills and waits the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::{self, ConfigError};
use crate::shutdown::{self, CancellationToken};
use crate::telemetry::{self, LogFormat, TelemetryError};

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr`; returns the listener and the address it got (the port the
/// OS chose when `addr` asked for port 0).
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| BindError { addr, source })?;
    Ok((listener, local))
}

/// The tasks of a running service and the token that stops them.
#[derive(Debug)]
pub struct Tasks {
    shutdown: CancellationToken,
    set: JoinSet<()>,
}

impl Tasks {
    /// No tasks yet; `shutdown` stops the ones spawned later.
    pub fn new(shutdown: CancellationToken) -> Self {
        Tasks {
            shutdown,
            set: JoinSet::new(),
        }
    }

    /// Runs `task` until it ends; it should watch [`token`](Self::token).
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.set.spawn(task);
    }

    /// The token that stops the service when cancelled.
    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Cancels the token and waits for every task to finish its work.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        self.join().await;
    }

    /// Drops every task where it stands, as a crash would, then waits until
    /// none runs. The token is left alone: others may share it.
    pub async fn abort(&mut self) {
        self.set.abort_all();
        self.join().await;
    }

    /// Waits until every task has ended (the token was cancelled).
    pub async fn join(&mut self) {
        while self.set.join_next().await.is_some() {}
    }
}

/// The flags every service binary takes besides its own.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// TOML config file (keys as in the service's `Config`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log lines as JSON.
    #[arg(long)]
    pub log_json: bool,
}

/// The listen-address flags every service binary takes (keys `listen` and
/// `admin_listen` of its config).
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ListenFlags {
    /// Listen address of the service's API (gRPC; the REST API for connect).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Admin HTTP listen address (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
}

/// The flags of a service that reaches the cluster through its brokers:
/// [`ListenFlags`] and `--bootstrap` (key `bootstrap` of its config).
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct BootstrapFlags {
    #[command(flatten)]
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub listen: ListenFlags,
    /// Brokers to reach the cluster through, host:port (comma-separated).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,
}

/// Why a service binary stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum MainError {
    /// Logging or tracing could not be set up.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The config could not be loaded.
    #[error("loading config: {0}")]
    Config(#[from] ConfigError),
    /// The service could not start.
    #[error(transparent)]
    Start(Box<dyn std::error::Error + Send + Sync>),
}

/// A service binary's whole life: sets up logs as `name`, loads its config
/// (the `--config` file, then `{env_prefix}*` variables, then `flags`, each
/// over the one before; `flags` serializes as config keys and leaves out the
/// flags not given), and runs `serve` with it until Ctrl-C or SIGTERM.
pub async fn main<C, F, Fut, E>(
    name: &str,
    env_prefix: &str,
    common: &CommonArgs,
    flags: &impl Serialize,
    serve: F,
) -> Result<(), MainError>
where
    C: DeserializeOwned,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let format = if common.log_json {
        LogFormat::Json
    } else {
        LogFormat::Human
    };
    let _telemetry = telemetry::init(name, format)?;
    let config: C = config::load_with_flags(common.config.as_deref(), env_prefix, flags)?;
    serve(config, shutdown::on_signal())
        .await
        .map_err(|e| MainError::Start(Box::new(e)))
}

/// A service binary's `main`, given the service's crate (its `start` and
/// `StartError`), its flags (a `clap::Args` + `Serialize` type, see [`main`]),
/// the binary's name, its `--help` line and its environment prefix.
#[macro_export]
macro_rules! service_main {
    ($service:ident, $flags:ty, $name:literal, $about:literal, $env_prefix:literal) => {
        #[derive(Debug, clap::Parser)]
        #[command(name = $name, version, about = $about)]
        struct Args {
            #[command(flatten)]
            common: $crate::service::CommonArgs,
            #[command(flatten)]
            flags: $flags,
        }

        #[tokio::main]
        async fn main() -> anyhow::Result<()> {
            let args = <Args as clap::Parser>::parse();
            let serve = |config, shutdown| async move {
                $service::start(config, shutdown).await?.wait().await;
                Ok::<_, $service::StartError>(())
            };
            $crate::service::main($name, $env_prefix, &args.common, &args.flags, serve).await?;
            Ok(())
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_reports_the_port_the_os_chose_and_the_address_it_could_not_take() {
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert_ne!(addr.port(), 0);
        let err = bind(addr).await.unwrap_err();
        assert_eq!(err.addr, addr);
        assert!(
            err.to_string()
                .starts_with(&format!("cannot listen on {addr}: ")),
            "{err}"
        );
        drop(listener);
    }

    #[tokio::test]
    async fn stop_lets_tasks_finish_and_abort_does_not() {
        let mut tasks = Tasks::new(CancellationToken::new());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let token = tasks.token();
        tasks.spawn(async move {
            token.cancelled().await;
            let _ = done_tx.send(());
        });
        tasks.stop().await;
        assert!(done_rx.await.is_ok(), "a stopped task runs to its end");

        let mut tasks = Tasks::new(CancellationToken::new());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            std::future::pending::<()>().await;
            let _ = done_tx.send(());
        });
        tasks.abort().await;
        assert!(done_rx.await.is_err(), "an aborted task never finishes");
        assert!(!tasks.token().is_cancelled());
    }
}
