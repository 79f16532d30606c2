//! Running real Kafka clients (the Python scripts under `tests/kafka`,
//! kcat) from tests: `scripts/test` sets up `.venv` with the pinned clients
//! (`RUNNEL_TEST_PYTHON`) and installs kcat.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// How long a client program may run before it counts as hung (coreutils
/// `timeout` ends it), so that a stuck client fails the test instead of
/// hanging the suite.
const CLIENT_LIMIT_SECS: &str = "300";

/// The Python with the pinned Kafka clients.
pub fn python() -> String {
    std::env::var("RUNNEL_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A script under `libs/testkit/tests/kafka`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kafka")
        .join(name)
}

/// Runs `program args` off the runtime (the cluster keeps serving) and
/// fails the test with its output unless it succeeds in time.
pub async fn run(program: String, args: Vec<String>) -> Output {
    let shown = format!("{program} {}", args.join(" "));
    let output = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["--kill-after=10", CLIENT_LIMIT_SECS, &program])
            .args(&args)
            .stdin(Stdio::null())
            .output()
    })
    .await
    .expect("the client runner task")
    .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        output.status.success(),
        "{shown} failed ({}; 124 is a timeout after {CLIENT_LIMIT_SECS} s):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a scenario of a Python script (`script.py SCENARIO BOOTSTRAP`).
pub async fn run_scenario(script_name: &str, scenario: &str, bootstrap: &str) -> Output {
    run(
        python(),
        vec![
            script(script_name).display().to_string(),
            scenario.into(),
            bootstrap.into(),
        ],
    )
    .await
}
