//! One consumer group under Kafka's classic group protocol.
//!
//! States, as Kafka's `GroupMetadata`:
//!
//! ```text
//! Empty ──join──▶ PreparingRebalance ──all rejoined / timeout──▶ CompletingRebalance
//!   ▲                  ▲      ▲                                       │ leader's SyncGroup
//!   └─ last member ────┘      └──── join, leave, member expired ──── Stable ◀┘
//! ```
//!
//! A rebalance waits for every known member to rejoin, or for the largest
//! rebalance timeout among them; members that did not rejoin are dropped.
//! The new generation's leader gets every member's subscription and
//! answers with the assignment in its SyncGroup; the caller stores the
//! generation ([`Group::take_store`], then [`Group::stored`]) before any
//! member gets its share, so an assignment never outlives a lost write. Heartbeats keep a
//! member's session; one silent for its session timeout is dropped. Static
//! members (`group.instance.id`) that rejoin take over their old identity
//! without a rebalance, fencing the old member id.
//!
//! The group never blocks: a join or sync that must wait returns
//! [`Step::Wait`] and its answer comes later as a [`Reply`] from whichever
//! call completes the phase (another member's join, the leader's sync, or
//! [`Group::tick`] when a deadline passes).

use std::collections::BTreeMap;

use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1::{GroupMemberValue, GroupValue};
use runnel_records::consumer_protocol::Subscription;

/// Milliseconds on the caller's clock.
pub type Ms = i64;

/// Group-wide limits (Kafka's broker configs of the same names).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: Ms,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: Ms,
    /// `group.initial.rebalance.delay.ms`: an empty group's first rebalance
    /// waits this long for more members to arrive.
    pub initial_rebalance_delay_ms: Ms,
    /// `group.max.size`.
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: usize::MAX,
        }
    }
}

/// Where the group is in its rebalance cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (offsets may still be stored).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// Kafka's name for the state (DescribeGroups, `runnel groups describe`).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
    /// The client's `client.id`.
    pub client_id: String,
    /// `session.timeout.ms`.
    pub session_timeout_ms: Ms,
    /// `max.poll.interval.ms`: how long a rebalance waits for this member.
    pub rebalance_timeout_ms: Ms,
    /// "consumer" for consumers; all members must agree.
    pub protocol_type: String,
    /// Protocols (assignors) in preference order, each with its metadata.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// KIP-394: a dynamic member without an id first gets one back with
    /// MEMBER_ID_REQUIRED and joins again with it.
    pub require_known_member_id: bool,
    /// The id to give the member if it needs one (the caller makes it unique).
    pub fresh_member_id: String,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Vec<u8>,
}

/// A JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    /// NONE or why not.
    pub error: ErrorCode,
    /// The new generation.
    pub generation_id: i32,
    /// The chosen protocol (assignor).
    pub protocol_name: String,
    /// The leader's member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// Every member, for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    /// A refusal with `error`.
    pub fn error(error: ErrorCode, member_id: &str) -> Self {
        JoinResponse {
            error,
            generation_id: -1,
            protocol_name: String::new(),
            leader: String::new(),
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup response: the member's assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    /// NONE or why not.
    pub error: ErrorCode,
    /// The assignment bytes the leader produced for this member.
    pub assignment: Vec<u8>,
}

impl SyncResponse {
    /// A refusal, without an assignment.
    pub fn error(error: ErrorCode) -> Self {
        SyncResponse {
            error,
            assignment: Vec::new(),
        }
    }
}

/// Answers a departing member's pending JoinGroup and SyncGroup with `error`.
fn dismiss(id: &str, m: &Member, error: ErrorCode, replies: &mut Vec<Reply>) {
    if m.awaiting_join {
        replies.push(Reply::Join(id.to_owned(), JoinResponse::error(error, id)));
    }
    if m.awaiting_sync {
        replies.push(Reply::Sync(id.to_owned(), SyncResponse::error(error)));
    }
}

/// An answer for a member that was told to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The JoinGroup of this member id completes.
    Join(String, JoinResponse),
    /// The SyncGroup of this member id completes.
    Sync(String, SyncResponse),
}

/// What a join or sync call does for its caller now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// The answer, at once.
    Respond(T),
    /// The answer comes later as a [`Reply`] for this member id.
    Wait(String),
}

