//! Batches captured from real Kafka clients (confluent-kafka and
//! kafka-python; the fixtures and their decoding tests are runnel-records')
//! survive an append unchanged and read back as the records sent.

#![allow(clippy::unwrap_used)]

// The fixtures and their expected records belong to the batch format's crate.
#[path = "../../records/tests/captured/mod.rs"]
mod captured;

use captured::{assert_records_match, data_dir, decode_all, manifest};
use runnel_log::{Log, LogConfig};
use runnel_records::batch::Batches;

#[test]
fn client_batches_survive_append_and_read_back() {
    for entry in manifest() {
        let file = entry["file"].as_str().unwrap();
        let bytes = std::fs::read(data_dir().join(file)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path().join("fixtures-0"), LogConfig::default()).unwrap();
        let mut expected_offset = 0;
        // One append per Produce request, as the broker would do it.
        for req in entry["produce_requests"].as_array().unwrap() {
            let start = req["file_offset"].as_u64().unwrap() as usize;
            let len = req["length"].as_u64().unwrap() as usize;
            let mut request = bytes[start..start + len].to_vec();
            let info = log.append_as_leader(&mut request, 7).unwrap();
            assert_eq!(
                info.first_offset, expected_offset,
                "{file}: offsets continue"
            );
            expected_offset = info.last_offset + 1;
        }
        assert_eq!(
            log.log_end_offset(),
            entry["record_count"].as_i64().unwrap()
        );

        // Reopen to read from disk, not from anything cached.
        log.close().unwrap();
        let log = Log::open(dir.path().join("fixtures-0"), LogConfig::default()).unwrap();
        let stored = log.read(0, 64 * 1024 * 1024, None, true).unwrap();
        let records = decode_all(&stored);
        assert_records_match(file, &records, &entry);
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "{file}: offsets"
        );

        // Stored batches are the client's bytes with only the broker's header
        // fields (base offset, leader epoch) changed; the CRC still holds.
        assert_eq!(stored.len(), bytes.len(), "{file}: stored size");
        for (ours, theirs) in Batches::new(&stored).zip(Batches::new(&bytes)) {
            let (ours, theirs) = (ours.unwrap(), theirs.unwrap());
            assert_eq!(
                ours.as_bytes()[16..],
                theirs.as_bytes()[16..],
                "{file}: batch body changed"
            );
            assert_eq!(ours.header().partition_leader_epoch, 7);
        }
    }
}
