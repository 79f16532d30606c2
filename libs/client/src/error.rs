//! The client's error type.

use runnel_proto::common::v1::ErrorCode;

/// What can go wrong talking to a Runnel cluster.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No broker or controller answered at this address.
    #[error("cannot reach {addr}: {message}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// What the transport said.
        message: String,
    },
    /// The cluster refused the request.
    #[error("{message}")]
    Server {
        /// The stable error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// A record or request is invalid before it is sent.
    #[error("{0}")]
    Invalid(String),
    /// Gave up waiting (`delivery.timeout.ms`, `request.timeout.ms`).
    #[error("timed out after {ms} ms: {what}")]
    Timeout {
        /// What timed out.
        what: String,
        /// After how long.
        ms: u64,
    },
    /// The producer or consumer was closed.
    #[error("the client is closed")]
    Closed,
}

impl ClientError {
    /// The server's error code, if the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying after a metadata refresh may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Server { code, .. } => runnel_common::errors::is_retriable(*code),
            ClientError::Unreachable { .. } | ClientError::Timeout { .. } => true,
            ClientError::Invalid(_) | ClientError::Closed => false,
        }
    }

    pub(crate) fn server(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError::Server {
            code,
            message: message.into(),
        }
    }

    /// Converts a gRPC status from `addr` into a client error.
    pub fn from_status(addr: &str, status: tonic::Status) -> Self {
        // Runnel servers attach an ErrorDetail to every status they send; a
        // status without one of these kinds comes from the connection itself
        // (refused, reset, dropped mid-request), so it is worth a retry.
        let from_transport = status.details().is_empty()
            && matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::Aborted
                    | tonic::Code::Internal
            );
        match status.code() {
            _ if from_transport => ClientError::Unreachable {
                addr: addr.to_owned(),
                message: status.message().to_owned(),
            },
            tonic::Code::DeadlineExceeded if status.details().is_empty() => ClientError::Timeout {
                what: format!("request to {addr}"),
                ms: 0,
            },
            _ => ClientError::Server {
                code: runnel_common::errors::code_of(&status),
                message: status.message().to_owned(),
            },
        }
    }
}

/// Shorthand for results of client calls.
pub type Result<T> = std::result::Result<T, ClientError>;
