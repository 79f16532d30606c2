//! An application's settings, under Kafka Streams' names where it has them.

use std::path::PathBuf;
use std::time::Duration;

use runnel_client::IsolationLevel;

/// What happens to an input record whose key or value does not
/// deserialize (Kafka's `default.deserialization.exception.handler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDeserializationError {
    /// The task stops with the error (`LogAndFailExceptionHandler`, Kafka's default).
    #[default]
    Fail,
    /// The record is logged, counted and skipped (`LogAndContinueExceptionHandler`).
    LogAndContinue,
}

/// `processing.guarantee`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessingGuarantee {
    /// `at_least_once`: outputs are flushed, then stores checkpointed, then
    /// input offsets committed; after a crash the work since the last
    /// commit is done again (outputs and state updates may repeat).
    #[default]
    AtLeastOnce,
    /// `exactly_once_v2`: each thread's outputs, changelog writes and input
    /// offsets go in one transaction per commit interval; a crash aborts
    /// it, and read_committed readers see every result once.
    ExactlyOnceV2,
}

impl ProcessingGuarantee {
    /// How the application reads its inputs and changelogs: exactly once
    /// reads only committed transactions.
    pub fn isolation_level(self) -> IsolationLevel {
        match self {
            ProcessingGuarantee::AtLeastOnce => IsolationLevel::ReadUncommitted,
            ProcessingGuarantee::ExactlyOnceV2 => IsolationLevel::ReadCommitted,
        }
    }
}

/// An application's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsConfig {
    /// `application.id`: the consumer group, and the prefix of the
    /// application's internal topics.
    pub application_id: String,
    /// `default.deserialization.exception.handler`.
    pub on_deserialization_error: OnDeserializationError,
    /// `processing.guarantee`.
    pub processing_guarantee: ProcessingGuarantee,
    /// `commit.interval.ms`; `None`: Kafka's default for the guarantee
    /// (30 s at least once, 100 ms exactly once).
    pub commit_interval: Option<Duration>,
    /// `num.stream.threads`: group members (each with its tasks) per instance.
    pub num_stream_threads: usize,
    /// `state.dir`: where tasks keep their stores, under
    /// `<state.dir>/<application.id>/<task>/`.
    pub state_dir: PathBuf,
    /// `replication.factor` of the internal topics (-1: the broker's default).
    pub replication_factor: i32,
    /// `poll.ms`: how long a thread waits for records before it checks
    /// commits and shutdown again.
    pub poll: Duration,
    /// The producer's `transaction.timeout.ms` with exactly once (Kafka
    /// Streams uses 10 s, so a crashed instance's open transaction holds
    /// back read_committed readers no longer than that).
    pub transaction_timeout: Duration,
    /// `session.timeout.ms` of the threads' group membership.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `application.server`: where this instance answers queries
    /// (`host:port`), told to the other instances through the group so
    /// that [`crate::StreamsApp::query_metadata_for_key`] can say which
    /// instance holds a key.
    pub application_server: Option<String>,
}

impl StreamsConfig {
    /// The defaults, for application `application_id`.
    pub fn new(application_id: impl Into<String>) -> StreamsConfig {
        StreamsConfig {
            application_id: application_id.into(),
            on_deserialization_error: OnDeserializationError::default(),
            processing_guarantee: ProcessingGuarantee::default(),
            commit_interval: None,
            num_stream_threads: 1,
            state_dir: std::env::temp_dir().join("runnel-streams"),
            replication_factor: -1,
            poll: Duration::from_millis(100),
            transaction_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            application_server: None,
        }
    }

    /// The commit interval in effect.
    pub fn commit_interval(&self) -> Duration {
        self.commit_interval
            .unwrap_or(match self.processing_guarantee {
                ProcessingGuarantee::AtLeastOnce => Duration::from_secs(30),
                ProcessingGuarantee::ExactlyOnceV2 => Duration::from_millis(100),
            })
    }
}
