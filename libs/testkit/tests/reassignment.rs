//! Moving partitions' replicas (KIP-455) under acks=all load from an
//! idempotent producer: across every broker and back, with the leader or
//! the active controller killed mid-move, cancelled; and the requests the
//! controller must refuse, refused with Kafka's errors and nothing changed.
//! A move is held "in progress" by stopping the broker that joins, so the
//! faults land while it runs rather than by timing.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use runnel_client::{Acks, Admin, ErrorCode, NewTopic, Producer, ProducerConfig, ProducerRecord};
use runnel_testkit::load::Load;
use runnel_testkit::{TestCluster, wait_for};

/// Replicas, ISR and leader of partition 0, and whether it is moving.
async fn placement(admin: &Admin, topic: &str) -> (Vec<i32>, Vec<i32>, i32, bool) {
    let p = admin.describe_topic(topic).await.unwrap().partitions[0].clone();
    let moving = !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty();
    (p.replicas, p.isr, p.leader, moving)
}

/// Waits until partition 0 of `topic` is on exactly `target`, all in sync,
/// with no move in progress, and led by one of them.
async fn wait_moved(admin: &Admin, topic: &str, target: &[i32]) {
    wait_for(
        &format!("{topic}-0 moved to {target:?}"),
        Duration::from_secs(60),
        || async move {
            let (replicas, mut isr, leader, moving) = placement(admin, topic).await;
            isr.sort_unstable();
            let mut want = target.to_vec();
            want.sort_unstable();
            !moving && replicas == target && isr == want && target.contains(&leader)
        },
    )
    .await;
}

async fn reassign(admin: &Admin, topic: &str, target: Option<Vec<i32>>) {
    let results = admin
        .alter_partition_reassignments(vec![(topic.to_owned(), 0, target)])
        .await
        .unwrap();
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
}

