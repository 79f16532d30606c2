//! Compaction against a model: latest value per key, tombstones kept for
//! `delete.retention.ms`, `min.compaction.lag.ms`, offsets and batch
//! metadata preserved, and a crash at every step of the segment swap.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use runnel_log::storage::{FaultyStorage, StdStorage};
use runnel_log::{CleanerConfig, Log, LogConfig, LogError, ManualClock, Offset};
use runnel_records::batch::{BatchBuilder, Batches, Compression};

fn compact_config(segment_bytes: u64) -> LogConfig {
    let mut c = small_segments(segment_bytes);
    c.set("cleanup.policy", "compact").unwrap();
    c.delete_retention_ms = 10_000;
    c
}

/// Every record ever appended: offset → (key, value).
type History = BTreeMap<Offset, (String, Option<String>)>;

fn append(log: &mut Log, history: &mut History, records: &[(&str, Option<&str>)], ts: i64) {
    let mut b = kv_batch(records, ts);
    let info = log.append_as_leader(&mut b, 0).unwrap();
    for (i, (k, v)) in records.iter().enumerate() {
        history.insert(
            info.first_offset + i as i64,
            (k.to_string(), v.map(str::to_owned)),
        );
    }
}

/// Checks what the log holds after cleanings that reached `first_dirty`:
/// offsets and contents come from the history; below `first_dirty` a record
/// is present only if no later record below `first_dirty` has its key; at or
/// after it, everything is present; the latest record of every key is
/// present unless it is a tombstone.
fn check_compacted(log: &Log, history: &History, first_dirty: Offset) {
    let present = check_no_loss(log, history, first_dirty);
    let mut latest_below: HashMap<&str, Offset> = HashMap::new();
    for (&o, (k, _)) in history.range(..first_dirty) {
        latest_below.insert(k, o);
    }
    for (o, k, _) in &present {
        if *o < first_dirty {
            assert_eq!(
                latest_below[k.as_str()],
                *o,
                "superseded record at {o} ({k}) survived"
            );
        }
    }
}

/// What must hold in any state, even half-way through a cleaning: records
/// are what was appended, at their offsets; everything from `dirty_from`
/// on is present; the latest value of every key is present.
fn check_no_loss(
    log: &Log,
    history: &History,
    dirty_from: Offset,
) -> Vec<(Offset, String, Option<String>)> {
    let present = kv(log);
    let mut latest: HashMap<&str, Offset> = HashMap::new();
    for (&o, (k, _)) in history {
        latest.insert(k, o);
    }
    let mut prev = -1;
    for (o, k, v) in &present {
        assert!(*o > prev, "offsets increase");
        prev = *o;
        assert_eq!(
            history.get(o),
            Some(&(k.clone(), v.clone())),
            "record at {o} is what was appended"
        );
    }
    let offsets: Vec<Offset> = present.iter().map(|r| r.0).collect();
    for (&o, (k, v)) in history.range(dirty_from..) {
        assert!(
            offsets.binary_search(&o).is_ok(),
            "dirty record {o} ({k}={v:?}) lost"
        );
    }
    for (k, &o) in &latest {
        if history[&o].1.is_some() {
            assert!(
                offsets.binary_search(&o).is_ok(),
                "latest value of {k} at {o} lost"
            );
        }
    }
    present
}

