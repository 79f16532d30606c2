//! Kafka's rules for topic names.
//!
//! Topic configs are the log's configs plus two replication keys, so they
//! live with the log: `runnel_log::TopicConfig`.

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
}
