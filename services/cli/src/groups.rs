//! `runnel groups ...`: consumer groups, as Kafka's `kafka-consumer-groups.sh`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};
use runnel_client::{Admin, ClientConfig, ErrorCode, TopicPartition};

use crate::outln;

/// `runnel groups` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List groups with their state.
    List,
    /// Show a group's state, members, and per partition the committed
    /// offset, log end offset and lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets (a dry run unless --execute; the
    /// group must have no active members).
    #[command(group(clap::ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_offset", "to_datetime"])))]
    ResetOffsets {
        /// Group id.
        group: String,
        /// Topic, or topic:partition,partition,...
        #[arg(long)]
        topic: String,
        /// To the log start.
        #[arg(long)]
        to_earliest: bool,
        /// To the log end.
        #[arg(long)]
        to_latest: bool,
        /// To this offset (clamped to the log's range).
        #[arg(long)]
        to_offset: Option<i64>,
        /// To the first record at or after this time: YYYY-MM-DDTHH:MM:SS, optionally
        /// with .sss and a zone (Z or ±HH:MM; none: UTC).
        #[arg(long)]
        to_datetime: Option<String>,
        /// Apply the new offsets (default: only show them).
        #[arg(long)]
        execute: bool,
    },
    /// Delete a group without members, with its committed offsets.
    Delete {
        /// Group id.
        group: String,
    },
}

/// Runs a groups subcommand.
pub async fn run(client: ClientConfig, cmd: Command) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match cmd {
        Command::List => {
            let groups = admin.list_groups().await.context("cannot list groups")?;
            outln!("{:<40}  {:<20}", "GROUP", "STATE")?;
            for g in groups {
                outln!("{:<40}  {:<20}", g.group_id, g.state)?;
            }
        }
        Command::Describe { group } => describe(&admin, &group).await?,
        Command::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_datetime,
            execute,
        } => {
            let target = if to_earliest {
                Target::Earliest
            } else if to_latest {
                Target::Latest
            } else if let Some(o) = to_offset {
                if o < 0 {
                    bail!("--to-offset must be 0 or more, got {o}");
                }
                Target::Offset(o)
            } else if let Some(t) = to_datetime {
                Target::Time(parse_datetime(&t).with_context(|| {
                    format!(
                        "invalid --to-datetime {t:?} (want YYYY-MM-DDTHH:MM:SS[.sss][Z|±HH:MM])"
                    )
                })?)
            } else {
                bail!("say where to: --to-earliest, --to-latest, --to-offset or --to-datetime");
            };
            reset(&admin, &group, &topic, target, execute).await?;
        }
        Command::Delete { group } => {
            admin
                .delete_group(&group)
                .await
                .map_err(|e| explain(e, &group))?;
            outln!("deleted group {group}")?;
        }
    }
    Ok(())
}

fn explain(e: runnel_client::ClientError, group: &str) -> anyhow::Error {
    match e.code() {
        Some(ErrorCode::GroupIdNotFound) => anyhow::anyhow!("group {group} does not exist"),
        Some(ErrorCode::NonEmptyGroup) => {
            anyhow::anyhow!("group {group} has active members: stop its consumers first")
        }
        Some(ErrorCode::InvalidGroupId) => anyhow::anyhow!("invalid group id {group:?}"),
        _ => anyhow::Error::new(e).context(format!("group {group}")),
    }
}

async fn describe(admin: &Admin, group: &str) -> anyhow::Result<()> {
    let d = admin
        .describe_group(group)
        .await
        .map_err(|e| explain(e, group))?;
    let committed = admin
        .group_offsets(group)
        .await
        .map_err(|e| explain(e, group))?;
    if d.state == "Dead" && committed.is_empty() {
        bail!("group {group} does not exist");
    }
    outln!(
        "Group: {}  State: {}  Protocol: {}  Generation: {}  Coordinator: {}  Members: {}",
        d.group_id,
        d.state,
        if d.protocol.is_empty() {
            "-"
        } else {
            &d.protocol
        },
        d.generation,
        d.coordinator_id,
        d.members.len()
    )?;
    let mut owners: BTreeMap<TopicPartition, (&str, &str)> = BTreeMap::new();
    for m in &d.members {
        for tp in &m.partitions {
            owners.insert(tp.clone(), (&m.member_id, &m.client_id));
        }
    }
    let partitions: BTreeSet<TopicPartition> =
        owners.keys().chain(committed.keys()).cloned().collect();
    outln!(
        "{:<24} {:>9} {:>14} {:>14} {:>8}  {:<44} CLIENT-ID",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID"
    )?;
    for tp in partitions {
        let end = admin
            .offsets(&tp.topic, tp.partition)
            .await
            .ok()
            .map(|(_, e)| e);
        let current = committed.get(&tp).copied();
        let lag = match (current, end) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => "-".into(),
        };
        let (member, client) = owners.get(&tp).copied().unwrap_or(("-", "-"));
        outln!(
            "{:<24} {:>9} {:>14} {:>14} {:>8}  {:<44} {}",
            tp.topic,
            tp.partition,
            current.map_or("-".into(), |c| c.to_string()),
            end.map_or("-".into(), |e| e.to_string()),
            lag,
            member,
            client
        )?;
    }
    for m in d.members.iter().filter(|m| m.partitions.is_empty()) {
        outln!(
            "{:<24} {:>9} {:>14} {:>14} {:>8}  {:<44} {}",
            "-",
            "-",
            "-",
            "-",
            "-",
            m.member_id,
            m.client_id
        )?;
    }
    Ok(())
}

