//! Recovery of a damaged partition directory.
//!
//! A few template partitions are built once per process with the real API
//! (`Log::open` + `append_as_leader`), either dropped without closing
//! (unclean) or closed cleanly (clean: `.clean-shutdown` marker, index files).
//! Each run copies one into a fresh temp dir, damages it as the fuzz input
//! says (truncation, byte flips, overwrites, appended garbage, copies of real
//! batches with patched base offsets, garbage `.index` / `.timeindex`), opens
//! it with `LogConfig::default()` and checks what a user relies on:
//!
//! - open succeeds (recovery's job is to make a damaged segment usable);
//! - `log_start_offset() <= log_end_offset()`, and the bytes kept plus the
//!   bytes `OpenReport::truncated_bytes` says were cut add up to the file;
//! - reading from the log start to the end (`read(offset, 1 << 20, None,
//!   true)`) returns only batches that parse and CRC-check, with strictly
//!   increasing offsets, covering every byte of the log and ending at the log
//!   end offset; every template batch wholly before the first damaged byte is
//!   still there, byte for byte;
//! - reads with a small `max_bytes` and from arbitrary offsets agree with it;
//! - a further `append_as_leader` lands exactly at the previous log end;
//! - `close()` then reopening gives the same log end offset and the same bytes.
//!
//! Clean-shutdown templates only get damage a clean shutdown cannot rule out
//! cheaply: a cut or extended tail and damaged index files. (After a clean
//! shutdown the log trusts batches before the last index entry without
//! re-checking their CRCs, as Kafka does, so flipping bytes there is out of
//! scope.)

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use runnel_log::{Log, LogConfig, Offset};
use runnel_records::batch::{BatchBuilder, Compression, Header, RecordBatch, TimestampType};

const LOG_FILE: &str = "00000000000000000000.log";
const INDEX_FILE: &str = "00000000000000000000.index";
const TIME_INDEX_FILE: &str = "00000000000000000000.timeindex";
const TS: i64 = 1_700_000_000_000;
/// Epoch the templates end with, and the one the post-recovery append uses.
const EPOCH: i32 = 2;

/// One template partition directory, in memory.
struct Template {
    clean: bool,
    log: Vec<u8>,
    index: Option<Vec<u8>>,
    time_index: Option<Vec<u8>>,
    /// Every other file of the directory (checkpoints, clean-shutdown marker).
    others: Vec<(String, Vec<u8>)>,
    /// `[start, end)` of every batch in `log`.
    batches: Vec<(usize, usize)>,
}

fn templates() -> &'static [Template] {
    static TEMPLATES: OnceLock<Vec<Template>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut all = Vec::new();
        for spec in 0..4 {
            for clean in [false, true] {
                all.push(build_template(spec, clean));
            }
        }
        all
    })
}

/// Deterministic filler so compressed batches keep a realistic size.
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half random, half repetitive: compressible but not trivially.
            if i % 2 == 0 {
                x as u8
            } else {
                b'a' + (i % 7) as u8
            }
        })
        .collect()
}

/// The batches (as producers would send them) of template `spec`.
fn template_batches(spec: u32) -> (LogConfig, Vec<Vec<u8>>) {
    let mut config = LogConfig::default();
    let mut out = Vec::new();
    match spec {
        // A few small uncompressed batches.
        0 => {
            for i in 0..4u64 {
                let mut b = BatchBuilder::new(Compression::None);
                for r in 0..=i {
                    let key = format!("k{i}-{r}");
                    b.append(
                        TS + (i * 10 + r) as i64,
                        Some(key.as_bytes()),
                        Some(b"v"),
                        &[],
                    );
                }
                out.push(b.build().expect("build"));
            }
        }
        // One batch per codec, with headers, null keys and tombstones.
        1 => {
            for (i, codec) in Compression::ALL.into_iter().enumerate() {
                let mut b = BatchBuilder::new(codec);
                let value = filler(i as u64, 40 + i * 30);
                b.append(TS + i as i64, Some(b"key"), Some(&value), &[]);
                b.append(
                    TS + i as i64 + 1,
                    None,
                    Some(b"no key"),
                    &[
                        Header::new(&b"h1"[..], Some(&b"x"[..])),
                        Header::new(&b"h2"[..], None::<&[u8]>),
                    ],
                );
                b.append(TS + i as i64 + 2, Some(b"gone"), None, &[]);
                out.push(b.build().expect("build"));
            }
        }
        // Enough bytes for several offset/time index entries (every 4096 bytes).
        2 => {
            for i in 0..24u64 {
                let codec = Compression::ALL[(i % 5) as usize];
                let mut b = BatchBuilder::new(codec);
                for r in 0..(1 + i % 3) {
                    let value = filler(i * 7 + r, 300);
                    b.append(
                        TS + (i * 100 + r) as i64,
                        Some(format!("k{r}").as_bytes()),
                        Some(&value),
                        &[],
                    );
                }
                out.push(b.build().expect("build"));
            }
        }
        // LogAppendTime log; idempotent, transactional and control batches.
        _ => {
            config.message_timestamp_type = TimestampType::LogAppendTime;
            for i in 0..6i32 {
                let codec = if i % 2 == 0 {
                    Compression::Zstd
                } else {
                    Compression::None
                };
                let mut b = BatchBuilder::new(codec).producer(7, 1, i * 2);
                if i >= 3 {
                    b = b.transactional(true);
                }
                b.append(
                    TS + i64::from(i),
                    Some(b"a"),
                    Some(&filler(i as u64, 64)),
                    &[],
                );
                b.append(TS + i64::from(i), Some(b"b"), Some(b"2"), &[]);
                out.push(b.build().expect("build"));
            }
            // A COMMIT marker: key = version 0, type 1; value = version 0, coordinator epoch 0.
            let mut b = BatchBuilder::new(Compression::None)
                .producer(7, 1, -1)
                .transactional(true)
                .control(true);
            b.append(TS + 10, Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 0]), &[]);
            out.push(b.build().expect("build"));
        }
    }
    (config, out)
}

