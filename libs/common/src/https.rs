//! HTTP listeners over TLS: the admin endpoints (`/metrics`, `/healthz`,
//! `/readyz`) and Connect's REST API, served by axum on the same accept
//! loop as gRPC ([`crate::transport::incoming`]: handshakes in their own
//! tasks, bounded in time) with certificates reloaded when they change.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::tls::{ClientAuth, PrincipalMapper, ReloadingTls, TlsError, TlsFiles};
use crate::transport::{ServerConn, ServerTls};

/// How often an HTTPS listener's certificate files are looked at.
const RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// An HTTPS listener's TLS from its settings (`*_ssl_keystore_location`,
/// `*_ssl_truststore_location`, `*_ssl_client_auth`); `None` without a
/// keystore, for plain HTTP.
pub fn server_tls(
    keystore: Option<&Path>,
    truststore: Option<&Path>,
    client_auth: &str,
) -> Result<Option<ServerTls>, TlsError> {
    let Some(keystore) = keystore else {
        return Ok(None);
    };
    let files = TlsFiles {
        keystore: keystore.to_owned(),
        truststore: truststore.map(Path::to_owned),
        client_auth: ClientAuth::parse(client_auth)?,
        alpn: vec![b"http/1.1".to_vec()],
    };
    Ok(Some(ServerTls {
        config: ReloadingTls::load(files)?,
        principals: Arc::new(PrincipalMapper::parse("DEFAULT")?),
    }))
}

/// Serves `router` on `listener` until `shutdown`, over TLS when `tls` is
/// given (its files looked at every 30 s for a renewal).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let watch = tls
        .as_ref()
        .map(|tls| Arc::clone(&tls.config).watch(RELOAD_INTERVAL, shutdown.clone()));
    let listener = HttpListener::new(listener, tls)?;
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .into_future();
    match watch {
        Some(watch) => futures::future::join(served, watch).await.0,
        None => served.await,
    }
}

/// Connections of an HTTP listener, in clear or over TLS, as axum takes them.
pub struct HttpListener {
    conns: Pin<Box<dyn Stream<Item = Result<ServerConn, std::io::Error>> + Send>>,
    local: SocketAddr,
}

impl HttpListener {
    /// Accepts on `listener`, over TLS when `tls` is given.
    pub fn new(listener: TcpListener, tls: Option<ServerTls>) -> std::io::Result<HttpListener> {
        let local = listener.local_addr()?;
        Ok(HttpListener {
            conns: Box::pin(crate::transport::incoming(listener, tls)),
            local,
        })
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = ServerConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ServerConn, SocketAddr) {
        loop {
            match self.conns.next().await {
                Some(Ok(conn)) => {
                    let addr = conn.peer().remote.unwrap_or(self.local);
                    return (conn, addr);
                }
                // The accept loop logs its own failures and goes on.
                Some(Err(_)) => continue,
                // The accept loop ended: nothing more will come.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Not;

    use super::*;
    use crate::certs::DevCa;
    use crate::http::HttpClient;
    use crate::tls::ClientTls;

    /// Serves `/readyz` over HTTPS with `client_auth`; its URL.
    async fn serve_ok(
        dir: &Path,
        ca: &DevCa,
        client_auth: &str,
        shutdown: &CancellationToken,
    ) -> String {
        std::fs::write(dir.join("ca.pem"), ca.ca_pem()).unwrap();
        std::fs::write(
            dir.join("server.pem"),
            ca.server_keystore(&["127.0.0.1"]).unwrap(),
        )
        .unwrap();
        let tls = server_tls(
            Some(&dir.join("server.pem")),
            Some(&dir.join("ca.pem")),
            client_auth,
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/readyz", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve(listener, router, tls, shutdown.clone()));
        format!("https://{addr}/readyz")
    }

    #[tokio::test]
    async fn https_serves_clients_that_trust_its_ca_and_no_one_else() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test CA").unwrap();
        let shutdown = CancellationToken::new();
        let url = serve_ok(dir.path(), &ca, "none", &shutdown).await;
        let timeout = Duration::from_secs(5);

        let trusting = ClientTls::client(Some(dir.path().join("ca.pem")), None).unwrap();
        let answer = HttpClient::with_tls(&trusting)
            .request("GET", &url, None, &[], timeout)
            .await
            .unwrap();
        assert_eq!((answer.status, answer.text().as_str()), (200, "ok"));

        // The system's CAs do not know the test CA; clear text is no TLS.
        assert!(
            HttpClient::new()
                .request("GET", &url, None, &[], timeout)
                .await
                .is_err()
        );
        let plain = url.replace("https://", "http://");
        assert!(
            HttpClient::new()
                .request("GET", &plain, None, &[], timeout)
                .await
                .is_ok_and(|r| r.status == 200)
                .not()
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_required_client_certificate_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test CA").unwrap();
        let shutdown = CancellationToken::new();
        let url = serve_ok(dir.path(), &ca, "required", &shutdown).await;
        let timeout = Duration::from_secs(5);
        let (cert, key) = ca.client("prometheus", None).unwrap();
        std::fs::write(dir.path().join("client.pem"), format!("{cert}{key}")).unwrap();

        let anonymous = ClientTls::client(Some(dir.path().join("ca.pem")), None).unwrap();
        assert!(
            HttpClient::with_tls(&anonymous)
                .request("GET", &url, None, &[], timeout)
                .await
                .is_err()
        );
        let identified = ClientTls::client(
            Some(dir.path().join("ca.pem")),
            Some(dir.path().join("client.pem")),
        )
        .unwrap();
        let answer = HttpClient::with_tls(&identified)
            .request("GET", &url, None, &[], timeout)
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        shutdown.cancel();
    }
}
