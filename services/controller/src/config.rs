//! The controller's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Controller settings. TOML keys are the field names; every one can be set
/// with `RUNNEL_CONTROLLER_<FIELD>` in the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This controller's id (`node.id`).
    pub node_id: i32,
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
    /// Host brokers and clients use to reach this controller (default: the listen IP).
    pub advertised_host: Option<String>,
    /// Host clients outside the cluster's network reach the gRPC listener at
    /// (brokers' external listeners hand it to their clients); none when unset.
    pub external_advertised_host: Option<String>,
    /// Port for `external_advertised_host` (default: the gRPC listen port).
    pub external_advertised_port: Option<u16>,
    /// Where `controller.db` lives.
    pub data_dir: PathBuf,
    /// `num.partitions`: partitions of a topic created without a count.
    pub num_partitions: i32,
    /// `default.replication.factor`: replicas of a topic created without one.
    pub default_replication_factor: i32,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// `auto.leader.rebalance.enable`: move leadership back to preferred replicas.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`, in ms: how often to look.
    pub leader_imbalance_check_interval_ms: u64,
    /// `controller.quorum.voters`: the controllers of the quorum as
    /// `id@host:port` separated by commas, this one included. Empty: a quorum
    /// of this controller alone.
    pub quorum_voters: String,
    /// Start as a new controller that waits to be added to a running quorum
    /// (`runnel controllers add`) instead of forming one.
    pub quorum_join: bool,
    /// `controller.quorum.election.timeout.ms`: a follower that hears nothing
    /// from the active controller for the active controller's lease (1.5 times
    /// this) plus this (up to 1.5 times, randomized) starts an election:
    /// 1.0-1.2 s after the last heartbeat with the default 400.
    pub quorum_election_timeout_ms: u64,
    /// Take a snapshot of the metadata state every this many Raft entries
    /// and drop the log before it (a controller further behind is sent the
    /// snapshot).
    pub quorum_snapshot_entries: u64,
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
    /// Failure tests cut the controller off from its peers with this switch.
    #[serde(skip)]
    pub net_fault: runnel_common::netfault::NetFault,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 9093)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9193)),
            admin_ssl_keystore_location: None,
            admin_ssl_truststore_location: None,
            admin_ssl_client_auth: "none".into(),
            advertised_host: None,
            external_advertised_host: None,
            external_advertised_port: None,
            data_dir: PathBuf::from("./runnel-data/controller"),
            num_partitions: 1,
            default_replication_factor: 1,
            broker_session_timeout_ms: 9000,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
            quorum_voters: String::new(),
            quorum_join: false,
            quorum_election_timeout_ms: 400,
            quorum_snapshot_entries: 5000,
            grpc_ssl_keystore_location: None,
            grpc_ssl_truststore_location: None,
            grpc_ssl_client_auth: "requested".into(),
            grpc_ssl_principal_mapping_rules: "DEFAULT".into(),
            grpc_service_principals: String::new(),
            grpc_authentication_required: false,
            authorizer_enabled: false,
            super_users: String::new(),
            allow_everyone_if_no_acl_found: false,
            net_fault: runnel_common::netfault::NetFault::default(),
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
}

/// One entry of `controller.quorum.voters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    /// The controller's `node.id`.
    pub id: i32,
    /// `host:port` of its gRPC listener.
    pub address: String,
}

/// Parses `controller.quorum.voters` (`1@host:port,2@host:port`).
pub fn parse_voters(text: &str) -> Result<Vec<Voter>, String> {
    let mut voters: Vec<Voter> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, address) = part
            .split_once('@')
            .ok_or_else(|| format!("quorum voter {part:?} is not id@host:port"))?;
        let id: i32 = id
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| format!("quorum voter {part:?}: {id:?} is not a controller id"))?;
        let port = address.rsplit_once(':').map(|(_, p)| p);
        if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
            return Err(format!(
                "quorum voter {part:?}: {address:?} is not host:port"
            ));
        }
        if voters.iter().any(|v| v.id == id) {
            return Err(format!(
                "controller {id} is listed twice in the quorum voters"
            ));
        }
        voters.push(Voter {
            id,
            address: address.to_owned(),
        });
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_and_bad_ones_are_named() {
        let v = parse_voters("1@a:9093, 2@b:9093,3@10.0.0.3:19093").expect("valid");
        assert_eq!(v.len(), 3);
        assert_eq!(
            v[2],
            Voter {
                id: 3,
                address: "10.0.0.3:19093".into()
            }
        );
        assert!(parse_voters("").expect("empty is fine").is_empty());
        assert!(parse_voters("a:9093").unwrap_err().contains("id@host:port"));
        assert!(
            parse_voters("x@a:9093")
                .unwrap_err()
                .contains("not a controller id")
        );
        assert!(parse_voters("1@a").unwrap_err().contains("host:port"));
        assert!(parse_voters("1@a:1,1@b:2").unwrap_err().contains("twice"));
    }
}
