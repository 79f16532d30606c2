//! Crash recovery: torn and corrupt tails, damage in earlier segments, and
//! random histories of appends, truncations and crashes checked against a model.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use proptest::prelude::*;
use runnel_log::{LogConfig, ManualClock, Offset};
use runnel_records::batch::Compression;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in files(from) {
        std::fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

fn config() -> LogConfig {
    small_segments(2048)
}

/// A log of 3-record batches spread over several segments; returns the
/// batches (as stored) and the last segment's path.
fn build(dir: &Path, clock: &ManualClock, clean: bool) -> (Vec<Vec<u8>>, PathBuf) {
    let mut log = open(dir, config(), clock);
    let mut batches = Vec::new();
    for i in 0..60u64 {
        let codec = Compression::ALL[i as usize % 5];
        let mut b = batch_with(codec, i * 3, 3, 90, T0 + i as i64);
        log.append_as_leader(&mut b, 1).unwrap();
        batches.push(b);
    }
    let last = *log.segment_base_offsets().last().unwrap();
    if clean {
        log.close().unwrap();
    }
    (batches, dir.join(format!("{last:020}.log")))
}

/// Opens the damaged copy and checks: exactly the batches before the damage
/// are served, the log ends where they end, and appends continue there.
fn check_recovers_to(dir: &Path, clock: &ManualClock, kept: &[Vec<u8>]) {
    let mut log = open(dir, config(), clock);
    let expected: Vec<u8> = kept.concat();
    assert_eq!(read_all_bytes(&log), expected);
    let end = kept.last().map_or(0, |b| next_offset(b));
    assert_eq!(log.log_end_offset(), end);
    let info = log.append_as_leader(&mut batch(0, 2, 5, T0), 2).unwrap();
    assert_eq!(info.first_offset, end);
    drop(log);
    // And the result is stable across another (unclean) restart.
    let log = open(dir, config(), clock);
    assert_eq!(log.log_end_offset(), end + 2);
}

#[test]
fn a_cut_anywhere_in_the_last_batch_loses_only_that_batch() {
    for clean in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let template = root.path().join("template");
        let (batches, last_segment) = build(&template, &clock, clean);
        let size = std::fs::metadata(&last_segment).unwrap().len() as usize;
        let last_len = batches.last().unwrap().len();
        let name = last_segment.file_name().unwrap().to_owned();
        for cut in size - last_len..size {
            let dir = root.path().join(format!("cut-{clean}-{cut}"));
            copy_dir(&template, &dir);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(&name))
                .unwrap();
            f.set_len(cut as u64).unwrap();
            check_recovers_to(&dir, &clock, &batches[..batches.len() - 1]);
            std::fs::remove_dir_all(&dir).unwrap();
        }
        // No cut: nothing lost.
        let dir = root.path().join("whole");
        copy_dir(&template, &dir);
        check_recovers_to(&dir, &clock, &batches);
    }
}

#[test]
fn a_flipped_byte_in_the_last_batch_loses_only_that_batch() {
    // Base offset (bytes 0..8) and leader epoch (12..16) are outside the v2
    // format's CRC by design (the broker rewrites them), so they are not
    // corruption the log can see; every other byte is covered.
    for clean in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let template = root.path().join("template");
        let (batches, last_segment) = build(&template, &clock, clean);
        let size = std::fs::metadata(&last_segment).unwrap().len() as usize;
        let start = size - batches.last().unwrap().len();
        let name = last_segment.file_name().unwrap().to_owned();
        let original = std::fs::read(&last_segment).unwrap();
        for pos in (start + 8..start + 12).chain(start + 16..size) {
            for mask in [0x01u8, 0x80] {
                let dir = root.path().join(format!("flip-{clean}-{pos}-{mask}"));
                copy_dir(&template, &dir);
                let mut bytes = original.clone();
                bytes[pos] ^= mask;
                std::fs::write(dir.join(&name), &bytes).unwrap();
                check_recovers_to(&dir, &clock, &batches[..batches.len() - 1]);
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
    }
}

#[test]
fn damage_in_an_earlier_segment_cuts_the_log_there() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let dir = root.path().join("log");
    let (batches, _) = build(&dir, &clock, false);
    let log = open(&dir, config(), &clock);
    let bases = log.segment_base_offsets();
    drop(log);
    assert!(bases.len() >= 4, "{bases:?}");
    // Find the batch that starts segment 2 and corrupt its CRC'd body.
    let victim = batches
        .iter()
        .position(|b| next_offset(b) > bases[2])
        .unwrap();
    let seg = dir.join(format!("{:020}.log", bases[2]));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    // Force a full scan: as if the crash came before any flush.
    std::fs::remove_file(dir.join("recovery-point-checkpoint")).ok();
    let log = open(&dir, config(), &clock);
    assert_eq!(log.open_report().deleted_segments, bases.len() - 3);
    assert_eq!(log.segment_base_offsets(), bases[..3].to_vec());
    drop(log);
    check_recovers_to(&dir, &clock, &batches[..victim]);
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: u64,
        value_len: usize,
        codec: usize,
    },
    Truncate {
        back: u64,
    },
    Flush,
    Roll,
    CloseAndReopen,
    CrashAndReopen,
    TornTail {
        cut: usize,
    },
    AdvanceStart {
        by: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u64..20, 0usize..400, 0usize..5).prop_map(|(records, value_len, codec)| Op::Append { records, value_len, codec }),
        1 => (0u64..30).prop_map(|back| Op::Truncate { back }),
        1 => Just(Op::Flush),
        1 => Just(Op::Roll),
        1 => Just(Op::CloseAndReopen),
        1 => Just(Op::CrashAndReopen),
        1 => (1usize..600).prop_map(|cut| Op::TornTail { cut }),
        1 => (0u64..10).prop_map(|by| Op::AdvanceStart { by }),
    ]
}

