//! `runnel health URL`: succeeds when a service's admin endpoint answers
//! `200 OK`.
//!
//! The container images hold only the Runnel binaries (no shell, no curl), so
//! their health checks run this: `runnel health http://127.0.0.1:9194/readyz`
//! (`https://` with `--ca-file` for admin endpoints served over TLS).

use std::time::Duration;

use anyhow::bail;
use runnel_common::http::HttpClient;

/// `runnel health` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The URL to check, `http://HOST:PORT/PATH` or `https://...` (e.g. a
    /// service's `/readyz`).
    url: String,
    /// Longest the whole check may take.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

/// Checks the URL; an error says what answered instead of `200`.
pub async fn run(client: &HttpClient, args: Args) -> anyhow::Result<()> {
    check(client, &args.url, Duration::from_millis(args.timeout_ms)).await
}

/// Succeeds when `url` answers `200` within `timeout`; an error says what
/// answered instead.
pub async fn check(client: &HttpClient, url: &str, timeout: Duration) -> anyhow::Result<()> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("{url:?} is not an http:// or https:// URL");
    }
    let response = client.request("GET", url, None, &[], timeout).await?;
    match response.status {
        200 => Ok(()),
        code => {
            let body = response.text();
            let body = body.trim();
            if body.is_empty() {
                bail!("{url} answered {code}")
            }
            bail!("{url} answered {code}: {body}")
        }
    }
}
