//! The group manager: concurrent joins form one generation, the generation
//! and commits are written before they are acknowledged, and a new
//! coordinator replaying the written records has the committed offsets.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use runnel_coordinator::group::{GroupConfig, GroupState, JoinRequest};
use runnel_coordinator::manager::{
    GroupManager, OffsetCommit, OffsetsRecord, RecordSink, SinkError,
};
use runnel_proto::common::v1::ErrorCode;

/// Keeps what it is given, in order, like one partition of the topic; can be made to fail.
#[derive(Default)]
struct Recorded {
    records: Mutex<Vec<(i32, OffsetsRecord)>>,
    failing: AtomicBool,
}

impl RecordSink for Recorded {
    fn append(
        &self,
        partition: i32,
        records: Vec<OffsetsRecord>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            if self.failing.load(Ordering::SeqCst) {
                return Err(SinkError {
                    code: ErrorCode::NotEnoughReplicas,
                    message: "min.insync.replicas not met".into(),
                });
            }
            self.records
                .lock()
                .extend(records.into_iter().map(|r| (partition, r)));
            Ok(())
        })
    }
}

fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    }
}

fn join(fresh: &str) -> JoinRequest {
    JoinRequest {
        client_id: "test".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 1_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), b"t".to_vec())],
        fresh_member_id: fresh.into(),
        ..JoinRequest::default()
    }
}

fn commit(offset: i64) -> Vec<OffsetCommit> {
    vec![OffsetCommit {
        topic: "t".into(),
        partition: 0,
        offset,
        leader_epoch: 1,
        metadata: String::new(),
    }]
}

#[tokio::test]
async fn a_generation_forms_is_stored_and_fences_commits() {
    let sink = Arc::new(Recorded::default());
    let manager = Arc::new(GroupManager::new(config(), sink.clone()));
    let first = manager.join("g", join("a")).await;
    assert_eq!((first.error, first.generation_id), (ErrorCode::None, 1));
    manager
        .sync("g", "a", None, 1, vec![("a".into(), b"all".to_vec())])
        .await;

    // b joins while a rejoins: both answers come when the generation forms.
    let b = tokio::spawn({
        let m = Arc::clone(&manager);
        async move { m.join("g", join("b")).await }
    });
    while manager.heartbeat("g", "a", None, 1) != Err(ErrorCode::RebalanceInProgress) {
        tokio::task::yield_now().await;
    }
    let mut again = join("");
    again.member_id = "a".into();
    let a = manager.join("g", again).await;
    let b = b.await.unwrap();
    assert_eq!((a.generation_id, b.generation_id), (2, 2));
    assert_eq!(a.members.len(), 2, "a leads and sees both");

    let b_sync = tokio::spawn({
        let m = Arc::clone(&manager);
        async move { m.sync("g", "b", None, 2, vec![]).await }
    });
    tokio::task::yield_now().await;
    let assignments = vec![("a".into(), b"p0".to_vec()), ("b".into(), b"p1".to_vec())];
    let a_sync = manager.sync("g", "a", None, 2, assignments).await;
    assert_eq!(a_sync.assignment, b"p0");
    assert_eq!(b_sync.await.unwrap().assignment, b"p1");
    assert_eq!(manager.state("g"), GroupState::Stable);
    let written = sink.records.lock().len();
    assert_eq!(written, 2, "each generation was stored");

    // Commits: the current generation only.
    manager.commit("g", "a", None, 2, commit(42)).await.unwrap();
    assert_eq!(manager.committed("g", "t", 0).unwrap().offset, 42);
    assert_eq!(
        manager.commit("g", "a", None, 1, commit(7)).await,
        Err(ErrorCode::IllegalGeneration)
    );
    assert_eq!(
        manager.commit("g", "x", None, 2, commit(7)).await,
        Err(ErrorCode::UnknownMemberId)
    );
    assert_eq!(manager.committed("g", "t", 0).unwrap().offset, 42);

    // A commit the topic refuses is not acknowledged and not visible.
    sink.failing.store(true, Ordering::SeqCst);
    assert_eq!(
        manager.commit("g", "a", None, 2, commit(50)).await,
        Err(ErrorCode::NotEnoughReplicas)
    );
    assert_eq!(manager.committed("g", "t", 0).unwrap().offset, 42);

    // Another coordinator replaying the partition has the offsets.
    let records: Vec<OffsetsRecord> = sink.records.lock().iter().map(|(_, r)| r.clone()).collect();
    assert!(
        sink.records
            .lock()
            .iter()
            .all(|(p, _)| *p == runnel_coordinator::offsets::partition_for("g", 50))
    );
    let successor = GroupManager::new(config(), Arc::new(Recorded::default()));
    successor.load(&records).unwrap();
    assert_eq!(successor.committed("g", "t", 0).unwrap().offset, 42);
}

#[tokio::test]
async fn a_generation_that_cannot_be_stored_is_not_handed_out() {
    let sink = Arc::new(Recorded::default());
    let manager = GroupManager::new(config(), sink.clone());
    assert_eq!(manager.join("g", join("a")).await.generation_id, 1);
    sink.failing.store(true, Ordering::SeqCst);
    let r = manager
        .sync("g", "a", None, 1, vec![("a".into(), b"all".to_vec())])
        .await;
    assert_eq!(
        (r.error, r.assignment.len()),
        (ErrorCode::RebalanceInProgress, 0)
    );
    assert_eq!(manager.state("g"), GroupState::PreparingRebalance);
    assert_eq!(
        manager.heartbeat("g", "a", None, 1),
        Err(ErrorCode::RebalanceInProgress)
    );
}

