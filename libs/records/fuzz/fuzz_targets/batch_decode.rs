//! Arbitrary bytes through the v2 batch decoder: `BatchHeader::parse`,
//! `RecordBatch::parse`, `Batches`, `RecordBatch::records`,
//! `RecordBatch::scan_records` and `RecordBatch::validate_records`.
//!
//! Properties: nothing panics, hangs or allocates absurdly (decompression is
//! capped at `MAX_DECOMPRESSED_BATCH_BYTES`), and the views agree with each
//! other (header vs. bytes, iterator vs. single parse, scan vs. full decode,
//! strict vs. lenient validation, decoded records vs. a re-encoding with
//! `BatchBuilder`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_records::batch::{
    BatchBuilder, BatchHeader, Batches, RECORD_BATCH_OVERHEAD, Record, RecordBatch, TimestampType,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = BatchHeader::parse(data) {
        assert!(data.len() >= RECORD_BATCH_OVERHEAD);
        assert!(header.size() >= RECORD_BATCH_OVERHEAD);
        assert_eq!(header.magic, 2);
        let _ = header.compression();
        let _ = (
            header.timestamp_type(),
            header.is_transactional(),
            header.is_control(),
        );
        let _ = (header.delete_horizon_ms(), header.has_producer_id());
    }

    let single = RecordBatch::parse(data);
    if let Ok((batch, rest)) = &single {
        assert_eq!(batch.size() + rest.len(), data.len());
        assert_eq!(batch.as_bytes(), &data[..batch.size()]);
        check_batch(batch);
    }

    let mut consumed = 0;
    let mut batches = Batches::new(data);
    for (i, item) in batches.by_ref().enumerate() {
        match item {
            Ok(batch) => {
                assert_eq!(batch.as_bytes(), &data[consumed..consumed + batch.size()]);
                if i == 0 {
                    let (first, _) = single.as_ref().expect("iterator and parse disagree");
                    assert_eq!(first.as_bytes(), batch.as_bytes());
                } else {
                    check_batch(&batch);
                }
                consumed += batch.size();
            }
            Err(_) => {
                assert!(consumed < data.len());
                if i == 0 {
                    assert!(single.is_err(), "iterator and parse disagree");
                }
                break;
            }
        }
    }
    assert!(
        batches.next().is_none(),
        "Batches yields nothing after an error or the end"
    );
});

fn check_batch(batch: &RecordBatch<'_>) {
    let h = *batch.header();
    assert_eq!(BatchHeader::parse(batch.as_bytes()).ok(), Some(h));
    assert_eq!(h.size(), batch.size());
    assert_eq!(
        batch.records_payload().len(),
        batch.size() - RECORD_BATCH_OVERHEAD
    );
    assert!(h.records_count >= 0 && h.last_offset_delta >= 0);
    // Offsets of a batch that parsed: what every caller computes first.
    assert!(h.last_offset() >= h.base_offset);
    assert!(h.next_offset() >= h.last_offset());
    if let Some(next) = h.last_offset().checked_add(1) {
        assert_eq!(h.next_offset(), next);
    }
    assert!(i64::from(h.records_count) <= i64::from(h.last_offset_delta) + 1);

    // Drain the iterator: at most `records_count` records, then at most one error.
    let mut decoded: Vec<Record> = Vec::new();
    let mut failed = false;
    if let Ok(records) = batch.records() {
        let mut steps = 0usize;
        for r in records {
            steps += 1;
            assert!(
                steps <= h.records_count as usize + 1,
                "Records runs past its count"
            );
            match r {
                Ok(r) => {
                    assert!(!failed, "Records yields after an error");
                    decoded.push(r);
                }
                Err(_) => failed = true,
            }
        }
        assert!(decoded.len() <= h.records_count as usize);
    } else {
        failed = true;
    }
    let complete = !failed && decoded.len() == h.records_count as usize;

    // The copy-free scan the log validates producer batches with agrees
    // with the full decode: it succeeds exactly when every record decodes,
    // and sees the same offsets, create times and keys.
    let mut scanned = Vec::new();
    let scan = batch.scan_records(|i, r| scanned.push((i, r)));
    assert_eq!(scan.is_ok(), complete, "scan_records and records() disagree");
    if complete && h.timestamp_type() == runnel_records::batch::TimestampType::CreateTime {
        assert_eq!(scanned.len(), decoded.len());
        for ((_, s), d) in scanned.iter().zip(&decoded) {
            assert_eq!(h.base_offset + i64::from(s.offset_delta), d.offset);
            assert_eq!(s.timestamp, d.timestamp);
            assert_eq!(s.has_key, d.key.is_some());
        }
    }

    let strict = batch.validate_records(true);
    let lenient = batch.validate_records(false);
    if strict.is_ok() {
        assert!(
            lenient.is_ok(),
            "strict validation passes but lenient fails"
        );
    }
    if lenient.is_ok() {
        assert!(
            complete,
            "validate_records accepts a batch whose records do not decode"
        );
    }
    if strict.is_ok() {
        round_trip(batch, &decoded);
    }
}

/// Re-encodes decoded records with `BatchBuilder` (same codec) and checks they
/// decode to the same records.
fn round_trip(batch: &RecordBatch<'_>, decoded: &[Record]) {
    let h = batch.header();
    let Ok(codec) = h.compression() else {
        panic!("a batch that validates has a known codec");
    };
    let mut builder = BatchBuilder::new(codec).base_offset(h.base_offset);
    if h.timestamp_type() == TimestampType::LogAppendTime {
        builder = builder.log_append_time(h.max_timestamp);
    }
    for r in decoded {
        builder.append(
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
        );
    }
    let Ok(bytes) = builder.build() else {
        return;
    };
    let (again, rest) = RecordBatch::parse(&bytes).expect("BatchBuilder output parses");
    assert!(rest.is_empty());
    again
        .validate_records(true)
        .expect("BatchBuilder output validates");
    let redecoded: Vec<Record> = again
        .records()
        .expect("BatchBuilder output decompresses")
        .collect::<Result<_, _>>()
        .expect("BatchBuilder output decodes");
    assert_eq!(redecoded, decoded);
}
