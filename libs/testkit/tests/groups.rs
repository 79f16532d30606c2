//! Consumer groups end to end: group consumers against a coordinator and
//! brokers, checked over their whole history.
//!
//! - Members join, leave and crash; after each rebalance every partition
//!   has exactly one owner (a checker over every generation), and the
//!   group reads every record exactly once (members commit after each
//!   poll, so nothing read goes uncommitted when they go).
//! - Committed offsets survive consumer restarts; another group reads the
//!   same data on its own; a fifth member on four partitions idles.
//! - The coordinator owning a group is killed under load: the group goes
//!   on with another coordinator and no committed offset goes back.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use runnel_client::{
    ClientConfig, ConsumerConfig, GroupConfig, GroupConsumer, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use runnel_common::shutdown::CancellationToken;
use runnel_testkit::{TestCluster, wait_for};

const TOPIC: &str = "orders";

fn group_config(group: &str) -> GroupConfig {
    GroupConfig {
        session_timeout: Duration::from_millis(2_000),
        heartbeat_interval: Duration::from_millis(200),
        max_poll_interval: Duration::from_secs(30),
        enable_auto_commit: false,
        consumer: ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
        ..GroupConfig::new(group)
    }
}

/// What every member saw.
#[derive(Debug, Default)]
struct History {
    /// (member, generation) → the partitions it was given.
    assignments: BTreeMap<(String, i32), Vec<TopicPartition>>,
    /// Every record read: (partition, offset) → how many times.
    reads: BTreeMap<(i32, i64), usize>,
    /// Members running now → what they own.
    current: BTreeMap<String, Vec<TopicPartition>>,
}

impl History {
    /// No partition has two owners in one generation.
    fn check_generations(&self) {
        let mut by_generation: BTreeMap<i32, Vec<(&str, &TopicPartition)>> = BTreeMap::new();
        for ((member, generation), partitions) in &self.assignments {
            for tp in partitions {
                by_generation
                    .entry(*generation)
                    .or_default()
                    .push((member, tp));
            }
        }
        for (generation, owned) in by_generation {
            let mut seen = BTreeMap::new();
            for (member, tp) in owned {
                if let Some(other) = seen.insert(tp.clone(), member) {
                    panic!("generation {generation}: {tp:?} owned by {other} and {member}");
                }
            }
        }
    }

    /// The running members own every partition between them, once each.
    fn settled(&self, members: usize, partitions: i32) -> bool {
        if self.current.len() != members {
            return false;
        }
        let owned: Vec<&TopicPartition> = self.current.values().flatten().collect();
        let distinct: BTreeSet<&TopicPartition> = owned.iter().copied().collect();
        owned.len() == partitions as usize && distinct.len() == owned.len()
    }
}

