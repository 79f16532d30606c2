//! The controller's rules: registration and liveness of brokers, topic and
//! partition administration, configs, and publishing the metadata log.
//!
//! Every change is decided under one lock against the current image, turned
//! into metadata records, applied to a copy of the image (so a record that
//! does not apply is never written), written to the store in one
//! transaction, and only then made visible: the image swapped in and the
//! records broadcast to watchers.
//!
//! This file is the core every rule goes through: the [`Controller`], the
//! active controller's decision lock (`lock_active`, with `take_over` the
//! first time in a term) and `commit`/`write`. The rules are `impl
//! Controller` blocks, one file per concern:
//!
//! - `brokers`: broker registration, heartbeats, fencing expired sessions;
//! - `coordinators`: the same for group coordinators;
//! - `topics`: creating and deleting topics, adding partitions, replica placement;
//! - `leader_and_isr`: ISR changes (AlterPartition) and preferred-leader election;
//! - `configs`: describing and altering topic configs;
//! - `membership`: adding and removing controllers of the quorum;
//! - `producer_ids`: blocks of producer ids for brokers;
//! - `describe`: DescribeCluster and GetMetadata.
//!
//! What they refuse, and how a call fails as a whole, is typed in
//! `crate::error` ([`Refusal`], [`ControllerError`]).

mod acls;
mod brokers;
mod configs;
mod coordinators;
mod describe;
mod leader_and_isr;
mod membership;
mod producer_ids;
mod quotas;
mod reassignments;
mod topics;
mod users;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_common::metadata::{ApplyError, MetadataImage};
use runnel_proto::metadata::v1::{
    BrokerFenced, Endpoint, MetadataEvent, MetadataRecord, PartitionChanged,
    metadata_record::Record,
};
use tokio::sync::{Mutex, broadcast};

use crate::election;
use crate::offsets_assignment;
use crate::quorum::state_machine::Shared;
use crate::quorum::{Applied, Batch, ControllerRaft, controller_id};
use crate::store::Store;

pub use crate::error::{ControllerError, Refusal};
pub use producer_ids::PRODUCER_ID_BLOCK_SIZE;

/// Settings the controller's rules depend on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This controller's id.
    pub node_id: i32,
    /// Where clients reach this controller.
    pub endpoints: Vec<Endpoint>,
    /// `num.partitions`: partitions of a topic created without a count.
    pub num_partitions: i32,
    /// `default.replication.factor`: replicas of a topic created without one.
    pub default_replication_factor: i32,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub broker_session_timeout: Duration,
}

/// The active controller's id as one controller sees it, election by election.
pub struct ActiveChanges {
    metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, openraft::BasicNode>>,
    last: Option<i32>,
}

impl ActiveChanges {
    /// The active controller now (None while none is known).
    pub fn current(&self) -> Option<i32> {
        self.last
    }

    /// Waits until the active controller changes and returns the new one
    /// (None: none known); `Err` once the controller stops.
    pub async fn changed(&mut self) -> Result<Option<i32>, tokio::sync::watch::error::RecvError> {
        loop {
            // Raft metrics change with every applied entry; most leave the leader as it was.
            self.metrics.changed().await?;
            let now = self.metrics.borrow().current_leader.map(controller_id);
            if now != self.last {
                self.last = now;
                return Ok(now);
            }
        }
    }
}

struct Inner {
    /// The applied image as of taking the lock (refreshed after each commit).
    image: Arc<MetadataImage>,
    /// The Raft term this controller last took over in: its decisions are
    /// made on an image that includes every entry of earlier terms.
    active_term: Option<u64>,
    /// Last heartbeat per broker. Not persisted: a new controller gives every
    /// broker a fresh session rather than fencing healthy ones.
    heartbeats: HashMap<i32, Instant>,
    /// Last heartbeat per group coordinator, likewise.
    coordinator_heartbeats: HashMap<i32, Instant>,
    /// Per broker, the partitions it said in its last heartbeat it cannot
    /// open, with its error. Not persisted: every heartbeat says it again.
    offline_replicas: HashMap<i32, HashMap<(String, i32), String>>,
}

/// The controller: state, store and the metadata event stream.
pub struct Controller {
    store: Store,
    settings: Settings,
    raft: ControllerRaft,
    shared: Arc<Shared>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("node_id", &self.settings.node_id)
            .finish_non_exhaustive()
    }
}

