//! Behaviour of one partition log: appends, reads, lookups, rolling,
//! truncation, retention, flushing, epochs and bad input.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use runnel_log::{Log, LogConfig, LogError, ManualClock};
use runnel_records::batch::{
    BatchBuilder, BatchError, Batches, Compression, Header, RecordBatch, RecordBatchMut,
    TimestampType,
};

#[test]
fn appends_get_consecutive_offsets_and_read_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    let mut expected = Vec::new();
    let mut next = 0;
    for (i, codec) in Compression::ALL.iter().cycle().take(20).enumerate() {
        let n = i as u64 % 4 + 1;
        // Two batches in one append, as a produce request may carry.
        let mut bytes = batch_with(*codec, next, n, 50, T0 + i as i64);
        bytes.extend(batch_with(Compression::None, next + n, 1, 10, T0));
        let info = log.append_as_leader(&mut bytes, 0).unwrap();
        assert_eq!(info.first_offset, next as i64);
        assert_eq!(info.last_offset, (next + n) as i64);
        assert_eq!(info.record_count, n + 1);
        assert_eq!(info.batch_count, 2);
        next += n + 1;
        expected.extend_from_slice(&bytes);
    }
    assert_eq!(log.log_end_offset(), next as i64);
    assert_eq!(read_all_bytes(&log), expected);
    let offsets: Vec<i64> = read_all(&log).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..next as i64).collect::<Vec<_>>());
}

#[test]
fn reads_return_whole_batches_within_limits() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    let mut sizes = Vec::new();
    for i in 0..10u64 {
        let mut b = batch(i * 5, 5, 100, T0);
        sizes.push(b.len());
        log.append_as_leader(&mut b, 0).unwrap();
    }
    // An offset inside a batch returns the whole batch holding it.
    let data = log.read(7, 1 << 20, None, true).unwrap();
    let first = RecordBatch::parse(&data).unwrap().0;
    assert_eq!(first.header().base_offset, 5);
    // max_bytes keeps to whole batches.
    let data = log.read(0, sizes[0] + sizes[1] + 10, None, true).unwrap();
    assert_eq!(data.len(), sizes[0] + sizes[1]);
    assert_eq!(Batches::new(&data).count(), 2);
    // A batch larger than max_bytes comes whole when min_one is set, not otherwise.
    assert_eq!(log.read(0, 10, None, true).unwrap().len(), sizes[0]);
    assert!(log.read(0, 10, None, false).unwrap().is_empty());
    // The upper bound (high watermark) excludes any batch that reaches it.
    let data = log.read(0, 1 << 20, Some(12), true).unwrap();
    assert_eq!(Batches::new(&data).count(), 2, "batches 0-4 and 5-9 only");
    assert!(log.read(10, 1 << 20, Some(12), true).unwrap().is_empty());
    // The log end is readable (empty); past it is out of range, with the range named.
    assert!(log.read(50, 1 << 20, None, true).unwrap().is_empty());
    let err = log.read(51, 100, None, true).unwrap_err();
    assert!(matches!(
        err,
        LogError::OffsetOutOfRange {
            offset: 51,
            log_start: 0,
            log_end: 50
        }
    ));
    assert!(err.to_string().contains("log start 0, log end 50"), "{err}");
    assert!(matches!(
        log.read(-1, 100, None, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn segments_roll_on_size_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), small_segments(4096), &clock);
    fill(&mut log, 100, 3, 100, 0);
    let bases = log.segment_base_offsets();
    assert_eq!(
        bases.len(),
        10,
        "about ten 400-byte batches per 4 KiB segment: {bases:?}"
    );
    assert_eq!(bases[0], 0);
    let names = files(dir.path());
    // The active segment's index entries are still only in memory.
    for base in &bases[..bases.len() - 1] {
        for ext in ["log", "index", "timeindex"] {
            assert!(
                names.contains(&format!("{base:020}.{ext}")),
                "{base} {ext}: {names:?}"
            );
        }
    }
    for base in &bases[..bases.len() - 1] {
        let size = std::fs::metadata(dir.path().join(format!("{base:020}.log")))
            .unwrap()
            .len();
        assert!(size <= 4096, "segment {base} is {size} bytes");
    }
    let offsets: Vec<i64> = read_all(&log).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..300).collect::<Vec<_>>());
    // Every offset is found, whichever segment and index entry it falls after.
    for offset in 0..300 {
        let data = log.read(offset, 1, None, true).unwrap();
        let h = *RecordBatch::parse(&data).unwrap().0.header();
        assert!(
            h.base_offset <= offset && offset <= h.last_offset(),
            "{offset}"
        );
    }
}

#[test]
fn segments_roll_on_age_and_on_a_full_index() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let config = LogConfig {
        segment_ms: 60_000,
        ..LogConfig::default()
    };
    let mut log = open(&dir.path().join("age"), config, &clock);
    log.append_as_leader(&mut batch(0, 1, 10, T0), 0).unwrap();
    log.append_as_leader(&mut batch(1, 1, 10, T0 + 59_000), 0)
        .unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0]);
    // Kafka measures segment age by record time: the first batch's timestamp.
    log.append_as_leader(&mut batch(2, 1, 10, T0 + 60_001), 0)
        .unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);

    let mut config = small_segments(1 << 30);
    config.index_interval_bytes = 0; // an entry per batch
    config.segment_index_bytes = 8 * 4; // four entries
    let mut log = open(&dir.path().join("index"), config, &clock);
    for i in 0..10u64 {
        log.append_as_leader(&mut batch(i, 1, 10, T0), 0).unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 4, 8]);
}

