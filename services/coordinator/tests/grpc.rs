//! The Coordinator gRPC API end to end: a coordinator over a three-broker
//! cluster, two members forming a group, commits fenced by generation,
//! and group administration.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use runnel_common::shutdown::CancellationToken;
use runnel_coordinator::manager::Ownership;
use runnel_coordinator::{Config, CoordinatorHandle};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;
use runnel_proto::coordinator::v1::coordinator_client::CoordinatorClient;
use runnel_testkit::TestCluster;
use tonic::transport::Channel;

async fn serve(cluster: &TestCluster) -> (CoordinatorHandle, CoordinatorClient<Channel>) {
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        bootstrap: cluster.bootstrap(),
        offsets_topic_num_partitions: 5,
        group_initial_rebalance_delay_ms: 0,
        ..Config::default()
    };
    let handle = runnel_coordinator::start(config, CancellationToken::new())
        .await
        .unwrap();
    let addr = handle.grpc_addr;
    let manager = Arc::clone(&handle.manager);
    runnel_testkit::wait_for(
        "the coordinator to own its partitions",
        Duration::from_secs(30),
        || {
            let m = Arc::clone(&manager);
            async move {
                m.owned()
                    .is_some_and(|o| o.len() == 5 && o.values().all(|s| *s == Ownership::Active))
            }
        },
    )
    .await;
    let client = CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (handle, client)
}

fn join(member_id: &str) -> pb::JoinGroupRequest {
    pb::JoinGroupRequest {
        group_id: "app".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 2_000,
        member_id: member_id.into(),
        protocol_type: "consumer".into(),
        protocols: vec![pb::GroupProtocol {
            name: "range".into(),
            metadata: b"orders".to_vec().into(),
        }],
        client_id: "test".into(),
        ..Default::default()
    }
}

