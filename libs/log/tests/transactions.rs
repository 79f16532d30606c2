//! Transactions in the log: markers end them, the last stable offset (LSO)
//! holds read_committed readers at the oldest unsettled one, aborted ones are
//! indexed (`.txnindex`) so readers skip their records, and all of it
//! survives clean and unclean restarts, truncation, retention, compaction
//! and replication.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::*;
use proptest::prelude::*;
use runnel_log::{
    AbortedTxn, CleanerConfig, CleanupPolicy, Log, LogConfig, LogError, ManualClock, Offset,
};
use runnel_records::batch::{
    BatchBuilder, Batches, Compression, ControlRecord, ControlType, EndTxnMarker, RecordBatch,
};

/// A transactional batch of `keys` from `pid` at `epoch`, sequences from `seq`.
fn txn_batch(pid: i64, epoch: i16, seq: i32, keys: &[&str]) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None)
        .producer(pid, epoch, seq)
        .transactional(true);
    for k in keys {
        b.append(
            T0,
            Some(k.as_bytes()),
            Some(format!("{k}@{pid}").as_bytes()),
            &[],
        );
    }
    b.build().unwrap()
}

fn marker(control_type: ControlType, coordinator_epoch: i32) -> EndTxnMarker {
    EndTxnMarker {
        control_type,
        coordinator_epoch,
    }
}

fn commit(log: &mut Log, pid: i64, epoch: i16) -> Offset {
    log.append_end_txn_marker(pid, epoch, marker(ControlType::Commit, 0), 0)
        .unwrap()
        .first_offset
}

fn abort(log: &mut Log, pid: i64, epoch: i16) -> Offset {
    log.append_end_txn_marker(pid, epoch, marker(ControlType::Abort, 0), 0)
        .unwrap()
        .first_offset
}

/// What a Kafka consumer at `read_committed` sees: fetches of `max_bytes`
/// up to the LSO, each with the aborted transactions of its range, filtered
/// as Kafka's consumer does. Returns (offset, key) of every record.
fn read_committed(log: &Log, high_watermark: Offset, max_bytes: usize) -> Vec<(Offset, String)> {
    let lso = log.last_stable_offset(high_watermark);
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < lso {
        let chunk = log.read(offset, max_bytes, Some(lso), true).unwrap();
        if chunk.is_empty() {
            break;
        }
        let upper = next_offset(&chunk);
        let mut aborted: Vec<AbortedTxn> = log.aborted_transactions(offset, upper);
        aborted.sort_by_key(|a| a.first_offset);
        let mut pending = aborted.into_iter().peekable();
        let mut aborted_producers = HashSet::new();
        for b in Batches::new(&chunk) {
            let b = b.unwrap();
            let h = *b.header();
            if h.has_producer_id() {
                while let Some(a) = pending.next_if(|a| a.first_offset <= h.last_offset()) {
                    aborted_producers.insert(a.producer_id);
                }
            }
            if h.is_control() {
                let c = ControlRecord::from_batch(&b).unwrap();
                if c.end_txn().unwrap().control_type == ControlType::Abort {
                    aborted_producers.remove(&h.producer_id);
                }
                continue;
            }
            if h.is_transactional() && aborted_producers.contains(&h.producer_id) {
                continue;
            }
            for r in b.records().unwrap() {
                let r = r.unwrap();
                if r.offset >= offset {
                    let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                    out.push((r.offset, key));
                }
            }
        }
        offset = upper;
    }
    out
}

fn keys(records: &[(Offset, String)]) -> Vec<&str> {
    records.iter().map(|(_, k)| k.as_str()).collect()
}

