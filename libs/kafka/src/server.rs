//! The Kafka listener: accepts connections, reads requests, hands them to a
//! [`Handler`] and writes the answers back in request order.
//!
//! Kafka processes a connection's requests one at a time, in the order they
//! arrived, and clients rely on it: a producer without idempotence keeps
//! several Produce requests in flight and expects them appended in send
//! order, a consumer's async commits must land in commit order. So each
//! connection *applies* its requests strictly one after the other. Reading
//! runs ahead in its own task (a slow request never stops the next one from
//! being read, and a half-read frame is never lost to a `select!`), and one
//! overlap is allowed: a Produce that has been applied (its batches queued
//! for the log, in order) may still wait for its acknowledgement (acks=all
//! waits for the in-sync replicas) while the next Produce requests are
//! applied behind it. That is what keeps pipelined producers fast; the
//! stored order is Kafka's. Any other request starts only once every
//! earlier answer is ready, so it sees their effects exactly as in Kafka.
//! Answers go out in request order.
//!
//! What cannot be answered closes the connection, as Kafka does: a frame
//! larger than `socket.request.max.bytes`, a truncated frame, garbage, an
//! unknown API key, or an unsupported version of anything but ApiVersions
//! (which gets the v0 answer with UNSUPPORTED_VERSION, so the client can
//! pick a version it shares with us). Other connections are not affected.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use kafka_protocol::messages::{RequestKind, SaslAuthenticateResponse, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use runnel_common::tls::{HANDSHAKE_TIMEOUT, PrincipalMapper, ReloadingTls, subject_name};

use crate::auth::{Authenticator, Principal, SaslSettings};
use crate::frame::{self, FrameError};
use crate::request::{self, DecodeError, Request};
use crate::throttle;
use crate::versions::Versions;

/// What a [`Handler`] does with a request.
pub enum Reply {
    /// Send this answer.
    Response(Box<ResponseKind>),
    /// Send nothing: Kafka does not answer Produce with acks=0.
    NoResponse,
    /// Close the connection: the request cannot be answered.
    Close,
    /// The request has taken effect; its answer is this future's, which may
    /// wait (a Produce waiting for its acknowledgement) while the
    /// connection's next Produce requests are applied behind it. Only a
    /// Produce may answer this way.
    Pending(BoxFuture<'static, Reply>),
    /// The inner reply, from a client over its quota by this long: the
    /// answer carries `throttle_time_ms` and the connection reads nothing
    /// more until the time is up (KIP-219); a client too old to throttle
    /// itself gets the answer that much later instead.
    Throttled(Box<Reply>, Duration),
}

impl Reply {
    /// This reply from a client that must wait `throttle` (the longer of
    /// two throttles stands; none changes nothing).
    pub fn throttled(self, throttle: Duration) -> Reply {
        match self {
            _ if throttle.is_zero() => self,
            Reply::Throttled(reply, earlier) => Reply::Throttled(reply, earlier.max(throttle)),
            Reply::Close => Reply::Close,
            reply => Reply::Throttled(Box::new(reply), throttle),
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Response(r) => f.debug_tuple("Response").field(r).finish(),
            Reply::NoResponse => f.write_str("NoResponse"),
            Reply::Close => f.write_str("Close"),
            Reply::Pending(_) => f.write_str("Pending"),
            Reply::Throttled(r, d) => f.debug_tuple("Throttled").field(r).field(d).finish(),
        }
    }
}

/// Answers decoded requests. ApiVersions and the SASL requests never reach
/// it: the listener answers those itself.
pub trait Handler: Send + Sync + 'static {
    /// Applies `request` for `session`; the connection's next request waits
    /// until this future is done (see [`Reply::Pending`] for the one exception).
    fn handle(&self, request: Request, session: Arc<Session>)
    -> impl Future<Output = Reply> + Send;
}

