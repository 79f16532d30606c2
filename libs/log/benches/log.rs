//! Criterion benchmarks of the storage engine against the plain-file bound.
//!
//! Every `log/...` benchmark has a `file/...` twin that does the same I/O
//! with bare `std::fs::File` calls in the same run, so the ratio between the
//! two is what to look at (absolute numbers on a shared 2-core VM are noisy).
//! All data lives in temp dirs under `std::env::temp_dir()` (`/tmp`) and in
//! the page cache; only the `append_fsync` group waits for the device.
//!
//! Groups (run one with `cargo bench -p runnel-log --bench log -- <group>`):
//!
//! - `append`: `Log::append_as_leader` of a pre-built batch of ~100-byte
//!   records (1 KiB, 16 KiB, 1 MiB batches) vs `File::write_all` of the same
//!   bytes, and vs CRC-32C + `write_all` (`file_crc32c`: the validation a
//!   leader must do, so the fair bound for the log). Each timed run starts a fresh log/file and is cut into chunks of
//!   at most [`APPEND_CHUNK_BYTES`] (a new log per chunk, set up untimed), so
//!   the log never grows past one segment and the page cache stays bounded.
//! - `append_fsync`: the same plus `Log::flush` / `File::sync_data` per batch.
//! - `read`: a ~256 MiB log read front to back with `Log::read(offset, 1 MiB)`
//!   vs `read_at` of its segment file with a reused 1 MiB buffer.
//! - `lookup`: `Log::read(random offset, 1 byte)` (index lookup + scan + one
//!   batch) and `Log::offset_for_timestamp(random ts)` on a 4-segment log of
//!   1 KiB batches, vs one 1 KiB `read_at` at a random position.
//! - `recovery`: `Log::open` after an unclean shutdown (every batch scanned,
//!   CRC-checked, indexes rebuilt) of ~1 GiB, vs reading the same file and
//!   computing CRC-32C over it; plus a clean open for contrast.
//! - `compaction`: `Log::clean` of a ~128 MiB compacted log (10k keys
//!   overwritten ~130 times each), fresh copy per iteration.
//! - `transactions`: a ~128 MiB log of transactions (10 producers, four
//!   16 KiB batches and a marker each, one transaction in ten aborted) read
//!   front to back as read_uncommitted (`Log::read` to the high watermark)
//!   and as read_committed (to the last stable offset, with
//!   `Log::aborted_transactions` for each chunk, what a read_committed
//!   fetch adds).

use std::cell::OnceCell;
use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use runnel_log::{CleanerConfig, Log, LogConfig};
use runnel_records::batch::{
    BatchBuilder, BatchHeader, Batches, Compression, ControlType, EndTxnMarker,
};
use tempfile::TempDir;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Largest file/log a timed append run writes before it is replaced (untimed).
const APPEND_CHUNK_BYTES: u64 = 256 * MIB as u64;
/// Batch sizes of the append benchmarks: (label, target bytes).
const APPEND_SIZES: [(&str, usize); 3] = [("1KiB", KIB), ("16KiB", 16 * KIB), ("1MiB", MIB)];
/// Bytes per `Log::read` / plain `read_at` call in the read benchmark.
const READ_MAX_BYTES: usize = MIB;
/// Size of the logs the read and lookup benchmarks read.
const READ_LOG_BYTES: usize = 256 * MIB;
/// Size of the log recovery scans.
const RECOVERY_LOG_BYTES: usize = 1024 * MIB;
/// Size of the compacted log.
const COMPACT_LOG_BYTES: usize = 128 * MIB;
/// Distinct keys in the compacted log.
const COMPACT_KEYS: u64 = 10_000;

/// Key of every record: `user-` and 11 digits (16 bytes).
const KEY_LEN: usize = 16;
/// Value of every record; with the key and ~10 bytes of varint framing a record is ~100 bytes.
const VALUE_LEN: usize = 74;
/// Upper bound of one encoded record (large offset deltas take 3-byte varints).
const MAX_RECORD_LEN: usize = KEY_LEN + VALUE_LEN + 16;
/// A v2 batch's CRC covers the bytes from its attributes field on.
const BATCH_CRC_FROM: usize = 21;
/// Some time in November 2023.
const T0: i64 = 1_700_000_000_000;