#[tokio::test]
async fn groups_are_listed_described_and_deleted_only_when_empty() {
    let sink = Arc::new(Recorded::default());
    let manager = GroupManager::new(config(), sink.clone());
    let joined = manager.join("live", join("a")).await;
    manager
        .sync("live", "a", None, 1, vec![("a".into(), b"x".to_vec())])
        .await;
    manager
        .commit("live", "a", None, joined.generation_id, commit(3))
        .await
        .unwrap();
    manager
        .commit("offsets-only", "", None, -1, commit(9))
        .await
        .unwrap();
    let listed: Vec<_> = manager
        .list()
        .into_iter()
        .map(|g| (g.group_id, g.state, g.protocol_type, g.group_type))
        .collect();
    assert_eq!(
        listed,
        vec![
            (
                "live".into(),
                GroupState::Stable,
                "consumer".into(),
                "classic"
            ),
            // Only committed offsets: a "simple" group, no protocol type
            // and classic (as Kafka).
            (
                "offsets-only".into(),
                GroupState::Empty,
                String::new(),
                "classic"
            )
        ]
    );
    let d = manager.describe("live").unwrap();
    assert_eq!(
        (
            d.generation,
            d.members.len(),
            d.protocol.as_str(),
            d.protocol_type.as_str()
        ),
        (1, 1, "range", "consumer")
    );
    assert_eq!(manager.delete("live").await, Err(ErrorCode::NonEmptyGroup));
    assert_eq!(
        manager.delete("nope").await,
        Err(ErrorCode::GroupIdNotFound)
    );
    manager.delete("offsets-only").await.unwrap();
    assert!(manager.committed("offsets-only", "t", 0).is_none());
    assert!(manager.describe("offsets-only").is_none());
    // The tombstones were written: a successor does not see the group.
    let records: Vec<OffsetsRecord> = sink.records.lock().iter().map(|(_, r)| r.clone()).collect();
    let successor = GroupManager::new(config(), Arc::new(Recorded::default()));
    successor.load(&records).unwrap();
    assert!(successor.committed("offsets-only", "t", 0).is_none());
    assert_eq!(successor.committed("live", "t", 0).unwrap().offset, 3);
    manager.leave("live", "a", None).unwrap();
    manager.delete("live").await.unwrap();
    assert_eq!(manager.list(), vec![]);
}

#[tokio::test]
async fn offsets_of_an_empty_group_expire_after_retention_and_not_before() {
    let sink = Arc::new(Recorded::default());
    let now = Arc::new(std::sync::atomic::AtomicI64::new(1_000_000));
    let clock = Arc::clone(&now);
    let manager = GroupManager::with_clock(
        config(),
        sink.clone(),
        Box::new(move || clock.load(Ordering::SeqCst)),
    );
    let first = manager.join("g", join("a")).await;
    manager
        .sync(
            "g",
            "a",
            None,
            first.generation_id,
            vec![("a".into(), vec![])],
        )
        .await;
    manager
        .commit("g", "a", None, first.generation_id, commit(5))
        .await
        .unwrap();
    // An admin commit for a group nobody joined.
    manager
        .commit("solo", "", None, -1, commit(9))
        .await
        .unwrap();
    let retention = 60_000;
    now.fetch_add(2 * retention, Ordering::SeqCst);
    assert_eq!(
        manager.expire_offsets(retention).await,
        1,
        "only the memberless group's"
    );
    assert!(manager.committed("solo", "t", 0).is_none());
    assert_eq!(
        manager.committed("g", "t", 0).unwrap().offset,
        5,
        "a group with members keeps its offsets"
    );

    // The member leaves: retention counts from the moment the group emptied.
    manager.leave("g", "a", None).unwrap();
    now.fetch_add(retention / 2, Ordering::SeqCst);
    assert_eq!(
        manager.expire_offsets(retention).await,
        0,
        "emptied too recently"
    );
    now.fetch_add(retention, Ordering::SeqCst);
    assert_eq!(manager.expire_offsets(retention).await, 1);
    assert!(manager.committed("g", "t", 0).is_none());
    assert_eq!(
        manager.state("g"),
        GroupState::Dead,
        "an empty group without offsets goes"
    );
    assert!(manager.list().is_empty());

    // Tombstones were written, so a coordinator replaying the topic agrees.
    let replay = GroupManager::new(config(), Arc::new(Recorded::default()));
    let records: Vec<OffsetsRecord> = sink.records.lock().iter().map(|(_, r)| r.clone()).collect();
    replay.load(&records).unwrap();
    assert!(replay.list().is_empty(), "{:?}", replay.list());
}

#[tokio::test]
async fn a_group_emptied_by_a_leave_is_stored_so_a_new_owner_does_not_bring_its_member_back() {
    let sink = Arc::new(Recorded::default());
    let manager = GroupManager::new(config(), sink.clone());
    let first = manager.join("g", join("a")).await;
    manager
        .sync(
            "g",
            "a",
            None,
            first.generation_id,
            vec![("a".into(), vec![])],
        )
        .await;
    let replay = |sink: &Recorded| {
        let records: Vec<OffsetsRecord> =
            sink.records.lock().iter().map(|(_, r)| r.clone()).collect();
        let next =
            GroupManager::new(config(), Arc::new(Recorded::default())).owning_assigned_partitions();
        let p = runnel_coordinator::offsets::partition_for("g", 50);
        next.begin_load(p);
        next.finish_load(p, &records).unwrap();
        next.state("g")
    };
    assert_eq!(
        replay(&sink),
        GroupState::Stable,
        "the stored generation has a"
    );
    manager.leave("g", "a", None).unwrap();
    manager.store_emptied().await;
    assert_eq!(
        replay(&sink),
        GroupState::Empty,
        "a left: nobody to wait for"
    );
}