#[test]
fn offsets_by_timestamp_follow_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), small_segments(2048), &clock);
    // Timestamps rise by 10 per record, with one out-of-order record per batch.
    for i in 0..60u64 {
        let mut b = BatchBuilder::new(Compression::Lz4);
        for j in 0..4u64 {
            let n = i * 4 + j;
            let ts = if j == 2 {
                T0 + n as i64 * 10 - 25
            } else {
                T0 + n as i64 * 10
            };
            b.append(ts, Some(format!("k{n}").as_bytes()), Some(&[0u8; 100]), &[]);
        }
        log.append_as_leader(&mut b.build().unwrap(), 0).unwrap();
    }
    assert!(log.segment_base_offsets().len() > 3);
    let records = read_all(&log);
    for target in [
        T0 - 100,
        T0,
        T0 + 5,
        T0 + 15,
        T0 + 1000,
        T0 + 1001,
        T0 + 2395,
        T0 + 2390,
    ] {
        let expected = records
            .iter()
            .find(|r| r.timestamp >= target)
            .map(|r| (r.offset, r.timestamp));
        assert_eq!(
            log.offset_for_timestamp(target).unwrap(),
            expected,
            "target {}",
            target - T0
        );
    }
    assert_eq!(log.offset_for_timestamp(T0 + 100_000).unwrap(), None);
    let max = records
        .iter()
        .max_by_key(|r| (r.timestamp, -r.offset))
        .unwrap();
    assert_eq!(
        log.max_timestamp_offset().unwrap(),
        Some((max.offset, max.timestamp))
    );
    // Still right after a restart, when indexes come from disk.
    log.close().unwrap();
    let log = open(dir.path(), small_segments(2048), &clock);
    for target in [T0, T0 + 15, T0 + 1001, T0 + 2390] {
        let expected = records
            .iter()
            .find(|r| r.timestamp >= target)
            .map(|r| (r.offset, r.timestamp));
        assert_eq!(
            log.offset_for_timestamp(target).unwrap(),
            expected,
            "after reopen {}",
            target - T0
        );
    }
}

#[test]
fn log_append_time_is_stamped_by_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 5_000);
    let mut config = LogConfig::default();
    config
        .set("message.timestamp.type", "LogAppendTime")
        .unwrap();
    let mut log = open(dir.path(), config, &clock);
    let info = log
        .append_as_leader(&mut batch_with(Compression::Gzip, 0, 3, 10, T0), 0)
        .unwrap();
    assert_eq!(info.log_append_time, Some(T0 + 5_000));
    let data = log.read(0, 1 << 20, None, true).unwrap();
    let (b, _) = RecordBatch::parse(&data).unwrap(); // CRC recomputed
    assert_eq!(b.header().timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(b.header().max_timestamp, T0 + 5_000);
    assert!(
        b.records()
            .unwrap()
            .all(|r| r.unwrap().timestamp == T0 + 5_000)
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 5_000).unwrap(),
        Some((0, T0 + 5_000))
    );
}

/// A short name for the kind of a refused append.
fn kind(err: &LogError) -> &'static str {
    match err {
        LogError::InvalidBatch { source, .. } => match source {
            BatchError::CrcMismatch { .. } => "crc",
            BatchError::UnsupportedMagic { magic: 1 } => "magic",
            BatchError::InvalidLength { .. } => "length",
            BatchError::Truncated { .. } => "truncated",
            BatchError::InvalidRecordCount { .. } => "count",
            _ => "other batch error",
        },
        LogError::EmptyAppend => "empty",
        LogError::RecordTooLarge { max: 2000, .. } => "too large",
        _ => "other",
    }
}

/// Sizes of every file in the directory, to prove a refused append wrote nothing.
fn snapshot(dir: &std::path::Path) -> Vec<(String, u64)> {
    files(dir)
        .into_iter()
        .map(|n| {
            let len = std::fs::metadata(dir.join(&n)).unwrap().len();
            (n, len)
        })
        .collect()
}

#[test]
fn bad_appends_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let config = LogConfig {
        max_message_bytes: 2000,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config, &clock);
    log.append_as_leader(&mut batch(0, 2, 10, T0), 0).unwrap();
    let before = snapshot(dir.path());

    let good = batch(0, 1, 10, T0);
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let mut bad_magic = good.clone();
    bad_magic[16] = 1;
    let mut short_length = good.clone();
    short_length[8..12].copy_from_slice(&40i32.to_be_bytes());
    let mut long_length = good.clone();
    long_length[8..12].copy_from_slice(&(good.len() as i32).to_be_bytes());
    let mut miscounted = good.clone();
    miscounted[23..27].copy_from_slice(&3i32.to_be_bytes()); // last offset delta 3 for 1 record
    let crc = crc32c::crc32c(&miscounted[21..]);
    miscounted[17..21].copy_from_slice(&crc.to_be_bytes());
    let mut second_bad = good.clone();
    second_bad.extend_from_slice(&flipped);
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0, 0, 0]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("crc", flipped),
        ("magic", bad_magic),
        ("length", short_length),
        ("truncated", long_length),
        ("count", miscounted),
        ("crc", second_bad),
        ("truncated", trailing),
        ("empty", Vec::new()),
        ("too large", batch(0, 30, 100, T0)),
    ];
    for (expected, mut bytes) in cases {
        let err = log.append_as_leader(&mut bytes, 0).unwrap_err();
        assert_eq!(kind(&err), expected, "{err}");
        let name = expected;
        assert_eq!(log.log_end_offset(), 2, "{name}");
        assert_eq!(snapshot(dir.path()), before, "{name}: files changed");
    }
    assert_eq!(kv(&log).len(), 2);
}

