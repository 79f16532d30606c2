//! `runnel-controller`: runs one controller until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use runnel_common::service::ListenFlags;
use serde::Serialize;

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

runnel_common::service_main!(
    runnel_controller,
    Flags,
    "runnel-controller",
    "Runs a Runnel controller.",
    "RUNNEL_CONTROLLER_"
);
