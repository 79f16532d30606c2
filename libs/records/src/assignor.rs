//! Partition assignors for consumer groups (Kafka's client-side ones).
//!
//! In the classic group protocol the coordinator picks one member as
//! leader and hands it every member's subscription; the leader's assignor
//! decides who reads which partition and the coordinator passes the result
//! on. The assignors here carry Kafka's protocol names and behaviour so a
//! group can mix Runnel and Kafka clients:
//!
//! - [`RangeAssignor`] (`range`): per topic, consecutive partition ranges.
//! - [`RoundRobinAssignor`] (`roundrobin`): all partitions dealt in turn.
//! - [`CooperativeStickyAssignor`] (`cooperative-sticky`): balanced, keeps
//!   each member's partitions where it can, and never hands a partition to
//!   a new owner in the same rebalance its old owner gives it up (KIP-429):
//!   moving partitions are revoked first and assigned in a follow-up.
//!
//! Members are ordered by `group.instance.id` when they have one (static
//! membership), else by member id, so the outcome does not depend on the
//! order members joined in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::TopicPartition;

/// What a member told the coordinator when it joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Member id the coordinator gave it.
    pub member_id: String,
    /// `group.instance.id` (static membership).
    pub group_instance_id: Option<String>,
    /// Topics it subscribes to.
    pub topics: Vec<String>,
    /// Partitions it owned before this rebalance (cooperative protocols).
    pub owned: Vec<TopicPartition>,
    /// The generation in which it owned them.
    pub generation: i32,
}

impl GroupMember {
    /// A member subscribing to `topics`, owning nothing yet.
    pub fn new(member_id: impl Into<String>, topics: &[&str]) -> Self {
        GroupMember {
            member_id: member_id.into(),
            group_instance_id: None,
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            owned: Vec::new(),
            generation: -1,
        }
    }

    fn sort_key(&self) -> &str {
        self.group_instance_id.as_deref().unwrap_or(&self.member_id)
    }
}

/// Member id → the partitions it is to read, sorted.
pub type Assignment = BTreeMap<String, Vec<TopicPartition>>;

/// How a group moves partitions between members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceProtocol {
    /// Every member gives up everything, then gets its new assignment.
    Eager,
    /// Members keep what stays theirs; only moving partitions are revoked (KIP-429).
    Cooperative,
}

/// Decides which member reads which partition.
pub trait PartitionAssignor: Send + Sync {
    /// The protocol name members advertise (`partition.assignment.strategy`).
    fn name(&self) -> &'static str;

    /// Eager or cooperative.
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    /// Assigns the partitions of `partition_counts` (topic → count) among
    /// `members`. Every member gets an entry, possibly empty; a partition
    /// goes only to a member subscribed to its topic.
    fn assign(
        &self,
        partition_counts: &BTreeMap<String, i32>,
        members: &[GroupMember],
    ) -> Assignment;
}

fn sorted(members: &[GroupMember]) -> Vec<&GroupMember> {
    let mut out: Vec<&GroupMember> = members.iter().collect();
    out.sort_by(|a, b| {
        a.sort_key()
            .cmp(b.sort_key())
            .then(a.member_id.cmp(&b.member_id))
    });
    out
}

fn empty_assignment(members: &[GroupMember]) -> Assignment {
    members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect()
}

fn finish(mut assignment: Assignment) -> Assignment {
    for partitions in assignment.values_mut() {
        partitions.sort();
    }
    assignment
}

/// Kafka's `range`: for each topic, its subscribers in order each get a
/// consecutive range, the first `partitions % subscribers` one more.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl PartitionAssignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn assign(
        &self,
        partition_counts: &BTreeMap<String, i32>,
        members: &[GroupMember],
    ) -> Assignment {
        let mut out = empty_assignment(members);
        let members = sorted(members);
        for (topic, &count) in partition_counts {
            let subscribers: Vec<&&GroupMember> = members
                .iter()
                .filter(|m| m.topics.contains(topic))
                .collect();
            if subscribers.is_empty() || count <= 0 {
                continue;
            }
            let n = subscribers.len() as i32;
            let (per, extra) = (count / n, count % n);
            let mut next = 0;
            for (i, m) in subscribers.iter().enumerate() {
                let take = per + i32::from((i as i32) < extra);
                let entry = out.entry(m.member_id.clone()).or_default();
                entry.extend((next..next + take).map(|p| TopicPartition::new(topic.clone(), p)));
                next += take;
            }
        }
        finish(out)
    }
}

/// Kafka's `roundrobin`: every partition of every topic, in order, dealt to
/// the members in turn, skipping members not subscribed to its topic.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl PartitionAssignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        "roundrobin"
    }

    fn assign(
        &self,
        partition_counts: &BTreeMap<String, i32>,
        members: &[GroupMember],
    ) -> Assignment {
        let mut out = empty_assignment(members);
        let members = sorted(members);
        if members.is_empty() {
            return out;
        }
        let mut turn = 0usize;
        for (topic, &count) in partition_counts {
            if !members.iter().any(|m| m.topics.contains(topic)) {
                continue;
            }
            for p in 0..count.max(0) {
                while !members[turn % members.len()].topics.contains(topic) {
                    turn += 1;
                }
                let m = members[turn % members.len()];
                out.entry(m.member_id.clone())
                    .or_default()
                    .push(TopicPartition::new(topic.clone(), p));
                turn += 1;
            }
        }
        finish(out)
    }
}

