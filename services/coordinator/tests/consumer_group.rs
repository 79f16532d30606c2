//! The KIP-848 consumer group, on a manual clock: members converge on a
//! balanced assignment without stopping, a partition changes hands only
//! after its owner has released it (checked at every step of a seeded
//! random schedule), and stale or silent members are fenced.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runnel_coordinator::consumer_group::{
    ConsumerGroup, ConsumerGroupConfig, Heartbeat, HeartbeatResponse, JOIN_EPOCH, LEAVE_EPOCH,
    MemberState, STATIC_LEAVE_EPOCH,
};
use runnel_proto::common::v1::ErrorCode;
use runnel_records::TopicPartition;

fn counts(partitions: i32) -> BTreeMap<String, i32> {
    BTreeMap::from([("t".to_owned(), partitions)])
}

/// A client: what it owns is what its last answer gave it.
#[derive(Debug, Clone)]
struct Client {
    id: String,
    epoch: i32,
    owned: Vec<TopicPartition>,
}

impl Client {
    fn join(g: &mut ConsumerGroup, id: &str, counts: &BTreeMap<String, i32>, now: i64) -> Client {
        let r = g.heartbeat(
            Heartbeat {
                fresh_member_id: id.into(),
                member_epoch: JOIN_EPOCH,
                rebalance_timeout_ms: Some(10_000),
                subscribed_topics: Some(vec!["t".into()]),
                owned: Some(Vec::new()),
                ..Heartbeat::default()
            },
            counts,
            now,
        );
        assert_eq!(r.error, ErrorCode::None);
        let mut c = Client {
            id: r.member_id.clone(),
            epoch: 0,
            owned: Vec::new(),
        };
        c.take(&r);
        c
    }

    fn take(&mut self, r: &HeartbeatResponse) {
        assert_eq!(r.error, ErrorCode::None, "{r:?}");
        self.epoch = r.member_epoch;
        self.owned = r.assignment.clone();
    }

    fn beat(&mut self, g: &mut ConsumerGroup, counts: &BTreeMap<String, i32>, now: i64) {
        let r = g.heartbeat(
            Heartbeat {
                member_id: self.id.clone(),
                member_epoch: self.epoch,
                owned: Some(self.owned.clone()),
                ..Heartbeat::default()
            },
            counts,
            now,
        );
        self.take(&r);
    }
}

/// No partition is owned by two clients, nor held by two members.
fn check(g: &ConsumerGroup, clients: &[Client]) {
    let mut owner = BTreeMap::new();
    for c in clients {
        for tp in &c.owned {
            if let Some(other) = owner.insert(tp.clone(), c.id.clone()) {
                panic!("{tp:?} owned by {other} and {}", c.id);
            }
        }
    }
    let mut held = BTreeMap::new();
    for (id, m) in g.members() {
        for tp in m.assigned.iter().chain(&m.revoking) {
            if let Some(other) = held.insert(tp.clone(), id.clone()) {
                panic!("{tp:?} held by {other} and {id}");
            }
        }
    }
}

fn converge(
    g: &mut ConsumerGroup,
    clients: &mut [&mut Client],
    counts: &BTreeMap<String, i32>,
    now: i64,
) {
    for _ in 0..10 {
        for c in clients.iter_mut() {
            c.beat(g, counts, now);
        }
        let view: Vec<Client> = clients.iter().map(|c| (**c).clone()).collect();
        check(g, &view);
    }
    assert_eq!(g.state_name(), "Stable", "{:?}", g.members());
    let total: usize = clients.iter().map(|c| c.owned.len()).sum();
    assert_eq!(total as i32, counts["t"]);
    let (min, max) = (
        clients.iter().map(|c| c.owned.len()).min().unwrap(),
        clients.iter().map(|c| c.owned.len()).max().unwrap(),
    );
    assert!(max - min <= 1, "balanced: {clients:?}");
    assert!(clients.iter().all(|c| c.epoch == g.epoch()));
}

#[test]
fn members_converge_and_a_newcomer_gets_partitions_only_once_released() {
    let c6 = counts(6);
    let mut g = ConsumerGroup::new(ConsumerGroupConfig::default());
    let mut a = Client::join(&mut g, "a", &c6, 0);
    assert_eq!(a.owned.len(), 6, "alone: everything at once");
    let mut b = Client::join(&mut g, "b", &c6, 1);
    assert!(b.owned.is_empty(), "nothing is free yet");
    check(&g, &[a.clone(), b.clone()]);
    // a is told to give three up and keeps its epoch until it confirms.
    let before = a.epoch;
    a.beat(&mut g, &c6, 2);
    assert_eq!((a.owned.len(), a.epoch), (3, before));
    assert_eq!(g.members()["a"].state, MemberState::UnrevokedPartitions);
    b.beat(&mut g, &c6, 3);
    assert!(b.owned.is_empty(), "a has not confirmed yet");
    // a confirms (its owned no longer lists them): b may take them.
    a.beat(&mut g, &c6, 4);
    assert_eq!(a.epoch, g.epoch());
    b.beat(&mut g, &c6, 5);
    assert_eq!(b.owned.len(), 3);
    converge(&mut g, &mut [&mut a, &mut b], &c6, 6);

    // b leaves: a gets everything without waiting.
    let r = g.heartbeat(
        Heartbeat {
            member_id: "b".into(),
            member_epoch: LEAVE_EPOCH,
            ..Heartbeat::default()
        },
        &c6,
        7,
    );
    assert_eq!(r.member_epoch, LEAVE_EPOCH);
    a.beat(&mut g, &c6, 8);
    assert_eq!(a.owned.len(), 6);
}