#[test]
fn compacted_logs_refuse_keyless_records() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut config = LogConfig::default();
    config.set("cleanup.policy", "compact").unwrap();
    let mut log = open(dir.path(), config, &clock);
    let mut b = BatchBuilder::new(Compression::Snappy);
    b.append(T0, Some(b"k"), Some(b"v"), &[]);
    b.append(T0, None, Some(b"no key"), &[]);
    let err = log
        .append_as_leader(&mut b.build().unwrap(), 0)
        .unwrap_err();
    match &err {
        LogError::RejectedRecords {
            errors,
            invalid_timestamp: false,
        } => {
            assert_eq!(errors.len(), 1, "{err}");
            assert_eq!(errors[0].batch_index, 1, "{err}");
        }
        other => panic!("expected the keyless record named: {other}"),
    }
    assert!(
        err.to_string()
            .starts_with("One or more records have been rejected due to 1 record errors in total"),
        "{err}"
    );
    assert_eq!(log.log_end_offset(), 0);
}

/// A batch whose header says `max` (what some producers leave at -1).
fn with_header_max_timestamp(mut bytes: Vec<u8>, max: i64) -> Vec<u8> {
    let (mut batch, _) = RecordBatchMut::new(&mut bytes).unwrap();
    batch.set_max_timestamp(max);
    bytes
}

#[test]
fn the_max_timestamp_is_recomputed_from_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    let mut b = BatchBuilder::new(Compression::None);
    b.append(T0 - 3000, Some(b"a"), Some(b"1"), &[]);
    b.append(T0 - 1000, Some(b"b"), Some(b"2"), &[]);
    b.append(T0 - 2000, Some(b"c"), Some(b"3"), &[]);
    let built = b.build().unwrap();
    for claimed in [-1, T0 - 5000, T0 + 5000] {
        let mut bytes = with_header_max_timestamp(built.clone(), claimed);
        let info = log.append_as_leader(&mut bytes, 0).unwrap();
        assert_eq!(info.max_timestamp, T0 - 1000, "claimed {claimed}");
    }
    // Stored headers carry the real figure (with a valid CRC), and lookups by
    // time find the data.
    for batch in Batches::new(&read_all_bytes(&log)) {
        assert_eq!(batch.unwrap().header().max_timestamp, T0 - 1000);
    }
    assert_eq!(
        log.offset_for_timestamp(T0 - 1500).unwrap(),
        Some((1, T0 - 1000))
    );
}

#[test]
fn create_times_outside_the_allowed_window_are_refused_by_record() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut config = LogConfig::default();
    config
        .set("message.timestamp.before.max.ms", "60000")
        .unwrap();
    let mut log = open(dir.path(), config, &clock);
    let mut b = BatchBuilder::new(Compression::Lz4);
    b.append(T0, Some(b"k"), Some(b"now"), &[]);
    b.append(T0 - 120_000, Some(b"k"), Some(b"too old"), &[]);
    b.append(T0 + 3_600_000, Some(b"k"), Some(b"an hour ahead"), &[]);
    b.append(T0 + 3_600_001, Some(b"k"), Some(b"too far ahead"), &[]);
    let err = log
        .append_as_leader(&mut b.build().unwrap(), 0)
        .unwrap_err();
    match &err {
        LogError::RejectedRecords {
            errors,
            invalid_timestamp: true,
        } => {
            let named: Vec<i32> = errors.iter().map(|e| e.batch_index).collect();
            assert_eq!(named, [1, 3], "{errors:?}");
        }
        other => panic!("expected INVALID_TIMESTAMP by record: {other}"),
    }
    assert_eq!(
        err.to_string(),
        "One or more records have been rejected due to invalid timestamp"
    );
    assert_eq!(log.log_end_offset(), 0);
    // LogAppendTime logs take any create time: the broker's time replaces it.
    let mut config = LogConfig::default();
    config
        .set("message.timestamp.type", "LogAppendTime")
        .unwrap();
    log.set_config(config);
    let mut b = BatchBuilder::new(Compression::None);
    b.append(T0 + 10 * 3_600_000, Some(b"k"), Some(b"v"), &[]);
    log.append_as_leader(&mut b.build().unwrap(), 0).unwrap();
}

