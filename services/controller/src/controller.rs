//! The controller's rules: registration and liveness of brokers, topic and
//! partition administration, configs, and publishing the metadata log.
//!
//! Every change is decided under one lock against the current image, turned
//! into metadata records, applied to a copy of the image (so a record that
//! does not apply is never written), written to the store in one
//! transaction, and only then made visible: the image swapped in and the
//! records broadcast to watchers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use runnel_common::metadata::{ApplyError, MetadataImage, OFFSETS_TOPIC};
use runnel_common::topics::{TopicConfig, TopicConfigError, collision_key, validate_topic_name};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::{
    BrokerFenced, BrokerRegistered, BrokerUnfenced, ConfigRemoved, ConfigResource,
    ConfigResourceType, ConfigSet, CoordinatorFenced, CoordinatorRegistered, Endpoint,
    MetadataEvent, MetadataRecord, PartitionChanged, PartitionCreated, TopicCreated, TopicDeleted,
    metadata_record::Record,
};
use tokio::sync::{Mutex, broadcast};

use crate::offsets_assignment;
use crate::election;
use crate::placement;
use crate::quorum::state_machine::Shared;
use crate::quorum::{Applied, Batch, ControllerRaft, controller_id, raft_id};
use crate::store::{Store, StoreError};

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

/// A controller operation that failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record did not apply (a bug); nothing was written.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// This controller is not the active one (or cannot reach a majority
    /// of the quorum); the request changed nothing here.
    #[error("controller {node_id} is not the active controller{}", leader.as_ref().map(|(id, addr)| format!("; controller {id} at {addr} is")).unwrap_or_else(|| " and none is known".into()))]
    NotActive {
        /// This controller.
        node_id: i32,
        /// The active controller and its address, when known.
        leader: Option<(i32, String)>,
    },
    /// The quorum failed (a storage error, or shutting down).
    #[error("controller quorum: {0}")]
    Quorum(String),
    /// The request is refused; the code says why.
    #[error("{message}")]
    Refused {
        /// Kafka error code.
        code: ErrorCode,
        /// Explanation with the values involved.
        message: String,
    },
}

impl ControllerError {
    fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        ControllerError::Refused {
            code,
            message: message.into(),
        }
    }

    /// The stable error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            ControllerError::Store(_) | ControllerError::Apply(_) | ControllerError::Quorum(_) => {
                ErrorCode::UnknownServerError
            }
            ControllerError::NotActive { .. } => ErrorCode::NotController,
            ControllerError::Refused { code, .. } => *code,
        }
    }
}

/// Producer ids per block handed to a broker (Kafka's `PRODUCER_ID_BLOCK_SIZE`).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// A broker request must come from a registered, unfenced broker in the
/// registration it names.
fn check_live_broker(image: &MetadataImage, id: i32, epoch: i64) -> Result<(), ControllerError> {
    match image.brokers.get(&id) {
        Some(b) if b.epoch == epoch && !b.fenced => Ok(()),
        Some(b) => Err(ControllerError::refused(
            ErrorCode::StaleBrokerEpoch,
            format!(
                "broker {id} asked with epoch {epoch}, its registration has epoch {}{}",
                b.epoch,
                if b.fenced { " and is fenced" } else { "" }
            ),
        )),
        None => Err(ControllerError::refused(
            ErrorCode::StaleBrokerEpoch,
            format!("broker {id} is not registered"),
        )),
    }
}

/// The result for one item of a batch request (a topic to create, say).
type ItemResult = Result<(), (ErrorCode, String)>;

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

fn topic_resource(name: &str) -> ConfigResource {
    ConfigResource {
        r#type: ConfigResourceType::Topic as i32,
        name: name.to_owned(),
    }
}

