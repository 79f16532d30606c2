//! Moving partitions' replicas between brokers (Kafka's KIP-455:
//! AlterPartitionReassignments and ListPartitionReassignments) through the
//! controller, as `runnel partitions reassign` and
//! `kafka-reassign-partitions.sh` use them.

use std::collections::BTreeMap;

use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;

use crate::admin::Admin;
use crate::error::{ClientError, Result};

/// A partition being moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Target replicas followed by the leaving ones.
    pub replicas: Vec<i32>,
    /// Replicas joining.
    pub adding_replicas: Vec<i32>,
    /// Replicas leaving.
    pub removing_replicas: Vec<i32>,
}

impl Reassignment {
    /// The replicas the partition moves to.
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }
}

/// Where each partition of some topics is: topic → partition → replicas,
/// preferred leader first.
pub type Assignments = BTreeMap<String, BTreeMap<i32, Vec<i32>>>;

/// One partition's outcome, keyed by topic and partition.
type PartitionResult = ((String, i32), Result<()>);

/// A per-partition answer as a result.
fn partition_result(
    topic: String,
    partition: i32,
    code: ErrorCode,
    message: String,
) -> PartitionResult {
    let result = match code {
        ErrorCode::None => Ok(()),
        code => Err(ClientError::server(code, message)),
    };
    ((topic, partition), result)
}

/// `partitions` grouped by topic for a request (`None`: every partition,
/// an empty list); `None` back when the caller named no partition at all.
fn by_topic(partitions: Option<&[(String, i32)]>) -> Option<Vec<pb::TopicPartitions>> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions.unwrap_or_default() {
        topics.entry(topic).or_default().push(*partition);
    }
    if partitions.is_some() && topics.is_empty() {
        return None;
    }
    Some(
        topics
            .into_iter()
            .map(|(topic, partitions)| pb::TopicPartitions {
                topic: topic.to_owned(),
                partitions,
            })
            .collect(),
    )
}

impl Admin {
    /// Starts moving each `(topic, partition)` to its target replicas, or
    /// cancels the move in progress where the target is `None`; one result
    /// per partition, in order.
    pub async fn alter_partition_reassignments(
        &self,
        moves: Vec<(String, i32, Option<Vec<i32>>)>,
    ) -> Result<Vec<PartitionResult>> {
        let request = pb::AlterPartitionReassignmentsRequest {
            partitions: moves
                .into_iter()
                .map(|(topic, partition, target)| pb::PartitionReassignment {
                    topic,
                    partition,
                    replicas: target.map(|broker_ids| pb::ReplicaList { broker_ids }),
                })
                .collect(),
            keep_replication_factor: false,
        };
        let response = self
            .cluster
            .call_controller(request, |mut c, r| async move {
                c.alter_partition_reassignments(r).await
            })
            .await?
            .into_inner();
        Ok(response
            .partitions
            .into_iter()
            .map(|p| {
                partition_result(
                    p.topic.clone(),
                    p.partition,
                    p.error_code(),
                    p.error_message,
                )
            })
            .collect())
    }

    /// Kafka's ElectLeaders: the preferred replica takes over each partition
    /// (or, `unclean`, partitions without a serving leader get one); every
    /// partition when `partitions` is `None`, and then only those that
    /// needed an election are reported.
    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<Vec<PartitionResult>> {
        let Some(topics) = by_topic(partitions) else {
            return Ok(Vec::new());
        };
        let request = pb::ElectLeadersRequest { unclean, topics };
        let response = self
            .cluster
            .call_controller(request, |mut c, r| async move { c.elect_leaders(r).await })
            .await?
            .into_inner();
        Ok(response
            .partitions
            .into_iter()
            .map(|p| {
                partition_result(
                    p.topic.clone(),
                    p.partition,
                    p.error_code(),
                    p.error_message,
                )
            })
            .collect())
    }

