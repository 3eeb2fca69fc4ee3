//! Kafka topic names: `[a-zA-Z0-9._-]+`, not `.` or `..`, at most 249
//! characters (Kafka's own limit, `Topic.MAX_NAME_LENGTH`).

/// Kafka's longest topic name.
pub const MAX_TOPIC_NAME_LENGTH: usize = 249;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("a topic is required")]
    Missing,
    #[error("topic must match [a-zA-Z0-9._-]+ and be at most {max_length} characters")]
    Illegal { max_length: usize },
}

/// Checks a topic name (surrounding whitespace ignored) against Kafka's
/// rules, with a length limit of `max_length`; returns it trimmed.
pub fn check_topic_name(name: &str, max_length: usize) -> Result<&str, TopicNameError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(TopicNameError::Missing);
    }
    let legal = name.len() <= max_length
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if legal {
        Ok(name)
    } else {
        Err(TopicNameError::Illegal { max_length })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_rules() {
        assert_eq!(check_topic_name(" a.b_c-1 ", 249), Ok("a.b_c-1"));
        assert_eq!(check_topic_name("", 249), Err(TopicNameError::Missing));
        for bad in [".", "..", "a b", "a/b", "ü"] {
            assert!(check_topic_name(bad, 249).is_err(), "{bad}");
        }
        let longest = "t".repeat(MAX_TOPIC_NAME_LENGTH);
        assert!(check_topic_name(&longest, MAX_TOPIC_NAME_LENGTH).is_ok());
        assert!(check_topic_name(&format!("{longest}t"), MAX_TOPIC_NAME_LENGTH).is_err());
    }
}