/// Who a connection's requests come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The client's address.
    pub peer: SocketAddr,
    /// Who it authenticated as (`User:ANONYMOUS` without authentication).
    pub principal: Principal,
    /// The listener's name (`ServerConfig::listener`).
    pub listener: &'static str,
}

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `socket.request.max.bytes`: larger frames close the connection.
    pub max_request_bytes: usize,
    /// Answers of one connection outstanding at once (requests read ahead
    /// or waiting for their acknowledgement); reading pauses beyond.
    pub max_in_flight: usize,
    /// A name for logs and metrics (`internal`, `external`).
    pub listener: &'static str,
    /// SASL on this listener (`SASL_PLAINTEXT`, `SASL_SSL`); `None` serves
    /// every connection as `User:ANONYMOUS` (or its certificate's principal).
    pub sasl: Option<Arc<SaslSettings>>,
    /// TLS on this listener (`SSL`, `SASL_SSL`).
    pub tls: Option<ListenerTls>,
}

/// A listener's TLS: the certificates of the moment and how a client
/// certificate becomes a principal.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// The server config, reloaded when the files change.
    pub config: Arc<ReloadingTls>,
    /// `ssl.principal.mapping.rules`.
    pub principals: Arc<PrincipalMapper>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_request_bytes: frame::DEFAULT_MAX_REQUEST_BYTES,
            max_in_flight: 16,
            listener: "kafka",
            sasl: None,
            tls: None,
        }
    }
}

/// Serves the Kafka protocol on `listener` until `shutdown`, then lets
/// every connection finish what it has in flight (for a few seconds at most).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    versions: Arc<Versions>,
    config: ServerConfig,
    shutdown: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (handler, versions, config, shutdown) = (
                    Arc::clone(&handler),
                    Arc::clone(&versions),
                    config.clone(),
                    shutdown.clone(),
                );
                connections.spawn(async move {
                    let Some(tls) = config.tls.clone() else {
                        let anonymous = Principal::anonymous();
                        return connection(
                            stream, peer, anonymous, handler, versions, config, shutdown,
                        )
                        .await;
                    };
                    let Some((stream, principal)) =
                        accept_tls(stream, peer, &tls, config.listener).await
                    else {
                        return;
                    };
                    connection(stream, peer, principal, handler, versions, config, shutdown).await;
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, listener = config.listener, "accepting a Kafka connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    // In-flight requests get a grace period; a JoinGroup may wait for a
    // whole rebalance, which must not hold up the broker's shutdown.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    loop {
        tokio::select! {
            next = connections.join_next() => if next.is_none() { break },
            () = tokio::time::sleep_until(deadline) => {
                tracing::info!(listener = config.listener, connections = connections.len(), "closing Kafka connections still busy at shutdown");
                connections.abort_all();
                while connections.join_next().await.is_some() {}
                break;
            }
        }
    }
}

/// The TLS handshake, and the principal of the client's certificate
/// (`User:ANONYMOUS` without one); `None` closes the connection: a failed
/// handshake (a plaintext client, a certificate from another CA) or a
/// certificate no `ssl.principal.mapping.rules` rule maps.
async fn accept_tls(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: &ListenerTls,
    listener: &'static str,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    Principal,
)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.config());
    let failed = |reason: &'static str| {
        metrics::counter!("runnel_kafka_tls_handshake_failures_total", "listener" => listener, "reason" => reason).increment(1);
    };
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            failed("handshake");
            tracing::info!(%peer, listener, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            failed("timeout");
            tracing::info!(%peer, listener, "TLS handshake timed out");
            return None;
        }
    };
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first());
    let principal = match certificate {
        None => Principal::anonymous(),
        Some(cert) => {
            let subject = subject_name(cert).unwrap_or_default();
            match tls.principals.map(&subject) {
                Some(name) => Principal::user(name),
                None => {
                    failed("principal");
                    tracing::info!(%peer, listener, subject, "no ssl.principal.mapping.rules rule applies to the client certificate");
                    return None;
                }
            }
        }
    };
    Some((stream, principal))
}

/// How long a stopping listener lets connections finish what is in flight.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the reader passes on: a request, or an ApiVersions answer it made.
enum Item {
    Request(Box<Request>),
    Ready(ApiKey, i16, bytes::Bytes),
}

