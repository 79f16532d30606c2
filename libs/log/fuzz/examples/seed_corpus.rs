//! Writes seed inputs for the fuzz targets:
//! `cargo run --example seed_corpus` (from `libs/log/fuzz`).
//!
//! - `corpus/batch_decode/`: batches built with `BatchBuilder` for every codec
//!   (the real client captures in `libs/log/tests/data/kafka-batches/*.bin`
//!   are copied in separately, see README.md);
//! - `corpus/segment_recovery/`: an undamaged run and a few typical damages
//!   for every template.

use std::path::Path;

use runnel_log::batch::{BatchBuilder, Compression, Header};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let decode = root.join("batch_decode");
    let ts = 1_700_000_000_000;
    for codec in Compression::ALL {
        // Several records with keys, null keys, tombstones and headers.
        let mut b = BatchBuilder::new(codec);
        b.append(ts, Some(b"key-1"), Some(b"value-1"), &[]);
        b.append(
            ts + 5,
            None,
            Some(&[7u8; 300]),
            &[Header::new(&b"trace"[..], Some(&b"abc"[..]))],
        );
        b.append(
            ts + 9,
            Some(b"key-1"),
            None,
            &[Header::new(&b"null"[..], None::<&[u8]>)],
        );
        let several = b.build().expect("build");
        write(&decode, &format!("builder-{codec}.bin"), &several);

        // Idempotent producer, LogAppendTime, and a compacted batch with a gap.
        let mut b = BatchBuilder::new(codec)
            .producer(42, 3, 17)
            .log_append_time(ts + 100);
        b.append(ts, Some(b"k"), Some(b"v"), &[]);
        let idem = b.build().expect("build");
        write(&decode, &format!("builder-{codec}-idem-lat.bin"), &idem);
        let mut b = BatchBuilder::new(codec)
            .base_offset(1000)
            .last_offset_delta(9);
        b.append_with_offset_delta(2, ts, Some(b"a"), Some(b"1"), &[]);
        b.append_with_offset_delta(7, ts + 1, Some(b"b"), Some(b"2"), &[]);
        let compacted = b.build().expect("build");
        write(
            &decode,
            &format!("builder-{codec}-compacted.bin"),
            &compacted,
        );

        // Two batches back to back, for `Batches`.
        let mut two = several.clone();
        two.extend_from_slice(&idem);
        write(&decode, &format!("builder-{codec}-two.bin"), &two);
    }
    let empty = BatchBuilder::new(Compression::None).build().expect("build");
    write(&decode, "builder-empty.bin", &empty);

    // segment_recovery: template, read size selector, probe (u32), then ops.
    let recovery = root.join("segment_recovery");
    for t in 0u8..8 {
        write(&recovery, &format!("t{t}-intact"), &[t, 5, 0, 0, 0, 0]);
        write(&recovery, &format!("t{t}-small-reads"), &[t, 0, 0, 0, 0, 3]);
        // Cut mid-file.
        write(
            &recovery,
            &format!("t{t}-cut"),
            &[t, 5, 0, 0, 0, 1, 0, 0, 0, 0, 200],
        );
        // Garbage tail.
        write(
            &recovery,
            &format!("t{t}-garbage"),
            &[t, 5, 0, 0, 0, 1, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8],
        );
        // Flip a byte in the middle, garbage index files.
        write(
            &recovery,
            &format!("t{t}-flip"),
            &[
                t, 2, 0, 0, 0, 9, 4, 0, 0, 0, 150, 0x40, 2, 0, 4, 1, 2, 3, 4, 3, 0, 5, 9, 9, 9, 9,
                9,
            ],
        );
        // A copy of batch 0 appended with base offset 1_000_000.
        write(
            &recovery,
            &format!("t{t}-copy"),
            &[t, 5, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40],
        );
        // Batch 1 renumbered to offset 0 (going backwards).
        write(
            &recovery,
            &format!("t{t}-backwards"),
            &[t, 5, 0, 0, 0, 0, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        // Index files cut and deleted.
        write(
            &recovery,
            &format!("t{t}-index"),
            &[t, 4, 0, 0, 0, 0, 2, 2, 0, 4, 3, 3],
        );
    }
}
