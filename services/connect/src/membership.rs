//! The worker group: workers of one connect cluster join a group (Kafka's
//! `group.id`, protocol type `connect`) on the group coordinator; the leader
//! shares every connector and task among the members and each member runs
//! its share. A worker that dies stops heartbeating, and after the session
//! timeout its units go to the survivors.
//!
//! Rebalances are incremental: a member keeps running its units while the
//! group rebalances. The leader keeps units where they are up to a fair
//! share; a unit that must move from one live member to another is first
//! taken away (its owner stops it and rejoins at once) and given to the new
//! owner in the next generation, so no unit ever runs on two workers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use runnel_client::{Cluster, ErrorCode};
use runnel_common::backoff::Backoff;
use runnel_common::shutdown::CancellationToken;
use runnel_proto::coordinator::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::store::Store;
use crate::worker::{Unit, Worker, units_of};

/// The protocol type of connect worker groups.
pub const PROTOCOL_TYPE: &str = "connect";
const PROTOCOL: &str = "sessioned";

/// What a member tells the group when it joins.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemberMeta {
    /// Its REST address.
    pub url: String,
    /// How far it has read the config topic.
    pub config_offset: i64,
    /// What it runs now.
    pub owned: Vec<Unit>,
}

/// What the leader gives a member.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Assignment {
    /// The leader's member id.
    pub leader: String,
    /// The leader's REST address.
    pub leader_url: String,
    /// The config topic offset the assignment was made at.
    pub config_offset: i64,
    /// Units to run.
    pub units: Vec<Unit>,
    /// Every unit the leader shared out: a config change that alters this
    /// set calls for a new assignment.
    pub all: Vec<Unit>,
    /// Units were taken away for another member: rejoin once they are stopped.
    pub rejoin: bool,
}

/// Worker group timing (Kafka's connect worker configs).
#[derive(Debug, Clone)]
pub struct Timing {
    /// `session.timeout.ms`.
    pub session: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat: Duration,
    /// `rebalance.timeout.ms`.
    pub rebalance: Duration,
}

/// Shares `units` among `members` (member id → the units it runs now):
/// connectors and tasks are balanced each on their own, as Kafka does, so
/// tasks spread over the workers however connectors fall.
pub fn assign(
    members: &BTreeMap<String, Vec<Unit>>,
    units: &BTreeSet<Unit>,
) -> BTreeMap<String, (Vec<Unit>, bool)> {
    let (tasks, connectors): (BTreeSet<Unit>, BTreeSet<Unit>) =
        units.iter().cloned().partition(|u| u.task.is_some());
    let mut out = assign_pool(members, &connectors);
    for (member, (units, rejoin)) in assign_pool(members, &tasks) {
        let entry = out.entry(member).or_default();
        entry.0.extend(units);
        entry.0.sort();
        entry.1 |= rejoin;
    }
    out
}

fn assign_pool(
    members: &BTreeMap<String, Vec<Unit>>,
    units: &BTreeSet<Unit>,
) -> BTreeMap<String, (Vec<Unit>, bool)> {
    let mut out: BTreeMap<String, (Vec<Unit>, bool)> = members
        .keys()
        .map(|m| (m.clone(), (Vec::new(), false)))
        .collect();
    if members.is_empty() {
        return out;
    }
    let cap = units.len().div_ceil(members.len());
    let mut owner: BTreeMap<&Unit, &String> = BTreeMap::new();
    let mut target: BTreeMap<&String, Vec<Unit>> =
        members.keys().map(|m| (m, Vec::new())).collect();
    for (member, owned) in members {
        for u in owned {
            // Claims on units of the other pool are settled there.
            if !units.contains(u) || owner.contains_key(u) {
                continue;
            }
            owner.insert(u, member);
            if let Some(t) = target.get_mut(member)
                && t.len() < cap
            {
                t.push(u.clone());
            }
        }
    }
    let placed: BTreeSet<Unit> = target.values().flatten().cloned().collect();
    for u in units.iter().filter(|u| !placed.contains(*u)) {
        if let Some((_, t)) = target.iter_mut().min_by_key(|(m, t)| (t.len(), *m)) {
            t.push(u.clone());
        }
    }
    // Move units from the fullest member to the emptiest until they differ by one at most.
    while let (Some((max_m, max_n)), Some((min_m, min_n))) = (
        target
            .iter()
            .map(|(m, t)| (*m, t.len()))
            .max_by_key(|(m, n)| (*n, std::cmp::Reverse(*m))),
        target
            .iter()
            .map(|(m, t)| (*m, t.len()))
            .min_by_key(|(m, n)| (*n, *m)),
    ) {
        if max_n <= min_n + 1 {
            break;
        }
        let moved = target.get_mut(max_m).and_then(Vec::pop);
        if let (Some(u), Some(t)) = (moved, target.get_mut(min_m)) {
            t.push(u);
        }
    }
    for (member, planned) in target {
        for u in planned {
            match owner.get(&u) {
                Some(current) if *current != member => {
                    // Still running elsewhere: its owner gives it up first.
                    if let Some(o) = out.get_mut(*current) {
                        o.1 = true;
                    }
                }
                _ => {
                    if let Some(o) = out.get_mut(member) {
                        o.0.push(u);
                    }
                }
            }
        }
    }
    for (units, _) in out.values_mut() {
        units.sort();
    }
    out
}

