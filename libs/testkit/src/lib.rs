//! `runnel-testkit`: a whole Runnel cluster inside one test process.
//!
//! [`TestCluster::builder`] starts a controller (or a quorum of them),
//! brokers and (if asked) group coordinators on ephemeral loopback ports with temporary data
//! directories; a test can stop, kill (no flush, like `kill -9`) and
//! restart any of them, isolate one from its peers or cut two apart
//! ([`TestCluster::cut`]), and waits for the cluster to settle with bounded
//! polls ([`wait_for`]) rather than sleeps. Only tests depend on this crate.
//! [`clients`] runs real Kafka clients against it, [`kafka_wire`] speaks
//! the protocol by hand.

pub mod clients;
pub mod kafka_wire;
pub mod load;
pub mod txn;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use runnel_broker::BrokerHandle;
use runnel_client::{
    Admin, ClientConfig, Cluster, Consumer, ConsumerConfig, NewTopic, OffsetReset,
};
use runnel_common::netfault::{NetFault, PeerName};
use runnel_common::shutdown::CancellationToken;
use runnel_controller::ControllerHandle;
use runnel_coordinator::CoordinatorHandle;
use tempfile::TempDir;

/// A broker or a controller of a [`TestCluster`], by index (as in
/// [`TestCluster::isolate`]), for cutting two nodes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// Broker `i` (broker id `i + 1`).
    Broker(usize),
    /// Controller `i` (node id `i + 1`).
    Controller(usize),
}

/// Builds a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct Builder {
    brokers: usize,
    retention_check_interval_ms: u64,
    auto_create_topics: bool,
    num_partitions: i32,
    coordinators: usize,
    controllers: usize,
    quorum_snapshot_entries: u64,
    broker_heartbeat_interval_ms: u64,
    broker_session_timeout_ms: u64,
    kafka_security_protocol: String,
    connections_max_reauth_ms: u64,
    kafka_client_auth: String,
    super_users: Option<String>,
    grpc_tls: bool,
    log_max_open_files: usize,
    racks: Vec<String>,
}

impl Builder {
    /// How many controllers (default 1). More than one form a Raft quorum
    /// with a 300 ms election timeout.
    pub fn controllers(mut self, n: usize) -> Self {
        self.controllers = n.max(1);
        self
    }

    /// Controllers snapshot their state every this many Raft entries
    /// (default 5000), so a test can make one catch up from a snapshot.
    pub fn quorum_snapshot_entries(mut self, n: u64) -> Self {
        self.quorum_snapshot_entries = n;
        self
    }

    /// The brokers' heartbeat interval and the controllers' broker session
    /// timeout (default 100 ms and 2 s).
    pub fn broker_heartbeats(mut self, interval_ms: u64, session_timeout_ms: u64) -> Self {
        self.broker_heartbeat_interval_ms = interval_ms;
        self.broker_session_timeout_ms = session_timeout_ms;
        self
    }

    /// The brokers' Kafka listener security protocol (default `PLAINTEXT`;
    /// `SASL_PLAINTEXT` authenticates against the users the test creates).
    pub fn kafka_security_protocol(mut self, protocol: &str) -> Self {
        self.kafka_security_protocol = protocol.into();
        self
    }

    /// The brokers' `ssl.client.auth` (default `none`). With an `SSL` or
    /// `SASL_SSL` protocol the cluster makes a throwaway CA and
    /// certificates under [`TestCluster::tls_dir`] first: `ca.pem`,
    /// `broker.pem` (the brokers' keystore, for 127.0.0.1 and localhost),
    /// `alice.pem`/`alice.key` (`CN=alice,OU=clients`), and `other-ca.pem`
    /// with `mallory.pem`/`mallory.key` from another CA. Certificates are
    /// checked for changes every 200 ms.
    pub fn kafka_client_auth(mut self, auth: &str) -> Self {
        self.kafka_client_auth = auth.into();
        self
    }

    /// The brokers' `connections.max.reauth.ms` (default 0: no re-authentication).
    pub fn connections_max_reauth_ms(mut self, ms: u64) -> Self {
        self.connections_max_reauth_ms = ms;
        self
    }

    /// Brokers authorize Kafka requests against the ACLs, with these
    /// `super.users` (`User:admin;User:ops`); default: no authorizer.
    pub fn authorizer(mut self, super_users: &str) -> Self {
        self.super_users = Some(super_users.into());
        self
    }

