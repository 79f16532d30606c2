//! The member side of the next-generation group protocol (KIP-848,
//! `group.protocol=consumer`): a background task sends
//! `ConsumerGroupHeartbeat` with the subscription and the partitions this
//! member owns, and keeps the coordinator's latest assignment; `poll`
//! applies it (revoking first, then taking what is new, in
//! `GroupConsumer::next_gen_step`) and wakes the task so the coordinator
//! learns at once what was released.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;
use runnel_records::assignor::RebalanceProtocol;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{GroupConsumer, MemberState};
use crate::cluster::Cluster;
use crate::consumer::TopicPartition;
use crate::error::Result;
use crate::partition_set::{from_partition_set, to_partition_set};

/// The member epoch that joins.
const JOIN: i32 = 0;
/// The member epoch that leaves.
const LEAVE: i32 = -1;

/// What the heartbeat task and `poll` share.
#[derive(Debug, Default)]
pub(crate) struct NextGenState {
    /// The member id ("" until the coordinator gave one).
    pub member_id: String,
    /// The member epoch (0: joining).
    pub epoch: i32,
    /// The coordinator's latest assignment for this member.
    pub assignment: Option<Vec<TopicPartition>>,
    /// What this member owns now (reported with every heartbeat).
    pub owned: Vec<TopicPartition>,
    /// Topics subscribed to; sent when `subscription_sent` is false.
    pub topics: Vec<String>,
    pub subscription_sent: bool,
    /// Set when the group dropped this member: what it owned is lost.
    pub lost: bool,
    /// The coordinator's address, if known.
    pub coordinator: Option<String>,
}

/// Told the member id and epoch after every answered heartbeat, so commits
/// always carry the latest epoch.
pub(crate) type OnEpoch = Box<dyn Fn(&str, i32) + Send + Sync>;

/// Handle to the heartbeat task.
#[derive(Debug)]
pub(crate) struct NextGen {
    pub state: Arc<Mutex<NextGenState>>,
    pub wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NextGen {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Settings the task needs.
#[derive(Debug, Clone)]
pub(crate) struct NextGenConfig {
    pub group_id: String,
    pub instance_id: String,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: String,
}

impl NextGen {
    /// Starts heartbeating for `topics`.
    pub fn start(
        cluster: Arc<Cluster>,
        config: NextGenConfig,
        topics: Vec<String>,
        on_epoch: OnEpoch,
    ) -> NextGen {
        let state = Arc::new(Mutex::new(NextGenState {
            topics,
            ..NextGenState::default()
        }));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(
            cluster,
            config,
            Arc::clone(&state),
            Arc::clone(&wake),
            on_epoch,
        ));
        NextGen { state, wake, task }
    }

    /// Leaves the group (epoch -1; a static member -2 keeps its place).
    pub async fn leave(&self, cluster: &Cluster, config: &NextGenConfig) {
        let (member_id, addr) = {
            let s = self.state.lock();
            (s.member_id.clone(), s.coordinator.clone())
        };
        let Some(addr) = addr else { return };
        if member_id.is_empty() {
            return;
        }
        if let Ok(mut c) = cluster.coordinator_at(&addr) {
            let _ = c
                .consumer_group_heartbeat(pb::ConsumerGroupHeartbeatRequest {
                    group_id: config.group_id.clone(),
                    member_id,
                    member_epoch: if config.instance_id.is_empty() {
                        LEAVE
                    } else {
                        -2
                    },
                    instance_id: config.instance_id.clone(),
                    ..Default::default()
                })
                .await;
        }
    }
}

async fn run(
    cluster: Arc<Cluster>,
    config: NextGenConfig,
    state: Arc<Mutex<NextGenState>>,
    wake: Arc<Notify>,
    on_epoch: OnEpoch,
) {
    let mut interval = Duration::from_millis(100);
    loop {
        let request = {
            let s = state.lock();
            pb::ConsumerGroupHeartbeatRequest {
                group_id: config.group_id.clone(),
                member_id: s.member_id.clone(),
                member_epoch: s.epoch,
                instance_id: config.instance_id.clone(),
                rebalance_timeout_ms: config.rebalance_timeout_ms,
                subscribed_topics: (!s.subscription_sent || s.epoch == JOIN).then(|| {
                    pb::TopicNames {
                        names: s.topics.clone(),
                    }
                }),
                server_assignor: config.server_assignor.clone(),
                owned: Some(to_partition_set(&s.owned)),
            }
        };
        let addr = state.lock().coordinator.clone();
        let addr = match addr {
            Some(a) => Some(a),
            None => match cluster.find_coordinator(&config.group_id).await {
                Ok((_, a)) => {
                    state.lock().coordinator = Some(a.clone());
                    Some(a)
                }
                Err(_) => None,
            },
        };
        if let Some(addr) = addr
            && let Ok(mut c) = cluster.coordinator_at(&addr)
        {
            match c.consumer_group_heartbeat(request).await {
                Ok(r) => {
                    let r = r.into_inner();
                    let mut s = state.lock();
                    match r.error_code() {
                        ErrorCode::None => {
                            on_epoch(&r.member_id, r.member_epoch);
                            s.member_id = r.member_id;
                            s.epoch = r.member_epoch;
                            s.subscription_sent = true;
                            if let Some(a) = r.assignment {
                                s.assignment = Some(from_partition_set(&a));
                            }
                            interval = Duration::from_millis(
                                r.heartbeat_interval_ms.clamp(50, 60_000) as u64,
                            );
                        }
                        ErrorCode::FencedMemberEpoch | ErrorCode::UnknownMemberId => {
                            // Dropped by the group: join again as a new member.
                            s.lost = true;
                            s.epoch = JOIN;
                            s.subscription_sent = false;
                            s.assignment = Some(Vec::new());
                        }
                        ErrorCode::NotCoordinator
                        | ErrorCode::CoordinatorNotAvailable
                        | ErrorCode::CoordinatorLoadInProgress => s.coordinator = None,
                        code => {
                            tracing::warn!(group = %config.group_id, ?code, message = %r.error_message, "consumer group heartbeat refused");
                        }
                    }
                }
                Err(_) => state.lock().coordinator = None,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => {}
        }
    }
}

impl GroupConsumer {
    /// `group.protocol=consumer`: starts the heartbeat task, then applies
    /// the coordinator's latest assignment: revokes what it no longer
    /// holds (committing first with auto commit), takes what is new at
    /// the committed offsets, and reports what it owns at once.
    pub(super) async fn next_gen_step(&mut self) -> Result<()> {
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

    pub(super) fn next_gen_config(&self) -> NextGenConfig {
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
}
