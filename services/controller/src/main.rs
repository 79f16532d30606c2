//! `runnel-controller`: runs one controller until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use runnel_common::telemetry::{self, LogFormat};

/// Runs a Runnel controller.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (keys as in `runnel_controller::Config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin HTTP listen address.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log lines as JSON.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let format = if args.log_json {
        LogFormat::Json
    } else {
        LogFormat::Human
    };
    let _telemetry = telemetry::init("runnel-controller", format)?;
    let mut config: runnel_controller::Config =
        runnel_common::config::load(args.config.as_deref(), "RUNNEL_CONTROLLER_")
            .context("loading config")?;
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.admin_listen {
        config.admin_listen = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    let shutdown = runnel_common::shutdown::on_signal();
    let handle = runnel_controller::start(config, shutdown).await?;
    handle.wait().await;
    tracing::info!("controller stopped");
    Ok(())
}
