//! What the examples share: where the cluster is, the topics they read and
//! write (created if missing, so each example runs with one command), and
//! running until Ctrl-C.

use std::time::Duration;

use runnel_client::{Admin, ClientConfig, ErrorCode, NewTopic};
use runnel_streams::{ProcessingGuarantee, StreamsApp, StreamsConfig, Topology};

/// The cluster `runnel dev` runs, or `RUNNEL_BOOTSTRAP`'s.
pub fn client() -> ClientConfig {
    ClientConfig::new(
        std::env::var("RUNNEL_BOOTSTRAP")
            .unwrap_or_else(|_| runnel_client::DEFAULT_BOOTSTRAP.into()),
    )
}

/// Creates `topics` (three partitions each) where they do not exist yet.
pub async fn create_topics(client: &ClientConfig, topics: &[&str]) -> anyhow::Result<()> {
    let admin = Admin::new(client.clone());
    let wanted = topics
        .iter()
        .map(|t| NewTopic::new(*t).partitions(3))
        .collect();
    for (name, result) in admin.create_topics(wanted, false).await? {
        match result {
            Ok(()) => println!("created topic {name}"),
            Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The application's settings: exactly once with `--exactly-once`, state
/// under the system's temporary directory.
pub fn config(application_id: &str) -> StreamsConfig {
    let mut config = StreamsConfig::new(application_id);
    if std::env::args().any(|a| a == "--exactly-once") {
        config.processing_guarantee = ProcessingGuarantee::ExactlyOnceV2;
    }
    // Short commits, so results show up within a second.
    config.commit_interval = Some(Duration::from_millis(500));
    config
}

/// Runs `topology` until Ctrl-C (or SIGTERM), then closes it cleanly.
pub async fn run(
    topology: Topology,
    config: StreamsConfig,
    client: ClientConfig,
) -> anyhow::Result<()> {
    let app = StreamsApp::start(topology, config, client).await?;
    println!("running; Ctrl-C stops");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    app.close().await?;
    Ok(())
}
