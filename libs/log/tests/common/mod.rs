//! Helpers shared by the integration tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use runnel_log::storage::{StdStorage, Storage};
use runnel_log::{CachedStorage, Log, LogConfig, ManualClock, Offset};
use runnel_records::batch::{BatchBuilder, Batches, Compression, Record};

/// Start of every test clock: 2023-11-14T22:13:20Z.
pub const T0: i64 = 1_700_000_000_000;

/// A batch of `n` records `key-{first+i}` / `value-{first+i}` padded to `value_len`.
pub fn batch(first: u64, n: u64, value_len: usize, ts: i64) -> Vec<u8> {
    batch_with(Compression::None, first, n, value_len, ts)
}

/// Like [`batch`] with a codec.
pub fn batch_with(codec: Compression, first: u64, n: u64, value_len: usize, ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(codec);
    for i in first..first + n {
        let mut value = format!("value-{i}-").into_bytes();
        value.resize(value_len.max(value.len()), b'.');
        b.append(ts, Some(format!("key-{i}").as_bytes()), Some(&value), &[]);
    }
    b.build().unwrap()
}

/// Appends `batches` batches of `per_batch` records (`value_len`-byte
/// values) at epoch 0, batch `i` stamped `T0 + i * ts_step`.
pub fn fill(log: &mut Log, batches: u64, per_batch: u64, value_len: usize, ts_step: i64) {
    for i in 0..batches {
        let mut b = batch(i * per_batch, per_batch, value_len, T0 + i as i64 * ts_step);
        log.append_as_leader(&mut b, 0).unwrap();
    }
}

/// A batch with explicit (key, value) records, all at `ts`.
pub fn kv_batch(records: &[(&str, Option<&str>)], ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None);
    for (k, v) in records {
        b.append(ts, Some(k.as_bytes()), v.map(str::as_bytes), &[]);
    }
    b.build().unwrap()
}

/// Opens a log at `dir` with a manual clock.
///
/// Through a file cache of three descriptors: a log uses at least four
/// files, so every model test here also runs with its files closed and
/// reopened under it all the time, as on a broker with many partitions.
pub fn open(dir: &Path, config: LogConfig, clock: &ManualClock) -> Log {
    open_on(
        dir,
        config,
        clock,
        Arc::new(CachedStorage::new(Arc::new(StdStorage), 3)),
    )
}

/// Opens a log through a given storage.
pub fn open_on(
    dir: &Path,
    config: LogConfig,
    clock: &ManualClock,
    storage: Arc<dyn Storage>,
) -> Log {
    Log::open_with(dir, config, storage, Arc::new(clock.clone())).unwrap()
}

/// The offset after the last batch in `bytes` (stored batches, in order).
pub fn next_offset(bytes: &[u8]) -> Offset {
    Batches::new(bytes)
        .last()
        .map_or(0, |b| b.unwrap().header().next_offset())
}

/// Every byte readable from the log start, batch by batch, following segments.
pub fn read_all_bytes(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let chunk = log.read(offset, 1 << 20, None, true).unwrap();
        if chunk.is_empty() {
            break;
        }
        let mut next = offset;
        for b in Batches::new(&chunk) {
            next = b.unwrap().header().next_offset();
        }
        assert!(next > offset, "read made no progress at {offset}");
        out.extend_from_slice(&chunk);
        offset = next;
    }
    out
}

/// Every record readable from the log start.
pub fn read_all(log: &Log) -> Vec<Record> {
    let bytes = read_all_bytes(log);
    let mut out = Vec::new();
    for b in Batches::new(&bytes) {
        for r in b.unwrap().records().unwrap() {
            out.push(r.unwrap());
        }
    }
    out
}

/// (offset, key, value) of every readable record, as strings.
pub fn kv(log: &Log) -> Vec<(Offset, String, Option<String>)> {
    read_all(log)
        .into_iter()
        .map(|r| {
            let s = |b: Bytes| String::from_utf8(b.to_vec()).unwrap();
            (r.offset, r.key.map(s).unwrap_or_default(), r.value.map(s))
        })
        .collect()
}

/// A config with small segments so tests roll often.
pub fn small_segments(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// Names of the files in a directory, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Proptest cases: `default`, or `RUNNEL_PROPTEST_CASES` for a deeper run.
pub fn cases(default: u32) -> u32 {
    std::env::var("RUNNEL_PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}
