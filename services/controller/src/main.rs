//! `runnel-controller`: runs one controller until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use clap::Parser;
use runnel_common::service::{self, CommonArgs, ListenFlags};
use serde::Serialize;

/// Runs a Runnel controller.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    flags: Flags,
}

/// Flags over the config file and `RUNNEL_CONTROLLER_*` variables (keys as in
/// `runnel_controller::Config`).
#[derive(Debug, clap::Args, Serialize)]
struct Flags {
    #[command(flatten)]
    #[serde(flatten)]
    listen: ListenFlags,
    /// Data directory.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    service::main(
        "runnel-controller",
        "RUNNEL_CONTROLLER_",
        &args.common,
        &args.flags,
        |config, shutdown| async move {
            runnel_controller::start(config, shutdown)
                .await?
                .wait()
                .await;
            Ok::<_, runnel_controller::StartError>(())
        },
    )
    .await?;
    tracing::info!("controller stopped");
    Ok(())
}
