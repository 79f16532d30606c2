//! `runnel health URL`: succeeds when a service's admin endpoint answers
//! `200 OK`.
//!
//! The container images hold only the Runnel binaries (no shell, no curl), so
//! their health checks run this: `runnel health http://127.0.0.1:9194/readyz`.
//! It speaks just enough HTTP/1.1 for the admin servers' `/healthz` and
//! `/readyz`.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `runnel health` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The URL to check, `http://HOST:PORT/PATH` (e.g. a service's `/readyz`).
    url: String,
    /// Longest the whole check may take.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

/// An `http://` URL split into what a request needs.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    host: String,
    /// The request path, starting with `/`.
    path: String,
}

fn parse_url(url: &str) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?} is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("{url:?} names no host");
    }
    // A port after the last colon, unless that colon is inside an IPv6 literal.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']'));
    let addr = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        addr,
        host: authority.to_owned(),
        path: path.to_owned(),
    })
}

/// The status code of an HTTP response's status line (`HTTP/1.1 200 OK`).
fn status_code(response: &[u8]) -> Option<u16> {
    let line = response.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Checks the URL; an error says what answered instead of `200`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    check(&args.url, Duration::from_millis(args.timeout_ms)).await
}

/// Succeeds when `url` answers `200` within `timeout`; an error says what
/// answered instead.
pub async fn check(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let target = parse_url(url)?;
    let request = async {
        let mut stream = TcpStream::connect(&target.addr)
            .await
            .with_context(|| format!("cannot connect to {}", target.addr))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            target.path, target.host
        );
        stream
            .write_all(request.as_bytes())
            .await
            .with_context(|| format!("cannot send to {}", target.addr))?;
        // The status line is all we need; admin answers are small anyway.
        let mut response = Vec::new();
        stream
            .take(64 * 1024)
            .read_to_end(&mut response)
            .await
            .with_context(|| format!("cannot read the answer of {}", target.addr))?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(timeout, request)
        .await
        .with_context(|| format!("{url} did not answer in {} ms", timeout.as_millis()))??;
    match status_code(&response) {
        Some(200) => Ok(()),
        Some(code) => {
            let body = String::from_utf8_lossy(&response);
            let body = body.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
            if body.is_empty() {
                bail!("{url} answered {code}")
            }
            bail!("{url} answered {code}: {body}")
        }
        None => bail!("{url} did not answer with HTTP"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_host_and_path() {
        assert_eq!(
            parse_url("http://127.0.0.1:9194/readyz").ok(),
            Some(Target {
                addr: "127.0.0.1:9194".into(),
                host: "127.0.0.1:9194".into(),
                path: "/readyz".into(),
            })
        );
        assert_eq!(
            parse_url("http://broker-1").ok(),
            Some(Target {
                addr: "broker-1:80".into(),
                host: "broker-1".into(),
                path: "/".into(),
            })
        );
        assert_eq!(
            parse_url("http://[::1]/healthz").ok().map(|t| t.addr),
            Some("[::1]:80".into())
        );
        assert!(parse_url("https://x/readyz").is_err());
        assert!(parse_url("http:///readyz").is_err());
    }

    #[test]
    fn status_lines_give_their_code() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n\r\nok"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b""), None);
    }
}
