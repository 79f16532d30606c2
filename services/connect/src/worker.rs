//! Running connectors and tasks: the worker starts, pauses, restarts and
//! stops the units the worker group assigned to it, following the config
//! topic, and moves the data.
//!
//! A source task's records are produced with acks=all; their source
//! offsets are committed to the offsets topic every
//! `offset.flush.interval.ms` once acknowledged, and on a clean stop. A
//! sink task consumes in the group `connect-<connector>`; its consumer
//! offsets are committed only after the task has flushed what it was given
//! (at least once: a crash repeats at most one flush interval).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use runnel_client::{
    Admin, ClientError, Cluster, ConsumerRecord, ErrorCode, GroupConfig, GroupConsumer, Header,
    NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use runnel_common::backoff::Backoff;
use runnel_common::shutdown::CancellationToken;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::configdef::{self, Props};
use crate::data::Converter;
use crate::plugins::{
    self, Kind, SinkRecord, SinkTask, SourceContext, SourceRecord, SourceTask, TaskError,
};
use crate::store::{Configs, RestartRequest, SourceOffsets, Status, Store, TargetState};

/// What the worker group assigns: a connector, or one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Unit {
    /// The connector.
    pub connector: String,
    /// The task, or `None` for the connector itself.
    pub task: Option<usize>,
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.task {
            None => write!(f, "{}", self.connector),
            Some(t) => write!(f, "{}-{t}", self.connector),
        }
    }
}

/// Every unit the configs call for: each connector and its tasks.
pub fn units_of(configs: &Configs) -> BTreeSet<Unit> {
    let mut out = BTreeSet::new();
    for (name, entry) in &configs.connectors {
        out.insert(Unit {
            connector: name.clone(),
            task: None,
        });
        for t in 0..task_configs(&entry.props).len() {
            out.insert(Unit {
                connector: name.clone(),
                task: Some(t),
            });
        }
    }
    out
}

/// A connector's task configs (none when its class is unknown).
pub fn task_configs(props: &Props) -> Vec<Props> {
    let Some(plugin) = plugins::find(configdef::get(props, "connector.class", "")) else {
        return Vec::new();
    };
    let max = configdef::get_i64(props, "tasks.max", 1).clamp(1, 1024) as usize;
    let mut tasks = plugin.task_configs(props, max);
    tasks.truncate(max);
    tasks
}

/// Worker settings that shape how tasks run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This worker's id (its REST address).
    pub worker_id: String,
    /// `offset.flush.interval.ms`.
    pub offset_flush_interval: Duration,
    /// `offset.flush.timeout.ms`: how long a stopping source task waits for acknowledgements.
    pub offset_flush_timeout: Duration,
    /// `key.converter` default.
    pub key_converter: String,
    /// `value.converter` default.
    pub value_converter: String,
    /// `key.converter.schemas.enable` / `value.converter.schemas.enable` default.
    pub schemas_enable: bool,
    /// `task.shutdown.graceful.timeout.ms`.
    pub task_shutdown_graceful_timeout: Duration,
    /// Sink consumers' `session.timeout.ms`.
    pub consumer_session_timeout: Duration,
    /// Sink consumers' `heartbeat.interval.ms`.
    pub consumer_heartbeat_interval: Duration,
    /// Sink consumers' `max.poll.records`.
    pub consumer_max_poll_records: usize,
    /// `exactly.once.source.support=enabled`: source tasks write records
    /// and offsets in one transaction (KIP-618).
    pub exactly_once_source: bool,
    /// `group.id`: with the connector and task, each exactly-once source
    /// task's `transactional.id`.
    pub group_id: String,
}

