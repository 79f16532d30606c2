//! `runnel-broker`: runs one broker until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use clap::Parser;
use runnel_common::service::{self, CommonArgs, ListenFlags};
use serde::Serialize;

/// Runs a Runnel broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    flags: Flags,
}

/// Flags over the config file and `RUNNEL_BROKER_*` variables (keys as in
/// `runnel_broker::Config`).
#[derive(Debug, clap::Args, Serialize)]
struct Flags {
    /// `broker.id`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_id: Option<i32>,
    #[command(flatten)]
    #[serde(flatten)]
    listen: ListenFlags,
    /// Data directory.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// The controllers' gRPC addresses, host:port separated by commas.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    controller: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    service::main(
        "runnel-broker",
        "RUNNEL_BROKER_",
        &args.common,
        &args.flags,
        |config, shutdown| async move {
            runnel_broker::start(config, shutdown).await?.wait().await;
            Ok::<_, runnel_broker::StartError>(())
        },
    )
    .await?;
    Ok(())
}