/// Cluster-wide partition health: offline (no leader) and under-replicated
/// (ISR smaller than the replica set) partition counts.
pub(crate) fn publish_partition_gauges(image: &MetadataImage) {
    let (mut offline, mut under) = (0u64, 0u64);
    for p in image.topics.values().flat_map(|t| t.partitions.values()) {
        if p.leader == election::NO_LEADER {
            offline += 1;
        } else if p.isr.len() < p.replicas.len() {
            under += 1;
        }
    }
    metrics::gauge!("runnel_controller_offline_partitions").set(offline as f64);
    metrics::gauge!("runnel_controller_under_replicated_partitions").set(under as f64);
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
    for change in then(image) {
        let r = record(Record::PartitionChanged(change));
        image.apply(image.next_offset, &r)?;
        out.push(r);
    }
    Ok(())
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
            for change in election::on_broker_unfenced(&image, id) {
                let r = record(Record::PartitionChanged(change));
                image.apply(image.next_offset, &r)?;
                records.push(r);
            }
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
            Applied::Refused(why) => Err(ControllerError::Quorum(format!(
                "metadata entry {} refused: {why}",
                response.log_id
            ))),
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
                tracing::info!(
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

    /// Registers a broker; a new incarnation gets a new epoch (and starts fenced).
    pub async fn register_broker(
        &self,
        req: pb::RegisterBrokerRequest,
    ) -> Result<i64, ControllerError> {
        if req.broker_id < 0 {
            return Err(ControllerError::refused(
                ErrorCode::InvalidRequest,
                format!("broker id {} is negative", req.broker_id),
            ));
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
        let id = req.broker_id;
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
            return Err(ControllerError::refused(
                ErrorCode::InvalidRequest,
                format!("coordinator id {} is negative", req.coordinator_id),
            ));
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

    /// A leader's ISR changes (Kafka's AlterPartition): each partition is
    /// checked on its own against the leader and partition epochs, and the
    /// accepted ones are committed together.
    pub async fn alter_partition(
        &self,
        req: pb::AlterPartitionRequest,
    ) -> Result<Vec<pb::PartitionIsrResult>, ControllerError> {
        let mut inner = self.lock_active().await?;
        check_live_broker(&inner.image, req.broker_id, req.broker_epoch)?;
        let mut image = (*inner.image).clone();
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(req.partitions.len());
        for p in req.partitions {
            let change = election::IsrChange {
                topic: p.topic.clone(),
                partition: p.partition,
                leader: req.broker_id,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: p.isr,
            };
            let mut result = pb::PartitionIsrResult {
                topic: p.topic,
                partition: p.partition,
                ..Default::default()
            };
            match election::alter_isr(&image, &change) {
                Ok(Some(c)) => {
                    let r = record(Record::PartitionChanged(c));
                    image.apply(image.next_offset, &r)?;
                    records.push(r);
                }
                Ok(None) => {}
                Err(refused) => {
                    result.error_code = refused.code as i32;
                    result.error_message = refused.message;
                }
            }
            if let Some(state) = image
                .topics
                .get(&result.topic)
                .and_then(|t| t.partitions.get(&result.partition))
            {
                result.leader = state.leader;
                result.leader_epoch = state.leader_epoch;
                result.partition_epoch = state.partition_epoch;
                result.isr = state.isr.clone();
            }
            results.push(result);
        }
        let changed = records.len();
        self.commit(&mut inner, records).await?;
        if changed > 0 {
            tracing::info!(broker = req.broker_id, changed, "ISR changed");
        }
        Ok(results)
    }

    /// Hands a live broker the next block of [`PRODUCER_ID_BLOCK_SIZE`]
    /// producer ids (Kafka's AllocateProducerIds); returns the block's first id.
    pub async fn allocate_producer_ids(
        &self,
        broker_id: i32,
        broker_epoch: i64,
    ) -> Result<i64, ControllerError> {
        let mut inner = self.lock_active().await?;
        check_live_broker(&inner.image, broker_id, broker_epoch)?;
        let start = inner.image.next_producer_id;
        let next = start.checked_add(PRODUCER_ID_BLOCK_SIZE).ok_or_else(|| {
            ControllerError::refused(ErrorCode::UnknownServerError, "producer ids exhausted")
        })?;
        let r = record(Record::ProducerIdsAllocated(
            runnel_proto::metadata::v1::ProducerIdsAllocated {
                broker_id,
                broker_epoch,
                next_producer_id: next,
            },
        ));
        self.commit(&mut inner, vec![r]).await?;
        tracing::debug!(broker = broker_id, start, "producer id block allocated");
        Ok(start)
    }

    /// Moves leadership back to preferred replicas that are in sync
    /// (`auto.leader.rebalance.enable`); returns how many partitions moved.
    pub async fn elect_preferred_leaders(&self) -> Result<usize, ControllerError> {
        let mut inner = self.lock_active().await?;
        let records: Vec<MetadataRecord> = election::preferred_leaders(&inner.image)
            .into_iter()
            .map(|c| record(Record::PartitionChanged(c)))
            .collect();
        let moved = records.len();
        self.commit(&mut inner, records).await?;
        if moved > 0 {
            tracing::info!(
                partitions = moved,
                "leadership moved back to preferred replicas"
            );
        }
        Ok(moved)
    }

    /// Creates topics; each gets its own result.
    pub async fn create_topics(
        &self,
        req: pb::CreateTopicsRequest,
    ) -> Result<Vec<pb::TopicResult>, ControllerError> {
        let mut inner = self.lock_active().await?;
        let mut records = Vec::new();
        let mut results = Vec::new();
        // Names created by this request, so two colliding names in one request are caught.
        let mut taken: BTreeSet<String> = inner
            .image
            .topics
            .keys()
            .map(|n| collision_key(n))
            .collect();
        // As Kafka: a name listed twice in one request is refused every time.
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &req.topics {
            *counts.entry(t.name.as_str()).or_default() += 1;
        }
        let duplicated: BTreeSet<String> = counts
            .into_iter()
            .filter(|&(_, n)| n > 1)
            .map(|(name, _)| name.to_owned())
            .collect();
        for topic in req.topics {
            let result = if duplicated.contains(&topic.name) {
                Err((
                    ErrorCode::InvalidRequest,
                    format!("topic {} appears more than once in the request", topic.name),
                ))
            } else {
                self.plan_topic(&inner.image, &topic, &mut taken)
            };
            match result {
                Ok(mut topic_records) => {
                    if !req.validate_only {
                        records.append(&mut topic_records);
                    }
                    results.push(topic_result(&topic.name, Ok(())));
                }
                Err(e) => results.push(topic_result(&topic.name, Err(e))),
            }
        }
        self.commit(&mut inner, records).await?;
        for r in &results {
            if r.error_code == ErrorCode::None as i32 && !req.validate_only {
                tracing::info!(topic = %r.name, "topic created");
            }
        }
        Ok(results)
    }

    fn plan_topic(
        &self,
        image: &MetadataImage,
        topic: &pb::CreatableTopic,
        taken: &mut BTreeSet<String>,
    ) -> Result<Vec<MetadataRecord>, (ErrorCode, String)> {
        let name = &topic.name;
        validate_topic_name(name).map_err(|e| (ErrorCode::InvalidTopicException, e.to_string()))?;
        if image.topics.contains_key(name) {
            return Err((
                ErrorCode::TopicAlreadyExists,
                format!("topic {name} already exists"),
            ));
        }
        if taken.contains(&collision_key(name)) {
            return Err((
                ErrorCode::InvalidTopicException,
                format!(
                    "topic {name} collides with an existing topic once '.' and '_' are treated alike"
                ),
            ));
        }
        let partitions = if topic.partitions == -1 {
            self.settings.num_partitions
        } else {
            topic.partitions
        };
        if partitions < 1 {
            return Err((
                ErrorCode::InvalidPartitions,
                format!("partitions must be at least 1, not {partitions}"),
            ));
        }
        let rf = if topic.replication_factor == -1 {
            self.settings.default_replication_factor
        } else {
            topic.replication_factor
        };
        let brokers: Vec<i32> = image.live_brokers().map(|(id, _)| id).collect();
        if rf < 1 {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                format!("replication factor must be at least 1, not {rf}"),
            ));
        }
        if rf as usize > brokers.len() {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replication factor {rf} is larger than the {} available brokers",
                    brokers.len()
                ),
            ));
        }
        TopicConfig::from_pairs(topic.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| (ErrorCode::InvalidConfig, e.to_string()))?;

        let id = *uuid::Uuid::new_v4().as_bytes();
        let mut records = vec![record(Record::TopicCreated(TopicCreated {
            name: name.clone(),
            topic_id: id.to_vec().into(),
        }))];
        records.extend(partition_records(
            name,
            &id,
            &brokers,
            0,
            partitions as usize,
            rf as usize,
        ));
        for (key, value) in &topic.configs {
            records.push(record(Record::ConfigSet(ConfigSet {
                resource: Some(topic_resource(name)),
                key: key.clone(),
                value: value.clone(),
            })));
        }
        taken.insert(collision_key(name));
        Ok(records)
    }

    /// Deletes topics; each gets its own result.
    pub async fn delete_topics(
        &self,
        names: Vec<String>,
    ) -> Result<Vec<pb::TopicResult>, ControllerError> {
        let mut inner = self.lock_active().await?;
        let mut records = Vec::new();
        let mut results = Vec::new();
        let mut seen = BTreeSet::new();
        for name in names {
            let result = match inner.image.topics.get(&name) {
                Some(_) if name == OFFSETS_TOPIC => Err((
                    ErrorCode::InvalidRequest,
                    format!("{name} is an internal topic and cannot be deleted"),
                )),
                Some(t) if seen.insert(name.clone()) => {
                    records.push(record(Record::TopicDeleted(TopicDeleted {
                        name: name.clone(),
                        topic_id: t.id.to_vec().into(),
                    })));
                    Ok(())
                }
                Some(_) => Ok(()),
                None => Err((
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic {name} does not exist"),
                )),
            };
            results.push(topic_result(&name, result));
        }
        self.commit(&mut inner, records).await?;
        for r in &results {
            if r.error_code == ErrorCode::None as i32 {
                tracing::info!(topic = %r.name, "topic deleted");
            }
        }
        Ok(results)
    }

    /// Grows a topic to `count` partitions; shrinking is refused.
    pub async fn create_partitions(
        &self,
        req: pb::CreatePartitionsRequest,
    ) -> Result<pb::TopicResult, ControllerError> {
        let mut inner = self.lock_active().await?;
        let name = req.topic.clone();
        let planned = (|| {
            let t = inner.image.topics.get(&name).ok_or_else(|| {
                (
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic {name} does not exist"),
                )
            })?;
            let current = t.partitions.len() as i32;
            if req.count < current {
                return Err((
                    ErrorCode::InvalidPartitions,
                    format!(
                        "topic {name} has {current} partitions; partitions can only be added, not removed (asked for {})",
                        req.count
                    ),
                ));
            }
            if req.count == current {
                return Err((
                    ErrorCode::InvalidPartitions,
                    format!("topic {name} already has {current} partitions"),
                ));
            }
            let rf = t.partitions.get(&0).map_or(1, |p| p.replicas.len());
            let brokers: Vec<i32> = inner.image.live_brokers().map(|(id, _)| id).collect();
            if rf > brokers.len() {
                return Err((
                    ErrorCode::InvalidReplicationFactor,
                    format!(
                        "replication factor {rf} is larger than the {} available brokers",
                        brokers.len()
                    ),
                ));
            }
            Ok(partition_records(
                &name,
                &t.id,
                &brokers,
                current as usize,
                (req.count - current) as usize,
                rf,
            ))
        })();
        let result = match planned {
            Ok(records) => {
                if !req.validate_only {
                    self.commit(&mut inner, records).await?;
                    tracing::info!(topic = %name, partitions = req.count, "partitions added");
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
        Ok(topic_result(&name, result))
    }

    /// Brokers with liveness, the coordinators, and the controllers.
    pub async fn describe_cluster(&self) -> pb::DescribeClusterResponse {
        let inner = self.inner.lock().await;
        let image = self.shared.image();
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let controllers = membership
            .nodes()
            .map(|(&id, node)| pb::ControllerInfo {
                controller_id: controller_id(id),
                address: node.addr.clone(),
                active: m.current_leader == Some(id),
                voter: membership.voter_ids().any(|v| v == id),
                matched_index: if id == m.id {
                    m.last_log_index.map_or(-1, |i| i as i64)
                } else {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .map_or(-1, |l| l.index as i64)
                },
            })
            .collect();
        pb::DescribeClusterResponse {
            brokers: broker_infos(&image, &inner),
            controller_id: self.settings.node_id,
            controller_endpoints: self.settings.endpoints.clone(),
            metadata_end_offset: image.next_offset,
            cluster_id: self.cluster_id(),
            coordinators: coordinator_infos(&image, &inner),
            controllers,
            controller_term: m.current_term as i64,
        }
    }

    /// Adds controller `id` at `address` to the quorum: it first catches up
    /// as a learner, then becomes a voter.
    pub async fn add_controller(&self, id: i32, address: String) -> Result<(), ControllerError> {
        if id < 0 {
            return Err(ControllerError::refused(
                ErrorCode::InvalidRequest,
                format!("controller id {id} is negative"),
            ));
        }
        if !self.is_active() {
            return Err(self.not_active());
        }
        let node = openraft::BasicNode::new(address.clone());
        self.raft
            .add_learner(raft_id(id), node, true)
            .await
            .map_err(|e| self.membership_error(e))?;
        let mut voters = self.voters();
        voters.insert(raft_id(id));
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        tracing::info!(controller = id, %address, "controller added to the quorum");
        Ok(())
    }

    /// Removes controller `id` from the quorum.
    pub async fn remove_controller(&self, id: i32) -> Result<(), ControllerError> {
        if !self.is_active() {
            return Err(self.not_active());
        }
        let mut voters = self.voters();
        if !voters.remove(&raft_id(id)) {
            return Err(ControllerError::refused(
                ErrorCode::InvalidRequest,
                format!("controller {id} is not a voter of the quorum"),
            ));
        }
        if voters.is_empty() {
            return Err(ControllerError::refused(
                ErrorCode::InvalidRequest,
                "the last controller cannot be removed",
            ));
        }
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        tracing::info!(controller = id, "controller removed from the quorum");
        Ok(())
    }

    /// The Raft ids of the quorum's voters.
    fn voters(&self) -> BTreeSet<u64> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    fn membership_error(
        &self,
        e: openraft::error::RaftError<
            u64,
            openraft::error::ClientWriteError<u64, openraft::BasicNode>,
        >,
    ) -> ControllerError {
        match e {
            openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(_),
            ) => self.not_active(),
            openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ChangeMembershipError(e),
            ) => ControllerError::refused(ErrorCode::InvalidRequest, e.to_string()),
            other => ControllerError::Quorum(other.to_string()),
        }
    }

    /// Topics (all, or the named ones) with partitions and brokers.
    pub async fn metadata(&self, topics: Vec<String>) -> pb::GetMetadataResponse {
        let inner = self.inner.lock().await;
        let image = self.shared.image();
        let names: Vec<String> = if topics.is_empty() {
            image.topics.keys().cloned().collect()
        } else {
            topics
        };
        let topics = names
            .into_iter()
            .map(|name| match image.topics.get(&name) {
                Some(t) => pb::TopicMetadata {
                    name,
                    topic_id: t.id.to_vec().into(),
                    error_code: ErrorCode::None as i32,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|(&partition, p)| pb::PartitionMetadata {
                            partition,
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replicas.clone(),
                            isr: p.isr.clone(),
                        })
                        .collect(),
                },
                None => pb::TopicMetadata {
                    name,
                    error_code: ErrorCode::UnknownTopicOrPartition as i32,
                    ..Default::default()
                },
            })
            .collect();
        pb::GetMetadataResponse {
            topics,
            brokers: broker_infos(&image, &inner),
            metadata_end_offset: image.next_offset,
        }
    }

    /// Every config of each resource, with where its value comes from.
    pub async fn describe_configs(
        &self,
        resources: Vec<ConfigResource>,
    ) -> Vec<pb::ResourceConfigs> {
        let image = self.shared.image();
        resources
            .into_iter()
            .map(
                |resource| match (resource.r#type(), image.topics.get(&resource.name)) {
                    (ConfigResourceType::Topic, Some(t)) => {
                        let defaults = TopicConfig::default();
                        let entries = TopicConfig::keys()
                            .into_iter()
                            .map(|key| match t.configs.get(key) {
                                Some(v) => pb::ConfigEntry {
                                    key: key.to_owned(),
                                    value: v.clone(),
                                    source: pb::ConfigSource::Topic as i32,
                                },
                                None => pb::ConfigEntry {
                                    key: key.to_owned(),
                                    value: defaults.get(key).unwrap_or_default(),
                                    source: pb::ConfigSource::Default as i32,
                                },
                            })
                            .collect();
                        pb::ResourceConfigs {
                            resource: Some(resource),
                            error_code: ErrorCode::None as i32,
                            error_message: String::new(),
                            entries,
                        }
                    }
                    (ConfigResourceType::Topic, None) => pb::ResourceConfigs {
                        error_code: ErrorCode::UnknownTopicOrPartition as i32,
                        error_message: format!("topic {} does not exist", resource.name),
                        resource: Some(resource),
                        entries: Vec::new(),
                    },
                    _ => pb::ResourceConfigs {
                        error_code: ErrorCode::InvalidRequest as i32,
                        error_message: "only topic configs can be described".into(),
                        resource: Some(resource),
                        entries: Vec::new(),
                    },
                },
            )
            .collect()
    }

    /// Sets and removes topic config keys, all or nothing.
    pub async fn alter_configs(&self, req: pb::AlterConfigsRequest) -> Result<(), ControllerError> {
        let resource = req.resource.unwrap_or_default();
        if resource.r#type() != ConfigResourceType::Topic {
            return Err(ControllerError::refused(
                ErrorCode::InvalidRequest,
                "only topic configs can be altered; broker configs are static",
            ));
        }
        let mut inner = self.lock_active().await?;
        let name = resource.name.clone();
        let t = inner.image.topics.get(&name).ok_or_else(|| {
            ControllerError::refused(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name} does not exist"),
            )
        })?;
        let mut merged: BTreeMap<String, String> = t.configs.clone();
        let mut records = Vec::new();
        for op in &req.ops {
            match pb::AlterOp::try_from(op.op) {
                Ok(pb::AlterOp::Set) => {
                    merged.insert(op.key.clone(), op.value.clone());
                    records.push(record(Record::ConfigSet(ConfigSet {
                        resource: Some(topic_resource(&name)),
                        key: op.key.clone(),
                        value: op.value.clone(),
                    })));
                }
                Ok(pb::AlterOp::Delete) => {
                    if !TopicConfig::keys().contains(&op.key.as_str()) {
                        return Err(ControllerError::refused(
                            ErrorCode::InvalidConfig,
                            TopicConfigError::UnknownKey {
                                key: op.key.clone(),
                            }
                            .to_string(),
                        ));
                    }
                    if merged.remove(&op.key).is_some() {
                        records.push(record(Record::ConfigRemoved(ConfigRemoved {
                            resource: Some(topic_resource(&name)),
                            key: op.key.clone(),
                        })));
                    }
                }
                Err(_) => {
                    return Err(ControllerError::refused(
                        ErrorCode::InvalidRequest,
                        "unknown alter operation",
                    ));
                }
            }
        }
        TopicConfig::from_pairs(merged.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| ControllerError::refused(ErrorCode::InvalidConfig, e.to_string()))?;
        if !req.validate_only {
            self.commit(&mut inner, records).await?;
            tracing::info!(topic = %name, "topic configs altered");
        }
        Ok(())
    }
}

