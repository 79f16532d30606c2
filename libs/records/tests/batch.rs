//! Property tests of the record batch format: encode/decode round trips with
//! every codec, header patching, and hostile bytes.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::cases;
use proptest::prelude::*;
use runnel_records::batch::{
    BatchBuilder, BatchError, BatchHeader, Batches, Compression, Header, RecordBatch,
    RecordBatchMut, TimestampType,
};

#[derive(Debug, Clone)]
struct Rec {
    ts_delta: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn bytes_opt(max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::weighted(0.85, proptest::collection::vec(any::<u8>(), 0..max))
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        -100_000i64..100_000,
        bytes_opt(40),
        bytes_opt(600),
        proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..10), bytes_opt(20)),
            0..4,
        ),
    )
        .prop_map(|(ts_delta, key, value, headers)| Rec {
            ts_delta,
            key,
            value,
            headers,
        })
}

fn codec() -> impl Strategy<Value = Compression> {
    proptest::sample::select(Compression::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn encode_decode_round_trips(
        codec in codec(),
        records in proptest::collection::vec(rec(), 0..60),
        base_offset in 0i64..1 << 40,
        epoch in -1i32..1000,
        producer in (-1i64..10_000, -1i16..100, -1i32..1_000_000),
        transactional: bool,
        log_append in proptest::option::of(0i64..1 << 42),
    ) {
        let t0 = 1_700_000_000_000i64;
        let mut b = BatchBuilder::new(codec)
            .base_offset(base_offset)
            .partition_leader_epoch(epoch)
            .producer(producer.0, producer.1, producer.2)
            .transactional(transactional);
        if let Some(t) = log_append {
            b = b.log_append_time(t);
        }
        for r in &records {
            let headers: Vec<Header> = r.headers.iter().map(|(k, v)| Header::new(k.clone(), v.clone())).collect();
            b.append(t0 + r.ts_delta, r.key.as_deref(), r.value.as_deref(), &headers);
        }
        let bytes = b.build().unwrap();
        let (batch, rest) = RecordBatch::parse(&bytes).unwrap();
        prop_assert!(rest.is_empty());
        let h = batch.header();
        prop_assert_eq!(h.base_offset, base_offset);
        prop_assert_eq!(h.partition_leader_epoch, epoch);
        prop_assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), producer);
        prop_assert_eq!(h.is_transactional(), transactional);
        prop_assert_eq!(h.compression().unwrap(), codec);
        prop_assert_eq!(h.records_count as usize, records.len());
        prop_assert_eq!(h.timestamp_type(), if log_append.is_some() { TimestampType::LogAppendTime } else { TimestampType::CreateTime });
        if !records.is_empty() {
            prop_assert_eq!(h.last_offset_delta as usize, records.len() - 1);
            let max = log_append.unwrap_or_else(|| records.iter().map(|r| t0 + r.ts_delta).max().unwrap());
            prop_assert_eq!(h.max_timestamp, max);
            batch.validate_records(true).unwrap();
        }
        let decoded: Vec<_> = batch.records().unwrap().map(Result::unwrap).collect();
        prop_assert_eq!(decoded.len(), records.len());
        for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(d.offset, base_offset + i as i64);
            prop_assert_eq!(d.timestamp, log_append.unwrap_or(t0 + r.ts_delta));
            prop_assert_eq!(d.key.as_deref(), r.key.as_deref());
            prop_assert_eq!(d.value.as_deref(), r.value.as_deref());
            let hs: Vec<(Vec<u8>, Option<Vec<u8>>)> = d.headers.iter().map(|h| (h.key.to_vec(), h.value.as_ref().map(|v| v.to_vec()))).collect();
            prop_assert_eq!(&hs, &r.headers);
        }
    }

    #[test]
    fn patching_the_header_keeps_the_batch_valid(
        codec in codec(),
        records in proptest::collection::vec(rec(), 1..10),
        offset in 0i64..1 << 50,
        epoch in 0i32..1 << 20,
        append_time in 0i64..1 << 42,
    ) {
        let mut b = BatchBuilder::new(codec);
        for r in &records {
            b.append(1_000 + r.ts_delta, r.key.as_deref(), r.value.as_deref(), &[]);
        }
        let original = b.build().unwrap();
        let mut bytes = original.clone();
        let (mut m, _) = RecordBatchMut::new(&mut bytes).unwrap();
        m.set_base_offset(offset);
        m.set_partition_leader_epoch(epoch);
        // Outside the CRC: the checksum region is untouched.
        prop_assert_eq!(&m.as_bytes()[17..], &original[17..]);
        m.set_log_append_time(append_time);
        let (batch, _) = RecordBatch::parse(&bytes).unwrap();
        let h = batch.header();
        prop_assert_eq!((h.base_offset, h.partition_leader_epoch, h.max_timestamp), (offset, epoch, append_time));
        prop_assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        for (i, r) in batch.records().unwrap().enumerate() {
            let r = r.unwrap();
            prop_assert_eq!((r.offset, r.timestamp), (offset + i as i64, append_time));
            prop_assert_eq!(r.value.as_deref(), records[i].value.as_deref());
        }
        // Only attributes, CRC and max timestamp changed.
        prop_assert_eq!(&bytes[61..], &original[61..]);
        // A producer re-sequencing the batch keeps it valid too.
        let (mut m, _) = RecordBatchMut::new(&mut bytes).unwrap();
        m.set_producer(offset, epoch as i16, append_time as i32 & i32::MAX);
        let (batch, _) = RecordBatch::parse(&bytes).unwrap();
        let h = batch.header();
        prop_assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (offset, epoch as i16, append_time as i32 & i32::MAX)
        );
        prop_assert_eq!(batch.records().unwrap().count(), records.len());
    }

    #[test]
    fn hostile_bytes_give_errors_not_panics(data in proptest::collection::vec(any::<u8>(), 0..400), codec_id in 0u8..8) {
        let _ = BatchHeader::parse(&data);
        for b in Batches::new(&data).flatten() {
            let _ = b.records().map(|rs| rs.count());
            let _ = b.validate_records(false);
        }
        // A well-formed header with garbage records and a correct CRC gets
        // through validation; decoding then fails cleanly.
        let mut forged = vec![0u8; 61];
        forged.extend_from_slice(&data);
        let len = (forged.len() - 12) as i32;
        forged[8..12].copy_from_slice(&len.to_be_bytes());
        forged[16] = 2;
        forged[22] = codec_id;
        forged[60] = (data.len() / 7).min(3) as u8;
        forged[26] = 2;
        let crc = crc32c::crc32c(&forged[21..]);
        forged[17..21].copy_from_slice(&crc.to_be_bytes());
        if let Ok((b, _)) = RecordBatch::parse(&forged) {
            if let Ok(records) = b.records() {
                for r in records {
                    let _ = r;
                }
            }
            let _ = b.validate_records(true);
        }
    }
}