/// Who this worker is in the group and what it runs.
pub struct Participant {
    /// The cluster the coordinator is found through.
    pub cluster: Arc<Cluster>,
    /// `group.id`.
    pub group_id: String,
    /// This worker's REST address.
    pub url: String,
    /// Session, heartbeat and rebalance timing.
    pub timing: Timing,
    /// The units' runner.
    pub worker: Arc<Worker>,
    /// The internal topics.
    pub store: Arc<Store>,
}

/// Runs this worker's group membership until `shutdown`; `ready` is set
/// once the first assignment has been taken up.
pub async fn run(
    who: Participant,
    ready: runnel_common::admin::Readiness,
    shutdown: CancellationToken,
) {
    let mut member = Member {
        cluster: who.cluster,
        group_id: who.group_id,
        url: who.url,
        timing: who.timing,
        worker: who.worker,
        store: who.store,
        member_id: String::new(),
        coordinator: None,
    };
    let mut configs = member.store.configs();
    let mut restarts = member.store.restarts();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let joined = tokio::select! {
            () = shutdown.cancelled() => break,
            r = member.join() => r,
        };
        let (generation, assignment) = match joined {
            Ok(j) => {
                backoff.reset();
                j
            }
            Err(e) => {
                tracing::warn!(error = %e, "joining the connect worker group failed; retrying");
                member.coordinator = None;
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = backoff.wait() => {}
                }
                continue;
            }
        };
        if !member
            .store
            .wait_for_configs(assignment.config_offset, member.timing.rebalance)
            .await
        {
            tracing::warn!(
                offset = assignment.config_offset,
                "config topic not read up to the assignment's offset; rejoining"
            );
            continue;
        }
        tracing::info!(generation, units = assignment.units.len(), leader = %assignment.leader, "connect worker group assignment");
        let units: BTreeSet<Unit> = assignment.units.iter().cloned().collect();
        member.worker.assign(units, generation).await;
        ready.set(true);
        if assignment.rejoin {
            continue;
        }
        let expected: BTreeSet<Unit> = assignment.all.iter().cloned().collect();
        if units_of(&configs.borrow_and_update()) != expected {
            // Configs changed while the group was settling.
            continue;
        }
        let mut last_ok = Instant::now();
        let mut tick = tokio::time::interval(member.timing.heartbeat);
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    member.leave().await;
                    member.worker.stop_all("UNASSIGNED").await;
                    return;
                }
                _ = tick.tick() => {
                    match member.heartbeat(generation).await {
                        Ok(ErrorCode::None) => last_ok = Instant::now(),
                        Ok(ErrorCode::RebalanceInProgress) => break,
                        Ok(ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration | ErrorCode::FencedInstanceId) => {
                            tracing::warn!("dropped by the connect worker group; stopping every unit and rejoining");
                            member.worker.stop_all("UNASSIGNED").await;
                            member.member_id.clear();
                            break;
                        }
                        Ok(code) => {
                            tracing::debug!(?code, "heartbeat refused");
                            member.coordinator = None;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "heartbeat failed");
                            member.coordinator = None;
                        }
                    }
                    if last_ok.elapsed() > member.timing.session {
                        // The group has given our units to others by now.
                        tracing::warn!("no heartbeat got through for the session timeout; stopping every unit");
                        member.worker.stop_all("UNASSIGNED").await;
                        break;
                    }
                }
                r = configs.changed() => {
                    if r.is_err() {
                        return;
                    }
                    member.worker.reconcile(None).await;
                    if units_of(&configs.borrow_and_update()) != expected {
                        break;
                    }
                }
                r = restarts.recv() => {
                    if let Ok(req) = r {
                        member.worker.reconcile(Some(&req)).await;
                    }
                }
            }
        }
    }
    member.leave().await;
    member.worker.stop_all("UNASSIGNED").await;
}

