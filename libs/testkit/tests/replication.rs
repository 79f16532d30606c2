//! Replication across three brokers: followers copy the leader, acks=all
//! waits for the ISR, a follower cut from the leader alone leaves the ISR
//! and rejoins, and a new leader has every acknowledged record.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use runnel_client::{Acks, NewTopic, Producer, ProducerConfig, ProducerRecord};
use runnel_testkit::{Node, TestCluster, wait_for};

async fn produce(cluster: &TestCluster, topic: &str, range: std::ops::Range<u32>) -> Vec<i64> {
    let producer = Producer::with_cluster(
        cluster.client(),
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in range {
        deliveries.push(
            producer
                .send(ProducerRecord::new(topic, format!("record-{i}")).partition(0))
                .await
                .unwrap(),
        );
    }
    let mut offsets = Vec::new();
    for d in deliveries {
        offsets.push(d.await.unwrap().offset);
    }
    producer.close().await.unwrap();
    offsets
}

async fn read_all(cluster: &TestCluster, topic: &str, expected: usize) -> Vec<String> {
    let mut consumer = cluster.earliest_consumer();
    consumer
        .assign(consumer.partitions_of(topic).await.unwrap())
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.len() < expected && tokio::time::Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            out.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

async fn leader(cluster: &TestCluster, topic: &str) -> i32 {
    cluster
        .admin()
        .describe_topic(topic)
        .await
        .unwrap()
        .partitions[0]
        .leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_the_leaders_death() {
    let mut cluster = TestCluster::builder().brokers(3).start().await;
    cluster
        .create_topic(
            NewTopic::new("replicated")
                .partitions(1)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await;
    let offsets = produce(&cluster, "replicated", 0..2000).await;
    assert_eq!(offsets, (0..2000).collect::<Vec<i64>>());

    let old = leader(&cluster, "replicated").await;
    cluster.kill_broker((old - 1) as usize).await;
    let admin = cluster.admin();
    wait_for("a new leader", Duration::from_secs(30), || {
        let admin = admin.clone();
        async move {
            admin
                .describe_topic("replicated")
                .await
                .is_ok_and(|t| t.partitions[0].leader >= 0 && t.partitions[0].leader != old)
        }
    })
    .await;
    // Everything acknowledged is on the new leader, and writing goes on after it.
    let more = produce(&cluster, "replicated", 2000..2500).await;
    assert_eq!(more, (2000..2500).collect::<Vec<i64>>());
    let read = read_all(&cluster, "replicated", 2500).await;
    let expected: Vec<String> = (0..2500).map(|i| format!("record-{i}")).collect();
    assert_eq!(read, expected);
    cluster.shutdown().await;
}

async fn isr(cluster: &TestCluster, topic: &str) -> Vec<i32> {
    let mut isr = cluster
        .admin()
        .describe_topic(topic)
        .await
        .unwrap()
        .partitions[0]
        .isr
        .clone();
    isr.sort_unstable();
    isr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_leaves_the_isr_when_down_and_rejoins_once_caught_up() {
    let mut cluster = TestCluster::builder().brokers(3).start().await;
    cluster
        .create_topic(
            NewTopic::new("isr")
                .partitions(1)
                .replication_factor(3)
                .config("min.insync.replicas", "3"),
        )
        .await;
    produce(&cluster, "isr", 0..100).await;
    let leader = leader(&cluster, "isr").await;
    let follower = (1..=3).find(|&b| b != leader).unwrap();
    cluster.kill_broker((follower - 1) as usize).await;
    let admin = cluster.admin();
    wait_for("the ISR to shrink", Duration::from_secs(30), || {
        let admin = admin.clone();
        async move {
            admin
                .describe_topic("isr")
                .await
                .is_ok_and(|t| t.partitions[0].isr.len() == 2)
        }
    })
    .await;
    // With two in sync and min.insync.replicas=3, acks=all is refused, not accepted.
    let strict = Producer::with_cluster(
        cluster.client(),
        ProducerConfig {
            acks: Acks::All,
            delivery_timeout: Duration::from_secs(2),
            ..ProducerConfig::default()
        },
    );
    let refused = strict
        .send(ProducerRecord::new("isr", "refused").partition(0))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("min.insync.replicas")
            || refused.code() == Some(runnel_client::ErrorCode::NotEnoughReplicas),
        "{refused}"
    );
    strict.close().await.ok();

    // Back: it catches up and the leader adds it to the ISR again.
    cluster.start_broker_again((follower - 1) as usize).await;
    wait_for(
        "the follower to rejoin the ISR",
        Duration::from_secs(30),
        || {
            let admin = admin.clone();
            async move {
                admin
                    .describe_topic("isr")
                    .await
                    .is_ok_and(|t| t.partitions[0].isr.len() == 3)
            }
        },
    )
    .await;
    assert_eq!(isr(&cluster, "isr").await, vec![1, 2, 3]);
    let more = produce(&cluster, "isr", 100..200).await;
    assert!(more.windows(2).all(|w| w[1] == w[0] + 1), "{more:?}");
    // Every acknowledged record, in order. The refused write may be there too:
    // an attempt that reached the leader before it saw the ISR shrink was
    // appended and then timed out waiting for replication. It was never
    // acknowledged; as in Kafka, such a write may still become committed.
    let end = cluster
        .admin()
        .describe_topic("isr")
        .await
        .unwrap()
        .partitions[0]
        .log_end_offset;
    let read: Vec<String> = read_all(&cluster, "isr", end as usize)
        .await
        .into_iter()
        .filter(|v| v != "refused")
        .collect();
    let expected: Vec<String> = (0..200).map(|i| format!("record-{i}")).collect();
    assert_eq!(read, expected);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_broker_loses_nothing_acknowledged() {
    let mut cluster = TestCluster::builder().brokers(3).start().await;
    cluster
        .create_topic(
            NewTopic::new("all-down")
                .partitions(1)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await;
    let offsets = produce(&cluster, "all-down", 0..1000).await;
    assert_eq!(offsets.len(), 1000);
    for i in 0..3 {
        cluster.kill_broker(i).await;
    }
    for i in 0..3 {
        cluster.start_broker_again(i).await;
    }
    let admin = cluster.admin();
    wait_for(
        "a leader after the restart",
        Duration::from_secs(30),
        || {
            let admin = admin.clone();
            async move {
                admin
                    .describe_topic("all-down")
                    .await
                    .is_ok_and(|t| t.partitions[0].leader >= 0)
            }
        },
    )
    .await;
    let more = produce(&cluster, "all-down", 1000..1100).await;
    assert_eq!(more, (1000..1100).collect::<Vec<i64>>());
    let read = read_all(&cluster, "all-down", 1100).await;
    let expected: Vec<String> = (0..1100).map(|i| format!("record-{i}")).collect();
    assert_eq!(read, expected);
    cluster.shutdown().await;
}

/// The record values in broker `i`'s replica of `topic`-0, read from its log.
fn replica_values(cluster: &TestCluster, i: usize, topic: &str) -> Vec<String> {
    let p = cluster.broker_logs(i).get(topic, 0).unwrap();
    let bytes = p.read_for_follower(0, usize::MAX / 2).unwrap();
    let mut out = Vec::new();
    for batch in runnel_records::batch::Batches::new(&bytes) {
        for r in batch.unwrap().records().unwrap() {
            out.push(String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_cannot_acknowledge_and_drops_its_tail_after_healing() {
    use runnel_proto::broker::v1 as pb;
    use runnel_records::batch::{BatchBuilder, Compression};

    let cluster = TestCluster::builder().brokers(3).start().await;
    cluster
        .create_topic(
            NewTopic::new("cut")
                .partitions(1)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await;
    produce(&cluster, "cut", 0..100).await;
    let old = cluster.controller_leader("cut", 0).await;
    let oi = (old - 1) as usize;
    cluster.isolate(oi);

    // Straight to the cut-off leader: acks=1 is taken (it cannot know better),
    // acks=all is never acknowledged.
    let mut direct =
        pb::broker_client::BrokerClient::connect(format!("http://{}", cluster.broker_addr(oi)))
            .await
            .unwrap();
    let batch = |value: &str| {
        let mut b = BatchBuilder::new(Compression::None);
        b.append(1, None, Some(value.as_bytes()), &[]);
        b.build().unwrap()
    };
    let send = |acks: pb::Acks, value: &str| pb::ProduceRequest {
        acks: acks as i32,
        timeout_ms: 1500,
        partitions: vec![pb::ProducePartition {
            topic: "cut".into(),
            partition: 0,
            records: batch(value).into(),
        }],
        transactional_id: String::new(),
    };
    let r = direct
        .produce(send(pb::Acks::Leader, "lost-acks-1"))
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_eq!(r.error_code(), runnel_client::ErrorCode::None);
    let r = direct
        .produce(send(pb::Acks::All, "never-acknowledged"))
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_ne!(
        r.error_code(),
        runnel_client::ErrorCode::None,
        "an isolated leader acknowledged an acks=all write"
    );

    // The controller moves leadership to an in-sync replica.
    wait_for("a new leader", Duration::from_secs(30), || async {
        let l = cluster.controller_leader("cut", 0).await;
        l >= 0 && l != old
    })
    .await;
    let healthy = (0..3).find(|&i| i != oi).unwrap();
    let producer = Producer::new(
        runnel_client::ClientConfig::new(cluster.broker_addr(healthy).to_string()),
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 100..200 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("cut", format!("record-{i}")).partition(0))
                .await
                .unwrap(),
        );
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await.unwrap();

    // Healed: the old leader follows, cutting the tail only it had.
    cluster.heal();
    let expected: Vec<String> = (0..200).map(|i| format!("record-{i}")).collect();
    wait_for(
        "the old leader to match the new one",
        Duration::from_secs(30),
        || {
            let same = replica_values(&cluster, oi, "cut") == expected;
            async move { same }
        },
    )
    .await;
    let new = (cluster.controller_leader("cut", 0).await - 1) as usize;
    assert_eq!(replica_values(&cluster, new, "cut"), expected);
    assert_eq!(read_all(&cluster, "cut", 200).await, expected);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_from_the_leader_alone_leaves_the_isr_and_rejoins_after_healing() {
    let cluster = TestCluster::builder().brokers(3).start().await;
    cluster
        .create_topic(
            NewTopic::new("split")
                .partitions(1)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await;
    produce(&cluster, "split", 0..100).await;
    let leader = cluster.controller_leader("split", 0).await;
    let (li, fi) = ((leader - 1) as usize, leader as usize % 3);
    let follower = fi as i32 + 1;
    let in_sync = (1..=3).find(|&b| b != leader && b != follower).unwrap();
    let mut without_follower = vec![leader, in_sync];
    without_follower.sort_unstable();
    // Acknowledged with all three in sync: the follower holds the first 100.
    let first: Vec<String> = (0..100).map(|i| format!("record-{i}")).collect();
    assert_eq!(replica_values(&cluster, fi, "split"), first);

    let admin = cluster.admin();
    let isr_is = |want: Vec<i32>| {
        let admin = admin.clone();
        async move {
            admin.describe_topic("split").await.is_ok_and(|t| {
                let mut isr = t.partitions[0].isr.clone();
                isr.sort_unstable();
                isr == want
            })
        }
    };

    cluster.cut(Node::Broker(li), Node::Broker(fi));
    wait_for(
        "the cut-off follower to leave the ISR",
        Duration::from_secs(30),
        || isr_is(without_follower.clone()),
    )
    .await;
    // A cut, not an isolation: both ends still reach the controller, so the
    // follower stays unfenced and the leader keeps its partition.
    let brokers = admin.describe_cluster().await.unwrap().brokers;
    assert!(
        brokers.iter().all(|b| !b.fenced),
        "a broker was fenced by a cut between two brokers: {brokers:?}"
    );
    assert_eq!(cluster.controller_leader("split", 0).await, leader);

    // acks=all goes on with the two in sync.
    let offsets = produce(&cluster, "split", 100..300).await;
    assert_eq!(offsets, (100..300).collect::<Vec<i64>>());
    let written: Vec<String> = (0..300).map(|i| format!("record-{i}")).collect();
    assert_eq!(
        replica_values(&cluster, (in_sync - 1) as usize, "split"),
        written
    );
    assert_eq!(
        replica_values(&cluster, fi, "split"),
        first,
        "the cut-off follower fetched from its leader"
    );

    // Healed: it catches up and the leader adds it back.
    cluster.heal_cut(Node::Broker(li), Node::Broker(fi));
    wait_for(
        "the follower to rejoin the ISR",
        Duration::from_secs(30),
        || isr_is(vec![1, 2, 3]),
    )
    .await;
    assert_eq!(replica_values(&cluster, fi, "split"), written);
    let more = produce(&cluster, "split", 300..400).await;
    assert_eq!(more, (300..400).collect::<Vec<i64>>());
    let expected: Vec<String> = (0..400).map(|i| format!("record-{i}")).collect();
    assert_eq!(read_all(&cluster, "split", 400).await, expected);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_starts_from_its_checkpointed_high_watermark() {
    let mut cluster = TestCluster::builder().brokers(3).start().await;
    cluster
        .create_topic(
            NewTopic::new("hw")
                .partitions(1)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await;
    produce(&cluster, "hw", 0..500).await;
    let old = leader(&cluster, "hw").await as usize - 1;
    let followers: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for &f in &followers {
        let logs = cluster.broker_logs(f);
        wait_for(
            "the follower learns the high watermark",
            Duration::from_secs(30),
            || {
                let logs = std::sync::Arc::clone(&logs);
                async move { logs.get("hw", 0).is_some_and(|p| p.high_watermark() == 500) }
            },
        )
        .await;
    }
    // Followers first, the leader last: nobody is left to lead when one
    // follower comes back, so its high watermark can only come from its
    // checkpoint (without it, the log start: 0).
    for &i in followers.iter().chain(std::iter::once(&old)) {
        cluster.stop_broker(i).await;
    }
    cluster.start_broker_again(followers[0]).await;
    let logs = cluster.broker_logs(followers[0]);
    wait_for("the partition reopened", Duration::from_secs(30), || {
        let logs = std::sync::Arc::clone(&logs);
        async move { logs.get("hw", 0).is_some() }
    })
    .await;
    let p = logs.get("hw", 0).unwrap();
    assert_eq!((p.high_watermark(), p.log_end_offset()), (500, 500));
    cluster.shutdown().await;
}