#[derive(Debug, Clone)]
struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    session_timeout_ms: Ms,
    rebalance_timeout_ms: Ms,
    protocols: Vec<(String, Vec<u8>)>,
    assignment: Vec<u8>,
    last_heartbeat: Ms,
    awaiting_join: bool,
    awaiting_sync: bool,
    /// Sent its SyncGroup in this generation.
    synced: bool,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
    /// `client.id`.
    pub client_id: String,
    /// Its assignment bytes.
    pub assignment: Vec<u8>,
    /// Its metadata for the group's chosen protocol (a consumer's
    /// subscription, user data included), as Kafka's DescribeGroups gives it.
    pub metadata: Vec<u8>,
}

/// One consumer group.
#[derive(Debug, Clone)]
pub struct Group {
    id: String,
    config: GroupConfig,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED and not yet used.
    pending_members: Vec<String>,
    /// When the current phase gives up waiting.
    deadline: Ms,
    /// The generation whose assignment waits to be stored, and whether the
    /// caller has taken that job.
    storing: Option<i32>,
    store_taken: bool,
}

/// Whether a returning static member asks for what it had: the same
/// assignors and, for consumers, the same topics. A restarted consumer
/// reports no owned partitions, which is no reason to rebalance (KIP-814).
fn same_subscription(
    protocol_type: &str,
    old: &[(String, Vec<u8>)],
    new: &[(String, Vec<u8>)],
) -> bool {
    if old == new {
        return true;
    }
    if protocol_type != "consumer" || old.len() != new.len() {
        return false;
    }
    let topics = |meta: &[u8]| {
        Subscription::decode(meta).ok().map(|s| {
            let mut t = s.topics;
            t.sort();
            t
        })
    };
    old.iter()
        .zip(new)
        .all(|((on, om), (nn, nm))| on == nn && topics(om).is_some() && topics(om) == topics(nm))
}

impl Group {
    /// An empty group.
    pub fn new(id: impl Into<String>, config: GroupConfig) -> Group {
        Group {
            id: id.into(),
            config,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: Vec::new(),
            deadline: 0,
            storing: None,
            store_taken: false,
        }
    }

    /// The group id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The state.
    pub fn state(&self) -> GroupState {
        self.state
    }

    /// The current generation.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The protocol type its members joined with (`consumer`, `connect`).
    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    /// The chosen protocol (assignor), once a generation has one.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The leader's member id.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// The members, by id.
    pub fn members(&self) -> Vec<MemberDescription> {
        self.members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                assignment: m.assignment.clone(),
                metadata: self
                    .protocol
                    .as_deref()
                    .and_then(|chosen| m.protocols.iter().find(|(name, _)| name == chosen))
                    .map(|(_, metadata)| metadata.clone())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The group as its `__consumer_offsets` record stores it.
    pub fn value(&self, now: Ms) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            state_timestamp_ms: now,
            members: self
                .members
                .iter()
                .map(|(id, m)| GroupMemberValue {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone().unwrap_or_default(),
                    client_id: m.client_id.clone(),
                    client_host: String::new(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms as i32,
                    session_timeout_ms: m.session_timeout_ms as i32,
                    subscription: m
                        .protocols
                        .iter()
                        .find(|(name, _)| *name == protocol)
                        .map(|(_, meta)| meta.clone())
                        .unwrap_or_default()
                        .into(),
                    assignment: m.assignment.clone().into(),
                })
                .collect(),
        }
    }

