//! Properties every assignor must keep, over random groups: each partition
//! of a subscribed topic has exactly one owner, and only a subscriber;
//! equal subscriptions give balanced loads; cooperative rebalancing never
//! gives a partition to a new owner while its old owner still holds it.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use runnel_records::TopicPartition;
use runnel_records::assignor::{
    Assignment, CooperativeStickyAssignor, GroupMember, PartitionAssignor, RangeAssignor,
    RoundRobinAssignor,
};

const TOPICS: [&str; 4] = ["a", "b", "c", "d"];

fn group() -> impl Strategy<Value = (BTreeMap<String, i32>, Vec<GroupMember>)> {
    (
        proptest::collection::vec(0i32..20, 4),
        proptest::collection::vec(1u8..16, 1..9),
    )
        .prop_map(|(counts, subs)| {
            let counts = TOPICS
                .iter()
                .zip(counts)
                .map(|(t, n)| ((*t).to_owned(), n))
                .collect();
            let members = subs
                .iter()
                .enumerate()
                .map(|(i, bits)| {
                    let topics: Vec<&str> = (0..4)
                        .filter(|b| bits & (1 << b) != 0)
                        .map(|b| TOPICS[b])
                        .collect();
                    GroupMember::new(format!("m{i:02}"), &topics)
                })
                .collect();
            (counts, members)
        })
}

fn owners(a: &Assignment) -> HashMap<TopicPartition, Vec<String>> {
    let mut out: HashMap<TopicPartition, Vec<String>> = HashMap::new();
    for (m, tps) in a {
        for tp in tps {
            out.entry(tp.clone()).or_default().push(m.clone());
        }
    }
    out
}

/// Every partition of a topic with a subscriber has exactly one owner, a subscriber.
fn check_complete(
    counts: &BTreeMap<String, i32>,
    members: &[GroupMember],
    a: &Assignment,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), members.len());
    let owners = owners(a);
    for (topic, &n) in counts {
        let subscribed = members.iter().any(|m| m.topics.contains(topic));
        for p in 0..n {
            let tp = TopicPartition::new(topic.clone(), p);
            let got = owners.get(&tp).cloned().unwrap_or_default();
            prop_assert_eq!(got.len(), usize::from(subscribed), "{:?}: {:?}", tp, got);
            for owner in got {
                let m = members.iter().find(|m| m.member_id == owner).unwrap();
                prop_assert!(m.topics.contains(topic));
            }
        }
    }
    Ok(())
}

fn spread(a: &Assignment) -> usize {
    let loads: Vec<usize> = a.values().map(Vec::len).collect();
    loads.iter().max().unwrap_or(&0) - loads.iter().min().unwrap_or(&0)
}

fn with_owned(members: &[GroupMember], a: &Assignment, generation: i32) -> Vec<GroupMember> {
    members
        .iter()
        .map(|m| GroupMember {
            owned: a.get(&m.member_id).cloned().unwrap_or_default(),
            generation,
            ..m.clone()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_partition_has_exactly_one_subscribed_owner((counts, members) in group()) {
        for assignor in [&RangeAssignor as &dyn PartitionAssignor, &RoundRobinAssignor, &CooperativeStickyAssignor] {
            check_complete(&counts, &members, &assignor.assign(&counts, &members))?;
        }
    }

    #[test]
    fn equal_subscriptions_are_balanced(n in 0i32..60, size in 1usize..10) {
        let counts: BTreeMap<String, i32> = [("a".to_owned(), n)].into();
        let members: Vec<GroupMember> = (0..size).map(|i| GroupMember::new(format!("m{i}"), &["a"])).collect();
        for assignor in [&RangeAssignor as &dyn PartitionAssignor, &RoundRobinAssignor, &CooperativeStickyAssignor] {
            prop_assert!(spread(&assignor.assign(&counts, &members)) <= 1, "{}", assignor.name());
        }
    }

    #[test]
    fn cooperative_rebalances_never_overlap_and_converge(
        (counts, members) in group(),
        leave in proptest::collection::vec(any::<bool>(), 8),
        joiners in 0usize..3,
    ) {
        let sticky = CooperativeStickyAssignor;
        let first = sticky.assign(&counts, &members);
        // Some members leave, some join; survivors report what they own.
        let mut next: Vec<GroupMember> = with_owned(&members, &first, 1)
            .into_iter()
            .zip(leave.iter().chain(std::iter::repeat(&false)))
            .filter(|(_, gone)| !**gone)
            .map(|(m, _)| m)
            .collect();
        for j in 0..joiners {
            next.push(GroupMember::new(format!("new{j}"), &TOPICS));
        }
        let second = sticky.assign(&counts, &next);
        // No partition goes to someone else while its owner still holds it.
        for m in &next {
            for tp in &m.owned {
                for (other, tps) in &second {
                    if other != &m.member_id {
                        prop_assert!(!tps.contains(tp), "{:?} moved from {} to {} in one round", tp, m.member_id, other);
                    }
                }
            }
        }
        // Owners give up what they lost and rejoin; each follow-up round is
        // again without overlap, and within a few rounds every partition has
        // an owner.
        let mut current = second;
        let mut rounds = 0;
        loop {
            let after = with_owned(&next, &current, 2 + rounds);
            let following = sticky.assign(&counts, &after);
            for m in &after {
                for tp in &m.owned {
                    for (other, tps) in &following {
                        prop_assert!(other == &m.member_id || !tps.contains(tp));
                    }
                }
            }
            rounds += 1;
            if check_complete(&counts, &after, &following).is_ok() {
                break;
            }
            prop_assert!(rounds < 4, "no complete assignment after {} follow-up rounds", rounds);
            current = following;
        }
    }
}
