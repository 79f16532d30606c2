//! The old versions Kafka 3.9 still served and the codec no longer knows
//! (Kafka 4.0 dropped them, KIP-896): Produce v0–2, Fetch v0–3,
//! OffsetCommit v0–1, CreateTopics v0–1 and DescribeConfigs v0, so clients
//! pinned to them keep working.
//!
//! Each is read into the codec's current request type (the fields these
//! versions lack take their defaults, as Kafka's own parser does) and each
//! answer is written from the current response type, keeping only what
//! the old version carries. The records of Produce v0–2 and Fetch v0–3 are
//! whatever message format the client sent or will read: converting them
//! (`runnel_records::batch::legacy`) is the broker's business. The client's
//! side (requests out, answers in) is here too, for tests and fuzzing.
//!
//! All of these versions are non-flexible: big-endian integers, `int16`
//! string lengths, `int32` byte and array lengths, -1 for null.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, FetchRequest, FetchResponse, OffsetCommitRequest,
    OffsetCommitResponse, ProduceRequest, ProduceResponse, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;

/// The oldest version served of each API that has versions here.
const OLDEST: [(ApiKey, i16); 5] = [
    (ApiKey::Produce, 0),
    (ApiKey::Fetch, 0),
    (ApiKey::OffsetCommit, 0),
    (ApiKey::CreateTopics, 0),
    (ApiKey::DescribeConfigs, 0),
];

/// DescribeConfigs' config source of a value nobody set (`DEFAULT_CONFIG`).
const DEFAULT_CONFIG: i8 = 5;

/// Why old-version bytes could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LegacyError(String);

fn err<T>(what: impl Into<String>) -> Result<T, LegacyError> {
    Err(LegacyError(what.into()))
}

/// The oldest version of `api` served here, below the codec's own range.
pub fn oldest_version(api: ApiKey) -> Option<i16> {
    OLDEST.iter().find(|(k, _)| *k == api).map(|(_, v)| *v)
}

/// Whether `version` of `api` is one this module reads and writes.
pub fn handles(api: ApiKey, version: i16) -> bool {
    oldest_version(api).is_some_and(|oldest| version >= oldest)
        && version < api.valid_versions().min
}