/// Kafka's `cooperative-sticky`: a balanced assignment that moves as few
/// partitions as it can, handed out cooperatively.
#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeStickyAssignor;

impl PartitionAssignor for CooperativeStickyAssignor {
    fn name(&self) -> &'static str {
        "cooperative-sticky"
    }

    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }

    fn assign(
        &self,
        partition_counts: &BTreeMap<String, i32>,
        members: &[GroupMember],
    ) -> Assignment {
        let previous = previous_owners(partition_counts, members);
        let target = sticky_assignment(partition_counts, members, &previous);
        // KIP-429: a partition changing hands goes unassigned this round; its
        // old owner revokes it and rejoins, and the next rebalance assigns it.
        let mut out = empty_assignment(members);
        for (member, partitions) in target {
            let keep: Vec<TopicPartition> = partitions
                .into_iter()
                .filter(|tp| previous.get(tp).is_none_or(|owner| *owner == member))
                .collect();
            out.insert(member, keep);
        }
        finish(out)
    }
}

/// Kafka's server-side `uniform` assignor (KIP-848): a balanced assignment
/// that keeps each partition with its current owner where it can. It is
/// the target the coordinator reconciles members towards; the coordinator,
/// not the assignor, makes sure a partition changes hands only once its
/// previous owner has released it.
#[derive(Debug, Clone, Copy, Default)]
pub struct UniformAssignor;

impl PartitionAssignor for UniformAssignor {
    fn name(&self) -> &'static str {
        "uniform"
    }

    fn assign(
        &self,
        partition_counts: &BTreeMap<String, i32>,
        members: &[GroupMember],
    ) -> Assignment {
        let previous = previous_owners(partition_counts, members);
        finish(sticky_assignment(partition_counts, members, &previous))
    }
}

/// Who owned each existing partition before, among current members that
/// still subscribe to its topic. A partition claimed twice goes to the
/// claim from the newest generation (the other is stale).
fn previous_owners(
    partition_counts: &BTreeMap<String, i32>,
    members: &[GroupMember],
) -> HashMap<TopicPartition, String> {
    let mut claims: HashMap<TopicPartition, (i32, &str)> = HashMap::new();
    for m in sorted(members) {
        for tp in &m.owned {
            let exists = partition_counts
                .get(&tp.topic)
                .is_some_and(|&n| (0..n).contains(&tp.partition));
            if !exists || !m.topics.contains(&tp.topic) {
                continue;
            }
            let newer = claims
                .get(tp)
                .is_none_or(|(generation, _)| m.generation > *generation);
            if newer {
                claims.insert(tp.clone(), (m.generation, m.member_id.as_str()));
            }
        }
    }
    claims
        .into_iter()
        .map(|(tp, (_, member))| (tp, member.to_owned()))
        .collect()
}

/// Keeps previous owners, deals unowned partitions to the least loaded
/// eligible member, then moves partitions from members with at least two
/// more than an eligible other until none has: balanced with the fewest moves.
fn sticky_assignment(
    partition_counts: &BTreeMap<String, i32>,
    members: &[GroupMember],
    previous: &HashMap<TopicPartition, String>,
) -> Assignment {
    let members = sorted(members);
    let index: HashMap<&str, usize> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.member_id.as_str(), i))
        .collect();
    let subscribes = |i: usize, topic: &str| members[i].topics.iter().any(|t| t == topic);
    let mut owned: Vec<BTreeSet<TopicPartition>> = vec![BTreeSet::new(); members.len()];
    let mut unowned = Vec::new();
    for (topic, &count) in partition_counts {
        for p in 0..count.max(0) {
            let tp = TopicPartition::new(topic.clone(), p);
            match previous.get(&tp).and_then(|m| index.get(m.as_str())) {
                Some(&i) => {
                    owned[i].insert(tp);
                }
                None => unowned.push(tp),
            }
        }
    }
    for tp in unowned {
        let least = (0..members.len())
            .filter(|&i| subscribes(i, &tp.topic))
            .min_by_key(|&i| (owned[i].len(), i));
        if let Some(i) = least {
            owned[i].insert(tp);
        }
    }
    // Each move lowers the sum of squared loads, so this ends.
    loop {
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(owned[i].len()), i));
        let mut moved = false;
        'search: for &from in &order {
            for &to in order.iter().rev() {
                if owned[from].len() < owned[to].len() + 2 {
                    break;
                }
                // Partitions `from` only just got cost no revocation: move those first.
                let eligible = |tp: &&TopicPartition| subscribes(to, &tp.topic);
                let fresh = |tp: &&TopicPartition| {
                    previous.get(*tp).map(String::as_str) != Some(members[from].member_id.as_str())
                };
                let candidate = owned[from]
                    .iter()
                    .rev()
                    .filter(eligible)
                    .find(fresh)
                    .or_else(|| owned[from].iter().rev().find(eligible))
                    .cloned();
                if let Some(tp) = candidate {
                    owned[from].remove(&tp);
                    owned[to].insert(tp);
                    moved = true;
                    break 'search;
                }
            }
        }
        if !moved {
            break;
        }
    }
    members
        .iter()
        .zip(owned)
        .map(|(m, set)| (m.member_id.clone(), set.into_iter().collect()))
        .collect()
}

