//! Writes seed inputs for the fuzz targets:
//! `cargo run --example seed_corpus` (from `libs/records/fuzz`).
//!
//! - `corpus/batch_decode/`: batches built with `BatchBuilder` for every codec
//!   (the real client captures in `libs/records/tests/data/kafka-batches/*.bin`
//!   are copied in separately, see README.md).

use std::path::Path;

use runnel_records::batch::{BatchBuilder, Compression, Header};

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
}
