//! The record batches real Kafka clients sent (`tests/data/kafka-batches`,
//! see its README) and the records each must decode to. Shared by this
//! crate's interop test and runnel-log's, which appends them to a log.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use base64::Engine;
use bytes::Bytes;
use runnel_records::batch::{Batches, Header, Record};
use serde_json::Value;

pub fn data_dir() -> PathBuf {
    // `..` and back: runnel-log's append test includes this module too.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../records/tests/data/kafka-batches")
}

pub fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(data_dir().join("manifest.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["files"].as_array().unwrap().clone()
}

pub fn b64(v: &Value) -> Option<Bytes> {
    v.as_str()
        .map(|s| Bytes::from(base64::engine::general_purpose::STANDARD.decode(s).unwrap()))
}

/// Key, value, headers and timestamp of one expected record.
pub type Expected = (Option<Bytes>, Option<Bytes>, Vec<Header>, i64);

/// The records a manifest entry says the file must decode to.
pub fn expected_records(entry: &Value) -> Vec<Expected> {
    entry["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let headers = r["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| Header {
                    key: Bytes::from(h[0].as_str().unwrap().as_bytes().to_vec()),
                    value: b64(&h[1]),
                })
                .collect();
            (
                b64(&r["key"]),
                b64(&r["value"]),
                headers,
                r["timestamp"].as_i64().unwrap(),
            )
        })
        .collect()
}

pub fn decode_all(bytes: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    for batch in Batches::new(bytes) {
        for r in batch.unwrap().records().unwrap() {
            out.push(r.unwrap());
        }
    }
    out
}

pub fn assert_records_match(file: &str, got: &[Record], entry: &Value) {
    let expected = expected_records(entry);
    assert_eq!(got.len(), expected.len(), "{file}: record count");
    for (i, (r, (key, value, headers, ts))) in got.iter().zip(&expected).enumerate() {
        assert_eq!(&r.key, key, "{file} record {i} key");
        assert_eq!(&r.value, value, "{file} record {i} value");
        assert_eq!(&r.headers, headers, "{file} record {i} headers");
        assert_eq!(r.timestamp, *ts, "{file} record {i} timestamp");
    }
}