    /// Mutual TLS on every gRPC listener and call (default off): each
    /// service presents its own certificate from [`TestCluster::tls_dir`]
    /// (`broker-service.pem`, `controller-service.pem`,
    /// `coordinator-service.pem`: principals `User:broker`,
    /// `User:controller`, `User:coordinator` by the rule that maps `CN=x`
    /// to `x`, the only ones allowed the internal RPCs), and
    /// [`TestCluster::client_config`] trusts `ca.pem` and presents
    /// `admin-client.pem` (`User:admin`). Brokers serve their admin
    /// endpoints over HTTPS. With [`Builder::authorizer`] too,
    /// the gRPC API requires a sign-in and is authorized.
    pub fn grpc_tls(mut self, enabled: bool) -> Self {
        self.grpc_tls = enabled;
        self
    }

    /// The brokers' `log_max_open_files` (default 0: half the open-file limit).
    pub fn log_max_open_files(mut self, n: usize) -> Self {
        self.log_max_open_files = n;
        self
    }

    /// The brokers' `broker.rack`: broker `i` gets `racks[i % racks.len()]`
    /// (default: none).
    pub fn racks(mut self, racks: &[&str]) -> Self {
        self.racks = racks.iter().map(|r| (*r).to_owned()).collect();
        self
    }

    /// How many brokers (default 1).
    pub fn brokers(mut self, n: usize) -> Self {
        self.brokers = n;
        self
    }

    /// The brokers' `log.retention.check.interval.ms` (default 5 minutes).
    pub fn retention_check_interval_ms(mut self, ms: u64) -> Self {
        self.retention_check_interval_ms = ms;
        self
    }

    /// The brokers' `auto.create.topics.enable` (default true).
    pub fn auto_create_topics(mut self, enabled: bool) -> Self {
        self.auto_create_topics = enabled;
        self
    }

    /// `num.partitions` for topics created without a count (default 1).
    pub fn num_partitions(mut self, n: i32) -> Self {
        self.num_partitions = n;
        self
    }

    /// How many group coordinators (default 0). They share 5 partitions of
    /// `__consumer_offsets`, start groups without the initial rebalance
    /// delay, accept session timeouts from 500 ms, and give KIP-848 members
    /// a 2 s session with 200 ms heartbeats.
    pub fn coordinators(mut self, n: usize) -> Self {
        self.coordinators = n;
        self
    }

    /// Starts the cluster and waits until every broker is registered, caught up and unfenced.
    pub async fn start(self) -> TestCluster {
        let dir = tempfile::tempdir().expect("a temp dir for the test cluster");
        let mut cluster = TestCluster {
            dir,
            settings: self.clone(),
            controllers: (0..self.controllers).map(|_| None).collect(),
            controller_addrs: (0..self.controllers).map(|_| free_port()).collect(),
            controller_faults: (0..self.controllers).map(|_| NetFault::default()).collect(),
            brokers: (0..self.brokers).map(|_| None).collect(),
            broker_addrs: vec![None; self.brokers],
            // One switch each: clones of one `NetFault` would share it.
            faults: (0..self.brokers).map(|_| NetFault::default()).collect(),
            coordinators: (0..self.coordinators).map(|_| None).collect(),
            coordinator_addrs: vec![None; self.coordinators],
        };
        if self.grpc_tls
            || self
                .kafka_security_protocol
                .to_ascii_uppercase()
                .ends_with("SSL")
        {
            write_test_certificates(&cluster.tls_dir());
        }
        for i in 0..self.controllers {
            cluster.start_controller(i).await;
        }
        cluster.wait_active_controller().await;
        for i in 0..self.brokers {
            cluster.start_broker(i).await;
        }
        cluster.wait_ready().await;
        for i in 0..self.coordinators {
            cluster.start_coordinator(i).await;
        }
        if self.coordinators > 0 {
            cluster.wait_coordinators().await;
        }
        cluster
    }
}