/// SplitMix64: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key(id: u64) -> String {
    let k = format!("user-{id:011}");
    debug_assert_eq!(k.len(), KEY_LEN);
    k
}

/// A JSON-ish event, padded or cut to `VALUE_LEN` bytes.
fn value(id: u64, rng: &mut Rng) -> Vec<u8> {
    let mut v = format!(
        r#"{{"user":{id},"event":"page_view","path":"/item/{:06}","ms":{}}}"#,
        rng.below(1_000_000),
        rng.below(10_000)
    )
    .into_bytes();
    v.resize(VALUE_LEN, b' ');
    v
}

/// One uncompressed batch of ~100-byte records, as large as fits in `target`
/// bytes. Record `j` has timestamp `ts + j * ts_step`. Returns the bytes and
/// the record count.
fn build_batch(
    target: usize,
    rng: &mut Rng,
    key_space: u64,
    ts: i64,
    ts_step: i64,
) -> (Vec<u8>, u64) {
    let mut builder = BatchBuilder::new(Compression::None);
    let mut n = 0u64;
    while builder.uncompressed_size() + MAX_RECORD_LEN <= target {
        let id = rng.below(key_space);
        builder.append(
            ts + n as i64 * ts_step,
            Some(key(id).as_bytes()),
            Some(&value(id, rng)),
            &[],
        );
        n += 1;
    }
    (builder.build().expect("build batch"), n)
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("runnel-bench-")
        .tempdir()
        .expect("create temp dir")
}

/// A fresh log with one batch already appended (untimed): the first append
/// of a leader epoch writes and fsyncs the leader-epoch checkpoint, a
/// once-per-epoch cost that must not land in a timed loop.
fn fresh_log(dir: &Path, config: LogConfig, batch: &mut [u8]) -> Log {
    let mut log = Log::open(dir.join("bench-0"), config).expect("open log");
    log.append_as_leader(batch, 0).expect("priming append");
    log
}

fn segment_log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list log dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").len()
}

/// Writes every segment and index to the device (untimed), so later
/// benchmarks do not pay for the kernel writing this fixture back.
fn sync_dir_files(dir: &Path) {
    for entry in fs::read_dir(dir).expect("list log dir") {
        let path = entry.expect("dir entry").path();
        if path.is_file() {
            File::open(&path).expect("open").sync_all().expect("fsync");
        }
    }
}

// ---------------------------------------------------------------------------
// 1 + 2. Append throughput, page cache and fsync
// ---------------------------------------------------------------------------

/// Times `iters` appends of `batch` (fsync after each when `fsync`), cut into
/// chunks of at most `APPEND_CHUNK_BYTES`, each into a brand-new log.
fn time_log_appends(batch: &[u8], iters: u64, fsync: bool) -> Duration {
    let per_chunk = (APPEND_CHUNK_BYTES / batch.len() as u64).max(1);
    let mut buf = batch.to_vec();
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = per_chunk.min(iters - done);
        let dir = temp_dir();
        let mut log = fresh_log(dir.path(), LogConfig::default(), &mut buf);
        if fsync {
            log.flush().expect("flush");
        }
        let start = Instant::now();
        for _ in 0..n {
            black_box(log.append_as_leader(&mut buf, 0).expect("append"));
            if fsync {
                log.flush().expect("flush");
            }
        }
        total += start.elapsed();
        drop(log);
        drop(dir);
        done += n;
    }
    total
}

