//! Disk failures: a full disk refuses operations without changing the log,
//! and a crash at any storage operation leaves a log that opens and holds
//! everything that was acknowledged.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use runnel_log::storage::{FaultyStorage, StdStorage};
use runnel_log::{Log, LogConfig, LogError, ManualClock, Offset};
use runnel_records::batch::{Batches, Compression};

#[derive(Debug, Clone, Copy)]
enum Step {
    Append {
        records: u64,
        value_len: usize,
        epoch: i32,
    },
    Roll,
    Flush,
    Truncate {
        back: i64,
    },
}

/// A workload touching every write path: appends across segment rolls and
/// epoch changes, explicit rolls, flushes (index and checkpoint writes) and
/// a truncation.
fn script() -> Vec<Step> {
    let mut steps = Vec::new();
    for i in 0..24u64 {
        steps.push(Step::Append {
            records: i % 5 + 1,
            value_len: (i as usize * 37) % 300,
            epoch: (i / 8) as i32,
        });
        match i {
            5 | 17 => steps.push(Step::Flush),
            9 => steps.push(Step::Roll),
            13 => steps.push(Step::Truncate { back: 4 }),
            _ => {}
        }
    }
    steps.push(Step::Flush);
    steps
}

fn config() -> LogConfig {
    small_segments(1500)
}

/// Stored batches in order: what the log must serve.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    batches: Vec<Vec<u8>>,
}

impl Model {
    fn bytes(&self) -> Vec<u8> {
        self.batches.concat()
    }
    fn end(&self) -> Offset {
        self.batches.last().map_or(0, |b| next_offset(b))
    }

    /// The model after `truncate_to(target)`: whole batches at or past it go.
    fn truncated(&self, target: Offset) -> Model {
        let mut batches = self.batches.clone();
        batches.retain(|b| next_offset(b) <= target);
        Model { batches }
    }
}

/// Applies one step to the log and, if it succeeds, to the model.
fn apply(log: &mut Log, model: &mut Model, step: Step, key: &mut u64) -> Result<(), LogError> {
    match step {
        Step::Append {
            records,
            value_len,
            epoch,
        } => {
            let codec = Compression::ALL[(*key % 5) as usize];
            let mut b = batch_with(codec, *key, records, value_len, T0 + *key as i64);
            log.append_as_leader(&mut b, epoch)?;
            *key += records;
            model.batches.push(b);
        }
        Step::Roll => log.roll()?,
        Step::Flush => log.flush()?,
        Step::Truncate { back } => {
            let target = model.end() - back;
            log.truncate_to(target)?;
            *model = model.truncated(target);
        }
    }
    Ok(())
}

fn reopen(dir: &Path, clock: &ManualClock) -> Log {
    Log::open_with(dir, config(), Arc::new(StdStorage), Arc::new(clock.clone())).unwrap()
}

#[test]
fn a_full_disk_refuses_writes_and_changes_nothing() {
    let clock = ManualClock::new(T0);
    // The whole workload writes about 6.5 KB; sweep the failure across all of it.
    let mut failures = 0;
    for budget in (0..8_000u64).step_by(7) {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let mut log = open_on(dir.path(), config(), &clock, Arc::new(storage.clone()));
        storage.set_write_budget(Some(budget));
        let mut model = Model::default();
        let mut key = 0;
        for step in script() {
            let before = model.clone();
            if let Err(e) = apply(&mut log, &mut model, step, &mut key) {
                failures += 1;
                assert!(e.is_storage_full(), "budget {budget}, {step:?}: {e}");
                assert_eq!(model, before);
                // Nothing changed: same end, same data, still readable.
                assert_eq!(
                    log.log_end_offset(),
                    model.end(),
                    "budget {budget}, {step:?}"
                );
                assert_eq!(
                    read_all_bytes(&log),
                    model.bytes(),
                    "budget {budget}, {step:?}"
                );
                // Space comes back: the same step now succeeds.
                storage.set_write_budget(None);
                apply(&mut log, &mut model, step, &mut key).unwrap();
            }
            assert_eq!(log.log_end_offset(), model.end());
        }
        assert_eq!(read_all_bytes(&log), model.bytes(), "budget {budget}");
        // A full disk at close: the log is dropped unclosed, and still recovers.
        storage.set_write_budget(Some(0));
        let closed = log.close().is_ok();
        let log = reopen(dir.path(), &clock);
        assert_eq!(log.open_report().clean_shutdown, closed);
        assert_eq!(log.log_end_offset(), model.end(), "budget {budget}");
        assert_eq!(read_all_bytes(&log), model.bytes(), "budget {budget}");
    }
    assert!(failures > 800, "only {failures} injected failures");
}

#[test]
fn a_crash_at_any_storage_operation_keeps_every_acknowledged_write() {
    let clock = ManualClock::new(T0);
    let mut crash_points = 0;
    for fail_after in 0.. {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let mut log = open_on(dir.path(), config(), &clock, Arc::new(storage.clone()));
        storage.fail_after_ops(Some(fail_after));
        let mut model = Model::default();
        let mut key = 0;
        let mut crashed = None;
        for step in script() {
            let before = model.clone();
            if apply(&mut log, &mut model, step, &mut key).is_err() {
                crashed = Some((step, before));
                break;
            }
        }
        let Some((step, before)) = crashed else {
            break; // the whole workload ran: every crash point was tried
        };
        crash_points += 1;
        drop(log); // the process dies
        let log = reopen(dir.path(), &clock);
        let got = read_all_bytes(&log);
        assert_eq!(
            log.log_end_offset(),
            next_offset(&got),
            "crash after {fail_after} ops in {step:?}"
        );
        // Acknowledged steps all happened; the interrupted one may have
        // happened, not happened, or (a truncation) happened in part.
        let old = before.bytes();
        let ok = match step {
            Step::Truncate { back } => {
                let after = before.truncated(before.end() - back);
                old.starts_with(&got) && got.starts_with(&after.bytes())
            }
            Step::Append { .. } => {
                got == old
                    || (got.starts_with(&old) && Batches::new(&got[old.len()..]).count() == 1)
            }
            Step::Roll | Step::Flush => got == old,
        };
        assert!(
            ok,
            "crash after {fail_after} ops in {step:?}: {} bytes served, {} acknowledged",
            got.len(),
            old.len()
        );
    }
    assert!(crash_points > 50, "only {crash_points} crash points");
}
