//! gRPC between Runnel processes: HTTP/2 settings, TLS on listeners and
//! calls, and the guard that keeps internal RPCs to service certificates.
//!
//! A produce or fetch carries megabytes of record batches. With HTTP/2's
//! default 64 KiB flow-control windows and 16 KiB frames the sender stalls
//! for a window update every few frames, and the connection, not the disk,
//! sets the throughput. Both ends therefore advertise large windows and
//! frames.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use runnel_proto::common::v1::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::body::Body;

use crate::tls::{
    ClientAuth, ClientTls, HANDSHAKE_TIMEOUT, PrincipalMapper, ReloadingTls, TlsError, TlsFiles,
    subject_name,
};

/// Per-stream receive window: one request may be this large before the sender waits.
pub const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
/// Per-connection receive window, shared by the connection's streams.
pub const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;
/// Largest HTTP/2 frame a peer may send (the protocol's maximum is 16 MiB - 1).
pub const MAX_FRAME: u32 = 1024 * 1024;

/// Connections accepted on `listener`, with Nagle's algorithm off, over
/// TLS when `tls` is given.
///
/// The server builder's own `tcp_nodelay` only reaches sockets it binds
/// itself; without this a small response waits for the peer's delayed ACK
/// (~40 ms on Linux). TLS handshakes run in their own tasks, bounded by
/// [`HANDSHAKE_TIMEOUT`], so a slow or silent client holds up no other.
/// Accepting stops when the server drops the stream.
pub fn incoming(
    listener: TcpListener,
    tls: Option<ServerTls>,
) -> impl futures::Stream<Item = Result<ServerConn, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, tx));
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|conn| (Ok(conn), rx))
    })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<ServerTls>,
    tx: tokio::sync::mpsc::Sender<ServerConn>,
) {
    loop {
        let (stream, remote) = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it
                    // was taken: a pause, not the end of the listener.
                    tracing::warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY refused");
        }
        let peer = PeerInfo {
            remote: Some(remote),
            principal: None,
        };
        match &tls {
            None => {
                if tx.send(ServerConn::Plain(stream, peer)).await.is_err() {
                    return;
                }
            }
            Some(tls) => {
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Some(conn) = handshake(stream, peer, &tls).await {
                        // The server stopping meanwhile drops the connection.
                        let _ = tx.send(conn).await;
                    }
                });
            }
        }
    }
}

/// The server side of a TLS handshake; `None` (logged, counted) for a
/// failed or slow one, or a certificate no mapping rule turns into a
/// principal.
async fn handshake(stream: TcpStream, mut peer: PeerInfo, tls: &ServerTls) -> Option<ServerConn> {
    let failed = |reason: &'static str| {
        metrics::counter!("runnel_tls_handshake_failures_total", "reason" => reason).increment(1);
    };
    let remote = peer.remote;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.config());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            failed("handshake");
            tracing::info!(peer = ?remote, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            failed("timeout");
            tracing::info!(peer = ?remote, "TLS handshake timed out");
            return None;
        }
    };
    if let Some(cert) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    {
        let subject = subject_name(cert).unwrap_or_default();
        match tls.principals.map(&subject) {
            Some(name) => peer.principal = Some(format!("User:{name}")),
            None => {
                failed("principal");
                tracing::info!(peer = ?remote, subject, "no principal mapping rule applies to the client certificate");
                return None;
            }
        }
    }
    Some(ServerConn::Tls(Box::new(stream), peer))
}

/// Who is at the other end of a gRPC connection; tonic puts it in every
/// request's extensions.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// `User:<name>` of the client certificate the truststore verified,
    /// `None` without one.
    pub principal: Option<String>,
}

impl PeerInfo {
    /// The peer of `request`, if it came through [`incoming`].
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
        request.extensions().get()
    }
}

/// A connection accepted on a gRPC listener, in clear or over TLS.
#[derive(Debug)]
pub enum ServerConn {
    /// Plain TCP.
    Plain(TcpStream, PeerInfo),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, PeerInfo),
}

impl ServerConn {
    /// Who is at the other end.
    pub fn peer(&self) -> &PeerInfo {
        match self {
            ServerConn::Plain(_, peer) | ServerConn::Tls(_, peer) => peer,
        }
    }
}

impl tonic::transport::server::Connected for ServerConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer().clone()
    }
}