#[test]
fn cleaning_keeps_the_latest_value_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), compact_config(1024), &clock);
    let mut history = History::new();
    for round in 0..30 {
        let values: Vec<String> = (0..5).map(|k| format!("v{round}-{k}")).collect();
        let records: Vec<(String, Option<&str>)> = (0..5)
            .map(|k| {
                (
                    format!("key-{}", (round * 3 + k) % 12),
                    Some(values[k].as_str()),
                )
            })
            .collect();
        let refs: Vec<(&str, Option<&str>)> =
            records.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        append(&mut log, &mut history, &refs, T0);
    }
    let size_before = log.size_bytes();
    let segments_before = log.segment_base_offsets().len();
    assert!(log.needs_cleaning());
    let stats = log.clean(&CleanerConfig::default()).unwrap().unwrap();
    let active = *log.segment_base_offsets().last().unwrap();
    assert_eq!(
        stats.first_dirty_offset, active,
        "everything before the active segment was cleaned"
    );
    assert_eq!(log.first_dirty_offset(), active);
    assert!(
        log.size_bytes() < size_before / 2,
        "{} -> {}",
        size_before,
        log.size_bytes()
    );
    assert!(stats.records_retained < stats.records_read);
    check_compacted(&log, &history, active);
    // Segments are grouped by their size before cleaning (as Kafka does), so
    // the now-small cleaned segments merge on the next cleaning.
    assert_eq!(log.segment_base_offsets().len(), segments_before);
    log.clean(&CleanerConfig::default()).unwrap().unwrap();
    assert_eq!(
        log.segment_base_offsets().len(),
        2,
        "one merged cleaned segment and the active one"
    );
    check_compacted(&log, &history, active);
    assert!(!log.needs_cleaning());
    // The result survives a restart, clean or not.
    drop(log);
    let log = open(dir.path(), compact_config(1024), &clock);
    check_compacted(&log, &history, active);
    assert_eq!(log.first_dirty_offset(), active);
}

#[test]
fn tombstones_stay_for_delete_retention_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), compact_config(200), &clock);
    let mut history = History::new();
    append(
        &mut log,
        &mut history,
        &[("a", Some("1")), ("b", Some("1"))],
        T0,
    );
    append(&mut log, &mut history, &[("a", None), ("c", Some("1"))], T0);
    append(&mut log, &mut history, &[("d", Some("1"))], T0);
    log.roll().unwrap();
    log.clean(&CleanerConfig::default()).unwrap().unwrap();
    // First cleaning: a's value is gone, its tombstone stays (horizon set).
    assert_eq!(
        kv(&log),
        vec![
            (1, "b".into(), Some("1".into())),
            (2, "a".into(), None),
            (3, "c".into(), Some("1".into())),
            (4, "d".into(), Some("1".into()))
        ]
    );
    clock.advance(9_999);
    log.clean(&CleanerConfig::default()).unwrap().unwrap();
    assert!(
        kv(&log).iter().any(|r| r.1 == "a"),
        "tombstone kept within delete.retention.ms"
    );
    clock.advance(1);
    let stats = log.clean(&CleanerConfig::default()).unwrap().unwrap();
    assert_eq!(stats.tombstones_dropped, 1);
    assert_eq!(
        kv(&log),
        vec![
            (1, "b".into(), Some("1".into())),
            (3, "c".into(), Some("1".into())),
            (4, "d".into(), Some("1".into()))
        ]
    );
    // Offsets still continue after the gaps.
    assert_eq!(
        log.append_as_leader(&mut kv_batch(&[("e", Some("1"))], T0), 0)
            .unwrap()
            .first_offset,
        5
    );
}

#[test]
fn young_segments_wait_for_min_compaction_lag() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0 + 100_000);
    let mut config = compact_config(200);
    config.min_compaction_lag_ms = 50_000;
    let mut log = open(dir.path(), config, &clock);
    let mut history = History::new();
    append(
        &mut log,
        &mut history,
        &[("a", Some("old")), ("b", Some("old"))],
        T0,
    );
    append(&mut log, &mut history, &[("a", Some("mid"))], T0 + 10_000);
    log.roll().unwrap();
    append(&mut log, &mut history, &[("a", Some("young"))], T0 + 90_000);
    log.roll().unwrap();
    append(
        &mut log,
        &mut history,
        &[("z", Some("active"))],
        T0 + 95_000,
    );
    log.clean(&CleanerConfig::default()).unwrap().unwrap();
    // The young segment (max timestamp within the lag) is neither mapped nor rewritten.
    assert_eq!(
        kv(&log),
        vec![
            (1, "b".into(), Some("old".into())),
            (2, "a".into(), Some("mid".into())),
            (3, "a".into(), Some("young".into())),
            (4, "z".into(), Some("active".into()))
        ]
    );
    clock.advance(50_000);
    log.clean(&CleanerConfig::default()).unwrap().unwrap();
    assert_eq!(
        kv(&log),
        vec![
            (1, "b".into(), Some("old".into())),
            (3, "a".into(), Some("young".into())),
            (4, "z".into(), Some("active".into()))
        ]
    );
}

