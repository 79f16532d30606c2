//! The controller quorum under failure: three controllers (Raft), real
//! brokers, metadata writes through the admin client while the active
//! controller is killed, cut off, or everything restarts. Every check is
//! over what users rely on: an acknowledged metadata change is in the log
//! exactly once, in the order it was acknowledged, on every controller and
//! in every broker's view.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use runnel_client::{Admin, ClientError, NewTopic};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::MetadataEvent;
use runnel_proto::metadata::v1::metadata_record::Record;
use runnel_testkit::{Node, TestCluster, wait_for};

/// One acknowledged metadata write.
#[derive(Debug, Clone)]
struct Acked {
    topic: String,
    started: Instant,
    acked: Instant,
}

/// Creates topics `{prefix}-0`, `{prefix}-1`, ... one after another until
/// `count` were attempted, recording the acknowledged ones.
async fn create_topics(
    admin: Admin,
    prefix: String,
    count: usize,
    rf: i32,
    acked: Arc<Mutex<Vec<Acked>>>,
) {
    for i in 0..count {
        let topic = format!("{prefix}-{i}");
        let started = Instant::now();
        let result = admin
            .create_topic(NewTopic {
                name: topic.clone(),
                partitions: Some(2),
                replication_factor: Some(rf),
                configs: Default::default(),
                assignments: Default::default(),
            })
            .await;
        match result {
            Ok(()) => acked.lock().push(Acked {
                topic,
                started,
                acked: Instant::now(),
            }),
            // A retried creation whose first attempt was applied: in the
            // log, but never acknowledged as created.
            Err(ClientError::Server {
                code: ErrorCode::TopicAlreadyExists,
                ..
            }) => {}
            Err(e) => {
                // Not acknowledged: may or may not be in the log.
                eprintln!("create {topic}: {e}");
            }
        }
    }
}

/// Controller `i`'s whole metadata log.
async fn log_of(cluster: &TestCluster, i: usize) -> Vec<MetadataEvent> {
    cluster
        .controller(i)
        .expect("running")
        .controller
        .store()
        .read_log(0, i64::MAX)
        .await
        .expect("log reads")
}

/// The running controllers' indexes.
fn running(cluster: &TestCluster, n: usize) -> Vec<usize> {
    (0..n)
        .filter(|&i| cluster.controller(i).is_some())
        .collect()
}