/// Joins as a new member: first the member id (KIP-394), then the generation.
async fn join_new(c: &mut CoordinatorClient<Channel>) -> pb::JoinGroupResponse {
    let first = c.join_group(join("")).await.unwrap().into_inner();
    assert_eq!(first.error_code(), ErrorCode::MemberIdRequired);
    assert!(first.member_id.starts_with("test-"));
    c.join_group(join(&first.member_id))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_form_a_group_commit_and_the_group_is_administered() {
    let cluster = TestCluster::builder().brokers(3).start().await;
    let (_coordinator, mut c) = serve(&cluster).await;
    let found = c
        .find_coordinator(pb::FindCoordinatorRequest {
            group_id: "app".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (found.error_code(), found.coordinator_id),
        (ErrorCode::None, 1)
    );

    let a = join_new(&mut c).await;
    assert_eq!((a.error_code(), a.generation_id), (ErrorCode::None, 1));
    assert_eq!(a.leader, a.member_id);
    let sync = |member: &str, generation, assignments: Vec<pb::SyncGroupAssignment>| {
        pb::SyncGroupRequest {
            group_id: "app".into(),
            generation_id: generation,
            member_id: member.into(),
            assignments,
            ..Default::default()
        }
    };
    let assign = |m: &str, a: &str| pb::SyncGroupAssignment {
        member_id: m.into(),
        assignment: a.as_bytes().to_vec().into(),
    };
    let s = c
        .sync_group(sync(&a.member_id, 1, vec![assign(&a.member_id, "0,1")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&s.assignment[..], b"0,1");

    // A second member: both rejoin into generation 2.
    let mut c2 = c.clone();
    let b = tokio::spawn(async move { join_new(&mut c2).await });
    let hb = |generation| pb::HeartbeatRequest {
        group_id: "app".into(),
        generation_id: generation,
        member_id: a.member_id.clone(),
        ..Default::default()
    };
    loop {
        let r = c.heartbeat(hb(1)).await.unwrap().into_inner();
        if r.error_code() == ErrorCode::RebalanceInProgress {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a2 = c.join_group(join(&a.member_id)).await.unwrap().into_inner();
    let b = b.await.unwrap();
    assert_eq!((a2.generation_id, b.generation_id), (2, 2));
    assert_eq!(a2.members.len(), 2);
    let mut cb = c.clone();
    let b_id = b.member_id.clone();
    let b_sync = tokio::spawn(async move {
        cb.sync_group(sync(&b_id, 2, vec![]))
            .await
            .unwrap()
            .into_inner()
    });
    c.sync_group(sync(
        &a.member_id,
        2,
        vec![assign(&a.member_id, "0"), assign(&b.member_id, "1")],
    ))
    .await
    .unwrap();
    assert_eq!(&b_sync.await.unwrap().assignment[..], b"1");

    // Commits: the current generation only, then fetched back.
    let commit = |generation, offset| pb::OffsetCommitRequest {
        group_id: "app".into(),
        generation_id: generation,
        member_id: b.member_id.clone(),
        partitions: vec![pb::OffsetCommitPartition {
            topic: "orders".into(),
            partition: 1,
            offset,
            leader_epoch: 0,
            metadata: String::new(),
        }],
        ..Default::default()
    };
    let ok = c.offset_commit(commit(2, 77)).await.unwrap().into_inner();
    assert_eq!(ok.partitions[0].error_code(), ErrorCode::None);
    let stale = c.offset_commit(commit(1, 99)).await.unwrap().into_inner();
    assert_eq!(
        stale.partitions[0].error_code(),
        ErrorCode::IllegalGeneration
    );
    let fetched = c
        .offset_fetch(pb::OffsetFetchRequest {
            group_id: "app".into(),
            topics: vec![],
            require_stable: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.partitions.len(), 1);
    assert_eq!(fetched.partitions[0].offset, 77);

    // Administration: listed, described, not deletable while it has members.
    let listed = c
        .list_groups(pb::ListGroupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.groups.len(), 1);
    assert_eq!(listed.groups[0].state, "Stable");
    let described = c
        .describe_groups(pb::DescribeGroupsRequest {
            group_ids: vec!["app".into(), "ghost".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.groups[0].members.len(), 2);
    assert_eq!(described.groups[1].state, "Dead");
    let refused = c
        .delete_groups(pb::DeleteGroupsRequest {
            group_ids: vec!["app".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refused.groups[0].error_code(), ErrorCode::NonEmptyGroup);
    for id in [&a.member_id, &b.member_id] {
        c.leave_group(pb::LeaveGroupRequest {
            group_id: "app".into(),
            member_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let deleted = c
        .delete_groups(pb::DeleteGroupsRequest {
            group_ids: vec!["app".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.groups[0].error_code(), ErrorCode::None);
    let listed = c
        .list_groups(pb::ListGroupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.groups.is_empty(), "{:?}", listed.groups);
    cluster.shutdown().await;
}

fn cgh(member_id: &str, epoch: i32, owned: Option<Vec<i32>>) -> pb::ConsumerGroupHeartbeatRequest {
    pb::ConsumerGroupHeartbeatRequest {
        group_id: "next".into(),
        member_id: member_id.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: 30_000,
        subscribed_topics: (epoch == 0).then(|| pb::TopicNames {
            names: vec!["orders".into()],
        }),
        owned: owned.map(|ps| pb::PartitionSet {
            topics: vec![pb::TopicPartitions {
                topic: "orders".into(),
                partitions: ps,
            }],
        }),
        ..Default::default()
    }
}

fn partitions(r: &pb::ConsumerGroupHeartbeatResponse) -> Vec<i32> {
    let mut ps: Vec<i32> = r
        .assignment
        .iter()
        .flat_map(|a| a.topics.iter().flat_map(|t| t.partitions.clone()))
        .collect();
    ps.sort_unstable();
    ps
}

/// KIP-848 over gRPC: the coordinator assigns, a partition moves only once
/// its owner released it, commits are fenced by member epoch, and the
/// group is stored, so a restarted coordinator carries on with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_heartbeats_assign_reconcile_and_survive_a_restart() {
    let cluster = TestCluster::builder().brokers(1).start().await;
    cluster
        .create_topic(runnel_client::NewTopic::new("orders").partitions(4))
        .await;
    let (coordinator, mut c) = serve(&cluster).await;
    let beat = |c: &mut CoordinatorClient<Channel>, req| {
        let mut c = c.clone();
        async move { c.consumer_group_heartbeat(req).await.unwrap().into_inner() }
    };
    let a = beat(&mut c, cgh("", 0, Some(vec![]))).await;
    assert_eq!(a.error_code(), ErrorCode::None, "{}", a.error_message);
    assert_eq!(partitions(&a), vec![0, 1, 2, 3]);
    let b = beat(&mut c, cgh("", 0, Some(vec![]))).await;
    assert!(partitions(&b).is_empty(), "a still owns everything");
    // a is told to give two up, keeping its epoch until it confirms.
    let a2 = beat(
        &mut c,
        cgh(&a.member_id, a.member_epoch, Some(vec![0, 1, 2, 3])),
    )
    .await;
    assert_eq!(
        (partitions(&a2).len(), a2.member_epoch),
        (2, a.member_epoch)
    );
    let b2 = beat(&mut c, cgh(&b.member_id, b.member_epoch, Some(vec![]))).await;
    assert!(partitions(&b2).is_empty(), "not released yet");
    let kept = partitions(&a2);
    let a3 = beat(
        &mut c,
        cgh(&a.member_id, a2.member_epoch, Some(kept.clone())),
    )
    .await;
    assert!(a3.member_epoch > a.member_epoch);
    let b3 = beat(&mut c, cgh(&b.member_id, b2.member_epoch, Some(vec![]))).await;
    assert_eq!(partitions(&b3).len(), 2);
    assert!(partitions(&b3).iter().all(|p| !kept.contains(p)));

    // Commits carry the member epoch.
    let commit = |member: &str, epoch: i32| pb::OffsetCommitRequest {
        group_id: "next".into(),
        generation_id: epoch,
        member_id: member.into(),
        partitions: vec![pb::OffsetCommitPartition {
            topic: "orders".into(),
            partition: kept[0],
            offset: 7,
            leader_epoch: -1,
            metadata: String::new(),
        }],
        ..Default::default()
    };
    let ok = c
        .offset_commit(commit(&a.member_id, a3.member_epoch))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.partitions[0].error_code(), ErrorCode::None);
    let stale = c
        .offset_commit(commit(&a.member_id, a.member_epoch - 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stale.partitions[0].error_code(),
        ErrorCode::StaleMemberEpoch
    );
    let described = c
        .describe_groups(pb::DescribeGroupsRequest {
            group_ids: vec!["next".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.groups[0].members.len(), 2);
    assert_eq!(described.groups[0].protocol, "uniform");

    // A new coordinator replays the group: the members carry on in their epochs.
    coordinator.shutdown().await;
    let (_coordinator, mut c) = serve(&cluster).await;
    let again = beat(
        &mut c,
        cgh(&a.member_id, a3.member_epoch, Some(kept.clone())),
    )
    .await;
    assert_eq!(
        again.error_code(),
        ErrorCode::None,
        "{}",
        again.error_message
    );
    assert_eq!(
        (partitions(&again), again.member_epoch),
        (kept, a3.member_epoch)
    );
    cluster.shutdown().await;
}
