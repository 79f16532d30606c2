//! `runnel-common`: what every Runnel service shares.
//!
//! - [`acl`]: Kafka's ACL model and authorization rules.
//! - [`telemetry`]: tracing set-up (human or JSON logs, `RUST_LOG`), an
//!   OpenTelemetry OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
//!   and W3C trace-context propagation across gRPC calls.
//! - [`admin`]: the admin HTTP server every service runs: `/metrics`
//!   (Prometheus), `/healthz`, `/readyz`.
//! - [`shutdown`]: Ctrl-C / SIGTERM as a cancellation token.
//! - [`config`]: loading a service's config from TOML with `RUNNEL_*`
//!   environment overrides.
//! - [`errors`]: stable error codes carried in gRPC statuses.
//! - [`topics`]: Kafka's topic name rules (topic configs are `runnel_log::TopicConfig`).
//! - [`metadata`]: the metadata image every process folds the metadata log into.
//! - [`transport`]: the HTTP/2 settings of gRPC servers and channels.
//! - [`netfault`]: cutting a node off from all its peers or from chosen
//!   ones, for failure tests.
//! - [`service`]: binding listeners, a service's tasks, a service binary's `main`.
//! - [`backoff`]: exponential backoff with jitter for retry loops.
//! - [`failover`]: one gRPC channel over the controllers of a quorum.
//! - [`http`]: a small HTTP/1.1 client (the connect REST API, the HTTP sink).
//! - [`quota`]: Kafka's client quotas: entities, precedence, rate meters.
//! - [`scram`]: SCRAM credentials (salt, iterations, derived keys) as Kafka keeps them.
//! - [`tls`]: TLS server configs from PEM files, reloaded when they change,
//!   and the principal a client certificate stands for.
//! - [`certs`]: a throwaway CA and certificates (`runnel dev --secure`, tests).

pub mod acl;
pub mod admin;
pub mod backoff;
pub mod certs;
pub mod config;
pub mod errors;
pub mod failover;
pub mod grpc_auth;
pub mod http;
pub mod https;
pub mod metadata;
pub mod netfault;
pub mod quota;
pub mod scram;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod topics;
pub mod transport;
