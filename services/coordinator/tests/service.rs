//! A coordinator process over a three-broker cluster: it loads
//! `__consumer_offsets` before it serves, and a restarted coordinator has
//! every committed offset back.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use runnel_common::shutdown::CancellationToken;
use runnel_coordinator::{Config, CoordinatorHandle};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;
use runnel_proto::coordinator::v1::coordinator_client::CoordinatorClient;
use runnel_testkit::TestCluster;
use tonic::transport::Channel;

async fn start(cluster: &TestCluster) -> CoordinatorHandle {
    let config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        bootstrap: cluster.bootstrap(),
        offsets_topic_num_partitions: 5,
        ..Config::default()
    };
    runnel_coordinator::start(config, CancellationToken::new())
        .await
        .unwrap()
}

/// A client once the coordinator serves (it loads first).
async fn client(handle: &CoordinatorHandle) -> CoordinatorClient<Channel> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let url = format!("http://{}/readyz", handle.admin_addr);
        let ready = http_ok(&url).await;
        if ready {
            return CoordinatorClient::connect(format!("http://{}", handle.grpc_addr))
                .await
                .unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET `url` over a bare TCP connection; true on a 200.
async fn http_ok(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (addr, path) = rest.split_once('/').unwrap();
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.starts_with("HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_coordinator_restart() {
    let cluster = TestCluster::builder().brokers(3).start().await;
    let coordinator = start(&cluster).await;
    let mut c = client(&coordinator).await;
    // Admin commits for a group without members (as `groups reset-offsets` does).
    for group in ["billing", "search"] {
        let r = c
            .offset_commit(pb::OffsetCommitRequest {
                group_id: group.into(),
                generation_id: -1,
                partitions: vec![pb::OffsetCommitPartition {
                    topic: "orders".into(),
                    partition: 0,
                    offset: if group == "billing" { 10 } else { 20 },
                    leader_epoch: -1,
                    metadata: String::new(),
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.partitions[0].error_code(), ErrorCode::None);
    }
    coordinator.shutdown().await;

    let coordinator = start(&cluster).await;
    let mut c = client(&coordinator).await;
    for (group, offset) in [("billing", 10), ("search", 20)] {
        let fetched = c
            .offset_fetch(pb::OffsetFetchRequest {
                group_id: group.into(),
                topics: vec![pb::OffsetFetchTopic {
                    topic: "orders".into(),
                    partitions: vec![0, 1],
                }],
                require_stable: false,
            })
            .await
            .unwrap()
            .into_inner();
        let offsets: Vec<i64> = fetched.partitions.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [offset, -1], "{group}");
    }
    let listed = c
        .list_groups(pb::ListGroupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.groups.len(), 2);
    coordinator.shutdown().await;
    cluster.shutdown().await;
}
