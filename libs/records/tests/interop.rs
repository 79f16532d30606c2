//! Interoperability with real Kafka clients, both ways:
//! batches captured from confluent-kafka (librdkafka) and kafka-python decode
//! to exactly the records the clients were asked to send (runnel-log's
//! interop test appends them to a log); batches Runnel builds decode in
//! kafka-python's reader.

#![allow(clippy::unwrap_used)]

mod captured;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use bytes::Bytes;
use captured::{assert_records_match, data_dir, decode_all, manifest};
use runnel_records::batch::{
    BatchBuilder, BatchError, Batches, Compression, Header, Record, RecordBatch,
};
use serde_json::Value;

#[test]
fn every_client_batch_decodes_to_the_records_sent() {
    let entries = manifest();
    assert_eq!(entries.len(), 17);
    for entry in &entries {
        let file = entry["file"].as_str().unwrap();
        let bytes = std::fs::read(data_dir().join(file)).unwrap();
        let batches: Vec<RecordBatch<'_>> = Batches::new(&bytes).map(Result::unwrap).collect();
        let observed = entry["observed_batches"].as_array().unwrap();
        assert_eq!(batches.len(), observed.len(), "{file}: batch count");
        let codec = Compression::from_name(entry["codec"].as_str().unwrap()).unwrap();
        for (batch, obs) in batches.iter().zip(observed) {
            let h = batch.header();
            assert_eq!(h.compression().unwrap(), codec, "{file}: codec");
            assert_eq!(
                h.producer_id,
                obs["producer_id"].as_i64().unwrap(),
                "{file}: producer id"
            );
            assert_eq!(
                i64::from(h.base_sequence),
                obs["base_sequence"].as_i64().unwrap(),
                "{file}: base sequence"
            );
            assert_eq!(
                i64::from(h.records_count),
                obs["record_count"].as_i64().unwrap(),
                "{file}: count"
            );
            assert_eq!(
                h.max_timestamp,
                obs["max_timestamp"].as_i64().unwrap(),
                "{file}: max timestamp"
            );
            batch.validate_records(true).unwrap();
        }
        assert_records_match(file, &decode_all(&bytes), entry);
    }
}

#[test]
fn any_flipped_byte_under_the_crc_is_caught() {
    let bytes = std::fs::read(data_dir().join("ck-zstd.bin")).unwrap();
    for i in 17..bytes.len() {
        let mut copy = bytes.clone();
        copy[i] ^= 0x5a;
        let err = RecordBatch::parse(&copy).unwrap_err();
        assert!(
            matches!(err, BatchError::CrcMismatch { .. }),
            "byte {i}: {err}"
        );
    }
}

/// Batches covering what a producer can send: every codec, both timestamp
/// types, null/empty keys and values, headers with null values, idempotence.
fn runnel_batches() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for codec in Compression::ALL {
        for log_append in [false, true] {
            let mut b = BatchBuilder::new(codec)
                .base_offset(100)
                .producer(42, 3, 17);
            if log_append {
                b = b.log_append_time(1_800_000_000_000);
            }
            for i in 0..300i64 {
                let key = (i % 7 != 0).then(|| format!("key-{i}").into_bytes());
                let value = match i % 5 {
                    0 => None,
                    1 => Some(Vec::new()),
                    _ => Some(format!("value-{i}-{}", "x".repeat((i % 97) as usize)).into_bytes()),
                };
                let headers = vec![
                    Header::new("trace", Some(format!("t{i}"))),
                    Header::new("", None::<Bytes>),
                    Header::new("ü-header", Some(vec![0u8, 0xff, 0x80])),
                ];
                b.append(
                    1_700_000_000_000 + i * 3 - 500,
                    key.as_deref(),
                    value.as_deref(),
                    &headers,
                );
            }
            out.push((
                format!("{codec}-{}", if log_append { "append" } else { "create" }),
                b.build().unwrap(),
            ));
        }
    }
    out
}

fn python() -> String {
    std::env::var("RUNNEL_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn kafka_python_decodes_runnel_batches() {
    let check = Command::new(python())
        .args(["-c", "import kafka, cramjam, lz4, zstandard"])
        .output();
    let ready = check.as_ref().is_ok_and(|o| o.status.success());
    assert!(
        ready,
        "kafka-python and its codecs are needed for this test: run scripts/test (it sets up \
         .venv and RUNNEL_TEST_PYTHON) or `pip install -r libs/records/tests/interop/requirements.txt`; \
         {check:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let batches = runnel_batches();
    let mut paths = Vec::new();
    for (name, bytes) in &batches {
        let path = dir.path().join(format!("{name}.bin"));
        std::fs::write(&path, bytes).unwrap();
        paths.push(path);
    }
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/decode_with_kafka_python.py");
    let out = Command::new(python())
        .arg(script)
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka-python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), batches.len());
    let enc = |b: &Option<Bytes>| match b {
        Some(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        None => Value::Null,
    };
    for ((name, bytes), decoded) in batches.iter().zip(&lines) {
        let theirs = decoded["batches"].as_array().unwrap();
        assert_eq!(theirs.len(), 1, "{name}");
        let batch = &theirs[0];
        assert_eq!(batch["crc_valid"], Value::Bool(true), "{name}: crc");
        let (ours, _) = RecordBatch::parse(bytes).unwrap();
        assert_eq!(
            batch["codec"].as_u64().unwrap(),
            u64::from(ours.header().compression().unwrap().id()),
            "{name}"
        );
        assert_eq!(batch["producer_id"].as_i64().unwrap(), 42, "{name}");
        let records: Vec<Record> = ours.records().unwrap().map(Result::unwrap).collect();
        let theirs = batch["records"].as_array().unwrap();
        assert_eq!(theirs.len(), records.len(), "{name}: record count");
        for (r, t) in records.iter().zip(theirs) {
            assert_eq!(t["offset"].as_i64().unwrap(), r.offset, "{name}: offset");
            assert_eq!(
                t["timestamp"].as_i64().unwrap(),
                r.timestamp,
                "{name}: timestamp"
            );
            assert_eq!(t["key"], enc(&r.key), "{name}: key at {}", r.offset);
            assert_eq!(t["value"], enc(&r.value), "{name}: value at {}", r.offset);
            let headers: Vec<Value> = r
                .headers
                .iter()
                .map(|h| {
                    Value::Array(vec![
                        Value::String(String::from_utf8(h.key.to_vec()).unwrap()),
                        enc(&h.value),
                    ])
                })
                .collect();
            assert_eq!(
                t["headers"],
                Value::Array(headers),
                "{name}: headers at {}",
                r.offset
            );
        }
    }
}