/// The same with `write_all` (+ `sync_data`) on a plain file; with `crc`,
/// each write is preceded by one CRC-32C pass over the batch (the check a
/// leader cannot skip), which makes the bound a fair one for the log.
fn time_file_writes(batch: &[u8], iters: u64, fsync: bool, crc: bool) -> Duration {
    let per_chunk = (APPEND_CHUNK_BYTES / batch.len() as u64).max(1);
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = per_chunk.min(iters - done);
        let dir = temp_dir();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("plain.log"))
            .expect("create file");
        if fsync {
            file.sync_all().expect("fsync");
        }
        let start = Instant::now();
        for _ in 0..n {
            if crc {
                black_box(crc32c::crc32c(&black_box(batch)[BATCH_CRC_FROM..]));
            }
            file.write_all(black_box(batch)).expect("write");
            if fsync {
                file.sync_data().expect("fdatasync");
            }
        }
        total += start.elapsed();
        drop(file);
        drop(dir);
        done += n;
    }
    total
}

fn append_batches() -> Vec<(&'static str, Vec<u8>, u64)> {
    let mut rng = Rng(1);
    APPEND_SIZES
        .iter()
        .map(|&(label, target)| {
            let (bytes, records) = build_batch(target, &mut rng, 1_000_000, T0, 1);
            (label, bytes, records)
        })
        .collect()
}

fn throughput(batch: &[u8], records: u64) -> Throughput {
    Throughput::ElementsAndBytes {
        elements: records,
        bytes: batch.len() as u64,
    }
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    for (label, batch, records) in append_batches() {
        group.throughput(throughput(&batch, records));
        group.bench_function(BenchmarkId::new("log", label), |b| {
            b.iter_custom(|iters| time_log_appends(&batch, iters, false));
        });
        group.bench_function(BenchmarkId::new("file", label), |b| {
            b.iter_custom(|iters| time_file_writes(&batch, iters, false, false));
        });
        group.bench_function(BenchmarkId::new("file_crc32c", label), |b| {
            b.iter_custom(|iters| time_file_writes(&batch, iters, false, true));
        });
    }
    group.finish();
}