fn record(r: Record) -> MetadataRecord {
    MetadataRecord { record: Some(r) }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `first` followed by the partition changes `then` decides on the image
/// `first` leaves behind (an election after a fencing, say).
fn with_consequences(
    image: &mut MetadataImage,
    first: MetadataRecord,
    then: impl FnOnce(&MetadataImage) -> Vec<PartitionChanged>,
    out: &mut Vec<MetadataRecord>,
) -> Result<(), ApplyError> {
    image.apply(image.next_offset, &first)?;
    out.push(first);
    let changes = then(image);
    apply_changes(image, changes, out)?;
    Ok(())
}

/// Applies partition `changes` to `image` (so each is decided on the image
/// the previous ones leave) and appends their records to `out`; how many.
fn apply_changes(
    image: &mut MetadataImage,
    changes: impl IntoIterator<Item = PartitionChanged>,
    out: &mut Vec<MetadataRecord>,
) -> Result<usize, ApplyError> {
    let mut applied = 0;
    for change in changes {
        let r = record(Record::PartitionChanged(change));
        image.apply(image.next_offset, &r)?;
        out.push(r);
        applied += 1;
    }
    Ok(applied)
}

/// The gRPC API authenticates and authorizes against the applied image.
impl runnel_common::grpc_auth::ImageSource for Controller {
    fn with_image<R>(&self, f: impl FnOnce(&MetadataImage) -> R) -> R {
        f(&self.shared.image())
    }
}

impl Controller {
    /// A controller deciding over the state `shared` (Raft's state machine
    /// over `store`) and writing through `raft`.
    pub fn new(
        store: Store,
        shared: Arc<Shared>,
        raft: ControllerRaft,
        settings: Settings,
    ) -> Self {
        Controller {
            store,
            settings,
            raft,
            shared,
            inner: Mutex::new(Inner {
                image: Arc::default(),
                active_term: None,
                heartbeats: HashMap::new(),
                coordinator_heartbeats: HashMap::new(),
                offline_replicas: HashMap::new(),
            }),
        }
    }

    /// The store (for watchers catching up).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This controller's Raft node.
    pub fn raft(&self) -> &ControllerRaft {
        &self.raft
    }

    /// This controller's id.
    pub fn node_id(&self) -> i32 {
        self.settings.node_id
    }

    /// A receiver of every applied batch of metadata events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<MetadataEvent>>> {
        self.shared.subscribe()
    }

    /// A copy of the metadata image this controller has applied.
    pub async fn image(&self) -> MetadataImage {
        (*self.shared.image()).clone()
    }

    /// The cluster id (empty until the first active controller set it).
    pub fn cluster_id(&self) -> String {
        self.shared.cluster_id().unwrap_or_default()
    }

    /// The active controller and its address, as this controller knows it.
    pub fn active(&self) -> Option<(i32, String)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())?;
        Some((controller_id(leader), addr))
    }

    /// Follows which controller this one takes to be active.
    pub fn active_changes(&self) -> ActiveChanges {
        let metrics = self.raft.metrics();
        let last = metrics.borrow().current_leader.map(controller_id);
        ActiveChanges { metrics, last }
    }

    /// Whether this controller is the active one.
    pub fn is_active(&self) -> bool {
        self.raft.metrics().borrow().state == openraft::ServerState::Leader
    }

    /// Where clients reach this controller.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.settings.endpoints
    }

    /// The error a controller that is not the active one answers with.
    pub fn not_active(&self) -> ControllerError {
        ControllerError::NotActive {
            node_id: self.settings.node_id,
            leader: self.active().filter(|(id, _)| *id != self.settings.node_id),
        }
    }

    /// Takes the decision lock as the active controller, taking over first
    /// (see `take_over`) the first time in a term.
    async fn lock_active(&self) -> Result<tokio::sync::MutexGuard<'_, Inner>, ControllerError> {
        let mut inner = self.inner.lock().await;
        let m = self.raft.metrics().borrow().clone();
        if m.state != openraft::ServerState::Leader {
            inner.active_term = None;
            return Err(self.not_active());
        }
        if inner.active_term != Some(m.current_term) {
            // Taking over confirms the leadership with a quorum first; no
            // quorum ack is recorded yet just after the election.
            self.take_over(&mut inner, m.current_term).await?;
        } else if m.membership_config.membership().voter_ids().count() > 1
            && m.millis_since_quorum_ack
                .is_none_or(|ms| ms > self.raft.config().election_timeout_max)
        {
            // A leader cut off from the majority cannot commit: refuse at once
            // rather than hold the request until the election it will lose.
            return Err(self.not_active());
        }
        inner.image = self.shared.image();
        Ok(inner)
    }

    /// What a controller does first in a term it leads: waits until every
    /// entry of earlier terms is applied, gives every broker and
    /// coordinator a fresh session, sets the cluster id of a new cluster,
    /// and elects leaders for partitions left without one.
    async fn take_over(&self, inner: &mut Inner, term: u64) -> Result<(), ControllerError> {
        self.raft
            .ensure_linearizable()
            .await
            .map_err(|_| self.not_active())?;
        inner.image = self.shared.image();
        let now = Instant::now();
        inner.heartbeats = inner.image.brokers.keys().map(|&id| (id, now)).collect();
        inner.coordinator_heartbeats = inner
            .image
            .coordinators
            .keys()
            .map(|&id| (id, now))
            .collect();
        inner.active_term = Some(term);
        tracing::info!(
            term,
            metadata_end_offset = inner.image.next_offset,
            "this controller is now the active controller"
        );
        if self.shared.cluster_id().is_none() {
            let cluster_id = uuid::Uuid::new_v4().simple().to_string();
            self.write(inner, Vec::new(), cluster_id).await?;
        }
        let mut image = (*inner.image).clone();
        let mut records = Vec::new();
        let live: Vec<i32> = image.live_brokers().map(|(id, _)| id).collect();
        for id in live {
            let changes = election::on_broker_unfenced(&image, id);
            apply_changes(&mut image, changes, &mut records)?;
        }
        if !records.is_empty() {
            tracing::info!(
                partitions = records.len(),
                "leaders elected for offline partitions on takeover"
            );
        }
        self.commit(inner, records).await
    }

    /// Replicates one entry through Raft and waits until it is applied here.
    async fn write(
        &self,
        inner: &mut Inner,
        records: Vec<MetadataRecord>,
        cluster_id: String,
    ) -> Result<(), ControllerError> {
        let batch = Batch(runnel_proto::metadata::v1::MetadataBatch {
            timestamp_ms: now_ms(),
            records,
            cluster_id,
        });
        let response = self.raft.client_write(batch).await.map_err(|e| {
            // Whether the entry commits is now up to the next active
            // controller; decide nothing more until a takeover catches up.
            inner.active_term = None;
            if let openraft::error::RaftError::Fatal(fatal) = &e {
                tracing::error!(error = %fatal, "controller Raft node stopped");
            }
            // Lost the role, or this node stopped: either way another
            // controller decides whether the entry stands, and the client
            // should ask there.
            self.not_active()
        })?;
        inner.image = self.shared.image();
        match response.data {
            Applied::Refused(why) => Err(ControllerError::EntryRefused {
                log_id: response.log_id,
                why,
            }),
            Applied::Records { .. } | Applied::Nothing => Ok(()),
        }
    }

    /// Records that fence broker `id` and move its leaderships and ISR places.
    fn fence_records(
        image: &mut MetadataImage,
        id: i32,
        broker_epoch: i64,
        out: &mut Vec<MetadataRecord>,
    ) -> Result<(), ApplyError> {
        let fence = record(Record::BrokerFenced(BrokerFenced {
            broker_id: id,
            broker_epoch,
        }));
        with_consequences(image, fence, |i| election::on_broker_fenced(i, id), out)
    }

    /// Validates, persists and publishes `records` as the next entries of the
    /// log, followed by any move of `__consumer_offsets` partitions they call
    /// for (a coordinator came or went, the topic was created or grew).
    async fn commit(
        &self,
        inner: &mut Inner,
        mut records: Vec<MetadataRecord>,
    ) -> Result<(), ControllerError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut next = (*inner.image).clone();
        for r in &records {
            next.apply(next.next_offset, r)?;
        }
        while let Some(assigned) = offsets_assignment::reassign(&next) {
            for o in &assigned.owners {
                tracing::debug!(
                    partition = o.partition,
                    coordinator = o.coordinator_id,
                    owner_epoch = o.owner_epoch,
                    "__consumer_offsets partition assigned"
                );
            }
            let r = record(Record::OffsetsPartitionsAssigned(assigned));
            next.apply(next.next_offset, &r)?;
            records.push(r);
        }
        self.write(inner, records, String::new()).await
    }
}
