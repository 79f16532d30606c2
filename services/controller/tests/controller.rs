//! The controller through its gRPC API: broker lifecycle, topic admin with
//! Kafka's validation, configs, the watch stream, and restarts.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use runnel_common::metadata::MetadataImage;
use runnel_common::shutdown::CancellationToken;
use runnel_controller::{Config, ControllerHandle};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::controller::v1::controller_client::ControllerClient;
use runnel_proto::metadata::v1::{ConfigResource, ConfigResourceType, metadata_record::Record};
use tonic::transport::Channel;

async fn start(dir: &Path, session_timeout_ms: u64) -> ControllerHandle {
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_owned(),
        broker_session_timeout_ms: session_timeout_ms,
        ..Config::default()
    };
    runnel_controller::start(config, CancellationToken::new())
        .await
        .unwrap()
}

async fn client(handle: &ControllerHandle) -> ControllerClient<Channel> {
    ControllerClient::connect(format!("http://{}", handle.grpc_addr))
        .await
        .unwrap()
}

/// Registers brokers 1..=n and heartbeats each once so they are unfenced.
async fn brokers(c: &mut ControllerClient<Channel>, n: i32) -> Vec<i64> {
    let mut epochs = Vec::new();
    for id in 1..=n {
        let epoch = c
            .register_broker(pb::RegisterBrokerRequest {
                broker_id: id,
                endpoints: vec![],
                rack: String::new(),
                incarnation_id: format!("inc-{id}"),
            })
            .await
            .unwrap()
            .into_inner()
            .broker_epoch;
        let end = c
            .describe_cluster(pb::DescribeClusterRequest {})
            .await
            .unwrap()
            .into_inner()
            .metadata_end_offset;
        let hb = c
            .broker_heartbeat(pb::BrokerHeartbeatRequest {
                broker_id: id,
                broker_epoch: epoch,
                metadata_offset: end,
                shutting_down: false,
                offline_replicas: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!hb.fenced, "broker {id} caught up is unfenced");
        epochs.push(epoch);
    }
    epochs
}

fn topic(name: &str, partitions: i32, rf: i32, configs: &[(&str, &str)]) -> pb::CreatableTopic {
    pb::CreatableTopic {
        name: name.into(),
        partitions,
        replication_factor: rf,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        assignments: Vec::new(),
    }
}

async fn create(
    c: &mut ControllerClient<Channel>,
    topics: Vec<pb::CreatableTopic>,
) -> Vec<(ErrorCode, String)> {
    c.create_topics(pb::CreateTopicsRequest {
        topics,
        validate_only: false,
    })
    .await
    .unwrap()
    .into_inner()
    .topics
    .into_iter()
    .map(|t| (t.error_code(), t.error_message))
    .collect()
}

/// The whole log folded from offset 0.
async fn replay(c: &mut ControllerClient<Channel>, end: i64) -> MetadataImage {
    let mut stream = c
        .watch(pb::WatchRequest { from_offset: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut image = MetadataImage::default();
    while image.next_offset < end {
        let batch = stream.message().await.unwrap().unwrap();
        for e in batch.events {
            image.apply(e.offset, e.record.as_ref().unwrap()).unwrap();
        }
    }
    image
}

#[tokio::test]
async fn topics_are_created_validated_placed_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), 60_000).await;
    let mut c = client(&handle).await;
    brokers(&mut c, 3).await;

    let results = create(
        &mut c,
        vec![
            topic("orders", 6, 3, &[("retention.ms", "1000")]),
            topic("twice", 1, 1, &[]),
            topic("bad name", 1, 1, &[]),
            topic(&"x".repeat(250), 1, 1, &[]),
            topic("zero", 0, 1, &[]),
            topic("too.many.replicas", 1, 4, &[]),
            topic("bad-config", 1, 1, &[("retention.ms", "soon")]),
            topic("unknown-config", 1, 1, &[("no.such.key", "1")]),
            topic("a.b", 1, 1, &[]),
            topic("a_b", 1, 1, &[]),
            topic("defaults", -1, -1, &[]),
            topic("twice", 1, 1, &[]),
        ],
    )
    .await;
    let codes: Vec<ErrorCode> = results.iter().map(|r| r.0).collect();
    assert_eq!(
        codes,
        vec![
            ErrorCode::None,
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidTopicException,
            ErrorCode::InvalidTopicException,
            ErrorCode::InvalidPartitions,
            ErrorCode::InvalidReplicationFactor,
            ErrorCode::InvalidConfig,
            ErrorCode::InvalidConfig,
            ErrorCode::None,
            ErrorCode::InvalidTopicException,
            ErrorCode::None,
            ErrorCode::InvalidRequest,
        ],
        "{results:?}"
    );
    let again = create(&mut c, vec![topic("orders", 1, 1, &[])]).await;
    assert_eq!(again[0].0, ErrorCode::TopicAlreadyExists, "{again:?}");
    assert!(
        results[5]
            .1
            .contains("replication factor 4 is larger than the 3 available brokers"),
        "{}",
        results[5].1
    );
    assert!(results[9].1.contains("collides"), "{}", results[9].1);

    let md = c
        .get_metadata(pb::GetMetadataRequest { topics: vec![] })
        .await
        .unwrap()
        .into_inner();
    let orders = md.topics.iter().find(|t| t.name == "orders").unwrap();
    assert_eq!(orders.partitions.len(), 6);
    let mut leaders: HashMap<i32, usize> = HashMap::new();
    for p in &orders.partitions {
        assert_eq!(p.replicas.len(), 3);
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.leader, p.replicas[0]);
        *leaders.entry(p.leader).or_default() += 1;
    }
    assert_eq!(
        leaders.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "leaders spread: {leaders:?}"
    );
    let defaults = md.topics.iter().find(|t| t.name == "defaults").unwrap();
    assert_eq!(defaults.partitions.len(), 1, "num.partitions");

    // Partitions grow; shrinking or standing still is refused with a clear error.
    let grow = |count| pb::CreatePartitionsRequest {
        topic: "orders".into(),
        count,
        validate_only: false,
        assignments: Vec::new(),
    };
    let r = c
        .create_partitions(grow(8))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(r.error_code(), ErrorCode::None);
    let r = c
        .create_partitions(grow(4))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(r.error_code(), ErrorCode::InvalidPartitions);
    assert!(
        r.error_message.contains("can only be added, not removed"),
        "{}",
        r.error_message
    );
    let r = c
        .create_partitions(grow(8))
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert_eq!(r.error_code(), ErrorCode::InvalidPartitions);

    // Configs: describe shows sources; alter validates all-or-nothing.
    let resource = ConfigResource {
        r#type: ConfigResourceType::Topic as i32,
        name: "orders".into(),
    };
    let describe = |c: &mut ControllerClient<Channel>| {
        let mut c = c.clone();
        let resource = resource.clone();
        async move {
            let r = c
                .describe_configs(pb::DescribeConfigsRequest {
                    resources: vec![resource],
                })
                .await
                .unwrap();
            let entries = r.into_inner().resources.remove(0).entries;
            entries
                .into_iter()
                .map(|e| (e.key.clone(), (e.value.clone(), e.source())))
                .collect::<HashMap<_, _>>()
        }
    };
    let configs = describe(&mut c).await;
    assert_eq!(
        configs["retention.ms"],
        ("1000".into(), pb::ConfigSource::Topic)
    );
    assert_eq!(
        configs["segment.bytes"],
        ("1073741824".into(), pb::ConfigSource::Default)
    );
    let alter = |ops: Vec<(&str, &str, pb::AlterOp)>| pb::AlterConfigsRequest {
        resource: Some(resource.clone()),
        ops: ops
            .into_iter()
            .map(|(k, v, op)| pb::AlterConfigOp {
                key: k.into(),
                value: v.into(),
                op: op as i32,
            })
            .collect(),
        validate_only: false,
    };
    let err = c
        .alter_configs(alter(vec![
            ("cleanup.policy", "compact", pb::AlterOp::Set),
            ("min.insync.replicas", "0", pb::AlterOp::Set),
        ]))
        .await
        .unwrap_err();
    assert_eq!(
        runnel_common::errors::code_of(&err),
        ErrorCode::InvalidConfig
    );
    assert_eq!(
        describe(&mut c).await["cleanup.policy"].0,
        "delete",
        "nothing applied"
    );
    c.alter_configs(alter(vec![
        ("cleanup.policy", "compact", pb::AlterOp::Set),
        ("retention.ms", "", pb::AlterOp::Delete),
    ]))
    .await
    .unwrap();
    let configs = describe(&mut c).await;
    assert_eq!(
        configs["cleanup.policy"],
        ("compact".into(), pb::ConfigSource::Topic)
    );
    assert_eq!(configs["retention.ms"].1, pb::ConfigSource::Default);

    // Deletion, and a clear error for an unknown topic.
    let r = c
        .delete_topics(pb::DeleteTopicsRequest {
            names: vec!["defaults".into(), "nope".into()],
        })
        .await
        .unwrap();
    let codes: Vec<_> = r
        .into_inner()
        .topics
        .iter()
        .map(|t| t.error_code())
        .collect();
    assert_eq!(
        codes,
        vec![ErrorCode::None, ErrorCode::UnknownTopicOrPartition]
    );

    // The state is exactly the log folded from the start...
    let before = handle.controller.image().await;
    assert_eq!(replay(&mut c, before.next_offset).await, before);
    // ...and a restarted controller loads the same state from SQLite.
    handle.shutdown().await;
    let handle = start(dir.path(), 60_000).await;
    let mut c = client(&handle).await;
    let after = handle.controller.image().await;
    assert_eq!(after, before);
    assert_eq!(replay(&mut c, after.next_offset).await, after);
    // Names stay taken across the restart.
    let results = create(&mut c, vec![topic("orders", 1, 1, &[])]).await;
    assert_eq!(results[0].0, ErrorCode::TopicAlreadyExists);
    handle.shutdown().await;
}