#[test]
fn batch_metadata_survives_and_producers_keep_their_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), compact_config(1 << 20), &clock);
    let mut b = BatchBuilder::new(Compression::Zstd).producer(77, 2, 10);
    b.append(T0, Some(b"x"), Some(b"1"), &[]);
    b.append(T0 + 1, Some(b"y"), Some(b"1"), &[]);
    b.append(T0 + 2, Some(b"x"), Some(b"2"), &[]);
    log.append_as_leader(&mut b.build().unwrap(), 4).unwrap();
    // Producer 88's only batch is fully superseded later.
    let mut b = BatchBuilder::new(Compression::Gzip).producer(88, 0, 0);
    b.append(T0, Some(b"y"), Some(b"2"), &[]);
    log.append_as_leader(&mut b.build().unwrap(), 4).unwrap();
    log.append_as_leader(&mut kv_batch(&[("y", Some("3"))], T0), 4)
        .unwrap();
    log.roll().unwrap();
    log.clean(&CleanerConfig::default()).unwrap().unwrap();
    let bytes = read_all_bytes(&log);
    let batches: Vec<_> = Batches::new(&bytes).map(Result::unwrap).collect();
    assert_eq!(batches.len(), 3, "re-encoded, emptied-but-last, untouched");
    let h = batches[0].header();
    assert_eq!(
        (h.base_offset, h.last_offset_delta, h.records_count),
        (0, 2, 1),
        "offset range kept"
    );
    assert_eq!(
        (h.producer_id, h.producer_epoch, h.base_sequence),
        (77, 2, 10)
    );
    assert_eq!(h.compression().unwrap(), Compression::Zstd);
    assert_eq!(h.partition_leader_epoch, 4);
    let r: Vec<_> = batches[0].records().unwrap().map(Result::unwrap).collect();
    assert_eq!(
        (r[0].offset, r[0].timestamp, r[0].value.as_deref()),
        (2, T0 + 2, Some(&b"2"[..]))
    );
    let h = batches[1].header();
    assert_eq!(
        (h.base_offset, h.records_count, h.producer_id),
        (3, 0, 88),
        "empty header keeps the producer's sequence"
    );
    assert_eq!(batches[2].header().base_offset, 4);
}

#[test]
fn a_log_that_changed_meanwhile_is_not_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut config = compact_config(300);
    config.set("cleanup.policy", "compact,delete").unwrap();
    config.retention_ms = 1000;
    let mut log = open(dir.path(), config, &clock);
    let mut history = History::new();
    for i in 0..10 {
        append(&mut log, &mut history, &[("k", Some(&format!("{i}")))], T0);
    }
    let plan = log.plan_cleaning().unwrap();
    let cleaned = plan.run(&CleanerConfig::default(), clock.now()).unwrap();
    clock.advance(10_000);
    assert!(log.delete_old_segments(log.log_end_offset()).unwrap() > 0);
    let before = read_all_bytes(&log);
    let err = log.install_cleaned(cleaned).unwrap_err();
    assert!(matches!(err, LogError::CleaningAborted { .. }), "{err}");
    assert_eq!(read_all_bytes(&log), before);
    assert!(
        !files(dir.path())
            .iter()
            .any(|f| f.contains(".cleaned") || f.contains(".swap")),
        "{:?}",
        files(dir.path())
    );
}