#[test]
fn committed_records_become_visible_and_aborted_ones_never_do() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    log.append_as_leader(&mut kv_batch(&[("plain-0", Some("v"))], T0), 0)
        .unwrap();
    log.append_as_leader(&mut txn_batch(1, 0, 0, &["a1", "a2"]), 0)
        .unwrap(); // 1..=2
    log.append_as_leader(&mut txn_batch(2, 0, 0, &["b1"]), 0)
        .unwrap(); // 3
    log.append_as_leader(&mut kv_batch(&[("plain-4", Some("v"))], T0), 0)
        .unwrap(); // 4
    assert_eq!(log.ongoing_transactions(), vec![(1, 1), (3, 2)]);
    let end = log.log_end_offset();
    // Both open: readers stop at the first one's start.
    assert_eq!(log.last_stable_offset(end), 1);
    assert_eq!(keys(&read_committed(&log, end, 1 << 20)), vec!["plain-0"]);

    assert_eq!(abort(&mut log, 1, 0), 5);
    log.append_as_leader(&mut txn_batch(2, 0, 1, &["b2"]), 0)
        .unwrap(); // 6
    // The abort is written but not replicated: still unstable.
    assert_eq!(log.last_stable_offset(5), 1);
    // Replicated: the LSO moves to the other open transaction.
    assert_eq!(log.last_stable_offset(log.log_end_offset()), 3);
    assert_eq!(
        log.aborted_transactions(0, 100),
        vec![AbortedTxn {
            producer_id: 1,
            first_offset: 1,
            last_offset: 5,
            last_stable_offset: 3,
        }]
    );
    assert_eq!(commit(&mut log, 2, 0), 7);
    let end = log.log_end_offset();
    assert_eq!(log.last_stable_offset(end), end);
    assert!(log.ongoing_transactions().is_empty());
    for max_bytes in [1, 100, 1 << 20] {
        assert_eq!(
            keys(&read_committed(&log, end, max_bytes)),
            vec!["plain-0", "b1", "plain-4", "b2"],
            "fetches of {max_bytes} bytes"
        );
    }
    // Aborted records are still there for read_uncommitted readers.
    assert_eq!(read_all(&log).len(), 8);
    assert!(files(dir.path()).contains(&"00000000000000000000.txnindex".to_owned()));
}

#[test]
fn a_transaction_may_end_with_no_records_here() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    let at = abort(&mut log, 9, 0);
    // Kafka indexes it as spanning only its marker.
    assert_eq!(
        log.aborted_transactions(0, 10),
        vec![AbortedTxn {
            producer_id: 9,
            first_offset: at,
            last_offset: at,
            last_stable_offset: at + 1,
        }]
    );
    assert_eq!(log.last_stable_offset(log.log_end_offset()), 1);
}

