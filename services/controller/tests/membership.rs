//! Growing and shrinking the controller quorum at runtime: a single
//! controller takes two more (started with `quorum_join`), they share the
//! metadata, the first restarts into the grown quorum, and one is removed.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use runnel_common::shutdown::CancellationToken;
use runnel_controller::{Config, ControllerHandle};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::controller::v1::controller_client::ControllerClient;
use tonic::transport::Channel;

async fn start(dir: &Path, id: i32, listen: SocketAddr, join: bool) -> ControllerHandle {
    let config = Config {
        node_id: id,
        listen,
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_owned(),
        quorum_join: join,
        quorum_election_timeout_ms: 300,
        ..Config::default()
    };
    runnel_controller::start(config, CancellationToken::new())
        .await
        .unwrap()
}

async fn client(addr: SocketAddr) -> ControllerClient<Channel> {
    ControllerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// A metadata write that needs nothing else in the cluster: a broker registers.
async fn register(c: &mut ControllerClient<Channel>, broker_id: i32) -> i64 {
    c.register_broker(pb::RegisterBrokerRequest {
        broker_id,
        endpoints: vec![],
        rack: String::new(),
        incarnation_id: format!("inc-{broker_id}"),
    })
    .await
    .unwrap()
    .into_inner()
    .broker_epoch
}

/// The voters of the quorum, as `DescribeCluster` lists them.
async fn voters(c: &mut ControllerClient<Channel>) -> Vec<i32> {
    c.describe_cluster(pb::DescribeClusterRequest {})
        .await
        .unwrap()
        .into_inner()
        .controllers
        .iter()
        .filter(|k| k.voter)
        .map(|k| k.controller_id)
        .collect()
}

/// Polls until `check` holds, for at most 20 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_controller_grows_to_three_restarts_into_them_and_shrinks() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|_| runnel_common::netfault::free_loopback_addr())
        .collect();
    let mut first = start(dirs[0].path(), 1, addrs[0], false).await;
    let second = start(dirs[1].path(), 2, addrs[1], true).await;
    let third = start(dirs[2].path(), 3, addrs[2], true).await;
    assert!(first.controller.is_active());
    assert!(!second.controller.is_active());

    let mut c = client(addrs[0]).await;
    for (id, addr) in [(2, addrs[1]), (3, addrs[2])] {
        c.add_controller(pb::AddControllerRequest {
            controller_id: id,
            address: addr.to_string(),
        })
        .await
        .unwrap();
    }
    assert_eq!(voters(&mut c).await, [1, 2, 3]);

    // A write through a new member (forwarded) reaches every controller.
    let mut via_third = client(addrs[2]).await;
    register(&mut via_third, 7).await;
    for h in [&first, &second, &third] {
        eventually("every controller has the registration", async || {
            h.controller.image().await.brokers.contains_key(&7)
        })
        .await;
    }

    // The first controller restarts with its original (empty) voter list:
    // it rejoins the grown quorum instead of counting on itself alone.
    // Written while it is down, so its log is behind and it cannot be the
    // one elected: it must follow. Twice: the first time it went down as
    // the active controller, the second time as a follower.
    let mut via_second = client(addrs[1]).await;
    for broker in [9, 10] {
        first.shutdown().await;
        // Writes go through the second: it must know which of the two leads.
        eventually("the other two have an active controller", async || {
            (second.controller.is_active() || third.controller.is_active())
                && second.controller.active().is_some_and(|(id, _)| id != 1)
        })
        .await;
        register(&mut via_second, broker).await;
        first = start(dirs[0].path(), 1, addrs[0], false).await;
        eventually(
            "the restarted controller follows and catches up",
            async || first.controller.image().await.brokers.contains_key(&broker),
        )
        .await;
        eventually("the restarted controller follows", async || {
            !first.controller.is_active() && first.controller.active().is_some()
        })
        .await;
    }
    assert!(first.controller.image().await.brokers.contains_key(&7));

    let mut c = client(addrs[1]).await;
    c.remove_controller(pb::RemoveControllerRequest { controller_id: 3 })
        .await
        .unwrap();
    // Once more: refused, as 3 is no longer a voter (retried while the
    // quorum settles on its new leader, if 3 was the active controller).
    eventually("a second removal is refused as such", async || {
        let refused = c
            .remove_controller(pb::RemoveControllerRequest { controller_id: 3 })
            .await
            .unwrap_err();
        let code = runnel_common::errors::code_of(&refused);
        assert!(
            matches!(code, ErrorCode::InvalidRequest | ErrorCode::NotController),
            "{refused:?}"
        );
        code == ErrorCode::InvalidRequest
    })
    .await;
    assert_eq!(voters(&mut c).await, [1, 2]);
    // The smaller quorum still commits.
    register(&mut c, 8).await;
    eventually("the registration after the removal", async || {
        first.controller.image().await.brokers.contains_key(&8)
    })
    .await;

    third.shutdown().await;
    second.shutdown().await;
    first.shutdown().await;
}