/// Reads an old-version request body.
pub fn decode_request(
    api: ApiKey,
    version: i16,
    buf: &mut Bytes,
) -> Result<RequestKind, LegacyError> {
    let r = &mut Reader(buf);
    Ok(match api {
        ApiKey::Produce => {
            let mut req = ProduceRequest::default();
            req.acks = r.i16()?;
            req.timeout_ms = r.i32()?;
            req.topic_data = r.array(|r| {
                let mut t = TopicProduceData::default();
                t.name = r.string()?.into();
                t.partition_data = r.array(|r| {
                    let mut p = PartitionProduceData::default();
                    p.index = r.i32()?;
                    p.records = r.nullable_bytes()?;
                    Ok(p)
                })?;
                Ok(t)
            })?;
            RequestKind::Produce(req)
        }
        ApiKey::Fetch => {
            let mut req = FetchRequest::default();
            req.replica_id = r.i32()?.into();
            req.max_wait_ms = r.i32()?;
            req.min_bytes = r.i32()?;
            if version >= 3 {
                req.max_bytes = r.i32()?;
            }
            req.topics = r.array(|r| {
                let mut t = FetchTopic::default();
                t.topic = r.string()?.into();
                t.partitions = r.array(|r| {
                    let mut p = FetchPartition::default();
                    p.partition = r.i32()?;
                    p.fetch_offset = r.i64()?;
                    p.partition_max_bytes = r.i32()?;
                    Ok(p)
                })?;
                Ok(t)
            })?;
            RequestKind::Fetch(req)
        }
        ApiKey::OffsetCommit => {
            let mut req = OffsetCommitRequest::default();
            req.group_id = r.string()?.into();
            if version >= 1 {
                req.generation_id_or_member_epoch = r.i32()?;
                req.member_id = r.string()?;
            }
            req.topics = r.array(|r| {
                let mut t = OffsetCommitRequestTopic::default();
                t.name = r.string()?.into();
                t.partitions = r.array(|r| {
                    let mut p = OffsetCommitRequestPartition::default();
                    p.partition_index = r.i32()?;
                    p.committed_offset = r.i64()?;
                    if version == 1 {
                        // commit_timestamp: Kafka 4 keeps no commit-time
                        // expiry, nor does Runnel (offsets.retention.minutes).
                        r.i64()?;
                    }
                    p.committed_metadata = r.nullable_string()?;
                    Ok(p)
                })?;
                Ok(t)
            })?;
            RequestKind::OffsetCommit(req)
        }
        ApiKey::CreateTopics => {
            let mut req = CreateTopicsRequest::default();
            req.topics = r.array(|r| {
                let mut t = CreatableTopic::default();
                t.name = r.string()?.into();
                t.num_partitions = r.i32()?;
                t.replication_factor = r.i16()?;
                t.assignments = r.array(|r| {
                    let mut a = CreatableReplicaAssignment::default();
                    a.partition_index = r.i32()?;
                    a.broker_ids = r.array(|r| Ok(r.i32()?.into()))?;
                    Ok(a)
                })?;
                t.configs = r.array(|r| {
                    let mut c = CreatableTopicConfig::default();
                    c.name = r.string()?;
                    c.value = r.nullable_string()?;
                    Ok(c)
                })?;
                Ok(t)
            })?;
            req.timeout_ms = r.i32()?;
            if version >= 1 {
                req.validate_only = r.bool()?;
            }
            RequestKind::CreateTopics(req)
        }
        ApiKey::DescribeConfigs => {
            let mut req = DescribeConfigsRequest::default();
            req.resources = r.array(|r| {
                let mut res = DescribeConfigsResource::default();
                res.resource_type = r.i8()?;
                res.resource_name = r.string()?;
                res.configuration_keys = r.nullable_array(|r| r.string())?;
                Ok(res)
            })?;
            RequestKind::DescribeConfigs(req)
        }
        _ => {
            return err(format!(
                "{api:?} v{version} is not an old version served here"
            ));
        }
    })
}

/// Writes an old-version answer body.
pub fn encode_response(
    version: i16,
    body: &ResponseKind,
    out: &mut BytesMut,
) -> Result<(), LegacyError> {
    let w = &mut Writer(out);
    match body {
        ResponseKind::Produce(res) => {
            w.array(&res.responses, |w, t: &TopicProduceResponse| {
                w.string(&t.name.0)?;
                w.array(&t.partition_responses, |w, p: &PartitionProduceResponse| {
                    w.i32(p.index);
                    w.i16(p.error_code);
                    w.i64(p.base_offset);
                    if version >= 2 {
                        w.i64(p.log_append_time_ms);
                    }
                    Ok(())
                })
            })?;
            if version >= 1 {
                w.i32(res.throttle_time_ms);
            }
        }
        ResponseKind::Fetch(res) => {
            if version >= 1 {
                w.i32(res.throttle_time_ms);
            }
            w.array(&res.responses, |w, t: &FetchableTopicResponse| {
                w.string(&t.topic.0)?;
                w.array(&t.partitions, |w, p: &PartitionData| {
                    w.i32(p.partition_index);
                    w.i16(p.error_code);
                    w.i64(p.high_watermark);
                    w.nullable_bytes(p.records.as_ref())
                })
            })?;
        }
        ResponseKind::OffsetCommit(res) => {
            w.array(&res.topics, |w, t: &OffsetCommitResponseTopic| {
                w.string(&t.name.0)?;
                w.array(&t.partitions, |w, p: &OffsetCommitResponsePartition| {
                    w.i32(p.partition_index);
                    w.i16(p.error_code);
                    Ok(())
                })
            })?;
        }
        ResponseKind::CreateTopics(res) => {
            w.array(&res.topics, |w, t: &CreatableTopicResult| {
                w.string(&t.name.0)?;
                w.i16(t.error_code);
                if version >= 1 {
                    w.nullable_string(t.error_message.as_ref())?;
                }
                Ok(())
            })?;
        }
        ResponseKind::DescribeConfigs(res) => {
            w.i32(res.throttle_time_ms);
            w.array(&res.results, |w, r: &DescribeConfigsResult| {
                w.i16(r.error_code);
                w.nullable_string(r.error_message.as_ref())?;
                w.i8(r.resource_type);
                w.string(&r.resource_name)?;
                w.array(&r.configs, |w, c: &DescribeConfigsResourceResult| {
                    w.string(&c.name)?;
                    w.nullable_string(c.value.as_ref())?;
                    w.bool(c.read_only);
                    // v0 said only whether a value is the default; the
                    // config source replaced it in v1.
                    w.bool(c.config_source == DEFAULT_CONFIG);
                    w.bool(c.is_sensitive);
                    Ok(())
                })
            })?;
        }
        _ => return err("not an answer of an old version served here"),
    }
    Ok(())
}