#[test]
fn producers_may_not_write_control_batches_or_skip_offset_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    let mut control = BatchBuilder::new(Compression::None).control(true);
    control.append(T0, Some(b"\0\0\0\0"), Some(b"\0\0\0\0\0\0"), &[]);
    let err = log
        .append_as_leader(&mut control.build().unwrap(), 0)
        .unwrap_err();
    assert!(
        matches!(err, LogError::ControlBatchFromProducer { position: 0 }),
        "{err}"
    );
    let mut gappy = BatchBuilder::new(Compression::None).last_offset_delta(1);
    gappy.append_with_offset_delta(1, T0, Some(b"k"), Some(b"v"), &[]);
    gappy.append_with_offset_delta(2, T0, Some(b"k"), Some(b"v"), &[]);
    let mut bytes = gappy.build().unwrap();
    let err = log.append_as_leader(&mut bytes, 0).unwrap_err();
    assert!(matches!(err, LogError::InvalidBatch { .. }), "{err}");
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn the_topic_compression_type_recompresses_other_codecs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut config = LogConfig::default();
    config.set("compression.type", "zstd").unwrap();
    let mut log = open(dir.path(), config, &clock);
    let mut idempotent = BatchBuilder::new(Compression::Gzip).producer(7, 0, 0);
    for i in 0..50 {
        idempotent.append(
            T0 + i,
            Some(format!("k{i}").as_bytes()),
            Some(b"value value value"),
            &[Header::new("h", Some("x"))],
        );
    }
    let mut first = idempotent.build().unwrap();
    let expected: Vec<_> = RecordBatch::parse(&first)
        .unwrap()
        .0
        .records()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    log.append_as_leader(&mut first, 0).unwrap();
    let mut plain = batch_with(Compression::None, 0, 10, 30, T0);
    log.append_as_leader(&mut plain, 0).unwrap();
    let stored = read_all_bytes(&log);
    let batches: Vec<_> = Batches::new(&stored).map(Result::unwrap).collect();
    assert_eq!(batches.len(), 2);
    for b in &batches {
        assert_eq!(b.header().compression().unwrap(), Compression::Zstd);
    }
    let h = batches[0].header();
    assert_eq!(
        (
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.max_timestamp
        ),
        (7, 0, 0, T0 + 49)
    );
    let got: Vec<_> = batches[0].records().unwrap().map(Result::unwrap).collect();
    assert_eq!(got, expected);
    assert_eq!(log.producer(7).unwrap().last_seq(), Some(49));
    assert_eq!(log.log_end_offset(), 60);

    // `uncompressed` stores plain batches; `producer` keeps what came.
    let mut config = LogConfig::default();
    config.set("compression.type", "uncompressed").unwrap();
    log.set_config(config);
    let mut lz4 = batch_with(Compression::Lz4, 0, 5, 30, T0);
    log.append_as_leader(&mut lz4, 0).unwrap();
    log.set_config(LogConfig::default());
    let mut snappy = batch_with(Compression::Snappy, 0, 5, 30, T0);
    log.append_as_leader(&mut snappy, 0).unwrap();
    let stored = read_all_bytes(&log);
    let codecs: Vec<_> = Batches::new(&stored)
        .map(|b| b.unwrap().header().compression().unwrap())
        .collect();
    assert_eq!(
        codecs,
        [
            Compression::Zstd,
            Compression::Zstd,
            Compression::None,
            Compression::Snappy
        ]
    );
}

#[test]
fn truncation_removes_whole_batches_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), small_segments(1024), &clock);
    for i in 0..40u64 {
        log.append_as_leader(&mut batch(i * 2, 2, 60, T0 + i as i64), (i / 10) as i32)
            .unwrap();
    }
    let segments_before = log.segment_base_offsets().len();
    assert_eq!(log.leader_epochs().latest_epoch(), Some(3));
    // Offset 31 is inside batch 30-31: the whole batch goes.
    log.truncate_to(31).unwrap();
    assert_eq!(log.log_end_offset(), 30);
    assert!(log.segment_base_offsets().len() < segments_before);
    assert_eq!(
        log.leader_epochs().latest_epoch(),
        Some(1),
        "epoch 2 started at 40, epoch 3 at 60"
    );
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 30)));
    let info = log.append_as_leader(&mut batch(0, 3, 10, T0), 5).unwrap();
    assert_eq!(info.first_offset, 30);
    let offsets: Vec<i64> = read_all(&log).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..33).collect::<Vec<_>>());
    assert_eq!(log.end_offset_for_epoch(1), Some((1, 30)));
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 33)));
    // Truncating at or past the end does nothing.
    log.truncate_to(33).unwrap();
    assert_eq!(log.log_end_offset(), 33);

    // Unclean restart: the truncation stuck.
    drop(log);
    let mut log = open(dir.path(), small_segments(1024), &clock);
    assert_eq!(log.log_end_offset(), 33);
    assert_eq!(read_all(&log).len(), 33);
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 33)));

    // Below the log start, the log restarts empty at the target.
    log.advance_log_start_offset(10).unwrap();
    log.truncate_to(4).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (4, 4));
    assert_eq!(log.segment_base_offsets(), vec![4]);
    assert_eq!(
        log.append_as_leader(&mut batch(0, 1, 1, T0), 6)
            .unwrap()
            .first_offset,
        4
    );
}