/// A member polling in its own task until stopped (it leaves) or crashed
/// (it just stops, as a killed process would).
struct Member {
    stop: CancellationToken,
    crash: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Member {
    fn start(
        client: ClientConfig,
        config: GroupConfig,
        name: &str,
        history: Arc<Mutex<History>>,
    ) -> Member {
        let (stop, crash) = (CancellationToken::new(), CancellationToken::new());
        let (s, c, name) = (stop.clone(), crash.clone(), name.to_owned());
        let task = tokio::spawn(async move {
            let mut consumer = GroupConsumer::new(client, config);
            consumer.subscribe(vec![TOPIC.into()]);
            loop {
                if c.is_cancelled() {
                    history.lock().current.remove(&name);
                    return;
                }
                if s.is_cancelled() {
                    history.lock().current.remove(&name);
                    consumer.close().await.unwrap();
                    return;
                }
                let records = consumer.poll(Duration::from_millis(100)).await.unwrap();
                {
                    let (_, generation) = consumer.member();
                    let mut h = history.lock();
                    let owned = consumer.assignment().to_vec();
                    h.assignments
                        .insert((name.clone(), generation), owned.clone());
                    h.current.insert(name.clone(), owned);
                    for r in &records {
                        *h.reads.entry((r.partition, r.offset)).or_default() += 1;
                    }
                }
                if !records.is_empty() {
                    // A commit refused by a rebalance is retried after it.
                    let _ = consumer.commit_sync().await;
                }
            }
        });
        Member { stop, crash, task }
    }

    async fn leave(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }

    async fn crash(self) {
        self.crash.cancel();
        self.task.await.unwrap();
    }
}

async fn produce(cluster: &TestCluster, from: usize, n: usize) {
    let producer = Producer::new(cluster.client_config(), ProducerConfig::default());
    let mut deliveries = Vec::new();
    for i in from..from + n {
        let record = ProducerRecord {
            topic: TOPIC.into(),
            partition: Some((i % 4) as i32),
            value: Some(format!("r{i}").into_bytes().into()),
            ..ProducerRecord::default()
        };
        deliveries.push(producer.send(record).await.unwrap());
    }
    for d in deliveries {
        d.await.unwrap();
    }
}

/// One broker and one coordinator, with the four-partition topic.
async fn one_node_with_topic() -> TestCluster {
    let cluster = TestCluster::builder()
        .brokers(1)
        .coordinators(1)
        .start()
        .await;
    cluster
        .create_topic(NewTopic::new(TOPIC).partitions(4).replication_factor(1))
        .await;
    cluster
}

async fn wait_settled(history: &Arc<Mutex<History>>, members: usize, what: &str) {
    wait_for(what, Duration::from_secs(60), || {
        let h = Arc::clone(history);
        async move { h.lock().settled(members, 4) }
    })
    .await;
}

async fn wait_read(history: &Arc<Mutex<History>>, n: usize) {
    wait_for(
        &format!("{n} records read"),
        Duration::from_secs(60),
        || {
            let h = Arc::clone(history);
            async move { h.lock().reads.len() >= n }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_leave_and_crash_and_every_partition_has_one_owner() {
    let cluster = one_node_with_topic().await;
    produce(&cluster, 0, 400).await;
    let history = Arc::new(Mutex::new(History::default()));
    let client = cluster.client_config();
    let a = Member::start(
        client.clone(),
        group_config("app"),
        "a",
        Arc::clone(&history),
    );
    let b = Member::start(
        client.clone(),
        group_config("app"),
        "b",
        Arc::clone(&history),
    );
    wait_settled(&history, 2, "two members to share four partitions").await;
    wait_read(&history, 400).await;
    {
        let h = history.lock();
        assert!(
            h.current.values().all(|owned| owned.len() == 2),
            "two partitions each: {:?}",
            h.current
        );
    }

    produce(&cluster, 400, 400).await;
    let c = Member::start(
        client.clone(),
        group_config("app"),
        "c",
        Arc::clone(&history),
    );
    wait_settled(&history, 3, "a third member to take its share").await;
    wait_read(&history, 800).await;

    b.leave().await;
    wait_settled(&history, 2, "the rest to take over from a member that left").await;
    produce(&cluster, 800, 400).await;
    wait_read(&history, 1200).await;

    c.crash().await;
    // The coordinator notices only when the session times out.
    wait_settled(
        &history,
        1,
        "the last member to take over from a crashed one",
    )
    .await;
    produce(&cluster, 1200, 400).await;
    wait_read(&history, 1600).await;
    a.leave().await;

    {
        let h = history.lock();
        h.check_generations();
        let twice: Vec<_> = h.reads.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "records read twice: {twice:?}");
        assert_eq!(h.reads.len(), 1600, "every record read");
        let generations: BTreeSet<i32> = h.assignments.keys().map(|(_, g)| *g).collect();
        assert!(
            generations.len() >= 4,
            "one generation per change: {generations:?}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_survive_restarts_groups_are_independent_and_extra_members_idle() {
    let cluster = one_node_with_topic().await;
    produce(&cluster, 0, 200).await;

    // Read half, commit, go away.
    let mut first = GroupConsumer::new(cluster.client_config(), group_config("billing"));
    first.subscribe(vec![TOPIC.into()]);
    let mut read = BTreeSet::new();
    while read.len() < 100 {
        for r in first.poll(Duration::from_millis(200)).await.unwrap() {
            read.insert((r.partition, r.offset));
        }
    }
    first.commit_sync().await.unwrap();
    let positions: BTreeMap<TopicPartition, i64> = first
        .assignment()
        .iter()
        .map(|tp| (tp.clone(), first.position(tp).unwrap()))
        .collect();
    first.close().await.unwrap();

    // A new member starts at the committed offsets, not at the beginning.
    let mut second = GroupConsumer::new(cluster.client_config(), group_config("billing"));
    second.subscribe(vec![TOPIC.into()]);
    let mut again = BTreeSet::new();
    while read.len() + again.len() < 200 {
        for r in second.poll(Duration::from_millis(200)).await.unwrap() {
            assert!(
                !read.contains(&(r.partition, r.offset)),
                "{}-{} was committed before the restart",
                r.partition,
                r.offset
            );
            again.insert((r.partition, r.offset));
        }
    }
    let committed = second
        .committed(&positions.keys().cloned().collect::<Vec<_>>())
        .await
        .unwrap();
    for (tp, position) in &positions {
        assert_eq!(committed[tp], Some(*position), "{tp:?}");
    }
    second.close().await.unwrap();

    // Another group reads everything on its own.
    let mut other = GroupConsumer::new(cluster.client_config(), group_config("audit"));
    other.subscribe_pattern("ord.*").unwrap();
    let mut all = BTreeSet::new();
    while all.len() < 200 {
        for r in other.poll(Duration::from_millis(200)).await.unwrap() {
            all.insert((r.partition, r.offset));
        }
    }
    other.close().await.unwrap();

    // Five members, four partitions: one waits with nothing.
    let history = Arc::new(Mutex::new(History::default()));
    let members: Vec<Member> = (0..5)
        .map(|i| {
            Member::start(
                cluster.client_config(),
                group_config("five"),
                &format!("m{i}"),
                Arc::clone(&history),
            )
        })
        .collect();
    wait_for("five members to settle", Duration::from_secs(60), || {
        let h = Arc::clone(&history);
        async move {
            let h = h.lock();
            h.current.len() == 5
                && h.current.values().filter(|o| o.len() == 1).count() == 4
                && h.current.values().filter(|o| o.is_empty()).count() == 1
        }
    })
    .await;
    let idle = history
        .lock()
        .current
        .iter()
        .find(|(_, o)| o.is_empty())
        .map(|(m, _)| m.clone())
        .unwrap();
    // A busy member leaves: the idle one takes over.
    let mut members = members;
    let busy = (0..5).find(|i| format!("m{i}") != idle).unwrap();
    members.remove(busy).leave().await;
    wait_for(
        "the idle member to take over",
        Duration::from_secs(60),
        || {
            let (h, idle) = (Arc::clone(&history), idle.clone());
            async move {
                let h = h.lock();
                h.settled(4, 4) && h.current.get(&idle).is_some_and(|o| o.len() == 1)
            }
        },
    )
    .await;
    history.lock().check_generations();
    for m in members {
        m.leave().await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_survives_the_loss_of_its_coordinator() {
    let mut cluster = TestCluster::builder()
        .brokers(3)
        .coordinators(2)
        .start()
        .await;
    cluster
        .create_topic(NewTopic::new(TOPIC).partitions(4).replication_factor(3))
        .await;
    let (owner, _) = cluster.client().find_coordinator("app").await.unwrap();
    let owner = owner as usize - 1;

    // Load: a producer and a member committing after every poll.
    let stop = CancellationToken::new();
    let producing = {
        let (client, stop) = (cluster.client_config(), stop.clone());
        tokio::spawn(async move {
            let producer = Producer::new(client, ProducerConfig::default());
            let mut sent = 0usize;
            while !stop.is_cancelled() {
                let record = ProducerRecord {
                    topic: TOPIC.into(),
                    partition: Some((sent % 4) as i32),
                    value: Some(format!("r{sent}").into_bytes().into()),
                    ..ProducerRecord::default()
                };
                producer.send(record).await.unwrap().await.unwrap();
                sent += 1;
            }
            sent
        })
    };
    let history = Arc::new(Mutex::new(History::default()));
    let member = Member::start(
        cluster.client_config(),
        group_config("app"),
        "a",
        Arc::clone(&history),
    );
    wait_read(&history, 200).await;
    let admin_committed = |cluster: &TestCluster| {
        let cluster = cluster.client();
        async move {
            let probe = GroupConsumer::with_cluster(cluster, group_config("app"));
            let tps: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new(TOPIC, p)).collect();
            probe.committed(&tps).await.unwrap()
        }
    };
    let before = admin_committed(&cluster).await;
    assert!(
        before.values().any(Option::is_some),
        "commits before the kill"
    );

    cluster.kill_coordinator(owner).await;
    // The other coordinator takes the group over once the session expires.
    let read_before = history.lock().reads.len();
    wait_read(&history, read_before + 400).await;
    let (now_owner, _) = cluster.client().find_coordinator("app").await.unwrap();
    assert_ne!(now_owner as usize - 1, owner, "the group moved");

    stop.cancel();
    let sent = producing.await.unwrap();
    wait_read(&history, sent).await;
    // Once the last commit has landed (the member commits what it read,
    // and it read every partition to its end), nothing committed went back.
    let admin = cluster.admin();
    wait_for("the member's last commit", Duration::from_secs(20), || {
        let (admin, client) = (admin.clone(), cluster.client());
        async move {
            let Ok(topic) = admin.describe_topic(TOPIC).await else {
                return false;
            };
            let probe = GroupConsumer::with_cluster(client, group_config("app"));
            let tps: Vec<TopicPartition> = topic
                .partitions
                .iter()
                .map(|p| TopicPartition::new(TOPIC, p.partition))
                .collect();
            let Ok(committed) = probe.committed(&tps).await else {
                return false;
            };
            topic.partitions.iter().all(|p| {
                committed.get(&TopicPartition::new(TOPIC, p.partition))
                    == Some(&Some(p.log_end_offset))
            })
        }
    })
    .await;
    let after = admin_committed(&cluster).await;
    for (tp, offset) in &before {
        assert!(
            after[tp] >= *offset,
            "{tp:?}: {:?} then {:?}",
            offset,
            after[tp]
        );
    }
    member.leave().await;
    {
        let h = history.lock();
        assert_eq!(h.reads.len(), sent, "every record read at least once");
        h.check_generations();
    }
    cluster.shutdown().await;
}

/// Records what a member's rebalance listener was told.
#[derive(Default)]
struct Told {
    assigned: Vec<Vec<TopicPartition>>,
    revoked: Vec<Vec<TopicPartition>>,
    lost: Vec<Vec<TopicPartition>>,
}

struct Listener(Arc<Mutex<Told>>);

impl runnel_client::RebalanceListener for Listener {
    fn on_partitions_assigned(&mut self, p: &[TopicPartition]) {
        self.0.lock().assigned.push(p.to_vec());
    }
    fn on_partitions_revoked(&mut self, p: &[TopicPartition]) {
        self.0.lock().revoked.push(p.to_vec());
    }
    fn on_partitions_lost(&mut self, p: &[TopicPartition]) {
        self.0.lock().lost.push(p.to_vec());
    }
}

/// A consumer polling in its own task (a member that is not polled falls
/// out of the group); `stop` hands it back.
struct Running {
    view: Arc<Mutex<(i32, Vec<TopicPartition>)>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<GroupConsumer>,
}

impl Running {
    fn start(mut consumer: GroupConsumer) -> Running {
        let view = Arc::new(Mutex::new((-1, Vec::new())));
        let stop = CancellationToken::new();
        let (v, s) = (Arc::clone(&view), stop.clone());
        let task = tokio::spawn(async move {
            while !s.is_cancelled() {
                consumer.poll(Duration::from_millis(50)).await.unwrap();
                *v.lock() = (consumer.member().1, consumer.assignment().to_vec());
            }
            consumer
        });
        Running { view, stop, task }
    }

    fn owned(&self) -> Vec<TopicPartition> {
        self.view.lock().1.clone()
    }

    fn generation(&self) -> i32 {
        self.view.lock().0
    }

    async fn stop(self) -> GroupConsumer {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

async fn until(what: &str, done: impl Fn() -> bool) {
    wait_for(what, Duration::from_secs(60), || {
        let ok = done();
        async move { ok }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_members_keep_what_does_not_move_and_static_members_come_back_without_a_rebalance()
 {
    let cluster = one_node_with_topic().await;
    let cooperative = |instance: Option<&str>| GroupConfig {
        assignment_strategy: vec!["cooperative-sticky".into()],
        group_instance_id: instance.map(str::to_owned),
        ..group_config("coop")
    };
    let told_a = Arc::new(Mutex::new(Told::default()));
    let mut a = GroupConsumer::new(cluster.client_config(), cooperative(Some("a")));
    a.set_rebalance_listener(Box::new(Listener(Arc::clone(&told_a))));
    a.subscribe(vec![TOPIC.into()]);
    let a = Running::start(a);
    until("a to own everything", || a.owned().len() == 4).await;
    let before = a.owned();

    // b joins: a gives up two partitions and keeps the other two throughout.
    let mut b = GroupConsumer::new(cluster.client_config(), cooperative(Some("b")));
    b.subscribe(vec![TOPIC.into()]);
    let b = Running::start(b);
    until("two partitions each", || {
        a.owned().len() == 2 && b.owned().len() == 2 && a.generation() == b.generation()
    })
    .await;
    {
        let told = told_a.lock();
        let revoked: Vec<&TopicPartition> = told.revoked.iter().flatten().collect();
        assert_eq!(
            revoked.len(),
            2,
            "only what moved is revoked: {:?}",
            told.revoked
        );
        for tp in a.owned() {
            assert!(
                before.contains(&tp) && !revoked.contains(&&tp),
                "{tp:?} stayed with a"
            );
        }
        assert!(told.lost.is_empty());
        assert_eq!(
            told.assigned.concat().len(),
            4,
            "assigned once, never again"
        );
    }

    // b is static: it restarts within the session timeout, gets its
    // partitions back, and the generation does not move.
    let generation = b.generation();
    let b_owned = b.owned();
    drop(b.stop().await);
    let mut b = GroupConsumer::new(cluster.client_config(), cooperative(Some("b")));
    b.subscribe(vec![TOPIC.into()]);
    let b = Running::start(b);
    until("b back with its partitions", || b.owned().len() == 2).await;
    assert_eq!(b.owned(), b_owned);
    assert_eq!(
        b.generation(),
        generation,
        "no rebalance for a returning static member"
    );
    assert_eq!(a.generation(), generation);
    a.stop().await.close().await.unwrap();
    b.stop().await.close().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_commits_async_commits_and_lag() {
    let cluster = one_node_with_topic().await;
    produce(&cluster, 0, 100).await;
    let tps: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new(TOPIC, p)).collect();

    // enable.auto.commit: positions are committed every interval while polling.
    let mut auto = GroupConsumer::new(
        cluster.client_config(),
        GroupConfig {
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_millis(200),
            ..group_config("auto")
        },
    );
    auto.subscribe(vec![TOPIC.into()]);
    let mut read = 0;
    while read < 100 {
        read += auto.poll(Duration::from_millis(100)).await.unwrap().len();
    }
    let lag = auto.lag().await.unwrap();
    assert_eq!(lag.len(), 4);
    assert!(lag.iter().all(|(_, l)| *l == 0), "everything read: {lag:?}");
    produce(&cluster, 100, 8).await;
    wait_for(
        "the lag to show the new records",
        Duration::from_secs(10),
        || {
            let lag = auto.lag();
            async move { lag.await.unwrap().iter().map(|(_, l)| l).sum::<i64>() == 8 }
        },
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        auto.poll(Duration::from_millis(100)).await.unwrap();
        let committed = auto.committed(&tps).await.unwrap();
        let total: i64 = committed.values().map(|o| o.unwrap_or(0)).sum();
        if total == 108 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "auto commit never caught up: {committed:?}"
        );
    }
    auto.close().await.unwrap();

    // commit_async: the handle says when it is stored.
    let mut manual = GroupConsumer::new(cluster.client_config(), group_config("manual"));
    manual.subscribe(vec![TOPIC.into()]);
    let mut read = 0;
    while read < 108 {
        read += manual.poll(Duration::from_millis(100)).await.unwrap().len();
    }
    assert!(
        manual
            .committed(&tps)
            .await
            .unwrap()
            .values()
            .all(Option::is_none),
        "nothing committed without auto commit"
    );
    manual.commit_async().await.unwrap().unwrap();
    let committed = manual.committed(&tps).await.unwrap();
    assert_eq!(committed.values().map(|o| o.unwrap()).sum::<i64>(), 108);
    manual.close().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_generation_members_join_leave_and_crash_and_read_everything_once() {
    let cluster = one_node_with_topic().await;
    produce(&cluster, 0, 400).await;
    let kip848 = || GroupConfig {
        group_protocol: runnel_client::GroupProtocol::Consumer,
        ..group_config("next")
    };
    let history = Arc::new(Mutex::new(History::default()));
    let client = cluster.client_config();
    let a = Member::start(client.clone(), kip848(), "a", Arc::clone(&history));
    let b = Member::start(client.clone(), kip848(), "b", Arc::clone(&history));
    wait_settled(&history, 2, "two members to share four partitions").await;
    wait_read(&history, 400).await;
    produce(&cluster, 400, 400).await;
    let c = Member::start(client.clone(), kip848(), "c", Arc::clone(&history));
    wait_settled(&history, 3, "a third member to take its share").await;
    wait_read(&history, 800).await;
    b.leave().await;
    wait_settled(&history, 2, "the rest to take over from a member that left").await;
    produce(&cluster, 800, 400).await;
    wait_read(&history, 1200).await;
    c.crash().await;
    wait_settled(
        &history,
        1,
        "the last member to take over from a crashed one",
    )
    .await;
    produce(&cluster, 1200, 400).await;
    wait_read(&history, 1600).await;
    a.leave().await;
    {
        let h = history.lock();
        // Member epochs play the generations' part: no two owners in one.
        h.check_generations();
        let twice: Vec<_> = h.reads.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "records read twice: {twice:?}");
        assert_eq!(h.reads.len(), 1600, "every record read");
    }
    let described = cluster.admin().describe_group("next").await.unwrap();
    assert_eq!(
        (described.state.as_str(), described.members.len()),
        ("Empty", 0)
    );
    cluster.shutdown().await;
}