/// A topic with one partition on brokers 1 and 2 (min.insync.replicas 2).
async fn topic_on_1_and_2(cluster: &TestCluster, topic: &str) {
    cluster
        .create_topic(
            NewTopic::new(topic)
                .assignments(vec![vec![1, 2]])
                .config("min.insync.replicas", "2"),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_across_every_broker_and_back_under_load() {
    let cluster = TestCluster::builder().brokers(3).start().await;
    topic_on_1_and_2(&cluster, "moving").await;
    let admin = cluster.admin();
    let load = Load::start(&cluster, "moving", 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for target in [vec![2, 3], vec![3, 1], vec![1, 2]] {
        reassign(&admin, "moving", Some(target.clone())).await;
        wait_moved(&admin, "moving", &target).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Broker 3 held the partition and gave it back: its copy is gone.
    wait_for(
        "broker 3 dropped its replica",
        Duration::from_secs(10),
        || async { cluster.broker_logs(2).get("moving", 0).is_none() },
    )
    .await;
    load.finish_and_check(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_move_loses_nothing_and_the_move_completes() {
    let mut cluster = TestCluster::builder().brokers(3).start().await;
    topic_on_1_and_2(&cluster, "leader-kill").await;
    let admin = cluster.admin();
    let leader = placement(&admin, "leader-kill").await.2;
    let stays = if leader == 1 { 2 } else { 1 };
    let load = Load::start(&cluster, "leader-kill", 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Broker 3 joins but cannot catch up while stopped: the move is held open.
    cluster.stop_broker(2).await;
    reassign(&admin, "leader-kill", Some(vec![3, stays])).await;
    let (replicas, _, _, moving) = placement(&admin, "leader-kill").await;
    assert!(moving, "in progress while broker 3 is down");
    assert_eq!(replicas, vec![3, stays, leader]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill_broker((leader - 1) as usize).await;
    cluster.start_broker_again(2).await;
    wait_moved(&admin, "leader-kill", &[3, stays]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.finish_and_check(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_killed_mid_move_hands_the_move_to_the_next_one() {
    let mut cluster = TestCluster::builder()
        .controllers(3)
        .brokers(3)
        .start()
        .await;
    topic_on_1_and_2(&cluster, "controller-kill").await;
    let admin = cluster.admin();
    let load = Load::start(&cluster, "controller-kill", 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.stop_broker(2).await;
    reassign(&admin, "controller-kill", Some(vec![2, 3])).await;
    assert!(placement(&admin, "controller-kill").await.3);
    let active = cluster.wait_active_controller().await;
    cluster.kill_controller(active).await;
    cluster.start_broker_again(2).await;
    wait_moved(&admin, "controller-kill", &[2, 3]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.finish_and_check(&cluster).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_move_restores_the_original_replicas() {
    let mut cluster = TestCluster::builder().brokers(3).start().await;
    topic_on_1_and_2(&cluster, "cancelled").await;
    let admin = cluster.admin();
    let before = placement(&admin, "cancelled").await;
    let load = Load::start(&cluster, "cancelled", 1);
    cluster.stop_broker(2).await;
    reassign(&admin, "cancelled", Some(vec![3, 2])).await;
    let listed = admin.list_partition_reassignments(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            &listed[0].replicas,
            &listed[0].adding_replicas,
            &listed[0].removing_replicas
        ),
        (&vec![3, 2, 1], &vec![3], &vec![1])
    );
    // Replicas still being added do not make the partition under-replicated
    // (KIP-352), neither in describe nor in the leader's gauge.
    let p = admin.describe_topic("cancelled").await.unwrap().partitions[0].clone();
    assert!(!p.under_replicated(), "{p:?}");
    let leader = (p.leader - 1) as usize;
    wait_for("the leader's state", Duration::from_secs(10), || async {
        cluster.broker_logs(leader).counts().2 == 0
    })
    .await;
    reassign(&admin, "cancelled", None).await;
    // As Kafka's revert: the original replicas, in the order the move left
    // them (the rollback file of `partitions reassign --execute` restores
    // the order too).
    let (mut after, _, _, moving) = placement(&admin, "cancelled").await;
    after.sort_unstable();
    assert_eq!((after, moving), (before.0.clone(), false));
    assert!(
        admin
            .list_partition_reassignments(None)
            .await
            .unwrap()
            .is_empty()
    );
    cluster.start_broker_again(2).await;
    wait_moved(&admin, "cancelled", &[2, 1]).await;
    // Cancelling again: nothing in progress.
    let results = admin
        .alter_partition_reassignments(vec![("cancelled".into(), 0, None)])
        .await
        .unwrap();
    assert_eq!(
        results[0].1.as_ref().unwrap_err().code(),
        Some(ErrorCode::NoReassignmentInProgress)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.finish_and_check(&cluster).await;
    assert!(cluster.broker_logs(2).get("cancelled", 0).is_none());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_assignments_are_refused_with_kafkas_errors_and_change_nothing() {
    let cluster = TestCluster::builder().brokers(3).start().await;
    topic_on_1_and_2(&cluster, "fixed").await;
    let admin = cluster.admin();
    let before = admin.assignments(&[]).await.unwrap();
    let refused = |target: Option<Vec<i32>>, topic: &str, partition: i32| {
        let admin = admin.clone();
        let topic = topic.to_owned();
        async move {
            let results = admin
                .alter_partition_reassignments(vec![(topic, partition, target)])
                .await
                .unwrap();
            let e = results.into_iter().next().unwrap().1.unwrap_err();
            (e.code(), e.to_string())
        }
    };
    let (code, message) = refused(Some(vec![1, 9]), "fixed", 0).await;
    assert_eq!(code, Some(ErrorCode::InvalidReplicaAssignment));
    assert!(
        message.contains("includes broker 9, but no such broker is registered"),
        "{message}"
    );
    let (code, message) = refused(Some(vec![2, 2]), "fixed", 0).await;
    assert_eq!(code, Some(ErrorCode::InvalidReplicaAssignment));
    assert!(message.contains("the broker 2 more than once"), "{message}");
    let (code, _) = refused(Some(vec![1, 2, 3, 4]), "fixed", 0).await;
    assert_eq!(
        code,
        Some(ErrorCode::InvalidReplicaAssignment),
        "a factor no broker set can meet"
    );
    let (code, _) = refused(Some(vec![1, 2]), "fixed", 5).await;
    assert_eq!(code, Some(ErrorCode::UnknownTopicOrPartition));
    let (code, _) = refused(Some(vec![1, 2]), "nowhere", 0).await;
    assert_eq!(code, Some(ErrorCode::UnknownTopicOrPartition));

    // Manual placement at creation and growth, checked the same way.
    let create = |topic: NewTopic| {
        let admin = admin.clone();
        async move { admin.create_topic(topic).await.unwrap_err().code() }
    };
    assert_eq!(
        create(NewTopic::new("uneven").assignments(vec![vec![1, 2], vec![3]])).await,
        Some(ErrorCode::InvalidReplicaAssignment)
    );
    assert_eq!(
        create(NewTopic::new("unknown-broker").assignments(vec![vec![7]])).await,
        Some(ErrorCode::InvalidReplicaAssignment)
    );
    assert_eq!(
        create(
            NewTopic::new("both")
                .partitions(1)
                .assignments(vec![vec![1]])
        )
        .await,
        Some(ErrorCode::InvalidRequest)
    );
    let e = admin
        .create_partitions_on("fixed", 3, vec![vec![3, 1]])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidReplicaAssignment));
    assert!(
        e.to_string().contains(
            "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified."
        ),
        "{e}"
    );
    assert_eq!(
        admin.assignments(&[]).await.unwrap(),
        before,
        "nothing changed"
    );

    // What is accepted lands where it was asked to.
    admin
        .create_partitions_on("fixed", 2, vec![vec![3, 1]])
        .await
        .unwrap();
    cluster
        .create_topic(NewTopic::new("placed").assignments(vec![vec![3], vec![2], vec![1]]))
        .await;
    let now = admin.assignments(&[]).await.unwrap();
    assert_eq!(now["fixed"][&1], vec![3, 1]);
    assert_eq!(
        now["placed"].values().cloned().collect::<Vec<_>>(),
        vec![vec![3], vec![2], vec![1]]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_move_copies_at_the_throttle_until_it_is_lifted() {
    const RECORD: usize = 10_000;
    const RECORDS: i64 = 500;
    const RATE: u64 = 100_000;
    let cluster = TestCluster::builder().brokers(3).start().await;
    cluster
        .create_topic(NewTopic::new("throttled").assignments(vec![vec![1]]))
        .await;
    let producer = Producer::with_cluster(
        cluster.client(),
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for _ in 0..RECORDS {
        let value = vec![b'x'; RECORD];
        deliveries.push(
            producer
                .send(ProducerRecord::new("throttled", value).partition(0))
                .await
                .unwrap(),
        );
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await.unwrap();

    // What `partitions reassign --execute --throttle` sets for a move of
    // partition 0 from broker 1 to broker 2.
    let admin = cluster.admin();
    admin
        .alter_configs(
            "throttled",
            &[
                ("leader.replication.throttled.replicas".into(), "0:1".into()),
                (
                    "follower.replication.throttled.replicas".into(),
                    "0:2".into(),
                ),
            ],
            &[],
        )
        .await
        .unwrap();
    let rates = [
        (
            "leader.replication.throttled.rate".to_owned(),
            RATE.to_string(),
        ),
        (
            "follower.replication.throttled.rate".to_owned(),
            RATE.to_string(),
        ),
    ];
    for broker in [1, 2] {
        admin
            .alter_broker_configs(Some(broker), &rates, &[])
            .await
            .unwrap();
    }
    let described = admin.describe_broker_configs(Some(2)).await.unwrap();
    assert!(
        described
            .iter()
            .any(|e| e.key == "follower.replication.throttled.rate"
                && e.value == "100000"
                && e.is_set),
        "{described:?}"
    );
    reassign(&admin, "throttled", Some(vec![2])).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Unthrottled, 5 MB cross in well under a second here. Throttled, the
    // quota windows let through their first burst (ten windows' worth) plus
    // what one fetch carries past the limit on each side, no more.
    let copied = cluster
        .broker_logs(1)
        .get("throttled", 0)
        .map_or(0, |p| p.log_end_offset());
    let bound = ((10 * RATE as usize + 2 * (1 << 20)) / RECORD) as i64 + 20;
    assert!(
        copied < bound && copied < RECORDS,
        "broker 2 copied {copied} of {RECORDS} records in 2 s at {RATE} B/s (bound {bound})"
    );
    assert!(placement(&admin, "throttled").await.3, "still moving");
    // Lifting the throttle lets the move finish.
    let keys: Vec<String> = rates.iter().map(|(k, _)| k.clone()).collect();
    for broker in [1, 2] {
        admin
            .alter_broker_configs(Some(broker), &[], &keys)
            .await
            .unwrap();
    }
    wait_moved(&admin, "throttled", &[2]).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_configs_other_than_the_throttles_are_static() {
    let cluster = TestCluster::builder().start().await;
    cluster.create_topic(NewTopic::new("plain")).await;
    let admin = cluster.admin();
    let e = admin
        .alter_broker_configs(Some(1), &[("log.retention.ms".into(), "1".into())], &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidConfig));
    let e = admin
        .alter_broker_configs(
            None,
            &[("leader.replication.throttled.rate".into(), "-5".into())],
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidConfig));
    let e = admin
        .alter_configs(
            "plain",
            &[("leader.replication.throttled.replicas".into(), "0".into())],
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidConfig));
    // The cluster default applies to every broker without its own value.
    admin
        .alter_broker_configs(
            None,
            &[("leader.replication.throttled.rate".into(), "5000".into())],
            &[],
        )
        .await
        .unwrap();
    let described = admin.describe_broker_configs(Some(1)).await.unwrap();
    let leader = described
        .iter()
        .find(|e| e.key == "leader.replication.throttled.rate")
        .unwrap();
    assert_eq!((leader.value.as_str(), leader.is_set), ("5000", false));
    cluster.shutdown().await;
}