struct Running {
    props: Props,
    target: watch::Sender<TargetState>,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// The units this worker runs.
pub struct Worker {
    settings: Settings,
    cluster: Arc<Cluster>,
    store: Arc<Store>,
    producer: Producer,
    generation: AtomicI32,
    assigned: Mutex<BTreeSet<Unit>>,
    running: tokio::sync::Mutex<BTreeMap<Unit, Running>>,
    /// Cancelled when the worker is killed: units end at once, committing nothing.
    halt: CancellationToken,
    /// The running units' tasks, so a kill can wait until they have ended.
    units: TaskTracker,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.settings.worker_id)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker with nothing assigned yet.
    pub fn new(
        settings: Settings,
        cluster: Arc<Cluster>,
        store: Arc<Store>,
        producer: Producer,
        halt: CancellationToken,
        units: TaskTracker,
    ) -> Arc<Worker> {
        Arc::new(Worker {
            settings,
            cluster,
            store,
            producer,
            generation: AtomicI32::new(-1),
            assigned: Mutex::new(BTreeSet::new()),
            running: tokio::sync::Mutex::new(BTreeMap::new()),
            halt,
            units,
        })
    }

    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.settings.worker_id
    }

    /// The units assigned to this worker.
    pub fn assigned(&self) -> BTreeSet<Unit> {
        self.assigned.lock().clone()
    }

    /// Takes up a new assignment (in worker group generation `generation`).
    pub async fn assign(self: &Arc<Self>, units: BTreeSet<Unit>, generation: i32) {
        self.generation.store(generation, Ordering::Release);
        *self.assigned.lock() = units;
        self.reconcile(None).await;
    }

    /// Stops every unit (the worker is leaving the group or shutting down).
    pub async fn stop_all(&self, status: &str) {
        self.assigned.lock().clear();
        let running = std::mem::take(&mut *self.running.lock().await);
        for (unit, r) in running {
            self.stop_unit(&unit, r).await;
            self.set_status(&unit, status, None).await;
        }
    }

    /// Brings what runs in line with the assignment and the configs;
    /// `restart` restarts the units it names.
    pub async fn reconcile(self: &Arc<Self>, restart: Option<&RestartRequest>) {
        let configs = self.store.current();
        let assigned = self.assigned();
        let mut running = self.running.lock().await;
        // Stop what is no longer ours, gone, reconfigured, stopped or to restart.
        let mut to_stop = Vec::new();
        for (unit, r) in running.iter() {
            let entry = configs.connectors.get(&unit.connector);
            let keep = assigned.contains(unit)
                && entry.is_some_and(|e| e.props == r.props && e.target != TargetState::Stopped)
                && !restart.is_some_and(|req| self.restarts(req, unit));
            if !keep {
                to_stop.push(unit.clone());
            }
        }
        for unit in to_stop {
            if let Some(r) = running.remove(&unit) {
                self.stop_unit(&unit, r).await;
                let entry = configs.connectors.get(&unit.connector);
                let mine = self
                    .store
                    .status(&unit.connector, unit.task)
                    .is_some_and(|s| s.worker_id == self.id());
                // A deleted connector's statuses went with it; a unit
                // started again below reports RUNNING itself.
                match entry {
                    Some(e) if e.target == TargetState::Stopped => {
                        self.set_status(&unit, "STOPPED", None).await;
                    }
                    Some(_) if !assigned.contains(&unit) && mine => {
                        self.set_status(&unit, "UNASSIGNED", None).await;
                    }
                    _ => {}
                }
            }
        }
        // A restart asked for units that have FAILED and so are not running.
        for unit in &assigned {
            let Some(entry) = configs.connectors.get(&unit.connector) else {
                continue;
            };
            if let Some(r) = running.get(unit) {
                r.target.send_if_modified(|t| {
                    let changed = *t != entry.target;
                    *t = entry.target;
                    changed
                });
                continue;
            }
            if entry.target == TargetState::Stopped {
                if self
                    .store
                    .status(&unit.connector, unit.task)
                    .is_none_or(|s| s.state != "STOPPED" || s.worker_id != self.id())
                {
                    self.set_status(unit, "STOPPED", None).await;
                }
                continue;
            }
            let generation = self.generation.load(Ordering::Acquire);
            let failed_here = self
                .store
                .status(&unit.connector, unit.task)
                .is_some_and(|s| {
                    s.state == "FAILED" && s.worker_id == self.id() && s.generation == generation
                });
            let restart_this = restart.is_some_and(|req| self.restarts(req, unit));
            if failed_here && !restart_this {
                // It failed in this generation: it stays FAILED until restarted.
                continue;
            }
            let (target, target_rx) = watch::channel(entry.target);
            let stop = CancellationToken::new();
            let handle = self.units.spawn(Arc::clone(self).run_unit(
                unit.clone(),
                entry.props.clone(),
                target_rx,
                stop.clone(),
            ));
            running.insert(
                unit.clone(),
                Running {
                    props: entry.props.clone(),
                    target,
                    stop,
                    handle,
                },
            );
        }
    }

    /// Stops a unit, waiting `task.shutdown.graceful.timeout.ms` for it
    /// to commit what it delivered before abandoning it.
    async fn stop_unit(&self, unit: &Unit, r: Running) {
        r.stop.cancel();
        let mut handle = r.handle;
        if tokio::time::timeout(self.settings.task_shutdown_graceful_timeout, &mut handle)
            .await
            .is_err()
        {
            tracing::warn!(%unit, "task did not stop within task.shutdown.graceful.timeout.ms; abandoning it");
            handle.abort();
        }
    }

    fn restarts(&self, req: &RestartRequest, unit: &Unit) -> bool {
        if req.connector != unit.connector || (unit.task.is_some() && !req.include_tasks) {
            return false;
        }
        !req.only_failed
            || self
                .store
                .status(&unit.connector, unit.task)
                .is_some_and(|s| s.state == "FAILED")
    }

    async fn set_status(&self, unit: &Unit, state: &str, trace: Option<String>) {
        let status = Status {
            state: state.to_owned(),
            trace,
            worker_id: self.settings.worker_id.clone(),
            generation: self.generation.load(Ordering::Acquire),
        };
        if let Err(e) = self
            .store
            .put_status(&unit.connector, unit.task, &status)
            .await
        {
            tracing::warn!(%unit, error = %e, "cannot record status");
        }
    }

    async fn run_unit(
        self: Arc<Self>,
        unit: Unit,
        props: Props,
        target: watch::Receiver<TargetState>,
        stop: CancellationToken,
    ) {
        let halt = self.halt.clone();
        tokio::select! {
            () = halt.cancelled() => {}
            () = self.run_unit_until_stopped(unit, props, target, stop) => {}
        }
    }

    async fn run_unit_until_stopped(
        self: Arc<Self>,
        unit: Unit,
        props: Props,
        mut target: watch::Receiver<TargetState>,
        stop: CancellationToken,
    ) {
        let Some(task) = unit.task else {
            // The connector itself: its task configs are computed from its
            // config by every worker, so it only reports its state.
            loop {
                let state = if *target.borrow_and_update() == TargetState::Paused {
                    "PAUSED"
                } else {
                    "RUNNING"
                };
                self.set_status(&unit, state, None).await;
                tokio::select! {
                    () = stop.cancelled() => return,
                    r = target.changed() => if r.is_err() { return },
                }
            }
        };
        let Some(plugin) = plugins::find(configdef::get(&props, "connector.class", "")) else {
            self.set_status(&unit, "FAILED", Some("unknown connector class".into()))
                .await;
            return;
        };
        let Some(task_props) = task_configs(&props).into_iter().nth(task) else {
            self.set_status(
                &unit,
                "FAILED",
                Some(format!("the connector has no task {task}")),
            )
            .await;
            return;
        };
        let ctx = TaskCtx {
            worker: Arc::clone(&self),
            unit: unit.clone(),
            key: converter(&props, "key", &self.settings),
            value: converter(&props, "value", &self.settings),
            tolerate: configdef::get(&props, "errors.tolerance", "none")
                .eq_ignore_ascii_case("all"),
            log_errors: configdef::get_bool(&props, "errors.log.enable", false),
        };
        tracing::info!(%unit, "starting task");
        let result = match plugin.kind() {
            Kind::Source => match plugin.source_task(&task_props) {
                Ok(t) if self.settings.exactly_once_source => {
                    ctx.run_source_exactly_once(t, &props, &mut target, &stop, task)
                        .await
                }
                Ok(_) if configdef::get(&props, "exactly.once.support", "requested") == "required" => {
                    Err(TaskError::Fatal(
                        "exactly.once.support=required, but this worker's exactly.once.source.support is not enabled".into(),
                    ))
                }
                Ok(t) => ctx.run_source(t, &mut target, &stop).await,
                Err(e) => Err(e),
            },
            Kind::Sink => match plugin.sink_task(&task_props) {
                Ok(t) => ctx.run_sink(t, &props, &mut target, &stop).await,
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(()) => tracing::info!(%unit, "task stopped"),
            Err(e) => {
                tracing::error!(%unit, error = %e, "task failed");
                self.set_status(&unit, "FAILED", Some(e.to_string())).await;
            }
        }
    }
}