#[test]
fn writes_that_break_the_transaction_rules_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    log.append_as_leader(&mut txn_batch(1, 3, 0, &["a"]), 0)
        .unwrap();
    let end = log.log_end_offset();
    // A plain batch from a producer whose transaction is open.
    let mut plain = BatchBuilder::new(Compression::None).producer(1, 3, 1);
    plain.append(T0, Some(b"x"), Some(b"y"), &[]);
    let r = log.append_as_leader(&mut plain.build().unwrap(), 0);
    assert!(
        matches!(r, Err(LogError::InvalidTxnState { producer_id: 1, .. })),
        "{r:?}"
    );
    // A marker from an older producer epoch.
    let r = log.append_end_txn_marker(1, 2, marker(ControlType::Commit, 0), 0);
    assert!(
        matches!(r, Err(LogError::InvalidProducerEpoch { .. })),
        "{r:?}"
    );
    // Markers from coordinator epoch 5, then an older coordinator.
    log.append_end_txn_marker(1, 3, marker(ControlType::Commit, 5), 0)
        .unwrap();
    let r = log.append_end_txn_marker(1, 3, marker(ControlType::Abort, 4), 0);
    assert!(
        matches!(
            r,
            Err(LogError::TransactionCoordinatorFenced {
                coordinator_epoch: 4,
                current: 5,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(
        log.log_end_offset(),
        end + 1,
        "only the valid marker went in"
    );
    // Clients may never write control batches themselves.
    let mut forged = marker(ControlType::Abort, 9).to_batch(1, 3, T0).unwrap();
    assert!(matches!(
        log.append_as_leader(&mut forged, 0),
        Err(LogError::ControlBatchFromProducer { .. })
    ));
    // A marker bumping the epoch (a fenced producer's transaction aborted by
    // the coordinator) lets the new epoch start at sequence 0.
    log.append_as_leader(&mut txn_batch(1, 3, 1, &["b"]), 0)
        .unwrap();
    log.append_end_txn_marker(1, 4, marker(ControlType::Abort, 5), 0)
        .unwrap();
    log.append_as_leader(&mut txn_batch(1, 4, 0, &["c"]), 0)
        .unwrap();
    assert!(matches!(
        log.append_as_leader(&mut txn_batch(1, 3, 2, &["d"]), 0),
        Err(LogError::InvalidProducerEpoch { .. })
    ));
}

#[test]
fn transactions_survive_clean_and_unclean_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let config = small_segments(300);
    let mut log = open(dir.path(), config.clone(), &clock);
    let mut seqs: HashMap<i64, i32> = HashMap::new();
    let mut send = |log: &mut Log, pid: i64, key: &str| {
        let seq = seqs.entry(pid).or_insert(0);
        log.append_as_leader(&mut txn_batch(pid, 0, *seq, &[key]), 0)
            .unwrap();
        *seq += 1;
    };
    for round in 0..6 {
        send(&mut log, 1, &format!("a{round}"));
        send(&mut log, 2, &format!("b{round}"));
        log.append_as_leader(&mut kv_batch(&[(&format!("p{round}"), Some("v"))], T0), 0)
            .unwrap();
        if round % 2 == 0 {
            abort(&mut log, 1, 0);
        } else {
            commit(&mut log, 1, 0);
        }
        if round < 5 {
            commit(&mut log, 2, 0);
        }
    }
    // Producer 2's last transaction stays open.
    let end = log.log_end_offset();
    log.update_high_watermark(end);
    let expected = read_committed(&log, end, 1 << 20);
    let lso = log.last_stable_offset(end);
    let aborted = log.aborted_transactions(0, end);
    assert_eq!(aborted.len(), 3);
    assert!(log.segment_base_offsets().len() > 3, "spread over segments");
    assert_eq!(
        keys(&expected),
        vec![
            "b0", "p0", "a1", "b1", "p1", "b2", "p2", "a3", "b3", "p3", "b4", "p4", "a5", "p5"
        ]
        .into_iter()
        .filter(|k| {
            // Only what precedes the open transaction's start.
            let at = expected.iter().find(|(_, x)| x == k).map(|(o, _)| *o);
            at.is_some_and(|o| o < lso)
        })
        .collect::<Vec<_>>()
    );

    log.close().unwrap();
    let mut log = open(dir.path(), config.clone(), &clock);
    assert!(log.open_report().clean_shutdown);
    assert_eq!(
        log.last_stable_offset(end),
        lso,
        "the open transaction survives"
    );
    assert_eq!(read_committed(&log, end, 200), expected);

    // Unclean, and an index file of a flushed segment torn: it is rebuilt
    // from the markers. (The proptest below covers unflushed segments.)
    log.flush().unwrap();
    drop(log);
    let names = files(dir.path());
    let txn_indexes: Vec<&String> = names.iter().filter(|n| n.ends_with(".txnindex")).collect();
    assert!(txn_indexes.len() >= 2, "{names:?}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(txn_indexes[0]))
        .unwrap()
        .set_len(20)
        .unwrap();
    let mut log = open(dir.path(), config.clone(), &clock);
    assert!(!log.open_report().clean_shutdown);
    assert!(
        log.open_report().rebuilt_txn_indexes >= 1,
        "{:?}",
        log.open_report()
    );
    assert_eq!(log.aborted_transactions(0, end), aborted);
    assert_eq!(log.last_stable_offset(end), lso);
    assert_eq!(read_committed(&log, end, 200), expected);

    // The open transaction still ends normally after all that.
    commit(&mut log, 2, 0);
    let end = log.log_end_offset();
    let all = read_committed(&log, end, 1 << 20);
    assert!(all.iter().any(|(_, k)| k == "b5"));
    assert_eq!(all.len(), expected.len() + 2, "b5 and everything after it");
}

#[test]
fn truncation_reopens_a_transaction_whose_marker_it_removed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    log.append_as_leader(&mut txn_batch(1, 0, 0, &["a"]), 0)
        .unwrap();
    let at = abort(&mut log, 1, 0);
    assert_eq!(log.aborted_transactions(0, 10).len(), 1);
    // A new leader never got the abort: the follower cuts it.
    log.truncate_to(at).unwrap();
    assert!(log.aborted_transactions(0, 10).is_empty());
    assert_eq!(log.ongoing_transactions(), vec![(0, 1)]);
    assert_eq!(log.last_stable_offset(log.log_end_offset()), 0);
    // The coordinator retries with a commit this time.
    log.append_end_txn_marker(1, 0, marker(ControlType::Commit, 1), 1)
        .unwrap();
    let end = log.log_end_offset();
    assert_eq!(keys(&read_committed(&log, end, 1 << 20)), vec!["a"]);
    // And it all holds after an unclean restart.
    drop(log);
    let log = open(dir.path(), LogConfig::default(), &clock);
    assert!(log.aborted_transactions(0, 10).is_empty());
    assert_eq!(keys(&read_committed(&log, end, 1 << 20)), vec!["a"]);
}

#[test]
fn retention_keeps_an_open_transactions_start() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let config = LogConfig {
        retention_ms: 1000,
        ..small_segments(300)
    };
    let mut log = open(dir.path(), config, &clock);
    log.append_as_leader(&mut kv_batch(&[("old", Some("v"))], T0), 0)
        .unwrap();
    log.roll().unwrap();
    log.append_as_leader(&mut txn_batch(1, 0, 0, &["open"]), 0)
        .unwrap();
    let txn_start = 1;
    fill(&mut log, 20, 2, 50, 0);
    assert!(log.segment_base_offsets().len() > 4);
    clock.advance(10_000);
    let end = log.log_end_offset();
    log.delete_old_segments(end).unwrap();
    // Everything before the transaction went; its segment stayed.
    assert_eq!(log.log_start_offset(), txn_start);
    commit(&mut log, 1, 0);
    let end = log.log_end_offset();
    log.update_high_watermark(end);
    log.delete_old_segments(end).unwrap();
    assert!(log.log_start_offset() > txn_start);
}

#[test]
fn a_follower_copying_the_leader_gets_the_same_transactions() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = ManualClock::new(T0);
    let mut leader = open(leader_dir.path(), small_segments(250), &clock);
    let mut follower = open(follower_dir.path(), small_segments(250), &clock);
    for i in 0..8 {
        leader
            .append_as_leader(&mut txn_batch(1, 0, i, &[&format!("a{i}")]), 0)
            .unwrap();
        leader
            .append_as_leader(&mut txn_batch(2, 0, i, &[&format!("b{i}")]), 0)
            .unwrap();
        if i % 3 == 0 {
            abort(&mut leader, 1, 0);
        } else {
            commit(&mut leader, 1, 0);
        }
    }
    // Replicate in small reads, as replica fetches do.
    while follower.log_end_offset() < leader.log_end_offset() {
        let chunk = leader
            .read(follower.log_end_offset(), 120, None, true)
            .unwrap();
        follower.append_as_follower(&chunk).unwrap();
    }
    let end = leader.log_end_offset();
    assert_eq!(
        follower.aborted_transactions(0, end),
        leader.aborted_transactions(0, end)
    );
    assert_eq!(
        follower.ongoing_transactions(),
        leader.ongoing_transactions()
    );
    assert_eq!(
        follower.last_stable_offset(end),
        leader.last_stable_offset(end)
    );
    assert_eq!(
        read_committed(&follower, end, 300),
        read_committed(&leader, end, 300)
    );
}

