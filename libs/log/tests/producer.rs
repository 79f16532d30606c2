//! Idempotent producers: duplicates are answered with their original offsets,
//! gaps and fenced epochs are refused, and the state survives clean and
//! unclean restarts, truncation and replication.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use runnel_log::{LogConfig, LogError, ManualClock};
use runnel_records::batch::{BatchBuilder, Compression};

/// A batch of `n` records from producer `pid` at `epoch`, starting at sequence `seq`.
fn pbatch(pid: i64, epoch: i16, seq: i32, n: u64) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None).producer(pid, epoch, seq);
    for i in 0..n {
        b.append(T0, Some(format!("k{seq}-{i}").as_bytes()), Some(b"v"), &[]);
    }
    b.build().unwrap()
}

#[test]
fn a_retried_batch_gets_its_original_offsets_and_is_not_appended_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    let mut other = batch(0, 2, 10, T0);
    log.append_as_leader(&mut other, 0).unwrap();
    let first = log.append_as_leader(&mut pbatch(7, 0, 0, 3), 0).unwrap();
    assert_eq!((first.first_offset, first.last_offset), (2, 4));
    log.append_as_leader(&mut batch(100, 1, 10, T0), 0).unwrap();

    let again = log.append_as_leader(&mut pbatch(7, 0, 0, 3), 0).unwrap();
    assert_eq!((again.first_offset, again.last_offset), (2, 4));
    assert_eq!((again.record_count, again.duplicate_batches), (0, 1));
    assert_eq!(again.batch_base_offsets, vec![2]);
    assert_eq!(log.log_end_offset(), 6, "nothing appended");

    // A retried request whose older batch is in the log and newer one is not.
    let mut both = pbatch(7, 0, 0, 3);
    both.extend(pbatch(7, 0, 3, 2));
    let info = log.append_as_leader(&mut both, 0).unwrap();
    assert_eq!(info.batch_base_offsets, vec![2, 6]);
    assert_eq!((info.first_offset, info.last_offset), (2, 7));
    assert_eq!((info.record_count, info.duplicate_batches), (2, 1));
    assert_eq!(log.log_end_offset(), 8);
    assert_eq!(read_all(&log).len(), 8);
}

#[test]
fn gaps_and_fenced_epochs_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    log.append_as_leader(&mut pbatch(7, 1, 0, 2), 0).unwrap();
    let gap = log.append_as_leader(&mut pbatch(7, 1, 5, 1), 0);
    assert!(
        matches!(
            gap,
            Err(LogError::OutOfOrderSequence {
                found: 5,
                expected: 2,
                ..
            })
        ),
        "{gap:?}"
    );
    // A request that starts in order and then skips is refused as a whole.
    let mut mixed = pbatch(7, 1, 2, 1);
    mixed.extend(pbatch(7, 1, 9, 1));
    assert!(matches!(
        log.append_as_leader(&mut mixed, 0),
        Err(LogError::OutOfOrderSequence { found: 9, .. })
    ));
    let fenced = log.append_as_leader(&mut pbatch(7, 0, 2, 1), 0);
    assert!(matches!(fenced, Err(LogError::InvalidProducerEpoch { .. })));
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.producer(7).unwrap().last_seq(), Some(1));
    // The next batch in order still goes in; a new epoch restarts at 0.
    log.append_as_leader(&mut pbatch(7, 1, 2, 1), 0).unwrap();
    log.append_as_leader(&mut pbatch(7, 2, 0, 1), 0).unwrap();
    assert_eq!(log.log_end_offset(), 4);
}