fn converter(props: &Props, which: &str, settings: &Settings) -> Converter {
    let default = if which == "key" {
        &settings.key_converter
    } else {
        &settings.value_converter
    };
    let name = props
        .get(&format!("{which}.converter"))
        .filter(|v| !v.is_empty())
        .unwrap_or(default);
    let schemas = configdef::get_bool(
        props,
        &format!("{which}.converter.schemas.enable"),
        settings.schemas_enable,
    );
    Converter::named(name, schemas).unwrap_or(Converter::Json { schemas })
}

/// A source partition's key in a task's offsets, with the partition and offset.
type OffsetEntry = (String, (Json, Json));

/// What one poll of a source task came to.
enum Polled {
    /// Told to stop.
    Stop,
    /// A retriable failure, already waited out: poll again.
    Retry,
    /// Its records (maybe none).
    Records(Vec<SourceRecord>),
}

/// Most acknowledged-but-unchecked source batches a task keeps in flight.
const SOURCE_BATCHES_IN_FLIGHT: usize = 16;

struct TaskCtx {
    worker: Arc<Worker>,
    unit: Unit,
    key: Converter,
    value: Converter,
    tolerate: bool,
    log_errors: bool,
}

type Acked = JoinHandle<Result<(), ClientError>>;

impl TaskCtx {
    fn name(&self) -> &str {
        &self.unit.connector
    }