async fn connection<H: Handler, S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    principal: Principal,
    handler: Arc<H>,
    versions: Arc<Versions>,
    config: ServerConfig,
    shutdown: CancellationToken,
) {
    metrics::gauge!("runnel_kafka_connections", "listener" => config.listener).increment(1.0);
    let mut auth = match config.sasl.clone().map(Authenticator::new).transpose() {
        Ok(auth) => auth,
        Err(e) => {
            tracing::error!(error = %e, %peer, "closing a Kafka connection");
            metrics::gauge!("runnel_kafka_connections", "listener" => config.listener)
                .decrement(1.0);
            return;
        }
    };
    // Who the requests come from: known from the start without SASL.
    let mut session = auth.is_none().then(|| {
        Arc::new(Session {
            peer,
            principal,
            listener: config.listener,
        })
    });
    // The largest frame the reader accepts: smaller until SASL is done.
    let frame_limit = Arc::new(AtomicUsize::new(
        auth.as_ref()
            .and_then(Authenticator::max_receive_size)
            .map_or(config.max_request_bytes, |cap| {
                cap.min(config.max_request_bytes)
            }),
    ));
    let (read, write) = tokio::io::split(stream);
    let max_in_flight = config.max_in_flight.max(1);
    let (tx, mut rx) = mpsc::channel::<Item>(max_in_flight);
    let reader = tokio::spawn(read_requests(
        BufReader::with_capacity(64 * 1024, read),
        peer,
        Arc::clone(&versions),
        config.clone(),
        Arc::clone(&frame_limit),
        tx,
        shutdown.clone(),
    ));
    let mut out = BufWriter::with_capacity(64 * 1024, write);
    // Answers in request order, some still waiting for an acknowledgement.
    let mut answers: FuturesOrdered<BoxFuture<'static, Answer>> = FuturesOrdered::new();
    // The one request being applied, and the next one, read but not started.
    let mut applying: Option<BoxFuture<'static, Applied>> = None;
    let mut next: Option<Item> = None;
    let mut reading = true;
    // Until when a throttled client's connection is muted (KIP-219).
    let mut muted_until: Option<Instant> = None;
    loop {
        if muted_until.is_some_and(|until| until <= Instant::now()) {
            muted_until = None;
        }
        if applying.is_none() && muted_until.is_none() {
            match next.take() {
                Some(Item::Ready(api_key, version, bytes)) => {
                    answers.push_back(
                        std::future::ready(Ok(Answered::frame(api_key, version, bytes))).boxed(),
                    );
                    continue;
                }
                // The connection answers the SASL requests itself, in order.
                Some(Item::Request(request)) if is_sasl(request.api_key) && answers.is_empty() => {
                    let (answer, close) = sasl(auth.as_mut(), &request);
                    answers.push_back(std::future::ready(answer).boxed());
                    if close {
                        // Answered, then closed: nothing more is read.
                        reading = false;
                        rx.close();
                    }
                    if session.is_none()
                        && let Some(principal) = auth.as_ref().and_then(Authenticator::principal)
                    {
                        session = Some(Arc::new(Session {
                            peer,
                            principal: principal.clone(),
                            listener: config.listener,
                        }));
                        frame_limit.store(config.max_request_bytes, Ordering::Relaxed);
                    }
                    continue;
                }
                // Only a Produce overlaps earlier answers still waiting.
                Some(Item::Request(request))
                    if !is_sasl(request.api_key)
                        && (request.api_key == ApiKey::Produce || answers.is_empty()) =>
                {
                    let served = session
                        .as_ref()
                        .filter(|_| auth.as_ref().is_none_or(|a| a.may_serve(Instant::now())));
                    let Some(session) = served else {
                        // Kafka closes a connection that skips or outlives
                        // its authentication.
                        metrics::counter!("runnel_kafka_bad_requests_total", "listener" => config.listener, "reason" => "unauthenticated").increment(1);
                        tracing::info!(%peer, api = api_name(request.api_key), "closing a Kafka connection: request without a valid SASL authentication");
                        break;
                    };
                    applying =
                        Some(apply(Arc::clone(&handler), *request, Arc::clone(session)).boxed());
                }
                waiting => next = waiting,
            }
        }
        let take = reading
            && applying.is_none()
            && next.is_none()
            && muted_until.is_none()
            && answers.len() < max_in_flight;
        let unmute = muted_until.map(tokio::time::Instant::from_std);
        let answered = tokio::select! {
            item = rx.recv(), if take => {
                match item {
                    Some(item) => next = Some(item),
                    None => reading = false,
                }
                continue;
            }
            applied = async { applying.as_mut().expect("guarded by is_some").await }, if applying.is_some() => {
                applying = None;
                // Muted from now, as Kafka's channel is while a request is
                // in flight: pipelined requests behind a throttled one wait
                // (the answer then mutes again for the full throttle).
                if let Reply::Throttled(_, throttle) = &applied.reply {
                    mute(&mut muted_until, *throttle);
                }
                answers.push_back(finish(applied, peer, config.listener));
                continue;
            }
            Some(answered) = answers.next(), if !answers.is_empty() => answered,
            () = async {
                if let Some(until) = unmute {
                    tokio::time::sleep_until(until).await;
                }
            }, if unmute.is_some() => continue,
            // A muted connection is not reading: it learns of shutdown here.
            () = shutdown.cancelled(), if unmute.is_some() => break,
            else => break,
        };
        let Ok(answered) = answered else { break };
        let mut ok = write_answer(&mut out, &answered, &mut muted_until).await;
        // Write whatever else is already answered before one flush.
        while ok && let Some(Some(answered)) = answers.next().now_or_never() {
            ok = match answered {
                Ok(answered) => write_answer(&mut out, &answered, &mut muted_until).await,
                Err(Unanswerable) => false,
            };
        }
        if !ok || out.flush().await.is_err() {
            break;
        }
    }
    reader.abort();
    let _ = out.shutdown().await;
    metrics::gauge!("runnel_kafka_connections", "listener" => config.listener).decrement(1.0);
}