#[tokio::test]
async fn brokers_are_fenced_when_silent_and_unfenced_when_back() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), 300).await;
    let mut c = client(&handle).await;
    let epochs = brokers(&mut c, 2).await;
    // Broker 1 keeps heartbeating, broker 2 goes silent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let end = c
            .describe_cluster(pb::DescribeClusterRequest {})
            .await
            .unwrap()
            .into_inner();
        let hb = c
            .broker_heartbeat(pb::BrokerHeartbeatRequest {
                broker_id: 1,
                broker_epoch: epochs[0],
                metadata_offset: end.metadata_end_offset,
                shutting_down: false,
                offline_replicas: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!hb.fenced);
        let b2 = end.brokers.iter().find(|b| b.broker_id == 2).unwrap();
        if b2.fenced {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker 2 never fenced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A stale epoch must register again; a new incarnation gets a new epoch.
    let hb = c
        .broker_heartbeat(pb::BrokerHeartbeatRequest {
            broker_id: 2,
            broker_epoch: epochs[1] - 1,
            metadata_offset: 0,
            shutting_down: false,
            offline_replicas: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.should_register);
    let epoch = c
        .register_broker(pb::RegisterBrokerRequest {
            broker_id: 2,
            endpoints: vec![],
            rack: String::new(),
            incarnation_id: "restarted".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .broker_epoch;
    assert!(epoch > epochs[1]);
    // A shutting-down broker is fenced at once.
    let hb = c
        .broker_heartbeat(pb::BrokerHeartbeatRequest {
            broker_id: 1,
            broker_epoch: epochs[0],
            metadata_offset: 1000,
            shutting_down: true,
            offline_replicas: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.fenced);
    // The watch stream saw every step, in order.
    let image = handle.controller.image().await;
    let mut stream = c
        .watch(pb::WatchRequest { from_offset: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    while (kinds.len() as i64) < image.next_offset {
        for e in stream.message().await.unwrap().unwrap().events {
            assert_eq!(e.offset, kinds.len() as i64);
            kinds.push(match e.record.unwrap().record.unwrap() {
                Record::BrokerRegistered(r) => format!("registered {}", r.broker_id),
                Record::BrokerUnfenced(r) => format!("unfenced {}", r.broker_id),
                Record::BrokerFenced(r) => format!("fenced {}", r.broker_id),
                other => format!("{other:?}"),
            });
        }
    }
    assert_eq!(
        kinds,
        vec![
            "registered 1",
            "unfenced 1",
            "registered 2",
            "unfenced 2",
            "fenced 2",
            "registered 2",
            "fenced 1"
        ]
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn watchers_get_live_events_after_history() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), 60_000).await;
    let mut c = client(&handle).await;
    brokers(&mut c, 1).await;
    let mut stream = c
        .watch(pb::WatchRequest { from_offset: 1 })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.events[0].offset, 1, "starts where asked");
    create(&mut c, vec![topic("live", 2, 1, &[])]).await;
    let mut offsets = vec![];
    while offsets.len() < 3 {
        for e in stream.message().await.unwrap().unwrap().events {
            offsets.push(e.offset);
        }
    }
    assert_eq!(
        offsets,
        vec![2, 3, 4],
        "topic + 2 partitions, no gaps or repeats"
    );
    // One entry of 5 MB of records (a long name, 20,000 partitions) comes
    // in pages a client with the default 4 MB message limit can read.
    let name = "x".repeat(240);
    create(&mut c, vec![topic(&name, 20_000, 1, &[])]).await;
    let mut partitions = 0;
    while partitions < 20_000 {
        let page = stream.message().await.unwrap().unwrap();
        assert!(page.events.len() <= 1000, "{} events", page.events.len());
        partitions += page
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e.record.as_ref().and_then(|r| r.record.as_ref()),
                    Some(Record::PartitionCreated(_))
                )
            })
            .count();
    }
    handle.shutdown().await;
}

/// The partition's (leader, leader epoch, partition epoch, ISR) in the controller's image.
async fn partition_state(
    handle: &ControllerHandle,
    topic: &str,
    p: i32,
) -> (i32, i32, i32, Vec<i32>) {
    let image = handle.controller.image().await;
    let s = &image.topics[topic].partitions[&p];
    (s.leader, s.leader_epoch, s.partition_epoch, s.isr.clone())
}

#[tokio::test]
async fn leadership_moves_when_a_leader_is_fenced_and_isr_changes_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), 60_000).await;
    let mut c = client(&handle).await;
    let epochs = brokers(&mut c, 3).await;
    assert_eq!(
        create(&mut c, vec![topic("t", 1, 3, &[])]).await[0].0,
        ErrorCode::None
    );
    let (leader, le, pe, isr) = partition_state(&handle, "t", 0).await;
    assert_eq!(isr.len(), 3);

    // The leader shrinks its ISR to itself and one follower.
    let follower = *isr.iter().find(|&&r| r != leader).unwrap();
    let shrink = |le: i32, pe: i32, isr: Vec<i32>| pb::AlterPartitionRequest {
        broker_id: leader,
        broker_epoch: epochs[(leader - 1) as usize],
        partitions: vec![pb::PartitionIsrChange {
            topic: "t".into(),
            partition: 0,
            leader_epoch: le,
            partition_epoch: pe,
            isr,
        }],
    };
    let r = c
        .alter_partition(shrink(le, pe, vec![leader, follower]))
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_eq!(r.error_code(), ErrorCode::None, "{}", r.error_message);
    assert_eq!(
        (r.isr.clone(), r.partition_epoch),
        (vec![leader, follower], pe + 1)
    );
    // The same change based on the old partition epoch, now with a different ISR: refused.
    let stale = c
        .alter_partition(shrink(le, pe, vec![leader]))
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_eq!(stale.error_code(), ErrorCode::InvalidUpdateVersion);
    // A broker that is not the leader cannot change it.
    let mut not_leader = shrink(le, pe + 1, vec![follower]);
    not_leader.broker_id = follower;
    not_leader.broker_epoch = epochs[(follower - 1) as usize];
    let r = c
        .alter_partition(not_leader)
        .await
        .unwrap()
        .into_inner()
        .partitions
        .remove(0);
    assert_eq!(r.error_code(), ErrorCode::FencedLeaderEpoch);

    // Controlled shutdown of the leader: the in-sync follower takes over at once.
    let hb = c
        .broker_heartbeat(pb::BrokerHeartbeatRequest {
            broker_id: leader,
            broker_epoch: epochs[(leader - 1) as usize],
            metadata_offset: 0,
            shutting_down: true,
            offline_replicas: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.fenced);
    let (new_leader, new_le, _, new_isr) = partition_state(&handle, "t", 0).await;
    assert_eq!((new_leader, new_le), (follower, le + 1));
    assert_eq!(new_isr, vec![follower]);
    // The old leader's ISR requests are refused now: it is fenced.
    let err = c
        .alter_partition(shrink(le, pe + 1, vec![leader]))
        .await
        .unwrap_err();
    assert_eq!(
        runnel_common::errors::code_of(&err),
        ErrorCode::StaleBrokerEpoch
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn producer_id_blocks_never_overlap_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), 60_000).await;
    let mut c = client(&handle).await;
    let epochs = brokers(&mut c, 2).await;
    let mut blocks = Vec::new();
    for (id, epoch) in [(1, epochs[0]), (2, epochs[1]), (1, epochs[0])] {
        let r = c
            .allocate_producer_ids(pb::AllocateProducerIdsRequest {
                broker_id: id,
                broker_epoch: epoch,
            })
            .await
            .unwrap()
            .into_inner();
        blocks.push((r.producer_id_start, r.producer_id_len));
    }
    assert_eq!(blocks, vec![(0, 1000), (1000, 1000), (2000, 1000)]);
    // A stale registration gets nothing.
    let stale = c
        .allocate_producer_ids(pb::AllocateProducerIdsRequest {
            broker_id: 1,
            broker_epoch: epochs[0] - 1,
        })
        .await
        .unwrap_err();
    assert_eq!(
        runnel_common::errors::code_of(&stale),
        ErrorCode::StaleBrokerEpoch
    );
    let before = handle.controller.image().await;
    assert_eq!(before.next_producer_id, 3000);
    assert_eq!(replay(&mut c, before.next_offset).await, before);
    handle.shutdown().await;

    let handle = start(dir.path(), 60_000).await;
    let mut c = client(&handle).await;
    assert_eq!(handle.controller.image().await.next_producer_id, 3000);
    let epochs = brokers(&mut c, 1).await;
    let next = c
        .allocate_producer_ids(pb::AllocateProducerIdsRequest {
            broker_id: 1,
            broker_epoch: epochs[0],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.producer_id_start, 3000);
    handle.shutdown().await;
}

