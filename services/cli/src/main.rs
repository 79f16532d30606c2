//! `runnel`: the command-line entry point to Runnel.
//!
//! `runnel dev` runs a whole cluster in one process; the other commands talk
//! to a cluster through `--bootstrap` (env `RUNNEL_BOOTSTRAP`, default the
//! local broker). Errors are one line on stderr and a non-zero exit; a
//! closed stdout (`runnel topics describe t | head -3`) ends a command
//! quietly with status 0, as it ends `cat` (see [`output`]).

mod acls;
mod bench;
mod brokers;
mod certs;
mod cluster;
mod connectors;
mod consume;
mod dev;
mod groups;
mod health;
mod output;
mod partitions;
mod produce;
mod quotas;
mod topics;
mod transactions;
mod users;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use runnel_client::ClientConfig;

// Keeps freed memory for reuse: batches and requests are megabytes each,
// and the system allocator hands such blocks back to the kernel on free,
// so every new one page-faults again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runnel: a distributed, replicated event log that speaks Kafka's record format.
#[derive(Debug, Parser)]
#[command(name = "runnel", version, about)]
struct Cli {
    /// A broker's gRPC address, host:port (several: comma-separated).
    #[arg(long, global = true, env = "RUNNEL_BOOTSTRAP", default_value = runnel_client::DEFAULT_BOOTSTRAP)]
    bootstrap: String,
    /// The user to sign in as on a secure cluster (its SCRAM credentials
    /// check the password). Sign-in and TLS options go before the command
    /// (`runnel --user admin topics list`), as `users create` has a
    /// `--password` of its own.
    #[arg(long, env = "RUNNEL_USER")]
    user: Option<String>,
    /// The user's password; prefer RUNNEL_PASSWORD, as other users of the
    /// machine can see a command line.
    #[arg(long, env = "RUNNEL_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Connect over TLS, trusting this CA certificate (PEM), e.g.
    /// `<data-dir>/tls/ca.pem` of `runnel dev --secure`.
    #[arg(long, env = "RUNNEL_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Connect over TLS, presenting this client certificate and its key
    /// (one PEM file) instead of a user and password. The CA and
    /// certificate also serve `https://` URLs of `connectors` and `health`.
    #[arg(long, env = "RUNNEL_CERT_FILE")]
    cert_file: Option<std::path::PathBuf>,
    /// Connect over TLS trusting the system's CA certificates (implied by
    /// --ca-file and --cert-file).
    #[arg(long, env = "RUNNEL_TLS")]
    tls: bool,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// How commands reach the cluster: the bootstrap servers, TLS and credentials.
    fn client_config(&self) -> anyhow::Result<ClientConfig> {
        use anyhow::Context;
        let tls = if self.tls || self.ca_file.is_some() || self.cert_file.is_some() {
            Some(
                runnel_common::tls::ClientTls::client(self.ca_file.clone(), self.cert_file.clone())
                    .context("cannot set up TLS to the cluster")?,
            )
        } else {
            None
        };
        let credentials = match (&self.user, &self.password) {
            (Some(user), Some(password)) => Some(runnel_client::Credentials {
                user: user.clone(),
                password: password.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => anyhow::bail!("--user needs --password (or RUNNEL_PASSWORD)"),
            (None, Some(_)) => anyhow::bail!("--password needs --user (or RUNNEL_USER)"),
        };
        Ok(ClientConfig {
            tls,
            credentials,
            ..ClientConfig::new(self.bootstrap.clone())
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole cluster (controller, broker, coordinator, connect worker) in this process.
    Dev(dev::Args),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topics(topics::Command),
    /// Move partitions' replicas between brokers (plan, execute, verify, cancel).
    #[command(subcommand)]
    Partitions(partitions::Command),
    /// Send one record per stdin line.
    Produce(produce::Args),
    /// Print records, one value per line (with --group: as a consumer-group member, committing).
    Consume(consume::Args),
    /// List, describe, reset the offsets of, and delete consumer groups.
    #[command(subcommand)]
    Groups(groups::Command),
    /// List and describe transactions, find and abort hanging ones.
    #[command(subcommand)]
    Transactions(transactions::Command),
    /// Create, list and delete users (SCRAM credentials for SASL).
    #[command(subcommand)]
    Users(users::Command),
    /// Add, list and remove ACL bindings (who may do what on which resources).
    #[command(subcommand)]
    Acls(acls::Command),
    /// Set, remove and describe client quotas (byte rates, request time,
    /// mutation rate) of users and client ids.
    #[command(subcommand)]
    Quotas(quotas::Command),
    /// Create, list, pause, resume, restart and delete connectors on a connect worker.
    Connectors(connectors::Args),
    /// Show the controllers, brokers and coordinators and their liveness
    /// (`runnel cluster rebalance`: even out replicas and leaders).
    Cluster(ClusterArgs),
    /// Take a broker out of service: move every replica off it.
    #[command(subcommand)]
    Brokers(brokers::Command),
    /// Add a controller to the quorum or remove one.
    #[command(subcommand)]
    Controllers(cluster::ControllersCommand),
    /// Measure produce, consume and end-to-end throughput and latency.
    #[command(subcommand)]
    Bench(bench::Command),
    /// Produce records and check that every acknowledged one can be read back
    /// (Kafka's verifiable producer and consumer, for fault tests).
    #[command(subcommand)]
    Verify(verify::Command),
    /// Exit 0 if a service's admin URL (e.g. `/readyz`) answers 200; for health checks.
    Health(health::Args),
    /// Make a throwaway CA and service certificates (tests, demos, the
    /// compose stack's secure variant).
    #[command(subcommand)]
    Certs(certs::Command),
}

/// `runnel cluster [rebalance]`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ClusterArgs {
    #[command(subcommand)]
    command: Option<ClusterCommand>,
}

#[derive(Debug, clap::Subcommand)]
enum ClusterCommand {
    /// Move replicas so every broker (and rack) holds its share, with as
    /// few moves as possible, then elect preferred leaders.
    Rebalance(brokers::RebalanceArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = match cli.client_config() {
        Ok(client) => client,
        Err(e) => {
            errln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let tls = client.tls.is_some();
    // The connect REST API and the admin endpoints, over https:// with
    // the same CA and certificate as the cluster.
    let http = client.tls.as_deref().map_or_else(
        runnel_common::http::HttpClient::new,
        runnel_common::http::HttpClient::with_tls,
    );
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Topics(cmd) => topics::run(client, cmd).await,
            Command::Partitions(cmd) => partitions::run(client, cmd).await,
            Command::Produce(args) => produce::run(client, args).await,
            Command::Consume(args) => consume::run(client, args).await,
            Command::Groups(cmd) => groups::run(client, cmd).await,
            Command::Transactions(cmd) => transactions::run(client, cmd).await,
            Command::Users(cmd) => users::run(client, cmd).await,
            Command::Acls(cmd) => acls::run(client, cmd).await,
            Command::Quotas(cmd) => quotas::run(client, cmd).await,
            Command::Connectors(args) => connectors::run(http, args).await,
            Command::Cluster(ClusterArgs { command: None }) => cluster::run(client).await,
            Command::Cluster(ClusterArgs {
                command: Some(ClusterCommand::Rebalance(args)),
            }) => brokers::rebalance(client, args).await,
            Command::Brokers(cmd) => brokers::run(client, cmd).await,
            Command::Controllers(cmd) => cluster::controllers(client, cmd).await,
            Command::Bench(cmd) => bench::run(client, cmd).await,
            Command::Verify(cmd) => verify::run(client, cmd).await,
            Command::Health(args) => health::run(&http, args).await,
            Command::Certs(cmd) => certs::run(cmd),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output has gone (`| head`): it has what it
        // wanted, so this is a success, as for `cat`.
        Err(e) if output::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            errln!("error: {e:#}{}", hint(&e, tls));
            ExitCode::FAILURE
        }
    }
}

/// What to try when a cluster dropped a connection made in clear: it may
/// serve TLS (a cleartext HTTP/2 client only sees the connection drop).
fn hint(e: &anyhow::Error, tls: bool) -> &'static str {
    let unreachable = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<runnel_client::ClientError>(),
            // A refused connection says "tcp connect error": no server
            // there, TLS or not.
            Some(runnel_client::ClientError::Unreachable { message, .. })
                if !message.contains("connect error")
        )
    });
    if unreachable && !tls {
        " (if the cluster serves TLS, give --ca-file or --tls)"
    } else {
        ""
    }
}
