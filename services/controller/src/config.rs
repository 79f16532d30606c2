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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 9093)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9193)),
            advertised_host: None,
            external_advertised_host: None,
            external_advertised_port: None,
            data_dir: PathBuf::from("./runnel-data/controller"),
            num_partitions: 1,
            default_replication_factor: 1,
            broker_session_timeout_ms: 9000,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
        }
    }
}
