//! `runnel-connect`: runs one connect worker until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use runnel_common::service::BootstrapFlags;
use serde::Serialize;

/// Flags over the config file and `RUNNEL_CONNECT_*` variables (keys as in
/// `runnel_connect::Config`).
#[derive(Debug, clap::Args, Serialize)]
struct Flags {
    #[command(flatten)]
    #[serde(flatten)]
    cluster: BootstrapFlags,
    /// A directory of connector config files (*.json, *.toml) to run.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    connectors_dir: Option<PathBuf>,
}

runnel_common::service_main!(
    runnel_connect,
    Flags,
    "runnel-connect",
    "Runs a Runnel connect worker.",
    "RUNNEL_CONNECT_"
);
