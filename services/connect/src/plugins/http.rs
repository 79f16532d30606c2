//! `HttpSink`: POSTs records to a URL as JSON arrays of their values, in
//! batches, with Confluent's HTTP sink config keys.
//!
//! Connection errors, timeouts, 408, 429 and 5xx answers are retried with
//! exponential backoff (`max.retries`, `retry.backoff.ms`); after that the
//! task fails. Any other answer outside 2xx refuses the batch: it is sent
//! again one record at a time so that only the records the server refuses
//! are reported (errors.tolerance and the dead-letter topic decide).

use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use runnel_common::backoff::Backoff;
use runnel_common::http::HttpClient;
use serde_json::Value as Json;

use super::{Failed, Kind, Plugin, SinkRecord, SinkTask, TaskError};
use crate::configdef::{self, Check, Key, Props, Type};

/// `HttpSink`.
pub struct HttpSink;

const KEYS: &[Key] = &[
    Key::required(
        "http.api.url",
        Type::String,
        "The http:// URL records are sent to.",
    )
    .group("Connection"),
    Key::optional("request.method", Type::String, "POST", "POST or PUT.")
        .check(Check::OneOf(&["POST", "PUT"]))
        .group("Connection"),
    Key::optional(
        "headers",
        Type::String,
        "",
        "Extra headers, Name:value separated by |.",
    )
    .group("Connection"),
    Key::optional(
        "batch.max.size",
        Type::Int,
        "500",
        "Most records per request.",
    )
    .check(Check::AtLeast(1))
    .group("Batching"),
    Key::optional(
        "request.timeout.ms",
        Type::Int,
        "30000",
        "How long one request may take.",
    )
    .check(Check::AtLeast(1))
    .group("Retries"),
    Key::optional(
        "max.retries",
        Type::Int,
        "10",
        "Retries of a request that failed for a retriable reason.",
    )
    .check(Check::AtLeast(0))
    .group("Retries"),
    Key::optional(
        "retry.backoff.ms",
        Type::Int,
        "3000",
        "First wait before a retry; it doubles each time.",
    )
    .check(Check::AtLeast(0))
    .group("Retries"),
];

impl Plugin for HttpSink {
    fn class(&self) -> &'static str {
        "io.runnel.connect.http.HttpSinkConnector"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["HttpSink"]
    }
    fn kind(&self) -> Kind {
        Kind::Sink
    }
    fn keys(&self) -> &'static [Key] {
        KEYS
    }
    fn validate(&self, props: &Props) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let url = configdef::get(props, "http.api.url", "");
        if !url.is_empty() && (!url.starts_with("http://") || url.parse::<http::Uri>().is_err()) {
            out.push((
                "http.api.url".into(),
                format!("{url} is not an http:// URL"),
            ));
        }
        if parse_headers(configdef::get(props, "headers", "")).is_err() {
            out.push((
                "headers".into(),
                "headers are Name:value pairs separated by |".into(),
            ));
        }
        out
    }
    fn task_configs(&self, props: &Props, max_tasks: usize) -> Vec<Props> {
        vec![props.clone(); max_tasks.max(1)]
    }
    fn sink_task(&self, props: &Props) -> Result<Box<dyn SinkTask>, TaskError> {
        let headers =
            parse_headers(configdef::get(props, "headers", "")).map_err(TaskError::Fatal)?;
        Ok(Box::new(HttpSinkTask {
            client: HttpClient::new(),
            url: configdef::get(props, "http.api.url", "").to_owned(),
            method: configdef::get(props, "request.method", "POST").to_ascii_uppercase(),
            headers,
            batch: configdef::get_i64(props, "batch.max.size", 500).max(1) as usize,
            timeout: Duration::from_millis(
                configdef::get_i64(props, "request.timeout.ms", 30_000).max(1) as u64,
            ),
            max_retries: configdef::get_i64(props, "max.retries", 10).max(0) as u32,
            backoff: Duration::from_millis(
                configdef::get_i64(props, "retry.backoff.ms", 3000).max(0) as u64,
            ),
        }))
    }
}

fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split('|')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| match h.split_once(':') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(format!("header {h:?} is not Name:value")),
        })
        .collect()
}

struct HttpSinkTask {
    client: HttpClient,
    url: String,
    method: String,
    headers: Vec<(String, String)>,
    batch: usize,
    timeout: Duration,
    max_retries: u32,
    backoff: Duration,
}

/// How one request ended.
enum Outcome {
    Accepted,
    /// The server refused the records themselves.
    Refused(String),
}

impl HttpSinkTask {
    /// Sends one batch, retrying what is retriable.
    async fn send(&self, records: &[&SinkRecord]) -> Result<Outcome, TaskError> {
        let body = Json::Array(records.iter().map(|r| r.value.value.to_json()).collect());
        let body = Bytes::from(body.to_string());
        let mut backoff = Backoff::new(self.backoff, Duration::from_secs(60));
        let mut attempt = 0;
        loop {
            let why = match self
                .client
                .request(
                    &self.method,
                    &self.url,
                    Some(body.clone()),
                    &self.headers,
                    self.timeout,
                )
                .await
            {
                Ok(r) if (200..300).contains(&r.status) => return Ok(Outcome::Accepted),
                Ok(r) if r.status == 408 || r.status == 429 || r.status >= 500 => {
                    format!("{} answered {}: {}", self.url, r.status, snippet(&r.text()))
                }
                Ok(r) => {
                    return Ok(Outcome::Refused(format!(
                        "{} answered {}: {}",
                        self.url,
                        r.status,
                        snippet(&r.text())
                    )));
                }
                Err(e) => e.to_string(),
            };
            if attempt >= self.max_retries {
                return Err(TaskError::Fatal(format!(
                    "giving up after {attempt} retries: {why}"
                )));
            }
            attempt += 1;
            tracing::warn!(attempt, error = %why, "HTTP sink request failed; retrying");
            backoff.wait().await;
        }
    }
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    if t.chars().count() > 200 {
        format!("{}...", t.chars().take(200).collect::<String>())
    } else {
        t.to_owned()
    }
}

impl SinkTask for HttpSinkTask {
    fn start(&mut self) -> BoxFuture<'_, Result<(), TaskError>> {
        async { Ok(()) }.boxed()
    }

    fn put(&mut self, records: Vec<SinkRecord>) -> BoxFuture<'_, Result<Vec<Failed>, TaskError>> {
        async move {
            let mut failed = Vec::new();
            let indexed: Vec<(usize, &SinkRecord)> = records.iter().enumerate().collect();
            for chunk in indexed.chunks(self.batch) {
                let batch: Vec<&SinkRecord> = chunk.iter().map(|(_, r)| *r).collect();
                if let Outcome::Refused(why) = self.send(&batch).await? {
                    if chunk.len() == 1 {
                        failed.push(Failed {
                            index: chunk[0].0,
                            reason: why,
                        });
                        continue;
                    }
                    // Which records did it refuse? Send them one at a time.
                    for (i, r) in chunk {
                        if let Outcome::Refused(why) = self.send(&[*r]).await? {
                            failed.push(Failed {
                                index: *i,
                                reason: why,
                            });
                        }
                    }
                }
            }
            Ok(failed)
        }
        .boxed()
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), TaskError>> {
        // Every put is answered before it returns.
        async { Ok(()) }.boxed()
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        async {}.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_value_pairs() {
        assert_eq!(
            parse_headers("Authorization: Bearer x | X-Env:dev").unwrap(),
            vec![
                ("Authorization".into(), "Bearer x".into()),
                ("X-Env".into(), "dev".into())
            ]
        );
        assert!(parse_headers("nonsense").is_err());
        assert!(parse_headers("").unwrap().is_empty());
    }
}