fn build_template(spec: u32, clean: bool) -> Template {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("t-0");
    let (config, batches) = template_batches(spec);
    let mut log = Log::open(&dir, config).expect("open template log");
    let half = batches.len() / 2;
    for (i, mut b) in batches.into_iter().enumerate() {
        let epoch = if i < half { 0 } else { EPOCH };
        log.append_as_leader(&mut b, epoch)
            .expect("append to template log");
    }
    if clean {
        log.close().expect("close template log");
    } else {
        drop(log); // a crash: nothing flushed, no marker
    }

    let mut t = Template {
        clean,
        log: Vec::new(),
        index: None,
        time_index: None,
        others: Vec::new(),
        batches: Vec::new(),
    };
    for entry in std::fs::read_dir(&dir).expect("list template") {
        let entry = entry.expect("list template");
        let name = entry.file_name().into_string().expect("utf-8 name");
        let bytes = std::fs::read(entry.path()).expect("read template");
        match name.as_str() {
            LOG_FILE => t.log = bytes,
            INDEX_FILE => t.index = Some(bytes),
            TIME_INDEX_FILE => t.time_index = Some(bytes),
            _ => t.others.push((name, bytes)),
        }
    }
    t.others.sort();
    let mut pos = 0;
    let mut rest = &t.log[..];
    while !rest.is_empty() {
        let (batch, tail) = RecordBatch::parse(rest).expect("template batches are valid");
        t.batches.push((pos, pos + batch.size()));
        pos += batch.size();
        rest = tail;
    }
    assert_eq!(clean, t.others.iter().any(|(n, _)| n == ".clean-shutdown"));
    t
}

/// `RUNNEL_FUZZ_DEBUG=1` prints the template, the damage and the open report
/// (for triage: run the target binary on one input).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("RUNNEL_FUZZ_DEBUG").is_some())
}

/// An index file as hex entries of `N` bytes (a trailing partial entry last).
fn entries<const N: usize>(file: &[u8]) -> Vec<String> {
    file.chunks(N)
        .map(|c| c.iter().map(|b| format!("{b:02x}")).collect())
        .collect()
}

