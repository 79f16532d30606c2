//! `runnel-connect`: runs one connect worker until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use runnel_common::telemetry::{self, LogFormat};

/// Runs a Runnel connect worker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (keys as in `runnel_connect::Config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// REST API listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin HTTP listen address.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Brokers to reach the cluster through, host:port (comma-separated).
    #[arg(long)]
    bootstrap: Option<String>,
    /// A directory of connector config files (*.json, *.toml) to run.
    #[arg(long)]
    connectors_dir: Option<PathBuf>,
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
    let _telemetry = telemetry::init("runnel-connect", format)?;
    let mut config: runnel_connect::Config =
        runnel_common::config::load(args.config.as_deref(), "RUNNEL_CONNECT_")
            .context("loading config")?;
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.admin_listen {
        config.admin_listen = v;
    }
    if let Some(v) = args.bootstrap {
        config.bootstrap = v;
    }
    if let Some(v) = args.connectors_dir {
        config.connectors_dir = Some(v);
    }
    let shutdown = runnel_common::shutdown::on_signal();
    let handle = runnel_connect::start(config, shutdown).await?;
    handle.wait().await;
    tracing::info!("connect worker stopped");
    Ok(())
}
