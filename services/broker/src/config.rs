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
            socket_request_max_bytes: 100 * 1024 * 1024,
            log_cleaner_dedupe_buffer_size: 128 * 1024 * 1024,
            producer_id_expiration_ms: 86_400_000,
        }
    }
}
