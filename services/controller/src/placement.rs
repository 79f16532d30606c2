//! Replica placement, as Kafka's rack-unaware assignment does it.
//!
//! Partition `p`'s first replica (its preferred leader) is broker
//! `(start + p) mod n`, so leaders spread evenly; the other replicas follow
//! at a shift that changes every `n` partitions, so replicas of one broker's
//! partitions spread over all the others instead of always the same
//! neighbours.

/// Replica lists for partitions `first_partition..first_partition + count`.
///
/// `brokers` must be sorted and hold at least `replication_factor` ids;
/// `start` and `shift` are the random starting index and replica shift
/// (Kafka draws them per request).
pub fn assign(
    brokers: &[i32],
    first_partition: usize,
    count: usize,
    replication_factor: usize,
    start: usize,
    shift: usize,
) -> Vec<Vec<i32>> {
    let n = brokers.len();
    assert!(
        n > 0 && replication_factor >= 1 && replication_factor <= n,
        "checked by the caller"
    );
    let mut shift = shift % n;
    let mut out = Vec::with_capacity(count);
    for p in first_partition..first_partition + count {
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let first = (p + start) % n;
        let mut replicas = vec![brokers[first]];
        for j in 0..replication_factor - 1 {
            // Skips the first replica's own slot: offsets 1..n-1 from it.
            let offset = 1 + (shift + j) % (n - 1);
            replicas.push(brokers[(first + offset) % n]);
        }
        out.push(replicas);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn replicas_are_distinct_and_leaders_spread() {
        let brokers = [1, 2, 3, 4, 5];
        for start in 0..5 {
            for shift in 0..5 {
                let a = assign(&brokers, 0, 20, 3, start, shift);
                let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
                for r in &a {
                    assert_eq!(r.len(), 3);
                    assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), 3, "{r:?}");
                    *leaders.entry(r[0]).or_default() += 1;
                }
                assert!(leaders.values().all(|&c| c == 4), "{leaders:?}");
            }
        }
    }

    #[test]
    fn single_broker_and_growth() {
        assert_eq!(assign(&[7], 0, 3, 1, 0, 0), vec![vec![7], vec![7], vec![7]]);
        // Growing continues the leaders' round-robin where it left off (the
        // follower shift is drawn afresh, as Kafka does).
        let all = assign(&[1, 2, 3], 0, 6, 2, 1, 0);
        let grown = assign(&[1, 2, 3], 4, 2, 2, 1, 2);
        let leaders = |a: &[Vec<i32>]| a.iter().map(|r| r[0]).collect::<Vec<_>>();
        assert_eq!(leaders(&grown), leaders(&all[4..]));
    }
}