/// Stored batches, in order, as the model of what the log must serve.
struct Model {
    batches: Vec<Vec<u8>>,
    start: Offset,
}

impl Model {
    fn end(&self) -> Offset {
        self.batches.last().map_or(self.start, |b| next_offset(b))
    }
    /// What the log serves from its start: every batch that ends after it.
    fn served(&self) -> Vec<u8> {
        self.batches
            .iter()
            .filter(|b| next_offset(b) > self.start)
            .flatten()
            .copied()
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_match_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let cfg = small_segments(3000);
        let mut log = open(dir.path(), cfg.clone(), &clock);
        let mut model = Model { batches: Vec::new(), start: 0 };
        let mut key = 0u64;
        for op in ops {
            match op {
                Op::Append { records, value_len, codec } => {
                    let mut b = batch_with(Compression::ALL[codec], key, records, value_len, T0 + key as i64);
                    key += records;
                    let info = log.append_as_leader(&mut b, 0).unwrap();
                    prop_assert_eq!(info.first_offset, model.end());
                    model.batches.push(b);
                }
                Op::Truncate { back } => {
                    let target = (model.end() - back as i64).max(model.start);
                    log.truncate_to(target).unwrap();
                    model.batches.retain(|b| next_offset(b) <= target);
                    if model.end() < model.start {
                        // The batch holding the log start went with it: the
                        // log restarts empty at its start.
                        model.batches.clear();
                    }
                    prop_assert_eq!(log.log_end_offset(), model.end());
                }
                Op::Flush => log.flush().unwrap(),
                Op::Roll => log.roll().unwrap(),
                Op::CloseAndReopen => {
                    log.close().unwrap();
                    log = open(dir.path(), cfg.clone(), &clock);
                    prop_assert!(log.open_report().clean_shutdown);
                }
                Op::CrashAndReopen => {
                    drop(log);
                    log = open(dir.path(), cfg.clone(), &clock);
                }
                Op::TornTail { cut } => {
                    // A crash that loses the end of the active segment's last write.
                    let active = *log.segment_base_offsets().last().unwrap();
                    drop(log);
                    let path = dir.path().join(format!("{active:020}.log"));
                    let len = std::fs::metadata(&path).unwrap().len();
                    let new_len = len.saturating_sub(cut as u64);
                    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(new_len).unwrap();
                    // Batches in the active segment, and which of them survive.
                    let mut pos = 0u64;
                    let first_active = model.batches.iter().position(|b| next_offset(b) > active).unwrap_or(model.batches.len());
                    let mut keep = first_active;
                    for b in &model.batches[first_active..] {
                        pos += b.len() as u64;
                        if pos > new_len { break; }
                        keep += 1;
                    }
                    model.batches.truncate(keep);
                    if model.end() < model.start {
                        model.batches.clear();
                    }
                    log = open(dir.path(), cfg.clone(), &clock);
                }
                Op::AdvanceStart { by } => {
                    let target = (model.start + by as i64).min(model.end());
                    log.advance_log_start_offset(target).unwrap();
                    model.start = model.start.max(target);
                }
            }
            prop_assert_eq!(log.log_end_offset(), model.end());
            prop_assert_eq!(log.log_start_offset(), model.start);
            prop_assert_eq!(read_all_bytes(&log), model.served());
        }
        log.close().unwrap();
        let log = open(dir.path(), cfg, &clock);
        prop_assert_eq!(log.log_end_offset(), model.end());
        prop_assert_eq!(read_all_bytes(&log), model.served());
    }
}