#[test]
fn truncated_batches_say_how_much_is_missing() {
    let mut b = BatchBuilder::new(Compression::None);
    b.append(1, Some(b"k"), Some(b"v"), &[]);
    let bytes = b.build().unwrap();
    for cut in 0..bytes.len() {
        let err = RecordBatch::parse(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, BatchError::Truncated { .. }),
            "cut {cut}: {err}"
        );
    }
    let err = RecordBatch::parse(&bytes[..40]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "record batch is truncated: it needs {} bytes but 40 are left",
            bytes.len()
        )
    );
}

#[test]
fn record_framing_errors_are_reported() {
    // A record whose length prefix claims more than the batch holds.
    let mut b = BatchBuilder::new(Compression::None);
    b.append(1, Some(b"key"), Some(b"value"), &[]);
    let mut bytes = b.build().unwrap();
    bytes[61] = 0x7e; // zigzag 63: longer than the record
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let (batch, _) = RecordBatch::parse(&bytes).unwrap();
    let err = batch.records().unwrap().next().unwrap().unwrap_err();
    assert!(matches!(err, BatchError::MalformedRecord { .. }), "{err}");
    assert!(batch.validate_records(true).is_err());
}

#[test]
fn null_empty_and_present_fields_stay_distinct() {
    let mut b = BatchBuilder::new(Compression::Snappy);
    b.append(5, None, Some(b""), &[Header::new("h", None::<Bytes>)]);
    b.append(5, Some(b""), None, &[Header::new("", Some(Bytes::new()))]);
    let bytes = b.build().unwrap();
    let records: Vec<_> = RecordBatch::parse(&bytes)
        .unwrap()
        .0
        .records()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        (records[0].key.as_deref(), records[0].value.as_deref()),
        (None, Some(&b""[..]))
    );
    assert_eq!(records[0].headers[0].value, None);
    assert_eq!(
        (records[1].key.as_deref(), records[1].value.as_deref()),
        (Some(&b""[..]), None)
    );
    assert_eq!(records[1].headers[0].value.as_deref(), Some(&b""[..]));
}

#[test]
fn offsets_past_i64_max_are_refused() {
    // Found by the batch_decode fuzz target: base offset near i64::MAX.
    let mut b = BatchBuilder::new(Compression::None).base_offset(i64::MAX - 3);
    for _ in 0..10 {
        b.append(1, Some(b"k"), Some(b"v"), &[]);
    }
    let bytes = b.build().unwrap();
    let err = RecordBatch::parse(&bytes).unwrap_err();
    assert!(matches!(err, BatchError::InvalidOffsets { .. }), "{err}");
    assert!(BatchHeader::parse(&bytes).is_err());
    assert_eq!(
        Batches::new(&bytes).count(),
        1,
        "one error, then the iterator stops"
    );
}
