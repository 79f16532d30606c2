//! This coordinator's place in the cluster: its registration with the
//! controller, its session, and the partitions of `__consumer_offsets` the
//! controller gives it (each with the partitions of `__transaction_state`
//! that go with it: see `transactions`).
//!
//! Every heartbeat answer lists the partitions this coordinator owns, each
//! with its producer id and owner epoch. A partition that arrives is taken
//! over (the ownership marker is written, which fences the previous owner
//! at the brokers; then the partition is read up to the end and its groups
//! served); one that leaves is dropped at once. The session is a lease: a
//! coordinator that has not heard from the controller for most of the
//! session timeout stops serving everything, since by then the controller
//! may have given its partitions to others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_client::Cluster;
use runnel_common::admin::Readiness;
use runnel_common::backoff::Backoff;
use runnel_common::shutdown::CancellationToken;
use runnel_proto::controller::v1::{CoordinatorHeartbeatRequest, RegisterCoordinatorRequest};
use runnel_proto::metadata::v1::{Endpoint, OffsetsPartitionOwner};
use tokio::task::JoinHandle;

use crate::internal_topic::InternalTopic;
use crate::manager::GroupManager;
use crate::transactions::TxnManager;

/// How often the coordinator heartbeats (and learns its partitions).
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// Who this coordinator is and where it listens.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Coordinator id.
    pub id: i32,
    /// Endpoints to register.
    pub endpoints: Vec<Endpoint>,
    /// Random per process start.
    pub incarnation_id: String,
}

/// What this coordinator serves from the partitions it owns.
#[derive(Debug, Clone)]
pub struct Served {
    /// `__consumer_offsets`.
    pub offsets: Arc<InternalTopic>,
    /// The groups stored there.
    pub groups: Arc<GroupManager>,
    /// `__transaction_state`.
    pub txn_state: Arc<InternalTopic>,
    /// The transactions stored there.
    pub txns: Arc<TxnManager>,
}

struct Owned {
    owner: OffsetsPartitionOwner,
    /// The take-over in progress, if not done yet.
    loading: Option<JoinHandle<()>>,
}

/// Runs the registration, heartbeats and partition moves until `shutdown`,
/// then tells the controller it is leaving so its partitions move at once.
pub async fn run(
    me: Identity,
    cluster: Arc<Cluster>,
    served: Served,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let mut owned: HashMap<i32, Owned> = HashMap::new();
    let mut registration: Option<(i64, Duration)> = None;
    let mut last_answer = Instant::now();
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Some((epoch, session)) = registration else {
            match register(&me, &cluster).await {
                Ok(r) => {
                    tracing::info!(coordinator = me.id, epoch = r.0, "coordinator registered");
                    registration = Some(r);
                    last_answer = Instant::now();
                }
                Err(e) => tracing::info!(error = %e, "cannot register with the controller yet"),
            }
            continue;
        };
        let sent = Instant::now();
        match heartbeat(&cluster, me.id, epoch, false).await {
            Ok(r) if r.should_register => {
                tracing::warn!(
                    coordinator = me.id,
                    "fenced by the controller; registering again"
                );
                release_all(&mut owned, &served);
                registration = None;
            }
            Ok(r) => {
                last_answer = sent;
                reconcile(&me, &mut owned, r.owned, &served, &shutdown);
            }
            Err(e) => {
                // A lease: past most of the session the controller may have
                // moved our partitions, so stop answering for them.
                if sent.duration_since(last_answer) > session * 3 / 4 && !owned.is_empty() {
                    tracing::warn!(error = %e, "controller unreachable for most of the session; releasing every partition");
                    release_all(&mut owned, &served);
                } else {
                    tracing::debug!(error = %e, "coordinator heartbeat failed");
                }
            }
        }
        let loading = owned
            .values()
            .any(|o| o.loading.as_ref().is_some_and(|h| !h.is_finished()));
        readiness.set(registration.is_some() && !loading);
    }
    release_all(&mut owned, &served);
    if let Some((epoch, _)) = registration
        && let Err(e) = heartbeat(&cluster, me.id, epoch, true).await
    {
        tracing::warn!(error = %e, "could not tell the controller this coordinator is leaving");
    }
}

async fn register(
    me: &Identity,
    cluster: &Cluster,
) -> Result<(i64, Duration), runnel_client::ClientError> {
    let (addr, mut controller) = cluster.controller().await?;
    let r = controller
        .register_coordinator(RegisterCoordinatorRequest {
            coordinator_id: me.id,
            endpoints: me.endpoints.clone(),
            incarnation_id: me.incarnation_id.clone(),
        })
        .await
        .map_err(|s| runnel_client::ClientError::from_status(&addr, s))?
        .into_inner();
    Ok((
        r.coordinator_epoch,
        Duration::from_millis(r.session_timeout_ms.max(1000) as u64),
    ))
}

