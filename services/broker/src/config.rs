//! The broker's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Broker settings. TOML keys are the field names; every one can be set with
/// `RUNNEL_BROKER_<FIELD>` in the environment. Names follow Kafka's broker
/// configs where Kafka has one (`auto_create_topics_enable` is
/// `auto.create.topics.enable`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `broker.id`.
    pub broker_id: i32,
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
    /// Host clients use to reach this broker (default: the listen IP).
    pub advertised_host: Option<String>,
    /// A second gRPC listener for clients outside the brokers' own network
    /// (the `EXTERNAL` entry of Kafka's `listeners`); none when unset.
    /// Metadata served on it names every broker (and the controller) by its
    /// external address; replication keeps using `listen`/`advertised_host`.
    pub external_listen: Option<SocketAddr>,
    /// Host outside clients use to reach `external_listen` (the `EXTERNAL`
    /// entry of `advertised.listeners`; default: its listen IP).
    pub external_advertised_host: Option<String>,
    /// Port outside clients use to reach `external_listen`, when it differs
    /// (a published container port; default: the bound port).
    pub external_advertised_port: Option<u16>,
    /// Kafka protocol listen address (the `PLAINTEXT` entry of Kafka's
    /// `listeners`): Kafka clients and tools connect here.
    pub kafka_listen: SocketAddr,
    /// Host Kafka clients use to reach `kafka_listen` (`advertised.listeners`;
    /// default: `advertised_host`, else the listen IP).
    pub kafka_advertised_host: Option<String>,
    /// Port Kafka clients use to reach `kafka_listen`, when it differs (a
    /// published container port; default: the bound port).
    pub kafka_advertised_port: Option<u16>,
    /// A second Kafka listener for clients outside the brokers' network (the
    /// `EXTERNAL` entry of `listeners`); none when unset. Metadata served on
    /// it names every broker by its external Kafka address.
    pub kafka_external_listen: Option<SocketAddr>,
    /// Host outside Kafka clients use to reach `kafka_external_listen`.
    pub kafka_external_advertised_host: Option<String>,
    /// Port outside Kafka clients use to reach `kafka_external_listen`.
    pub kafka_external_advertised_port: Option<u16>,
    /// The security protocol of `kafka_listen` (its entry in Kafka's
    /// `listener.security.protocol.map`): `PLAINTEXT`, `SASL_PLAINTEXT`,
    /// `SSL` or `SASL_SSL`.
    pub kafka_security_protocol: String,
    /// The security protocol of `kafka_external_listen`.
    pub kafka_external_security_protocol: String,
    /// `sasl.enabled.mechanisms`, comma-separated: any of `PLAIN`,
    /// `SCRAM-SHA-256`, `SCRAM-SHA-512`.
    pub sasl_enabled_mechanisms: String,
    /// `connections.max.reauth.ms`: how long a SASL authentication holds
    /// before the client must re-authenticate (KIP-368); 0 for ever.
    pub connections_max_reauth_ms: u64,
    /// `quota.window.num`: how many windows client quota rates are
    /// measured over (1 to 1000).
    pub quota_window_num: u32,
    /// `quota.window.size.seconds`: each quota window's span (1 to 3600).
    pub quota_window_size_seconds: u64,
    /// `ssl.keystore.location` (type PEM): the certificate chain and private
    /// key of TLS listeners.
    pub ssl_keystore_location: Option<PathBuf>,
    /// `ssl.truststore.location` (type PEM): the CA client certificates must
    /// chain to.
    pub ssl_truststore_location: Option<PathBuf>,
    /// `ssl.client.auth`: `none`, `requested` or `required`.
    pub ssl_client_auth: String,
    /// `ssl.principal.mapping.rules`: how a client certificate's subject
    /// becomes a principal name.
    pub ssl_principal_mapping_rules: String,
    /// How often the TLS files are checked for changes (reloaded without a
    /// restart).
    pub ssl_reload_interval_ms: u64,
    /// `grpc_ssl_keystore_location`: this broker's service certificate chain
    /// and key (PEM). Set, the gRPC listeners serve TLS, calls to other
    /// services use TLS and present it, and internal RPCs (replication,
    /// transaction markers) need a service certificate.
    pub grpc_ssl_keystore_location: Option<PathBuf>,
    /// `grpc_ssl_truststore_location`: the CA (PEM) of the cluster's service
    /// and client certificates.
    pub grpc_ssl_truststore_location: Option<PathBuf>,
    /// `grpc_ssl_client_auth` on the gRPC listeners: `requested` (the
    /// default: services present one, clients may sign in otherwise) or
    /// `required`.
    pub grpc_ssl_client_auth: String,
    /// `grpc_ssl_principal_mapping_rules`: how a gRPC client certificate's
    /// subject becomes a principal (Kafka's `ssl.principal.mapping.rules`).
    pub grpc_ssl_principal_mapping_rules: String,
    /// `grpc_service_principals`: `;`-separated principals that may call
    /// internal RPCs (`User:CN=broker-1;User:CN=coordinator`); empty for any
    /// certificate the truststore verifies.
    pub grpc_service_principals: String,
    /// Callers of the public gRPC API must sign in: a user and password
    /// checked against the SCRAM credentials, or a client certificate;
    /// others are refused with UNAUTHENTICATED. Without it they are
    /// `User:ANONYMOUS`.
    pub grpc_authentication_required: bool,
    /// Whether requests are authorized against the ACLs (Kafka's
    /// `authorizer.class.name` set to its `StandardAuthorizer`); without it
    /// every authenticated client may do everything.
    pub authorizer_enabled: bool,
    /// `super.users`: principals allowed everything, `;`-separated
    /// (`User:admin;User:ops`).
    pub super_users: String,
    /// `allow.everyone.if.no.acl.found`: a resource no binding names is
    /// open to all (false, Kafka's default once an authorizer is set).
    pub allow_everyone_if_no_acl_found: bool,
    /// `broker.rack`.
    pub rack: String,
    /// Where partition logs live (`log.dirs`).
    pub data_dir: PathBuf,
    /// The controllers' gRPC addresses, `host:port` separated by commas
    /// (Kafka's `controller.quorum.bootstrap.servers`): any of them will do.
    pub controller: String,
    /// `broker.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: u64,
    /// `replica.lag.time.max.ms`: a follower behind this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// Failure tests cut the broker off from its peers with this switch.
    #[serde(skip)]
    pub net_fault: runnel_common::netfault::NetFault,
    /// `log.retention.check.interval.ms`: how often retention and compaction run.
    pub log_retention_check_interval_ms: u64,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `num.partitions` for auto-created topics.
    pub num_partitions: i32,
    /// `default.replication.factor` for auto-created topics.
    pub default_replication_factor: i32,
    /// Disk I/O threads (`num.io.threads`); 0 means one per CPU.
    pub io_threads: usize,
    /// Jobs queued per I/O thread before producers wait.
    pub io_queue_depth: usize,
    /// Segment and index files kept open at most, over every partition
    /// (least recently used closed first, reopened on demand); 0 means half
    /// the process's open-file limit, which the broker raises to its hard
    /// limit at start.
    pub log_max_open_files: usize,
    /// `socket.request.max.bytes`: the largest request accepted.
    pub socket_request_max_bytes: usize,
    /// `log.cleaner.dedupe.buffer.size`.
    pub log_cleaner_dedupe_buffer_size: usize,
    /// `producer.id.expiration.ms`: a partition forgets an idempotent
    /// producer silent this long (its retries are then no longer recognised).
    pub producer_id_expiration_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            broker_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 9094)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9194)),
            admin_ssl_keystore_location: None,
            admin_ssl_truststore_location: None,
            admin_ssl_client_auth: "none".into(),
            advertised_host: None,
            external_listen: None,
            external_advertised_host: None,
            external_advertised_port: None,
            kafka_listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            kafka_advertised_host: None,
            kafka_advertised_port: None,
            kafka_external_listen: None,
            kafka_external_advertised_host: None,
            kafka_external_advertised_port: None,
            kafka_security_protocol: "PLAINTEXT".into(),
            kafka_external_security_protocol: "PLAINTEXT".into(),
            sasl_enabled_mechanisms: runnel_kafka::auth::MECHANISMS.join(","),
            connections_max_reauth_ms: 0,
            quota_window_num: 11,
            quota_window_size_seconds: 1,
            ssl_keystore_location: None,
            ssl_truststore_location: None,
            ssl_client_auth: "none".into(),
            ssl_principal_mapping_rules: "DEFAULT".into(),
            ssl_reload_interval_ms: 30_000,
            grpc_ssl_keystore_location: None,
            grpc_ssl_truststore_location: None,
            grpc_ssl_client_auth: "requested".into(),
            grpc_ssl_principal_mapping_rules: "DEFAULT".into(),
            grpc_service_principals: String::new(),
            grpc_authentication_required: false,
            authorizer_enabled: false,
            super_users: String::new(),
            allow_everyone_if_no_acl_found: false,
            rack: String::new(),
            data_dir: PathBuf::from("./runnel-data/broker-1"),
            controller: "127.0.0.1:9093".into(),
            heartbeat_interval_ms: 2000,
            replica_lag_time_max_ms: 30_000,
            net_fault: runnel_common::netfault::NetFault::default(),
            log_retention_check_interval_ms: 300_000,
            auto_create_topics_enable: true,
            num_partitions: 1,
            default_replication_factor: 1,
            io_threads: 0,
            io_queue_depth: 256,
            log_max_open_files: 0,
            socket_request_max_bytes: 100 * 1024 * 1024,
            log_cleaner_dedupe_buffer_size: 128 * 1024 * 1024,
            producer_id_expiration_ms: 86_400_000,
        }
    }
}