fn topic_result(name: &str, result: ItemResult) -> pb::TopicResult {
    match result {
        Ok(()) => pb::TopicResult {
            name: name.to_owned(),
            error_code: ErrorCode::None as i32,
            error_message: String::new(),
        },
        Err((code, message)) => pb::TopicResult {
            name: name.to_owned(),
            error_code: code as i32,
            error_message: message,
        },
    }
}

/// Records for new partitions `first..first + count` of a topic.
fn partition_records(
    name: &str,
    id: &[u8; 16],
    brokers: &[i32],
    first: usize,
    count: usize,
    rf: usize,
) -> Vec<MetadataRecord> {
    let mut rng = rand::rng();
    let n = brokers.len();
    let assignment = placement::assign(
        brokers,
        first,
        count,
        rf,
        rng.random_range(0..n),
        rng.random_range(0..n),
    );
    assignment
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| {
            record(Record::PartitionCreated(PartitionCreated {
                topic: name.to_owned(),
                topic_id: id.to_vec().into(),
                partition: (first + i) as i32,
                leader: replicas[0],
                isr: replicas.clone(),
                replicas,
                leader_epoch: 0,
                partition_epoch: 0,
            }))
        })
        .collect()
}

fn broker_infos(image: &MetadataImage, inner: &Inner) -> Vec<pb::BrokerInfo> {
    let now = Instant::now();
    image
        .brokers
        .iter()
        .map(|(&id, b)| pb::BrokerInfo {
            broker_id: id,
            broker_epoch: b.epoch,
            endpoints: b.endpoints.clone(),
            rack: b.rack.clone(),
            fenced: b.fenced,
            last_heartbeat_age_ms: inner
                .heartbeats
                .get(&id)
                .map_or(-1, |t| now.duration_since(*t).as_millis() as i64),
        })
        .collect()
}

fn coordinator_infos(image: &MetadataImage, inner: &Inner) -> Vec<pb::CoordinatorInfo> {
    let now = Instant::now();
    image
        .coordinators
        .iter()
        .map(|(&id, c)| pb::CoordinatorInfo {
            coordinator_id: id,
            coordinator_epoch: c.epoch,
            endpoints: c.endpoints.clone(),
            fenced: c.fenced,
            offsets_partitions: image
                .offsets_owners
                .values()
                .filter(|o| o.coordinator_id == id && o.coordinator_epoch == c.epoch)
                .map(|o| o.partition)
                .collect(),
            last_heartbeat_age_ms: inner
                .coordinator_heartbeats
                .get(&id)
                .map_or(-1, |t| now.duration_since(*t).as_millis() as i64),
        })
        .collect()
}
