//! `runnel-broker`: runs one broker until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use runnel_common::service::ListenFlags;
use serde::Serialize;

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

runnel_common::service_main!(
    runnel_broker,
    Flags,
    "runnel-broker",
    "Runs a Runnel broker.",
    "RUNNEL_BROKER_"
);