    /// A group as its last stored generation left it (a coordinator taking
    /// over its partition): its members keep their ids, generation and
    /// assignments, and their sessions start now.
    pub fn restore(
        id: impl Into<String>,
        config: GroupConfig,
        value: &GroupValue,
        now: Ms,
    ) -> Group {
        let mut group = Group::new(id, config);
        group.generation = value.generation;
        if !value.protocol_type.is_empty() {
            group.protocol_type = Some(value.protocol_type.clone());
        }
        if value.members.is_empty() {
            return group;
        }
        group.protocol = Some(value.protocol.clone());
        group.leader = Some(value.leader.clone());
        group.state = GroupState::Stable;
        for m in &value.members {
            let instance = (!m.group_instance_id.is_empty()).then(|| m.group_instance_id.clone());
            if let Some(instance) = &instance {
                group
                    .static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            group.members.insert(
                m.member_id.clone(),
                Member {
                    group_instance_id: instance,
                    client_id: m.client_id.clone(),
                    session_timeout_ms: Ms::from(m.session_timeout_ms)
                        .max(group.config.min_session_timeout_ms),
                    rebalance_timeout_ms: Ms::from(m.rebalance_timeout_ms),
                    protocols: vec![(value.protocol.clone(), m.subscription.to_vec())],
                    assignment: m.assignment.to_vec(),
                    last_heartbeat: now,
                    awaiting_join: false,
                    awaiting_sync: false,
                    synced: true,
                },
            );
        }
        group
    }

    /// Handles a JoinGroup at `now`.
    pub fn join(&mut self, req: JoinRequest, now: Ms) -> (Step<JoinResponse>, Vec<Reply>) {
        let respond = |e: ErrorCode, id: &str| (Step::Respond(JoinResponse::error(e, id)), vec![]);
        if self.state == GroupState::Dead {
            return respond(ErrorCode::CoordinatorNotAvailable, &req.member_id);
        }
        if !(self.config.min_session_timeout_ms..=self.config.max_session_timeout_ms)
            .contains(&req.session_timeout_ms)
        {
            return respond(ErrorCode::InvalidSessionTimeout, &req.member_id);
        }
        if req.protocols.is_empty()
            || req.protocol_type.is_empty()
            || !self.supports(&req.protocol_type, &req.protocols)
        {
            return respond(ErrorCode::InconsistentGroupProtocol, &req.member_id);
        }
        if req.member_id.is_empty() {
            return self.join_new(req, now);
        }
        let Some(member) = self.members.get(&req.member_id) else {
            if let Some(i) = self
                .pending_members
                .iter()
                .position(|m| *m == req.member_id)
            {
                self.pending_members.swap_remove(i);
                return self.add_member(req.member_id.clone(), req, now);
            }
            return respond(ErrorCode::UnknownMemberId, &req.member_id);
        };
        if member.group_instance_id != req.group_instance_id {
            return respond(ErrorCode::FencedInstanceId, &req.member_id);
        }
        let unchanged = member.protocols == req.protocols;
        let id = req.member_id.clone();
        self.update_member(&id, &req, now);
        match self.state {
            GroupState::PreparingRebalance => {
                self.set_awaiting_join(&id);
                let replies = self.try_complete_join(now);
                (Step::Wait(id), replies)
            }
            GroupState::CompletingRebalance | GroupState::Stable
                if unchanged && self.leader.as_deref() != Some(id.as_str()) =>
            {
                // Nothing changed: the member gets the current generation again.
                (Step::Respond(self.join_response(&id)), vec![])
            }
            _ => {
                let mut replies = self.prepare_rebalance(now);
                self.set_awaiting_join(&id);
                replies.extend(self.try_complete_join(now));
                (Step::Wait(id), replies)
            }
        }
    }

    fn join_new(&mut self, req: JoinRequest, now: Ms) -> (Step<JoinResponse>, Vec<Reply>) {
        if let Some(instance) = &req.group_instance_id
            && let Some(old) = self.static_members.get(instance).cloned()
        {
            return self.replace_static_member(&old, req, now);
        }
        if self.members.len() + self.pending_members.len() >= self.config.max_size {
            return (
                Step::Respond(JoinResponse::error(ErrorCode::GroupMaxSizeReached, "")),
                vec![],
            );
        }
        let id = req.fresh_member_id.clone();
        if req.require_known_member_id && req.group_instance_id.is_none() {
            self.pending_members.push(id.clone());
            return (
                Step::Respond(JoinResponse::error(ErrorCode::MemberIdRequired, &id)),
                vec![],
            );
        }
        self.add_member(id, req, now)
    }

    /// A static member back with a new member id: it takes over the old
    /// one's place (the old id is fenced); a stable group keeps its
    /// assignment and does not rebalance.
    fn replace_static_member(
        &mut self,
        old: &str,
        req: JoinRequest,
        now: Ms,
    ) -> (Step<JoinResponse>, Vec<Reply>) {
        let id = req.fresh_member_id.clone();
        let Some(mut member) = self.members.remove(old) else {
            return self.add_member(id, req, now);
        };
        let mut replies = Vec::new();
        dismiss(old, &member, ErrorCode::FencedInstanceId, &mut replies);
        let unchanged = same_subscription(&req.protocol_type, &member.protocols, &req.protocols);
        member.awaiting_join = false;
        member.awaiting_sync = false;
        self.members.insert(id.clone(), member);
        if let Some(instance) = &req.group_instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        if self.leader.as_deref() == Some(old) {
            self.leader = Some(id.clone());
        }
        self.update_member(&id, &req, now);
        if self.state == GroupState::Stable && unchanged {
            return (Step::Respond(self.join_response(&id)), replies);
        }
        if self.state != GroupState::PreparingRebalance {
            replies.extend(self.prepare_rebalance(now));
        }
        self.set_awaiting_join(&id);
        replies.extend(self.try_complete_join(now));
        (Step::Wait(id), replies)
    }

    fn add_member(
        &mut self,
        id: String,
        req: JoinRequest,
        now: Ms,
    ) -> (Step<JoinResponse>, Vec<Reply>) {
        if self.protocol_type.is_none() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(instance) = &req.group_instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                group_instance_id: req.group_instance_id.clone(),
                client_id: req.client_id.clone(),
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocols: req.protocols.clone(),
                assignment: Vec::new(),
                last_heartbeat: now,
                awaiting_join: false,
                awaiting_sync: false,
                synced: false,
            },
        );
        let mut replies = Vec::new();
        if self.state != GroupState::PreparingRebalance {
            replies.extend(self.prepare_rebalance(now));
        }
        self.set_awaiting_join(&id);
        replies.extend(self.try_complete_join(now));
        (Step::Wait(id), replies)
    }

    fn update_member(&mut self, id: &str, req: &JoinRequest, now: Ms) {
        if let Some(m) = self.members.get_mut(id) {
            m.protocols = req.protocols.clone();
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.client_id = req.client_id.clone();
            m.last_heartbeat = now;
        }
    }

    fn set_awaiting_join(&mut self, id: &str) {
        if let Some(m) = self.members.get_mut(id) {
            m.awaiting_join = true;
        }
    }

    /// Whether a member with these protocols can be in the group.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Vec<u8>)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    /// Starts a rebalance: waiting members of the old phase are told to rejoin.
    fn prepare_rebalance(&mut self, now: Ms) -> Vec<Reply> {
        let mut replies = Vec::new();
        self.storing = None;
        self.store_taken = false;
        if self.state == GroupState::CompletingRebalance {
            // The pending syncs of the generation being abandoned.
            for (id, m) in &mut self.members {
                if m.awaiting_sync {
                    m.awaiting_sync = false;
                    replies.push(Reply::Sync(
                        id.clone(),
                        SyncResponse::error(ErrorCode::RebalanceInProgress),
                    ));
                }
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        // `group.initial.rebalance.delay.ms`: a group starting from empty
        // waits that long for more members before its first generation.
        let delay = if self.state == GroupState::Empty {
            self.config.initial_rebalance_delay_ms
        } else {
            0
        };
        self.deadline = now + if delay > 0 { delay } else { timeout };
        self.state = GroupState::PreparingRebalance;
        replies
    }

    /// Completes the join phase once every member rejoined (or the deadline
    /// passed): the next generation starts and every waiting member gets
    /// its JoinGroup answer.
    fn try_complete_join(&mut self, now: Ms) -> Vec<Reply> {
        if self.state != GroupState::PreparingRebalance {
            return Vec::new();
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join);
        let initial_wait = self.generation == 0
            && self.config.initial_rebalance_delay_ms > 0
            && now < self.deadline;
        if !(now >= self.deadline || (all_joined && !initial_wait)) {
            return Vec::new();
        }
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.awaiting_join)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return Vec::new();
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        self.deadline = now
            + self
                .members
                .values()
                .map(|m| m.rebalance_timeout_ms)
                .max()
                .unwrap_or(0);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        let mut replies = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = self.members.get_mut(&id) {
                m.awaiting_join = false;
                m.synced = false;
                m.last_heartbeat = now;
            }
            replies.push(Reply::Join(id.clone(), self.join_response(&id)));
        }
        replies
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        // Most votes; ties go to the first member's preference order.
        candidates
            .iter()
            .max_by_key(|n| {
                (
                    votes.get(**n).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|c| c == *n)),
                )
            })
            .map(|n| (*n).clone())
    }

    fn join_response(&self, id: &str) -> JoinResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == id {
            self.members
                .iter()
                .map(|(mid, m)| JoinedMember {
                    member_id: mid.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, meta)| meta.clone())
                        .unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: ErrorCode::None,
            generation_id: self.generation,
            protocol_name: protocol,
            leader,
            member_id: id.to_owned(),
            members,
        }
    }

    /// Checks a member's id, instance and generation against the group.
    fn check_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ErrorCode> {
        if self.state == GroupState::Dead {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        let Some(m) = self.members.get(member_id) else {
            if let Some(instance) = group_instance_id
                && self.static_members.contains_key(instance)
            {
                return Err(ErrorCode::FencedInstanceId);
            }
            return Err(ErrorCode::UnknownMemberId);
        };
        if group_instance_id.is_some() && m.group_instance_id.as_deref() != group_instance_id {
            return Err(ErrorCode::FencedInstanceId);
        }
        if generation != self.generation {
            return Err(ErrorCode::IllegalGeneration);
        }
        Ok(())
    }

    /// Handles a SyncGroup: the leader's carries every member's assignment.
    pub fn sync(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
        now: Ms,
    ) -> (Step<SyncResponse>, Vec<Reply>) {
        let refuse = |error| (Step::Respond(SyncResponse::error(error)), vec![]);
        if let Err(e) = self.check_member(member_id, group_instance_id, generation) {
            return refuse(e);
        }
        match self.state {
            GroupState::PreparingRebalance => refuse(ErrorCode::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => refuse(ErrorCode::UnknownMemberId),
            GroupState::Stable => {
                let assignment = self.members[member_id].assignment.clone();
                (
                    Step::Respond(SyncResponse {
                        error: ErrorCode::None,
                        assignment,
                    }),
                    vec![],
                )
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.awaiting_sync = true;
                    m.synced = true;
                    m.last_heartbeat = now;
                }
                if self.leader.as_deref() != Some(member_id) {
                    return (Step::Wait(member_id.to_owned()), vec![]);
                }
                if self.storing.is_some() {
                    // The leader's retry: its assignment is already being stored.
                    return (Step::Wait(member_id.to_owned()), vec![]);
                }
                let mut given: BTreeMap<String, Vec<u8>> = assignments.into_iter().collect();
                for (id, m) in &mut self.members {
                    m.assignment = given.remove(id).unwrap_or_default();
                }
                // Nobody gets an assignment until the generation is stored
                // (`take_store`, then `stored`).
                self.storing = Some(self.generation);
                (Step::Wait(member_id.to_owned()), vec![])
            }
        }
    }

    /// The generation whose assignment the leader just sent and that must be
    /// stored before anyone gets it, once (the caller then writes it and
    /// calls [`stored`](Self::stored) or [`rebalance`](Self::rebalance)).
    pub fn take_store(&mut self) -> Option<i32> {
        if self.store_taken {
            return None;
        }
        let generation = self.storing?;
        self.store_taken = true;
        Some(generation)
    }

    /// `generation` is stored: if it is still the current one, the group is
    /// Stable and every member waiting in SyncGroup gets its assignment.
    pub fn stored(&mut self, generation: i32) -> Vec<Reply> {
        if self.storing != Some(generation)
            || self.generation != generation
            || self.state != GroupState::CompletingRebalance
        {
            return Vec::new();
        }
        self.storing = None;
        self.store_taken = false;
        let mut replies = Vec::new();
        for (id, m) in &mut self.members {
            if m.awaiting_sync {
                m.awaiting_sync = false;
                replies.push(Reply::Sync(
                    id.clone(),
                    SyncResponse {
                        error: ErrorCode::None,
                        assignment: m.assignment.clone(),
                    },
                ));
            }
        }
        self.state = GroupState::Stable;
        replies
    }

    /// Handles a Heartbeat: keeps the member's session and tells it whether
    /// to rejoin (REBALANCE_IN_PROGRESS).
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        now: Ms,
    ) -> Result<(), ErrorCode> {
        if matches!(self.state, GroupState::Empty) {
            return Err(ErrorCode::UnknownMemberId);
        }
        self.check_member(member_id, group_instance_id, generation)?;
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
        if self.state == GroupState::PreparingRebalance {
            return Err(ErrorCode::RebalanceInProgress);
        }
        Ok(())
    }

    /// Handles a LeaveGroup: the member goes and the others rebalance.
    pub fn leave(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        now: Ms,
    ) -> Result<Vec<Reply>, ErrorCode> {
        if self.state == GroupState::Dead {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        let id = match (member_id, group_instance_id) {
            ("", Some(instance)) => self
                .static_members
                .get(instance)
                .cloned()
                .ok_or(ErrorCode::UnknownMemberId)?,
            (id, instance) => {
                let m = self.members.get(id).ok_or(ErrorCode::UnknownMemberId)?;
                if instance.is_some() && m.group_instance_id.as_deref() != instance {
                    return Err(ErrorCode::FencedInstanceId);
                }
                id.to_owned()
            }
        };
        Ok(self.remove_and_rebalance(&[id], now))
    }

    /// Advances time: members silent for their session timeout are dropped,
    /// and a phase whose deadline passed completes without the stragglers.
    pub fn tick(&mut self, now: Ms) -> Vec<Reply> {
        let mut replies = Vec::new();
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.awaiting_join && now - m.last_heartbeat > m.session_timeout_ms)
            .map(|(id, _)| id.clone())
            .collect();
        if !expired.is_empty() {
            replies.extend(self.remove_and_rebalance(&expired, now));
        }
        if now >= self.deadline {
            match self.state {
                GroupState::PreparingRebalance => replies.extend(self.try_complete_join(now)),
                GroupState::CompletingRebalance if self.storing.is_none() => {
                    // The leader never sent the assignment, or members never
                    // asked for theirs: drop those and start again.
                    let stragglers: Vec<String> = self
                        .members
                        .iter()
                        .filter(|(_, m)| !m.synced)
                        .map(|(id, _)| id.clone())
                        .collect();
                    if !stragglers.is_empty() {
                        replies.extend(self.remove_and_rebalance(&stragglers, now));
                    }
                }
                _ => {}
            }
        }
        replies
    }

    fn remove_member(&mut self, id: &str) -> Option<Member> {
        let m = self.members.remove(id)?;
        if let Some(instance) = &m.group_instance_id
            && self.static_members.get(instance).map(String::as_str) == Some(id)
        {
            self.static_members.remove(instance);
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        Some(m)
    }

    fn remove_and_rebalance(&mut self, ids: &[String], now: Ms) -> Vec<Reply> {
        let mut replies = Vec::new();
        for id in ids {
            if let Some(m) = self.remove_member(id) {
                dismiss(id, &m, ErrorCode::UnknownMemberId, &mut replies);
            }
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                replies.extend(self.prepare_rebalance(now));
                replies.extend(self.try_complete_join(now));
            }
            GroupState::PreparingRebalance => replies.extend(self.try_complete_join(now)),
            GroupState::Empty | GroupState::Dead => {}
        }
        if self.members.is_empty() && self.state != GroupState::Dead {
            self.state = GroupState::Empty;
        }
        replies
    }

    /// Abandons the current generation (it could not be stored): members
    /// are told to rejoin by their next heartbeat.
    pub fn rebalance(&mut self, now: Ms) -> Vec<Reply> {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                let mut replies = self.prepare_rebalance(now);
                replies.extend(self.try_complete_join(now));
                replies
            }
            _ => Vec::new(),
        }
    }

    /// Whether an OffsetCommit from this member in this generation may be
    /// stored. A group with no members takes commits with generation -1
    /// and no member id (admin tools, manual assignment).
    pub fn check_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ErrorCode> {
        // Outside the group protocol (generation -1): taken while the group
        // is empty, whatever member id it names (Kafka's simple commits).
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation < 0 && member_id.is_empty() {
            return Err(ErrorCode::IllegalGeneration);
        }
        self.check_member(member_id, group_instance_id, generation)?;
        if self.state == GroupState::CompletingRebalance {
            return Err(ErrorCode::RebalanceInProgress);
        }
        Ok(())
    }

    /// Deletes the group (DeleteGroups): only an empty one.
    pub fn delete(&mut self) -> Result<(), ErrorCode> {
        match self.state {
            GroupState::Empty => {
                self.state = GroupState::Dead;
                Ok(())
            }
            GroupState::Dead => Err(ErrorCode::GroupIdNotFound),
            _ => Err(ErrorCode::NonEmptyGroup),
        }
    }
}