fn compacted(segment_bytes: u64) -> LogConfig {
    LogConfig {
        cleanup_policy: CleanupPolicy {
            delete: false,
            compact: true,
        },
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 1000,
        ..small_segments(segment_bytes)
    }
}

/// The last value of each key a read_committed reader sees.
fn latest(log: &Log, hw: Offset) -> BTreeMap<String, Offset> {
    read_committed(log, hw, 1 << 20)
        .into_iter()
        .map(|(o, k)| (k, o))
        .collect()
}

#[test]
fn compaction_drops_aborted_records_then_their_markers_and_keeps_what_readers_see() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), compacted(400), &clock);
    let mut seq = [0i32; 3];
    let mut send = |log: &mut Log, pid: usize, key: &str| {
        log.append_as_leader(&mut txn_batch(pid as i64, 0, seq[pid], &[key]), 0)
            .unwrap();
        seq[pid] += 1;
    };
    for round in 0..6 {
        send(&mut log, 1, "k");
        send(&mut log, 2, "k");
        send(&mut log, 1, &format!("only-{round}"));
        // Producer 1 always aborts: its later "k" must never hide producer 2's.
        abort(&mut log, 1, 0);
        commit(&mut log, 2, 0);
    }
    log.roll().unwrap();
    let end = log.log_end_offset();
    log.update_high_watermark(end);
    let before = latest(&log, end);
    assert_eq!(
        before.len(),
        1,
        "only producer 2's k is visible: {before:?}"
    );

    let stats = log.clean(&CleanerConfig::default()).unwrap().unwrap();
    assert_eq!(stats.aborted_batches_dropped, 12, "{stats:?}");
    assert_eq!(latest(&log, end), before);
    // Markers whose transactions lost every record got a horizon, not yet passed.
    assert_eq!(stats.markers_dropped, 0);
    let markers_before = read_all_bytes(&log);
    let count_markers = |bytes: &[u8]| {
        Batches::new(bytes)
            .filter(|b| b.as_ref().unwrap().header().is_control())
            .count()
    };
    let n = count_markers(&markers_before);
    clock.advance(2000);
    let stats = log.clean(&CleanerConfig::default()).unwrap().unwrap();
    assert!(stats.markers_dropped > 0, "{stats:?}");
    assert!(count_markers(&read_all_bytes(&log)) < n);
    assert_eq!(latest(&log, end), before);
    // The aborted transactions' index entries went with their markers,
    // except where a marker stays (each producer's last batch).
    assert!(log.aborted_transactions(0, end).len() <= 1);
    // And it all holds after a restart.
    log.close().unwrap();
    let log = open(dir.path(), compacted(400), &clock);
    assert_eq!(latest(&log, end), before);
}

