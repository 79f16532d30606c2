//! The coordinator's configuration.

use std::net::SocketAddr;

use serde::Deserialize;

/// Coordinator settings. TOML keys are the field names; every one can be
/// set with `RUNNEL_COORDINATOR_<FIELD>` in the environment. Names follow
/// Kafka's group-coordinator configs (`offsets_topic_num_partitions` is
/// `offsets.topic.num.partitions`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This coordinator's id.
    pub coordinator_id: i32,
    /// gRPC listen address.
    pub listen: SocketAddr,
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
    /// Host clients use to reach this coordinator (default: the listen IP).
    pub advertised_host: Option<String>,
    /// Host clients outside the cluster's network use (registered as the
    /// `grpc-external` endpoint, shown to clients on a broker's external listener).
    pub external_advertised_host: Option<String>,
    /// Port those clients use, when it differs from the listen port.
    pub external_advertised_port: Option<u16>,
    /// Brokers to reach the cluster through, `host:port`, comma-separated.
    pub bootstrap: String,
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.replication.factor` (capped by the brokers there are).
    pub offsets_topic_replication_factor: i32,
    /// `group.min.session.timeout.ms`.
    pub group_min_session_timeout_ms: i64,
    /// `group.max.session.timeout.ms`.
    pub group_max_session_timeout_ms: i64,
    /// `group.initial.rebalance.delay.ms`.
    pub group_initial_rebalance_delay_ms: i64,
    /// `group.max.size`.
    pub group_max_size: usize,
    /// `group.consumer.session.timeout.ms` (KIP-848 groups).
    pub group_consumer_session_timeout_ms: i64,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub group_consumer_heartbeat_interval_ms: i64,
    /// `offsets.retention.minutes`: committed offsets of a group without
    /// members are deleted this long after it emptied and after their commit.
    pub offsets_retention_minutes: u64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
    /// `transaction.state.log.num.partitions`.
    pub transaction_state_log_num_partitions: i32,
    /// `transaction.state.log.replication.factor` (capped by the brokers there are).
    pub transaction_state_log_replication_factor: i32,
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a producer may ask for.
    pub transaction_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an idle transactional id is forgotten after this.
    pub transactional_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how
    /// often timed-out transactions are looked for (and idle ids expired).
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    /// `grpc_ssl_keystore_location`: this service's certificate chain and
    /// key (PEM). Set, its gRPC listener serves TLS, its calls to other
    /// services use TLS and present it, and its internal RPCs need a
    /// service certificate.
    pub grpc_ssl_keystore_location: Option<std::path::PathBuf>,
    /// `grpc_ssl_truststore_location`: the CA (PEM) of the cluster's service
    /// and client certificates.
    pub grpc_ssl_truststore_location: Option<std::path::PathBuf>,
    /// `grpc_ssl_client_auth`: `requested` (the default) or `required`.
    pub grpc_ssl_client_auth: String,
    /// `grpc_ssl_principal_mapping_rules` (Kafka's `ssl.principal.mapping.rules`).
    pub grpc_ssl_principal_mapping_rules: String,
    /// `grpc_service_principals`: `;`-separated principals that may call
    /// internal RPCs; empty for any certificate the truststore verifies.
    pub grpc_service_principals: String,
    /// Callers of the public gRPC API must sign in: a user and password
    /// checked against the SCRAM credentials, or a client certificate;
    /// others are refused with UNAUTHENTICATED. Without it they are
    /// `User:ANONYMOUS`.
    pub grpc_authentication_required: bool,
    /// Whether requests are authorized against the ACLs (Kafka's
    /// `authorizer.class.name` set to its `StandardAuthorizer`).
    pub authorizer_enabled: bool,
    /// `super.users`: principals allowed everything, `;`-separated.
    pub super_users: String,
    /// `allow.everyone.if.no.acl.found`.
    pub allow_everyone_if_no_acl_found: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            coordinator_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 9095)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9195)),
            admin_ssl_keystore_location: None,
            admin_ssl_truststore_location: None,
            admin_ssl_client_auth: "none".into(),
            advertised_host: None,
            external_advertised_host: None,
            external_advertised_port: None,
            bootstrap: "127.0.0.1:9094".into(),
            offsets_topic_num_partitions: crate::offsets::DEFAULT_OFFSETS_PARTITIONS,
            offsets_topic_replication_factor: 3,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_max_size: usize::MAX,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_retention_check_interval_ms: 600_000,
            transaction_state_log_num_partitions: crate::transaction::DEFAULT_TXN_PARTITIONS,
            transaction_state_log_replication_factor: 3,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: 10_000,
            grpc_ssl_keystore_location: None,
            grpc_ssl_truststore_location: None,
            grpc_ssl_client_auth: "requested".into(),
            grpc_ssl_principal_mapping_rules: "DEFAULT".into(),
            grpc_service_principals: String::new(),
            grpc_authentication_required: false,
            authorizer_enabled: false,
            super_users: String::new(),
            allow_everyone_if_no_acl_found: false,
        }
    }
}

impl Config {
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

    /// The authorizer's settings, `None` when no authorizer is enabled.
    pub fn authorizer(&self) -> Option<runnel_common::acl::AuthorizerSettings> {
        runnel_common::acl::AuthorizerSettings::from_config(
            self.authorizer_enabled,
            &self.super_users,
            self.allow_everyone_if_no_acl_found,
        )
    }

    /// TLS on the gRPC listener and calls, and who may call internal RPCs.
    pub fn grpc_security(
        &self,
    ) -> Result<runnel_common::transport::GrpcSecurity, runnel_common::tls::TlsError> {
        runnel_common::transport::GrpcSecurity::from_settings(
            runnel_common::transport::GrpcSslSettings {
                keystore: self.grpc_ssl_keystore_location.as_deref(),
                truststore: self.grpc_ssl_truststore_location.as_deref(),
                client_auth: &self.grpc_ssl_client_auth,
                principal_mapping_rules: &self.grpc_ssl_principal_mapping_rules,
                service_principals: &self.grpc_service_principals,
            },
        )
    }

    /// The KIP-848 group settings this config sets.
    pub fn consumer_group_config(&self) -> crate::consumer_group::ConsumerGroupConfig {
        crate::consumer_group::ConsumerGroupConfig {
            session_timeout_ms: self.group_consumer_session_timeout_ms,
            heartbeat_interval_ms: self.group_consumer_heartbeat_interval_ms,
            ..crate::consumer_group::ConsumerGroupConfig::default()
        }
    }

    /// The transaction limits this config sets.
    pub fn txn_config(&self) -> crate::transaction::TxnConfig {
        crate::transaction::TxnConfig {
            max_timeout_ms: self.transaction_max_timeout_ms,
            id_expiration_ms: self.transactional_id_expiration_ms,
        }
    }

    /// The group limits this config sets.
    pub fn group_config(&self) -> crate::group::GroupConfig {
        crate::group::GroupConfig {
            min_session_timeout_ms: self.group_min_session_timeout_ms,
            max_session_timeout_ms: self.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            max_size: self.group_max_size,
        }
    }
}
