//! The classic group protocol, step by step on a manual clock.

#![allow(clippy::unwrap_used)]

use runnel_coordinator::group::{
    Group, GroupConfig, GroupState, JoinRequest, JoinResponse, Ms, Reply, Step, SyncResponse,
};
use runnel_proto::common::v1::ErrorCode;

fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    }
}

fn join(member_id: &str, fresh: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        client_id: "test".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![
            ("cooperative-sticky".into(), b"sub".to_vec()),
            ("range".into(), b"sub".to_vec()),
        ],
        fresh_member_id: fresh.into(),
        ..JoinRequest::default()
    }
}

fn joined(replies: &[Reply], id: &str) -> JoinResponse {
    replies
        .iter()
        .find_map(|r| match r {
            Reply::Join(m, resp) if m == id => Some(resp.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no join reply for {id} in {replies:?}"))
}

fn synced(replies: &[Reply], id: &str) -> SyncResponse {
    replies
        .iter()
        .find_map(|r| match r {
            Reply::Sync(m, resp) if m == id => Some(resp.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no sync reply for {id} in {replies:?}"))
}

/// The leader's SyncGroup, its generation stored: the replies it releases.
fn leader_sync(
    g: &mut Group,
    id: &str,
    generation: i32,
    assignments: Vec<(String, Vec<u8>)>,
    now: Ms,
) -> Vec<Reply> {
    let (step, replies) = g.sync(id, None, generation, assignments, now);
    assert_eq!((step, replies.len()), (Step::Wait(id.into()), 0));
    // Nobody has an assignment before the generation is stored.
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(g.take_store(), Some(generation));
    assert_eq!(g.take_store(), None, "one store per generation");
    g.stored(generation)
}

/// Two members joined and synced: generation 1, `a` leads.
fn stable_pair(now: Ms) -> Group {
    let mut g = Group::new("g", config());
    let (step, replies) = g.join(join("", "a"), now);
    assert_eq!(step, Step::Wait("a".into()));
    // a is alone and has rejoined: generation 1 completes at once.
    assert_eq!(joined(&replies, "a").generation_id, 1);
    let replies = leader_sync(&mut g, "a", 1, vec![("a".into(), b"a1".to_vec())], now);
    assert_eq!(synced(&replies, "a").assignment, b"a1");
    // b joins: a must rejoin.
    let (step, replies) = g.join(join("", "b"), now);
    assert_eq!(step, Step::Wait("b".into()));
    assert!(replies.is_empty());
    assert_eq!(
        g.heartbeat("a", None, 1, now),
        Err(ErrorCode::RebalanceInProgress)
    );
    let (_, replies) = g.join(join("a", ""), now);
    let lead = joined(&replies, "a");
    assert_eq!((lead.generation_id, lead.leader.as_str()), (2, "a"));
    assert_eq!(lead.protocol_name, "cooperative-sticky");
    assert_eq!(lead.members.len(), 2, "the leader sees every member");
    assert!(joined(&replies, "b").members.is_empty());
    let (step, replies) = g.sync("b", None, 2, vec![], now);
    assert_eq!((step, replies.len()), (Step::Wait("b".into()), 0));
    let assignments = vec![("a".into(), b"a2".to_vec()), ("b".into(), b"b2".to_vec())];
    let replies = leader_sync(&mut g, "a", 2, assignments, now);
    assert_eq!(synced(&replies, "a").assignment, b"a2");
    assert_eq!(synced(&replies, "b").assignment, b"b2");
    assert_eq!(g.state(), GroupState::Stable);
    g
}

#[test]
fn members_join_sync_and_heartbeat_through_generations() {
    let mut g = stable_pair(0);
    assert_eq!(g.heartbeat("a", None, 2, 1_000), Ok(()));
    assert_eq!(
        g.heartbeat("b", None, 1, 1_000),
        Err(ErrorCode::IllegalGeneration)
    );
    assert_eq!(
        g.heartbeat("zz", None, 2, 1_000),
        Err(ErrorCode::UnknownMemberId)
    );
    // A member that rejoins with nothing changed gets the current generation back.
    let (step, _) = g.join(join("b", ""), 1_000);
    assert!(matches!(
        step,
        Step::Respond(JoinResponse {
            generation_id: 2,
            ..
        })
    ));
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn new_members_without_an_id_are_given_one_first() {
    let mut g = Group::new("g", config());
    let mut req = join("", "fresh-1");
    req.require_known_member_id = true;
    let (step, _) = g.join(req, 0);
    let Step::Respond(r) = step else {
        panic!("answered at once")
    };
    assert_eq!(
        (r.error, r.member_id.as_str()),
        (ErrorCode::MemberIdRequired, "fresh-1")
    );
    assert_eq!(g.state(), GroupState::Empty);
    let (_, replies) = g.join(join("fresh-1", ""), 0);
    assert_eq!(joined(&replies, "fresh-1").generation_id, 1);
    // An id never handed out is refused.
    let (step, _) = g.join(join("made-up", ""), 0);
    assert!(matches!(
        step,
        Step::Respond(JoinResponse {
            error: ErrorCode::UnknownMemberId,
            ..
        })
    ));
}

#[test]
fn a_silent_member_is_dropped_and_the_rest_rebalance() {
    let mut g = stable_pair(0);
    // b heartbeats; a goes silent past its 10 s session.
    assert_eq!(g.heartbeat("b", None, 2, 8_000), Ok(()));
    let replies = g.tick(10_001);
    assert!(replies.is_empty());
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(g.members().len(), 1);
    assert_eq!(
        g.heartbeat("b", None, 2, 10_002),
        Err(ErrorCode::RebalanceInProgress)
    );
    let (_, replies) = g.join(join("b", ""), 10_003);
    let r = joined(&replies, "b");
    assert_eq!(
        (r.generation_id, r.leader.as_str()),
        (3, "b"),
        "b leads now"
    );
    assert_eq!(
        g.heartbeat("a", None, 3, 10_004),
        Err(ErrorCode::UnknownMemberId)
    );
}

#[test]
fn a_rebalance_stops_waiting_at_the_rebalance_timeout() {
    let mut g = stable_pair(0);
    let (_, replies) = g.join(join("", "c"), 1_000);
    assert!(replies.is_empty());
    // a rejoins, b never does (it keeps heartbeating, but that is not a join).
    let (_, replies) = g.join(join("a", ""), 2_000);
    assert!(replies.is_empty());
    for t in [10_000, 20_000, 29_000] {
        assert_eq!(
            g.heartbeat("b", None, 2, t),
            Err(ErrorCode::RebalanceInProgress)
        );
    }
    assert!(g.tick(30_999).is_empty());
    let replies = g.tick(31_000);
    let lead = joined(&replies, "a");
    assert_eq!((lead.generation_id, lead.members.len()), (3, 2));
    assert_eq!(joined(&replies, "c").generation_id, 3);
    assert!(!g.members().iter().any(|m| m.member_id == "b"));
}

#[test]
fn a_leader_that_never_assigns_is_dropped() {
    let mut g = Group::new("g", config());
    g.join(join("", "a"), 0);
    leader_sync(&mut g, "a", 1, vec![], 0);
    g.join(join("", "b"), 0);
    g.join(join("a", ""), 0);
    // Generation 2: b syncs, the leader a never does (though it heartbeats).
    assert_eq!(g.sync("b", None, 2, vec![], 100).0, Step::Wait("b".into()));
    for t in [9_000, 18_000, 27_000] {
        assert_eq!(g.heartbeat("a", None, 2, t), Ok(()));
        assert_eq!(g.heartbeat("b", None, 2, t), Ok(()));
        assert!(g.tick(t).is_empty());
    }
    let replies = g.tick(30_000);
    assert_eq!(synced(&replies, "b").error, ErrorCode::RebalanceInProgress);
    assert!(g.members().iter().all(|m| m.member_id == "b"));
}

#[test]
fn offset_commits_are_fenced_by_member_and_generation() {
    let mut g = stable_pair(0);
    assert_eq!(g.check_commit("a", None, 2), Ok(()));
    assert_eq!(
        g.check_commit("a", None, 1),
        Err(ErrorCode::IllegalGeneration)
    );
    assert_eq!(
        g.check_commit("zz", None, 2),
        Err(ErrorCode::UnknownMemberId)
    );
    assert_eq!(
        g.check_commit("", None, -1),
        Err(ErrorCode::IllegalGeneration)
    );
    // During a rebalance members may still commit what they read in their generation.
    g.join(join("", "c"), 1_000);
    assert_eq!(g.check_commit("a", None, 2), Ok(()));
    // Once everyone is gone, admin commits (no member, generation -1) are allowed.
    g.leave("a", None, 2_000).unwrap();
    g.leave("b", None, 2_000).unwrap();
    g.leave("c", None, 2_000).unwrap();
    assert_eq!(g.state(), GroupState::Empty);
    assert_eq!(g.check_commit("", None, -1), Ok(()));
    assert_eq!(g.delete(), Ok(()));
    assert_eq!(g.state(), GroupState::Dead);
}

#[test]
fn a_static_member_returning_keeps_its_assignment_without_a_rebalance() {
    let mut g = Group::new("g", config());
    let mut req = join("", "s-1");
    req.group_instance_id = Some("host-1".into());
    g.join(req.clone(), 0);
    g.sync(
        "s-1",
        Some("host-1"),
        1,
        vec![("s-1".into(), b"mine".to_vec())],
        0,
    );
    assert_eq!(g.take_store(), Some(1));
    g.stored(1);
    // It restarts and joins again with no member id.
    req.fresh_member_id = "s-2".into();
    let (step, replies) = g.join(req, 5_000);
    let Step::Respond(r) = step else {
        panic!("no rebalance needed")
    };
    assert_eq!((r.member_id.as_str(), r.generation_id), ("s-2", 1));
    assert!(replies.is_empty());
    assert_eq!(g.state(), GroupState::Stable);
    assert_eq!(
        g.sync("s-2", Some("host-1"), 1, vec![], 5_000).0,
        Step::Respond(SyncResponse {
            error: ErrorCode::None,
            assignment: b"mine".to_vec(),
        })
    );
    // The old incarnation is fenced.
    assert_eq!(
        g.heartbeat("s-1", Some("host-1"), 1, 5_000),
        Err(ErrorCode::FencedInstanceId)
    );
}

#[test]
fn bad_joins_are_refused_and_change_nothing() {
    let mut g = stable_pair(0);
    let mut other = join("", "x");
    other.protocols = vec![("someone-elses".into(), vec![])];
    let (step, _) = g.join(other, 0);
    assert!(matches!(
        step,
        Step::Respond(JoinResponse {
            error: ErrorCode::InconsistentGroupProtocol,
            ..
        })
    ));
    let mut short = join("", "y");
    short.session_timeout_ms = 10;
    let (step, _) = g.join(short, 0);
    assert!(matches!(
        step,
        Step::Respond(JoinResponse {
            error: ErrorCode::InvalidSessionTimeout,
            ..
        })
    ));
    assert_eq!(
        (g.state(), g.generation(), g.members().len()),
        (GroupState::Stable, 2, 2)
    );
    assert_eq!(g.delete(), Err(ErrorCode::NonEmptyGroup));
}

#[test]
fn a_new_group_waits_the_initial_rebalance_delay_not_the_rebalance_timeout() {
    let mut g = Group::new(
        "g",
        GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            ..GroupConfig::default()
        },
    );
    let (step, replies) = g.join(join("", "a"), 0);
    assert_eq!((step, replies.len()), (Step::Wait("a".into()), 0));
    // More members arriving within the delay make the first generation.
    let (step, replies) = g.join(join("", "b"), 1_000);
    assert_eq!((step, replies.len()), (Step::Wait("b".into()), 0));
    assert!(g.tick(2_999).is_empty(), "still within the delay");
    let replies = g.tick(3_000);
    assert_eq!(joined(&replies, "a").generation_id, 1);
    assert_eq!(joined(&replies, "b").generation_id, 1);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
}
