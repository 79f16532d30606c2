//! `runnel-broker`: runs one broker until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use runnel_common::telemetry::{self, LogFormat};

/// Runs a Runnel broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (keys as in `runnel_broker::Config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// `broker.id`.
    #[arg(long)]
    broker_id: Option<i32>,
    /// gRPC listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin HTTP listen address.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The controllers' gRPC addresses, host:port separated by commas.
    #[arg(long)]
    controller: Option<String>,
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
    let _telemetry = telemetry::init("runnel-broker", format)?;
    let mut config: runnel_broker::Config =
        runnel_common::config::load(args.config.as_deref(), "RUNNEL_BROKER_")
            .context("loading config")?;
    if let Some(v) = args.broker_id {
        config.broker_id = v;
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.admin_listen {
        config.admin_listen = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.controller {
        config.controller = v;
    }
    let shutdown = runnel_common::shutdown::on_signal();
    let handle = runnel_broker::start(config, shutdown).await?;
    handle.wait().await;
    Ok(())
}