    /// The reassignments in progress (of `partitions` only, when given).
    pub async fn list_partition_reassignments(
        &self,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<Vec<Reassignment>> {
        let Some(topics) = by_topic(partitions) else {
            return Ok(Vec::new());
        };
        let request = pb::ListPartitionReassignmentsRequest { topics };
        let response = self
            .cluster
            .call_controller(request, |mut c, r| async move {
                c.list_partition_reassignments(r).await
            })
            .await?
            .into_inner();
        Ok(response
            .reassignments
            .into_iter()
            .map(|r| Reassignment {
                topic: r.topic,
                partition: r.partition,
                replicas: r.replicas,
                adding_replicas: r.adding_replicas,
                removing_replicas: r.removing_replicas,
            })
            .collect())
    }

    /// The replicas of every partition of `topics` (every topic when empty),
    /// from the controller's metadata alone (no offsets asked of leaders).
    pub async fn assignments(&self, topics: &[String]) -> Result<Assignments> {
        let md = self
            .cluster
            .call_controller(
                pb::GetMetadataRequest {
                    topics: topics.to_vec(),
                },
                |mut c, r| async move { c.get_metadata(r).await },
            )
            .await?
            .into_inner();
        let mut out = Assignments::new();
        for t in md.topics {
            if t.error_code() != ErrorCode::None {
                return Err(ClientError::server(
                    t.error_code(),
                    format!("topic {} does not exist", t.name),
                ));
            }
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    // During a move, the target replicas: where the partition is going.
                    let target = p
                        .replicas
                        .iter()
                        .copied()
                        .filter(|r| !p.removing_replicas.contains(r))
                        .collect();
                    (p.partition, target)
                })
                .collect();
            out.insert(t.name, partitions);
        }
        Ok(out)
    }
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No broker to place replicas on.
    #[error("no brokers to place replicas on")]
    NoBrokers,
    /// More replicas per partition than brokers.
    #[error(
        "replication factor {replication_factor} is more than the {brokers} broker(s) to place replicas on"
    )]
    TooFewBrokers {
        /// Replicas per partition wanted.
        replication_factor: usize,
        /// Brokers available.
        brokers: usize,
    },
}

