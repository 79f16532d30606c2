//! `runnel dev`: controller, broker, group coordinator and connect worker in one process, on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use runnel_common::shutdown::CancellationToken;
use runnel_common::telemetry::{self, LogFormat};

use crate::{health, outln};

mod secure;

use secure::Secure;

/// What `runnel dev` logs when `RUST_LOG` is unset: Runnel's own start-up,
/// changes and problems at `info`, and the libraries under it (Raft's state
/// dumps, HTTP/2 and connection-pool chatter) only when they warn. A
/// target also covers those that start with it (`hyper` covers `hyper_util`).
const DEFAULT_LOG_FILTER: &str =
    "info,openraft=warn,hyper=warn,h2=warn,tower=warn,tonic=warn,sqlx=warn";

/// `runnel dev` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the controller's metadata and the broker's logs live.
    #[arg(long, default_value = "./runnel-data")]
    data_dir: PathBuf,
    /// Log lines as JSON.
    #[arg(long)]
    log_json: bool,
    /// The broker's gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:9094")]
    broker_listen: SocketAddr,
    /// The broker's Kafka protocol listen address (Kafka clients' `bootstrap.servers`).
    #[arg(long, default_value = "127.0.0.1:9092")]
    broker_kafka_listen: SocketAddr,
    /// The broker's admin HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:9194")]
    broker_admin_listen: SocketAddr,
    /// The controller's gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:9093")]
    controller_listen: SocketAddr,
    /// The controller's admin HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:9193")]
    controller_admin_listen: SocketAddr,
    /// The group coordinator's gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:9095")]
    coordinator_listen: SocketAddr,
    /// The group coordinator's admin HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:9195")]
    coordinator_admin_listen: SocketAddr,
    /// The connect worker's REST API listen address.
    #[arg(long, default_value = "127.0.0.1:8083")]
    connect_listen: SocketAddr,
    /// The connect worker's admin HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:9183")]
    connect_admin_listen: SocketAddr,
    /// Connector config files (*.json, *.toml) the connect worker runs,
    /// read when they appear or change.
    #[arg(long, default_value = "./connectors")]
    connectors_dir: PathBuf,
    /// Kafka's `num.partitions`: partitions of an auto-created topic, and of
    /// a CreateTopics that leaves the count to the broker.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    num_partitions: i32,
    /// Kafka's `default.replication.factor`: replicas of an auto-created
    /// topic, and of a CreateTopics that leaves the factor to the broker
    /// (`runnel dev` has one broker, so more than 1 is refused at creation).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    default_replication_factor: i32,
    /// Secure the cluster: a throwaway CA and certificates under
    /// `<data-dir>/tls/`, SASL_SSL on the Kafka listener (SCRAM-SHA-512,
    /// SCRAM-SHA-256, PLAIN), TLS and sign-in on the gRPC API, mutual TLS
    /// between the services, and the authorizer on with `User:admin` as
    /// its super user (password: RUNNEL_ADMIN_PASSWORD, else generated into
    /// `<data-dir>/tls/admin.password`).
    #[arg(long)]
    secure: bool,
}

