//! Every config a topic can set: the log's configs plus the two that govern
//! replication, with Kafka's names, defaults and validation.

use std::collections::BTreeMap;

use crate::{LogConfig, LogError};

/// Topic config keys that are not log configs.
const REPLICATION_KEYS: [&str; 2] = ["min.insync.replicas", "unclean.leader.election.enable"];

/// Every topic config a topic can set, with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    /// The log's configs (segment sizes, retention, cleanup policy, ...).
    pub log: LogConfig,
    /// `min.insync.replicas`: acks=all needs at least this many in-sync replicas.
    pub min_insync_replicas: i32,
    /// `unclean.leader.election.enable`: may an out-of-sync replica become leader.
    pub unclean_leader_election_enable: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            log: LogConfig::default(),
            min_insync_replicas: 1,
            unclean_leader_election_enable: false,
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