#[test]
fn log_start_offset_advances_deletes_segments_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), small_segments(1024), &clock);
    fill(&mut log, 40, 2, 60, 0);
    let bases = log.segment_base_offsets();
    let target = bases[3] + 1;
    assert!(log.advance_log_start_offset(target).unwrap());
    assert!(
        !log.advance_log_start_offset(target - 1).unwrap(),
        "never moves back"
    );
    assert_eq!(log.log_start_offset(), target);
    assert_eq!(log.segment_base_offsets()[0], bases[3]);
    assert!(matches!(
        log.read(target - 1, 100, None, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(!log.read(target, 100, None, true).unwrap().is_empty());
    assert!(matches!(
        log.advance_log_start_offset(81),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let log = open(dir.path(), small_segments(1024), &clock);
    assert_eq!(log.log_start_offset(), target);
    assert_eq!(
        read_all(&log).first().unwrap().offset,
        target - 1,
        "batch holding the start"
    );
}

#[test]
fn retention_deletes_old_closed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut config = small_segments(1024);
    config.retention_ms = 60_000;
    let mut log = open(dir.path(), config.clone(), &clock);
    fill(&mut log, 40, 2, 60, 1000);
    let bases = log.segment_base_offsets();
    let end = log.log_end_offset();
    // Nothing is old yet.
    assert_eq!(log.delete_old_segments(end).unwrap(), 0);
    // At T0 + 85s, segments whose newest record is before T0 + 25s are expired.
    clock.set(T0 + 85_000);
    let deleted = log.delete_old_segments(end).unwrap();
    assert!(deleted > 0);
    let first = read_all(&log).first().unwrap().timestamp;
    assert!(
        (T0 + 20_000..=T0 + 26_000).contains(&first),
        "first kept record at {}",
        first - T0
    );
    assert_eq!(log.log_start_offset(), log.segment_base_offsets()[0]);
    // The high watermark bounds retention: nothing at or above it goes.
    clock.set(T0 + 10_000_000);
    let hw = bases[bases.len() - 3];
    log.delete_old_segments(hw).unwrap();
    assert_eq!(log.segment_base_offsets().len(), 3);
    // Never the active segment, even when everything is expired.
    log.delete_old_segments(end).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![*bases.last().unwrap()]);
    assert_eq!(log.log_end_offset(), end);

    // retention.bytes: as in Kafka, a segment goes only if what remains is
    // still at least retention.bytes, so the log ends within one segment of it.
    let mut config = small_segments(1024);
    config.retention_bytes = 3000;
    let mut log = open(&dir.path().join("bytes"), config, &clock);
    fill(&mut log, 40, 2, 60, 0);
    log.delete_old_segments(log.log_end_offset()).unwrap();
    assert!(log.size_bytes() >= 3000, "{}", log.size_bytes());
    assert!(log.size_bytes() < 3000 + 1024, "{}", log.size_bytes());

    // cleanup.policy=compact alone never deletes by age.
    let mut config = small_segments(1024);
    config.retention_ms = 1;
    config.set("cleanup.policy", "compact").unwrap();
    let mut log = open(&dir.path().join("compact"), config, &clock);
    fill(&mut log, 20, 2, 60, 0);
    assert_eq!(log.delete_old_segments(log.log_end_offset()).unwrap(), 0);
}

#[test]
fn flush_policy_moves_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    // Default: the page cache decides; nothing is fsynced by appends.
    let mut log = open(&dir.path().join("default"), LogConfig::default(), &clock);
    log.append_as_leader(&mut batch(0, 5, 10, T0), 0).unwrap();
    assert_eq!(log.recovery_point(), 0);
    clock.advance(1_000_000);
    assert!(!log.maybe_flush().unwrap());
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), 5);

    let config = LogConfig {
        flush_messages: 3,
        ..LogConfig::default()
    };
    let mut log = open(&dir.path().join("messages"), config, &clock);
    log.append_as_leader(&mut batch(0, 2, 10, T0), 0).unwrap();
    assert_eq!(log.recovery_point(), 0);
    log.append_as_leader(&mut batch(2, 1, 10, T0), 0).unwrap();
    assert_eq!(log.recovery_point(), 3);

    let config = LogConfig {
        flush_ms: 500,
        ..LogConfig::default()
    };
    let mut log = open(&dir.path().join("ms"), config, &clock);
    log.append_as_leader(&mut batch(0, 2, 10, T0), 0).unwrap();
    clock.advance(499);
    assert!(!log.maybe_flush().unwrap());
    clock.advance(1);
    assert!(log.maybe_flush().unwrap());
    assert_eq!(log.recovery_point(), 2);
    assert!(!log.maybe_flush().unwrap(), "nothing new to flush");
}

#[test]
fn followers_keep_leader_offsets_and_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut leader = open(&dir.path().join("leader"), LogConfig::default(), &clock);
    for epoch in [1, 1, 4, 4, 7] {
        leader
            .append_as_leader(&mut batch(0, 3, 20, T0), epoch)
            .unwrap();
    }
    let data = leader.read(0, 1 << 20, None, true).unwrap();
    let mut follower = open(&dir.path().join("follower"), LogConfig::default(), &clock);
    follower.append_as_follower(&data).unwrap();
    assert_eq!(read_all_bytes(&follower), read_all_bytes(&leader));
    assert_eq!(
        follower.leader_epochs().entries(),
        leader.leader_epochs().entries()
    );
    assert_eq!(follower.end_offset_for_epoch(4), Some((4, 12)));
    // Replaying old data is refused; a gap (a compacted leader) is fine.
    assert!(matches!(
        follower.append_as_follower(&data),
        Err(LogError::NonMonotonicOffset {
            offset: 0,
            log_end: 15
        })
    ));
    let gap = BatchBuilder::new(Compression::None)
        .base_offset(20)
        .partition_leader_epoch(7);
    let mut gap = gap;
    gap.append(T0, Some(b"k"), Some(b"v"), &[]);
    follower.append_as_follower(&gap.build().unwrap()).unwrap();
    assert_eq!(follower.log_end_offset(), 21);
    assert_eq!(
        follower.read(16, 1 << 20, None, true).unwrap().len(),
        follower.read(20, 1 << 20, None, true).unwrap().len()
    );
}

