//! Bad input on the Kafka listener: every malformed, oversized, truncated or
//! unsupported request closes that connection (or gets the protocol's
//! error answer) and the broker goes on serving everyone else.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use runnel_testkit::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Kafka's UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

fn request(api_key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Bytes {
    let mut header = RequestHeader::default();
    header.request_api_key = api_key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("bad-input-test"));
    let mut out = BytesMut::new();
    header
        .encode(&mut out, api_key.request_header_version(version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    framed(&out)
}

fn framed(body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32(body.len() as i32);
    out.put_slice(body);
    out.freeze()
}

/// Reads one response frame (`None` when the broker closed the connection).
async fn read_frame(stream: &mut TcpStream) -> Option<Bytes> {
    let read = async {
        let size = stream.read_i32().await.ok()?;
        let mut body = vec![0; size as usize];
        stream.read_exact(&mut body).await.ok()?;
        Some(Bytes::from(body))
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the broker neither answered nor closed the connection")
}

async fn closed(stream: &mut TcpStream) -> bool {
    read_frame(stream).await.is_none()
}

async fn api_versions(stream: &mut TcpStream, correlation_id: i32) -> ApiVersionsResponse {
    stream
        .write_all(&request(
            ApiKey::ApiVersions,
            3,
            correlation_id,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("test"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        ))
        .await
        .unwrap();
    let mut frame = read_frame(stream).await.expect("an ApiVersions answer");
    let header = ResponseHeader::decode(&mut frame, 0).unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    ApiVersionsResponse::decode(&mut frame, 3).unwrap()
}

/// The broker still answers a fresh connection and `existing` one.
async fn still_serving(addr: &str, existing: &mut TcpStream, correlation_id: i32) {
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    assert_eq!(api_versions(&mut fresh, 1).await.error_code, 0);
    assert_eq!(api_versions(existing, correlation_id).await.error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_close_their_connection_and_nothing_else() {
    let cluster = TestCluster::builder().start().await;
    let addr = cluster.kafka_bootstrap();
    // Opened before any bad input; must keep working throughout.
    let mut bystander = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(api_versions(&mut bystander, 100).await.error_code, 0);

    // A frame larger than socket.request.max.bytes (100 MiB): refused from
    // its size alone, without waiting for the body.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&(200 * 1024 * 1024_i32).to_be_bytes())
        .await
        .unwrap();
    assert!(closed(&mut s).await, "an oversized frame was not refused");
    still_serving(&addr, &mut bystander, 101).await;

    // A negative size.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&(-5_i32).to_be_bytes()).await.unwrap();
    assert!(closed(&mut s).await);

    // A frame too short for a request header.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&framed(&[0, 3, 0])).await.unwrap();
    assert!(closed(&mut s).await);

    // An unknown API key.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&framed(&[0x03, 0xe7, 0, 0, 0, 0, 0, 9, 0, 0]))
        .await
        .unwrap();
    assert!(closed(&mut s).await, "an unknown API key was not refused");

    // An unsupported version of Produce closes; of ApiVersions, gets the v0
    // answer with UNSUPPORTED_VERSION and the ranges served.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&framed(&[0, 0, 0, 99, 0, 0, 0, 9, 0, 0]))
        .await
        .unwrap();
    assert!(closed(&mut s).await);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&framed(&[0, 18, 0, 99, 0, 0, 0, 42, 0, 0]))
        .await
        .unwrap();
    let mut frame = read_frame(&mut s).await.expect("an ApiVersions v0 answer");
    assert_eq!(frame.get_i32(), 42, "the correlation id comes back");
    let answer = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(answer.error_code, UNSUPPORTED_VERSION);
    assert!(
        answer
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Produce as i16)
    );
    // ...and the connection stays usable at a version it shares.
    assert_eq!(api_versions(&mut s, 43).await.error_code, 0);

    // Garbage after a valid header, including an array claiming billions of
    // elements in a few bytes (the codec used to abort the process on it).
    let good = request(ApiKey::Metadata, 9, 7, &MetadataRequest::default());
    let header_len = good.len() - MetadataRequest::default().compute_size(9).unwrap();
    for garbage in [
        &[0xff_u8; 9][..],
        &[0x7f, 0xff, 0xff, 0xff],
        &[0xff, 0xff, 0xff, 0xff, 0x0f],
    ] {
        let mut body = BytesMut::from(&good[4..header_len]);
        body.extend_from_slice(garbage);
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(&framed(&body)).await.unwrap();
        assert!(closed(&mut s).await, "garbage {garbage:?} was not refused");
    }
    // Metadata v0's array length is an i32: claim i32::MAX topics.
    let mut body = BytesMut::from(
        &request(
            ApiKey::Metadata,
            0,
            8,
            &MetadataRequest::default().with_topics(Some(vec![])),
        )[4..],
    );
    let len = body.len();
    body[len - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&framed(&body)).await.unwrap();
    assert!(closed(&mut s).await);
    still_serving(&addr, &mut bystander, 102).await;

    // A truncated frame: the size promises more than ever comes.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let whole = request(ApiKey::Metadata, 9, 9, &MetadataRequest::default());
    s.write_all(&whole[..whole.len() - 3]).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(closed(&mut s).await);

    // A client that disconnects mid-request.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&whole[..6]).await.unwrap();
    drop(s);
    still_serving(&addr, &mut bystander, 103).await;
    cluster.shutdown().await;
}

/// Requests sent back to back on one connection are answered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let cluster = TestCluster::builder().start().await;
    let mut s = TcpStream::connect(cluster.kafka_bootstrap()).await.unwrap();
    let mut batch = BytesMut::new();
    for id in 0..30 {
        if id % 3 == 0 {
            batch.extend_from_slice(&request(
                ApiKey::ApiVersions,
                3,
                id,
                &ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("t"))
                    .with_client_software_version(StrBytes::from_static_str("1")),
            ));
        } else {
            // Metadata takes the broker longer than ApiVersions.
            batch.extend_from_slice(&request(
                ApiKey::Metadata,
                12,
                id,
                &MetadataRequest::default(),
            ));
        }
    }
    s.write_all(&batch).await.unwrap();
    for id in 0..30 {
        let mut frame = read_frame(&mut s).await.unwrap();
        let version = if id % 3 == 0 { 0 } else { 1 };
        let header = ResponseHeader::decode(&mut frame, version).unwrap();
        assert_eq!(header.correlation_id, id, "answers out of order");
        if id % 3 != 0 {
            let m = MetadataResponse::decode(&mut frame, 12).unwrap();
            assert_eq!(m.brokers.len(), 1);
        }
    }
    cluster.shutdown().await;
}