#[test]
fn producer_state_survives_clean_and_unclean_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let config = small_segments(600);
    let mut log = open(dir.path(), config.clone(), &clock);
    let mut seq = 0;
    for _ in 0..20 {
        log.append_as_leader(&mut pbatch(3, 0, seq, 4), 0).unwrap();
        seq += 4;
    }
    assert!(log.segment_base_offsets().len() > 3, "rolled");
    log.close().unwrap();

    let mut log = open(dir.path(), config.clone(), &clock);
    assert_eq!(log.open_report().replayed_producer_batches, 0);
    let dup = log
        .append_as_leader(&mut pbatch(3, 0, seq - 4, 4), 0)
        .unwrap();
    assert_eq!(dup.duplicate_batches, 1);
    assert_eq!(dup.first_offset, 76);
    log.append_as_leader(&mut pbatch(3, 0, seq, 4), 0).unwrap();
    seq += 4;
    drop(log); // a crash: no snapshot at the log end

    let mut log = open(dir.path(), config, &clock);
    let replayed = log.open_report().replayed_producer_batches;
    assert!(
        (1..20).contains(&replayed),
        "replays from the last roll's snapshot, not the whole log: {replayed}"
    );
    let dup = log
        .append_as_leader(&mut pbatch(3, 0, seq - 4, 4), 0)
        .unwrap();
    assert_eq!((dup.duplicate_batches, dup.first_offset), (1, 80));
    assert!(matches!(
        log.append_as_leader(&mut pbatch(3, 0, seq + 1, 1), 0),
        Err(LogError::OutOfOrderSequence { .. })
    ));
}

#[test]
fn truncation_forgets_the_truncated_batches() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let config = small_segments(600);
    let mut log = open(dir.path(), config.clone(), &clock);
    for i in 0..10 {
        log.append_as_leader(&mut pbatch(5, 0, i * 4, 4), 0)
            .unwrap();
    }
    // A follower of a new leader cuts the last three batches.
    log.truncate_to(28).unwrap();
    assert_eq!(log.producer(5).unwrap().last_seq(), Some(27));
    // Their retry is appended afresh, not mistaken for a duplicate.
    let again = log.append_as_leader(&mut pbatch(5, 0, 28, 4), 1).unwrap();
    assert_eq!((again.duplicate_batches, again.first_offset), (0, 28));
    log.close().unwrap();
    let log = open(dir.path(), config, &clock);
    assert_eq!(log.producer(5).unwrap().last_seq(), Some(31));
    assert_eq!(log.producer(5).unwrap().last_offset(), Some(31));
}

#[test]
fn a_follower_learns_producer_state_from_replicated_batches() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut leader = open(&dir.path().join("leader"), LogConfig::default(), &clock);
    let mut follower = open(&dir.path().join("follower"), LogConfig::default(), &clock);
    for i in 0..3 {
        leader
            .append_as_leader(&mut pbatch(9, 0, i * 2, 2), 0)
            .unwrap();
    }
    follower
        .append_as_follower(&leader.read(0, 1 << 20, None, true).unwrap())
        .unwrap();
    // The follower becomes leader and the producer retries its last batch.
    let dup = follower
        .append_as_leader(&mut pbatch(9, 0, 4, 2), 1)
        .unwrap();
    assert_eq!((dup.duplicate_batches, dup.first_offset), (1, 4));
    assert_eq!(follower.log_end_offset(), 6);
}

#[test]
fn an_unreadable_snapshot_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    log.append_as_leader(&mut pbatch(1, 0, 0, 5), 0).unwrap();
    log.close().unwrap();
    let snapshot = files(dir.path())
        .into_iter()
        .find(|n| n.ends_with(".snapshot"))
        .unwrap();
    std::fs::write(dir.path().join(&snapshot), b"RNPS garbage").unwrap();
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    assert_eq!(log.open_report().discarded_producer_snapshots, 1);
    let dup = log.append_as_leader(&mut pbatch(1, 0, 0, 5), 0).unwrap();
    assert_eq!(dup.duplicate_batches, 1);
}

#[test]
fn idle_producers_expire_by_the_brokers_clock_not_record_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    // The records carry T0, ten days before the broker's clock: that does
    // not make their producer look idle.
    let clock = ManualClock::new(T0 + 10 * 86_400_000);
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    log.append_as_leader(&mut pbatch(1, 0, 0, 1), 0).unwrap();
    clock.advance(60_000);
    log.append_as_leader(&mut pbatch(2, 0, 0, 1), 0).unwrap();
    assert_eq!(log.remove_expired_producers(86_400_000), 0);
    clock.advance(30_000);
    assert_eq!(log.remove_expired_producers(60_000), 1);
    assert!(log.producer(1).is_none() && log.producer(2).is_some());
    // A forgotten producer may start anywhere again.
    log.append_as_leader(&mut pbatch(1, 0, 40, 1), 0).unwrap();
}
