//! The group consumer: members of a consumer group share the partitions of
//! the topics they subscribe to, each partition read by one member at a
//! time, with positions committed to the group's coordinator.
//!
//! It follows Kafka's classic protocol and its config names: the member
//! joins (`JoinGroup`), the leader assigns with the first assignor of
//! `partition.assignment.strategy` every member supports, everyone gets its
//! share (`SyncGroup`), a background task heartbeats every
//! `heartbeat.interval.ms`, and a member that stops polling for
//! `max.poll.interval.ms` leaves. Eager assignors (`range`, `roundrobin`)
//! revoke everything before a rebalance; `cooperative-sticky` revokes only
//! the partitions that move (KIP-429). Positions start at the committed
//! offset, else per `auto.offset.reset`.
//!
//! ```no_run
//! # async fn demo() -> runnel_client::Result<()> {
//! use std::time::Duration;
//! use runnel_client::{ClientConfig, GroupConfig, GroupConsumer};
//!
//! let mut consumer = GroupConsumer::new(ClientConfig::new("127.0.0.1:9094"), GroupConfig::new("billing"));
//! consumer.subscribe(vec!["orders".into()]);
//! loop {
//!     for record in consumer.poll(Duration::from_secs(1)).await? {
//!         println!("{}-{}@{}", record.topic, record.partition, record.offset);
//!     }
//!     // enable.auto.commit commits positions every auto.commit.interval.ms.
//! }
//! # }
//! ```

mod kip848;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use regex::Regex;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;
use runnel_records::assignor::{GroupMember, PartitionAssignor, RebalanceProtocol, assignor_named};
use runnel_records::consumer_protocol::{MemberAssignment, Subscription};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::admin::Admin;
use crate::cluster::{ClientConfig, Cluster, Coordinator};
use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, TopicPartition};
use crate::error::{ClientError, Result};

use self::kip848::{NextGen, NextGenConfig};

/// How a group member behaves (Kafka's consumer group configs).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id`: a static member keeps its partitions across
    /// restarts within the session timeout.
    pub group_instance_id: Option<String>,
    /// `client.id`.
    pub client_id: String,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms` (also the rebalance timeout).
    pub max_poll_interval: Duration,
    /// `enable.auto.commit`.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval: Duration,
    /// `partition.assignment.strategy`, in preference order.
    pub assignment_strategy: Vec<String>,
    /// `metadata.max.age.ms`: how often subscribed topics are looked up
    /// again (new topics matching a pattern, added partitions).
    pub metadata_max_age: Duration,
    /// The plain consumer's settings (fetching, `auto.offset.reset`).
    pub consumer: ConsumerConfig,
    /// `group.protocol`: classic (JoinGroup/SyncGroup, client-side
    /// assignors) or consumer (KIP-848, assignment on the coordinator).
    pub group_protocol: GroupProtocol,
    /// `group.remote.assignor` for the consumer protocol (`uniform`, `range`;
    /// none: the coordinator's default).
    pub group_remote_assignor: Option<String>,
}

/// `group.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupProtocol {
    /// Kafka's classic protocol.
    #[default]
    Classic,
    /// The next-generation protocol of KIP-848.
    Consumer,
}

impl GroupConfig {
    /// Kafka's defaults for group `group_id`.
    pub fn new(group_id: impl Into<String>) -> Self {
        GroupConfig {
            group_id: group_id.into(),
            group_instance_id: None,
            client_id: "runnel".into(),
            session_timeout: Duration::from_millis(45_000),
            heartbeat_interval: Duration::from_millis(3_000),
            max_poll_interval: Duration::from_millis(300_000),
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_millis(5_000),
            assignment_strategy: vec!["range".into(), "cooperative-sticky".into()],
            metadata_max_age: Duration::from_millis(5_000),
            consumer: ConsumerConfig::default(),
            group_protocol: GroupProtocol::Classic,
            group_remote_assignor: None,
        }
    }
}

/// Told when this member's partitions change. Kafka's
/// `ConsumerRebalanceListener`: commit or flush work for revoked
/// partitions, set up for assigned ones.
pub trait RebalanceListener: Send + Sync {
    /// These partitions are being taken away; their positions were
    /// committed first when auto commit is on.
    fn on_partitions_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// These partitions are this member's now.
    fn on_partitions_assigned(&mut self, _partitions: &[TopicPartition]) {}
    /// These partitions were lost without a chance to commit (the member
    /// was dropped by the group); another member may already read them.
    fn on_partitions_lost(&mut self, _partitions: &[TopicPartition]) {}
}