/// Writes an old-version request body, as an old client would.
pub fn encode_request(
    version: i16,
    body: &RequestKind,
    out: &mut BytesMut,
) -> Result<(), LegacyError> {
    let w = &mut Writer(out);
    match body {
        RequestKind::Produce(req) => {
            w.i16(req.acks);
            w.i32(req.timeout_ms);
            w.array(&req.topic_data, |w, t: &TopicProduceData| {
                w.string(&t.name.0)?;
                w.array(&t.partition_data, |w, p: &PartitionProduceData| {
                    w.i32(p.index);
                    w.nullable_bytes(p.records.as_ref())
                })
            })?;
        }
        RequestKind::Fetch(req) => {
            w.i32(req.replica_id.0);
            w.i32(req.max_wait_ms);
            w.i32(req.min_bytes);
            if version >= 3 {
                w.i32(req.max_bytes);
            }
            w.array(&req.topics, |w, t: &FetchTopic| {
                w.string(&t.topic.0)?;
                w.array(&t.partitions, |w, p: &FetchPartition| {
                    w.i32(p.partition);
                    w.i64(p.fetch_offset);
                    w.i32(p.partition_max_bytes);
                    Ok(())
                })
            })?;
        }
        RequestKind::OffsetCommit(req) => {
            w.string(&req.group_id.0)?;
            if version >= 1 {
                w.i32(req.generation_id_or_member_epoch);
                w.string(&req.member_id)?;
            }
            w.array(&req.topics, |w, t: &OffsetCommitRequestTopic| {
                w.string(&t.name.0)?;
                w.array(&t.partitions, |w, p: &OffsetCommitRequestPartition| {
                    w.i32(p.partition_index);
                    w.i64(p.committed_offset);
                    if version == 1 {
                        w.i64(-1);
                    }
                    w.nullable_string(p.committed_metadata.as_ref())
                })
            })?;
        }
        RequestKind::CreateTopics(req) => {
            w.array(&req.topics, |w, t: &CreatableTopic| {
                w.string(&t.name.0)?;
                w.i32(t.num_partitions);
                w.i16(t.replication_factor);
                w.array(&t.assignments, |w, a: &CreatableReplicaAssignment| {
                    w.i32(a.partition_index);
                    w.array(&a.broker_ids, |w, b| {
                        w.i32(b.0);
                        Ok(())
                    })
                })?;
                w.array(&t.configs, |w, c: &CreatableTopicConfig| {
                    w.string(&c.name)?;
                    w.nullable_string(c.value.as_ref())
                })
            })?;
            w.i32(req.timeout_ms);
            if version >= 1 {
                w.bool(req.validate_only);
            }
        }
        RequestKind::DescribeConfigs(req) => {
            w.array(&req.resources, |w, r: &DescribeConfigsResource| {
                w.i8(r.resource_type);
                w.string(&r.resource_name)?;
                match &r.configuration_keys {
                    None => {
                        w.i32(-1);
                        Ok(())
                    }
                    Some(keys) => w.array(keys, |w, k| w.string(k)),
                }
            })?;
        }
        _ => return err("not a request of an old version served here"),
    }
    Ok(())
}