#[test]
fn silent_stale_and_slow_members_are_fenced() {
    let c4 = counts(4);
    let config = ConsumerGroupConfig {
        session_timeout_ms: 1_000,
        ..ConsumerGroupConfig::default()
    };
    let mut g = ConsumerGroup::new(config);
    let mut a = Client::join(&mut g, "a", &c4, 0);
    let mut b = Client::join(&mut g, "b", &c4, 0);
    converge(&mut g, &mut [&mut a, &mut b], &c4, 0);
    a.beat(&mut g, &c4, 0);
    b.beat(&mut g, &c4, 0);
    assert_eq!(g.check_commit("a", a.epoch), Ok(()));
    assert_eq!(
        g.check_commit("a", a.epoch - 1),
        Err(ErrorCode::StaleMemberEpoch)
    );
    assert_eq!(g.check_commit("nobody", 1), Err(ErrorCode::UnknownMemberId));
    // A heartbeat from an epoch the member is not in is fenced.
    let r = g.heartbeat(
        Heartbeat {
            member_id: "a".into(),
            member_epoch: a.epoch + 5,
            ..Heartbeat::default()
        },
        &c4,
        10,
    );
    assert_eq!(r.error, ErrorCode::FencedMemberEpoch);
    // b goes silent: after the session it is dropped and a takes over.
    assert!(g.tick(900).is_empty());
    a.beat(&mut g, &c4, 900);
    assert_eq!(g.tick(1_100), vec!["b".to_owned()]);
    a.beat(&mut g, &c4, 1_100);
    assert_eq!(a.owned.len(), 4);

    // A member that never confirms a revocation is dropped after its rebalance timeout.
    let mut c = Client::join(&mut g, "c", &c4, 1_200);
    let all = a.owned.clone();
    a.beat(&mut g, &c4, 1_200);
    assert_eq!(g.members()["a"].state, MemberState::UnrevokedPartitions);
    let lagging = g.members()["a"].revoking_since;
    let mut now = 1_200;
    while now <= lagging + 10_000 {
        now += 500;
        // a stays alive but keeps reporting what it was told to give up.
        let r = g.heartbeat(
            Heartbeat {
                member_id: "a".into(),
                member_epoch: a.epoch,
                owned: Some(all.clone()),
                ..Heartbeat::default()
            },
            &c4,
            now,
        );
        assert!(matches!(
            r.error,
            ErrorCode::None | ErrorCode::UnknownMemberId
        ));
        c.beat(&mut g, &c4, now);
        assert!(
            g.members().contains_key("a") == (c.owned.len() <= 2),
            "nothing of a's before it is gone"
        );
        let _ = g.tick(now);
    }
    assert!(
        !g.members().contains_key("a"),
        "a never released its partitions"
    );
    c.beat(&mut g, &c4, now);
    assert_eq!(c.owned.len(), 4);
}

#[test]
fn a_static_member_that_leaves_briefly_keeps_its_partitions() {
    let c4 = counts(4);
    let mut g = ConsumerGroup::new(ConsumerGroupConfig::default());
    let join = |g: &mut ConsumerGroup, fresh: &str, now| {
        g.heartbeat(
            Heartbeat {
                fresh_member_id: fresh.into(),
                member_epoch: JOIN_EPOCH,
                instance_id: Some("s".into()),
                subscribed_topics: Some(vec!["t".into()]),
                owned: Some(Vec::new()),
                ..Heartbeat::default()
            },
            &c4,
            now,
        )
    };
    let first = join(&mut g, "s1", 0);
    let mut other = Client::join(&mut g, "o", &c4, 0);
    let mut s = Client {
        id: first.member_id.clone(),
        epoch: first.member_epoch,
        owned: first.assignment.clone(),
    };
    converge(&mut g, &mut [&mut s, &mut other], &c4, 1);
    s.beat(&mut g, &c4, 1);
    other.beat(&mut g, &c4, 1);
    let (epoch, owned) = (g.epoch(), s.owned.clone());
    let r = g.heartbeat(
        Heartbeat {
            member_id: s.id.clone(),
            member_epoch: STATIC_LEAVE_EPOCH,
            ..Heartbeat::default()
        },
        &c4,
        2,
    );
    assert_eq!(r.error, ErrorCode::None);
    // Back with a new member id within the session: same partitions, no new epoch.
    let back = join(&mut g, "s2", 3);
    assert_eq!((back.member_id.as_str(), back.assignment), ("s2", owned));
    assert_eq!(g.epoch(), epoch);
}