async fn heartbeat(
    cluster: &Cluster,
    id: i32,
    epoch: i64,
    shutting_down: bool,
) -> Result<runnel_proto::controller::v1::CoordinatorHeartbeatResponse, runnel_client::ClientError>
{
    let (addr, mut controller) = cluster.controller().await?;
    let result = controller
        .coordinator_heartbeat(CoordinatorHeartbeatRequest {
            coordinator_id: id,
            coordinator_epoch: epoch,
            shutting_down,
        })
        .await;
    match result {
        Ok(r) => Ok(r.into_inner()),
        Err(s) => {
            // The controller may have moved: look it up again next time.
            let _ = cluster.refresh(&[], false).await;
            Err(runnel_client::ClientError::from_status(&addr, s))
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(h) = &self.loading {
            h.abort();
        }
    }
}

fn release(partition: i32, o: Owned, served: &Served) {
    drop(o);
    served.offsets.release(partition);
    served.groups.unload(partition);
    for q in served.txns.partitions_of(partition) {
        served.txn_state.release(q);
        served.txns.unload(q);
    }
    tracing::debug!(partition, "__consumer_offsets partition released");
}

fn release_all(owned: &mut HashMap<i32, Owned>, served: &Served) {
    for (p, o) in owned.drain() {
        release(p, o, served);
    }
}

/// Drops the partitions no longer ours and starts taking over new ones (or
/// ones we own again under a newer owner epoch).
fn reconcile(
    me: &Identity,
    owned: &mut HashMap<i32, Owned>,
    now_owned: Vec<OffsetsPartitionOwner>,
    served: &Served,
    shutdown: &CancellationToken,
) {
    let wanted: HashMap<i32, OffsetsPartitionOwner> =
        now_owned.into_iter().map(|o| (o.partition, o)).collect();
    let stale: Vec<i32> = owned
        .iter()
        .filter(|(p, o)| wanted.get(p) != Some(&o.owner))
        .map(|(p, _)| *p)
        .collect();
    let released = stale.len();
    for p in stale {
        if let Some(o) = owned.remove(&p) {
            release(p, o, served);
        }
    }
    let mut taken = 0;
    for (p, owner) in wanted {
        if owned.contains_key(&p) {
            continue;
        }
        taken += 1;
        served.groups.begin_load(p);
        for q in served.txns.partitions_of(p) {
            served.txns.begin_load(q);
        }
        let (served, token) = (served.clone(), shutdown.clone());
        let (id, o) = (me.id, owner);
        let handle = tokio::spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = take_over(id, &o, &served) => {}
            }
        });
        owned.insert(
            p,
            Owned {
                owner,
                loading: Some(handle),
            },
        );
    }
    // One line per change of the whole set: the per-partition lines are at
    // debug, since one coordinator may take every partition at start-up.
    if taken + released > 0 {
        tracing::info!(
            coordinator = me.id,
            owned = owned.len(),
            taken,
            released,
            "__consumer_offsets ownership changed"
        );
    }
}

/// Fences the previous owner, reads the partition to its end and serves
/// its groups, then the same for its partitions of `__transaction_state`
/// and their transactions; retries until done (or aborted because the
/// partition moved).
async fn take_over(id: i32, o: &OffsetsPartitionOwner, served: &Served) {
    let p = o.partition;
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let result = async {
            let marker = crate::offsets::owner_record(p, id, o.owner_epoch);
            served
                .offsets
                .take_over(p, o.producer_id, o.owner_epoch, marker)
                .await
                .map_err(|e| e.to_string())?;
            let replay = served
                .offsets
                .read_partition(p)
                .await
                .map_err(|e| e.to_string())?;
            served
                .groups
                .restore_transactions(p, replay.pending, replay.sequences);
            served
                .groups
                .finish_load(p, &replay.records)
                .map_err(|e| e.to_string())?;
            let mut total = replay.records.len();
            for q in served.txns.partitions_of(p) {
                let marker = crate::transaction::owner_record(q, id, o.owner_epoch);
                served
                    .txn_state
                    .take_over(q, o.producer_id, o.owner_epoch, marker)
                    .await
                    .map_err(|e| e.to_string())?;
                let replay = served
                    .txn_state
                    .read_partition(q)
                    .await
                    .map_err(|e| e.to_string())?;
                served
                    .txns
                    .finish_load(q, &replay.records, o.owner_epoch)
                    .map_err(|e| e.to_string())?;
                total += replay.records.len();
            }
            Ok::<usize, String>(total)
        }
        .await;
        match result {
            Ok(records) => {
                tracing::debug!(
                    partition = p,
                    owner_epoch = o.owner_epoch,
                    records,
                    ms = started.elapsed().as_millis() as u64,
                    "__consumer_offsets partition loaded"
                );
                metrics::counter!("runnel_coordinator_partitions_loaded_total").increment(1);
                return;
            }
            Err(e) => {
                tracing::debug!(partition = p, error = %e, "cannot load __consumer_offsets partition yet; retrying");
                backoff.wait().await;
            }
        }
    }
}