fn is_sasl(api_key: ApiKey) -> bool {
    matches!(api_key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)
}

/// Answers a SASL request, and says whether the connection closes after
/// the answer. A listener without SASL answers ILLEGAL_SASL_STATE, as
/// Kafka does on a `PLAINTEXT` listener.
fn sasl(auth: Option<&mut Authenticator>, request: &Request) -> (Answer, bool) {
    const ILLEGAL_SASL_STATE: i16 = 34;
    const UNSUPPORTED_VERSION: i16 = 35;
    let now = Instant::now();
    let (body, close) = match (&request.body, auth) {
        // v0 would be followed by raw SASL tokens outside Kafka frames.
        (RequestKind::SaslHandshake(_), Some(_)) if request.version == 0 => (
            ResponseKind::SaslHandshake(
                SaslHandshakeResponse::default().with_error_code(UNSUPPORTED_VERSION),
            ),
            true,
        ),
        (RequestKind::SaslHandshake(r), Some(auth)) => {
            let step = auth.handshake(r);
            (ResponseKind::SaslHandshake(step.response), step.close)
        }
        (RequestKind::SaslAuthenticate(r), Some(auth)) => {
            let step = auth.authenticate(r, now);
            (ResponseKind::SaslAuthenticate(step.response), step.close)
        }
        (RequestKind::SaslHandshake(_), None) => (
            ResponseKind::SaslHandshake(
                SaslHandshakeResponse::default().with_error_code(ILLEGAL_SASL_STATE),
            ),
            false,
        ),
        (_, None) => (
            ResponseKind::SaslAuthenticate(
                SaslAuthenticateResponse::default()
                    .with_error_code(ILLEGAL_SASL_STATE)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "this listener does not use SASL",
                    ))),
            ),
            false,
        ),
        (_, Some(_)) => return (Err(Unanswerable), true),
    };
    let encoded = request::encode(
        request.api_key,
        request.version,
        request.header.correlation_id,
        &body,
    );
    match encoded {
        Ok(bytes) => (
            Ok(Answered::frame(request.api_key, request.version, bytes)),
            close,
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a SASL answer; closing the connection");
            (Err(Unanswerable), true)
        }
    }
}