struct Member {
    cluster: Arc<Cluster>,
    group_id: String,
    url: String,
    timing: Timing,
    worker: Arc<Worker>,
    store: Arc<Store>,
    member_id: String,
    coordinator: Option<String>,
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
enum JoinError {
    #[error(transparent)]
    Client(#[from] runnel_client::ClientError),
    #[error("the group refused: {0:?} {1}")]
    Refused(ErrorCode, String),
    #[error("unreadable assignment: {0}")]
    Assignment(String),
}

fn coordinator_moved(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::CoordinatorLoadInProgress
    )
}

impl Member {
    async fn coordinator(
        &mut self,
    ) -> Result<runnel_client::cluster::Coordinator, runnel_client::ClientError> {
        let addr = match &self.coordinator {
            Some(a) => a.clone(),
            None => {
                let (_, a) = self.cluster.find_coordinator(&self.group_id).await?;
                self.coordinator = Some(a.clone());
                a
            }
        };
        self.cluster.coordinator_at(&addr)
    }

    async fn join(&mut self) -> Result<(i32, Assignment), JoinError> {
        let deadline = Instant::now() + self.timing.rebalance * 2;
        loop {
            if Instant::now() > deadline {
                return Err(JoinError::Refused(
                    ErrorCode::RebalanceInProgress,
                    "the group did not settle".into(),
                ));
            }
            let meta = MemberMeta {
                url: self.url.clone(),
                config_offset: self.store.current().offset,
                owned: self.worker.assigned().into_iter().collect(),
            };
            let mut c = self.coordinator().await?;
            let join = c
                .join_group(pb::JoinGroupRequest {
                    group_id: self.group_id.clone(),
                    session_timeout_ms: self.timing.session.as_millis() as i32,
                    rebalance_timeout_ms: self.timing.rebalance.as_millis() as i32,
                    member_id: self.member_id.clone(),
                    group_instance_id: String::new(),
                    protocol_type: PROTOCOL_TYPE.into(),
                    protocols: vec![pb::GroupProtocol {
                        name: PROTOCOL.into(),
                        metadata: serde_json::to_vec(&meta).unwrap_or_default().into(),
                    }],
                    client_id: self.url.clone(),
                    member_id_not_required: false,
                })
                .await;
            let join = match join {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    self.coordinator = None;
                    tracing::debug!(%status, "JoinGroup failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            match join.error_code() {
                ErrorCode::None => {}
                ErrorCode::MemberIdRequired => {
                    self.member_id = join.member_id;
                    continue;
                }
                ErrorCode::UnknownMemberId => {
                    self.member_id.clear();
                    continue;
                }
                ErrorCode::RebalanceInProgress => continue,
                code if coordinator_moved(code) => {
                    self.coordinator = None;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                code => return Err(JoinError::Refused(code, join.error_message)),
            }
            self.member_id = join.member_id.clone();
            let assignments = if join.leader == join.member_id {
                self.lead(&join).await
            } else {
                Vec::new()
            };
            let sync = c
                .sync_group(pb::SyncGroupRequest {
                    group_id: self.group_id.clone(),
                    generation_id: join.generation_id,
                    member_id: self.member_id.clone(),
                    group_instance_id: String::new(),
                    assignments,
                })
                .await;
            let sync = match sync {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    self.coordinator = None;
                    tracing::debug!(%status, "SyncGroup failed");
                    continue;
                }
            };
            match sync.error_code() {
                ErrorCode::None => {}
                ErrorCode::UnknownMemberId => {
                    self.member_id.clear();
                    continue;
                }
                ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration => continue,
                code if coordinator_moved(code) => {
                    self.coordinator = None;
                    continue;
                }
                code => return Err(JoinError::Refused(code, sync.error_message)),
            }
            let assignment: Assignment = serde_json::from_slice(&sync.assignment)
                .map_err(|e| JoinError::Assignment(e.to_string()))?;
            return Ok((join.generation_id, assignment));
        }
    }

    /// The leader's share-out.
    async fn lead(&self, join: &pb::JoinGroupResponse) -> Vec<pb::SyncGroupAssignment> {
        let metas: Vec<(String, MemberMeta)> = join
            .members
            .iter()
            .map(|m| {
                let meta = serde_json::from_slice(&m.metadata).unwrap_or_else(|e| {
                    tracing::warn!(member = %m.member_id, error = %e, "unreadable member metadata");
                    MemberMeta::default()
                });
                (m.member_id.clone(), meta)
            })
            .collect();
        let newest = metas
            .iter()
            .map(|(_, m)| m.config_offset)
            .max()
            .unwrap_or(0);
        if !self
            .store
            .wait_for_configs(newest, Duration::from_secs(5))
            .await
        {
            tracing::warn!(
                offset = newest,
                "leading with an older config view than a member's"
            );
        }
        let configs = self.store.current();
        let units = units_of(&configs);
        let owned: BTreeMap<String, Vec<Unit>> = metas
            .iter()
            .map(|(id, m)| (id.clone(), m.owned.clone()))
            .collect();
        let shares = assign(&owned, &units);
        let all: Vec<Unit> = units.into_iter().collect();
        let leader_url = metas
            .iter()
            .find(|(id, _)| *id == join.member_id)
            .map(|(_, m)| m.url.clone())
            .unwrap_or_default();
        shares
            .into_iter()
            .map(|(member_id, (units, rejoin))| pb::SyncGroupAssignment {
                member_id,
                assignment: serde_json::to_vec(&Assignment {
                    leader: join.member_id.clone(),
                    leader_url: leader_url.clone(),
                    config_offset: configs.offset,
                    units,
                    all: all.clone(),
                    rejoin,
                })
                .unwrap_or_default()
                .into(),
            })
            .collect()
    }

    async fn heartbeat(
        &mut self,
        generation: i32,
    ) -> Result<ErrorCode, runnel_client::ClientError> {
        let mut c = self.coordinator().await?;
        let r = c
            .heartbeat(pb::HeartbeatRequest {
                group_id: self.group_id.clone(),
                generation_id: generation,
                member_id: self.member_id.clone(),
                group_instance_id: String::new(),
            })
            .await
            .map_err(|s| runnel_client::ClientError::from_status("coordinator", s))?;
        Ok(r.into_inner().error_code())
    }

    async fn leave(&mut self) {
        if self.member_id.is_empty() {
            return;
        }
        if let Ok(mut c) = self.coordinator().await {
            let _ = c
                .leave_group(pb::LeaveGroupRequest {
                    group_id: self.group_id.clone(),
                    member_id: self.member_id.clone(),
                    group_instance_id: String::new(),
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(c: &str, t: Option<usize>) -> Unit {
        Unit {
            connector: c.into(),
            task: t,
        }
    }

    fn units(n: usize) -> BTreeSet<Unit> {
        (0..n).map(|i| u("c", Some(i))).collect()
    }

    #[test]
    fn a_lone_member_gets_everything() {
        let members = BTreeMap::from([("a".to_owned(), vec![])]);
        let out = assign(&members, &units(3));
        assert_eq!(out["a"].0.len(), 3);
        assert!(!out["a"].1);
    }

    #[test]
    fn tasks_spread_over_members_however_connectors_fall() {
        let all: BTreeSet<Unit> = (0..4)
            .flat_map(|i| [u(&format!("c{i}"), None), u(&format!("c{i}"), Some(0))])
            .collect();
        let members = BTreeMap::from([("a".to_owned(), vec![]), ("b".to_owned(), vec![])]);
        let out = assign(&members, &all);
        for m in ["a", "b"] {
            let tasks = out[m].0.iter().filter(|x| x.task.is_some()).count();
            assert_eq!(tasks, 2, "{m}: {:?}", out[m].0);
        }
    }

    #[test]
    fn a_new_member_gets_its_share_after_the_owner_lets_go() {
        let all = units(4);
        let mut members = BTreeMap::from([
            ("a".to_owned(), all.iter().cloned().collect::<Vec<_>>()),
            ("b".to_owned(), vec![]),
        ]);
        let first = assign(&members, &all);
        assert_eq!(first["a"].0.len(), 2, "a keeps its fair share");
        assert!(first["a"].1, "a rejoins after stopping what it gave up");
        assert!(first["b"].0.is_empty(), "nothing runs twice");
        members.insert("a".into(), first["a"].0.clone());
        let second = assign(&members, &all);
        assert_eq!(second["a"].0, first["a"].0);
        assert_eq!(second["b"].0.len(), 2);
        assert!(!second["a"].1 && !second["b"].1);
    }

    #[test]
    fn the_units_of_a_member_that_left_go_to_the_others() {
        let all = units(5);
        let members = BTreeMap::from([
            ("a".to_owned(), vec![u("c", Some(0)), u("c", Some(1))]),
            ("c".to_owned(), vec![u("c", Some(4))]),
        ]);
        let out = assign(&members, &all);
        let got: BTreeSet<Unit> = out.values().flat_map(|(v, _)| v.clone()).collect();
        assert_eq!(got, all);
        assert_eq!(out["a"].0.len() + out["c"].0.len(), 5);
        assert!(out["a"].0.len().abs_diff(out["c"].0.len()) <= 1);
        assert!(out["a"].0.contains(&u("c", Some(0))) && out["c"].0.contains(&u("c", Some(4))));
    }

    #[test]
    fn deleted_units_are_dropped_and_double_claims_resolved() {
        let all = units(2);
        let members = BTreeMap::from([
            ("a".to_owned(), vec![u("gone", None), u("c", Some(0))]),
            ("b".to_owned(), vec![u("c", Some(0))]),
        ]);
        let out = assign(&members, &all);
        let total: usize = out.values().map(|(v, _)| v.len()).sum();
        assert_eq!(total, 2);
        assert!(!out.values().any(|(v, _)| v.contains(&u("gone", None))));
    }
}
