//! Brokers' registrations and sessions: registering a broker (a new
//! incarnation gets a new epoch and starts fenced), its heartbeats (they
//! keep the session, unfence a broker once it has caught up and fence it
//! on controlled shutdown), and fencing brokers whose session expired.

use std::time::Instant;

use runnel_common::metadata::MetadataImage;
use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::{BrokerRegistered, BrokerUnfenced, metadata_record::Record};

use super::{Controller, ControllerError, Refusal, apply_changes, record, with_consequences};
use crate::election;

/// A broker request must come from a registered, unfenced broker in the
/// registration it names.
pub(super) fn check_live_broker(image: &MetadataImage, id: i32, epoch: i64) -> Result<(), Refusal> {
    match image.brokers.get(&id) {
        Some(b) if b.epoch == epoch && !b.fenced => Ok(()),
        Some(b) => Err(Refusal::StaleBrokerEpoch {
            broker_id: id,
            epoch,
            registered_epoch: b.epoch,
            fenced: b.fenced,
        }),
        None => Err(Refusal::UnregisteredBroker { broker_id: id }),
    }
}

impl Controller {
    /// Registers a broker; a new incarnation gets a new epoch (and starts fenced).
    pub async fn register_broker(
        &self,
        req: pb::RegisterBrokerRequest,
    ) -> Result<i64, ControllerError> {
        if req.broker_id < 0 {
            return Err(Refusal::NegativeBrokerId {
                broker_id: req.broker_id,
            }
            .into());
        }
        let mut inner = self.lock_active().await?;
        if let Some(b) = inner.image.brokers.get(&req.broker_id)
            && b.incarnation_id == req.incarnation_id
        {
            // A retried registration of the same process.
            let epoch = b.epoch;
            inner.heartbeats.insert(req.broker_id, Instant::now());
            return Ok(epoch);
        }
        let epoch = inner.image.next_offset;
        let r = record(Record::BrokerRegistered(BrokerRegistered {
            broker_id: req.broker_id,
            broker_epoch: epoch,
            endpoints: req.endpoints,
            rack: req.rack,
            incarnation_id: req.incarnation_id,
        }));
        // A new incarnation starts fenced, and what the old one led moves now:
        // after a crash its log may be shorter than what the ISR acknowledged.
        let id = req.broker_id;
        let mut records = Vec::new();
        let mut image = (*inner.image).clone();
        with_consequences(
            &mut image,
            r,
            |i| election::on_broker_fenced(i, id),
            &mut records,
        )?;
        self.commit(&mut inner, records).await?;
        inner.heartbeats.insert(req.broker_id, Instant::now());
        tracing::info!(broker = req.broker_id, epoch, "broker registered");
        Ok(epoch)
    }

    /// A broker's heartbeat: keeps its session, unfences it once it has caught
    /// up with the log, fences it when it says it is shutting down.
    pub async fn heartbeat(
        &self,
        req: pb::BrokerHeartbeatRequest,
    ) -> Result<pb::BrokerHeartbeatResponse, ControllerError> {
        let mut inner = self.lock_active().await?;
        let Some(b) = inner.image.brokers.get(&req.broker_id) else {
            return Ok(pb::BrokerHeartbeatResponse {
                fenced: true,
                should_register: true,
                controller_endpoints: Vec::new(),
            });
        };
        if b.epoch != req.broker_epoch {
            return Ok(pb::BrokerHeartbeatResponse {
                fenced: true,
                should_register: true,
                controller_endpoints: Vec::new(),
            });
        }
        let (fenced, epoch) = (b.fenced, b.epoch);
        inner.heartbeats.insert(req.broker_id, Instant::now());
        let offline: std::collections::HashMap<(String, i32), String> = req
            .offline_replicas
            .iter()
            .map(|r| ((r.topic.clone(), r.partition), r.error.clone()))
            .collect();
        let before: std::collections::BTreeSet<(String, i32)> = inner
            .offline_replicas
            .get(&req.broker_id)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let now: std::collections::BTreeSet<(String, i32)> = offline.keys().cloned().collect();
        if offline.is_empty() {
            inner.offline_replicas.remove(&req.broker_id);
        } else {
            inner.offline_replicas.insert(req.broker_id, offline);
        }
        let id = req.broker_id;
        if !fenced && !req.shutting_down && before != now {
            // Replicas that cannot open lose their leaderships and ISR
            // places; once they open again, leaderless ones get a leader.
            let mut image = (*inner.image).clone();
            let mut records = Vec::new();
            let gone = election::on_replicas_offline(&image, id, now.difference(&before));
            let moved = apply_changes(&mut image, gone, &mut records)?;
            let back = election::on_replicas_back(&image, id, before.difference(&now));
            let elected = apply_changes(&mut image, back, &mut records)?;
            if !records.is_empty() {
                self.commit(&mut inner, records).await?;
                tracing::info!(
                    broker = id,
                    moved_off_offline = moved,
                    elected,
                    "partitions changed for replicas offline or back"
                );
            }
        }
        if req.shutting_down {
            if !fenced {
                // Controlled shutdown: its leaderships move before it goes.
                let mut records = Vec::new();
                let mut image = (*inner.image).clone();
                Self::fence_records(&mut image, id, epoch, &mut records)?;
                let moved = records.len() - 1;
                self.commit(&mut inner, records).await?;
                tracing::info!(
                    broker = id,
                    partitions_changed = moved,
                    "broker fenced: shutting down"
                );
            }
            return Ok(pb::BrokerHeartbeatResponse {
                fenced: true,
                should_register: false,
                controller_endpoints: Vec::new(),
            });
        }
        // Caught up: it has applied its own registration record.
        if fenced && req.metadata_offset > epoch {
            let r = record(Record::BrokerUnfenced(BrokerUnfenced {
                broker_id: id,
                broker_epoch: epoch,
            }));
            let mut records = Vec::new();
            let mut image = (*inner.image).clone();
            with_consequences(
                &mut image,
                r,
                |i| election::on_broker_unfenced(i, id),
                &mut records,
            )?;
            let elected = records.len() - 1;
            self.commit(&mut inner, records).await?;
            tracing::info!(
                broker = id,
                offline_partitions_elected = elected,
                "broker unfenced"
            );
            return Ok(pb::BrokerHeartbeatResponse {
                fenced: false,
                should_register: false,
                controller_endpoints: Vec::new(),
            });
        }
        Ok(pb::BrokerHeartbeatResponse {
            fenced,
            should_register: false,
            controller_endpoints: Vec::new(),
        })
    }

    /// Fences every live broker whose last heartbeat is older than the session timeout.
    pub async fn fence_expired_brokers(&self) -> Result<Vec<i32>, ControllerError> {
        let mut inner = self.lock_active().await?;
        let timeout = self.settings.broker_session_timeout;
        let now = Instant::now();
        let mut records = Vec::new();
        let mut fenced = Vec::new();
        let mut image = (*inner.image).clone();
        for (&id, b) in &inner.image.brokers {
            let last = inner.heartbeats.get(&id).copied().unwrap_or(now);
            if !b.fenced && now.duration_since(last) > timeout {
                Self::fence_records(&mut image, id, b.epoch, &mut records)?;
                fenced.push(id);
            }
        }
        self.commit(&mut inner, records).await?;
        for id in &fenced {
            tracing::warn!(
                broker = id,
                timeout_ms = timeout.as_millis() as u64,
                "broker fenced: session expired"
            );
        }
        Ok(fenced)
    }
}
