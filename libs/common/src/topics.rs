//! Kafka's rules for topic names and topic configs.

use std::collections::BTreeMap;

use runnel_log::{LogConfig, LogError};

/// Longest legal topic name (Kafka's limit, from file-name length limits).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Why a topic name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    /// Empty name.
    #[error("topic name is empty")]
    Empty,
    /// `.` or `..`.
    #[error("topic name cannot be {0:?}")]
    Reserved(String),
    /// Over 249 characters.
    #[error("topic name is {len} characters long; the limit is {MAX_TOPIC_NAME_LEN}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A character outside `[a-zA-Z0-9._-]`.
    #[error(
        "topic name {name:?} contains {ch:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
    )]
    IllegalChar {
        /// The name.
        name: String,
        /// The first illegal character.
        ch: char,
    },
}

/// Checks a topic name against Kafka's rules.
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Reserved(name.to_owned()));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(TopicNameError::TooLong { len: name.len() });
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(TopicNameError::IllegalChar {
            name: name.to_owned(),
            ch,
        });
    }
    Ok(())
}

/// The name with `.` read as `_`: two topics whose names agree this way
/// would collide in metric names, so Kafka refuses the second.
pub fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

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
    fn names_follow_kafka() {
        for ok in [
            "a",
            "orders",
            "orders.v1",
            "a-b_c.D9",
            "__consumer_offsets",
            &"x".repeat(249),
        ] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_topic_name(""), Err(TopicNameError::Empty));
        assert!(matches!(
            validate_topic_name("."),
            Err(TopicNameError::Reserved(_))
        ));
        assert!(matches!(
            validate_topic_name(".."),
            Err(TopicNameError::Reserved(_))
        ));
        assert!(matches!(
            validate_topic_name(&"x".repeat(250)),
            Err(TopicNameError::TooLong { len: 250 })
        ));
        for bad in ["a b", "a/b", "ü", "a:b", "a*"] {
            assert!(
                matches!(
                    validate_topic_name(bad),
                    Err(TopicNameError::IllegalChar { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(collision_key("a.b_c"), collision_key("a_b.c"));
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