/// Reads an old-version answer body, as an old client would.
pub fn decode_response(
    api: ApiKey,
    version: i16,
    buf: &mut Bytes,
) -> Result<ResponseKind, LegacyError> {
    let r = &mut Reader(buf);
    Ok(match api {
        ApiKey::Produce => {
            let mut res = ProduceResponse::default();
            res.responses = r.array(|r| {
                let mut t = TopicProduceResponse::default();
                t.name = r.string()?.into();
                t.partition_responses = r.array(|r| {
                    let mut p = PartitionProduceResponse::default();
                    p.index = r.i32()?;
                    p.error_code = r.i16()?;
                    p.base_offset = r.i64()?;
                    if version >= 2 {
                        p.log_append_time_ms = r.i64()?;
                    }
                    Ok(p)
                })?;
                Ok(t)
            })?;
            if version >= 1 {
                res.throttle_time_ms = r.i32()?;
            }
            ResponseKind::Produce(res)
        }
        ApiKey::Fetch => {
            let mut res = FetchResponse::default();
            if version >= 1 {
                res.throttle_time_ms = r.i32()?;
            }
            res.responses = r.array(|r| {
                let mut t = FetchableTopicResponse::default();
                t.topic = r.string()?.into();
                t.partitions = r.array(|r| {
                    let mut p = PartitionData::default();
                    p.partition_index = r.i32()?;
                    p.error_code = r.i16()?;
                    p.high_watermark = r.i64()?;
                    p.records = r.nullable_bytes()?;
                    Ok(p)
                })?;
                Ok(t)
            })?;
            ResponseKind::Fetch(res)
        }
        ApiKey::OffsetCommit => {
            let mut res = OffsetCommitResponse::default();
            res.topics = r.array(|r| {
                let mut t = OffsetCommitResponseTopic::default();
                t.name = r.string()?.into();
                t.partitions = r.array(|r| {
                    let mut p = OffsetCommitResponsePartition::default();
                    p.partition_index = r.i32()?;
                    p.error_code = r.i16()?;
                    Ok(p)
                })?;
                Ok(t)
            })?;
            ResponseKind::OffsetCommit(res)
        }
        ApiKey::CreateTopics => {
            let mut res = CreateTopicsResponse::default();
            res.topics = r.array(|r| {
                let mut t = CreatableTopicResult::default();
                t.name = r.string()?.into();
                t.error_code = r.i16()?;
                if version >= 1 {
                    t.error_message = r.nullable_string()?;
                }
                Ok(t)
            })?;
            ResponseKind::CreateTopics(res)
        }
        ApiKey::DescribeConfigs => {
            let mut res = DescribeConfigsResponse::default();
            res.throttle_time_ms = r.i32()?;
            res.results = r.array(|r| {
                let mut out = DescribeConfigsResult::default();
                out.error_code = r.i16()?;
                out.error_message = r.nullable_string()?;
                out.resource_type = r.i8()?;
                out.resource_name = r.string()?;
                out.configs = r.array(|r| {
                    let mut c = DescribeConfigsResourceResult::default();
                    c.name = r.string()?;
                    c.value = r.nullable_string()?;
                    c.read_only = r.bool()?;
                    if r.bool()? {
                        c.config_source = DEFAULT_CONFIG;
                    }
                    c.is_sensitive = r.bool()?;
                    Ok(c)
                })?;
                Ok(out)
            })?;
            ResponseKind::DescribeConfigs(res)
        }
        _ => {
            return err(format!(
                "{api:?} v{version} is not an old version served here"
            ));
        }
    })
}

struct Reader<'a>(&'a mut Bytes);