#[derive(Debug, Clone)]
enum Subscribed {
    Topics(Vec<String>),
    Pattern(Regex),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberState {
    /// Not in a generation: join on the next poll.
    Unjoined,
    /// In a generation.
    Stable,
    /// The group is rebalancing: join again on the next poll.
    Rejoin,
    /// Dropped by the group: partitions are lost, join again as a new member.
    Lost,
}

#[derive(Debug)]
struct Membership {
    member_id: String,
    generation: i32,
    state: MemberState,
    coordinator: Option<String>,
    last_poll: Instant,
}

/// A member of a consumer group.
pub struct GroupConsumer {
    cluster: Arc<Cluster>,
    consumer: Consumer,
    config: GroupConfig,
    subscribed: Option<Subscribed>,
    /// Topics the subscription matched when the member last joined, with
    /// their partition counts.
    topics: BTreeMap<String, i32>,
    shared: Arc<Mutex<Membership>>,
    heartbeat: Option<JoinHandle<()>>,
    listener: Option<Box<dyn RebalanceListener>>,
    owned: Vec<TopicPartition>,
    leader: bool,
    /// Partition counts the leader assigned from.
    assigned_from: BTreeMap<String, i32>,
    protocol: Option<RebalanceProtocol>,
    last_auto_commit: Instant,
    last_metadata_check: Instant,
    /// The KIP-848 heartbeat task, with `group.protocol=consumer`.
    next_gen: Option<NextGen>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.config.group_id)
            .field("owned", &self.owned)
            .finish_non_exhaustive()
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

fn server(code: ErrorCode, message: impl Into<String>) -> ClientError {
    ClientError::Server {
        code,
        message: message.into(),
    }
}

/// Codes after which finding the coordinator again may help.
pub(crate) fn coordinator_moved(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::CoordinatorLoadInProgress
    )
}

impl GroupConsumer {
    /// A member of `config.group_id` in the cluster at `client.bootstrap`.
    pub fn new(client: ClientConfig, config: GroupConfig) -> GroupConsumer {
        Self::with_cluster(Cluster::new(client), config)
    }

    /// A member sharing connections with other clients of `cluster`.
    pub fn with_cluster(cluster: Arc<Cluster>, config: GroupConfig) -> GroupConsumer {
        let now = Instant::now();
        GroupConsumer {
            consumer: Consumer::with_cluster(Arc::clone(&cluster), config.consumer.clone()),
            cluster,
            config,
            subscribed: None,
            topics: BTreeMap::new(),
            shared: Arc::new(Mutex::new(Membership {
                member_id: String::new(),
                generation: -1,
                state: MemberState::Unjoined,
                coordinator: None,
                last_poll: now,
            })),
            heartbeat: None,
            listener: None,
            owned: Vec::new(),
            leader: false,
            assigned_from: BTreeMap::new(),
            protocol: None,
            last_auto_commit: now,
            last_metadata_check: now,
            next_gen: None,
        }
    }

    /// Subscribes to these topics (replacing any earlier subscription).
    pub fn subscribe(&mut self, topics: Vec<String>) {
        self.set_subscription(Subscribed::Topics(topics));
    }

