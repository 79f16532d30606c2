//! The classic protocol's background heartbeat: keeps a member in its
//! generation, notices a rebalance or being dropped, and leaves the group
//! when the application stops polling for `max.poll.interval.ms`.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::coordinator::v1 as pb;
use tokio::time::Instant;

use super::{GroupConsumer, MemberState, Membership, coordinator_moved};
use crate::cluster::Cluster;

impl GroupConsumer {
    pub(super) fn ensure_heartbeat(&mut self) {
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