/// Reads fuzz bytes; returns zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) << 8 | u16::from(self.u8())
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) << 16 | u32::from(self.u16())
    }
    fn i64(&mut self) -> i64 {
        (i64::from(self.u32()) << 32) | i64::from(self.u32())
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Applies one damage op to an index file's bytes.
fn damage_index(file: &mut Option<Vec<u8>>, input: &mut Input<'_>) {
    match input.u8() % 4 {
        0 => {
            let n = input.u8() as usize;
            *file = Some(input.bytes(n).to_vec());
        }
        1 => {
            let (pos, x) = (input.u16() as usize, input.u8());
            if let Some(f) = file.as_mut().filter(|f| !f.is_empty()) {
                let len = f.len();
                f[pos % len] ^= x;
            }
        }
        2 => {
            let len = input.u16() as usize;
            if let Some(f) = file.as_mut() {
                f.truncate(len % (f.len() + 1));
            }
        }
        _ => *file = None,
    }
}

/// Whole batches read from `log`, starting at `from`, `max_bytes` per read.
fn read_all(log: &Log, from: Offset, max_bytes: usize) -> Vec<Vec<u8>> {
    let end = log.log_end_offset();
    let mut offset = from;
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut prev_last: Option<Offset> = None;
    while offset < end {
        let bytes = log.read(offset, max_bytes, None, true).unwrap_or_else(|e| {
            panic!("read({offset}) in [{}, {end}]: {e}", log.log_start_offset())
        });
        assert!(
            !bytes.is_empty(),
            "read({offset}) below the log end {end} returned nothing"
        );
        let mut rest = &bytes[..];
        let mut count = 0;
        while !rest.is_empty() {
            let (batch, tail) = RecordBatch::parse(rest)
                .unwrap_or_else(|e| panic!("read({offset}) returned an invalid batch: {e}"));
            let h = batch.header();
            if count == 0 {
                assert!(
                    h.last_offset() >= offset,
                    "read({offset}) starts with a batch ending at {}",
                    h.last_offset()
                );
            }
            if let Some(p) = prev_last {
                assert!(
                    h.base_offset > p,
                    "offsets go from {p} to {}",
                    h.base_offset
                );
            }
            assert!(
                h.last_offset() < end,
                "batch ends at {} past the log end {end}",
                h.last_offset()
            );
            prev_last = Some(h.last_offset());
            out.push(batch.as_bytes().to_vec());
            count += 1;
            rest = tail;
        }
        assert!(
            bytes.len() <= max_bytes || count == 1,
            "read({offset}, {max_bytes}) returned {count} batches in {} bytes",
            bytes.len()
        );
        offset = prev_last.expect("at least one batch") + 1;
    }
    out
}

fn last_offset(batch: &[u8]) -> Offset {
    RecordBatch::parse(batch)
        .expect("checked")
        .0
        .header()
        .last_offset()
}

fn scratch_dir() -> tempfile::TempDir {
    // tmpfs makes the many fsyncs of open/append/close cheap.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("runnel-fuzz-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::Builder::new()
        .prefix("runnel-fuzz-")
        .tempdir()
        .expect("tempdir")
}

fn write_dir(
    dir: &PathBuf,
    t: &Template,
    log: &[u8],
    index: &Option<Vec<u8>>,
    time_index: &Option<Vec<u8>>,
) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join(LOG_FILE), log).expect("write log");
    if let Some(i) = index {
        std::fs::write(dir.join(INDEX_FILE), i).expect("write index");
    }
    if let Some(i) = time_index {
        std::fs::write(dir.join(TIME_INDEX_FILE), i).expect("write time index");
    }
    for (name, bytes) in &t.others {
        std::fs::write(dir.join(name), bytes).expect("write file");
    }
}