impl AsyncRead for ServerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerConn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            ServerConn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ServerConn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            ServerConn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ServerConn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerConn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerConn::Plain(s, _) => s.is_write_vectored(),
            ServerConn::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerConn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            ServerConn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerConn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            ServerConn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
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

/// A channel to `addr` (`host:port`) with Runnel's settings, over TLS
/// when `tls` is given, connecting on first use and again after a failure.
pub fn lazy_channel(
    addr: &str,
    connect_timeout: Duration,
    tls: Option<&Arc<ClientTls>>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let target = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
    Ok(connect_lazy(
        endpoint(target).connect_timeout(connect_timeout),
        tls,
    ))
}

/// `endpoint`'s lazily connecting channel, over TLS when `tls` is given.
pub fn connect_lazy(
    endpoint: tonic::transport::Endpoint,
    tls: Option<&Arc<ClientTls>>,
) -> tonic::transport::Channel {
    match tls {
        None => endpoint.connect_lazy(),
        Some(tls) => endpoint.connect_with_connector_lazy(TlsConnector(Arc::clone(tls))),
    }
}

/// Makes TLS connections for a gRPC channel: TCP with Nagle off, then a
/// handshake that verifies the server's certificate names the host dialled
/// and offers HTTP/2 by ALPN.
#[derive(Debug, Clone)]
struct TlsConnector(Arc<ClientTls>);

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = Arc::clone(&self.0);
        Box::pin(async move {
            let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("no port in {uri}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| invalid(format!("{uri}: {e}")))?;
            let mut config = (*tls.config()).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// A gRPC listener's TLS: its reloading config and how client certificates
/// become principals.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The certificate, key and client CA, reloaded when they change.
    pub config: Arc<ReloadingTls>,
    /// `ssl.principal.mapping.rules` for client certificates.
    pub principals: Arc<PrincipalMapper>,
}

/// The `grpc_ssl_*` settings each service has, as written in its config.
#[derive(Debug, Clone, Copy)]
pub struct GrpcSslSettings<'a> {
    /// `grpc_ssl_keystore_location`: the service's certificate chain and
    /// key (PEM), served on its gRPC listener and presented on its calls.
    pub keystore: Option<&'a Path>,
    /// `grpc_ssl_truststore_location`: the CA that peers' certificates
    /// (servers' and clients') must chain to.
    pub truststore: Option<&'a Path>,
    /// `grpc_ssl_client_auth`: `none`, `requested` or `required`.
    pub client_auth: &'a str,
    /// `grpc_ssl_principal_mapping_rules`.
    pub principal_mapping_rules: &'a str,
    /// `grpc_service_principals`: `;`-separated principals that may call
    /// internal RPCs; empty for any certificate the truststore verifies.
    pub service_principals: &'a str,
}

/// A service's gRPC security: TLS on its listener and its calls, and who may
/// call its internal RPCs. The default is Runnel without security.
#[derive(Debug, Clone, Default)]
pub struct GrpcSecurity {
    /// TLS on the listener; `None` serves plain HTTP/2.
    pub server: Option<ServerTls>,
    /// TLS on calls to other services; `None` calls in clear.
    pub client: Option<Arc<ClientTls>>,
    /// Who may call internal RPCs.
    pub guard: ServiceGuard,
}

impl GrpcSecurity {
    /// Security from a service's settings: none without a keystore.
    pub fn from_settings(settings: GrpcSslSettings<'_>) -> Result<GrpcSecurity, TlsError> {
        let Some(keystore) = settings.keystore else {
            if settings.truststore.is_some() {
                return Err(TlsError::Config(
                    "grpc_ssl_truststore_location is set but grpc_ssl_keystore_location is not: gRPC TLS needs both".into(),
                ));
            }
            return Ok(GrpcSecurity::default());
        };
        let Some(truststore) = settings.truststore else {
            return Err(TlsError::Config(
                "grpc_ssl_keystore_location needs grpc_ssl_truststore_location (the CA of the other services' certificates)".into(),
            ));
        };
        let files = TlsFiles {
            keystore: keystore.to_owned(),
            truststore: Some(truststore.to_owned()),
            client_auth: ClientAuth::parse(settings.client_auth)?,
            alpn: vec![b"h2".to_vec()],
        };
        let principals = crate::acl::parse_principals(settings.service_principals);
        Ok(GrpcSecurity {
            server: Some(ServerTls {
                config: ReloadingTls::load(files)?,
                principals: Arc::new(PrincipalMapper::parse(settings.principal_mapping_rules)?),
            }),
            client: Some(ClientTls::client(
                Some(truststore.to_owned()),
                Some(keystore.to_owned()),
            )?),
            guard: ServiceGuard {
                enforced: true,
                principals: (!principals.is_empty()).then(|| Arc::new(principals)),
            },
        })
    }

    /// Reloads the certificates every `period` when they change, until
    /// `shutdown`; nothing to do without TLS.
    pub fn watch(
        &self,
        period: Duration,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let server = self.server.as_ref().map(|s| Arc::clone(&s.config));
        let client = self.client.clone();
        async move {
            let server = async {
                if let Some(server) = server {
                    server.watch(period, shutdown.clone()).await;
                }
            };
            let client = async {
                if let Some(client) = client {
                    client.watch(period, shutdown.clone()).await;
                }
            };
            futures::join!(server, client);
        }
    }
}

/// Keeps a service's internal RPCs (replication, metadata, heartbeats,
/// transaction markers) to callers with a service certificate, once its
/// listener serves TLS. Without TLS it lets everything through, as Runnel
/// did before it had security.
#[derive(Debug, Clone, Default)]
pub struct ServiceGuard {
    enforced: bool,
    /// `None`: any certificate the truststore verified.
    principals: Option<Arc<BTreeSet<String>>>,
}

impl ServiceGuard {
    /// Whether `peer` presented a service certificate (false without TLS).
    pub fn is_service(&self, peer: Option<&PeerInfo>) -> bool {
        if !self.enforced {
            return false;
        }
        match (peer.and_then(|p| p.principal.as_deref()), &self.principals) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(p), Some(list)) => list.contains(p),
        }
    }

    /// `Ok` if `peer` may call an internal RPC, else `PERMISSION_DENIED`
    /// with CLUSTER_AUTHORIZATION_FAILED (Kafka's answer to a client that
    /// calls an inter-broker API).
    pub fn check(&self, peer: Option<&PeerInfo>) -> Result<(), tonic::Status> {
        if !self.enforced {
            return Ok(());
        }
        if self.is_service(peer) {
            return Ok(());
        }
        let principal = peer.and_then(|p| p.principal.as_deref());
        metrics::counter!("runnel_grpc_internal_denied_total").increment(1);
        tracing::info!(
            target: "runnel::audit",
            principal = principal.unwrap_or("none"),
            peer = ?peer.and_then(|p| p.remote),
            "denied: internal RPC without a service certificate"
        );
        Err(crate::errors::status(
            ErrorCode::ClusterAuthorizationFailed,
            match principal {
                None => "this RPC is internal to the cluster: it needs a service certificate (mutual TLS)".to_owned(),
                Some(p) => format!("this RPC is internal to the cluster and {p} is not a service principal (grpc_service_principals)"),
            },
        ))
    }

    /// A layer that answers the RPCs named in `internal` (full gRPC paths,
    /// `/package.Service/Method`) with [`ServiceGuard::check`]'s refusal
    /// before they reach the service.
    pub fn layer(&self, internal: &'static [&'static str]) -> ServiceGuardLayer {
        ServiceGuardLayer {
            guard: self.clone(),
            internal,
        }
    }
}

/// See [`ServiceGuard::layer`].
#[derive(Debug, Clone)]
pub struct ServiceGuardLayer {
    guard: ServiceGuard,
    internal: &'static [&'static str],
}

impl<S> tower::Layer<S> for ServiceGuardLayer {
    type Service = ServiceGuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceGuardService {
            layer: self.clone(),
            inner,
        }
    }
}

/// The service [`ServiceGuardLayer`] makes.
#[derive(Debug, Clone)]
pub struct ServiceGuardService<S> {
    layer: ServiceGuardLayer,
    inner: S,
}

impl<S> tower::Service<http::Request<Body>> for ServiceGuardService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if self.layer.guard.enforced
            && self.layer.internal.contains(&request.uri().path())
            && let Err(status) = self.layer.guard.check(request.extensions().get())
        {
            return Box::pin(futures::future::ready(Ok(status.into_http())));
        }
        Box::pin(self.inner.call(request))
    }
}