#[test]
fn an_empty_follower_starts_at_the_leaders_first_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    let mut b = BatchBuilder::new(Compression::None)
        .base_offset(1000)
        .partition_leader_epoch(2);
    b.append(T0, Some(b"k"), Some(b"v"), &[]);
    log.append_as_follower(&b.build().unwrap()).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![1000]);
    assert_eq!(log.log_end_offset(), 1001);
    assert_eq!(log.leader_epochs().entries()[0].start_offset, 1000);
}

#[test]
fn leader_epochs_are_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    log.append_as_leader(&mut batch(0, 2, 1, T0), 0).unwrap();
    log.assign_leader_epoch(3).unwrap(); // new leader, no data yet
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 2)));
    log.append_as_leader(&mut batch(0, 2, 1, T0), 3).unwrap();
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 4)));
    assert_eq!(log.end_offset_for_epoch(2), Some((0, 2)));
    // A crash before any flush: the new leader's epoch is in its batches.
    drop(log);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 4)));
    assert_eq!(log.end_offset_for_epoch(2), Some((0, 2)));
    log.flush().unwrap();
    let text = std::fs::read_to_string(dir.path().join("leader-epoch-checkpoint")).unwrap();
    assert_eq!(text, "0\n2\n0 0\n3 2\n");
    drop(log);
    let log = open(dir.path(), LogConfig::default(), &clock);
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 4)));
}

#[test]
fn clean_shutdown_skips_recovery_and_unclean_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), small_segments(2048), &clock);
    for i in 0..30u64 {
        log.append_as_leader(&mut batch(i, 1, 200, T0), 0).unwrap();
    }
    let bytes = read_all_bytes(&log);
    log.close().unwrap();
    assert!(dir.path().join(".clean-shutdown").exists());
    let mut log = open(dir.path(), small_segments(2048), &clock);
    assert!(
        !dir.path().join(".clean-shutdown").exists(),
        "marker consumed on open"
    );
    let report = log.open_report().clone();
    assert!(report.clean_shutdown);
    assert_eq!(report.recovered_segments, 0);
    assert_eq!(read_all_bytes(&log), bytes);

    // A crash after more appends: only segments past the recovery point are scanned.
    let segments = log.segment_base_offsets().len();
    for i in 30..40u64 {
        log.append_as_leader(&mut batch(i, 1, 200, T0), 0).unwrap();
    }
    let bytes = read_all_bytes(&log);
    drop(log);
    let log = open(dir.path(), small_segments(2048), &clock);
    let report = log.open_report();
    assert!(!report.clean_shutdown);
    assert!(
        report.recovered_segments >= 1
            && report.recovered_segments <= log.segment_base_offsets().len() - segments + 1,
        "{report:?}"
    );
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(read_all_bytes(&log), bytes);
    // Nothing was cut, so nothing was synced: the recovery point stays
    // until the next flush (a crash before it scans the same again).
    assert_eq!(log.recovery_point(), 30);
    let mut log = log;
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), 40);
}

#[test]
fn missing_or_corrupt_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), small_segments(8192), &clock);
    fill(&mut log, 100, 2, 100, 10);
    let expect: Vec<_> = (0..200)
        .map(|o| log.read(o, 1, None, true).unwrap())
        .collect();
    let ts_expect: Vec<_> = (0..100)
        .map(|i| log.offset_for_timestamp(T0 + i * 10 - 3).unwrap())
        .collect();
    let bases = log.segment_base_offsets();
    log.close().unwrap();
    // Lose one index, scramble another, truncate a time index mid-entry.
    std::fs::remove_file(dir.path().join(format!("{:020}.index", bases[0]))).unwrap();
    std::fs::write(
        dir.path().join(format!("{:020}.index", bases[1])),
        [0xffu8; 64],
    )
    .unwrap();
    let ti = dir.path().join(format!("{:020}.timeindex", bases[2]));
    let len = std::fs::metadata(&ti).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ti)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let log = open(dir.path(), small_segments(8192), &clock);
    for (o, e) in expect.iter().enumerate() {
        assert_eq!(&log.read(o as i64, 1, None, true).unwrap(), e, "offset {o}");
    }
    for (i, e) in ts_expect.iter().enumerate() {
        assert_eq!(
            &log.offset_for_timestamp(T0 + i as i64 * 10 - 3).unwrap(),
            e,
            "timestamp {i}"
        );
    }
    assert!(
        log.open_report().rebuilt_indexes >= 2,
        "{:?}",
        log.open_report()
    );
    let idx = std::fs::metadata(dir.path().join(format!("{:020}.index", bases[0])))
        .unwrap()
        .len();
    assert!(
        idx > 0 && idx.is_multiple_of(8),
        "rebuilt index written back ({idx} bytes)"
    );
}