/// A running in-process cluster; dropping it stops everything.
#[derive(Debug)]
pub struct TestCluster {
    dir: TempDir,
    settings: Builder,
    controllers: Vec<Option<ControllerHandle>>,
    /// Fixed up front: every controller lists all of them as voters.
    controller_addrs: Vec<SocketAddr>,
    /// One network switch per controller, kept across restarts.
    controller_faults: Vec<NetFault>,
    brokers: Vec<Option<BrokerHandle>>,
    /// Each broker's gRPC, admin and Kafka addresses, kept across restarts.
    broker_addrs: Vec<Option<(SocketAddr, SocketAddr, SocketAddr)>>,
    /// One network switch per broker, kept across restarts.
    faults: Vec<NetFault>,
    coordinators: Vec<Option<CoordinatorHandle>>,
    coordinator_addrs: Vec<Option<(SocketAddr, SocketAddr)>>,
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A loopback port free now, for a node whose address must be known before
/// it starts (a controller quorum's) or stay the same across its restarts.
fn free_port() -> SocketAddr {
    runnel_common::netfault::free_loopback_addr()
}

/// Writes the test CA and certificates [`Builder::kafka_client_auth`] lists.
fn write_test_certificates(dir: &std::path::Path) {
    use runnel_common::certs::DevCa;
    std::fs::create_dir_all(dir).expect("the test certificate directory");
    let write = |name: &str, pem: &str| {
        std::fs::write(dir.join(name), pem).expect("a test certificate is written");
    };
    let ca = DevCa::new("runnel test CA").expect("a test CA");
    write("ca.pem", ca.ca_pem());
    write(
        "broker.pem",
        &ca.server_keystore(&["127.0.0.1", "localhost"])
            .expect("the brokers' certificate"),
    );
    let (cert, key) = ca
        .client("alice", Some("clients"))
        .expect("alice's certificate");
    write("alice.pem", &cert);
    write("alice.key", &key);
    let other = DevCa::new("another CA").expect("another CA");
    write("other-ca.pem", other.ca_pem());
    let (cert, key) = other
        .client("mallory", None)
        .expect("mallory's certificate");
    write("mallory.pem", &cert);
    write("mallory.key", &key);
    let (cert, key) = ca.client("admin", None).expect("the admin's certificate");
    write("admin-client.pem", &format!("{cert}{key}"));
    for service in SERVICES {
        write(
            &format!("{service}-service.pem"),
            &ca.service_keystore(service, &["127.0.0.1", "localhost"])
                .expect("a service certificate"),
        );
    }
}

/// The services with certificates of their own under [`Builder::grpc_tls`].
const SERVICES: [&str; 3] = ["broker", "controller", "coordinator"];

/// `grpc_service_principals` of a [`Builder::grpc_tls`] cluster.
const SERVICE_PRINCIPALS: &str = "User:broker;User:controller;User:coordinator";

/// `grpc_ssl_principal_mapping_rules` of a [`Builder::grpc_tls`] cluster.
const GRPC_PRINCIPAL_RULES: &str = "RULE:^CN=([^,]+)$/$1/,DEFAULT";

impl TestCluster {
    /// A builder with one broker.
    pub fn builder() -> Builder {
        Builder {
            brokers: 1,
            retention_check_interval_ms: 300_000,
            auto_create_topics: true,
            num_partitions: 1,
            coordinators: 0,
            controllers: 1,
            quorum_snapshot_entries: 5000,
            broker_heartbeat_interval_ms: 100,
            broker_session_timeout_ms: 2_000,
            kafka_security_protocol: "PLAINTEXT".into(),
            connections_max_reauth_ms: 0,
            super_users: None,
            kafka_client_auth: "none".into(),
            grpc_tls: false,
            log_max_open_files: 0,
            racks: Vec::new(),
        }
    }