    /// Waits while the connector is paused; false when told to stop.
    async fn wait_unpaused(
        &self,
        target: &mut watch::Receiver<TargetState>,
        stop: &CancellationToken,
    ) -> bool {
        if *target.borrow_and_update() != TargetState::Paused {
            return true;
        }
        self.worker.set_status(&self.unit, "PAUSED", None).await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return false,
                r = target.changed() => {
                    if r.is_err() {
                        return false;
                    }
                    if *target.borrow_and_update() != TargetState::Paused {
                        self.worker.set_status(&self.unit, "RUNNING", None).await;
                        return true;
                    }
                }
            }
        }
    }

    async fn run_source(
        &self,
        mut task: Box<dyn SourceTask>,
        target: &mut watch::Receiver<TargetState>,
        stop: &CancellationToken,
    ) -> Result<(), TaskError> {
        let store = &self.worker.store;
        task.start(SourceContext {
            offsets: store.source_offsets(self.name()),
        })
        .await?;
        self.worker.set_status(&self.unit, "RUNNING", None).await;
        let mut in_flight: VecDeque<(Acked, SourceOffsets)> = VecDeque::new();
        let mut committable: BTreeMap<String, (Json, Json)> = BTreeMap::new();
        let mut last_commit = Instant::now();
        let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let result: Result<(), TaskError> = async {
            loop {
                if stop.is_cancelled() || !self.wait_unpaused(target, stop).await {
                    return Ok(());
                }
                let records = match self.poll_source(&mut task, stop, &mut retry).await? {
                    Polled::Stop => return Ok(()),
                    Polled::Retry => continue,
                    Polled::Records(r) => r,
                };
                if !records.is_empty() {
                    let mut acks = Vec::with_capacity(records.len());
                    let mut offsets = BTreeMap::new();
                    for r in records {
                        let (record, (k, offset)) = self.convert_source(r)?;
                        if let Some(record) = record {
                            let delivery =
                                self.worker.producer.send(record).await.map_err(|e| {
                                    TaskError::Fatal(format!("producing failed: {e}"))
                                })?;
                            acks.push(delivery);
                        }
                        offsets.insert(k, offset);
                    }
                    let acked: Acked = tokio::spawn(async move {
                        for a in acks {
                            a.await?;
                        }
                        Ok(())
                    });
                    in_flight.push_back((acked, offsets));
                }
                self.collect_acks(&mut in_flight, &mut committable, false)
                    .await?;
                if last_commit.elapsed() >= self.worker.settings.offset_flush_interval {
                    self.commit_source_offsets(&mut committable).await;
                    last_commit = Instant::now();
                }
            }
        }
        .await;
        // Stopping (or failed): commit what was acknowledged.
        let wait = tokio::time::timeout(
            self.worker.settings.offset_flush_timeout,
            self.collect_acks(&mut in_flight, &mut committable, true),
        )
        .await;
        if !matches!(wait, Ok(Ok(()))) {
            tracing::warn!(unit = %self.unit, "not every record was acknowledged before the task stopped; their offsets stay uncommitted");
        }
        self.commit_source_offsets(&mut committable).await;
        task.stop().await;
        result
    }

    /// A source task under `exactly.once.source.support=enabled` (KIP-618):
    /// a transactional producer of its own (`transactional.id`
    /// `<group.id>-<connector>-<task>`, whose initialisation fences a
    /// zombie of the task and aborts what it left open) writes the records
    /// of each transaction and the source offsets they reach, committed
    /// together at each `transaction.boundary` (every poll, or every
    /// interval). A killed task's open transaction is aborted, so its
    /// records and offsets are never seen (read_committed) and the next
    /// instance starts again from the last committed offsets.
    async fn run_source_exactly_once(
        &self,
        mut task: Box<dyn SourceTask>,
        props: &Props,
        target: &mut watch::Receiver<TargetState>,
        stop: &CancellationToken,
        index: usize,
    ) -> Result<(), TaskError> {
        let settings = &self.worker.settings;
        let interval = match configdef::get(props, "transaction.boundary", "poll") {
            "interval" => Some(
                u64::try_from(configdef::get_i64(
                    props,
                    "transaction.boundary.interval.ms",
                    -1,
                ))
                .ok()
                .filter(|ms| *ms > 0)
                .map_or(settings.offset_flush_interval, Duration::from_millis),
            ),
            "poll" => None,
            other => {
                return Err(TaskError::Fatal(format!(
                    "transaction.boundary={other} is not supported by this connector"
                )));
            }
        };
        let transactional_id = format!("{}-{}-{index}", settings.group_id, self.unit.connector);
        let producer = Producer::with_cluster(
            Arc::clone(&self.worker.cluster),
            ProducerConfig {
                transactional_id: Some(transactional_id.clone()),
                ..ProducerConfig::default()
            },
        );
        producer.init_transactions().await.map_err(|e| {
            TaskError::Fatal(format!(
                "cannot initialise transactional producer {transactional_id}: {e}"
            ))
        })?;
        let store = &self.worker.store;
        task.start(SourceContext {
            offsets: store.source_offsets(self.name()),
        })
        .await?;
        self.worker.set_status(&self.unit, "RUNNING", None).await;
        // The open transaction: when it began and the offsets it reaches.
        let mut open: Option<(Instant, SourceOffsets)> = None;
        let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let result: Result<(), TaskError> = async {
            loop {
                if stop.is_cancelled() || !self.wait_unpaused(target, stop).await {
                    return Ok(());
                }
                let records = match self.poll_source(&mut task, stop, &mut retry).await? {
                    Polled::Stop => return Ok(()),
                    Polled::Retry => continue,
                    Polled::Records(r) => r,
                };
                if !records.is_empty() {
                    if open.is_none() {
                        producer.begin_transaction().map_err(|e| {
                            TaskError::Fatal(format!("cannot begin a transaction: {e}"))
                        })?;
                        open = Some((Instant::now(), BTreeMap::new()));
                    }
                    let Some((_, offsets)) = open.as_mut() else {
                        continue;
                    };
                    for r in records {
                        let (record, (k, offset)) = self.convert_source(r)?;
                        offsets.insert(k, offset);
                        if let Some(record) = record {
                            producer
                                .send(record)
                                .await
                                .map_err(|e| TaskError::Fatal(format!("producing failed: {e}")))?;
                        }
                    }
                }
                let due = open
                    .as_ref()
                    .is_some_and(|(began, _)| interval.is_none_or(|i| began.elapsed() >= i));
                if due && let Some((_, offsets)) = open.take() {
                    self.commit_source_transaction(&producer, offsets).await?;
                }
            }
        }
        .await;
        // Stopping: what the task sent commits if it ended well.
        if let Some((_, offsets)) = open.take() {
            let ended = if result.is_ok() {
                self.commit_source_transaction(&producer, offsets).await
            } else {
                producer
                    .abort_transaction()
                    .await
                    .map_err(|e| TaskError::Fatal(e.to_string()))
            };
            if let Err(e) = ended {
                tracing::warn!(unit = %self.unit, error = %e, "the stopping task's last transaction did not commit; its records and offsets are discarded");
            }
        }
        task.stop().await;
        if let Err(e) = producer.close().await {
            tracing::debug!(unit = %self.unit, error = %e, "closing the task's transactional producer");
        }
        result
    }

    /// Writes `offsets` to the offsets topic in the open transaction and
    /// commits it with the records sent since it began.
    async fn commit_source_transaction(
        &self,
        producer: &Producer,
        offsets: SourceOffsets,
    ) -> Result<(), TaskError> {
        let offsets: Vec<(Json, Json)> = offsets.into_values().collect();
        let store = &self.worker.store;
        let committed = async {
            for record in store.source_offset_records(self.name(), &offsets) {
                producer.send(record).await?;
            }
            producer.commit_transaction().await
        }
        .await;
        match committed {
            Ok(()) => {
                store.note_source_offsets(self.name(), &offsets);
                Ok(())
            }
            Err(e) => {
                // Nothing of it counts; the task fails and restarts from the last commit.
                if let Err(abort) = producer.abort_transaction().await {
                    tracing::debug!(unit = %self.unit, error = %abort, "aborting after a failed commit");
                }
                Err(TaskError::Fatal(format!(
                    "committing the task's transaction failed: {e}"
                )))
            }
        }
    }

    /// Polls the source task once: its records, a retriable failure
    /// (logged, after a pause), or a stop.
    async fn poll_source(
        &self,
        task: &mut Box<dyn SourceTask>,
        stop: &CancellationToken,
        retry: &mut Backoff,
    ) -> Result<Polled, TaskError> {
        let records = tokio::select! {
            () = stop.cancelled() => return Ok(Polled::Stop),
            r = task.poll() => r,
        };
        match records {
            Ok(r) => {
                retry.reset();
                Ok(Polled::Records(r))
            }
            Err(TaskError::Retriable(e)) => {
                tracing::warn!(unit = %self.unit, error = %e, "source poll failed; retrying");
                retry.wait().await;
                Ok(Polled::Retry)
            }
            Err(e) => Err(e),
        }
    }

    /// A source record as the record to produce (`None`: it could not be
    /// converted and errors are tolerated) and the source offset it reaches.
    fn convert_source(
        &self,
        r: SourceRecord,
    ) -> Result<(Option<ProducerRecord>, OffsetEntry), TaskError> {
        let offset = (
            r.source_partition.to_string(),
            (r.source_partition, r.source_offset),
        );
        let record = match (
            self.key.from_connect(&r.key),
            self.value.from_connect(&r.value),
        ) {
            (Ok(key), Ok(value)) => Some(ProducerRecord {
                topic: r.topic,
                partition: r.partition,
                key,
                value,
                headers: Vec::new(),
                timestamp: r.timestamp,
            }),
            (Err(e), _) | (_, Err(e)) => {
                self.tolerate_or_fail(
                    &format!("converting a record for {}", r.topic),
                    &e.to_string(),
                )?;
                None
            }
        };
        Ok((record, offset))
    }

    /// Moves the offsets of acknowledged batches to `committable`, in order.
    async fn collect_acks(
        &self,
        in_flight: &mut VecDeque<(Acked, SourceOffsets)>,
        committable: &mut BTreeMap<String, (Json, Json)>,
        all: bool,
    ) -> Result<(), TaskError> {
        while let Some((front, _)) = in_flight.front() {
            if !(all || front.is_finished() || in_flight.len() > SOURCE_BATCHES_IN_FLIGHT) {
                break;
            }
            let Some((acked, offsets)) = in_flight.pop_front() else {
                break;
            };
            match acked.await {
                Ok(Ok(())) => committable.extend(offsets),
                Ok(Err(e)) => {
                    return Err(TaskError::Fatal(format!(
                        "a record was not acknowledged: {e}"
                    )));
                }
                Err(e) => {
                    return Err(TaskError::Fatal(format!(
                        "acknowledgement wait failed: {e}"
                    )));
                }
            }
        }
        Ok(())
    }

    async fn commit_source_offsets(&self, committable: &mut BTreeMap<String, (Json, Json)>) {
        if committable.is_empty() {
            return;
        }
        let offsets: Vec<(Json, Json)> = committable.values().cloned().collect();
        match self
            .worker
            .store
            .put_source_offsets(self.name(), &offsets)
            .await
        {
            Ok(()) => committable.clear(),
            Err(e) => {
                tracing::warn!(unit = %self.unit, error = %e, "cannot commit source offsets; will retry")
            }
        }
    }

    fn tolerate_or_fail(&self, what: &str, why: &str) -> Result<(), TaskError> {
        if !self.tolerate {
            return Err(TaskError::Fatal(format!(
                "Tolerance exceeded in error handler: {what}: {why}"
            )));
        }
        if self.log_errors {
            tracing::warn!(unit = %self.unit, what, why, "skipping a record (errors.tolerance=all)");
        }
        metrics::counter!("connect_records_skipped_total", "connector" => self.name().to_owned())
            .increment(1);
        Ok(())
    }

    fn consumer(&self, props: &Props) -> Result<GroupConsumer, TaskError> {
        let mut config = GroupConfig::new(format!("connect-{}", self.name()));
        config.client_id = format!("connector-consumer-{}", self.unit);
        config.enable_auto_commit = false;
        config.session_timeout = self.worker.settings.consumer_session_timeout;
        config.heartbeat_interval = self.worker.settings.consumer_heartbeat_interval;
        config.consumer.max_poll_records = self.worker.settings.consumer_max_poll_records;
        config.consumer.auto_offset_reset = OffsetReset::Earliest;
        let mut consumer = GroupConsumer::with_cluster(Arc::clone(&self.worker.cluster), config);
        let topics = configdef::list(props, "topics");
        if topics.is_empty() {
            consumer
                .subscribe_pattern(configdef::get(props, "topics.regex", ""))
                .map_err(|e| TaskError::Fatal(e.to_string()))?;
        } else {
            consumer.subscribe(topics);
        }
        Ok(consumer)
    }

    async fn run_sink(
        &self,
        mut task: Box<dyn SinkTask>,
        props: &Props,
        target: &mut watch::Receiver<TargetState>,
        stop: &CancellationToken,
    ) -> Result<(), TaskError> {
        task.start().await?;
        let dlq = Dlq::new(props, &self.unit);
        if let Some(d) = &dlq {
            d.ensure(&self.worker.cluster).await?;
        }
        self.worker.set_status(&self.unit, "RUNNING", None).await;
        let mut consumer: Option<GroupConsumer> = None;
        let mut uncommitted: HashMap<TopicPartition, i64> = HashMap::new();
        let mut last_commit = Instant::now();
        let result: Result<(), TaskError> = async {
            loop {
                if stop.is_cancelled() {
                    return Ok(());
                }
                if *target.borrow() == TargetState::Paused {
                    // A paused sink leaves its consumer group until resumed.
                    if let Some(c) = consumer.take() {
                        self.flush_and_commit(&mut task, &c, &mut uncommitted).await?;
                        let _ = c.close().await;
                    }
                    if !self.wait_unpaused(target, stop).await {
                        return Ok(());
                    }
                }
                if consumer.is_none() {
                    consumer = Some(self.consumer(props)?);
                }
                let Some(c) = consumer.as_mut() else {
                    continue;
                };
                let polled = tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    _ = target.changed() => continue,
                    r = c.poll(Duration::from_millis(500)) => r,
                };
                let records = match polled {
                    Ok(r) => r,
                    Err(e) if e.is_retriable() => {
                        tracing::warn!(unit = %self.unit, error = %e, "sink consumer poll failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    Err(e) => return Err(TaskError::Fatal(format!("consuming failed: {e}"))),
                };
                if !records.is_empty() {
                    self.deliver(&mut task, &records, dlq.as_ref(), stop).await?;
                    for r in &records {
                        uncommitted.insert(TopicPartition::new(&*r.topic, r.partition), r.offset + 1);
                    }
                }
                if last_commit.elapsed() >= self.worker.settings.offset_flush_interval {
                    if let Some(c) = consumer.as_ref() {
                        self.flush_and_commit(&mut task, c, &mut uncommitted).await?;
                    }
                    last_commit = Instant::now();
                }
            }
        }
        .await;
        if let Some(c) = consumer.take() {
            if result.is_ok()
                && let Err(e) = self.flush_and_commit(&mut task, &c, &mut uncommitted).await
            {
                tracing::warn!(unit = %self.unit, error = %e, "final flush failed; the last records will be delivered again");
            }
            let _ = c.close().await;
        }
        task.stop().await;
        result
    }

    /// Converts and puts one polled batch, retrying what is retriable.
    async fn deliver(
        &self,
        task: &mut Box<dyn SinkTask>,
        records: &[ConsumerRecord],
        dlq: Option<&Dlq>,
        stop: &CancellationToken,
    ) -> Result<(), TaskError> {
        let mut batch = Vec::with_capacity(records.len());
        let mut origin = Vec::with_capacity(records.len());
        for r in records {
            let key = self.key.to_connect(r.key.as_ref());
            let value = self.value.to_connect(r.value.as_ref());
            match (key, value) {
                (Ok(key), Ok(value)) => {
                    batch.push(SinkRecord {
                        topic: r.topic.to_string(),
                        partition: r.partition,
                        offset: r.offset,
                        timestamp: r.timestamp,
                        key,
                        value,
                    });
                    origin.push(r);
                }
                (Err(e), _) | (_, Err(e)) => {
                    let why = format!("converting {}-{}@{}: {e}", r.topic, r.partition, r.offset);
                    self.tolerate_or_fail("converting a record", &why)?;
                    if let Some(d) = dlq {
                        d.send(&self.worker.producer, r, &why).await?;
                    }
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let failed = loop {
            match task.put(batch.clone()).await {
                Ok(f) => break f,
                Err(TaskError::Retriable(e)) => {
                    tracing::warn!(unit = %self.unit, error = %e, "sink put failed; retrying the batch");
                    tokio::select! {
                        () = stop.cancelled() => return Err(TaskError::Retriable(e)),
                        () = backoff.wait() => {}
                    }
                }
                Err(e) => return Err(e),
            }
        };
        for f in failed {
            let Some(r) = origin.get(f.index) else {
                continue;
            };
            let why = format!(
                "writing {}-{}@{}: {}",
                r.topic, r.partition, r.offset, f.reason
            );
            self.tolerate_or_fail("writing a record", &why)?;
            if let Some(d) = dlq {
                d.send(&self.worker.producer, r, &why).await?;
            }
        }
        Ok(())
    }

    async fn flush_and_commit(
        &self,
        task: &mut Box<dyn SinkTask>,
        consumer: &GroupConsumer,
        uncommitted: &mut HashMap<TopicPartition, i64>,
    ) -> Result<(), TaskError> {
        if uncommitted.is_empty() {
            return Ok(());
        }
        task.flush().await?;
        let owned: BTreeSet<&TopicPartition> = consumer.assignment().iter().collect();
        let offsets: Vec<(TopicPartition, i64)> = uncommitted
            .drain()
            .filter(|(tp, _)| owned.contains(tp))
            .collect();
        tracing::debug!(unit = %self.unit, partitions = offsets.len(), ?offsets, "committing sink offsets");
        if let Err(e) = consumer.commit_offsets(offsets).await {
            // The records are written; they will be delivered again (at least once).
            tracing::warn!(unit = %self.unit, error = %e, "committing sink offsets failed");
        }
        Ok(())
    }
}

/// `errors.deadletterqueue.*` of a sink.
struct Dlq {
    topic: String,
    replication_factor: i32,
    context_headers: bool,
    connector: String,
    task: usize,
}

impl Dlq {
    fn new(props: &Props, unit: &Unit) -> Option<Dlq> {
        let topic = configdef::get(props, "errors.deadletterqueue.topic.name", "").trim();
        if topic.is_empty() {
            return None;
        }
        Some(Dlq {
            topic: topic.to_owned(),
            replication_factor: configdef::get_i64(
                props,
                "errors.deadletterqueue.topic.replication.factor",
                3,
            ) as i32,
            context_headers: configdef::get_bool(
                props,
                "errors.deadletterqueue.context.headers.enable",
                false,
            ),
            connector: unit.connector.clone(),
            task: unit.task.unwrap_or(0),
        })
    }

    async fn ensure(&self, cluster: &Arc<Cluster>) -> Result<(), TaskError> {
        let admin = Admin::with_cluster(Arc::clone(cluster));
        let result = async {
            let brokers = admin.describe_cluster().await?.brokers.len().max(1) as i32;
            let topic = NewTopic::new(&self.topic)
                .partitions(1)
                .replication_factor(self.replication_factor.clamp(1, brokers));
            match admin.create_topic(topic).await {
                Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => Ok(()),
                other => other,
            }
        }
        .await;
        result.map_err(|e: ClientError| {
            TaskError::Fatal(format!(
                "cannot create the dead-letter topic {}: {e}",
                self.topic
            ))
        })
    }

    async fn send(
        &self,
        producer: &Producer,
        r: &ConsumerRecord,
        why: &str,
    ) -> Result<(), TaskError> {
        let mut headers = r.headers.clone();
        if self.context_headers {
            let mut h = |k: &str, v: String| {
                headers.push(Header {
                    key: Bytes::from(format!("__connect.errors.{k}")),
                    value: Some(Bytes::from(v)),
                })
            };
            h("topic", r.topic.to_string());
            h("partition", r.partition.to_string());
            h("offset", r.offset.to_string());
            h("connector.name", self.connector.clone());
            h("task.id", self.task.to_string());
            h("exception.message", why.to_owned());
        }
        let record = ProducerRecord {
            topic: self.topic.clone(),
            partition: None,
            key: r.key.clone(),
            value: r.value.clone(),
            headers,
            timestamp: Some(r.timestamp),
        };
        let delivery = producer.send(record).await.map_err(|e| {
            TaskError::Fatal(format!(
                "cannot send to the dead-letter topic {}: {e}",
                self.topic
            ))
        })?;
        delivery.await.map_err(|e| {
            TaskError::Fatal(format!(
                "cannot send to the dead-letter topic {}: {e}",
                self.topic
            ))
        })?;
        metrics::counter!("connect_deadletter_records_total", "connector" => self.connector.clone()).increment(1);
        Ok(())
    }
}