#[test]
fn indexes_are_created_by_their_first_entry_and_a_short_log_needs_none() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let config = || LogConfig {
        index_interval_bytes: 4096,
        ..small_segments(1 << 20)
    };
    let mut log = open(dir.path(), config(), &clock);
    assert_eq!(
        files(dir.path()),
        ["00000000000000000000.log"],
        "a new log is one file"
    );
    // Ten 100-byte batches stay under index.interval.bytes: no entry, no file.
    fill(&mut log, 10, 1, 60, 10);
    log.flush().unwrap();
    log.close().unwrap();
    let names = files(dir.path());
    assert!(
        !names.iter().any(|n| n.ends_with("index")),
        "no index entry, no index file: {names:?}"
    );
    let mut log = open(dir.path(), config(), &clock);
    let report = log.open_report();
    assert!(
        report.clean_shutdown && report.rebuilt_indexes == 0 && report.recovered_segments == 0,
        "a missing index of a log shorter than index.interval.bytes is the empty index: {report:?}"
    );
    assert_eq!(
        log.offset_for_timestamp(T0 + 45).unwrap().map(|(o, _)| o),
        Some(5)
    );
    // Past the interval, the entries land in files at the next flush.
    for i in 10..110u64 {
        let mut b = batch(i, 1, 60, T0 + i as i64 * 10);
        log.append_as_leader(&mut b, 0).unwrap();
    }
    log.flush().unwrap();
    let names = files(dir.path());
    for f in [
        "00000000000000000000.index",
        "00000000000000000000.timeindex",
    ] {
        assert!(names.iter().any(|n| n == f), "{f}: {names:?}");
    }
    let expect: Vec<_> = (0..110)
        .map(|o| log.read(o, 1, None, true).unwrap())
        .collect();
    log.close().unwrap();
    // A long log that lost its index gets it rebuilt.
    std::fs::remove_file(dir.path().join("00000000000000000000.index")).unwrap();
    let mut log = open(dir.path(), config(), &clock);
    // The active segment: rebuilt by recovering it whole.
    assert_eq!(log.open_report().recovered_segments, 1);
    for (o, e) in expect.iter().enumerate() {
        assert_eq!(&log.read(o as i64, 1, None, true).unwrap(), e, "offset {o}");
    }
    log.flush().unwrap();
    assert!(dir.path().join("00000000000000000000.index").exists());
}

#[test]
fn partition_dir_names_round_trip() {
    assert_eq!(
        runnel_log::partition_dir_name("orders.v1-eu", 12),
        "orders.v1-eu-12"
    );
    assert_eq!(
        runnel_log::parse_partition_dir_name("orders.v1-eu-12"),
        Some(("orders.v1-eu", 12))
    );
    assert_eq!(runnel_log::parse_partition_dir_name("orders"), None);
    assert_eq!(runnel_log::parse_partition_dir_name("-3"), None);
}

#[test]
fn deleting_a_log_removes_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut log = Log::open(&path, LogConfig::default()).unwrap();
    log.append_as_leader(&mut batch(0, 1, 1, T0), 0).unwrap();
    log.delete().unwrap();
    assert!(!path.exists());
}

#[test]
fn a_damaged_index_entry_is_detected_and_repaired() {
    // Found by the segment_recovery fuzz target: after a clean shutdown an
    // index entry still sorted and in bounds, but pointing mid-batch.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), small_segments(1 << 20), &clock);
    fill(&mut log, 60, 2, 150, 10);
    let expect: Vec<_> = (0..120)
        .map(|o| log.read(o, 1, None, true).unwrap())
        .collect();
    let ts_expect: Vec<_> = (0..60)
        .map(|i| log.offset_for_timestamp(T0 + i * 10).unwrap())
        .collect();
    log.close().unwrap();
    let index_path = dir.path().join(format!("{:020}.index", 0));
    let time_path = dir.path().join(format!("{:020}.timeindex", 0));
    let (index, times) = (
        std::fs::read(&index_path).unwrap(),
        std::fs::read(&time_path).unwrap(),
    );
    assert!(index.len() >= 3 * 8 && times.len() >= 3 * 12);
    let mut bad_index = index.clone();
    bad_index[8 + 7] = bad_index[8 + 7].wrapping_sub(2); // entry 1: position - 2
    std::fs::write(&index_path, &bad_index).unwrap();
    let mut bad_times = times.clone();
    bad_times[12 + 11] = bad_times[12 + 11].wrapping_add(1); // entry 1: offset + 1
    std::fs::write(&time_path, &bad_times).unwrap();

    let log = open(dir.path(), small_segments(1 << 20), &clock);
    assert!(log.open_report().clean_shutdown);
    for (o, e) in expect.iter().enumerate() {
        assert_eq!(&log.read(o as i64, 1, None, true).unwrap(), e, "offset {o}");
    }
    for (i, e) in ts_expect.iter().enumerate() {
        assert_eq!(
            &log.offset_for_timestamp(T0 + i as i64 * 10).unwrap(),
            e,
            "timestamp {i}"
        );
    }
    log.close().unwrap();
    assert_eq!(
        std::fs::read(&index_path).unwrap(),
        index,
        "index rebuilt at close"
    );
    assert_eq!(
        std::fs::read(&time_path).unwrap(),
        times,
        "time index rebuilt at close"
    );
}

#[test]
fn a_steady_state_flush_is_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let storage = runnel_log::storage::FaultyStorage::new();
    let mut log = open_on(
        dir.path(),
        small_segments(4096),
        &clock,
        std::sync::Arc::new(storage.clone()),
    );
    log.append_as_leader(&mut batch(0, 1, 10, T0), 0).unwrap();
    log.flush().unwrap(); // first flush after open: full (checkpoint, directory, indexes)
    let ops = |f: &mut dyn FnMut()| {
        let before = storage.mutating_ops();
        f();
        storage.mutating_ops() - before
    };
    for i in 1..5 {
        log.append_as_leader(&mut batch(i, 1, 10, T0), 0).unwrap();
        assert_eq!(
            ops(&mut || log.flush().unwrap()),
            1,
            "fdatasync of the active segment only"
        );
        assert_eq!(log.recovery_point(), log.log_end_offset());
    }
    // After a roll the sealed segment's indexes and the checkpoint must be durable too.
    log.roll().unwrap();
    log.append_as_leader(&mut batch(9, 1, 10, T0), 0).unwrap();
    assert!(ops(&mut || log.flush().unwrap()) > 3);
    let text = std::fs::read_to_string(dir.path().join("recovery-point-checkpoint")).unwrap();
    assert_eq!(text, format!("0\n{}\n", log.log_end_offset()));
    log.append_as_leader(&mut batch(10, 1, 10, T0), 0).unwrap();
    assert_eq!(ops(&mut || log.flush().unwrap()), 1);
}