impl Reader<'_> {
    fn need(&self, n: usize, what: &str) -> Result<(), LegacyError> {
        if self.0.remaining() < n {
            return err(format!(
                "{what}: {n} bytes needed, {} left",
                self.0.remaining()
            ));
        }
        Ok(())
    }

    fn i8(&mut self) -> Result<i8, LegacyError> {
        self.need(1, "int8")?;
        Ok(self.0.get_i8())
    }

    fn bool(&mut self) -> Result<bool, LegacyError> {
        Ok(self.i8()? != 0)
    }

    fn i16(&mut self) -> Result<i16, LegacyError> {
        self.need(2, "int16")?;
        Ok(self.0.get_i16())
    }

    fn i32(&mut self) -> Result<i32, LegacyError> {
        self.need(4, "int32")?;
        Ok(self.0.get_i32())
    }

    fn i64(&mut self) -> Result<i64, LegacyError> {
        self.need(8, "int64")?;
        Ok(self.0.get_i64())
    }

    fn nullable_string(&mut self) -> Result<Option<StrBytes>, LegacyError> {
        let len = self.i16()?;
        let Ok(len) = usize::try_from(len) else {
            return if len == -1 {
                Ok(None)
            } else {
                err(format!("string length {len}"))
            };
        };
        self.need(len, "string")?;
        let bytes = self.0.split_to(len);
        StrBytes::from_utf8(bytes)
            .map(Some)
            .map_err(|e| LegacyError(format!("string is not UTF-8: {e}")))
    }

    fn string(&mut self) -> Result<StrBytes, LegacyError> {
        self.nullable_string()?
            .ok_or_else(|| LegacyError("null where a string is required".into()))
    }

    fn nullable_bytes(&mut self) -> Result<Option<Bytes>, LegacyError> {
        let len = self.i32()?;
        let Ok(len) = usize::try_from(len) else {
            return if len == -1 {
                Ok(None)
            } else {
                err(format!("bytes length {len}"))
            };
        };
        self.need(len, "bytes")?;
        Ok(Some(self.0.split_to(len)))
    }

    fn nullable_array<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, LegacyError>,
    ) -> Result<Option<Vec<T>>, LegacyError> {
        let count = self.i32()?;
        let Ok(count) = usize::try_from(count) else {
            return if count == -1 {
                Ok(None)
            } else {
                err(format!("array length {count}"))
            };
        };
        // Every element takes at least a byte: a count past the bytes left
        // is a lie, refused before anything is allocated for it.
        self.need(count, "array")?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(item(self)?);
        }
        Ok(Some(out))
    }

    fn array<T>(
        &mut self,
        item: impl FnMut(&mut Self) -> Result<T, LegacyError>,
    ) -> Result<Vec<T>, LegacyError> {
        self.nullable_array(item)?
            .ok_or_else(|| LegacyError("null where an array is required".into()))
    }
}

struct Writer<'a>(&'a mut BytesMut);

