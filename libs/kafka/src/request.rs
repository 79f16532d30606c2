//! One frame into a typed request, and a typed response into a frame.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::legacy;
use crate::versions::{UNSUPPORTED_VERSION, Versions};

/// A decoded request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its header (correlation id, client id).
    pub header: RequestHeader,
    /// Which API.
    pub api_key: ApiKey,
    /// Which version of it.
    pub version: i16,
    /// The request itself.
    pub body: RequestKind,
}

/// Why a frame is not a request this broker serves.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a well-formed request: the connection is closed, as Kafka does.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// An API key no Kafka version defines: the connection is closed.
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    /// A known API at a version (or an API) this broker does not serve.
    /// ApiVersions is answered with UNSUPPORTED_VERSION (see
    /// [`unsupported_api_versions`]); anything else closes the connection.
    #[error("{api_key:?} v{version} is not supported")]
    UnsupportedVersion {
        /// The API.
        api_key: ApiKey,
        /// The version asked for.
        version: i16,
        /// The request's correlation id, for the answer.
        correlation_id: i32,
    },
}

/// Decodes one frame's body.
pub fn decode(frame: Bytes, versions: &Versions) -> Result<Request, DecodeError> {
    // api_key (2), api_version (2), correlation_id (4): checked before the codec peeks at them.
    if frame.len() < 8 {
        return Err(DecodeError::Malformed(format!(
            "{} bytes is too short for a request header",
            frame.len()
        )));
    }
    let mut peek = frame.slice(0..8);
    let key = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let api_key = ApiKey::try_from(key).map_err(|_| DecodeError::UnknownApiKey(key))?;
    if !versions.supports(api_key, version) {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            version,
            correlation_id,
        });
    }
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf, api_key.request_header_version(version))
        .map_err(|e| DecodeError::Malformed(format!("header: {e}")))?;
    let body = if legacy::handles(api_key, version) {
        legacy::decode_request(api_key, version, &mut buf)
            .map_err(|e| DecodeError::Malformed(format!("{api_key:?} v{version}: {e}")))?
    } else {
        RequestKind::decode(api_key, &mut buf, version)
            .map_err(|e| DecodeError::Malformed(format!("{api_key:?} v{version}: {e}")))?
    };
    if buf.has_remaining() {
        // Kafka's own parser ignores what follows a complete request, and
        // real clients send such bytes (librdkafka 2.12's Metadata v12
        // carries three); refusing them would cut those clients off.
        tracing::debug!(
            bytes = buf.remaining(),
            "ignoring bytes after the end of {api_key:?} v{version}"
        );
    }
    Ok(Request {
        header,
        api_key,
        version,
        body,
    })
}

/// Why a response could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the {api_key:?} v{version} response: {message}")]
pub struct EncodeError {
    /// The API.
    pub api_key: ApiKey,
    /// The version.
    pub version: i16,
    /// What the codec said.
    pub message: String,
}

/// Encodes a response (header and body) into a frame body.
pub fn encode(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::new();
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut out, api_key.response_header_version(version))
        .map_err(|e| fail_any(api_key, version, e))?;
    if legacy::handles(api_key, version) {
        legacy::encode_response(version, body, &mut out)
            .map_err(|e| fail_any(api_key, version, e))?;
    } else {
        body.encode(&mut out, version)
            .map_err(|e| fail_any(api_key, version, e))?;
    }
    Ok(out.freeze())
}

fn fail_any(api_key: ApiKey, version: i16, e: impl std::fmt::Display) -> EncodeError {
    EncodeError {
        api_key,
        version,
        message: e.to_string(),
    }
}