/// Runs the dev cluster until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let format = if args.log_json {
        LogFormat::Json
    } else {
        LogFormat::Human
    };
    let _telemetry = telemetry::init_with_default_filter("runnel-dev", format, DEFAULT_LOG_FILTER)?;
    // Each service gets its own token, stopped in order after the signal:
    // children of the signal's token would all stop at once, and connect
    // could not commit through a broker that is already gone.
    let shutdown = runnel_common::shutdown::on_signal();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let secure = if args.secure {
        let ips = [
            args.broker_listen,
            args.broker_kafka_listen,
            args.controller_listen,
            args.coordinator_listen,
        ]
        .map(|a| a.ip());
        Some(Secure::prepare(&args.data_dir, &ips)?)
    } else {
        None
    };
    let s = secure.as_ref();

    let controller_config = runnel_controller::Config {
        grpc_ssl_keystore_location: s.map(|s| s.keystore("controller")),
        grpc_ssl_truststore_location: s.map(|s| s.ca.clone()),
        grpc_ssl_principal_mapping_rules: secure::PRINCIPAL_RULES.into(),
        grpc_service_principals: secure::SERVICE_PRINCIPALS.into(),
        grpc_authentication_required: s.is_some(),
        authorizer_enabled: s.is_some(),
        super_users: secure::SUPER_USERS.into(),
        data_dir: args.data_dir.join("controller"),
        listen: args.controller_listen,
        admin_listen: args.controller_admin_listen,
        num_partitions: args.num_partitions,
        default_replication_factor: args.default_replication_factor,
        ..runnel_controller::Config::default()
    };
    let controller = runnel_controller::start(controller_config, CancellationToken::new())
        .await
        .context("starting the controller")?;
    let broker_config = runnel_broker::Config {
        data_dir: args.data_dir.join("broker-1"),
        listen: args.broker_listen,
        admin_listen: args.broker_admin_listen,
        kafka_listen: args.broker_kafka_listen,
        controller: controller.grpc_addr.to_string(),
        num_partitions: args.num_partitions,
        default_replication_factor: args.default_replication_factor,
        kafka_security_protocol: if s.is_some() { "SASL_SSL" } else { "PLAINTEXT" }.into(),
        ssl_keystore_location: s.map(|s| s.keystore("broker")),
        grpc_ssl_keystore_location: s.map(|s| s.keystore("broker")),
        grpc_ssl_truststore_location: s.map(|s| s.ca.clone()),
        grpc_ssl_principal_mapping_rules: secure::PRINCIPAL_RULES.into(),
        grpc_service_principals: secure::SERVICE_PRINCIPALS.into(),
        grpc_authentication_required: s.is_some(),
        authorizer_enabled: s.is_some(),
        super_users: secure::SUPER_USERS.into(),
        ..runnel_broker::Config::default()
    };
    let broker = runnel_broker::start(broker_config, CancellationToken::new())
        .await
        .context("starting the broker")?;

    // Ready: registered, caught up with the metadata, unfenced.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !broker.readiness.is_ready()
        && tokio::time::Instant::now() < deadline
        && !shutdown.is_cancelled()
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if let Some(secure) = &secure {
        secure
            .create_admin(&broker.grpc_addr.to_string())
            .await
            .context("creating the admin user")?;
    }
    // Its groups live in __consumer_offsets on the broker; it loads them in the background.
    let coordinator_config = runnel_coordinator::Config {
        listen: args.coordinator_listen,
        admin_listen: args.coordinator_admin_listen,
        bootstrap: broker.grpc_addr.to_string(),
        offsets_topic_replication_factor: 1,
        transaction_state_log_replication_factor: 1,
        grpc_ssl_keystore_location: s.map(|s| s.keystore("coordinator")),
        grpc_ssl_truststore_location: s.map(|s| s.ca.clone()),
        grpc_ssl_principal_mapping_rules: secure::PRINCIPAL_RULES.into(),
        grpc_service_principals: secure::SERVICE_PRINCIPALS.into(),
        grpc_authentication_required: s.is_some(),
        authorizer_enabled: s.is_some(),
        super_users: secure::SUPER_USERS.into(),
        ..runnel_coordinator::Config::default()
    };
    let coordinator = runnel_coordinator::start(coordinator_config, CancellationToken::new())
        .await
        .context("starting the group coordinator")?;
    let connect_config = runnel_connect::Config {
        listen: args.connect_listen,
        admin_listen: args.connect_admin_listen,
        bootstrap: broker.grpc_addr.to_string(),
        storage_replication_factor: 1,
        connectors_dir: Some(args.connectors_dir.clone()),
        grpc_ssl_keystore_location: s.map(|s| s.keystore("connect")),
        grpc_ssl_truststore_location: s.map(|s| s.ca.clone()),
        ..runnel_connect::Config::default()
    };
    let connect = runnel_connect::start(connect_config, CancellationToken::new())
        .await
        .context("starting the connect worker")?;
    // The banner is the last line of start-up, so that no log line
    // scrolls it away.
    let admins = [
        ("controller", controller.admin_addr),
        ("broker", broker.admin_addr),
        ("coordinator", coordinator.admin_addr),
        ("connect worker", connect.admin_addr),
    ];
    wait_until_ready(&admins, &shutdown).await;
    let banner = format!(
        "runnel dev is running (data in {data})
  broker      {broker}  (runnel --bootstrap {broker})
  kafka       {kafka}  (Kafka clients: bootstrap.servers={kafka})
{secure}  controller  {controller}
  coordinator {coordinator}
  connect     http://{connect}  (connectors from {connectors})
  metrics     http://{broker_admin}/metrics  http://{controller_admin}/metrics  http://{coordinator_admin}/metrics  http://{connect_admin}/metrics
  health      http://{broker_admin}/healthz  http://{broker_admin}/readyz
Press Ctrl-C to stop.",
        data = args.data_dir.display(),
        secure = secure.as_ref().map(Secure::banner).unwrap_or_default(),
        broker = broker.grpc_addr,
        kafka = broker.kafka_addr,
        controller = controller.grpc_addr,
        coordinator = coordinator.grpc_addr,
        connect = connect.rest_addr,
        connectors = args.connectors_dir.display(),
        broker_admin = broker.admin_addr,
        controller_admin = controller.admin_addr,
        coordinator_admin = coordinator.admin_addr,
        connect_admin = connect.admin_addr,
    );
    // One write, so that no log line lands inside the banner.
    let printed = outln!("{banner}");
    // A banner nobody reads (stdout closed: `runnel dev | head -1`) ends
    // dev as Ctrl-C does, as a closed pipe ends `cat`.
    if printed.is_ok() {
        shutdown.cancelled().await;
    }
    // Connect first (its tasks commit through the coordinator and the
    // broker), then the coordinator (it writes through the broker), then
    // the broker, so it can flush and say goodbye to a live controller.
    connect.shutdown().await;
    coordinator.shutdown().await;
    broker.shutdown().await;
    controller.shutdown().await;
    printed?;
    outln!("runnel dev stopped")?;
    Ok(())
}

/// How long start-up may take before the banner is printed anyway.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until every service's `/readyz` answers 200 (or Ctrl-C, or
/// [`READY_TIMEOUT`], after which a warning names who is not ready).
async fn wait_until_ready(admins: &[(&str, SocketAddr)], shutdown: &CancellationToken) {
    let client = runnel_common::http::HttpClient::new();
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    for (service, addr) in admins {
        let url = format!("http://{addr}/readyz");
        loop {
            let answer = health::check(&client, &url, Duration::from_secs(1)).await;
            let Err(e) = answer else { break };
            if shutdown.is_cancelled() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(service, error = %e, "not ready yet; printing the addresses anyway");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