#[tokio::test]
async fn scram_credentials_are_kept_hashed_checked_per_user_and_survive_restarts() {
    use runnel_common::scram::{Mechanism, ScramCredential};
    let upsert = |user: &str, mechanism: Mechanism, password: &str, iterations: i32| {
        let salt = b"0123456789abcdef".to_vec();
        pb::ScramCredentialUpsertion {
            user: user.into(),
            mechanism: i32::from(mechanism.code()),
            iterations,
            salted_password: mechanism
                .salted_password(password.as_bytes(), &salt, iterations as u32)
                .into(),
            salt: salt.into(),
        }
    };
    let delete = |user: &str, mechanism: i32| pb::ScramCredentialDeletion {
        user: user.into(),
        mechanism,
    };
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), 60_000).await;
    let mut c = client(&handle).await;
    let results = c
        .alter_user_scram_credentials(pb::AlterUserScramCredentialsRequest {
            deletions: vec![delete("carol", 1), delete("dave", 7)],
            upsertions: vec![
                upsert("alice", Mechanism::ScramSha512, "wonderland", 8192),
                upsert("alice", Mechanism::ScramSha256, "wonderland", 4096),
                upsert("bob", Mechanism::ScramSha256, "builder", 4096),
                upsert("bob", Mechanism::ScramSha256, "again", 4096),
                upsert("erin", Mechanism::ScramSha256, "x", 100),
                upsert("", Mechanism::ScramSha256, "x", 4096),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let outcome: Vec<(String, ErrorCode)> = results
        .iter()
        .map(|r| (r.user.clone(), r.error_code()))
        .collect();
    assert_eq!(
        outcome,
        vec![
            ("".into(), ErrorCode::UnacceptableCredential),
            ("alice".into(), ErrorCode::None),
            ("bob".into(), ErrorCode::DuplicateResource),
            ("carol".into(), ErrorCode::ResourceNotFound),
            ("dave".into(), ErrorCode::UnsupportedSaslMechanism),
            ("erin".into(), ErrorCode::UnacceptableCredential),
        ]
    );
    let image = handle.controller.image().await;
    assert_eq!(
        image.scram_credentials.len(),
        1,
        "only alice's changes stand"
    );
    let alice = &image.scram_credentials["alice"];
    assert!(alice[&Mechanism::ScramSha512].verify("wonderland"));
    assert_eq!(alice[&Mechanism::ScramSha512].iterations, 8192);
    assert!(!alice[&Mechanism::ScramSha256].verify("builder"));
    assert_eq!(replay(&mut c, image.next_offset).await, image);
    handle.shutdown().await;

    // The store keeps them across a restart; deleting the last one drops the user.
    let handle = start(dir.path(), 60_000).await;
    let mut c = client(&handle).await;
    let kept: ScramCredential =
        handle.controller.image().await.scram_credentials["alice"][&Mechanism::ScramSha256].clone();
    assert!(kept.verify("wonderland"));
    for m in [1, 2] {
        let r = c
            .alter_user_scram_credentials(pb::AlterUserScramCredentialsRequest {
                deletions: vec![delete("alice", m)],
                upsertions: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.results[0].error_code(), ErrorCode::None);
    }
    assert!(handle.controller.image().await.scram_credentials.is_empty());
    handle.shutdown().await;
}

#[tokio::test]
async fn acls_are_checked_kept_in_the_log_filtered_deleted_and_survive_restarts() {
    use runnel_common::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
    use runnel_common::metadata::{acl_entry, acl_filter_proto};
    let binding =
        |t: ResourceType, name: &str, p: PatternType, who: &str, op: Operation| AclBinding {
            resource_type: t,
            name: name.into(),
            pattern_type: p,
            principal: who.into(),
            host: "*".into(),
            operation: op,
            permission: Permission::Allow,
        };
    let alice_reads = binding(
        ResourceType::Topic,
        "orders",
        PatternType::Literal,
        "User:alice",
        Operation::Read,
    );
    let bob_writes = binding(
        ResourceType::Topic,
        "logs-",
        PatternType::Prefixed,
        "User:bob",
        Operation::Write,
    );
    let group = binding(
        ResourceType::Group,
        "app",
        PatternType::Literal,
        "User:alice",
        Operation::Read,
    );
    let bad_cluster = binding(
        ResourceType::Cluster,
        "other",
        PatternType::Literal,
        "User:alice",
        Operation::Alter,
    );
    let bad_principal = binding(
        ResourceType::Topic,
        "t",
        PatternType::Literal,
        "alice",
        Operation::Read,
    );
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), 60_000).await;
    let mut c = client(&handle).await;
    let results = c
        .create_acls(pb::CreateAclsRequest {
            creations: [
                &alice_reads,
                &bob_writes,
                &group,
                &bad_cluster,
                &bad_principal,
                &alice_reads,
            ]
            .into_iter()
            .map(acl_entry)
            .collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let codes: Vec<ErrorCode> = results.iter().map(|r| r.error_code()).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::None,
            ErrorCode::None,
            ErrorCode::None,
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidRequest,
            ErrorCode::None
        ]
    );
    assert!(
        results[3].error_message.contains("kafka-cluster"),
        "{:?}",
        results[3]
    );
    let image = handle.controller.image().await;
    assert_eq!(image.acls.len(), 3, "valid ones once each");
    assert_eq!(replay(&mut c, image.next_offset).await, image);
    // MATCH finds the prefixed binding that applies to a topic.
    let described = c
        .describe_acls(pb::DescribeAclsRequest {
            filter: Some(acl_filter_proto(&runnel_common::acl::AclFilter {
                resource_type: Some(ResourceType::Topic),
                name: Some("logs-app".into()),
                pattern_type: Some(PatternType::Match),
                ..Default::default()
            })),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.acls, vec![acl_entry(&bob_writes)]);
    handle.shutdown().await;

    let handle = start(dir.path(), 60_000).await;
    let mut c = client(&handle).await;
    assert_eq!(
        handle.controller.image().await.acls.len(),
        3,
        "kept across a restart"
    );
    let deleted = c
        .delete_acls(pb::DeleteAclsRequest {
            filters: vec![
                acl_filter_proto(&runnel_common::acl::AclFilter {
                    principal: Some("User:alice".into()),
                    ..Default::default()
                }),
                acl_filter_proto(&runnel_common::acl::AclFilter {
                    resource_type: Some(ResourceType::Group),
                    ..Default::default()
                }),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(deleted[0].deleted.len(), 2, "alice's two");
    assert_eq!(
        deleted[1].deleted,
        vec![acl_entry(&group)],
        "each filter reports its matches"
    );
    let left: Vec<AclBinding> = handle
        .controller
        .image()
        .await
        .acls
        .iter()
        .cloned()
        .collect();
    assert_eq!(left, vec![bob_writes]);
    handle.shutdown().await;
}

#[tokio::test]
async fn client_quotas_are_validated_kept_in_the_log_described_and_survive_restarts() {
    use runnel_proto::metadata::v1::QuotaEntityPart;
    let part = |t: &str, name: Option<&str>| QuotaEntityPart {
        entity_type: t.into(),
        name: name.map(Into::into),
    };
    let set = |key: &str, value: f64| pb::QuotaOp {
        key: key.into(),
        value,
        remove: false,
    };
    let alice = vec![part("user", Some("alice"))];
    let alice_app = vec![part("user", Some("alice")), part("client-id", Some("app"))];
    let default_user = vec![part("user", None)];
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), 60_000).await;
    let mut c = client(&handle).await;
    let alter =
        |entries: Vec<pb::QuotaAlteration>, validate_only: bool| pb::AlterClientQuotasRequest {
            entries,
            validate_only,
        };
    let entry = |entity: &Vec<QuotaEntityPart>, ops: Vec<pb::QuotaOp>| pb::QuotaAlteration {
        entity: entity.clone(),
        ops,
    };

    // validate_only checks and changes nothing.
    let checked = c
        .alter_client_quotas(alter(
            vec![entry(&alice, vec![set("producer_byte_rate", 1024.0)])],
            true,
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(checked[0].error_code(), ErrorCode::None);
    assert!(
        handle
            .controller
            .image()
            .await
            .quotas
            .iter()
            .next()
            .is_none()
    );

    let results = c
        .alter_client_quotas(alter(
            vec![
                entry(
                    &alice,
                    vec![
                        set("producer_byte_rate", 1024.0),
                        set("request_percentage", 50.0),
                    ],
                ),
                entry(&alice_app, vec![set("consumer_byte_rate", 2048.0)]),
                entry(&default_user, vec![set("controller_mutation_rate", 5.0)]),
                // Refused as a whole: a bad value, an unknown key, a repeated
                // key, an unknown entity type, a rate with a fraction of a byte.
                entry(
                    &alice,
                    vec![
                        set("consumer_byte_rate", 1.0),
                        set("producer_byte_rate", -1.0),
                    ],
                ),
                entry(&alice, vec![set("no_such_quota", 1.0)]),
                entry(
                    &alice,
                    vec![
                        set("request_percentage", 1.0),
                        set("request_percentage", 2.0),
                    ],
                ),
                entry(
                    &vec![part("ip", Some("10.0.0.1"))],
                    vec![set("producer_byte_rate", 1.0)],
                ),
                entry(&alice, vec![set("producer_byte_rate", 1.5)]),
            ],
            false,
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    let codes: Vec<ErrorCode> = results.iter().map(|r| r.error_code()).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::None,
            ErrorCode::None,
            ErrorCode::None,
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidRequest,
        ]
    );
    assert!(
        results[4].error_message.contains("no_such_quota"),
        "{:?}",
        results[4]
    );
    let image = handle.controller.image().await;
    let alice_entity = runnel_common::metadata::quota_entity(&alice).unwrap();
    let values = image.quotas.get(&alice_entity).unwrap();
    assert_eq!(
        values.len(),
        2,
        "the refused entry changed nothing: {values:?}"
    );
    assert_eq!(replay(&mut c, image.next_offset).await, image);

    // Kafka's precedence: alice's own quota wins over the default user's.
    use runnel_common::quota::QuotaKey;
    let applied = image
        .quotas
        .resolve(QuotaKey::ProducerByteRate, "alice", "x")
        .unwrap();
    assert_eq!(applied.limit, 1024.0);
    let applied = image
        .quotas
        .resolve(QuotaKey::ControllerMutationRate, "bob", "x")
        .unwrap();
    assert_eq!(applied.limit, 5.0);

    // Describe: alice exactly, with any client id (not strict) and strictly.
    let describe = |components: Vec<pb::QuotaFilterComponent>, strict: bool| {
        pb::DescribeClientQuotasRequest { components, strict }
    };
    let alice_exact = pb::QuotaFilterComponent {
        entity_type: "user".into(),
        match_type: 0,
        name: Some("alice".into()),
    };
    let loose = c
        .describe_client_quotas(describe(vec![alice_exact.clone()], false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(loose.error_code(), ErrorCode::None);
    assert_eq!(loose.entries.len(), 2, "{loose:?}");
    let strict = c
        .describe_client_quotas(describe(vec![alice_exact], true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(strict.entries.len(), 1);
    assert_eq!(
        strict.entries[0].values.get("request_percentage"),
        Some(&50.0)
    );
    let defaults = c
        .describe_client_quotas(describe(
            vec![pb::QuotaFilterComponent {
                entity_type: "user".into(),
                match_type: 1,
                name: None,
            }],
            false,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(defaults.entries.len(), 1);
    assert_eq!(defaults.entries[0].entity, default_user);
    let bad = c
        .describe_client_quotas(describe(
            vec![pb::QuotaFilterComponent {
                entity_type: "user".into(),
                match_type: 0,
                name: None,
            }],
            false,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bad.error_code(),
        ErrorCode::InvalidRequest,
        "EXACT needs a name"
    );
    handle.shutdown().await;

    let handle = start(dir.path(), 60_000).await;
    let mut c = client(&handle).await;
    let image = handle.controller.image().await;
    assert_eq!(
        image.quotas.get(&alice_entity).map(|v| v.len()),
        Some(2),
        "kept across a restart"
    );
    // Removing a key drops it; removing the last key drops the entity.
    let removed = c
        .alter_client_quotas(alter(
            vec![
                entry(
                    &alice,
                    vec![pb::QuotaOp {
                        key: "producer_byte_rate".into(),
                        value: 0.0,
                        remove: true,
                    }],
                ),
                entry(
                    &alice_app,
                    vec![pb::QuotaOp {
                        key: "consumer_byte_rate".into(),
                        value: 0.0,
                        remove: true,
                    }],
                ),
            ],
            false,
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(
        removed.iter().all(|r| r.error_code() == ErrorCode::None),
        "{removed:?}"
    );
    let image = handle.controller.image().await;
    let mut left: Vec<_> = image
        .quotas
        .iter()
        .map(|(e, v)| (e.to_string(), v.len()))
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            ("user=<default>".to_string(), 1),
            ("user=alice".to_string(), 1)
        ]
    );
    assert_eq!(replay(&mut c, image.next_offset).await, image);
    handle.shutdown().await;
}