/// The assignors this client offers, by protocol name.
pub fn assignor_named(name: &str) -> Option<Box<dyn PartitionAssignor>> {
    match name {
        "range" => Some(Box::new(RangeAssignor)),
        "roundrobin" => Some(Box::new(RoundRobinAssignor)),
        "cooperative-sticky" => Some(Box::new(CooperativeStickyAssignor)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(topics: &[(&str, i32)]) -> BTreeMap<String, i32> {
        topics.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
    }

    fn names(a: &Assignment, member: &str) -> Vec<String> {
        a[member]
            .iter()
            .map(|tp| format!("{}-{}", tp.topic, tp.partition))
            .collect()
    }

    #[test]
    fn range_gives_consecutive_ranges_per_topic_as_kafka_does() {
        let members = [
            GroupMember::new("c2", &["t0", "t1"]),
            GroupMember::new("c1", &["t0", "t1"]),
        ];
        let a = RangeAssignor.assign(&counts(&[("t0", 3), ("t1", 3)]), &members);
        assert_eq!(names(&a, "c1"), ["t0-0", "t0-1", "t1-0", "t1-1"]);
        assert_eq!(names(&a, "c2"), ["t0-2", "t1-2"]);
    }

    #[test]
    fn round_robin_deals_partitions_in_turn_as_kafka_does() {
        let members = [
            GroupMember::new("c1", &["t0", "t1"]),
            GroupMember::new("c2", &["t0", "t1"]),
        ];
        let a = RoundRobinAssignor.assign(&counts(&[("t0", 3), ("t1", 3)]), &members);
        assert_eq!(names(&a, "c1"), ["t0-0", "t0-2", "t1-1"]);
        assert_eq!(names(&a, "c2"), ["t0-1", "t1-0", "t1-2"]);
        // A member not subscribed to a topic is skipped for it.
        let members = [
            GroupMember::new("c1", &["t0"]),
            GroupMember::new("c2", &["t0", "t1"]),
        ];
        let a = RoundRobinAssignor.assign(&counts(&[("t0", 2), ("t1", 2)]), &members);
        assert_eq!(names(&a, "c1"), ["t0-0"]);
        assert_eq!(names(&a, "c2"), ["t0-1", "t1-0", "t1-1"]);
    }

    #[test]
    fn static_members_are_ordered_by_instance_id() {
        let mut a = GroupMember::new("zz-member", &["t"]);
        a.group_instance_id = Some("instance-a".into());
        let mut b = GroupMember::new("aa-member", &["t"]);
        b.group_instance_id = Some("instance-b".into());
        let out = RangeAssignor.assign(&counts(&[("t", 2)]), &[b, a]);
        assert_eq!(names(&out, "zz-member"), ["t-0"]);
    }

    #[test]
    fn sticky_moves_only_what_balance_needs_and_cooperatively() {
        let topics = counts(&[("t", 6)]);
        let first = CooperativeStickyAssignor.assign(
            &topics,
            &[GroupMember::new("a", &["t"]), GroupMember::new("b", &["t"])],
        );
        assert_eq!(first["a"].len() + first["b"].len(), 6);
        assert_eq!((first["a"].len(), first["b"].len()), (3, 3));
        // A third member joins: it gets nothing yet; a and b each give up one.
        let owned = |m: &str, a: &Assignment, generation| GroupMember {
            owned: a[m].clone(),
            generation,
            ..GroupMember::new(m, &["t"])
        };
        let joined = [
            owned("a", &first, 1),
            owned("b", &first, 1),
            GroupMember::new("c", &["t"]),
        ];
        let second = CooperativeStickyAssignor.assign(&topics, &joined);
        assert_eq!(
            (second["a"].len(), second["b"].len(), second["c"].len()),
            (2, 2, 0)
        );
        assert!(second["a"].iter().all(|tp| first["a"].contains(tp)));
        // The follow-up rebalance hands c the two revoked partitions.
        let after = [
            owned("a", &second, 2),
            owned("b", &second, 2),
            owned("c", &second, 2),
        ];
        let third = CooperativeStickyAssignor.assign(&topics, &after);
        assert_eq!(
            (third["a"].len(), third["b"].len(), third["c"].len()),
            (2, 2, 2)
        );
        assert_eq!(third["a"], second["a"]);
        assert_eq!(third["b"], second["b"]);
    }
}