#[test]
fn a_new_partition_and_its_leadership_cost_no_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let storage = runnel_log::storage::FaultyStorage::new();
    let shared = std::sync::Arc::new(storage.clone());
    let mut log = open_on(dir.path(), LogConfig::default(), &clock, shared.clone());
    log.assign_leader_epoch(4).unwrap();
    assert_eq!(
        storage.syncs(),
        0,
        "creating and leading an empty log syncs nothing"
    );
    assert!(
        !dir.path().join("log-start-offset-checkpoint").exists(),
        "a log starting at its first segment needs no start checkpoint"
    );
    assert_eq!(log.end_offset_for_epoch(4), Some((4, 0)));
    // Data in the epoch: the flush that makes it durable makes the epoch durable first.
    log.append_as_leader(&mut batch(0, 2, 1, T0), 4).unwrap();
    let before = storage.syncs();
    log.flush().unwrap();
    assert!(
        storage.syncs() >= before + 3,
        "epoch checkpoint, directory, data"
    );
    let text = std::fs::read_to_string(dir.path().join("leader-epoch-checkpoint")).unwrap();
    assert_eq!(text, "0\n1\n4 0\n");
    drop(log);
    let log = open_on(dir.path(), LogConfig::default(), &clock, shared);
    assert_eq!(log.end_offset_for_epoch(4), Some((4, 2)));
}

#[test]
fn a_torn_leader_epoch_checkpoint_is_rebuilt_from_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    log.append_as_leader(&mut batch(0, 2, 1, T0), 1).unwrap();
    log.append_as_leader(&mut batch(2, 3, 1, T0), 1).unwrap();
    log.append_as_leader(&mut batch(5, 1, 1, T0), 6).unwrap();
    let want = log.leader_epochs().entries().to_vec();
    drop(log);
    for torn in ["", "0\n", "0\n2\n1 0\n", "garbage"] {
        std::fs::write(dir.path().join("leader-epoch-checkpoint"), torn).unwrap();
        let log = open(dir.path(), LogConfig::default(), &clock);
        assert_eq!(log.leader_epochs().entries(), want, "file was {torn:?}");
        assert_eq!(log.end_offset_for_epoch(1), Some((1, 5)));
        drop(log);
        let text = std::fs::read_to_string(dir.path().join("leader-epoch-checkpoint")).unwrap();
        assert_eq!(text, "0\n2\n1 0\n6 5\n", "rewritten");
    }
    // An empty log with a torn file starts with no epochs and a good file.
    let empty = tempfile::tempdir().unwrap();
    drop(open(empty.path(), LogConfig::default(), &clock));
    std::fs::write(empty.path().join("leader-epoch-checkpoint"), "0\n").unwrap();
    let log = open(empty.path(), LogConfig::default(), &clock);
    assert!(log.leader_epochs().entries().is_empty());
    let text = std::fs::read_to_string(empty.path().join("leader-epoch-checkpoint")).unwrap();
    assert_eq!(text, "0\n0\n");
}

#[test]
fn a_directory_level_clean_shutdown_needs_no_marker_and_no_fsync_per_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let storage = runnel_log::storage::FaultyStorage::new();
    let shared = std::sync::Arc::new(storage.clone());
    let open_clean = || {
        Log::open_after_clean_shutdown(
            dir.path(),
            small_segments(2048),
            shared.clone(),
            std::sync::Arc::new(clock.clone()),
        )
        .unwrap()
    };
    let mut log = open_on(dir.path(), small_segments(2048), &clock, shared.clone());
    for i in 0..30u64 {
        log.append_as_leader(&mut batch(i, 1, 200, T0), 0).unwrap();
    }
    let bytes = read_all_bytes(&log);
    let before = storage.syncs();
    log.close_unsynced().unwrap();
    assert_eq!(
        storage.syncs(),
        before,
        "the caller syncs the file system once"
    );
    assert!(
        !dir.path().join(".clean-shutdown").exists(),
        "the caller's marker"
    );

    let log = open_clean();
    let report = log.open_report().clone();
    assert!(report.clean_shutdown);
    assert_eq!(report.recovered_segments, 0);
    assert_eq!(
        report.replayed_producer_batches, 0,
        "snapshot written at close"
    );
    assert_eq!(read_all_bytes(&log), bytes);
    assert_eq!(log.recovery_point(), 30);

    // Nothing new since it opened (a leader that wrote nothing is nothing
    // new: its epoch has no data): closing writes nothing at all.
    let mut log = log;
    log.assign_leader_epoch(7).unwrap();
    let before = storage.mutating_ops();
    log.close_unsynced().unwrap();
    assert_eq!(storage.mutating_ops(), before);
    let log = open_clean();
    assert_eq!(read_all_bytes(&log), bytes);
    drop(log);

    // Without the caller's marker the same files recover as after a crash.
    let log = open_on(dir.path(), small_segments(2048), &clock, shared.clone());
    assert!(!log.open_report().clean_shutdown);
    assert_eq!(read_all_bytes(&log), bytes);
}
