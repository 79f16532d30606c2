//! Interoperability with real Kafka clients, both ways:
//! batches captured from confluent-kafka (librdkafka) and kafka-python decode
//! to exactly the records the clients were asked to send and survive an
//! append unchanged; batches Runnel builds decode in kafka-python's reader.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use bytes::Bytes;
use runnel_log::batch::{
    BatchBuilder, BatchError, Batches, Compression, Header, Record, RecordBatch,
};
use runnel_log::{Log, LogConfig};
use serde_json::Value;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kafka-batches")
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(data_dir().join("manifest.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["files"].as_array().unwrap().clone()
}

fn b64(v: &Value) -> Option<Bytes> {
    v.as_str()
        .map(|s| Bytes::from(base64::engine::general_purpose::STANDARD.decode(s).unwrap()))
}

/// Key, value, headers and timestamp of one expected record.
type Expected = (Option<Bytes>, Option<Bytes>, Vec<Header>, i64);

/// The records a manifest entry says the file must decode to.
fn expected_records(entry: &Value) -> Vec<Expected> {
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

fn decode_all(bytes: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    for batch in Batches::new(bytes) {
        for r in batch.unwrap().records().unwrap() {
            out.push(r.unwrap());
        }
    }
    out
}

fn assert_records_match(file: &str, got: &[Record], entry: &Value) {
    let expected = expected_records(entry);
    assert_eq!(got.len(), expected.len(), "{file}: record count");
    for (i, (r, (key, value, headers, ts))) in got.iter().zip(&expected).enumerate() {
        assert_eq!(&r.key, key, "{file} record {i} key");
        assert_eq!(&r.value, value, "{file} record {i} value");
        assert_eq!(&r.headers, headers, "{file} record {i} headers");
        assert_eq!(r.timestamp, *ts, "{file} record {i} timestamp");
    }
}

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
fn client_batches_survive_append_and_read_back() {
    for entry in manifest() {
        let file = entry["file"].as_str().unwrap();
        let bytes = std::fs::read(data_dir().join(file)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path().join("fixtures-0"), LogConfig::default()).unwrap();
        let mut expected_offset = 0;
        // One append per Produce request, as the broker would do it.
        for req in entry["produce_requests"].as_array().unwrap() {
            let start = req["file_offset"].as_u64().unwrap() as usize;
            let len = req["length"].as_u64().unwrap() as usize;
            let mut request = bytes[start..start + len].to_vec();
            let info = log.append_as_leader(&mut request, 7).unwrap();
            assert_eq!(
                info.first_offset, expected_offset,
                "{file}: offsets continue"
            );
            expected_offset = info.last_offset + 1;
        }
        assert_eq!(
            log.log_end_offset(),
            entry["record_count"].as_i64().unwrap()
        );

        // Reopen to read from disk, not from anything cached.
        log.close().unwrap();
        let log = Log::open(dir.path().join("fixtures-0"), LogConfig::default()).unwrap();
        let stored = log.read(0, 64 * 1024 * 1024, None, true).unwrap();
        let records = decode_all(&stored);
        assert_records_match(file, &records, &entry);
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "{file}: offsets"
        );

        // Stored batches are the client's bytes with only the broker's header
        // fields (base offset, leader epoch) changed; the CRC still holds.
        assert_eq!(stored.len(), bytes.len(), "{file}: stored size");
        for (ours, theirs) in Batches::new(&stored).zip(Batches::new(&bytes)) {
            let (ours, theirs) = (ours.unwrap(), theirs.unwrap());
            assert_eq!(
                ours.as_bytes()[16..],
                theirs.as_bytes()[16..],
                "{file}: batch body changed"
            );
            assert_eq!(ours.header().partition_leader_epoch, 7);
        }
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
         .venv and RUNNEL_TEST_PYTHON) or `pip install -r libs/log/tests/interop/requirements.txt`; \
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