/// Writes one encoded answer (none for acks=0) and mutes the connection
/// for its throttle; false when the peer is gone.
async fn write_answer<W: tokio::io::AsyncWrite + Unpin>(
    out: &mut W,
    answered: &Answered,
    muted_until: &mut Option<Instant>,
) -> bool {
    mute(muted_until, answered.mute);
    match &answered.frame {
        None => true,
        Some((_, _, bytes)) => frame::write_frame(out, bytes).await.is_ok(),
    }
}

/// Mutes the connection for `throttle` from now, unless it already is for
/// longer.
fn mute(muted_until: &mut Option<Instant>, throttle: Duration) {
    if !throttle.is_zero() {
        let until = Instant::now() + throttle;
        *muted_until = Some(muted_until.map_or(until, |m| m.max(until)));
    }
}

/// A request without an answer the client could wait for: the connection
/// closes, as the client would otherwise wait forever.
struct Unanswerable;

/// An encoded answer (`None` when the request gets none), and how long
/// the connection is muted once it is sent.
struct Answered {
    frame: Option<(ApiKey, i16, bytes::Bytes)>,
    mute: Duration,
}

impl Answered {
    fn frame(api_key: ApiKey, version: i16, bytes: bytes::Bytes) -> Answered {
        Answered {
            frame: Some((api_key, version, bytes)),
            mute: Duration::ZERO,
        }
    }
}

/// What the connection writes for a request.
type Answer = Result<Answered, Unanswerable>;

/// A request the handler has applied: what it asked and what it answered.
struct Applied {
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    started: Instant,
    reply: Reply,
}

/// Runs one request through the handler.
async fn apply<H: Handler>(handler: Arc<H>, request: Request, session: Arc<Session>) -> Applied {
    let (api_key, version, correlation_id) = (
        request.api_key,
        request.version,
        request.header.correlation_id,
    );
    let started = Instant::now();
    let reply = handler.handle(request, session).await;
    Applied {
        api_key,
        version,
        correlation_id,
        started,
        reply,
    }
}

/// The encoded answer of an applied request, once its reply is final.
fn finish(
    applied: Applied,
    peer: SocketAddr,
    listener: &'static str,
) -> BoxFuture<'static, Answer> {
    let Applied {
        api_key,
        version,
        correlation_id,
        started,
        reply,
    } = applied;
    async move {
        let (reply, throttle) = match reply {
            Reply::Throttled(reply, throttle) => (*reply, throttle),
            reply => (reply, Duration::ZERO),
        };
        let reply = match reply {
            Reply::Pending(answer) => answer.await,
            reply => reply,
        };
        let name = api_name(api_key);
        metrics::histogram!("runnel_kafka_request_seconds", "api" => name, "version" => version.to_string(), "listener" => listener)
            .record(started.elapsed().as_secs_f64());
        // A client that throttles itself is answered at once and muted
        // after; an older one is answered late and is free once answered.
        let mut mute = throttle;
        if !throttle.is_zero() {
            metrics::counter!("runnel_kafka_throttled_total", "api" => name, "listener" => listener)
                .increment(1);
            if !throttle::client_throttles(api_key, version) {
                tokio::time::sleep(throttle).await;
                mute = Duration::ZERO;
            }
        }
        let mut response = match reply {
            Reply::Response(response) => *response,
            Reply::NoResponse => return Ok(Answered { frame: None, mute }),
            Reply::Close => return Err(Unanswerable),
            Reply::Pending(_) | Reply::Throttled(..) => {
                tracing::error!(%peer, api = name, "a Kafka answer that is pending or throttled twice; closing the connection");
                return Err(Unanswerable);
            }
        };
        if !throttle.is_zero() {
            throttle::set_throttle_time(&mut response, throttle);
        }
        match request::encode(api_key, version, correlation_id, &response) {
            Ok(bytes) => Ok(Answered {
                frame: Some((api_key, version, bytes)),
                mute,
            }),
            Err(e) => {
                // Our own answer does not fit the version asked: a bug here, not
                // the client's; the client sees the connection close and retries.
                tracing::error!(error = %e, %peer, "cannot encode a Kafka response; closing the connection");
                Err(Unanswerable)
            }
        }
    }
    .boxed()
}

