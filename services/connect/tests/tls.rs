//! A worker on a cluster that serves gRPC over TLS, with its REST API over
//! HTTPS: it reads its internal topics through TLS, and answers REST calls
//! from clients that trust its CA, and nothing in clear.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use runnel_common::http::HttpClient;
use runnel_common::tls::ClientTls;
use runnel_testkit::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_is_served_over_https_on_a_tls_cluster() {
    let cluster = TestCluster::builder()
        .coordinators(1)
        .grpc_tls(true)
        .start()
        .await;
    let tls_dir = cluster.tls_dir();
    let ca = tls_dir.join("ca.pem");
    let handle = common::worker(runnel_connect::Config {
        grpc_ssl_truststore_location: Some(ca.clone()),
        rest_ssl_keystore_location: Some(tls_dir.join("broker-service.pem")),
        admin_ssl_keystore_location: Some(tls_dir.join("broker-service.pem")),
        ..common::worker_config(&cluster, None)
    })
    .await;
    let https = HttpClient::with_tls(&ClientTls::client(Some(ca), None).unwrap());
    let url = format!("https://{}/connectors", handle.rest_addr);
    // The REST API answers once the worker has read its topics, over TLS.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let answer = loop {
        match https
            .request("GET", &url, None, &[], Duration::from_secs(5))
            .await
        {
            Ok(answer) if answer.status == 200 => break answer,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no answer over HTTPS: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(answer.text(), "[]");
    // The admin endpoints too; ready once the worker has joined its group.
    let readyz = format!("https://{}/readyz", handle.admin_addr);
    loop {
        let answer = https
            .request("GET", &readyz, None, &[], Duration::from_secs(5))
            .await
            .unwrap();
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 503, "{}", answer.text());
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plain = url.replace("https://", "http://");
    assert!(
        HttpClient::new()
            .request("GET", &plain, None, &[], Duration::from_secs(5))
            .await
            .is_err(),
        "nothing in clear"
    );
    handle.shutdown().await;
    cluster.shutdown().await;
}