    /// The directory holding every node's data.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Where the cluster's test certificates are (see [`Builder::kafka_client_auth`]).
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// Bootstrap addresses of the running brokers.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .zip(&self.broker_addrs)
            .filter(|(b, _)| b.is_some())
            .filter_map(|(_, a)| a.map(|(grpc, _, _)| grpc.to_string()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The running brokers' Kafka listeners, for Kafka clients' `bootstrap.servers`.
    pub fn kafka_bootstrap(&self) -> String {
        self.brokers
            .iter()
            .zip(&self.broker_addrs)
            .filter(|(b, _)| b.is_some())
            .filter_map(|(_, a)| a.map(|(_, _, kafka)| kafka.to_string()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client config for this cluster.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            tls: self.settings.grpc_tls.then(|| {
                runnel_common::tls::ClientTls::client(
                    Some(self.tls_dir().join("ca.pem")),
                    Some(self.tls_dir().join("admin-client.pem")),
                )
                .expect("the test CA loads")
            }),
            ..ClientConfig::new(self.bootstrap())
        }
    }

    /// The `grpc_ssl_*` paths of `service` (`broker`, `controller`,
    /// `coordinator`): its keystore and the CA, under [`Builder::grpc_tls`].
    fn grpc_ssl(&self, service: &str) -> (Option<PathBuf>, Option<PathBuf>) {
        if !self.settings.grpc_tls {
            return (None, None);
        }
        (
            Some(self.tls_dir().join(format!("{service}-service.pem"))),
            Some(self.tls_dir().join("ca.pem")),
        )
    }

    /// A shared client connection to this cluster.
    pub fn client(&self) -> std::sync::Arc<Cluster> {
        Cluster::new(self.client_config())
    }

    /// An admin client.
    pub fn admin(&self) -> Admin {
        Admin::new(self.client_config())
    }

    /// The controllers' gRPC addresses, comma separated (what brokers are given).
    pub fn controller_addrs(&self) -> String {
        self.controller_addrs
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Controller `i`'s gRPC address.
    pub fn controller_addr(&self, i: usize) -> SocketAddr {
        self.controller_addrs[i]
    }

    /// Controller `i`, if running.
    pub fn controller(&self, i: usize) -> Option<&ControllerHandle> {
        self.controllers[i].as_ref()
    }

    /// The running controller that is the active one, if any.
    pub fn active_controller(&self) -> Option<usize> {
        (0..self.controllers.len()).find(|&i| {
            self.controllers[i]
                .as_ref()
                .is_some_and(|c| c.controller.is_active())
        })
    }

    /// Waits (bounded) until one running controller is active and every
    /// running controller knows it.
    pub async fn wait_active_controller(&self) -> usize {
        wait_for("an active controller", Duration::from_secs(20), || {
            let known = self.active_controller().is_some_and(|a| {
                let id = a as i32 + 1;
                self.controllers
                    .iter()
                    .flatten()
                    .all(|c| c.controller.active().is_some_and(|(l, _)| l == id))
            });
            async move { known }
        })
        .await;
        self.active_controller().expect("an active controller")
    }

    /// Broker `i`'s admin HTTP address.
    pub fn broker_admin_addr(&self, i: usize) -> SocketAddr {
        self.broker_addrs[i].expect("broker was started").1
    }

    async fn start_controller(&mut self, i: usize) {
        let n = self.controller_addrs.len();
        let (keystore, truststore) = self.grpc_ssl("controller");
        let config = runnel_controller::Config {
            grpc_ssl_keystore_location: keystore,
            grpc_ssl_truststore_location: truststore,
            grpc_service_principals: SERVICE_PRINCIPALS.into(),
            grpc_ssl_principal_mapping_rules: GRPC_PRINCIPAL_RULES.into(),
            grpc_authentication_required: self.settings.grpc_tls
                && self.settings.super_users.is_some(),
            node_id: i as i32 + 1,
            listen: self.controller_addrs[i],
            admin_listen: any_port(),
            data_dir: self.dir.path().join(format!("controller-{}", i + 1)),
            broker_session_timeout_ms: self.settings.broker_session_timeout_ms,
            num_partitions: self.settings.num_partitions,
            quorum_voters: if n > 1 {
                self.controller_addrs
                    .iter()
                    .enumerate()
                    .map(|(j, a)| format!("{}@{a}", j + 1))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                String::new()
            },
            quorum_election_timeout_ms: 300,
            quorum_snapshot_entries: self.settings.quorum_snapshot_entries,
            net_fault: self.controller_faults[i].clone(),
            authorizer_enabled: self.settings.super_users.is_some(),
            super_users: self.settings.super_users.clone().unwrap_or_default(),
            ..runnel_controller::Config::default()
        };
        let handle = start_on(config, "the controller starts", |c| {
            runnel_controller::start(c, CancellationToken::new())
        })
        .await;
        self.controllers[i] = Some(handle);
    }

    async fn start_broker(&mut self, i: usize) {
        // A restarted broker keeps its ports, as a real one would (picked
        // where no connection's local port can take them meanwhile).
        let (listen, admin_listen, kafka_listen) =
            self.broker_addrs[i].unwrap_or_else(|| (free_port(), free_port(), free_port()));
        let (keystore, truststore) = self.grpc_ssl("broker");
        let config = runnel_broker::Config {
            // The admin endpoints over HTTPS too, with the same certificate.
            admin_ssl_keystore_location: keystore.clone(),
            grpc_ssl_keystore_location: keystore,
            grpc_ssl_truststore_location: truststore,
            grpc_service_principals: SERVICE_PRINCIPALS.into(),
            grpc_ssl_principal_mapping_rules: GRPC_PRINCIPAL_RULES.into(),
            grpc_authentication_required: self.settings.grpc_tls
                && self.settings.super_users.is_some(),
            broker_id: i as i32 + 1,
            listen,
            admin_listen,
            kafka_listen,
            data_dir: self.dir.path().join(format!("broker-{}", i + 1)),
            controller: self.controller_addrs(),
            heartbeat_interval_ms: self.settings.broker_heartbeat_interval_ms,
            // Short, so tests see followers leave and rejoin the ISR quickly.
            replica_lag_time_max_ms: 1_000,
            net_fault: self.faults[i].clone(),
            log_retention_check_interval_ms: self.settings.retention_check_interval_ms,
            auto_create_topics_enable: self.settings.auto_create_topics,
            num_partitions: self.settings.num_partitions,
            io_threads: 2,
            log_max_open_files: self.settings.log_max_open_files,
            rack: if self.settings.racks.is_empty() {
                String::new()
            } else {
                self.settings.racks[i % self.settings.racks.len()].clone()
            },
            kafka_security_protocol: self.settings.kafka_security_protocol.clone(),
            connections_max_reauth_ms: self.settings.connections_max_reauth_ms,
            authorizer_enabled: self.settings.super_users.is_some(),
            super_users: self.settings.super_users.clone().unwrap_or_default(),
            ssl_keystore_location: Some(self.tls_dir().join("broker.pem")),
            ssl_truststore_location: Some(self.tls_dir().join("ca.pem")),
            ssl_client_auth: self.settings.kafka_client_auth.clone(),
            ssl_reload_interval_ms: 200,
            ..runnel_broker::Config::default()
        };
        let first = self.broker_addrs[i].is_none();
        let handle = start_on(config, "the broker starts", |mut c| {
            if first {
                // Nobody knows a new broker's ports yet: when another test
                // of this binary took one between the pick and the bind,
                // pick again rather than wait for that test to end.
                (c.listen, c.admin_listen, c.kafka_listen) =
                    (free_port(), free_port(), free_port());
            }
            runnel_broker::start(c, CancellationToken::new())
        })
        .await;
        self.broker_addrs[i] = Some((handle.grpc_addr, handle.admin_addr, handle.kafka_addr));
        self.brokers[i] = Some(handle);
    }

    /// Waits (bounded) until every running broker is ready and unfenced.
    pub async fn wait_ready(&self) {
        let admin = self.admin();
        let want: Vec<i32> = (0..self.brokers.len())
            .filter(|&i| self.brokers[i].is_some())
            .map(|i| i as i32 + 1)
            .collect();
        wait_for(
            "brokers ready and unfenced",
            Duration::from_secs(20),
            || {
                let admin = admin.clone();
                let want = want.clone();
                let ready = self
                    .brokers
                    .iter()
                    .flatten()
                    .all(|b| b.readiness.is_ready());
                async move {
                    if !ready {
                        return false;
                    }
                    match admin.describe_cluster().await {
                        Ok(c) => want
                            .iter()
                            .all(|id| c.brokers.iter().any(|b| b.id == *id && !b.fenced)),
                        Err(_) => false,
                    }
                }
            },
        )
        .await;
    }

    /// A consumer that reads what it is assigned from the log start
    /// (`auto.offset.reset=earliest`).
    pub fn earliest_consumer(&self) -> Consumer {
        Consumer::with_cluster(
            self.client(),
            ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                ..ConsumerConfig::default()
            },
        )
    }

    /// Creates a topic and waits until the leader of every partition serves it
    /// (creation returns once the controller has it; brokers open logs after).
    pub async fn create_topic(&self, topic: NewTopic) {
        let admin = self.admin();
        let name = topic.name.clone();
        if let Err(e) = admin.create_topic(topic).await {
            panic!("cannot create topic {name}: {e}");
        }
        wait_for(
            &format!("the partitions of {name} to be served"),
            Duration::from_secs(20),
            || {
                let (admin, name) = (admin.clone(), name.clone());
                async move {
                    admin.describe_topic(&name).await.is_ok_and(|t| {
                        !t.partitions.is_empty()
                            && t.partitions.iter().all(|p| p.log_end_offset >= 0)
                    })
                }
            },
        )
        .await;
    }

    /// How far broker `i` has applied the metadata log.
    pub fn broker_metadata_offset(&self, i: usize) -> i64 {
        self.brokers[i]
            .as_ref()
            .expect("broker is running")
            .metadata
            .applied_offset()
    }

    /// Broker `i`'s view of the metadata.
    pub fn broker_image(&self, i: usize) -> runnel_common::metadata::MetadataImage {
        self.brokers[i]
            .as_ref()
            .expect("broker is running")
            .metadata
            .snapshot()
    }

    /// The gRPC port of the controller broker `i` sends clients to.
    pub fn broker_named_controller_port(&self, i: usize) -> Option<u16> {
        let cache = &self.brokers[i]
            .as_ref()
            .expect("broker is running")
            .metadata;
        cache
            .controller_endpoints()
            .iter()
            .find(|e| e.name == "grpc")
            .and_then(|e| u16::try_from(e.port).ok())
    }

    /// Where broker `i` serves gRPC.
    pub fn broker_addr(&self, i: usize) -> SocketAddr {
        self.broker_addrs[i].expect("broker was started").0
    }

    /// The leader of `topic`-`partition` as the controller sees it (-1: none),
    /// which a cut-off broker's own answer may not be.
    pub async fn controller_leader(&self, topic: &str, partition: i32) -> i32 {
        let i = self.active_controller().expect("an active controller");
        let image = self.controllers[i]
            .as_ref()
            .expect("the controller is running")
            .controller
            .image()
            .await;
        image
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(&partition))
            .map_or(-1, |p| p.leader)
    }

    /// Cuts broker `i` off from the controller and the other brokers, in
    /// both directions (clients still reach it). See [`NetFault`].
    pub fn isolate(&self, i: usize) {
        self.faults[i].isolate();
    }

    /// Reconnects every isolated broker.
    pub fn heal(&self) {
        for f in &self.faults {
            f.heal();
        }
    }

    /// The partitions broker `i` hosts (for looking at a replica's log directly).
    pub fn broker_logs(&self, i: usize) -> std::sync::Arc<runnel_broker::log_manager::LogManager> {
        std::sync::Arc::clone(&self.brokers[i].as_ref().expect("broker is running").logs)
    }

    /// Stops broker `i` cleanly (flush, close, tell the controller).
    pub async fn stop_broker(&mut self, i: usize) {
        if let Some(b) = self.brokers[i].take() {
            b.shutdown().await;
        }
    }

    /// Stops broker `i` as a crash would: nothing flushed or closed.
    pub async fn kill_broker(&mut self, i: usize) {
        if let Some(b) = self.brokers[i].take() {
            b.kill().await;
        }
    }

    /// Starts broker `i` again (same id, ports and data) and waits until it is ready.
    pub async fn restart_broker(&mut self, i: usize) {
        self.stop_broker(i).await;
        self.start_broker(i).await;
        self.wait_ready().await;
    }

    /// Starts a stopped or killed broker `i` and waits until it is ready.
    pub async fn start_broker_again(&mut self, i: usize) {
        self.start_broker(i).await;
        self.wait_ready().await;
    }

    /// Adds a broker to the cluster (the next id) and waits until it is
    /// ready; returns its index.
    pub async fn add_broker(&mut self) -> usize {
        let i = self.brokers.len();
        self.brokers.push(None);
        self.broker_addrs.push(None);
        self.faults.push(NetFault::default());
        self.start_broker(i).await;
        self.wait_ready().await;
        i
    }

    /// Starts a stopped or killed broker `i` without waiting for it: with a
    /// great many partitions, readiness takes longer than
    /// [`Self::start_broker_again`] allows.
    pub async fn start_broker_only(&mut self, i: usize) {
        self.start_broker(i).await;
    }

    /// Restarts every controller (same ports and data).
    pub async fn restart_controller(&mut self) {
        for i in 0..self.controllers.len() {
            if let Some(c) = self.controllers[i].take() {
                c.shutdown().await;
            }
        }
        for i in 0..self.controllers.len() {
            self.start_controller(i).await;
        }
        self.wait_active_controller().await;
        self.wait_ready().await;
    }

    /// Stops controller `i` as a crash would (what it acknowledged is on
    /// disk; nothing else is said to anyone).
    pub async fn kill_controller(&mut self, i: usize) {
        if let Some(c) = self.controllers[i].take() {
            c.kill().await;
        }
    }

    /// Starts a stopped or killed controller `i` again (same id, port and data).
    pub async fn start_controller_again(&mut self, i: usize) {
        self.start_controller(i).await;
    }

    /// Cuts controller `i` off from the other controllers and the brokers,
    /// both ways (clients still reach it). See [`NetFault`].
    pub fn isolate_controller(&self, i: usize) {
        self.controller_faults[i].isolate();
    }

    /// Reconnects every isolated controller.
    pub fn heal_controllers(&self) {
        for f in &self.controller_faults {
            f.heal();
        }
    }

    /// Cuts `a` and `b` apart, both ways, while each still reaches every
    /// other node: a partition where A cannot reach B but both reach C.
    /// Both must be brokers or both controllers: a broker calls the
    /// controllers as a client does, so no cut holds between the two kinds
    /// (isolate the broker instead). See [`NetFault`].
    pub fn cut(&self, a: Node, b: Node) {
        let ((fault_a, name_a), (fault_b, name_b)) = self.cuttable(a, b);
        fault_a.cut_from(&name_b);
        fault_b.cut_from(&name_a);
    }

    /// Reconnects `a` and `b` after [`TestCluster::cut`].
    pub fn heal_cut(&self, a: Node, b: Node) {
        let ((fault_a, name_a), (fault_b, name_b)) = self.cuttable(a, b);
        fault_a.heal_cut(&name_b);
        fault_b.heal_cut(&name_a);
    }

    /// The faults and peer names of two nodes a cut can separate.
    fn cuttable(&self, a: Node, b: Node) -> ((&NetFault, PeerName), (&NetFault, PeerName)) {
        assert!(a != b, "cannot cut {a:?} from itself");
        assert!(
            matches!(
                (a, b),
                (Node::Broker(_), Node::Broker(_)) | (Node::Controller(_), Node::Controller(_))
            ),
            "cannot cut {a:?} from {b:?}: brokers call controllers without the peer header, \
             so only isolation separates them"
        );
        (self.peer(a), self.peer(b))
    }

    /// A node's network switches and the name its peers know it by.
    fn peer(&self, node: Node) -> (&NetFault, PeerName) {
        match node {
            Node::Broker(i) => (&self.faults[i], PeerName::broker(i as i32 + 1)),
            Node::Controller(i) => (
                &self.controller_faults[i],
                PeerName::controller(i as i32 + 1),
            ),
        }
    }

    async fn start_coordinator(&mut self, i: usize) {
        let (listen, admin_listen) =
            self.coordinator_addrs[i].unwrap_or_else(|| (free_port(), free_port()));
        let (keystore, truststore) = self.grpc_ssl("coordinator");
        let config = runnel_coordinator::Config {
            grpc_ssl_keystore_location: keystore,
            grpc_ssl_truststore_location: truststore,
            grpc_service_principals: SERVICE_PRINCIPALS.into(),
            grpc_ssl_principal_mapping_rules: GRPC_PRINCIPAL_RULES.into(),
            grpc_authentication_required: self.settings.grpc_tls
                && self.settings.super_users.is_some(),
            coordinator_id: i as i32 + 1,
            listen,
            admin_listen,
            bootstrap: self.bootstrap(),
            offsets_topic_num_partitions: 5,
            transaction_state_log_num_partitions: 5,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: 200,
            group_initial_rebalance_delay_ms: 0,
            group_min_session_timeout_ms: 500,
            group_consumer_session_timeout_ms: 2_000,
            group_consumer_heartbeat_interval_ms: 200,
            authorizer_enabled: self.settings.super_users.is_some(),
            super_users: self.settings.super_users.clone().unwrap_or_default(),
            ..runnel_coordinator::Config::default()
        };
        let handle = start_on(config, "the coordinator starts", |c| {
            runnel_coordinator::start(c, CancellationToken::new())
        })
        .await;
        self.coordinator_addrs[i] = Some((handle.grpc_addr, handle.admin_addr));
        self.coordinators[i] = Some(handle);
    }

    /// Waits (bounded) until the running coordinators own every partition
    /// of `__consumer_offsets` between them and have loaded them all.
    pub async fn wait_coordinators(&self) {
        let managers: Vec<_> = self
            .coordinators
            .iter()
            .flatten()
            .map(|c| std::sync::Arc::clone(&c.manager))
            .collect();
        let transactions: Vec<_> = self
            .coordinators
            .iter()
            .flatten()
            .map(|c| std::sync::Arc::clone(&c.transactions))
            .collect();
        wait_for(
            "coordinators to own and load __consumer_offsets and __transaction_state",
            Duration::from_secs(60),
            || {
                let managers = managers.clone();
                let transactions = transactions.clone();
                async move {
                    // Groups load first, then the transactions of the same partition.
                    if transactions.iter().any(|t| t.is_loading()) {
                        return false;
                    }
                    let mut active = 0;
                    for m in &managers {
                        let Some(owned) = m.owned() else {
                            return false;
                        };
                        if owned
                            .values()
                            .any(|o| *o != runnel_coordinator::manager::Ownership::Active)
                        {
                            return false;
                        }
                        active += owned.len();
                    }
                    active == 5
                }
            },
        )
        .await;
    }

    /// The group coordinator `i`'s groups (to see who owns what).
    pub fn coordinator(&self, i: usize) -> Option<&CoordinatorHandle> {
        self.coordinators[i].as_ref()
    }

    /// Stops coordinator `i` as a crash would: no goodbye to the controller,
    /// so its partitions move only when its session expires.
    pub async fn kill_coordinator(&mut self, i: usize) {
        if let Some(c) = self.coordinators[i].take() {
            c.kill().await;
        }
    }

    /// Starts coordinator `i` again (same id and ports) and waits until
    /// the partitions are shared and loaded.
    pub async fn start_coordinator_again(&mut self, i: usize) {
        self.start_coordinator(i).await;
        self.wait_coordinators().await;
    }

    /// Stops everything cleanly.
    pub async fn shutdown(mut self) {
        for c in &mut self.coordinators {
            if let Some(c) = c.take() {
                c.shutdown().await;
            }
        }
        for i in 0..self.brokers.len() {
            self.stop_broker(i).await;
        }
        for c in &mut self.controllers {
            if let Some(c) = c.take() {
                c.shutdown().await;
            }
        }
    }
}

/// Polls `check` every 20 ms until it holds; panics after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a node with `config`, which names the ports it had before a
/// restart. The OS hands out other processes' outgoing ports from the same
/// range, so one of them may hold such a port for a moment: a port in use is
/// tried again until it is free (for up to 10 s), any other error fails.
async fn start_on<C, H, E, F, Fut>(config: C, what: &str, start: F) -> H
where
    C: Clone,
    E: std::error::Error + 'static,
    F: Fn(C) -> Fut,
    Fut: std::future::Future<Output = Result<H, E>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match start(config.clone()).await {
            Ok(handle) => return handle,
            Err(e) if port_in_use(&e) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: {e:?}"),
        }
    }
}

/// Whether `e` is, or was caused by, a listener whose port is in use.
fn port_in_use(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        // `StartError::Bind` is transparent: its cause is the OS error itself.
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::AddrInUse;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_is_waited_for_and_other_errors_are_not() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = runnel_common::service::bind(addr).await.unwrap_err();
        let start_error = runnel_broker::StartError::from(err);
        assert!(port_in_use(&start_error), "{start_error:?}");
        let other = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no");
        assert!(!port_in_use(&other));

        // Freed after a while: the start succeeds once it is.
        let freer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(taken);
        });
        let bound = start_on(addr, "the listener binds", runnel_common::service::bind).await;
        assert_eq!(bound.1, addr);
        freer.join().unwrap();
    }
}
