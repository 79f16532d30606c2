//! An application's settings, under Kafka Streams' names where it has them.

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

/// An application's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamsConfig {
    /// `application.id`: the consumer group, and the prefix of the
    /// application's internal topics.
    pub application_id: String,
    /// `default.deserialization.exception.handler`.
    pub on_deserialization_error: OnDeserializationError,
}

impl StreamsConfig {
    /// The defaults, for application `application_id`.
    pub fn new(application_id: impl Into<String>) -> StreamsConfig {
        StreamsConfig {
            application_id: application_id.into(),
            on_deserialization_error: OnDeserializationError::default(),
        }
    }
}
