//! The bytes group members exchange through the coordinator, in Kafka's
//! `consumer` protocol format (`ConsumerProtocolSubscription` v3 and
//! `ConsumerProtocolAssignment` v1), so Runnel members and Kafka clients
//! read each other's subscriptions and assignments. (The partition sets
//! KIP-848 heartbeats carry are gRPC messages: `runnel_client::partition_set`
//! converts them, since this crate links no other Runnel crate.)

use std::collections::BTreeMap;

use crate::TopicPartition;

/// A member's subscription as JoinGroup carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Topics subscribed to.
    pub topics: Vec<String>,
    /// Opaque assignor data.
    pub user_data: Option<Vec<u8>>,
    /// Partitions the member owns now (cooperative rebalancing).
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation those were owned in, or -1.
    pub generation: i32,
    /// `client.rack`.
    pub rack: Option<String>,
}

/// A member's assignment as SyncGroup carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberAssignment {
    /// Partitions to read.
    pub partitions: Vec<TopicPartition>,
    /// Opaque assignor data.
    pub user_data: Option<Vec<u8>>,
}

/// Bytes that are not a valid subscription or assignment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed consumer protocol data: {0}")]
pub struct ProtocolError(String);

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            out.extend_from_slice(&(b.len() as i32).to_be_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

fn put_partitions(out: &mut Vec<u8>, partitions: &[TopicPartition]) {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    out.extend_from_slice(&(by_topic.len() as i32).to_be_bytes());
    for (topic, ps) in by_topic {
        put_str(out, topic);
        out.extend_from_slice(&(ps.len() as i32).to_be_bytes());
        for p in ps {
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ProtocolError> {
        if self.0.len() < n {
            return Err(ProtocolError(format!(
                "{n} bytes wanted, {} left",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn count(&mut self) -> Result<usize, ProtocolError> {
        let n = self.i32()?;
        // Each element takes at least two bytes: a count beyond that is a lie.
        if n < 0 || n as usize > self.0.len() / 2 + 1 {
            return Err(ProtocolError(format!("bad array length {n}")));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, ProtocolError> {
        let n = self.i16()?;
        if n < 0 {
            return Err(ProtocolError("null string".into()));
        }
        String::from_utf8(self.take(n as usize)?.to_vec())
            .map_err(|_| ProtocolError("string is not UTF-8".into()))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, ProtocolError> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        String::from_utf8(self.take(n as usize)?.to_vec())
            .map(Some)
            .map_err(|_| ProtocolError("string is not UTF-8".into()))
    }

    fn bytes(&mut self) -> Result<Option<Vec<u8>>, ProtocolError> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(n as usize)?.to_vec()))
    }

    fn partitions(&mut self) -> Result<Vec<TopicPartition>, ProtocolError> {
        let mut out = Vec::new();
        for _ in 0..self.count()? {
            let topic = self.string()?;
            for _ in 0..self.count()? {
                out.push(TopicPartition::new(topic.clone(), self.i32()?));
            }
        }
        Ok(out)
    }
}

impl Subscription {
    /// Encodes as version 3.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&3i16.to_be_bytes());
        out.extend_from_slice(&(self.topics.len() as i32).to_be_bytes());
        for t in &self.topics {
            put_str(&mut out, t);
        }
        put_bytes(&mut out, self.user_data.as_deref());
        put_partitions(&mut out, &self.owned_partitions);
        out.extend_from_slice(&self.generation.to_be_bytes());
        match &self.rack {
            Some(r) => put_str(&mut out, r),
            None => out.extend_from_slice(&(-1i16).to_be_bytes()),
        }
        out
    }

    /// Decodes any version (fields a version lacks take their defaults;
    /// bytes a newer version adds are ignored, as Kafka does).
    pub fn decode(bytes: &[u8]) -> Result<Subscription, ProtocolError> {
        let mut r = Reader(bytes);
        let version = r.i16()?;
        if version < 0 {
            return Err(ProtocolError(format!("version {version}")));
        }
        let mut s = Subscription {
            generation: -1,
            ..Subscription::default()
        };
        for _ in 0..r.count()? {
            s.topics.push(r.string()?);
        }
        s.user_data = r.bytes()?;
        if version >= 1 {
            s.owned_partitions = r.partitions()?;
        }
        if version >= 2 {
            s.generation = r.i32()?;
        }
        if version >= 3 {
            s.rack = r.nullable_string()?;
        }
        Ok(s)
    }
}

impl MemberAssignment {
    /// Encodes as version 1.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&1i16.to_be_bytes());
        put_partitions(&mut out, &self.partitions);
        put_bytes(&mut out, self.user_data.as_deref());
        out
    }

    /// Decodes any version; empty bytes are an empty assignment (Kafka sends
    /// them to members a failed rebalance left out).
    pub fn decode(bytes: &[u8]) -> Result<MemberAssignment, ProtocolError> {
        if bytes.is_empty() {
            return Ok(MemberAssignment::default());
        }
        let mut r = Reader(bytes);
        let version = r.i16()?;
        if version < 0 {
            return Err(ProtocolError(format!("version {version}")));
        }
        let mut partitions = r.partitions()?;
        partitions.sort();
        Ok(MemberAssignment {
            partitions,
            user_data: r.bytes()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let s = Subscription {
            topics: vec!["orders".into(), "payments".into()],
            user_data: Some(vec![1, 2, 3]),
            owned_partitions: vec![
                TopicPartition::new("orders", 0),
                TopicPartition::new("orders", 3),
                TopicPartition::new("payments", 1),
            ],
            generation: 7,
            rack: Some("eu-1a".into()),
        };
        assert_eq!(Subscription::decode(&s.encode()).unwrap(), s);
        let a = MemberAssignment {
            partitions: vec![
                TopicPartition::new("orders", 1),
                TopicPartition::new("payments", 0),
            ],
            user_data: None,
        };
        assert_eq!(MemberAssignment::decode(&a.encode()).unwrap(), a);
        assert_eq!(
            MemberAssignment::decode(&[]).unwrap(),
            MemberAssignment::default()
        );
    }

    #[test]
    fn a_version_0_subscription_from_an_older_client_decodes() {
        // version 0, topics ["t"], user data null
        let bytes = [0, 0, 0, 0, 0, 1, 0, 1, b't', 0xff, 0xff, 0xff, 0xff];
        let s = Subscription::decode(&bytes).unwrap();
        assert_eq!(s.topics, vec!["t".to_owned()]);
        assert_eq!((s.generation, s.owned_partitions.len()), (-1, 0));
    }

    #[test]
    fn truncated_and_lying_bytes_are_errors_not_panics() {
        let s = Subscription {
            topics: vec!["orders".into()],
            ..Subscription::default()
        }
        .encode();
        for n in 0..s.len() - 2 {
            assert!(
                Subscription::decode(&s[..n]).is_err(),
                "prefix of {n} bytes"
            );
        }
        assert!(Subscription::decode(&[0, 1, 0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(MemberAssignment::decode(&[0, 1, 0, 0, 0, 1, 0, 9, b'x']).is_err());
    }
}
