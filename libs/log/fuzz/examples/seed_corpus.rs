//! Writes seed inputs for the `segment_recovery` fuzz target:
//! `cargo run --example seed_corpus` (from `libs/log/fuzz`).
//!
//! - `corpus/segment_recovery/`: an undamaged run and a few typical damages
//!   for every template (the batch decoder's seeds are `libs/records/fuzz`'s).

use std::path::Path;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
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
