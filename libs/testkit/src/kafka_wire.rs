//! A bare Kafka protocol connection for tests that must see exact bytes:
//! requests written back to back on one socket (pipelining), old versions,
//! fields no client library exposes.
//!
//! Requests are encoded with the same codec the broker decodes with, so a
//! test states what it sends as typed messages and reads typed answers;
//! the old versions the codec dropped go through `runnel_kafka::legacy`
//! ([`KafkaConn::call_old`]).

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use runnel_kafka::legacy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for one answer before it fails.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// One request as it goes on the wire: size prefix, header, body.
pub fn request_frame<R: Request>(version: i16, correlation_id: i32, body: &R) -> Bytes {
    frame_with(
        R::KEY,
        version,
        R::header_version(version),
        correlation_id,
        "runnel-testkit",
        |out| {
            body.encode(out, version)
                .expect("the test's request fits its version")
        },
    )
}

/// A request frame: size prefix, a header of `header_version`, and the body
/// `write_body` appends.
fn frame_with(
    api_key: i16,
    version: i16,
    header_version: i16,
    correlation_id: i32,
    client_id: &'static str,
    write_body: impl FnOnce(&mut BytesMut),
) -> Bytes {
    let mut header = RequestHeader::default();
    header.request_api_key = api_key;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str(client_id));
    let mut out = BytesMut::new();
    out.put_i32(0);
    header
        .encode(&mut out, header_version)
        .expect("a request header encodes");
    write_body(&mut out);
    let size = i32::try_from(out.len() - 4).expect("a test request under 2 GiB");
    out[..4].copy_from_slice(&size.to_be_bytes());
    out.freeze()
}

/// A raw Kafka connection to one broker's Kafka listener.
#[derive(Debug)]
pub struct KafkaConn {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl KafkaConn {
    /// Connects to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> KafkaConn {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the Kafka listener at {addr}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        KafkaConn {
            stream,
            next_correlation_id: 1,
        }
    }

    /// Splits the connection, for tests that write and read at once.
    pub fn into_split(
        self,
    ) -> (
        tokio::net::tcp::OwnedReadHalf,
        tokio::net::tcp::OwnedWriteHalf,
    ) {
        self.stream.into_split()
    }

    /// Writes `request` at `version` without waiting; returns its correlation id.
    pub async fn send<R: Request>(&mut self, version: i16, request: &R) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id += 1;
        self.stream
            .write_all(&request_frame(version, id, request))
            .await
            .expect("the broker takes the request");
        id
    }

    /// Reads the next answer, which must be the one to `correlation_id`, an
    /// `R` answered at `version`.
    pub async fn receive<R: Request>(&mut self, version: i16, correlation_id: i32) -> R::Response {
        let mut frame = read_frame(&mut self.stream)
            .await
            .expect("an answer, not a closed connection");
        decode_response::<R>(&mut frame, version, correlation_id)
    }

    /// Sends an old-version request (Produce v0–2, Fetch v0–3,
    /// OffsetCommit v0–1, CreateTopics v0–1, DescribeConfigs v0) and waits
    /// for its answer.
    pub async fn call_old(
        &mut self,
        api: ApiKey,
        version: i16,
        request: &RequestKind,
    ) -> ResponseKind {
        let id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let out = frame_with(
            api as i16,
            version,
            api.request_header_version(version),
            id,
            "runnel-testkit-old",
            |out| legacy::encode_request(version, request, out).expect("an old request encodes"),
        );
        self.stream
            .write_all(&out)
            .await
            .expect("the broker takes the request");
        let mut frame = read_frame(&mut self.stream)
            .await
            .expect("an answer, not a closed connection");
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
            .expect("a response header");
        assert_eq!(header.correlation_id, id, "the answer to another request");
        let response =
            legacy::decode_response(api, version, &mut frame).expect("a well-formed old answer");
        assert_eq!(frame.remaining(), 0, "bytes left after the response");
        response
    }

    /// Sends `request` and waits for its answer.
    pub async fn call<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        let id = self.send(version, request).await;
        self.receive::<R>(version, id).await
    }

    /// Sends `request` and waits for its answer; `None` when the broker has
    /// closed the connection instead.
    pub async fn try_call<R: Request>(&mut self, version: i16, request: &R) -> Option<R::Response> {
        let id = self.next_correlation_id;
        self.next_correlation_id += 1;
        self.stream
            .write_all(&request_frame(version, id, request))
            .await
            .ok()?;
        let mut frame = read_frame(&mut self.stream).await?;
        Some(decode_response::<R>(&mut frame, version, id))
    }
}

/// Decodes one answer frame (without its size prefix), checking it answers
/// `correlation_id` and that nothing is left over.
pub fn decode_response<R: Request>(
    frame: &mut Bytes,
    version: i16,
    correlation_id: i32,
) -> R::Response {
    let header = ResponseHeader::decode(frame, R::Response::header_version(version))
        .expect("a response header");
    assert_eq!(
        header.correlation_id, correlation_id,
        "the answer to request {correlation_id} came out of order"
    );
    let response = R::Response::decode(frame, version).expect("a well-formed response");
    assert_eq!(frame.remaining(), 0, "bytes left after the response");
    response
}

/// Reads one frame's body; `None` when the broker closed the connection.
/// Panics if nothing arrives within 30 s.
pub async fn read_frame<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<Bytes> {
    let read = async {
        let size = stream.read_i32().await.ok()?;
        let mut body = vec![0; usize::try_from(size).ok()?];
        stream.read_exact(&mut body).await.ok()?;
        Some(Bytes::from(body))
    };
    tokio::time::timeout(ANSWER_WAIT, read)
        .await
        .expect("the broker neither answered nor closed the connection")
}

/// One AlterClientQuotas entry: `key` set to `value` for the entity whose
/// only part is `entity_type` (`user`, `client-id`) named `name`.
pub fn quota_entry(
    entity_type: &'static str,
    name: &str,
    key: &'static str,
    value: f64,
) -> kafka_protocol::messages::alter_client_quotas_request::EntryData {
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
    EntryData::default()
        .with_entity(vec![
            EntityData::default()
                .with_entity_type(StrBytes::from_static_str(entity_type))
                .with_entity_name(Some(StrBytes::from_string(name.to_owned()))),
        ])
        .with_ops(vec![
            OpData::default()
                .with_key(StrBytes::from_static_str(key))
                .with_value(value),
        ])
}
