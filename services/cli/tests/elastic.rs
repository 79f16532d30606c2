//! The commands that move partitions between brokers, run as users run
//! them against an in-process cluster of several brokers: `partitions
//! reassign` (Kafka's files and lines), `partitions elect-leaders`,
//! `brokers decommission` under acks=all load, and `cluster rebalance`
//! after a broker joins, with racks.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::time::Duration;

use runnel_client::NewTopic;
use runnel_testkit::load::Load;
use runnel_testkit::{TestCluster, wait_for};

const RUNNEL: &str = env!("CARGO_BIN_EXE_runnel");

/// Runs `runnel --bootstrap B args...` off the async runtime.
async fn runnel(bootstrap: &str, args: &[&str]) -> Output {
    let mut command = Command::new(RUNNEL);
    command.arg("--bootstrap").arg(bootstrap).args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// `runnel partitions reassign STEP --reassignment-json-file FILE`.
async fn reassign_step(bootstrap: &str, step: &str, file: &str) -> Output {
    runnel(
        bootstrap,
        &[
            "partitions",
            "reassign",
            step,
            "--reassignment-json-file",
            file,
        ],
    )
    .await
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "runnel failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Replicas of every partition of every topic (internal ones included).
async fn placement(cluster: &TestCluster) -> BTreeMap<String, BTreeMap<i32, Vec<i32>>> {
    cluster.admin().assignments(&[]).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassign_plans_executes_verifies_and_cancels_with_kafkas_files_and_lines() {
    let mut cluster = TestCluster::builder().brokers(3).start().await;
    cluster
        .create_topic(NewTopic::new("orders").assignments(vec![vec![1, 2], vec![1, 2]]))
        .await;
    let bootstrap = cluster.bootstrap();
    let dir = tempfile::tempdir().unwrap();

    // --plan: the current assignment, then a plan spreading over 1,2,3.
    let out = ok(&runnel(
        &bootstrap,
        &[
            "partitions",
            "reassign",
            "--plan",
            "--topics",
            "orders",
            "--brokers",
            "1,2,3",
        ],
    )
    .await);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Current partition replica assignment");
    assert_eq!(
        lines[1],
        r#"{"version":1,"partitions":[{"topic":"orders","partition":0,"replicas":[1,2],"log_dirs":["any","any"]},{"topic":"orders","partition":1,"replicas":[1,2],"log_dirs":["any","any"]}]}"#
    );
    assert_eq!(lines[3], "Proposed partition reassignment configuration");
    let proposed: serde_json::Value = serde_json::from_str(lines[4]).unwrap();
    let on_3 = proposed["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["replicas"].as_array().unwrap().contains(&3.into()))
        .count();
    assert!(on_3 >= 1, "broker 3 takes a share: {proposed}");

    // --execute a hand-written plan, --verify until done.
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"{"version":1,"partitions":[{"topic":"orders","partition":0,"replicas":[3,1]}]}"#,
    )
    .unwrap();
    let file = plan.to_str().unwrap();
    let out = ok(&runnel(
        &bootstrap,
        &[
            "partitions",
            "reassign",
            "--execute",
            "--reassignment-json-file",
            file,
            "--throttle",
            "50000000",
        ],
    )
    .await);
    assert!(out.starts_with("Current partition replica assignment\n\n{\"version\":1,\"partitions\":[{\"topic\":\"orders\",\"partition\":0,\"replicas\":[1,2],\"log_dirs\":[\"any\",\"any\"]}]}\n\nSave this to use as the --reassignment-json-file option during rollback\n"), "{out}");
    assert!(
        out.contains("The inter-broker throttle limit was set to 50000000 B/s"),
        "{out}"
    );
    assert!(
        out.ends_with("Successfully started partition reassignments for orders-0\n"),
        "{out}"
    );
    let admin = cluster.admin();
    wait_for("the move", Duration::from_secs(30), || async {
        admin
            .list_partition_reassignments(None)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let out = ok(&reassign_step(&bootstrap, "--verify", file).await);
    assert_eq!(
        out,
        "Status of partition reassignment:\nReassignment of partition orders-0 is completed.\n\nClearing broker-level throttles on brokers 1,2,3\nClearing topic-level throttles on topic orders\n"
    );
    let configs = admin.describe_configs("orders").await.unwrap();
    assert!(
        configs
            .iter()
            .all(|c| !c.key.contains("throttled") || c.value.is_empty())
    );
    assert!(
        admin
            .describe_broker_configs(Some(3))
            .await
            .unwrap()
            .iter()
            .all(|c| !c.is_set)
    );

    // --cancel while a move is held open (its new replica's broker is down).
    cluster.stop_broker(1).await;
    std::fs::write(
        &plan,
        r#"{"version":1,"partitions":[{"topic":"orders","partition":1,"replicas":[2,1,3]}]}"#,
    )
    .unwrap();
    let out = ok(&reassign_step(&bootstrap, "--execute", file).await);
    assert!(
        out.ends_with("Successfully started partition reassignments for orders-1\n"),
        "{out}"
    );
    let out = reassign_step(&bootstrap, "--execute", file).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Cannot execute because there is an existing partition assignment")
    );
    let out = ok(&reassign_step(&bootstrap, "--verify", file).await);
    assert!(
        out.contains("Reassignment of partition orders-1 is still in progress."),
        "{out}"
    );
    let out = ok(&reassign_step(&bootstrap, "--cancel", file).await);
    assert_eq!(
        out,
        "Successfully cancelled partition reassignments for: orders-1\n"
    );
    let out = ok(&reassign_step(&bootstrap, "--cancel", file).await);
    assert_eq!(out, "None of the specified partition moves are active.\n");
    cluster.start_broker_again(1).await;

    // Bad input: one clear line, nothing changed.
    let before = placement(&cluster).await;
    std::fs::write(
        &plan,
        r#"{"version":1,"partitions":[{"topic":"orders","partition":0,"replicas":[9]}]}"#,
    )
    .unwrap();
    let out = reassign_step(&bootstrap, "--execute", file).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("orders-0: The manual partition assignment includes broker 9, but no such broker is registered."), "{err}");
    std::fs::write(&plan, "not json").unwrap();
    let out = reassign_step(&bootstrap, "--execute", file).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a reassignment plan: not JSON"));
    assert_eq!(placement(&cluster).await, before);

    // Preferred leaders: orders-0 on 3,1 may be led by 1; electing puts 3 first.
    let out = ok(&runnel(
        &bootstrap,
        &[
            "partitions",
            "elect-leaders",
            "--election-type",
            "PREFERRED",
            "--topic",
            "orders",
            "--partition",
            "0",
        ],
    )
    .await);
    assert!(
        out == "Successfully completed leader election (PREFERRED) for partitions orders-0\n"
            || out == "Valid replica already elected for partitions orders-0\n",
        "{out}"
    );
    assert_eq!(
        admin.describe_topic("orders").await.unwrap().partitions[0].leader,
        3
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioning_a_broker_under_load_leaves_every_partition_fully_replicated() {
    let cluster = TestCluster::builder().brokers(4).start().await;
    cluster
        .create_topic(
            NewTopic::new("busy")
                .partitions(4)
                .replication_factor(3)
                .config("min.insync.replicas", "2"),
        )
        .await;
    let load = Load::start(&cluster, "busy", 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = ok(&runnel(
        &cluster.bootstrap(),
        &["brokers", "decommission", "4", "--throttle", "20000000"],
    )
    .await);
    assert!(
        out.ends_with("Broker 4 holds no replicas: it can be stopped.\n"),
        "{out}"
    );
    let admin = cluster.admin();
    let topic = admin.describe_topic("busy").await.unwrap();
    for p in &topic.partitions {
        assert_eq!(p.replicas.len(), 3, "{p:?}");
        assert!(!p.replicas.contains(&4) && p.leader != 4, "{p:?}");
    }
    wait_for(
        "every partition fully in sync",
        Duration::from_secs(30),
        || async {
            admin
                .describe_topic("busy")
                .await
                .is_ok_and(|t| t.partitions.iter().all(|p| p.isr.len() == 3))
        },
    )
    .await;
    assert!(
        placement(&cluster)
            .await
            .values()
            .flat_map(|t| t.values())
            .all(|r| !r.contains(&4)),
        "no replica left on broker 4"
    );
    load.finish_and_check(&cluster).await;
    // Only the throttle rates' traces are gone too.
    assert!(
        admin
            .describe_broker_configs(Some(1))
            .await
            .unwrap()
            .iter()
            .all(|c| !c.is_set)
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_broker_gets_its_share_from_a_rebalance_and_racks_stay_spread() {
    let mut cluster = TestCluster::builder()
        .brokers(3)
        .racks(&["a", "b", "a", "b"])
        .start()
        .await;
    cluster
        .create_topic(NewTopic::new("spread").partitions(8).replication_factor(2))
        .await;
    let rack = |id: i32| ["a", "b", "a", "b"][(id - 1) as usize];
    let spread_ok = |p: &BTreeMap<String, BTreeMap<i32, Vec<i32>>>| {
        p["spread"].values().all(|r| {
            let racks: BTreeSet<&str> = r.iter().map(|&b| rack(b)).collect();
            racks.len() == r.len()
        })
    };
    assert!(
        spread_ok(&placement(&cluster).await),
        "creation spreads over racks"
    );
    let load = Load::start(&cluster, "spread", 8);
    cluster.add_broker().await;
    let before = placement(&cluster).await;
    assert!(before["spread"].values().all(|r| !r.contains(&4)));
    let out = ok(&runnel(&cluster.bootstrap(), &["cluster", "rebalance", "--dry-run"]).await);
    assert!(
        out.contains("Proposed partition reassignment configuration"),
        "{out}"
    );
    assert_eq!(placement(&cluster).await, before, "a dry run moves nothing");
    let out = ok(&runnel(&cluster.bootstrap(), &["cluster", "rebalance"]).await);
    assert!(out.contains("Rebalanced:"), "{out}");
    let after = placement(&cluster).await;
    // Rack b's only broker held a replica of every partition; broker 4
    // joins rack b and takes half.
    let mut load_per: BTreeMap<i32, usize> = BTreeMap::new();
    for r in after["spread"].values() {
        for b in r {
            *load_per.entry(*b).or_default() += 1;
        }
    }
    let (min, max) = (
        load_per.values().min().unwrap(),
        load_per.values().max().unwrap(),
    );
    assert!(max - min <= 1, "every broker holds its share: {load_per:?}");
    assert!(spread_ok(&after), "racks stay spread: {after:?}");
    load.finish_and_check(&cluster).await;
    cluster.shutdown().await;
}
