//! The connect worker's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Worker settings. TOML keys are the field names; every one can be set
/// with `RUNNEL_CONNECT_<FIELD>` in the environment. Names follow Kafka
/// Connect's worker configs (`offset_flush_interval_ms` is
/// `offset.flush.interval.ms`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// REST API listen address (`listeners`).
    pub listen: SocketAddr,
    /// `rest_ssl_keystore_location` (Kafka Connect's
    /// `listeners.https.ssl.keystore.location`): certificate chain and key
    /// (PEM) of the REST API; set, it is served over HTTPS.
    pub rest_ssl_keystore_location: Option<std::path::PathBuf>,
    /// `rest_ssl_truststore_location`: the CA (PEM) of client certificates.
    pub rest_ssl_truststore_location: Option<std::path::PathBuf>,
    /// `rest_ssl_client_auth` (Kafka Connect's `ssl.client.authentication`):
    /// `none`, `requested` or `required`.
    pub rest_ssl_client_auth: String,
    /// Admin HTTP listen address (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// `admin_ssl_keystore_location`: certificate chain and key (PEM) of
    /// the admin endpoints; set, they are served over HTTPS.
    pub admin_ssl_keystore_location: Option<std::path::PathBuf>,
    /// `admin_ssl_truststore_location`: the CA (PEM) of client certificates
    /// on the admin endpoints.
    pub admin_ssl_truststore_location: Option<std::path::PathBuf>,
    /// `admin_ssl_client_auth` on the admin endpoints: `none`, `requested`
    /// or `required`.
    pub admin_ssl_client_auth: String,
    /// `rest.advertised.host.name`: the host other workers and users reach
    /// this one at (default: the listen IP). With the port it is the worker id.
    pub rest_advertised_host_name: Option<String>,
    /// Brokers to reach the cluster through, `host:port`, comma-separated.
    pub bootstrap: String,
    /// `group.id`: workers with the same id form one connect cluster.
    pub group_id: String,
    /// `config.storage.topic`.
    pub config_storage_topic: String,
    /// `offset.storage.topic`.
    pub offset_storage_topic: String,
    /// `status.storage.topic`.
    pub status_storage_topic: String,
    /// `offset.storage.partitions`.
    pub offset_storage_partitions: i32,
    /// `status.storage.partitions`.
    pub status_storage_partitions: i32,
    /// `config.storage.replication.factor` and the others (capped by the brokers there are).
    pub storage_replication_factor: i32,
    /// `offset.flush.interval.ms`: how often source offsets and sink
    /// consumer offsets are committed (a crash repeats at most this much).
    pub offset_flush_interval_ms: u64,
    /// `offset.flush.timeout.ms`: how long a stopping source task waits for
    /// its records to be acknowledged.
    pub offset_flush_timeout_ms: u64,
    /// `task.shutdown.graceful.timeout.ms`: how long a stopping task may take
    /// to commit what it delivered before it is abandoned.
    pub task_shutdown_graceful_timeout_ms: u64,
    /// `session.timeout.ms` of the worker group.
    pub session_timeout_ms: u64,
    /// `heartbeat.interval.ms` of the worker group.
    pub heartbeat_interval_ms: u64,
    /// `rebalance.timeout.ms` of the worker group.
    pub rebalance_timeout_ms: u64,
    /// `consumer.session.timeout.ms`: sink tasks' consumer group session
    /// (as short as the worker group's by default, so a dead worker's sink
    /// partitions move as soon as its tasks do).
    pub consumer_session_timeout_ms: u64,
    /// `consumer.heartbeat.interval.ms`.
    pub consumer_heartbeat_interval_ms: u64,
    /// `consumer.max.poll.records`: most records a sink task is handed at
    /// once. Kafka's consumer default is 500; sinks here ask for up to 3000
    /// so that a database sink writes whole batches per transaction.
    pub consumer_max_poll_records: usize,
    /// `key.converter` for connectors that do not set one.
    pub key_converter: String,
    /// `value.converter` for connectors that do not set one.
    pub value_converter: String,
    /// `key.converter.schemas.enable` / `value.converter.schemas.enable` default.
    pub schemas_enable: bool,
    /// A directory of connector config files (`*.json`, `*.toml`), read at
    /// start and whenever a file changes.
    pub connectors_dir: Option<PathBuf>,
    /// `exactly.once.source.support` (KIP-618): `enabled` makes every source
    /// task write its records and its offsets in one transaction; `disabled`
    /// (the default, as Kafka's) and `preparing` do not.
    pub exactly_once_source_support: ExactlyOnceSourceSupport,
    /// `grpc_ssl_keystore_location`: the worker's certificate chain and key
    /// (PEM), presented on its calls to the cluster, which then go over TLS.
    pub grpc_ssl_keystore_location: Option<std::path::PathBuf>,
    /// `grpc_ssl_truststore_location`: the CA (PEM) of the cluster's
    /// certificates; set alone, the worker calls over TLS without a
    /// certificate of its own.
    pub grpc_ssl_truststore_location: Option<std::path::PathBuf>,
}

