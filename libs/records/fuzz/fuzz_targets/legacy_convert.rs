//! Arbitrary bytes as a producer's message set of magic 0 or 1 through
//! `legacy::up_convert`, and what it makes back through
//! `legacy::down_convert`.
//!
//! The input's messages get their CRC-32 mended first (as far as the bytes
//! have the shape of messages), so the fuzzer reaches past the CRC check
//! into attributes, keys, values and compressed wrappers.
//!
//! Properties: nothing panics, hangs or allocates past the caps; a message
//! set that converts makes one valid v2 batch whose records all decode;
//! converted back to either old format and up again, the same keys and
//! values come out, in order (timestamps too, through magic 1).

#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_records::batch::RecordBatch;
use runnel_records::batch::legacy::{MAGIC_V0, MAGIC_V1, down_convert, up_convert};

type Plain = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

fn records_of(batch: &[u8]) -> Vec<Plain> {
    let (batch, rest) = RecordBatch::parse(batch).expect("up_convert makes one valid batch");
    assert!(rest.is_empty(), "up_convert makes exactly one batch");
    batch
        .records()
        .expect("its records decode")
        .map(|r| {
            let r = r.expect("every record decodes");
            (
                r.timestamp,
                r.key.map(|k| k.to_vec()),
                r.value.map(|v| v.to_vec()),
            )
        })
        .collect()
}

/// Recomputes each message's CRC where the bytes allow (top level only).
fn mend_crcs(data: &mut [u8]) {
    let mut at = 0;
    while at + 12 <= data.len() {
        let size = i32::from_be_bytes(data[at + 8..at + 12].try_into().expect("4 bytes"));
        let Ok(size) = usize::try_from(size) else { return };
        let end = at + 12 + size;
        if size < 4 || end > data.len() {
            return;
        }
        let crc = crc32fast::hash(&data[at + 16..end]);
        data[at + 12..at + 16].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

fuzz_target!(|data: &[u8]| {
    // As sent, and with the CRCs mended.
    let _ = up_convert(data);
    let mut mended = data.to_vec();
    mend_crcs(&mut mended);
    let Ok(batch) = up_convert(&mended) else { return };
    let records = records_of(&batch);
    assert!(!records.is_empty(), "an empty conversion is an error");
    for magic in [MAGIC_V0, MAGIC_V1] {
        let set = down_convert(&batch, magic, 0, usize::MAX).expect("our own batch converts");
        let again = records_of(&up_convert(&set).expect("what we wrote converts back"));
        assert_eq!(again.len(), records.len());
        for (a, b) in again.iter().zip(&records) {
            assert_eq!((&a.1, &a.2), (&b.1, &b.2), "keys and values survive");
            if magic == MAGIC_V1 {
                assert_eq!(a.0, b.0, "timestamps survive magic 1");
            }
        }
    }
});
