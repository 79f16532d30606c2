//! A small HTTP/1.1 client on hyper: one request with a body and a
//! timeout, the whole answer back, over `http://` or `https://` (rustls,
//! trusting the system's CAs or a given one). What the `runnel connectors`
//! and `runnel health` commands, the HTTP sink connector and tests need.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL or a header is not valid.
    #[error("invalid request to {url}: {message}")]
    Invalid {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// No connection, or it broke.
    #[error("cannot reach {url}: {message}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// No whole answer within the timeout.
    #[error("no answer from {url} within {ms} ms")]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        ms: u64,
    },
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Bytes,
}

impl Response {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A reusable client (keeps connections alive between requests).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client whose `https://` requests trust the system's CAs (none, on
    /// a system without them: such a request then fails verification).
    pub fn new() -> HttpClient {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        // ring implements every protocol version rustls enables by default.
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls::provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports rustls' default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        HttpClient::with_config(config)
    }

    /// A client whose `https://` requests trust `tls`'s CA and present its
    /// certificate, if it has one.
    pub fn with_tls(tls: &crate::tls::ClientTls) -> HttpClient {
        HttpClient::with_config((*tls.config()).clone())
    }

    fn with_config(mut config: rustls::ClientConfig) -> HttpClient {
        // The connector offers HTTP/1.1 by ALPN itself, and refuses a
        // config that names protocols already.
        config.alpn_protocols.clear();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Sends `method url` with `body` (JSON when given) and waits up to `timeout` for the whole answer.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<Bytes>,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let invalid = |message: String| HttpError::Invalid {
            url: url.to_owned(),
            message,
        };
        let method =
            http::Method::from_bytes(method.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let mut builder = http::Request::builder().method(method).uri(url);
        if body.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| invalid(e.to_string()))?;
        let unreachable = |message: String| HttpError::Unreachable {
            url: url.to_owned(),
            message,
        };
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok(Response { status, body })
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| HttpError::Timeout {
                url: url.to_owned(),
                ms: timeout.as_millis() as u64,
            })?
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