/// Replicas of `topics` spread evenly over `brokers` (id and rack) with as
/// few moves as possible: a replica stays where it is unless its broker is
/// not in `brokers`, holds more than its share, or shares a rack with
/// another replica of its partition while a free rack exists; replicas that
/// must move go to the least loaded broker, in another rack where one is
/// free; then preferred leaders (each partition's first replica) are evened
/// out. `replication_factor` changes every partition's replica count.
/// Without `balance`, only replicas that must move (off brokers not in
/// `brokers`, or doubled up in a rack) move, and leaders stay where they are.
pub fn plan_moves(
    current: &Assignments,
    brokers: &[(i32, String)],
    replication_factor: Option<usize>,
    balance: bool,
) -> std::result::Result<Assignments, PlanError> {
    let mut ids: Vec<i32> = brokers.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err(PlanError::NoBrokers);
    }
    let rack = |id: i32| -> &str {
        brokers
            .iter()
            .find(|(b, _)| *b == id)
            .map_or("", |(_, r)| r.as_str())
    };
    let racks: std::collections::BTreeSet<&str> = ids.iter().map(|&id| rack(id)).collect();
    let rack_aware = racks.len() > 1 && !racks.contains("");
    let mut load: BTreeMap<i32, usize> = ids.iter().map(|&id| (id, 0)).collect();
    let mut plan = Assignments::new();
    let mut wants = BTreeMap::new();
    // Keep what may stay.
    for (topic, partitions) in current {
        for (&partition, replicas) in partitions {
            let want = replication_factor.unwrap_or(replicas.len());
            if want > ids.len() {
                return Err(PlanError::TooFewBrokers {
                    replication_factor: want,
                    brokers: ids.len(),
                });
            }
            let spread = rack_aware && racks.len() >= want;
            let mut kept: Vec<i32> = Vec::with_capacity(want);
            for &r in replicas {
                let rack_taken = spread && kept.iter().any(|&k| rack(k) == rack(r));
                if kept.len() < want && load.contains_key(&r) && !rack_taken {
                    kept.push(r);
                }
            }
            for r in &kept {
                *load.entry(*r).or_default() += 1;
            }
            wants.insert((topic.clone(), partition), want);
            plan.entry(topic.clone())
                .or_default()
                .insert(partition, kept);
        }
    }
    // Fill the gaps on the least loaded brokers.
    for (topic, partitions) in plan.iter_mut() {
        for (&partition, kept) in partitions.iter_mut() {
            let want = wants[&(topic.clone(), partition)];
            let spread = rack_aware && racks.len() >= want;
            while kept.len() < want {
                let Some(&pick) = ids
                    .iter()
                    .filter(|id| !kept.contains(id))
                    .min_by_key(|&&id| {
                        let rack_taken = spread && kept.iter().any(|&k| rack(k) == rack(id));
                        (rack_taken, load[&id], id)
                    })
                else {
                    break;
                };
                kept.push(pick);
                *load.entry(pick).or_default() += 1;
            }
        }
    }
    if !balance {
        return Ok(plan);
    }
    // Move one replica at a time from the most to the least loaded broker
    // until no two differ by more than one (or no move keeps the racks spread).
    loop {
        let mut by_load: Vec<i32> = ids.clone();
        by_load.sort_by_key(|id| (load[id], *id));
        let moved = by_load.iter().rev().any(|&over| {
            by_load.iter().any(|&under| {
                if load[&over] < load[&under] + 2 {
                    return false;
                }
                let movable = plan.iter_mut().find_map(|(topic, partitions)| {
                    partitions.iter_mut().find_map(|(&partition, kept)| {
                        let at = kept.iter().position(|&r| r == over)?;
                        if kept.contains(&under) {
                            return None;
                        }
                        let spread =
                            rack_aware && racks.len() >= wants[&(topic.clone(), partition)];
                        let rack_clash =
                            spread && kept.iter().any(|&k| k != over && rack(k) == rack(under));
                        (!rack_clash).then_some((kept, at))
                    })
                });
                let Some((kept, at)) = movable else {
                    return false;
                };
                kept[at] = under;
                *load.entry(over).or_default() -= 1;
                *load.entry(under).or_default() += 1;
                true
            })
        });
        if !moved {
            break;
        }
    }
    // Even out preferred leaders: a partition's first replica stays first
    // unless its broker already leads its share.
    let leader_share = wants.len().div_ceil(ids.len());
    let mut leads: BTreeMap<i32, usize> = BTreeMap::new();
    for partitions in plan.values_mut() {
        for kept in partitions.values_mut() {
            let Some(&first) = kept.first() else {
                continue;
            };
            if leads.get(&first).copied().unwrap_or(0) >= leader_share
                && let Some(i) =
                    (1..kept.len()).min_by_key(|&i| (leads.get(&kept[i]).copied().unwrap_or(0), i))
                && leads.get(&kept[i]).copied().unwrap_or(0) < leader_share
            {
                kept.swap(0, i);
            }
            *leads.entry(kept[0]).or_default() += 1;
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignments(parts: &[&[i32]]) -> Assignments {
        let mut a = Assignments::new();
        a.insert(
            "t".into(),
            parts
                .iter()
                .enumerate()
                .map(|(i, r)| (i as i32, r.to_vec()))
                .collect(),
        );
        a
    }

    fn brokers(ids: &[(i32, &str)]) -> Vec<(i32, String)> {
        ids.iter().map(|(id, r)| (*id, (*r).to_owned())).collect()
    }

    fn load(plan: &Assignments) -> BTreeMap<i32, usize> {
        let mut load = BTreeMap::new();
        for r in plan["t"].values().flatten() {
            *load.entry(*r).or_default() += 1;
        }
        load
    }

    #[test]
    fn a_balanced_topic_stays_put() {
        let current = assignments(&[&[1, 2], &[2, 3], &[3, 1]]);
        let plan =
            plan_moves(&current, &brokers(&[(1, ""), (2, ""), (3, "")]), None, true).unwrap();
        assert_eq!(plan, current);
    }

    #[test]
    fn a_new_broker_takes_its_share_and_a_retired_one_gives_everything_away() {
        let current = assignments(&[&[1, 2, 3][..]; 8]);
        let b = brokers(&[(1, ""), (2, ""), (3, ""), (4, "")]);
        let plan = plan_moves(&current, &b, None, true).unwrap();
        assert_eq!(
            load(&plan),
            BTreeMap::from([(1, 6), (2, 6), (3, 6), (4, 6)])
        );
        let leaders: BTreeMap<i32, usize> = plan["t"].values().fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r[0]).or_default() += 1;
            m
        });
        assert!(leaders.values().all(|&n| n == 2), "{leaders:?}");
        let moved: usize = plan["t"]
            .iter()
            .map(|(p, r)| r.iter().filter(|b| !current["t"][p].contains(b)).count())
            .sum();
        assert_eq!(moved, 6, "only broker 4's share moves");

        // Draining broker 4 moves its replicas only.
        let retired =
            plan_moves(&plan, &brokers(&[(1, ""), (2, ""), (3, "")]), None, false).unwrap();
        assert!(
            retired["t"]
                .values()
                .all(|r| r.len() == 3 && !r.contains(&4))
        );
        assert_eq!(load(&retired), BTreeMap::from([(1, 8), (2, 8), (3, 8)]));
    }

    #[test]
    fn replicas_spread_over_racks_and_bad_factors_are_refused() {
        let current = assignments(&[&[1, 2], &[1, 2], &[3, 4], &[2, 1]]);
        let b = brokers(&[(1, "a"), (2, "a"), (3, "b"), (4, "b")]);
        let plan = plan_moves(&current, &b, None, true).unwrap();
        for r in plan["t"].values() {
            let rack = |id: i32| if id <= 2 { "a" } else { "b" };
            assert_ne!(rack(r[0]), rack(r[1]), "{plan:?}");
        }
        assert_eq!(
            plan_moves(&current, &b, Some(5), true),
            Err(PlanError::TooFewBrokers {
                replication_factor: 5,
                brokers: 4
            })
        );
        let grown = plan_moves(&current, &b, Some(3), true).unwrap();
        assert!(grown["t"].values().all(|r| r.len() == 3));
        assert_eq!(
            plan_moves(&current, &[], None, true),
            Err(PlanError::NoBrokers)
        );
    }
}
