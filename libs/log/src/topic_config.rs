//! Every config a topic can set: the log's configs plus the two that govern
//! replication, with Kafka's names, defaults and validation.

use std::collections::BTreeMap;

use crate::{LogConfig, LogError};

/// Topic config keys that are not log configs.
const REPLICATION_KEYS: [&str; 4] = [
    "min.insync.replicas",
    "unclean.leader.election.enable",
    LEADER_THROTTLED_REPLICAS,
    FOLLOWER_THROTTLED_REPLICAS,
];

/// `leader.replication.throttled.replicas`: replicas whose leaders throttle
/// what they send to out-of-sync followers.
pub const LEADER_THROTTLED_REPLICAS: &str = "leader.replication.throttled.replicas";
/// `follower.replication.throttled.replicas`: replicas that throttle what
/// they fetch while out of sync.
pub const FOLLOWER_THROTTLED_REPLICAS: &str = "follower.replication.throttled.replicas";

/// A throttled-replicas list (Kafka's `partitionId:brokerId,...` or `*`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ThrottledReplicas {
    /// None (the default: an empty list).
    #[default]
    None,
    /// Every replica of the topic (`*`).
    All,
    /// These (partition, broker) pairs.
    Listed(Vec<(i32, i32)>),
}

impl ThrottledReplicas {
    /// Parses Kafka's format; `None` when malformed.
    fn parse(value: &str) -> Option<ThrottledReplicas> {
        let value = value.trim();
        if value.is_empty() {
            return Some(ThrottledReplicas::None);
        }
        if value == "*" {
            return Some(ThrottledReplicas::All);
        }
        value
            .split(',')
            .map(|pair| {
                let (p, b) = pair.trim().split_once(':')?;
                let p: i32 = p.trim().parse().ok().filter(|p| *p >= 0)?;
                let b: i32 = b.trim().parse().ok().filter(|b| *b >= 0)?;
                Some((p, b))
            })
            .collect::<Option<Vec<_>>>()
            .map(ThrottledReplicas::Listed)
    }

    /// Whether the replica of `partition` on `broker` is throttled.
    pub fn covers(&self, partition: i32, broker: i32) -> bool {
        match self {
            ThrottledReplicas::None => false,
            ThrottledReplicas::All => true,
            ThrottledReplicas::Listed(pairs) => pairs.contains(&(partition, broker)),
        }
    }
}

impl std::fmt::Display for ThrottledReplicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ThrottledReplicas::None => Ok(()),
            ThrottledReplicas::All => f.write_str("*"),
            ThrottledReplicas::Listed(pairs) => {
                let text: Vec<String> = pairs.iter().map(|(p, b)| format!("{p}:{b}")).collect();
                f.write_str(&text.join(","))
            }
        }
    }
}

/// Every topic config a topic can set, with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    /// The log's configs (segment sizes, retention, cleanup policy, ...).
    pub log: LogConfig,
    /// `min.insync.replicas`: acks=all needs at least this many in-sync replicas.
    pub min_insync_replicas: i32,
    /// `unclean.leader.election.enable`: may an out-of-sync replica become leader.
    pub unclean_leader_election_enable: bool,
    /// `leader.replication.throttled.replicas`.
    pub leader_throttled_replicas: ThrottledReplicas,
    /// `follower.replication.throttled.replicas`.
    pub follower_throttled_replicas: ThrottledReplicas,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            log: LogConfig::default(),
            min_insync_replicas: 1,
            unclean_leader_election_enable: false,
            leader_throttled_replicas: ThrottledReplicas::None,
            follower_throttled_replicas: ThrottledReplicas::None,
        }
    }
}

/// A topic config key or value that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicConfigError {
    /// Not a topic config.
    #[error("unknown topic config {key}")]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A value out of range or malformed.
    #[error("invalid value {value:?} for topic config {key}: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
}

impl TopicConfig {
    /// Every key a topic can set, sorted.
    pub fn keys() -> Vec<&'static str> {
        let mut keys: Vec<&str> = LogConfig::KEYS
            .iter()
            .chain(&REPLICATION_KEYS)
            .copied()
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Defaults overridden by `pairs`; every pair is validated.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<TopicConfig, TopicConfigError> {
        let mut config = TopicConfig::default();
        for (k, v) in pairs {
            config.set(k, v)?;
        }
        Ok(config)
    }