    /// Subscribes to every topic whose whole name matches `pattern`,
    /// including topics created later (checked every `metadata.max.age.ms`).
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let anchored = Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| ClientError::Invalid(format!("invalid topic pattern {pattern:?}: {e}")))?;
        self.set_subscription(Subscribed::Pattern(anchored));
        Ok(())
    }

    fn set_subscription(&mut self, s: Subscribed) {
        self.subscribed = Some(s);
        let mut shared = self.shared.lock();
        if shared.state == MemberState::Stable {
            shared.state = MemberState::Rejoin;
        }
    }

    /// Calls `listener` when partitions are assigned, revoked or lost.
    pub fn set_rebalance_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    /// The partitions this member reads now.
    pub fn assignment(&self) -> &[TopicPartition] {
        &self.owned
    }

    /// This member's id and generation (empty and -1 before it joined).
    pub fn member(&self) -> (String, i32) {
        let s = self.shared.lock();
        (s.member_id.clone(), s.generation)
    }

    /// The offset of the next record `poll` returns for `tp`.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.consumer.position(tp)
    }

    /// Records from this member's partitions, waiting up to `timeout`. Joins
    /// the group first, takes part in rebalances, and commits positions
    /// every `auto.commit.interval.ms` when auto commit is on.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if self.subscribed.is_none() {
            return Err(ClientError::Invalid(
                "subscribe before polling a group consumer".into(),
            ));
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.shared.lock().last_poll = Instant::now();
            if self.config.group_protocol == GroupProtocol::Consumer {
                self.next_gen_step().await?;
            } else {
                self.check_metadata().await;
                let state = self.shared.lock().state;
                if state != MemberState::Stable {
                    self.rejoin(deadline).await?;
                }
            }
            self.maybe_auto_commit().await;
            let now = Instant::now();
            // Short slices, so a rebalance is noticed while waiting for records.
            let slice = deadline
                .saturating_duration_since(now)
                .min(Duration::from_millis(200));
            let records = self.consumer.poll(slice).await?;
            if !records.is_empty() || Instant::now() >= deadline {
                return Ok(records);
            }
        }
    }

    /// `group.protocol=consumer`: starts the heartbeat task, then applies
    /// the coordinator's latest assignment: revokes what it no longer
    /// holds (committing first with auto commit), takes what is new at
    /// the committed offsets, and reports what it owns at once.
    async fn next_gen_step(&mut self) -> Result<()> {
        if self.next_gen.is_none() {
            let topics = self.resolve_topics().await?.into_keys().collect();
            let shared = Arc::clone(&self.shared);
            self.next_gen = Some(NextGen::start(
                Arc::clone(&self.cluster),
                self.next_gen_config(),
                topics,
                Box::new(move |member_id, epoch| {
                    let mut m = shared.lock();
                    m.member_id = member_id.to_owned();
                    m.generation = epoch;
                }),
            ));
        }
        if self.last_metadata_check.elapsed() >= self.config.metadata_max_age {
            self.last_metadata_check = Instant::now();
            if let Ok(topics) = self.resolve_topics().await
                && let Some(ng) = &self.next_gen
            {
                let mut s = ng.state.lock();
                let topics: Vec<String> = topics.into_keys().collect();
                if topics != s.topics {
                    s.topics = topics;
                    s.subscription_sent = false;
                }
            }
        }
        let Some(ng) = &self.next_gen else {
            return Ok(());
        };
        let (assignment, lost) = {
            let mut s = ng.state.lock();
            let taken = (s.assignment.take(), std::mem::take(&mut s.lost));
            let mut m = self.shared.lock();
            m.state = MemberState::Stable;
            m.coordinator = s.coordinator.clone();
            taken
        };
        let wake = Arc::clone(&ng.wake);
        let state = Arc::clone(&ng.state);
        if lost && !self.owned.is_empty() {
            let gone = std::mem::take(&mut self.owned);
            tracing::warn!(group = %self.config.group_id, partitions = gone.len(), "partitions lost: the group dropped this member");
            if let Some(l) = self.listener.as_mut() {
                l.on_partitions_lost(&gone);
            }
            self.consumer.assign(Vec::new()).await?;
            state.lock().owned.clear();
        }
        let Some(mut target) = assignment else {
            return Ok(());
        };
        target.sort();
        if target == self.owned {
            return Ok(());
        }
        self.take_assignment(target, RebalanceProtocol::Cooperative)
            .await?;
        // take_assignment asks a classic member to rejoin after revoking;
        // here the heartbeat reports the release instead.
        self.shared.lock().state = MemberState::Stable;
        state.lock().owned = self.owned.clone();
        wake.notify_one();
        Ok(())
    }

    fn next_gen_config(&self) -> NextGenConfig {
        NextGenConfig {
            group_id: self.config.group_id.clone(),
            instance_id: self.config.group_instance_id.clone().unwrap_or_default(),
            rebalance_timeout_ms: self.config.max_poll_interval.as_millis() as i32,
            server_assignor: self
                .config
                .group_remote_assignor
                .clone()
                .unwrap_or_default(),
        }
    }

    /// Notices topics that now match the subscription, and (as leader)
    /// partitions added to assigned topics: either needs a new generation.
    async fn check_metadata(&mut self) {
        if self.shared.lock().state != MemberState::Stable
            || self.last_metadata_check.elapsed() < self.config.metadata_max_age
        {
            return;
        }
        self.last_metadata_check = Instant::now();
        let Ok(topics) = self.resolve_topics().await else {
            return;
        };
        let changed_topics = topics.keys().ne(self.topics.keys());
        let changed_counts = self.leader
            && topics
                .iter()
                .any(|(t, n)| self.assigned_from.get(t).is_some_and(|m| m != n));
        if changed_topics || changed_counts {
            tracing::info!(group = %self.config.group_id, "subscribed topics changed; rejoining");
            self.shared.lock().state = MemberState::Rejoin;
        }
    }

    /// The subscribed topics that exist, with their partition counts.
    async fn resolve_topics(&self) -> Result<BTreeMap<String, i32>> {
        let md = self.cluster.refresh(&[], false).await?;
        let mut out = BTreeMap::new();
        match &self.subscribed {
            Some(Subscribed::Topics(ts)) => {
                for t in ts {
                    if let Some(m) = md.topics.get(t) {
                        out.insert(t.clone(), m.partitions.len() as i32);
                    }
                }
            }
            Some(Subscribed::Pattern(re)) => {
                for (t, m) in &md.topics {
                    if re.is_match(t) && !t.starts_with("__") {
                        out.insert(t.clone(), m.partitions.len() as i32);
                    }
                }
            }
            None => {}
        }
        Ok(out)
    }

    /// A client for the group's coordinator, finding it if needed.
    async fn coordinator(&self, deadline: Instant) -> Result<Coordinator> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let known = self.shared.lock().coordinator.clone();
            if let Some(addr) = known {
                return self.cluster.coordinator_at(&addr);
            }
            match self.cluster.find_coordinator(&self.config.group_id).await {
                Ok((_, addr)) => {
                    self.shared.lock().coordinator = Some(addr);
                }
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    tracing::debug!(error = %e, "group coordinator not found yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn forget_coordinator(&self) {
        self.shared.lock().coordinator = None;
    }

    fn assignors(&self) -> Result<Vec<Box<dyn PartitionAssignor>>> {
        self.config
            .assignment_strategy
            .iter()
            .map(|n| {
                assignor_named(n)
                    .ok_or_else(|| ClientError::Invalid(format!("unknown assignor {n:?}")))
            })
            .collect()
    }

    /// Joins (or rejoins) the group and takes up the new assignment.
    async fn rejoin(&mut self, poll_deadline: Instant) -> Result<()> {
        let assignors = self.assignors()?;
        if assignors.is_empty() {
            return Err(ClientError::Invalid(
                "partition.assignment.strategy is empty".into(),
            ));
        }
        let state = self.shared.lock().state;
        if state == MemberState::Lost {
            let lost = std::mem::take(&mut self.owned);
            if !lost.is_empty() {
                tracing::warn!(group = %self.config.group_id, partitions = lost.len(), "partitions lost: the group dropped this member");
                if let Some(l) = self.listener.as_mut() {
                    l.on_partitions_lost(&lost);
                }
            }
            self.consumer.assign(Vec::new()).await?;
            let mut s = self.shared.lock();
            if self.config.group_instance_id.is_none() {
                s.member_id.clear();
            }
            s.generation = -1;
        }
        let cooperative = assignors
            .iter()
            .all(|a| a.protocol() == RebalanceProtocol::Cooperative);
        if !cooperative && !self.owned.is_empty() {
            // Eager: give everything up before joining.
            self.revoke(self.owned.clone()).await;
            self.owned.clear();
            self.consumer.assign(Vec::new()).await?;
        }
        // A join may wait for the whole rebalance timeout; give it that long.
        let deadline = poll_deadline.max(Instant::now() + self.config.max_poll_interval);
        self.topics = self.resolve_topics().await?;
        let (member_id, generation) = {
            let s = self.shared.lock();
            (s.member_id.clone(), s.generation)
        };
        let subscription = Subscription {
            topics: self.topics.keys().cloned().collect(),
            user_data: None,
            owned_partitions: self.owned.clone(),
            generation,
            rack: None,
        }
        .encode();
        let mut member_id = member_id;
        let mut backoff = Duration::from_millis(50);
        loop {
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout {
                    what: format!("joining group {}", self.config.group_id),
                    ms: self.config.max_poll_interval.as_millis() as u64,
                });
            }
            let mut c = self.coordinator(deadline).await?;
            let join = c
                .join_group(pb::JoinGroupRequest {
                    group_id: self.config.group_id.clone(),
                    session_timeout_ms: self.config.session_timeout.as_millis() as i32,
                    rebalance_timeout_ms: self.config.max_poll_interval.as_millis() as i32,
                    member_id: member_id.clone(),
                    group_instance_id: self.config.group_instance_id.clone().unwrap_or_default(),
                    protocol_type: "consumer".into(),
                    protocols: assignors
                        .iter()
                        .map(|a| pb::GroupProtocol {
                            name: a.name().into(),
                            metadata: subscription.clone().into(),
                        })
                        .collect(),
                    client_id: self.config.client_id.clone(),
                    member_id_not_required: false,
                })
                .await;
            let join = match join {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    tracing::debug!(%status, "JoinGroup failed; finding the coordinator again");
                    self.forget_coordinator();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            match join.error_code() {
                ErrorCode::None => {}
                ErrorCode::MemberIdRequired => {
                    member_id = join.member_id;
                    continue;
                }
                ErrorCode::UnknownMemberId => {
                    member_id.clear();
                    continue;
                }
                ErrorCode::RebalanceInProgress => continue,
                code if coordinator_moved(code) => {
                    self.forget_coordinator();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
                code => return Err(server(code, join.error_message)),
            }
            member_id = join.member_id.clone();
            let leader = join.leader == join.member_id;
            let protocol = join.protocol_name.clone();
            let Some(assignor) = assignors.iter().find(|a| a.name() == protocol) else {
                return Err(server(
                    ErrorCode::InconsistentGroupProtocol,
                    format!("the group chose assignor {protocol:?}, which this member lacks"),
                ));
            };
            let assignments = if leader {
                self.assign(assignor.as_ref(), &join.members).await?
            } else {
                Vec::new()
            };
            let sync = c
                .sync_group(pb::SyncGroupRequest {
                    group_id: self.config.group_id.clone(),
                    generation_id: join.generation_id,
                    member_id: member_id.clone(),
                    group_instance_id: self.config.group_instance_id.clone().unwrap_or_default(),
                    assignments,
                })
                .await;
            let sync = match sync {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    tracing::debug!(%status, "SyncGroup failed; rejoining");
                    self.forget_coordinator();
                    continue;
                }
            };
            match sync.error_code() {
                ErrorCode::None => {}
                ErrorCode::UnknownMemberId => {
                    member_id.clear();
                    continue;
                }
                ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration => continue,
                code if coordinator_moved(code) => {
                    self.forget_coordinator();
                    continue;
                }
                code => return Err(server(code, sync.error_message)),
            }
            let assignment = MemberAssignment::decode(&sync.assignment)
                .map_err(|e| server(ErrorCode::InconsistentGroupProtocol, e.to_string()))?;
            {
                let mut s = self.shared.lock();
                s.member_id = member_id.clone();
                s.generation = join.generation_id;
                s.state = MemberState::Stable;
                s.last_poll = Instant::now();
            }
            self.leader = leader;
            self.protocol = Some(assignor.protocol());
            tracing::info!(
                group = %self.config.group_id,
                member = %member_id,
                generation = join.generation_id,
                partitions = assignment.partitions.len(),
                "joined group"
            );
            self.take_assignment(assignment.partitions, assignor.protocol())
                .await?;
            self.ensure_heartbeat();
            return Ok(());
        }
    }

    /// The leader's job: every member's share.
    async fn assign(
        &mut self,
        assignor: &dyn PartitionAssignor,
        members: &[pb::JoinGroupMember],
    ) -> Result<Vec<pb::SyncGroupAssignment>> {
        let mut group = Vec::with_capacity(members.len());
        let mut topics = BTreeSet::new();
        for m in members {
            let s = Subscription::decode(&m.metadata).unwrap_or_else(|e| {
                tracing::warn!(member = %m.member_id, error = %e, "unreadable subscription; assigning it nothing");
                Subscription::default()
            });
            topics.extend(s.topics.iter().cloned());
            group.push(GroupMember {
                member_id: m.member_id.clone(),
                group_instance_id: (!m.group_instance_id.is_empty())
                    .then(|| m.group_instance_id.clone()),
                topics: s.topics,
                owned: s.owned_partitions,
                generation: s.generation,
            });
        }
        let md = self.cluster.refresh(&[], false).await?;
        let counts: BTreeMap<String, i32> = topics
            .into_iter()
            .filter_map(|t| {
                let n = md.topics.get(&t)?.partitions.len() as i32;
                Some((t, n))
            })
            .collect();
        let assignment = assignor.assign(&counts, &group);
        self.assigned_from = counts;
        Ok(assignment
            .into_iter()
            .map(|(member_id, partitions)| pb::SyncGroupAssignment {
                member_id,
                assignment: MemberAssignment {
                    partitions,
                    user_data: None,
                }
                .encode()
                .into(),
            })
            .collect())
    }

    /// Moves to a new assignment: revokes what goes, positions what comes
    /// at the committed offsets.
    async fn take_assignment(
        &mut self,
        assigned: Vec<TopicPartition>,
        protocol: RebalanceProtocol,
    ) -> Result<()> {
        let revoked: Vec<TopicPartition> = self
            .owned
            .iter()
            .filter(|tp| !assigned.contains(tp))
            .cloned()
            .collect();
        let added: Vec<TopicPartition> = assigned
            .iter()
            .filter(|tp| !self.owned.contains(tp))
            .cloned()
            .collect();
        if !revoked.is_empty() {
            self.revoke(revoked.clone()).await;
        }
        self.consumer.assign(assigned.clone()).await?;
        let committed = self.committed(&added).await?;
        for tp in &added {
            if let Some(offset) = committed.get(tp).copied().flatten() {
                self.consumer.seek(tp, offset);
            }
        }
        self.owned = assigned;
        if let Some(l) = self.listener.as_mut() {
            match protocol {
                RebalanceProtocol::Eager => l.on_partitions_assigned(&self.owned),
                RebalanceProtocol::Cooperative => l.on_partitions_assigned(&added),
            }
        }
        // KIP-429: partitions given up here go to their new owner in a
        // second rebalance, which this member starts.
        if protocol == RebalanceProtocol::Cooperative && !revoked.is_empty() {
            self.shared.lock().state = MemberState::Rejoin;
        }
        Ok(())
    }

    /// Commits the revoked partitions' positions (with auto commit) and tells the listener.
    async fn revoke(&mut self, partitions: Vec<TopicPartition>) {
        if self.config.enable_auto_commit {
            let offsets = self.positions_of(&partitions);
            if let Err(e) = self.commit_offsets(offsets).await {
                tracing::warn!(error = %e, "committing revoked partitions failed");
            }
        }
        if let Some(l) = self.listener.as_mut() {
            l.on_partitions_revoked(&partitions);
        }
    }

    fn ensure_heartbeat(&mut self) {
        if self.heartbeat.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let task = Heartbeat {
            cluster: Arc::clone(&self.cluster),
            shared: Arc::clone(&self.shared),
            group_id: self.config.group_id.clone(),
            instance: self.config.group_instance_id.clone().unwrap_or_default(),
            interval: self.config.heartbeat_interval,
            session: self.config.session_timeout,
            max_poll_interval: self.config.max_poll_interval,
        };
        self.heartbeat = Some(tokio::spawn(task.run()));
    }

    fn positions_of(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        partitions
            .iter()
            .filter_map(|tp| Some((tp.clone(), self.consumer.position(tp)?)))
            .collect()
    }

    async fn maybe_auto_commit(&mut self) {
        if !self.config.enable_auto_commit
            || self.last_auto_commit.elapsed() < self.config.auto_commit_interval
        {
            return;
        }
        self.last_auto_commit = Instant::now();
        if let Err(e) = self.commit_sync().await {
            tracing::warn!(group = %self.config.group_id, error = %e, "auto commit failed");
        }
    }

    /// Commits the position of every partition this member reads, waiting
    /// for the coordinator to store it. Fails with REBALANCE_IN_PROGRESS,
    /// ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID when the generation moved on
    /// (Kafka's `CommitFailedException`): the partitions may be another's now.
    pub async fn commit_sync(&mut self) -> Result<()> {
        let offsets = self.positions_of(&self.owned);
        self.commit_offsets(offsets).await
    }

    /// Commits these offsets (the next offset to read, per partition).
    pub async fn commit_offsets(&self, offsets: Vec<(TopicPartition, i64)>) -> Result<()> {
        commit(
            &self.cluster,
            &self.shared,
            &self.config.group_id,
            self.config.group_instance_id.as_deref().unwrap_or_default(),
            offsets,
            Instant::now() + self.cluster.config().request_timeout,
        )
        .await
    }

    /// Starts committing every position now and returns at once; the
    /// handle gives the outcome.
    pub fn commit_async(&self) -> JoinHandle<Result<()>> {
        let offsets = self.positions_of(&self.owned);
        let (cluster, shared) = (Arc::clone(&self.cluster), Arc::clone(&self.shared));
        let group = self.config.group_id.clone();
        let instance = self.config.group_instance_id.clone().unwrap_or_default();
        let deadline = Instant::now() + self.cluster.config().request_timeout;
        tokio::spawn(async move {
            commit(&cluster, &shared, &group, &instance, offsets, deadline).await
        })
    }

    /// The group's committed offsets for `partitions` (None: nothing committed).
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<i64>>> {
        if partitions.is_empty() {
            return Ok(HashMap::new());
        }
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let request = pb::OffsetFetchRequest {
            group_id: self.config.group_id.clone(),
            topics: by_topic
                .into_iter()
                .map(|(t, ps)| pb::OffsetFetchTopic {
                    topic: t.to_owned(),
                    partitions: ps,
                })
                .collect(),
        };
        let deadline = Instant::now() + self.cluster.config().request_timeout;
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut c = self.coordinator(deadline).await?;
            let error = match c.offset_fetch(request.clone()).await {
                Ok(r) => {
                    let r = r.into_inner();
                    match r.error_code() {
                        ErrorCode::None => {
                            return Ok(r
                                .partitions
                                .into_iter()
                                .map(|p| {
                                    let offset = (p.offset >= 0).then_some(p.offset);
                                    (TopicPartition::new(p.topic, p.partition), offset)
                                })
                                .collect());
                        }
                        code if coordinator_moved(code) => server(code, r.error_message),
                        code => return Err(server(code, r.error_message)),
                    }
                }
                Err(status) => ClientError::from_status("coordinator", status),
            };
            self.forget_coordinator();
            if Instant::now() >= deadline {
                return Err(error);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// How far behind the log end each of this member's partitions is
    /// (log end offset minus position).
    pub async fn lag(&self) -> Result<Vec<(TopicPartition, i64)>> {
        let admin = Admin::with_cluster(Arc::clone(&self.cluster));
        let mut out = Vec::with_capacity(self.owned.len());
        for tp in &self.owned {
            let (_, end) = admin.offsets(&tp.topic, tp.partition).await?;
            let position = self.consumer.position(tp).unwrap_or(end);
            out.push((tp.clone(), (end - position).max(0)));
        }
        Ok(out)
    }

    /// Leaves the group: commits positions (with auto commit), tells the
    /// listener, and sends LeaveGroup so the partitions move at once. A
    /// static member does not leave: it keeps its place for the session
    /// timeout, to come back without a rebalance.
    pub async fn close(mut self) -> Result<()> {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if let Some(ng) = self.next_gen.take() {
            if !self.owned.is_empty() {
                self.revoke(self.owned.clone()).await;
            }
            ng.leave(&self.cluster, &self.next_gen_config()).await;
            return Ok(());
        }
        let stable = self.shared.lock().state == MemberState::Stable;
        if stable && !self.owned.is_empty() {
            self.revoke(self.owned.clone()).await;
        }
        let member_id = self.shared.lock().member_id.clone();
        if member_id.is_empty() || self.config.group_instance_id.is_some() {
            return Ok(());
        }
        let mut c = self
            .coordinator(Instant::now() + self.cluster.config().request_timeout)
            .await?;
        let r = c
            .leave_group(pb::LeaveGroupRequest {
                group_id: self.config.group_id.clone(),
                member_id,
                group_instance_id: String::new(),
            })
            .await
            .map_err(|s| ClientError::from_status("coordinator", s))?
            .into_inner();
        match r.error_code() {
            ErrorCode::None | ErrorCode::UnknownMemberId => Ok(()),
            code => Err(server(code, r.error_message)),
        }
    }
}

async fn commit(
    cluster: &Cluster,
    shared: &Mutex<Membership>,
    group: &str,
    instance: &str,
    offsets: Vec<(TopicPartition, i64)>,
    deadline: Instant,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        let (member_id, generation, addr) = {
            let s = shared.lock();
            (s.member_id.clone(), s.generation, s.coordinator.clone())
        };
        let addr = match addr {
            Some(a) => a,
            None => match cluster.find_coordinator(group).await {
                Ok((_, a)) => {
                    shared.lock().coordinator = Some(a.clone());
                    a
                }
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let request = pb::OffsetCommitRequest {
            group_id: group.to_owned(),
            generation_id: generation,
            member_id,
            group_instance_id: instance.to_owned(),
            partitions: offsets
                .iter()
                .map(|(tp, offset)| pb::OffsetCommitPartition {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: *offset,
                    leader_epoch: -1,
                    metadata: String::new(),
                })
                .collect(),
        };
        let result = cluster.coordinator_at(&addr)?.offset_commit(request).await;
        let error = match result {
            Ok(r) => {
                let failed = r
                    .into_inner()
                    .partitions
                    .into_iter()
                    .find(|p| p.error_code() != ErrorCode::None);
                match failed {
                    None => return Ok(()),
                    Some(p) if coordinator_moved(p.error_code()) => {
                        server(p.error_code(), p.error_message)
                    }
                    // KIP-848: the member's epoch moved on while the commit
                    // was in flight; the same offsets go again with the new one.
                    Some(p)
                        if p.error_code() == ErrorCode::StaleMemberEpoch
                            && shared.lock().generation != generation
                            && Instant::now() < deadline =>
                    {
                        continue;
                    }
                    Some(p) => {
                        let code = p.error_code();
                        if matches!(
                            code,
                            ErrorCode::RebalanceInProgress
                                | ErrorCode::IllegalGeneration
                                | ErrorCode::UnknownMemberId
                        ) {
                            let mut s = shared.lock();
                            if s.state == MemberState::Stable {
                                s.state = if code == ErrorCode::RebalanceInProgress {
                                    MemberState::Rejoin
                                } else {
                                    MemberState::Lost
                                };
                            }
                        }
                        return Err(server(
                            code,
                            format!(
                                "commit of {}-{} refused: {}",
                                p.topic, p.partition, p.error_message
                            ),
                        ));
                    }
                }
            }
            Err(status) => ClientError::from_status(&addr, status),
        };
        shared.lock().coordinator = None;
        if Instant::now() >= deadline {
            return Err(error);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// The background heartbeat of a member in a generation.
struct Heartbeat {
    cluster: Arc<Cluster>,
    shared: Arc<Mutex<Membership>>,
    group_id: String,
    instance: String,
    interval: Duration,
    session: Duration,
    max_poll_interval: Duration,
}

impl Heartbeat {
    async fn run(self) {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.interval).await;
            let (member_id, generation, state, addr, last_poll) = {
                let s = self.shared.lock();
                (
                    s.member_id.clone(),
                    s.generation,
                    s.state,
                    s.coordinator.clone(),
                    s.last_poll,
                )
            };
            if state != MemberState::Stable {
                last_ok = Instant::now();
                continue;
            }
            if last_poll.elapsed() > self.max_poll_interval {
                tracing::warn!(group = %self.group_id, "max.poll.interval.ms passed without a poll; leaving the group");
                self.leave(&member_id, addr.as_deref()).await;
                self.shared.lock().state = MemberState::Lost;
                continue;
            }
            let addr = match addr {
                Some(a) => a,
                None => match self.cluster.find_coordinator(&self.group_id).await {
                    Ok((_, a)) => {
                        self.shared.lock().coordinator = Some(a.clone());
                        a
                    }
                    Err(_) => continue,
                },
            };
            let Ok(mut c) = self.cluster.coordinator_at(&addr) else {
                continue;
            };
            let result = c
                .heartbeat(pb::HeartbeatRequest {
                    group_id: self.group_id.clone(),
                    generation_id: generation,
                    member_id,
                    group_instance_id: self.instance.clone(),
                })
                .await;
            let code = match result {
                Ok(r) => r.into_inner().error_code(),
                Err(_) => ErrorCode::CoordinatorNotAvailable,
            };
            let mut s = self.shared.lock();
            if s.generation != generation || s.state != MemberState::Stable {
                continue;
            }
            match code {
                ErrorCode::None => last_ok = Instant::now(),
                ErrorCode::RebalanceInProgress => {
                    last_ok = Instant::now();
                    s.state = MemberState::Rejoin;
                }
                ErrorCode::IllegalGeneration
                | ErrorCode::UnknownMemberId
                | ErrorCode::FencedInstanceId => s.state = MemberState::Lost,
                code if coordinator_moved(code) => s.coordinator = None,
                code => tracing::warn!(group = %self.group_id, ?code, "heartbeat refused"),
            }
            // The coordinator has dropped us by now: what we hold is lost.
            if s.state == MemberState::Stable && last_ok.elapsed() > self.session {
                s.state = MemberState::Lost;
            }
        }
    }

    async fn leave(&self, member_id: &str, addr: Option<&str>) {
        let Some(addr) = addr else {
            return;
        };
        if let Ok(mut c) = self.cluster.coordinator_at(addr) {
            let _ = c
                .leave_group(pb::LeaveGroupRequest {
                    group_id: self.group_id.clone(),
                    member_id: if self.instance.is_empty() {
                        member_id.to_owned()
                    } else {
                        String::new()
                    },
                    group_instance_id: self.instance.clone(),
                })
                .await;
        }
    }
}