/// While a static member is active, a second member with its instance id
/// is refused (UNRELEASED_INSTANCE_ID) and the holder keeps its place;
/// once the holder leaves with epoch -2 the newcomer replaces it, and the
/// replaced member id is fenced by its instance id.
#[test]
fn a_held_instance_id_is_refused_until_its_member_leaves() {
    let c4 = counts(4);
    let mut g = ConsumerGroup::new(ConsumerGroupConfig::default());
    let join = |g: &mut ConsumerGroup, fresh: &str, now| {
        g.heartbeat(
            Heartbeat {
                fresh_member_id: fresh.into(),
                member_epoch: JOIN_EPOCH,
                instance_id: Some("s".into()),
                subscribed_topics: Some(vec!["t".into()]),
                owned: Some(Vec::new()),
                ..Heartbeat::default()
            },
            &c4,
            now,
        )
    };
    let first = join(&mut g, "s1", 0);
    assert_eq!(first.error, ErrorCode::None);
    let mut s = Client {
        id: first.member_id.clone(),
        epoch: first.member_epoch,
        owned: first.assignment.clone(),
    };
    converge(&mut g, &mut [&mut s], &c4, 1);
    assert_eq!(s.owned.len(), 4);

    let intruder = join(&mut g, "s2", 2);
    assert_eq!(intruder.error, ErrorCode::UnreleasedInstanceId);
    s.beat(&mut g, &c4, 3);
    assert_eq!(s.owned.len(), 4, "the holder keeps its partitions");

    let r = g.heartbeat(
        Heartbeat {
            member_id: s.id.clone(),
            member_epoch: STATIC_LEAVE_EPOCH,
            instance_id: Some("s".into()),
            ..Heartbeat::default()
        },
        &c4,
        4,
    );
    assert_eq!(r.error, ErrorCode::None);
    let replacement = join(&mut g, "s3", 5);
    assert_eq!(replacement.error, ErrorCode::None);
    assert_eq!(replacement.member_id, "s3");
    assert_eq!(
        replacement.assignment.len(),
        4,
        "it takes over the partitions"
    );

    let stale = g.heartbeat(
        Heartbeat {
            member_id: s.id.clone(),
            member_epoch: s.epoch,
            instance_id: Some("s".into()),
            ..Heartbeat::default()
        },
        &c4,
        6,
    );
    assert_eq!(stale.error, ErrorCode::FencedInstanceId);
}

/// A consumer that does not join (assign() + commit() under
/// group.protocol=consumer) commits with epoch -1 and its member id: taken
/// while the group has no members, refused once it has some.
#[test]
fn commits_outside_the_group_are_taken_only_while_it_is_empty() {
    let c4 = counts(4);
    let mut g = ConsumerGroup::new(ConsumerGroupConfig::default());
    assert_eq!(g.check_commit("a-member-id", -1), Ok(()));
    let m = Client::join(&mut g, "m", &c4, 0);
    assert_eq!(
        g.check_commit("a-member-id", -1),
        Err(ErrorCode::UnknownMemberId)
    );
    assert_eq!(g.check_commit(&m.id, m.epoch), Ok(()));
    assert_eq!(
        g.check_commit(&m.id, m.epoch + 1),
        Err(ErrorCode::StaleMemberEpoch)
    );
}

#[test]
fn a_random_schedule_never_gives_a_partition_two_owners() {
    for seed in 0..200u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut partitions = rng.random_range(1..12);
        let mut g = ConsumerGroup::new(ConsumerGroupConfig::default());
        let mut clients: Vec<Client> = Vec::new();
        let mut next = 0;
        let mut now = 0;
        for _ in 0..200 {
            now += 1;
            let c = counts(partitions);
            match rng.random_range(0..10) {
                0 if clients.len() < 6 => {
                    next += 1;
                    clients.push(Client::join(&mut g, &format!("m{next}"), &c, now));
                }
                1 if !clients.is_empty() => {
                    let gone = clients.remove(rng.random_range(0..clients.len()));
                    g.heartbeat(
                        Heartbeat {
                            member_id: gone.id,
                            member_epoch: LEAVE_EPOCH,
                            ..Heartbeat::default()
                        },
                        &c,
                        now,
                    );
                }
                2 if partitions < 16 => partitions += 1,
                _ if !clients.is_empty() => {
                    let i = rng.random_range(0..clients.len());
                    clients[i].beat(&mut g, &c, now);
                }
                _ => {}
            }
            check(&g, &clients);
        }
        if !clients.is_empty() {
            let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
            converge(&mut g, &mut refs, &counts(partitions), now);
        }
    }
}
