//! The high-watermark checkpoint file: every hosted partition's high
//! watermark, so a restarted broker does not start from the log start.

use std::collections::HashMap;

use runnel_log::Offset;

use crate::partition::PartitionKey;

/// Every hosted partition's high watermark, so a restarted broker does not
/// start from the log start (Kafka's file of the same name and format).
pub(crate) const HW_CHECKPOINT: &str = "replication-offset-checkpoint";

/// Writes a high-watermark checkpoint's text (what [`parse_hw_checkpoint`] reads).
pub(crate) fn format_hw_checkpoint(entries: &HashMap<PartitionKey, Offset>) -> String {
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort();
    let mut text = format!("0\n{}\n", sorted.len());
    for ((topic, partition), hw) in sorted {
        text.push_str(&format!("{topic} {partition} {hw}\n"));
    }
    text
}

/// Reads a high-watermark checkpoint: a version line (0), a count, then
/// `topic partition offset` lines.
pub(crate) fn parse_hw_checkpoint(text: &str) -> Result<HashMap<PartitionKey, Offset>, String> {
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        return Err("unknown version".into());
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or("missing entry count")?;
    let mut out = HashMap::with_capacity(count.min(1 << 16));
    for line in lines {
        let mut fields = line.split(' ');
        let (Some(topic), Some(partition), Some(hw), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("malformed line {line:?}"));
        };
        let partition = partition
            .parse()
            .map_err(|_| format!("bad partition in {line:?}"))?;
        let hw = hw.parse().map_err(|_| format!("bad offset in {line:?}"))?;
        out.insert((topic.to_owned(), partition), hw);
    }
    if out.len() != count {
        return Err(format!("{} entries, expected {count}", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_watermark_checkpoints_round_trip_and_damage_is_detected() {
        let mut hws = HashMap::new();
        hws.insert(("orders".to_owned(), 0), 42);
        hws.insert(("orders".to_owned(), 1), 0);
        hws.insert(("a.b_c-d".to_owned(), 7), 1 << 40);
        let text = format_hw_checkpoint(&hws);
        assert!(text.starts_with("0\n3\n"));
        assert_eq!(parse_hw_checkpoint(&text).unwrap(), hws);
        assert!(parse_hw_checkpoint("1\n0\n").is_err());
        assert!(parse_hw_checkpoint("0\n2\norders 0 42\n").is_err());
        assert!(parse_hw_checkpoint("0\n1\norders zero 42\n").is_err());
        assert!(parse_hw_checkpoint("0\n1\norders 0 42 9\n").is_err());
    }
}
