//! `runnel-coordinator`: runs one group coordinator until Ctrl-C or SIGTERM.

use runnel_common::service::BootstrapFlags;

runnel_common::service_main!(
    runnel_coordinator,
    BootstrapFlags,
    "runnel-coordinator",
    "Runs a Runnel group coordinator.",
    "RUNNEL_COORDINATOR_"
);