#[test]
fn compaction_stops_at_an_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), compacted(300), &clock);
    log.append_as_leader(&mut kv_batch(&[("k", Some("1"))], T0), 0)
        .unwrap();
    log.roll().unwrap();
    log.append_as_leader(&mut txn_batch(1, 0, 0, &["k"]), 0)
        .unwrap();
    for i in 0..10 {
        log.append_as_leader(&mut kv_batch(&[("k", Some(&i.to_string()))], T0), 0)
            .unwrap();
        log.roll().unwrap();
    }
    let end = log.log_end_offset();
    log.update_high_watermark(end);
    log.clean(&CleanerConfig::default()).unwrap();
    // Only the segment before the open transaction could be cleaned: the
    // transaction's "k" (which may yet abort) hides nothing.
    assert_eq!(log.first_dirty_offset(), 1);
    let records = read_all(&log);
    assert_eq!(
        records.len(),
        12,
        "nothing after the transaction's start was cleaned"
    );
    // Aborting it and cleaning again keeps the latest plain value only.
    abort(&mut log, 1, 0);
    log.roll().unwrap();
    let end = log.log_end_offset();
    log.update_high_watermark(end);
    log.clean(&CleanerConfig::default()).unwrap();
    let visible = read_committed(&log, end, 1 << 20);
    assert_eq!(visible.len(), 1);
    let (offset, _) = &visible[0];
    let last = read_all(&log)
        .into_iter()
        .find(|r| r.offset == *offset)
        .unwrap();
    assert_eq!(last.value.as_deref(), Some(&b"9"[..]));
}

#[test]
fn a_marker_batch_is_a_kafka_control_batch() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    log.append_as_leader(&mut txn_batch(5, 2, 0, &["a"]), 3)
        .unwrap();
    log.append_end_txn_marker(5, 2, marker(ControlType::Commit, 7), 3)
        .unwrap();
    let bytes = log.read(1, 1 << 20, None, true).unwrap();
    let (b, rest) = RecordBatch::parse(&bytes).unwrap();
    assert!(rest.is_empty());
    let h = b.header();
    assert_eq!((h.base_offset, h.partition_leader_epoch), (1, 3));
    assert!(h.is_control() && h.is_transactional());
    assert_eq!((h.producer_id, h.producer_epoch), (5, 2));
    assert_eq!(
        ControlRecord::from_batch(&b).unwrap(),
        ControlRecord::EndTxn(marker(ControlType::Commit, 7))
    );
    assert_eq!(log.producer(5).unwrap().coordinator_epoch, 7);
}