/// Kafka's security protocols a listener can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// No authentication, no encryption.
    Plaintext,
    /// SASL authentication, no encryption.
    SaslPlaintext,
    /// TLS (principals from client certificates, if any).
    Ssl,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The protocol Kafka names `name`.
    pub fn parse(name: &str) -> Result<SecurityProtocol, String> {
        match name.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(format!(
                "unknown security protocol {name:?} (PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL)"
            )),
        }
    }

    /// Whether clients authenticate with SASL.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Whether the listener speaks TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
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

    /// The TLS of the Kafka listeners, when one of them speaks it.
    pub fn kafka_tls(&self) -> Result<runnel_kafka::server::ListenerTls, String> {
        use runnel_common::tls::{ClientAuth, PrincipalMapper, ReloadingTls, TlsFiles};
        let keystore = self.ssl_keystore_location.clone().ok_or(
            "a TLS listener (SSL, SASL_SSL) needs ssl_keystore_location (PEM: certificate chain and key)",
        )?;
        let files = TlsFiles {
            keystore,
            truststore: self.ssl_truststore_location.clone(),
            client_auth: ClientAuth::parse(&self.ssl_client_auth).map_err(|e| e.to_string())?,
            alpn: Vec::new(),
        };
        Ok(runnel_kafka::server::ListenerTls {
            config: ReloadingTls::load(files).map_err(|e| e.to_string())?,
            principals: std::sync::Arc::new(
                PrincipalMapper::parse(&self.ssl_principal_mapping_rules)
                    .map_err(|e| e.to_string())?,
            ),
        })
    }

    /// TLS on the gRPC listeners and calls, and who may call internal RPCs.
    pub fn grpc_security(&self) -> Result<runnel_common::transport::GrpcSecurity, String> {
        runnel_common::transport::GrpcSecurity::from_settings(
            runnel_common::transport::GrpcSslSettings {
                keystore: self.grpc_ssl_keystore_location.as_deref(),
                truststore: self.grpc_ssl_truststore_location.as_deref(),
                client_auth: &self.grpc_ssl_client_auth,
                principal_mapping_rules: &self.grpc_ssl_principal_mapping_rules,
                service_principals: &self.grpc_service_principals,
            },
        )
        .map_err(|e| e.to_string())
    }

    /// The authorizer's settings, `None` when no authorizer is enabled.
    pub fn authorizer(&self) -> Option<runnel_common::acl::AuthorizerSettings> {
        runnel_common::acl::AuthorizerSettings::from_config(
            self.authorizer_enabled,
            &self.super_users,
            self.allow_everyone_if_no_acl_found,
        )
    }

    /// The enabled SASL mechanisms, checked.
    pub fn sasl_mechanisms(&self) -> Result<Vec<String>, String> {
        let mechanisms: Vec<String> = self
            .sasl_enabled_mechanisms
            .split(',')
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty())
            .collect();
        if mechanisms.is_empty() {
            return Err("sasl_enabled_mechanisms is empty".into());
        }
        match mechanisms
            .iter()
            .find(|m| !runnel_kafka::auth::MECHANISMS.contains(&m.as_str()))
        {
            Some(unknown) => Err(format!(
                "unknown SASL mechanism {unknown} (supported: {})",
                runnel_kafka::auth::MECHANISMS.join(", ")
            )),
            None => Ok(mechanisms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_settings_are_checked() {
        assert_eq!(
            SecurityProtocol::parse("sasl_ssl"),
            Ok(SecurityProtocol::SaslSsl)
        );
        assert!(SecurityProtocol::parse("SASL_SSL").unwrap().tls());
        assert!(!SecurityProtocol::parse("SSL").unwrap().sasl());
        assert!(SecurityProtocol::parse("KERBEROS").is_err());
        let config = |mechanisms: &str| Config {
            sasl_enabled_mechanisms: mechanisms.into(),
            ..Config::default()
        };
        assert_eq!(
            config(" plain , SCRAM-SHA-512").sasl_mechanisms(),
            Ok(vec!["PLAIN".to_string(), "SCRAM-SHA-512".to_string()])
        );
        assert!(config("GSSAPI").sasl_mechanisms().is_err());
        assert!(config(",").sasl_mechanisms().is_err());
        let no_keystore = Config {
            kafka_security_protocol: "SSL".into(),
            ..Config::default()
        };
        assert!(
            no_keystore
                .kafka_tls()
                .unwrap_err()
                .contains("ssl_keystore_location")
        );
        let missing = Config {
            ssl_keystore_location: Some("/nonexistent/broker.pem".into()),
            ..Config::default()
        };
        assert!(
            missing
                .kafka_tls()
                .unwrap_err()
                .contains("/nonexistent/broker.pem")
        );
    }
}