impl Writer<'_> {
    fn i8(&mut self, v: i8) {
        self.0.put_i8(v);
    }

    fn bool(&mut self, v: bool) {
        self.0.put_i8(i8::from(v));
    }

    fn i16(&mut self, v: i16) {
        self.0.put_i16(v);
    }

    fn i32(&mut self, v: i32) {
        self.0.put_i32(v);
    }

    fn i64(&mut self, v: i64) {
        self.0.put_i64(v);
    }

    fn string(&mut self, s: &str) -> Result<(), LegacyError> {
        let len = i16::try_from(s.len())
            .map_err(|_| LegacyError(format!("string of {} bytes", s.len())))?;
        self.0.put_i16(len);
        self.0.put_slice(s.as_bytes());
        Ok(())
    }

    fn nullable_string(&mut self, s: Option<&StrBytes>) -> Result<(), LegacyError> {
        match s {
            None => {
                self.0.put_i16(-1);
                Ok(())
            }
            Some(s) => self.string(s),
        }
    }

    fn nullable_bytes(&mut self, b: Option<&Bytes>) -> Result<(), LegacyError> {
        match b {
            None => self.0.put_i32(-1),
            Some(b) => {
                let len = i32::try_from(b.len())
                    .map_err(|_| LegacyError(format!("{} bytes", b.len())))?;
                self.0.put_i32(len);
                self.0.put_slice(b);
            }
        }
        Ok(())
    }

    fn array<T>(
        &mut self,
        items: &[T],
        mut item: impl FnMut(&mut Self, &T) -> Result<(), LegacyError>,
    ) -> Result<(), LegacyError> {
        let len = i32::try_from(items.len())
            .map_err(|_| LegacyError(format!("{} array elements", items.len())))?;
        self.0.put_i32(len);
        for i in items {
            item(self, i)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use kafka_protocol::messages::BrokerId;

    use super::*;

    fn s(v: &'static str) -> StrBytes {
        StrBytes::from_static_str(v)
    }

    fn request_round_trip(api: ApiKey, version: i16, req: &RequestKind) -> RequestKind {
        let mut out = BytesMut::new();
        encode_request(version, req, &mut out).unwrap();
        let mut bytes = out.freeze();
        let back = decode_request(api, version, &mut bytes).unwrap();
        assert!(bytes.is_empty(), "{api:?} v{version} left bytes");
        back
    }

    fn response_round_trip(api: ApiKey, version: i16, res: &ResponseKind) -> ResponseKind {
        let mut out = BytesMut::new();
        encode_response(version, res, &mut out).unwrap();
        let mut bytes = out.freeze();
        let back = decode_response(api, version, &mut bytes).unwrap();
        assert!(bytes.is_empty(), "{api:?} v{version} left bytes");
        back
    }

    #[test]
    fn only_the_versions_below_the_codec_are_handled_here() {
        assert!(handles(ApiKey::Produce, 0) && handles(ApiKey::Produce, 2));
        assert!(!handles(ApiKey::Produce, 3));
        assert!(handles(ApiKey::Fetch, 3) && !handles(ApiKey::Fetch, 4));
        assert!(handles(ApiKey::OffsetCommit, 1) && !handles(ApiKey::OffsetCommit, 2));
        assert!(handles(ApiKey::CreateTopics, 1) && !handles(ApiKey::CreateTopics, 2));
        assert!(handles(ApiKey::DescribeConfigs, 0) && !handles(ApiKey::DescribeConfigs, 1));
        assert!(
            !handles(ApiKey::Metadata, 0),
            "the codec serves Metadata v0 itself"
        );
    }

    #[test]
    fn produce_v0_reads_from_kafkas_layout() {
        // acks -1, timeout 1500, one topic "t" with partition 2 holding 3 bytes.
        let mut wire = Bytes::from_static(&[
            0xff, 0xff, 0, 0, 0x05, 0xdc, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0,
            3, 7, 8, 9,
        ]);
        let RequestKind::Produce(req) = decode_request(ApiKey::Produce, 0, &mut wire).unwrap()
        else {
            panic!("not a produce")
        };
        assert_eq!((req.acks, req.timeout_ms), (-1, 1500));
        assert_eq!(req.transactional_id, None);
        assert_eq!(&*req.topic_data[0].name.0, "t");
        let p = &req.topic_data[0].partition_data[0];
        assert_eq!(p.index, 2);
        assert_eq!(p.records.as_deref(), Some(&[7u8, 8, 9][..]));
    }

    #[test]
    fn requests_round_trip_at_every_old_version() {
        for version in 0..=2 {
            let mut req = ProduceRequest::default();
            req.acks = 1;
            req.timeout_ms = 30_000;
            let mut p = PartitionProduceData::default();
            p.index = 3;
            p.records = Some(Bytes::from_static(b"records"));
            let mut t = TopicProduceData::default();
            t.name = s("topic").into();
            t.partition_data = vec![p];
            req.topic_data = vec![t];
            let back =
                request_round_trip(ApiKey::Produce, version, &RequestKind::Produce(req.clone()));
            assert_eq!(back, RequestKind::Produce(req));
        }
        for version in 0..=3 {
            let mut req = FetchRequest::default();
            req.max_wait_ms = 500;
            req.min_bytes = 1;
            if version == 3 {
                req.max_bytes = 1 << 20;
            }
            let mut p = FetchPartition::default();
            p.partition = 1;
            p.fetch_offset = 42;
            p.partition_max_bytes = 65_536;
            let mut t = FetchTopic::default();
            t.topic = s("topic").into();
            t.partitions = vec![p];
            req.topics = vec![t];
            let back = request_round_trip(ApiKey::Fetch, version, &RequestKind::Fetch(req.clone()));
            assert_eq!(back, RequestKind::Fetch(req));
        }
        for version in 0..=1 {
            let mut req = OffsetCommitRequest::default();
            req.group_id = s("group").into();
            if version == 1 {
                req.generation_id_or_member_epoch = 4;
                req.member_id = s("member-1");
            }
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = 0;
            p.committed_offset = 99;
            p.committed_metadata = Some(s("meta"));
            let mut t = OffsetCommitRequestTopic::default();
            t.name = s("topic").into();
            t.partitions = vec![p];
            req.topics = vec![t];
            let kind = RequestKind::OffsetCommit(req);
            assert_eq!(
                request_round_trip(ApiKey::OffsetCommit, version, &kind),
                kind
            );
        }
        for version in 0..=1 {
            let mut req = CreateTopicsRequest::default();
            let mut a = CreatableReplicaAssignment::default();
            a.broker_ids = vec![BrokerId(1), BrokerId(2)];
            let mut c = CreatableTopicConfig::default();
            c.name = s("cleanup.policy");
            c.value = Some(s("compact"));
            let mut t = CreatableTopic::default();
            t.name = s("topic").into();
            t.num_partitions = -1;
            t.replication_factor = -1;
            t.assignments = vec![a];
            t.configs = vec![c];
            req.topics = vec![t];
            req.timeout_ms = 5_000;
            req.validate_only = version == 1;
            let kind = RequestKind::CreateTopics(req);
            assert_eq!(
                request_round_trip(ApiKey::CreateTopics, version, &kind),
                kind
            );
        }
        let mut req = DescribeConfigsRequest::default();
        let mut all = DescribeConfigsResource::default();
        all.resource_type = 2;
        all.resource_name = s("topic");
        let mut some = all.clone();
        some.configuration_keys = Some(vec![s("retention.ms")]);
        req.resources = vec![all, some];
        let kind = RequestKind::DescribeConfigs(req);
        assert_eq!(request_round_trip(ApiKey::DescribeConfigs, 0, &kind), kind);
    }

    #[test]
    fn answers_keep_what_each_old_version_carries() {
        let mut p = PartitionProduceResponse::default();
        p.index = 1;
        p.error_code = 0;
        p.base_offset = 10;
        p.log_append_time_ms = 1_234;
        p.log_start_offset = 5;
        let mut t = TopicProduceResponse::default();
        t.name = s("topic").into();
        t.partition_responses = vec![p];
        let mut res = ProduceResponse::default();
        res.responses = vec![t];
        res.throttle_time_ms = 7;
        for version in 0..=2 {
            let ResponseKind::Produce(back) = response_round_trip(
                ApiKey::Produce,
                version,
                &ResponseKind::Produce(res.clone()),
            ) else {
                panic!("not a produce answer")
            };
            let p = &back.responses[0].partition_responses[0];
            assert_eq!((p.index, p.base_offset), (1, 10));
            assert_eq!(p.log_append_time_ms, if version >= 2 { 1_234 } else { -1 });
            assert_eq!(back.throttle_time_ms, if version >= 1 { 7 } else { 0 });
        }
        // Produce v0's answer, byte for byte: [topic [partition error offset]].
        let mut out = BytesMut::new();
        encode_response(0, &ResponseKind::Produce(res), &mut out).unwrap();
        assert_eq!(
            &out[..],
            &[
                0, 0, 0, 1, 0, 5, b't', b'o', b'p', b'i', b'c', 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 10
            ]
        );

        let mut p = PartitionData::default();
        p.partition_index = 0;
        p.high_watermark = 3;
        p.records = Some(Bytes::from_static(b"messages"));
        let mut t = FetchableTopicResponse::default();
        t.topic = s("topic").into();
        t.partitions = vec![p];
        let mut res = FetchResponse::default();
        res.responses = vec![t];
        for version in 0..=3 {
            let ResponseKind::Fetch(back) =
                response_round_trip(ApiKey::Fetch, version, &ResponseKind::Fetch(res.clone()))
            else {
                panic!("not a fetch answer")
            };
            let p = &back.responses[0].partitions[0];
            assert_eq!(p.high_watermark, 3);
            assert_eq!(p.records.as_deref(), Some(&b"messages"[..]));
        }

        let mut t = CreatableTopicResult::default();
        t.name = s("topic").into();
        t.error_code = 36;
        t.error_message = Some(s("exists"));
        let mut res = CreateTopicsResponse::default();
        res.topics = vec![t];
        for version in 0..=1 {
            let ResponseKind::CreateTopics(back) = response_round_trip(
                ApiKey::CreateTopics,
                version,
                &ResponseKind::CreateTopics(res.clone()),
            ) else {
                panic!("not a create-topics answer")
            };
            assert_eq!(back.topics[0].error_code, 36);
            let message = back.topics[0].error_message.clone();
            let unsent = CreatableTopicResult::default().error_message;
            assert_eq!(
                message,
                if version >= 1 {
                    Some(s("exists"))
                } else {
                    unsent
                }
            );
        }

        let mut set = DescribeConfigsResourceResult::default();
        set.name = s("retention.ms");
        set.value = Some(s("1000"));
        set.config_source = 1;
        let mut unset = set.clone();
        unset.name = s("segment.bytes");
        unset.config_source = DEFAULT_CONFIG;
        let mut r = DescribeConfigsResult::default();
        r.resource_type = 2;
        r.resource_name = s("topic");
        r.configs = vec![set, unset];
        let mut res = DescribeConfigsResponse::default();
        res.results = vec![r];
        let ResponseKind::DescribeConfigs(back) = response_round_trip(
            ApiKey::DescribeConfigs,
            0,
            &ResponseKind::DescribeConfigs(res),
        ) else {
            panic!("not a describe-configs answer")
        };
        let sources: Vec<i8> = back.results[0]
            .configs
            .iter()
            .map(|c| c.config_source)
            .collect();
        let unknown = DescribeConfigsResourceResult::default().config_source;
        assert_eq!(
            sources,
            [unknown, DEFAULT_CONFIG],
            "is_default tells only default or not"
        );
    }

    #[test]
    fn lies_and_truncations_are_errors_not_allocations() {
        // Produce v0 claiming 2^31-1 topics in a 10-byte body.
        let mut wire = Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]);
        assert!(decode_request(ApiKey::Produce, 0, &mut wire).is_err());
        let mut req = FetchRequest::default();
        let mut t = FetchTopic::default();
        t.topic = s("topic").into();
        t.partitions = vec![FetchPartition::default()];
        req.topics = vec![t];
        let mut out = BytesMut::new();
        encode_request(3, &RequestKind::Fetch(req), &mut out).unwrap();
        for cut in 0..out.len() {
            let mut head = out.clone().freeze().slice(..cut);
            assert!(
                decode_request(ApiKey::Fetch, 3, &mut head).is_err(),
                "cut at {cut}"
            );
        }
        // A null topic name, and a negative array length other than -1.
        let mut wire = Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
        assert!(decode_request(ApiKey::Produce, 0, &mut wire).is_err());
        let mut wire = Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xfe]);
        assert!(decode_request(ApiKey::Produce, 0, &mut wire).is_err());
    }
}