/// Where reset-offsets moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    /// Milliseconds since the Unix epoch.
    Time(i64),
}

async fn reset(
    admin: &Admin,
    group: &str,
    topic_spec: &str,
    target: Target,
    execute: bool,
) -> anyhow::Result<()> {
    let (topic, wanted) = match topic_spec.split_once(':') {
        Some((t, ps)) => {
            let ps = ps
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .with_context(|| format!("invalid partition {p:?} in --topic {topic_spec}"))
                })
                .collect::<anyhow::Result<Vec<i32>>>()?;
            (t, Some(ps))
        }
        None => (topic_spec, None),
    };
    let described = admin
        .describe_topic(topic)
        .await
        .with_context(|| format!("cannot reset offsets of topic {topic}"))?;
    let count = described.partitions.len() as i32;
    let partitions = match wanted {
        Some(ps) => {
            if let Some(bad) = ps.iter().find(|p| **p < 0 || **p >= count) {
                bail!("topic {topic} has no partition {bad} (it has {count})");
            }
            ps
        }
        None => (0..count).collect(),
    };
    let d = admin
        .describe_group(group)
        .await
        .map_err(|e| explain(e, group))?;
    if !d.members.is_empty() {
        bail!(
            "group {group} has {} active member(s) (state {}): stop its consumers before resetting offsets",
            d.members.len(),
            d.state
        );
    }
    let mut offsets = BTreeMap::new();
    for p in partitions {
        let (start, end) = admin.offsets(topic, p).await?;
        let offset = match target {
            Target::Earliest => start,
            Target::Latest => end,
            Target::Offset(o) => o.clamp(start, end),
            Target::Time(ts) => admin.offset_for_time(topic, p, ts).await?.unwrap_or(end),
        };
        offsets.insert(TopicPartition::new(topic, p), offset);
    }
    outln!(
        "{:<24} {:<24} {:>9} {:>12}",
        "GROUP",
        "TOPIC",
        "PARTITION",
        "NEW-OFFSET"
    )?;
    for (tp, offset) in &offsets {
        outln!(
            "{:<24} {:<24} {:>9} {:>12}",
            group,
            tp.topic,
            tp.partition,
            offset
        )?;
    }
    if execute {
        admin
            .alter_group_offsets(group, &offsets)
            .await
            .map_err(|e| explain(e, group))?;
        outln!("offsets of group {group} reset")?;
    } else {
        outln!("(dry run: nothing changed; add --execute to apply)")?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS[.sss][Z|±HH:MM]`
/// (no zone: UTC).
fn parse_datetime(s: &str) -> anyhow::Result<i64> {
    let (date, rest) = s.split_once('T').context("no 'T' between date and time")?;
    let mut d = date.split('-');
    let (Some(y), Some(mo), Some(day), None) = (d.next(), d.next(), d.next(), d.next()) else {
        bail!("the date is not YYYY-MM-DD");
    };
    let (y, mo, day): (i64, i64, i64) = (y.parse()?, mo.parse()?, day.parse()?);
    let (time, offset_min) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, zone) = rest.split_at(i);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = zone[1..]
            .split_once(':')
            .context("the zone is not ±HH:MM")?;
        let (zh, zm): (i64, i64) = (zh.parse()?, zm.parse()?);
        if zh > 23 || zm > 59 {
            bail!("zone out of range");
        }
        (t, sign * (zh * 60 + zm))
    } else {
        (rest, 0)
    };
    let (hms, millis) = match time.split_once('.') {
        Some((hms, frac)) => {
            if frac.is_empty() || frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                bail!("fractions of a second must be 1 to 3 digits");
            }
            (hms, format!("{frac:0<3}").parse::<i64>()?)
        }
        None => (time, 0),
    };
    let mut t = hms.split(':');
    let (Some(h), Some(mi), Some(sec), None) = (t.next(), t.next(), t.next(), t.next()) else {
        bail!("the time is not HH:MM:SS");
    };
    let (h, mi, sec): (i64, i64, i64) = (h.parse()?, mi.parse()?, sec.parse()?);
    let days_in_month = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => bail!("month {mo} out of range"),
    };
    if !(1..=days_in_month).contains(&day) || h > 23 || mi > 59 || sec > 59 {
        bail!("a field is out of range");
    }
    // Days from 1970-01-01 in the proleptic Gregorian calendar.
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + h * 3_600 + mi * 60 + sec - offset_min * 60;
    Ok(seconds * 1_000 + millis)
}

#[cfg(test)]
mod tests {
    use super::parse_datetime;

    #[test]
    fn iso_datetimes_become_epoch_millis() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00").unwrap(), 0);
        assert_eq!(parse_datetime("1970-01-01T00:00:00.5Z").unwrap(), 500);
        assert_eq!(
            parse_datetime("2026-11-27T12:30:15.123Z").unwrap(),
            1_795_782_615_123
        );
        assert_eq!(
            parse_datetime("2026-11-27T14:30:15.123+02:00").unwrap(),
            1_795_782_615_123
        );
        assert_eq!(
            parse_datetime("2024-02-29T00:00:00-01:30").unwrap(),
            1_709_170_200_000
        );
        for bad in [
            "2026-11-27",
            "2026-13-01T00:00:00",
            "2023-02-29T00:00:00",
            "2026-11-27T24:00:00",
            "2026-11-27T12:00",
            "2026-11-27T12:00:00.1234",
            "yesterday",
            "2026-11-27T12:00:00+2",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
    }
}