trait Now {
    fn now(&self) -> i64;
}
impl Now for ManualClock {
    fn now(&self) -> i64 {
        use runnel_log::Clock;
        self.now_ms()
    }
}

#[test]
fn a_crash_at_any_step_of_cleaning_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let template = root.path().join("template");
    let mut history = History::new();
    {
        let mut log = open(&template, compact_config(300), &clock);
        for i in 0..40 {
            let k = format!("k{}", i % 7);
            let v = format!("{i}");
            let value = (i % 9 != 4).then_some(v.as_str());
            append(&mut log, &mut history, &[(k.as_str(), value)], T0);
        }
        log.close().unwrap();
    }
    // The reference: a cleaning without faults.
    let reference = root.path().join("reference");
    copy(&template, &reference);
    let mut log = open(&reference, compact_config(300), &clock);
    let expected_end = log.log_end_offset();
    log.clean(&CleanerConfig::default()).unwrap().unwrap();
    let cleaned = kv(&log);
    let first_dirty = log.first_dirty_offset();
    drop(log);

    let mut crashes = 0;
    for fail_at in 0.. {
        let dir = root.path().join(format!("crash-{fail_at}"));
        copy(&template, &dir);
        let storage = FaultyStorage::new();
        let mut log = open_on(&dir, compact_config(300), &clock, Arc::new(storage.clone()));
        storage.fail_after_ops(Some(fail_at));
        let result = log.clean(&CleanerConfig::default());
        drop(log); // the process dies here
        let log = Log::open_with(
            &dir,
            compact_config(300),
            Arc::new(StdStorage),
            Arc::new(clock.clone()),
        )
        .unwrap();
        assert_eq!(log.log_end_offset(), expected_end, "crash at op {fail_at}");
        // Any state between "not cleaned" and "cleaned" is allowed, never a loss.
        check_no_loss(&log, &history, first_dirty);
        let mut log = log;
        log.clean(&CleanerConfig::default()).unwrap();
        assert_eq!(
            kv(&log),
            cleaned,
            "crash at op {fail_at}: cleaning again converges"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        if result.is_ok() {
            break;
        }
        crashes += 1;
    }
    assert!(
        crashes > 10,
        "the swap has many steps; only {crashes} crash points were tried"
    );
}

fn copy(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in files(from) {
        std::fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u8,
        tombstone: bool,
        records: u8,
    },
    Roll,
    Clean,
    Advance {
        ms: i64,
    },
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..10, proptest::bool::weighted(0.2), 1u8..6).prop_map(|(key, tombstone, records)| Op::Put { key, tombstone, records }),
        1 => Just(Op::Roll),
        2 => Just(Op::Clean),
        1 => (0i64..8_000).prop_map(|ms| Op::Advance { ms }),
        1 => proptest::bool::ANY.prop_map(|clean| Op::Reopen { clean }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_workloads_compact_like_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let config = compact_config(400);
        let mut log = open(dir.path(), config.clone(), &clock);
        let mut history = History::new();
        let mut seq = 0;
        for op in ops {
            match op {
                Op::Put { key, tombstone, records } => {
                    let mut owned = Vec::new();
                    for i in 0..records {
                        seq += 1;
                        let k = format!("k{}", (key + i) % 10);
                        let v = (!(tombstone && i == 0)).then(|| format!("v{seq}"));
                        owned.push((k, v));
                    }
                    let refs: Vec<(&str, Option<&str>)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                    append(&mut log, &mut history, &refs, T0);
                }
                Op::Roll => log.roll().unwrap(),
                Op::Clean => {
                    log.clean(&CleanerConfig::default()).unwrap();
                }
                Op::Advance { ms } => clock.advance(ms),
                Op::Reopen { clean } => {
                    if clean { log.close().unwrap() } else { drop(log) }
                    log = open(dir.path(), config.clone(), &clock);
                }
            }
            check_compacted(&log, &history, log.first_dirty_offset());
        }
    }
}
