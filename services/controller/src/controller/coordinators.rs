//! Group coordinators' registrations and sessions, kept as brokers' are:
//! registering, heartbeats, fencing expired sessions. Which coordinator
//! owns which `__consumer_offsets` partition follows from these in
//! `crate::offsets_assignment`, on every commit.

use std::time::{Duration, Instant};

use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::{
    CoordinatorFenced, CoordinatorRegistered, metadata_record::Record,
};

use super::{Controller, ControllerError, Refusal, record};

impl Controller {
    /// How long a coordinator's session lasts without a heartbeat.
    pub fn coordinator_session_timeout(&self) -> Duration {
        self.settings.broker_session_timeout
    }

    /// Registers a group coordinator; a new incarnation gets a new epoch and
    /// the partitions of the old one move (possibly back to it).
    pub async fn register_coordinator(
        &self,
        req: pb::RegisterCoordinatorRequest,
    ) -> Result<i64, ControllerError> {
        if req.coordinator_id < 0 {
            return Err(Refusal::NegativeCoordinatorId {
                coordinator_id: req.coordinator_id,
            }
            .into());
        }
        let mut inner = self.lock_active().await?;
        if let Some(c) = inner.image.coordinators.get(&req.coordinator_id)
            && c.incarnation_id == req.incarnation_id
            && !c.fenced
        {
            let epoch = c.epoch;
            inner
                .coordinator_heartbeats
                .insert(req.coordinator_id, Instant::now());
            return Ok(epoch);
        }
        let epoch = inner.image.next_offset;
        let r = record(Record::CoordinatorRegistered(CoordinatorRegistered {
            coordinator_id: req.coordinator_id,
            coordinator_epoch: epoch,
            endpoints: req.endpoints,
            incarnation_id: req.incarnation_id,
        }));
        self.commit(&mut inner, vec![r]).await?;
        inner
            .coordinator_heartbeats
            .insert(req.coordinator_id, Instant::now());
        tracing::info!(
            coordinator = req.coordinator_id,
            epoch,
            "coordinator registered"
        );
        Ok(epoch)
    }

    /// A coordinator's heartbeat: keeps its session; fences it when it says
    /// it is shutting down, so its partitions move at once.
    pub async fn coordinator_heartbeat(
        &self,
        req: pb::CoordinatorHeartbeatRequest,
    ) -> Result<pb::CoordinatorHeartbeatResponse, ControllerError> {
        let mut inner = self.lock_active().await?;
        let live = inner
            .image
            .coordinators
            .get(&req.coordinator_id)
            .is_some_and(|c| c.epoch == req.coordinator_epoch && !c.fenced);
        if !live {
            return Ok(pb::CoordinatorHeartbeatResponse {
                should_register: !req.shutting_down,
                owned: Vec::new(),
            });
        }
        inner
            .coordinator_heartbeats
            .insert(req.coordinator_id, Instant::now());
        if req.shutting_down {
            let r = record(Record::CoordinatorFenced(CoordinatorFenced {
                coordinator_id: req.coordinator_id,
                coordinator_epoch: req.coordinator_epoch,
            }));
            self.commit(&mut inner, vec![r]).await?;
            tracing::info!(
                coordinator = req.coordinator_id,
                "coordinator fenced: shutting down"
            );
            return Ok(pb::CoordinatorHeartbeatResponse::default());
        }
        let owned = inner
            .image
            .offsets_owners
            .values()
            .filter(|o| {
                o.coordinator_id == req.coordinator_id
                    && o.coordinator_epoch == req.coordinator_epoch
            })
            .cloned()
            .collect();
        Ok(pb::CoordinatorHeartbeatResponse {
            should_register: false,
            owned,
        })
    }

    /// Fences every live coordinator whose last heartbeat is older than the
    /// session timeout; its partitions move to the others.
    pub async fn fence_expired_coordinators(&self) -> Result<Vec<i32>, ControllerError> {
        let mut inner = self.lock_active().await?;
        let timeout = self.settings.broker_session_timeout;
        let now = Instant::now();
        let mut records = Vec::new();
        let mut fenced = Vec::new();
        for (id, c) in inner.image.live_coordinators() {
            let last = inner
                .coordinator_heartbeats
                .get(&id)
                .copied()
                .unwrap_or(now);
            if now.duration_since(last) > timeout {
                records.push(record(Record::CoordinatorFenced(CoordinatorFenced {
                    coordinator_id: id,
                    coordinator_epoch: c.epoch,
                })));
                fenced.push(id);
            }
        }
        self.commit(&mut inner, records).await?;
        for id in &fenced {
            tracing::warn!(
                coordinator = id,
                timeout_ms = timeout.as_millis() as u64,
                "coordinator fenced: session expired"
            );
        }
        Ok(fenced)
    }
}