fn bench_append_fsync(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_fsync");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (label, batch, records) in append_batches() {
        group.throughput(throughput(&batch, records));
        group.bench_function(BenchmarkId::new("log_flush", label), |b| {
            b.iter_custom(|iters| time_log_appends(&batch, iters, true));
        });
        group.bench_function(BenchmarkId::new("file_fdatasync", label), |b| {
            b.iter_custom(|iters| time_file_writes(&batch, iters, true, false));
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------
// 3. Sequential read
// ---------------------------------------------------------------------------

struct ReadFixture {
    _dir: TempDir,
    log: Log,
    /// The single segment file holding all of it.
    segment: PathBuf,
    bytes: u64,
}

fn read_fixture() -> ReadFixture {
    let dir = temp_dir();
    let (mut batch, _) = build_batch(16 * KIB, &mut Rng(2), 1_000_000, T0, 1);
    let mut log = fresh_log(dir.path(), LogConfig::default(), &mut batch);
    while (log.size_bytes() as usize) < READ_LOG_BYTES {
        log.append_as_leader(&mut batch, 0).expect("append");
    }
    log.flush().expect("flush");
    let files = segment_log_files(log.dir());
    assert_eq!(files.len(), 1, "the read log is one segment");
    let segment = files.into_iter().next().expect("one segment");
    let bytes = log.size_bytes();
    assert_eq!(bytes, file_len(&segment));
    ReadFixture {
        _dir: dir,
        log,
        segment,
        bytes,
    }
}

/// Reads the whole log; returns the bytes read. `validate` CRC-checks every
/// batch as a consumer would (`Batches`); otherwise only headers are walked.
fn read_log(log: &Log, validate: bool) -> u64 {
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut total = 0u64;
    while offset < end {
        let data = log.read(offset, READ_MAX_BYTES, None, true).expect("read");
        let mut next = offset;
        if validate {
            for batch in Batches::new(&data) {
                next = batch.expect("valid batch").header().next_offset();
            }
        } else {
            let mut pos = 0;
            while pos < data.len() {
                let header = BatchHeader::parse(&data[pos..]).expect("header");
                next = header.next_offset();
                pos += header.size();
            }
        }
        assert!(next > offset, "read made progress");
        total += data.len() as u64;
        offset = next;
    }
    total
}

fn read_file(path: &Path, buf: &mut [u8]) -> u64 {
    let file = File::open(path).expect("open");
    let mut pos = 0u64;
    loop {
        let n = file.read_at(buf, pos).expect("read");
        if n == 0 {
            break;
        }
        black_box(&buf[..n]);
        pos += n as u64;
    }
    pos
}

fn bench_read(c: &mut Criterion) {
    let fixture: OnceCell<ReadFixture> = OnceCell::new();
    let mut group = c.benchmark_group("read");
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Bytes(READ_LOG_BYTES as u64));
    group.bench_function(BenchmarkId::new("log", "1MiB"), |b| {
        let f = fixture.get_or_init(read_fixture);
        b.iter(|| assert_eq!(read_log(&f.log, false), f.bytes));
    });
    group.bench_function(BenchmarkId::new("log_crc_checked", "1MiB"), |b| {
        let f = fixture.get_or_init(read_fixture);
        b.iter(|| assert_eq!(read_log(&f.log, true), f.bytes));
    });
    group.bench_function(BenchmarkId::new("file", "1MiB"), |b| {
        let f = fixture.get_or_init(read_fixture);
        let mut buf = vec![0u8; READ_MAX_BYTES];
        b.iter(|| assert_eq!(read_file(&f.segment, &mut buf), f.bytes));
    });
    // What any reader that hands each chunk to its caller pays without
    // `unsafe`: a fresh zero-filled buffer per call (as `Log::read` does).
    group.bench_function(BenchmarkId::new("file_fresh_buffer", "1MiB"), |b| {
        let f = fixture.get_or_init(read_fixture);
        b.iter(|| assert_eq!(read_file_fresh(&f.segment), f.bytes));
    });
    group.finish();
}

fn read_file_fresh(path: &Path) -> u64 {
    let file = File::open(path).expect("open");
    let mut pos = 0u64;
    loop {
        let mut buf = vec![0u8; READ_MAX_BYTES];
        let n = file.read_at(&mut buf, pos).expect("read");
        if n == 0 {
            break;
        }
        buf.truncate(n);
        black_box(buf);
        pos += n as u64;
    }
    pos
}

// ---------------------------------------------------------------------------
// 4. Offset and timestamp lookups
// ---------------------------------------------------------------------------

struct LookupFixture {
    _dir: TempDir,
    log: Log,
    segments: Vec<PathBuf>,
    /// Random offsets / timestamps / (segment, position) to look up, cycled through.
    offsets: Vec<i64>,
    timestamps: Vec<i64>,
    positions: Vec<(usize, u64)>,
}

/// Timestamps grow by this much per record of the lookup log.
const LOOKUP_TS_STEP: i64 = 1;

fn lookup_fixture() -> LookupFixture {
    let dir = temp_dir();
    let mut config = LogConfig::default();
    config
        .set("segment.bytes", &(64 * MIB).to_string())
        .expect("segment.bytes");
    let mut rng = Rng(3);
    let mut log = Log::open(dir.path().join("bench-0"), config).expect("open log");
    let mut ts = T0;
    while (log.size_bytes() as usize) < READ_LOG_BYTES {
        let (mut batch, records) = build_batch(KIB, &mut rng, 1_000_000, ts, LOOKUP_TS_STEP);
        log.append_as_leader(&mut batch, 0).expect("append");
        ts += records as i64 * LOOKUP_TS_STEP;
    }
    log.flush().expect("flush");
    let segments = segment_log_files(log.dir());
    assert!(segments.len() >= 4, "several segments");
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let n = 1 << 14;
    let offsets = (0..n)
        .map(|_| start + rng.below((end - start) as u64) as i64)
        .collect();
    let timestamps = (0..n)
        .map(|_| T0 + rng.below((ts - T0) as u64) as i64)
        .collect();
    let positions = (0..n)
        .map(|_| {
            let s = rng.below(segments.len() as u64) as usize;
            let len = file_len(&segments[s]);
            (s, rng.below(len - KIB as u64))
        })
        .collect();
    LookupFixture {
        _dir: dir,
        log,
        segments,
        offsets,
        timestamps,
        positions,
    }
}

fn bench_lookup(c: &mut Criterion) {
    let fixture: OnceCell<LookupFixture> = OnceCell::new();
    let mut group = c.benchmark_group("lookup");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    group.bench_function("log_read_one_batch", |b| {
        let f = fixture.get_or_init(lookup_fixture);
        let mut i = 0usize;
        b.iter(|| {
            let offset = f.offsets[i % f.offsets.len()];
            i += 1;
            let data = f.log.read(offset, 1, None, true).expect("read");
            debug_assert!(BatchHeader::parse(&data).expect("batch").last_offset() >= offset);
            black_box(data)
        });
    });
    group.bench_function("log_offset_for_timestamp", |b| {
        let f = fixture.get_or_init(lookup_fixture);
        let mut i = 0usize;
        b.iter(|| {
            let ts = f.timestamps[i % f.timestamps.len()];
            i += 1;
            let found = f.log.offset_for_timestamp(ts).expect("lookup");
            debug_assert!(found.is_some_and(|(_, t)| t >= ts));
            black_box(found)
        });
    });
    group.bench_function("file_pread_1KiB", |b| {
        let f = fixture.get_or_init(lookup_fixture);
        let files: Vec<File> = f
            .segments
            .iter()
            .map(|p| File::open(p).expect("open"))
            .collect();
        let mut buf = vec![0u8; KIB];
        let mut i = 0usize;
        b.iter(|| {
            let (s, pos) = f.positions[i % f.positions.len()];
            i += 1;
            files[s].read_exact_at(&mut buf, pos).expect("read");
            black_box(&buf);
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------
// 5. Recovery
// ---------------------------------------------------------------------------

struct RecoveryFixture {
    _dir: TempDir,
    log_dir: PathBuf,
    bytes: u64,
}

fn recovery_fixture() -> RecoveryFixture {
    let dir = temp_dir();
    let (mut batch, _) = build_batch(16 * KIB, &mut Rng(4), 1_000_000, T0, 1);
    let mut log = fresh_log(dir.path(), LogConfig::default(), &mut batch);
    while (log.size_bytes() as usize) < RECOVERY_LOG_BYTES {
        log.append_as_leader(&mut batch, 0).expect("append");
    }
    let bytes = log.size_bytes();
    let log_dir = log.dir().to_owned();
    // A crash: no close, no flush, so no clean-shutdown marker and no
    // recovery point covering the data.
    drop(log);
    sync_dir_files(&log_dir);
    RecoveryFixture {
        _dir: dir,
        log_dir,
        bytes,
    }
}

/// Puts the directory back into its after-a-crash state: no recovery point,
/// no indexes, no clean-shutdown marker.
fn make_unclean(dir: &Path) {
    for entry in fs::read_dir(dir).expect("list log dir") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".index")
            || name.ends_with(".timeindex")
            || name == "recovery-point-checkpoint"
            || name == ".clean-shutdown"
        {
            fs::remove_file(&path).expect("remove");
        }
    }
}

fn bench_recovery(c: &mut Criterion) {
    let fixture: OnceCell<RecoveryFixture> = OnceCell::new();
    let mut group = c.benchmark_group("recovery");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(12))
        .throughput(Throughput::Bytes(RECOVERY_LOG_BYTES as u64));
    group.bench_function("log_open_unclean", |b| {
        let f = fixture.get_or_init(recovery_fixture);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                make_unclean(&f.log_dir);
                let start = Instant::now();
                let log = Log::open(&f.log_dir, LogConfig::default()).expect("open");
                total += start.elapsed();
                let report = log.open_report();
                assert!(!report.clean_shutdown);
                assert_eq!(report.recovered_bytes, f.bytes, "every byte scanned");
                assert_eq!(report.truncated_bytes, 0);
            }
            total
        });
    });
    group.bench_function("file_read_4MiB", |b| {
        let f = fixture.get_or_init(recovery_fixture);
        let files = segment_log_files(&f.log_dir);
        let mut buf = vec![0u8; 4 * MIB];
        b.iter(|| {
            let n: u64 = files.iter().map(|p| read_file(p, &mut buf)).sum();
            assert_eq!(n, f.bytes);
        });
    });
    group.bench_function("file_read_4MiB_crc32c", |b| {
        let f = fixture.get_or_init(recovery_fixture);
        let files = segment_log_files(&f.log_dir);
        let mut buf = vec![0u8; 4 * MIB];
        b.iter(|| {
            let mut crc = 0u32;
            for path in &files {
                let file = File::open(path).expect("open");
                let mut pos = 0u64;
                loop {
                    let n = file.read_at(&mut buf, pos).expect("read");
                    if n == 0 {
                        break;
                    }
                    crc = crc32c::crc32c_append(crc, &buf[..n]);
                    pos += n as u64;
                }
            }
            black_box(crc)
        });
    });
    // A clean open reads only the active segment's tail: report opens/s.
    group.throughput(Throughput::Elements(1));
    group.bench_function("log_open_clean", |b| {
        let f = fixture.get_or_init(recovery_fixture);
        // Leave a clean shutdown behind.
        make_unclean(&f.log_dir);
        Log::open(&f.log_dir, LogConfig::default())
            .expect("open")
            .close()
            .expect("close");
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let log = Log::open(&f.log_dir, LogConfig::default()).expect("open");
                total += start.elapsed();
                assert!(log.open_report().clean_shutdown);
                assert_eq!(log.open_report().recovered_bytes, 0);
                log.close().expect("close");
            }
            total
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------
// 6. Compaction
// ---------------------------------------------------------------------------

struct CompactFixture {
    _dir: TempDir,
    template: PathBuf,
    config: LogConfig,
    /// Bytes of the cleanable (closed) segments.
    input_bytes: u64,
}

fn compact_config() -> LogConfig {
    let mut config = LogConfig::default();
    config.set("cleanup.policy", "compact").expect("policy");
    config
        .set("segment.bytes", &(8 * MIB).to_string())
        .expect("segment.bytes");
    config
}

fn compact_fixture() -> CompactFixture {
    let dir = temp_dir();
    let template = dir.path().join("compact-0");
    let config = compact_config();
    let mut log = Log::open(&template, config.clone()).expect("open");
    let mut rng = Rng(5);
    let mut ts = T0;
    while (log.size_bytes() as usize) < COMPACT_LOG_BYTES {
        let (mut batch, records) = build_batch(16 * KIB, &mut rng, COMPACT_KEYS, ts, 1);
        log.append_as_leader(&mut batch, 0).expect("append");
        ts += records as i64;
    }
    // Everything closed, so everything is cleanable.
    log.roll().expect("roll");
    let input_bytes = log.size_bytes();
    log.close().expect("close");
    sync_dir_files(&template);
    CompactFixture {
        _dir: dir,
        template,
        config,
        input_bytes,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("list") {
        let entry = entry.expect("dir entry");
        fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

fn bench_compaction(c: &mut Criterion) {
    let fixture: OnceCell<CompactFixture> = OnceCell::new();
    let mut group = c.benchmark_group("compaction");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(COMPACT_LOG_BYTES as u64));
    group.bench_function("log_clean_10k_keys", |b| {
        let f = fixture.get_or_init(compact_fixture);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = temp_dir();
                let copy = dir.path().join("compact-0");
                copy_dir(&f.template, &copy);
                let mut log = Log::open(&copy, f.config.clone()).expect("open");
                let start = Instant::now();
                let stats = log
                    .clean(&CleanerConfig::default())
                    .expect("clean")
                    .expect("something to clean");
                total += start.elapsed();
                assert_eq!(
                    stats.bytes_read, f.input_bytes,
                    "every closed segment cleaned"
                );
                assert!(stats.records_retained <= COMPACT_KEYS);
                drop(log);
            }
            total
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------
// 7. Transactions: read_committed against read_uncommitted
// ---------------------------------------------------------------------------

/// Size of the transactional log.
const TXN_LOG_BYTES: usize = 128 * MIB;

struct TxnFixture {
    _dir: TempDir,
    log: Log,
    bytes: u64,
}

fn txn_fixture() -> TxnFixture {
    let dir = temp_dir();
    let mut log = Log::open(dir.path().join("txn-0"), LogConfig::default()).expect("open");
    let mut rng = Rng(7);
    let mut seqs = [0i32; 10];
    let mut txn = 0u64;
    while (log.size_bytes() as usize) < TXN_LOG_BYTES {
        let pid = (txn % 10) as usize;
        for _ in 0..4 {
            let mut builder = BatchBuilder::new(Compression::None)
                .producer(pid as i64 + 1, 0, seqs[pid])
                .transactional(true);
            let mut n = 0;
            while builder.uncompressed_size() + MAX_RECORD_LEN <= 16 * KIB {
                let id = rng.below(1_000_000);
                builder.append(
                    T0,
                    Some(key(id).as_bytes()),
                    Some(&value(id, &mut rng)),
                    &[],
                );
                n += 1;
            }
            let mut batch = builder.build().expect("build batch");
            log.append_as_leader(&mut batch, 0).expect("append");
            seqs[pid] += n;
        }
        let control_type = if txn.is_multiple_of(10) {
            ControlType::Abort
        } else {
            ControlType::Commit
        };
        let marker = EndTxnMarker {
            control_type,
            coordinator_epoch: 0,
        };
        log.append_end_txn_marker(pid as i64 + 1, 0, marker, 0)
            .expect("marker");
        txn += 1;
    }
    log.flush().expect("flush");
    let end = log.log_end_offset();
    log.update_high_watermark(end);
    let bytes = log.size_bytes();
    TxnFixture {
        _dir: dir,
        log,
        bytes,
    }
}

/// Reads the whole log as a consumer at one isolation level would fetch it;
/// returns the bytes read and the aborted transactions named.
fn read_txn_log(log: &Log, committed: bool) -> (u64, usize) {
    let hw = log.log_end_offset();
    let end = if committed {
        log.last_stable_offset(hw)
    } else {
        hw
    };
    let (mut offset, mut total, mut aborted) = (log.log_start_offset(), 0u64, 0usize);
    while offset < end {
        let data = log
            .read(offset, READ_MAX_BYTES, Some(end), true)
            .expect("read");
        let mut next = offset;
        let mut pos = 0;
        while pos < data.len() {
            let header = BatchHeader::parse(&data[pos..]).expect("header");
            next = header.next_offset();
            pos += header.size();
        }
        if committed {
            aborted += black_box(log.aborted_transactions(offset, next)).len();
        }
        total += data.len() as u64;
        offset = next;
    }
    (total, aborted)
}

fn bench_transactions(c: &mut Criterion) {
    let fixture: OnceCell<TxnFixture> = OnceCell::new();
    let mut group = c.benchmark_group("transactions");
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Bytes(TXN_LOG_BYTES as u64));
    group.bench_function(BenchmarkId::new("read_uncommitted", "1MiB"), |b| {
        let f = fixture.get_or_init(txn_fixture);
        b.iter(|| assert_eq!(read_txn_log(&f.log, false).0, f.bytes));
    });
    group.bench_function(BenchmarkId::new("read_committed", "1MiB"), |b| {
        let f = fixture.get_or_init(txn_fixture);
        b.iter(|| {
            let (bytes, aborted) = read_txn_log(&f.log, true);
            assert_eq!(bytes, f.bytes);
            assert!(aborted > 0, "aborted transactions are named");
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_append,
    bench_append_fsync,
    bench_read,
    bench_lookup,
    bench_recovery,
    bench_compaction,
    bench_transactions
);
criterion_main!(benches);