#[derive(Debug, Clone)]
enum Op {
    /// A transactional batch from producer `p` (opening its transaction).
    Send {
        p: usize,
        key: u8,
    },
    /// A plain batch.
    Plain {
        key: u8,
    },
    /// Producer `p`'s transaction ends.
    End {
        p: usize,
        commit: bool,
    },
    Roll,
    Clean,
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..3, 0u8..6).prop_map(|(p, key)| Op::Send { p, key }),
        2 => (0u8..6).prop_map(|key| Op::Plain { key }),
        3 => (0usize..3, proptest::bool::ANY).prop_map(|(p, commit)| Op::End { p, commit }),
        1 => Just(Op::Roll),
        1 => Just(Op::Clean),
        1 => proptest::bool::ANY.prop_map(|clean| Op::Reopen { clean }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(32), failure_persistence: None, ..ProptestConfig::default() })]

    /// Random interleavings of transactions, plain writes, rolls, restarts
    /// and (on a compacted log) cleanings: read_committed readers see exactly
    /// the plain and committed records below the LSO (on a compacted log,
    /// the same latest value per key), and the LSO is the oldest open
    /// transaction's start.
    #[test]
    fn readers_see_exactly_what_committed(ops in proptest::collection::vec(op(), 1..70), compact in proptest::bool::ANY) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let config = if compact { compacted(350) } else { small_segments(350) };
        let mut log = open(dir.path(), config.clone(), &clock);
        let mut seq = [0i32; 3];
        // Offsets of each producer's open transaction's records.
        let mut open_txn: [Option<Vec<(Offset, String)>>; 3] = Default::default();
        let mut visible: Vec<(Offset, String)> = Vec::new();
        for op in ops {
            match op {
                Op::Send { p, key } => {
                    let k = format!("k{key}");
                    let info = log.append_as_leader(&mut txn_batch(p as i64 + 1, 0, seq[p], &[&k]), 0).unwrap();
                    seq[p] += 1;
                    open_txn[p].get_or_insert_with(Vec::new).push((info.first_offset, k));
                }
                Op::Plain { key } => {
                    let k = format!("k{key}");
                    let info = log.append_as_leader(&mut kv_batch(&[(&k, Some("v"))], T0), 0).unwrap();
                    visible.push((info.first_offset, k));
                }
                Op::End { p, commit } => {
                    let records = open_txn[p].take().unwrap_or_default();
                    let kind = if commit { ControlType::Commit } else { ControlType::Abort };
                    log.append_end_txn_marker(p as i64 + 1, 0, marker(kind, 0), 0).unwrap();
                    if commit {
                        visible.extend(records);
                        visible.sort();
                    }
                }
                Op::Roll => log.roll().unwrap(),
                Op::Clean => {
                    if compact {
                        log.clean(&CleanerConfig::default()).unwrap();
                    }
                }
                Op::Reopen { clean } => {
                    if clean { log.close().unwrap() } else { drop(log) }
                    log = open(dir.path(), config.clone(), &clock);
                }
            }
            let end = log.log_end_offset();
            log.update_high_watermark(end);
            let lso = open_txn.iter().flatten().filter_map(|r| r.first().map(|(o, _)| *o)).min().unwrap_or(end);
            prop_assert_eq!(log.last_stable_offset(end), lso);
            let expected: Vec<(Offset, String)> = visible.iter().filter(|(o, _)| *o < lso).cloned().collect();
            let seen = read_committed(&log, end, 300);
            if compact {
                let last = |rs: &[(Offset, String)]| -> BTreeMap<String, Offset> { rs.iter().map(|(o, k)| (k.clone(), *o)).collect() };
                prop_assert_eq!(last(&seen), last(&expected));
                let all: HashSet<_> = expected.iter().collect();
                prop_assert!(seen.iter().all(|r| all.contains(r)), "only records a reader could see before");
            } else {
                prop_assert_eq!(seen, expected);
            }
        }
    }
}