fuzz_target!(|data: &[u8]| {
    let all = templates();
    let mut input = Input(data);
    let t = &all[input.u8() as usize % all.len()];
    let read_size = match input.u8() % 8 {
        0 => 1,
        1 => 61,
        2 => 200,
        3 => 1000,
        4 => 4096,
        5 => 1 << 20,
        _ => input.u16() as usize,
    };
    let probe = input.u32();

    // Damage.
    let mut log_bytes = t.log.clone();
    let mut index = t.index.clone();
    let mut time_index = t.time_index.clone();
    let mut damaged_from = log_bytes.len();
    let mut ops = 0;
    while !input.is_empty() && ops < 32 {
        ops += 1;
        let op = input.u8() % 8;
        match op {
            // Cut the file.
            0 => {
                let len = input.u32() as usize % (log_bytes.len() + 1);
                log_bytes.truncate(len);
                damaged_from = damaged_from.min(len);
            }
            // Append garbage.
            1 => {
                let n = input.u8() as usize;
                damaged_from = damaged_from.min(log_bytes.len());
                log_bytes.extend_from_slice(input.bytes(n));
            }
            2 => damage_index(&mut index, &mut input),
            3 => damage_index(&mut time_index, &mut input),
            // The rest changes bytes a clean shutdown vouches for.
            _ if t.clean => {}
            // Flip a byte.
            4 => {
                let (pos, x) = (input.u32() as usize, input.u8());
                if !log_bytes.is_empty() && x != 0 {
                    let pos = pos % log_bytes.len();
                    log_bytes[pos] ^= x;
                    damaged_from = damaged_from.min(pos);
                }
            }
            // Overwrite a range.
            5 => {
                let pos = input.u32() as usize % (log_bytes.len() + 1);
                let n = input.u8() as usize;
                let src = input.bytes(n).to_vec();
                let end = (pos + src.len()).min(log_bytes.len());
                if log_bytes[pos..end] != src[..end - pos] {
                    damaged_from = damaged_from.min(pos);
                }
                log_bytes[pos..end].copy_from_slice(&src[..end - pos]);
            }
            // Append a copy of a real batch (valid CRC) with a chosen base offset.
            6 => {
                let k = input.u8() as usize % t.batches.len();
                let base = input.i64();
                let (s, e) = t.batches[k];
                let mut copy = t.log[s..e].to_vec();
                copy[..8].copy_from_slice(&base.to_be_bytes());
                damaged_from = damaged_from.min(log_bytes.len());
                log_bytes.extend_from_slice(&copy);
            }
            // Patch the base offset of a batch in place (outside the CRC).
            _ => {
                let k = input.u8() as usize % t.batches.len();
                let base = input.i64();
                let (s, e) = t.batches[k];
                if e <= log_bytes.len() && log_bytes[s..s + 8] != base.to_be_bytes() {
                    log_bytes[s..s + 8].copy_from_slice(&base.to_be_bytes());
                    damaged_from = damaged_from.min(s);
                }
            }
        }
    }
    if debug() {
        eprintln!(
            "template clean={} batches(start,end)={:?}\nlog: {} -> {} bytes, damaged from {damaged_from}\nindex {:?} -> {:?}\ntimeindex {:?} -> {:?}",
            t.clean,
            t.batches,
            t.log.len(),
            log_bytes.len(),
            t.index.as_deref().map(entries::<8>),
            index.as_deref().map(entries::<8>),
            t.time_index.as_deref().map(entries::<12>),
            time_index.as_deref().map(entries::<12>),
        );
    }
    let intact: Vec<&[u8]> = t
        .batches
        .iter()
        .take_while(|&&(_, e)| e <= damaged_from)
        .map(|&(s, e)| &t.log[s..e])
        .collect();

    let tmp = scratch_dir();
    let dir = tmp.path().join("t-0");
    write_dir(&dir, t, &log_bytes, &index, &time_index);

    // Open and recover.
    let log = match Log::open(&dir, LogConfig::default()) {
        Ok(log) => log,
        Err(e) => panic!("open failed (clean={}): {e}", t.clean),
    };
    let start = log.log_start_offset();
    let end = log.log_end_offset();
    assert!(start <= end, "log start {start} > log end {end}");
    assert_eq!(start, 0, "nothing moved the log start");
    let report = log.open_report().clone();
    if debug() {
        eprintln!(
            "opened: start {start} end {end} size {} {report:?}",
            log.size_bytes()
        );
    }
    assert_eq!(
        log.size_bytes() + report.truncated_bytes,
        log_bytes.len() as u64,
        "kept + truncated bytes != file size ({report:?})"
    );

    let batches = read_all(&log, start, 1 << 20);
    let total: usize = batches.iter().map(Vec::len).sum();
    assert_eq!(total as u64, log.size_bytes(), "reads do not cover the log");
    match batches.last() {
        Some(b) => assert_eq!(
            last_offset(b) + 1,
            end,
            "log end is not after the last batch"
        ),
        None => assert_eq!(end, 0),
    }
    assert!(
        batches.len() >= intact.len(),
        "lost intact batches: kept {} of {}",
        batches.len(),
        intact.len()
    );
    for (i, (got, want)) in batches.iter().zip(&intact).enumerate() {
        assert!(got == want, "intact batch {i} changed");
    }

    // Small reads and reads from arbitrary offsets agree with the big read.
    assert_eq!(
        read_all(&log, start, read_size),
        batches,
        "read with max_bytes {read_size}"
    );
    if end > 0 {
        let from = i64::from(probe) % (end + 1);
        let skip = batches.iter().take_while(|b| last_offset(b) < from).count();
        assert_eq!(
            read_all(&log, from, 1 << 20),
            batches[skip..],
            "read from {from}"
        );
    }

    // The next append lands at the log end.
    let mut log = log;
    let mut b = BatchBuilder::new(Compression::None);
    b.append(TS + 1000, Some(b"after"), Some(b"recovery"), &[]);
    let mut appended = b.build().expect("build");
    let info = log
        .append_as_leader(&mut appended, EPOCH)
        .expect("append after recovery");
    assert_eq!(info.first_offset, end);
    assert_eq!(log.log_end_offset(), end + 1);
    let mut expected = batches;
    expected.push(appended.clone());
    assert_eq!(
        log.read(end, 1 << 20, None, true).expect("read appended"),
        appended
    );
    assert_eq!(read_all(&log, start, 1 << 20), expected);

    // Close and reopen: same end, same bytes, and the shutdown was clean.
    log.close().expect("close");
    let log = Log::open(&dir, LogConfig::default()).expect("reopen");
    assert!(log.open_report().clean_shutdown);
    assert_eq!(log.open_report().truncated_bytes, 0);
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.log_end_offset(), end + 1);
    assert_eq!(
        read_all(&log, start, 1 << 20),
        expected,
        "bytes changed across close/reopen"
    );
    drop(log);
});
