//! `runnel-coordinator`: runs one group coordinator until Ctrl-C or SIGTERM.

use clap::Parser;
use runnel_common::service::{self, CommonArgs, ListenFlags};
use serde::Serialize;

/// Runs a Runnel group coordinator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    flags: Flags,
}

/// Flags over the config file and `RUNNEL_COORDINATOR_*` variables (keys as in
/// `runnel_coordinator::Config`).
#[derive(Debug, clap::Args, Serialize)]
struct Flags {
    #[command(flatten)]
    #[serde(flatten)]
    listen: ListenFlags,
    /// Brokers to reach the cluster through, host:port (comma-separated).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bootstrap: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    service::main(
        "runnel-coordinator",
        "RUNNEL_COORDINATOR_",
        &args.common,
        &args.flags,
        |config, shutdown| async move {
            runnel_coordinator::start(config, shutdown)
                .await?
                .wait()
                .await;
            Ok::<_, runnel_coordinator::StartError>(())
        },
    )
    .await?;
    tracing::info!("coordinator stopped");
    Ok(())
}
