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
//! offset, else per `auto.offset.reset`. With `group.protocol=consumer` the
//! coordinator assigns instead (KIP-848).
//!
//! This file is the API ([`GroupConsumer`], [`GroupConfig`],
//! [`RebalanceListener`]) and what both protocols share (finding the
//! coordinator, moving to a new assignment, leaving); `classic.rs` joins and
//! syncs (JoinGroup, SyncGroup, the leader's assignment), `heartbeat.rs` is
//! the classic member's heartbeat task, `kip848.rs` the next-generation
//! protocol, and `offsets.rs` commits, committed-offset fetches and lag.
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

mod classic;
mod heartbeat;
mod kip848;
mod offsets;

use runnel_common::backoff::Backoff;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use regex::Regex;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;
use runnel_records::assignor::RebalanceProtocol;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::{ClientConfig, Cluster, Coordinator};
use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, TopicPartition};
use crate::error::{ClientError, Result};

use self::kip848::NextGen;

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
    /// User data in this member's subscription (classic protocol), which
    /// every member can read back through DescribeGroups: how an
    /// application tells the others where it serves (Kafka Streams'
    /// `application.server`).
    pub subscription_user_data: Option<Vec<u8>>,
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
            subscription_user_data: None,
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

    /// The group and this member as a transactional producer's
    /// `send_offsets_to_transaction` names them (Kafka's `groupMetadata()`),
    /// so the coordinator refuses the commit if this member was fenced.
    pub fn group_metadata(&self) -> crate::producer::ConsumerGroupMetadata {
        let (member_id, generation_id) = self.member();
        crate::producer::ConsumerGroupMetadata {
            group_id: self.config.group_id.clone(),
            generation_id,
            member_id,
            group_instance_id: self.config.group_instance_id.clone(),
        }
    }

    /// The offset of the next record `poll` returns for `tp`.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.consumer.position(tp)
    }

    /// `tp`'s end as its last fetch reported it (see
    /// [`Consumer::fetched_end`]).
    pub fn fetched_end(&self, tp: &TopicPartition) -> Option<i64> {
        self.consumer.fetched_end(tp)
    }

    /// Reads `tp` (one of this member's partitions) from `offset` next
    /// (Kafka's `seek`): to go back to the committed offsets after an
    /// aborted transaction.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) {
        self.consumer.seek(tp, offset);
    }

    /// Whether the next `poll` takes part in a rebalance first (the
    /// coordinator asked for one, or this member's subscription changed)
    /// while this member is still in its generation,
    /// so work on the current partitions can be committed before they may
    /// be revoked. The classic protocol only; with KIP-848 partitions move
    /// one by one and this is always false.
    pub fn rebalance_pending(&self) -> bool {
        self.config.group_protocol == GroupProtocol::Classic
            && self.shared.lock().state == MemberState::Rejoin
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
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
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
                    backoff.wait().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn forget_coordinator(&self) {
        self.shared.lock().coordinator = None;
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
