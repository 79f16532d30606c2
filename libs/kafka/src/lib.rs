//! `runnel-kafka`: the Kafka wire protocol for Runnel's brokers, on the
//! maintained `kafka-protocol` codec; only the old versions the codec
//! dropped are encoded by hand ([`legacy`]).
//!
//! - [`frame`]: size-prefixed frames on a byte stream, with
//!   `socket.request.max.bytes` enforced before a body is read.
//! - [`request`]: one frame into its header and typed request, telling
//!   apart what deserves an error answer (a version this broker does not
//!   serve) from what only closing the connection can answer (garbage, an
//!   unknown API key); and a typed response back into a frame.
//! - [`server`]: the listener: connections, pipelining with answers in
//!   request order, ApiVersions, metrics per API key and version.
//! - [`auth`]: SASL authentication on the listener (PLAIN, SCRAM) and the
//!   principal a connection's requests run as.
//! - [`throttle`]: quota throttling on the wire (KIP-219): the
//!   `throttle_time_ms` answers carry and who waits it out.
//! - [`legacy`]: the old versions Kafka 4.0 dropped and the codec no
//!   longer knows (Produce v0–2, Fetch v0–3, OffsetCommit v0–1,
//!   CreateTopics v0–1, DescribeConfigs v0), written by hand.
//! - [`versions`]: the APIs and versions a broker serves, and the
//!   ApiVersions answer built from them.

pub mod auth;
pub mod frame;
pub mod legacy;
pub mod request;
pub mod server;
pub mod throttle;
pub mod versions;

pub use kafka_protocol;
