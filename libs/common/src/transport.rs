//! HTTP/2 settings for gRPC between Runnel processes.
//!
//! A produce or fetch carries megabytes of record batches. With HTTP/2's
//! default 64 KiB flow-control windows and 16 KiB frames the sender stalls
//! for a window update every few frames, and the connection, not the disk,
//! sets the throughput. Both ends therefore advertise large windows and
//! frames.

use std::time::Duration;

/// Per-stream receive window: one request may be this large before the sender waits.
pub const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
/// Per-connection receive window, shared by the connection's streams.
pub const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;
/// Largest HTTP/2 frame a peer may send (the protocol's maximum is 16 MiB - 1).
pub const MAX_FRAME: u32 = 1024 * 1024;

/// Connections accepted on `listener`, with Nagle's algorithm off.
///
/// The server builder's own `tcp_nodelay` only reaches sockets it binds
/// itself; without this a small response waits for the peer's delayed ACK
/// (~40 ms on Linux).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// A gRPC server builder with Runnel's HTTP/2 settings.
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
}

/// Applies Runnel's HTTP/2 settings to a client endpoint.
pub fn endpoint(endpoint: tonic::transport::Endpoint) -> tonic::transport::Endpoint {
    endpoint
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
}

/// A channel to `addr` (`host:port`, plain HTTP/2) with Runnel's settings,
/// connecting on first use and again after a failure.
pub fn lazy_channel(
    addr: &str,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let target = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
    Ok(endpoint(target)
        .connect_timeout(connect_timeout)
        .connect_lazy())
}