    /// Sets one key, refusing unknown keys and bad values.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), TopicConfigError> {
        let invalid = |reason: &str| TopicConfigError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        match key {
            "min.insync.replicas" => {
                let v: i32 = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid("not an integer"))?;
                if v < 1 {
                    return Err(invalid("must be at least 1"));
                }
                self.min_insync_replicas = v;
            }
            "unclean.leader.election.enable" => {
                self.unclean_leader_election_enable = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid("must be true or false")),
                }
            }
            LEADER_THROTTLED_REPLICAS | FOLLOWER_THROTTLED_REPLICAS => {
                let parsed = ThrottledReplicas::parse(value)
                    .ok_or_else(|| invalid("must be a list of partitionId:brokerId pairs, or *"))?;
                if key == LEADER_THROTTLED_REPLICAS {
                    self.leader_throttled_replicas = parsed;
                } else {
                    self.follower_throttled_replicas = parsed;
                }
            }
            _ => self.log.set(key, value).map_err(|e| match e {
                LogError::UnknownConfig { key } => TopicConfigError::UnknownKey { key },
                LogError::InvalidConfig { key, value, reason } => {
                    TopicConfigError::InvalidValue { key, value, reason }
                }
                other => invalid(&other.to_string()),
            })?,
        }
        Ok(())
    }

    /// The value of one key.
    pub fn get(&self, key: &str) -> Option<String> {
        match key {
            "min.insync.replicas" => Some(self.min_insync_replicas.to_string()),
            "unclean.leader.election.enable" => {
                Some(self.unclean_leader_election_enable.to_string())
            }
            LEADER_THROTTLED_REPLICAS => Some(self.leader_throttled_replicas.to_string()),
            FOLLOWER_THROTTLED_REPLICAS => Some(self.follower_throttled_replicas.to_string()),
            _ => self.log.get(key),
        }
    }

    /// Every key with its value, sorted by key.
    pub fn entries(&self) -> BTreeMap<&'static str, String> {
        Self::keys()
            .into_iter()
            .map(|k| (k, self.get(k).expect("every listed key has a value")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_replica_lists_parse_as_kafka_writes_them() {
        let c = TopicConfig::from_pairs([
            (LEADER_THROTTLED_REPLICAS, "0:1, 1:2"),
            (FOLLOWER_THROTTLED_REPLICAS, "*"),
        ])
        .unwrap();
        assert!(c.leader_throttled_replicas.covers(1, 2));
        assert!(!c.leader_throttled_replicas.covers(1, 1));
        assert!(c.follower_throttled_replicas.covers(7, 9));
        assert_eq!(c.get(LEADER_THROTTLED_REPLICAS).unwrap(), "0:1,1:2");
        assert_eq!(
            TopicConfig::default()
                .get(FOLLOWER_THROTTLED_REPLICAS)
                .unwrap(),
            ""
        );
        for bad in ["1", "a:b", "1:-2", "0:1,"] {
            assert!(
                TopicConfig::from_pairs([(LEADER_THROTTLED_REPLICAS, bad)]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn configs_are_validated() {
        let c = TopicConfig::from_pairs([("retention.ms", "1000"), ("min.insync.replicas", "2")])
            .unwrap();
        assert_eq!(c.log.retention_ms, 1000);
        assert_eq!(c.min_insync_replicas, 2);
        assert!(matches!(
            TopicConfig::from_pairs([("no.such", "1")]),
            Err(TopicConfigError::UnknownKey { .. })
        ));
        assert!(matches!(
            TopicConfig::from_pairs([("min.insync.replicas", "0")]),
            Err(TopicConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            TopicConfig::from_pairs([("cleanup.policy", "nope")]),
            Err(TopicConfigError::InvalidValue { .. })
        ));
        let entries = TopicConfig::default().entries();
        assert_eq!(entries["retention.ms"], "604800000");
        assert_eq!(entries["unclean.leader.election.enable"], "false");
        assert_eq!(entries.len(), TopicConfig::keys().len());
    }
}