/// Kafka's answer to an ApiVersions request at a version it does not
/// serve: a v0 response with UNSUPPORTED_VERSION and the versions it does
/// serve, so the client can pick one.
pub fn unsupported_api_versions(
    correlation_id: i32,
    versions: &Versions,
) -> Result<Bytes, EncodeError> {
    encode(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        &ResponseKind::ApiVersions(versions.response(UNSUPPORTED_VERSION)),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    fn versions() -> Versions {
        Versions::new(&[(ApiKey::ApiVersions, 0, 4), (ApiKey::Metadata, 0, 12)])
    }

    fn frame(api_key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut header = RequestHeader::default();
        header.request_api_key = api_key as i16;
        header.request_api_version = version;
        header.correlation_id = 42;
        header.client_id = Some(StrBytes::from_static_str("test"));
        let mut out = BytesMut::new();
        header
            .encode(&mut out, api_key.request_header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        out.freeze()
    }

    #[test]
    fn requests_decode_at_flexible_and_old_versions() {
        for version in [0, 3, 4] {
            let mut req = ApiVersionsRequest::default();
            if version >= 3 {
                req.client_software_name = StrBytes::from_static_str("librdkafka");
                req.client_software_version = StrBytes::from_static_str("2.6.0");
            }
            let r = decode(frame(ApiKey::ApiVersions, version, &req), &versions()).unwrap();
            assert_eq!(r.header.correlation_id, 42);
            assert_eq!(r.version, version);
            assert!(matches!(r.body, RequestKind::ApiVersions(_)));
        }
        let r = decode(
            frame(ApiKey::Metadata, 12, &MetadataRequest::default()),
            &versions(),
        )
        .unwrap();
        assert_eq!(r.api_key, ApiKey::Metadata);
    }

    #[test]
    fn bad_frames_are_told_apart() {
        let good = frame(ApiKey::Metadata, 9, &MetadataRequest::default());
        assert!(matches!(
            decode(good.slice(0..5), &versions()),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(good.slice(0..good.len() - 1), &versions()),
            Err(DecodeError::Malformed(_))
        ));
        // Garbage where the body should be.
        let header_len = good.len() - MetadataRequest::default().compute_size(9).unwrap();
        let mut garbage = BytesMut::from(&good[..header_len]);
        garbage.extend_from_slice(&[0xff; 9]);
        assert!(matches!(
            decode(garbage.freeze(), &versions()),
            Err(DecodeError::Malformed(_))
        ));
        // Bytes after a complete body are ignored, as Kafka does.
        let mut trailing = BytesMut::from(&good[..]);
        trailing.extend_from_slice(b"\x01\x00\x00");
        assert!(decode(trailing.freeze(), &versions()).is_ok());
        let unknown = Bytes::from_static(&[0x7f, 0x00, 0, 1, 0, 0, 0, 7]);
        assert!(matches!(
            decode(unknown, &versions()),
            Err(DecodeError::UnknownApiKey(0x7f00))
        ));
        let produce = Bytes::from_static(&[0, 0, 0, 9, 0, 0, 0, 7, 0, 0]);
        assert!(matches!(
            decode(produce, &versions()),
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::Produce,
                version: 9,
                correlation_id: 7
            })
        ));
    }

    #[test]
    fn an_impossible_array_length_is_malformed_not_an_abort() {
        // Found by the request_decode fuzz target against the published
        // codec: Metadata v1 claiming 1,342,177,515 topics in 18 bytes made
        // it reserve ~90 GB up front and abort.
        let frame = Bytes::from_static(&[
            0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0b, 0x00, 0x00, 0x50, 0x00, 0x00, 0xeb,
            0x01, 0x00, 0x2e, 0x00,
        ]);
        let versions = Versions::new(&[(ApiKey::Metadata, 0, 12)]);
        assert!(matches!(
            decode(frame, &versions),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn an_unsupported_api_versions_is_answered_in_v0() {
        let bytes = unsupported_api_versions(7, &versions()).unwrap();
        let mut buf = bytes;
        let header = ResponseHeader::decode(&mut buf, 0).unwrap();
        assert_eq!(header.correlation_id, 7);
        let r = ApiVersionsResponse::decode(&mut buf, 0).unwrap();
        assert_eq!(r.error_code, UNSUPPORTED_VERSION);
        assert_eq!(r.api_keys.len(), 2);
    }
}
