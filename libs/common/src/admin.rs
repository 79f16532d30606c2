//! The admin HTTP server every service runs next to its gRPC port:
//! `/metrics` in Prometheus text format, `/healthz` (the process is up) and
//! `/readyz` (the service can do its job: registered, caught up, listening).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Whether a service is ready; shared between the service and its admin server.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A service that is not ready yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the service ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the service is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The process-wide Prometheus recorder behind the `metrics` macros.
///
/// Installed on first use; every service in the process (as in `runnel
/// dev`) shares it, so each labels its metrics with what it is.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness); then
        // this one renders nothing, which is all it can do.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
}

/// Serves the admin endpoints on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    tls: Option<crate::transport::ServerTls>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    prometheus();
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(AdminState { readiness });
    crate::https::serve(listener, app, tls, shutdown).await
}

async fn metrics_text() -> String {
    let handle = prometheus();
    handle.run_upkeep();
    handle.render()
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
