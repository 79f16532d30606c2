//! Replica placement, as Kafka's assignment does it (`AdminUtils`).
//!
//! Partition `p`'s first replica (its preferred leader) is broker
//! `(start + p) mod n`, so leaders spread evenly; the other replicas follow
//! at a shift that changes every `n` partitions, so replicas of one broker's
//! partitions spread over all the others instead of always the same
//! neighbours. When every broker names a rack (`broker.rack`) and there are
//! two racks or more, the brokers are first ordered alternating between
//! racks, and a replica skips brokers in racks that already hold one of its
//! partition's replicas until every rack holds one.

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
    // Without racks, as one rack: every broker may take any replica.
    let arranged: Vec<(i32, &str)> = brokers.iter().map(|&id| (id, "")).collect();
    place(
        &arranged,
        1,
        first_partition,
        count,
        replication_factor,
        start,
        shift,
    )
}

/// Brokers ordered alternating between racks (Kafka's
/// `getRackAlternatedBrokerList`): racks sorted, each rack's brokers
/// sorted, one from each rack in turn.
fn rack_alternated(brokers: &[(i32, String)]) -> Vec<(i32, &str)> {
    let mut by_rack: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (id, rack) in brokers {
        by_rack.entry(rack.as_str()).or_default().push(*id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let mut out = Vec::with_capacity(brokers.len());
    for i in 0.. {
        if out.len() == brokers.len() {
            break;
        }
        for (rack, ids) in &by_rack {
            if let Some(&id) = ids.get(i) {
                out.push((id, *rack));
            }
        }
    }
    out
}

/// Replica lists for partitions `first_partition..first_partition + count`
/// over brokers with racks: rack-aware when every broker has a rack and
/// there are two racks or more, else as [`assign`] over the sorted ids.
pub fn assign_with_racks(
    brokers: &[(i32, String)],
    first_partition: usize,
    count: usize,
    replication_factor: usize,
    start: usize,
    shift: usize,
) -> Vec<Vec<i32>> {
    let racks: std::collections::BTreeSet<&str> = brokers.iter().map(|(_, r)| r.as_str()).collect();
    if racks.len() < 2 || racks.contains("") {
        let mut ids: Vec<i32> = brokers.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        return assign(
            &ids,
            first_partition,
            count,
            replication_factor,
            start,
            shift,
        );
    }
    place(
        &rack_alternated(brokers),
        racks.len(),
        first_partition,
        count,
        replication_factor,
        start,
        shift,
    )
}

/// Kafka's assignment over brokers in `arranged` order (in `racks` racks):
/// partition `p` starts at broker `(start + p) mod n`; each next replica
/// steps on by the shift, skipping a broker already chosen and, until every
/// rack holds a replica, a broker in a rack that holds one. With one rack
/// that is the rack-unaware assignment.
fn place(
    arranged: &[(i32, &str)],
    racks: usize,
    first_partition: usize,
    count: usize,
    replication_factor: usize,
    start: usize,
    shift: usize,
) -> Vec<Vec<i32>> {
    let n = arranged.len();
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
        let mut replicas = vec![arranged[first].0];
        let mut used_racks = vec![arranged[first].1];
        let mut k = 0;
        while replicas.len() < replication_factor {
            // Skips the first replica's own slot: offsets 1..n-1 from it.
            let offset = 1 + (shift * racks + k) % (n - 1);
            let (id, rack) = arranged[(first + offset) % n];
            k += 1;
            let rack_ok = !used_racks.contains(&rack) || used_racks.len() == racks;
            if rack_ok && !replicas.contains(&id) {
                replicas.push(id);
                if !used_racks.contains(&rack) {
                    used_racks.push(rack);
                }
            }
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

    #[test]
    fn replicas_spread_over_racks_when_every_broker_has_one() {
        let brokers: Vec<(i32, String)> =
            [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]
                .iter()
                .map(|(id, r)| (*id, (*r).to_owned()))
                .collect();
        let rack = |id: i32| {
            brokers
                .iter()
                .find(|(b, _)| *b == id)
                .map(|(_, r)| r.clone())
        };
        for start in 0..6 {
            for shift in 0..6 {
                for rf in 1..=3 {
                    let a = assign_with_racks(&brokers, 0, 24, rf, start, shift);
                    let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
                    for r in &a {
                        let racks: BTreeSet<_> = r.iter().map(|&id| rack(id)).collect();
                        assert_eq!(racks.len(), rf, "two replicas in one rack: {r:?}");
                        assert_eq!(r.iter().collect::<BTreeSet<_>>().len(), rf);
                        *leaders.entry(r[0]).or_default() += 1;
                    }
                    assert!(leaders.values().all(|&c| c == 4), "{leaders:?}");
                }
            }
        }
        // More replicas than racks: every rack first, then doubled up.
        for r in assign_with_racks(&brokers[..4], 0, 8, 3, 1, 2) {
            let racks: BTreeSet<_> = r.iter().map(|&id| rack(id)).collect();
            assert_eq!(racks.len(), 2, "{r:?}");
        }
        // A broker without a rack: placement ignores racks, as Kafka's.
        let mut mixed = brokers.clone();
        mixed[0].1 = String::new();
        assert_eq!(
            assign_with_racks(&mixed, 0, 6, 2, 0, 0),
            assign(&[1, 2, 3, 4, 5, 6], 0, 6, 2, 0, 0)
        );
    }
}
