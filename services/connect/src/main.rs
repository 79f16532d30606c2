//! `runnel-connect`: runs one connect worker until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use clap::Parser;
use runnel_common::service::{self, CommonArgs, ListenFlags};
use serde::Serialize;

/// Runs a Runnel connect worker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    flags: Flags,
}

/// Flags over the config file and `RUNNEL_CONNECT_*` variables (keys as in
/// `runnel_connect::Config`).
#[derive(Debug, clap::Args, Serialize)]
struct Flags {
    #[command(flatten)]
    #[serde(flatten)]
    listen: ListenFlags,
    /// Brokers to reach the cluster through, host:port (comma-separated).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bootstrap: Option<String>,
    /// A directory of connector config files (*.json, *.toml) to run.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    connectors_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    service::main(
        "runnel-connect",
        "RUNNEL_CONNECT_",
        &args.common,
        &args.flags,
        |config, shutdown| async move {
            runnel_connect::start(config, shutdown).await?.wait().await;
            Ok::<_, runnel_connect::StartError>(())
        },
    )
    .await?;
    Ok(())
}