/// `exactly.once.source.support`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExactlyOnceSourceSupport {
    /// Source tasks commit offsets apart from their records (at least once).
    #[default]
    Disabled,
    /// Kafka's step of a rolling upgrade; here the same as `disabled`.
    Preparing,
    /// Source records and offsets are written in one transaction per task.
    Enabled,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8083)),
            rest_ssl_keystore_location: None,
            rest_ssl_truststore_location: None,
            rest_ssl_client_auth: "none".into(),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9183)),
            admin_ssl_keystore_location: None,
            admin_ssl_truststore_location: None,
            admin_ssl_client_auth: "none".into(),
            rest_advertised_host_name: None,
            bootstrap: "127.0.0.1:9094".into(),
            group_id: "connect-cluster".into(),
            config_storage_topic: "connect-configs".into(),
            offset_storage_topic: "connect-offsets".into(),
            status_storage_topic: "connect-status".into(),
            offset_storage_partitions: 25,
            status_storage_partitions: 5,
            storage_replication_factor: 3,
            offset_flush_interval_ms: 60_000,
            offset_flush_timeout_ms: 5_000,
            task_shutdown_graceful_timeout_ms: 5_000,
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 3_000,
            rebalance_timeout_ms: 60_000,
            consumer_session_timeout_ms: 10_000,
            consumer_heartbeat_interval_ms: 3_000,
            consumer_max_poll_records: 3_000,
            key_converter: "org.apache.kafka.connect.json.JsonConverter".into(),
            value_converter: "org.apache.kafka.connect.json.JsonConverter".into(),
            schemas_enable: true,
            connectors_dir: None,
            exactly_once_source_support: ExactlyOnceSourceSupport::Disabled,
            grpc_ssl_keystore_location: None,
            grpc_ssl_truststore_location: None,
        }
    }
}

impl Config {
    /// TLS on the REST API, `None` for plain HTTP.
    pub fn rest_tls(
        &self,
    ) -> Result<Option<runnel_common::transport::ServerTls>, runnel_common::tls::TlsError> {
        runnel_common::https::server_tls(
            self.rest_ssl_keystore_location.as_deref(),
            self.rest_ssl_truststore_location.as_deref(),
            &self.rest_ssl_client_auth,
        )
    }

    /// TLS on the admin endpoints, `None` for plain HTTP.
    pub fn admin_tls(
        &self,
    ) -> Result<Option<runnel_common::transport::ServerTls>, runnel_common::tls::TlsError> {
        runnel_common::https::server_tls(
            self.admin_ssl_keystore_location.as_deref(),
            self.admin_ssl_truststore_location.as_deref(),
            &self.admin_ssl_client_auth,
        )
    }

    /// TLS on the worker's calls to the cluster; `None` calls in clear.
    pub fn grpc_tls(
        &self,
    ) -> Result<Option<std::sync::Arc<runnel_common::tls::ClientTls>>, runnel_common::tls::TlsError>
    {
        if self.grpc_ssl_keystore_location.is_none() && self.grpc_ssl_truststore_location.is_none()
        {
            return Ok(None);
        }
        runnel_common::tls::ClientTls::client(
            self.grpc_ssl_truststore_location.clone(),
            self.grpc_ssl_keystore_location.clone(),
        )
        .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_once_source_support_takes_kafkas_values_only() {
        let c: Config =
            toml::from_str(r#"exactly_once_source_support = "enabled""#).expect("enabled parses");
        assert_eq!(
            c.exactly_once_source_support,
            ExactlyOnceSourceSupport::Enabled
        );
        let d: Config = toml::from_str("").expect("the default parses");
        assert_eq!(
            d.exactly_once_source_support,
            ExactlyOnceSourceSupport::Disabled
        );
        let bad = toml::from_str::<Config>(r#"exactly_once_source_support = "always""#)
            .expect_err("an unknown value is refused");
        assert!(bad.to_string().contains("disabled"), "{bad}");
    }
}