/// Waits until the running controllers (and brokers) have applied the same
/// log end, then checks: the logs are identical; every acknowledged
/// creation is there exactly once; acknowledgement order is log order; each
/// broker's topics equal the controllers'.
async fn check(cluster: &TestCluster, controllers: usize, brokers: &[usize], acked: &[Acked]) {
    let ids = running(cluster, controllers);
    wait_for(
        "controllers to agree on the log end",
        Duration::from_secs(30),
        || async {
            let mut ends = Vec::new();
            for &i in &ids {
                ends.push(
                    cluster
                        .controller(i)
                        .expect("running")
                        .controller
                        .image()
                        .await
                        .next_offset,
                );
            }
            ends.windows(2).all(|w| w[0] == w[1])
        },
    )
    .await;
    let mut logs: Vec<Vec<MetadataEvent>> = Vec::new();
    for &i in &ids {
        let log = log_of(cluster, i).await;
        logs.push(log);
    }
    // The active controller may have written in between: compare prefixes.
    let shortest = logs.iter().map(Vec::len).min().unwrap_or(0);
    for (k, log) in logs.iter().enumerate().skip(1) {
        assert_eq!(
            &log[..shortest],
            &logs[0][..shortest],
            "controller {} and controller {} disagree on the metadata log",
            ids[0] + 1,
            ids[k] + 1
        );
    }
    let log = &logs[0];
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.offset, i as i64, "metadata offsets are dense");
    }
    let mut created: HashMap<&str, Vec<i64>> = HashMap::new();
    for e in log {
        if let Some(Record::TopicCreated(t)) = e.record.as_ref().and_then(|r| r.record.as_ref()) {
            created.entry(t.name.as_str()).or_default().push(e.offset);
        }
    }
    for a in acked {
        let at = created.get(a.topic.as_str()).map_or(&[][..], Vec::as_slice);
        assert_eq!(
            at.len(),
            1,
            "acknowledged topic {} is in the log {} times",
            a.topic,
            at.len()
        );
    }
    for a in acked {
        for b in acked {
            if a.acked < b.started {
                assert!(
                    created[a.topic.as_str()][0] < created[b.topic.as_str()][0],
                    "{} was acknowledged before {} was asked for, but comes after it in the log",
                    a.topic,
                    b.topic
                );
            }
        }
    }
    let image = cluster
        .controller(ids[0])
        .expect("running")
        .controller
        .image()
        .await;
    for &b in brokers {
        wait_for(
            &format!("broker {} to apply the log", b + 1),
            Duration::from_secs(30),
            || {
                let end = cluster.broker_metadata_offset(b);
                let want = image.next_offset;
                async move { end >= want }
            },
        )
        .await;
        let view = cluster.broker_image(b);
        for (name, t) in &image.topics {
            assert_eq!(
                view.topics.get(name).map(|v| v.id),
                Some(t.id),
                "broker {} does not see topic {name} as the controllers do",
                b + 1
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_controller_loses_no_acknowledged_metadata_change() {
    let mut cluster = TestCluster::builder()
        .controllers(3)
        .brokers(3)
        .start()
        .await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(create_topics(
        cluster.admin(),
        "k".into(),
        60,
        2,
        Arc::clone(&acked),
    ));
    wait_for(
        "some acknowledged creations",
        Duration::from_secs(30),
        || {
            let n = acked.lock().len();
            async move { n >= 15 }
        },
    )
    .await;

    let old = cluster.active_controller().expect("an active controller");
    let killed_at = Instant::now();
    cluster.kill_controller(old).await;
    let new = cluster.wait_active_controller().await;
    assert_ne!(new, old);
    eprintln!("new active controller after {:?}", killed_at.elapsed());
    writer.await.expect("the writer finishes");
    let acked = acked.lock().clone();
    assert!(
        acked.len() >= 50,
        "only {} of 60 creations were acknowledged",
        acked.len()
    );

    // The new active controller tracks brokers: one killed now is fenced
    // and its partitions get new leaders.
    cluster.kill_broker(0).await;
    let active = cluster.active_controller().expect("an active controller");
    let handle = cluster.controller(active).expect("running");
    wait_for(
        "broker 1 fenced, its leaderships moved",
        Duration::from_secs(20),
        || async {
            let image = handle.controller.image().await;
            image.brokers.get(&1).is_some_and(|b| b.fenced)
                && image
                    .topics
                    .values()
                    .flat_map(|t| t.partitions.values())
                    .all(|p| p.leader != 1 && p.leader >= 0)
        },
    )
    .await;

    check(&cluster, 3, &[1, 2], &acked).await;
    cluster.start_controller_again(old).await;
    check(&cluster, 3, &[1, 2], &acked).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_hear_of_a_new_active_controller_without_waiting_for_a_heartbeat() {
    // Heartbeats 30 s apart: a broker that learned of the election only
    // from its next heartbeat would go on naming the dead controller.
    let mut cluster = TestCluster::builder()
        .controllers(3)
        .broker_heartbeats(30_000, 120_000)
        .start()
        .await;
    let old = cluster.active_controller().expect("an active controller");
    let names = |cluster: &TestCluster, i: usize| {
        cluster.broker_named_controller_port(0) == Some(cluster.controller_addr(i).port())
    };
    wait_for(
        "the broker names the active controller",
        Duration::from_secs(10),
        || async { names(&cluster, old) },
    )
    .await;

    cluster.kill_controller(old).await;
    let new = cluster.wait_active_controller().await;
    assert_ne!(new, old);
    wait_for(
        "the broker names the new active controller",
        Duration::from_secs(10),
        || async { names(&cluster, new) },
    )
    .await;
    // Clients follow it through the broker.
    cluster
        .admin()
        .create_topic(NewTopic {
            name: "after-election".into(),
            partitions: Some(1),
            replication_factor: Some(1),
            configs: Default::default(),
            assignments: Default::default(),
        })
        .await
        .expect("a topic is created through the new active controller");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_cut_off_from_the_quorum_stops_deciding_and_rejoins_as_follower() {
    let cluster = TestCluster::builder()
        .controllers(3)
        .brokers(1)
        .start()
        .await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    create_topics(cluster.admin(), "before".into(), 5, 1, Arc::clone(&acked)).await;

    let old = cluster.active_controller().expect("an active controller");
    let old_handle = cluster.controller(old).expect("running");
    let end_at_cut = old_handle.controller.image().await.next_offset;
    cluster.isolate_controller(old);
    // The other two elect one of them.
    wait_for("a new active controller", Duration::from_secs(20), || {
        let other = (0..3).filter(|&i| i != old).any(|i| {
            cluster
                .controller(i)
                .is_some_and(|c| c.controller.is_active())
        });
        async move { other }
    })
    .await;
    // A client that still reaches the cut-off controller is refused: it
    // can no longer get a majority for anything. It refuses at once when it
    // no longer leads, or when no majority has answered it for longer than
    // an election timeout; until then it would hold the write.
    let max_silence = old_handle.controller.raft().config().election_timeout_max;
    wait_for(
        "the cut-off controller to see it lost its majority",
        Duration::from_secs(20),
        || {
            let silence = old_handle
                .controller
                .raft()
                .metrics()
                .borrow()
                .millis_since_quorum_ack;
            let knows =
                !old_handle.controller.is_active() || silence.is_none_or(|ms| ms > max_silence);
            async move { knows }
        },
    )
    .await;
    let mut direct = pb::controller_client::ControllerClient::connect(format!(
        "http://{}",
        cluster.controller_addr(old)
    ))
    .await
    .expect("the cut-off controller still answers clients");
    let refused = direct
        .create_topics(pb::CreateTopicsRequest {
            topics: vec![pb::CreatableTopic {
                name: "split-brain".into(),
                partitions: 1,
                replication_factor: 1,
                configs: Default::default(),
                assignments: Default::default(),
            }],
            validate_only: false,
        })
        .await
        .expect_err("a cut-off controller takes no writes");
    assert_eq!(
        runnel_common::errors::code_of(&refused),
        ErrorCode::NotController,
        "{refused:?}"
    );

    create_topics(cluster.admin(), "during".into(), 10, 1, Arc::clone(&acked)).await;
    assert_eq!(
        old_handle.controller.image().await.next_offset,
        end_at_cut,
        "the cut-off controller applied records without a majority"
    );

    cluster.heal_controllers();
    wait_for(
        "the old controller to follow",
        Duration::from_secs(20),
        || {
            let follows = !old_handle.controller.is_active()
                && old_handle
                    .controller
                    .active()
                    .is_some_and(|(id, _)| id != old as i32 + 1);
            async move { follows }
        },
    )
    .await;
    let acked = acked.lock().clone();
    assert_eq!(acked.len(), 15);
    check(&cluster, 3, &[0], &acked).await;
    let image = old_handle.controller.image().await;
    assert!(!image.topics.contains_key("split-brain"));
    cluster.shutdown().await;
}

/// How far controller `i` has applied the metadata log.
async fn applied(cluster: &TestCluster, i: usize) -> i64 {
    let controller = &cluster.controller(i).expect("running").controller;
    controller.image().await.next_offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_from_the_active_controller_alone_falls_behind_while_the_quorum_commits() {
    let cluster = TestCluster::builder()
        .controllers(3)
        .brokers(1)
        .start()
        .await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    create_topics(cluster.admin(), "before".into(), 5, 1, Arc::clone(&acked)).await;
    let active = cluster.active_controller().expect("an active controller");
    let (cut, third) = ((active + 1) % 3, (active + 2) % 3);
    wait_for(
        "the follower to apply everything so far",
        Duration::from_secs(20),
        || async { applied(&cluster, cut).await == applied(&cluster, active).await },
    )
    .await;

    // The active controller and one follower lose each other; both still
    // reach the third, so the active one keeps a majority.
    cluster.cut(Node::Controller(active), Node::Controller(cut));
    let at_cut = applied(&cluster, cut).await;
    create_topics(cluster.admin(), "during".into(), 10, 1, Arc::clone(&acked)).await;
    assert_eq!(acked.lock().len(), 15, "the quorum stopped committing");
    let end = applied(&cluster, active).await;
    assert!(end > at_cut, "nothing was committed during the cut");
    wait_for(
        "the third controller to apply what was committed",
        Duration::from_secs(20),
        || async { applied(&cluster, third).await >= end },
    )
    .await;
    assert_eq!(
        applied(&cluster, cut).await,
        at_cut,
        "the cut-off follower heard from the active controller"
    );
    assert_eq!(
        cluster.active_controller(),
        Some(active),
        "a cut between two controllers cost the quorum its leader"
    );

    // Healed: it catches up, and every controller holds the same log.
    cluster.heal_cut(Node::Controller(active), Node::Controller(cut));
    cluster.wait_active_controller().await;
    let acked = acked.lock().clone();
    check(&cluster, 3, &[0], &acked).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_controller_keeps_the_state() {
    let mut cluster = TestCluster::builder()
        .controllers(3)
        .brokers(2)
        .start()
        .await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    create_topics(cluster.admin(), "r".into(), 10, 2, Arc::clone(&acked)).await;
    let active = cluster.active_controller().expect("active");
    let before = cluster
        .controller(active)
        .expect("running")
        .controller
        .image()
        .await;
    let log_before = log_of(&cluster, active).await;

    cluster.restart_controller().await;
    let active = cluster.active_controller().expect("active");
    let log_after = log_of(&cluster, active).await;
    assert_eq!(
        &log_after[..log_before.len()],
        &log_before[..],
        "the log changed across the restart"
    );
    let after = cluster
        .controller(active)
        .expect("running")
        .controller
        .image()
        .await;
    assert_eq!(after.topics, before.topics);
    let acked = acked.lock().clone();
    check(&cluster, 3, &[0, 1], &acked).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_was_down_catches_up_from_a_snapshot() {
    let mut cluster = TestCluster::builder()
        .controllers(3)
        .brokers(1)
        .quorum_snapshot_entries(10)
        .start()
        .await;
    let active = cluster.active_controller().expect("active");
    let down = (active + 1) % 3;
    cluster.kill_controller(down).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    create_topics(cluster.admin(), "s".into(), 40, 1, Arc::clone(&acked)).await;
    let leader = cluster.controller(active).expect("running");
    wait_for(
        "the active controller to drop old log entries",
        Duration::from_secs(20),
        || {
            let purged = leader.controller.raft().metrics().borrow().purged.is_some();
            async move { purged }
        },
    )
    .await;

    cluster.start_controller_again(down).await;
    let acked = acked.lock().clone();
    check(&cluster, 3, &[0], &acked).await;
    let m = cluster
        .controller(down)
        .expect("running")
        .controller
        .raft()
        .metrics()
        .borrow()
        .clone();
    assert!(
        m.snapshot.is_some(),
        "the returning controller holds no snapshot"
    );
    cluster.shutdown().await;
}

/// A small deterministic generator (xorshift), so a failing schedule can be
/// replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Kills, restarts and cuts off controllers at random (never more than
/// one away at a time, so a majority stays) under a stream of topic
/// creations, then checks every acknowledged creation. Steps and seed come
/// from `RUNNEL_QUORUM_STEPS` (default 6) and `RUNNEL_QUORUM_SEED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_controller_failures_under_metadata_load() {
    let steps: usize = std::env::var("RUNNEL_QUORUM_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("RUNNEL_QUORUM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::random::<u64>() | 1);
    eprintln!("RUNNEL_QUORUM_SEED={seed} RUNNEL_QUORUM_STEPS={steps}");
    let mut rng = Rng(seed);
    let mut cluster = TestCluster::builder()
        .controllers(3)
        .brokers(1)
        .start()
        .await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(create_topics(
        cluster.admin(),
        "x".into(),
        usize::MAX,
        1,
        Arc::clone(&acked),
    ));
    let mut away: Option<(usize, bool)> = None; // (controller, killed rather than cut off)
    for step in 0..steps {
        match away.take() {
            Some((i, true)) => {
                eprintln!("step {step}: controller {} starts again", i + 1);
                cluster.start_controller_again(i).await;
            }
            Some((i, false)) => {
                eprintln!("step {step}: controller {} reconnected", i + 1);
                cluster.heal_controllers();
            }
            None => {
                // Usually the active controller: that is where it hurts.
                let victim = if rng.below(3) > 0 {
                    cluster.active_controller().unwrap_or(0)
                } else {
                    rng.below(3)
                };
                if rng.below(2) == 0 {
                    eprintln!("step {step}: controller {} killed", victim + 1);
                    cluster.kill_controller(victim).await;
                    away = Some((victim, true));
                } else {
                    eprintln!("step {step}: controller {} cut off", victim + 1);
                    cluster.isolate_controller(victim);
                    away = Some((victim, false));
                }
            }
        }
        // The schedule itself: how long each fault lasts is what is drawn.
        tokio::time::sleep(Duration::from_millis(300 + 200 * rng.below(5) as u64)).await;
    }
    match away {
        Some((i, true)) => cluster.start_controller_again(i).await,
        Some((_, false)) => cluster.heal_controllers(),
        None => {}
    }
    writer.abort();
    let _ = writer.await;
    cluster.wait_active_controller().await;
    let acked = acked.lock().clone();
    assert!(!acked.is_empty(), "no creation was acknowledged at all");
    eprintln!("{} creations acknowledged", acked.len());
    check(&cluster, 3, &[0], &acked).await;
    cluster.shutdown().await;
}