/// Reads frames until the peer closes, an unanswerable request arrives, or
/// `shutdown`; decoded requests go to `tx` in order.
async fn read_requests<R: tokio::io::AsyncRead + Unpin>(
    mut read: R,
    peer: SocketAddr,
    versions: Arc<Versions>,
    config: ServerConfig,
    frame_limit: Arc<AtomicUsize>,
    tx: mpsc::Sender<Item>,
    shutdown: CancellationToken,
) {
    loop {
        let limit = frame_limit.load(Ordering::Relaxed);
        let frame = tokio::select! {
            () = shutdown.cancelled() => return,
            frame = frame::read_frame(&mut read, limit) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(FrameError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "Kafka connection read failed");
                return;
            }
            Err(e) => {
                metrics::counter!("runnel_kafka_bad_requests_total", "listener" => config.listener, "reason" => "frame").increment(1);
                tracing::warn!(%peer, error = %e, "closing a Kafka connection");
                return;
            }
        };
        // Kept for the log line when the frame turns out malformed.
        let head = frame.slice(..frame.len().min(48));
        let item = match request::decode(frame, &versions) {
            Ok(request) => {
                metrics::counter!("runnel_kafka_requests_total", "api" => api_name(request.api_key), "version" => request.version.to_string(), "listener" => config.listener).increment(1);
                tracing::debug!(
                    %peer,
                    api = api_name(request.api_key),
                    version = request.version,
                    correlation_id = request.header.correlation_id,
                    client_id = request.header.client_id.as_deref().unwrap_or(""),
                    "Kafka request"
                );
                if request.api_key == ApiKey::ApiVersions {
                    let body = ResponseKind::ApiVersions(versions.response(0));
                    match request::encode(
                        ApiKey::ApiVersions,
                        request.version,
                        request.header.correlation_id,
                        &body,
                    ) {
                        Ok(bytes) => Item::Ready(ApiKey::ApiVersions, request.version, bytes),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot encode the ApiVersions answer");
                            return;
                        }
                    }
                } else {
                    Item::Request(Box::new(request))
                }
            }
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                version,
            }) => {
                // KIP-511: answer with v0 and our ranges so the client retries lower.
                tracing::debug!(%peer, version, "ApiVersions at an unsupported version");
                match request::unsupported_api_versions(correlation_id, &versions) {
                    Ok(bytes) => Item::Ready(ApiKey::ApiVersions, 0, bytes),
                    Err(_) => return,
                }
            }
            Err(e) => {
                metrics::counter!("runnel_kafka_bad_requests_total", "listener" => config.listener, "reason" => reason(&e)).increment(1);
                let head: String = head.iter().map(|b| format!("{b:02x}")).collect();
                tracing::warn!(%peer, error = %e, frame_start = %head, "closing a Kafka connection");
                return;
            }
        };
        if tx.send(item).await.is_err() {
            return;
        }
    }
}

fn reason(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::Malformed(_) => "malformed",
        DecodeError::UnknownApiKey(_) => "unknown_api_key",
        DecodeError::UnsupportedVersion { .. } => "unsupported_version",
    }
}

/// The API's name as Kafka spells it (`Produce`, `Fetch`).
pub fn api_name(api_key: ApiKey) -> &'static str {
    // ApiKey's Debug is the Kafka name; the few dozen names are made once.
    static NAMES: std::sync::OnceLock<std::collections::HashMap<i16, &'static str>> =
        std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            (0..2000)
                .filter_map(|k| ApiKey::try_from(k).ok())
                .map(|k| (k as i16, &*Box::leak(format!("{k:?}").into_boxed_str())))
                .collect()
        })
        .get(&(api_key as i16))
        .copied()
        .unwrap_or("Unknown")
}
