//! The partitioner agrees with Kafka's on published and captured vectors.

#![allow(clippy::unwrap_used)]

use base64::Engine;
use runnel_client::partitioner::{murmur2, partition_for_key};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/murmur2.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn keys_land_where_kafka_puts_them() {
    let v = vectors();
    let keys = v["vectors"].as_array().unwrap();
    assert_eq!(keys.len(), 65);
    for k in keys {
        let key = base64::engine::general_purpose::STANDARD
            .decode(k["key_b64"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            i64::from(murmur2(&key)),
            k["murmur2"].as_i64().unwrap(),
            "hash of {:?}",
            k["key_text"]
        );
        for (n, expected) in k["partition"].as_object().unwrap() {
            let n: i32 = n.parse().unwrap();
            assert_eq!(
                i64::from(partition_for_key(&key, n)),
                expected.as_i64().unwrap(),
                "{:?} over {n}",
                k["key_text"]
            );
        }
    }
}

#[test]
fn published_reference_hashes() {
    let v = vectors();
    let refs = v["references"].as_array().unwrap();
    assert_eq!(refs.len(), 17);
    for r in refs {
        let key = base64::engine::general_purpose::STANDARD
            .decode(r["key_b64"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            i64::from(murmur2(&key)),
            r["murmur2"].as_i64().unwrap(),
            "{r}"
        );
    }
    // Straight from Kafka's UtilsTest.
    assert_eq!(murmur2(b"21"), -973_932_308);
    assert_eq!(murmur2(b"foobar"), -790_332_482);
}
