//! Choosing a partition, as Kafka's default partitioner does.
//!
//! Keyed records go to `(murmur2(key) & 0x7fffffff) % partitions`, so a key
//! lands on the same partition as with any Kafka client using the default
//! partitioner (librdkafka needs `partitioner=murmur2_random` for this).
//! Records without a key stick to one partition until its batch is sent,
//! then move to another at random (KIP-480), so they fill batches instead of
//! spreading one record per batch.

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`), as a Java `int`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// A new sticky partition for null-key records, different from `current`
/// when there is a choice.
pub(crate) fn next_sticky(current: Option<i32>, partitions: i32) -> i32 {
    use rand::Rng;
    let mut rng = rand::rng();
    match current {
        Some(c) if partitions > 1 => {
            let p = rng.random_range(0..partitions - 1);
            if p >= c { p + 1 } else { p }
        }
        _ => rng.random_range(0..partitions.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_moves_to_another_partition() {
        for _ in 0..100 {
            let p = next_sticky(Some(2), 5);
            assert!((0..5).contains(&p) && p != 2);
        }
        assert_eq!(next_sticky(Some(0), 1), 0);
    }
}
