//! The worker cluster's state, kept in Runnel itself as Kafka Connect keeps
//! it: three compacted internal topics, each read from the start when a
//! worker starts and then tailed, so every worker of a cluster sees the
//! same connector configs, source offsets and statuses.
//!
//! Record formats are Kafka Connect's:
//! - configs (`config.storage.topic`, one partition, so one order):
//!   `connector-<name>` → `{"properties": {...}}` (a tombstone deletes),
//!   `target-state-<name>` → `{"state": "STARTED"|"PAUSED"|"STOPPED"}`,
//!   `restart-connector-<name>` → `{"include-tasks": b, "only-failed": b}`.
//! - offsets (`offset.storage.topic`): `["<connector>", {source partition}]`
//!   → `{source offset}`.
//! - statuses (`status.storage.topic`): `status-connector-<name>` and
//!   `status-task-<name>-<id>` → `{"state", "trace", "worker_id", "generation"}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use runnel_client::{
    Admin, ClientError, Cluster, Consumer, ConsumerConfig, ConsumerRecord, ErrorCode,
    IsolationLevel, NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use runnel_common::backoff::Backoff;
use runnel_common::shutdown::CancellationToken;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use tokio::sync::{Notify, watch};

use crate::configdef::Props;

/// A connector's requested state (Kafka's target state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TargetState {
    /// Running.
    Started,
    /// Tasks stay assigned but do not move data.
    Paused,
    /// Tasks are shut down.
    Stopped,
}

/// One connector in the config topic.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorEntry {
    /// Its config.
    pub props: Props,
    /// Its requested state.
    pub target: TargetState,
}

/// A restart asked for through the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartRequest {
    /// The connector.
    pub connector: String,
    /// Restart its tasks too, not only the connector.
    pub include_tasks: bool,
    /// Only what has FAILED.
    pub only_failed: bool,
}

/// A connector's committed source offsets: by the text of the source
/// partition, the partition and its offset.
pub type SourceOffsets = BTreeMap<String, (Json, Json)>;

/// Every connector as of an offset of the config topic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Configs {
    /// Connectors by name.
    pub connectors: BTreeMap<String, ConnectorEntry>,
    /// The config topic offset this view includes (one past the last record).
    pub offset: i64,
}

/// A connector's or task's state (Kafka's `AbstractStatus.State`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// UNASSIGNED, RUNNING, PAUSED, STOPPED, FAILED or RESTARTING.
    pub state: String,
    /// Why it failed.
    pub trace: Option<String>,
    /// The worker running it.
    pub worker_id: String,
    /// The worker group generation it was set in.
    pub generation: i32,
}

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Talking to the cluster failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The worker is shutting down.
    #[error("the worker is stopping")]
    Stopping,
}

/// The names of the three topics and how to create them.
#[derive(Debug, Clone)]
pub struct Topics {
    /// `config.storage.topic`.
    pub configs: String,
    /// `offset.storage.topic`.
    pub offsets: String,
    /// `status.storage.topic`.
    pub statuses: String,
    /// `offset.storage.partitions`.
    pub offsets_partitions: i32,
    /// `status.storage.partitions`.
    pub status_partitions: i32,
    /// `*.storage.replication.factor` (capped by the brokers there are).
    pub replication_factor: i32,
}

/// The worker's view of the three topics, and writes to them.
pub struct Store {
    topics: Topics,
    producer: Producer,
    configs: watch::Sender<Arc<Configs>>,
    restarts: tokio::sync::broadcast::Sender<RestartRequest>,
    offsets: Mutex<HashMap<String, SourceOffsets>>,
    statuses: Mutex<BTreeMap<String, Status>>,
    /// Where each topic's reader has got to, per partition.
    read_up_to: Mutex<HashMap<TopicPartition, i64>>,
    progress: Notify,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Creates the topics if needed, reads each to its end and keeps
    /// tailing them until `shutdown`.
    pub async fn open(
        cluster: Arc<Cluster>,
        topics: Topics,
        shutdown: CancellationToken,
    ) -> Result<Arc<Store>, StoreError> {
        let admin = Admin::with_cluster(Arc::clone(&cluster));
        ensure(&admin, &topics.configs, 1, topics.replication_factor).await?;
        ensure(
            &admin,
            &topics.offsets,
            topics.offsets_partitions,
            topics.replication_factor,
        )
        .await?;
        ensure(
            &admin,
            &topics.statuses,
            topics.status_partitions,
            topics.replication_factor,
        )
        .await?;
        let producer = Producer::with_cluster(
            Arc::clone(&cluster),
            ProducerConfig {
                linger: Duration::ZERO,
                // A REST call or a stopping task waits on these writes: fail
                // them while the caller still listens.
                delivery_timeout: Duration::from_secs(15),
                ..ProducerConfig::default()
            },
        );
        let (configs, _) = watch::channel(Arc::new(Configs::default()));
        let store = Arc::new(Store {
            topics: topics.clone(),
            producer,
            configs,
            restarts: tokio::sync::broadcast::channel(64).0,
            offsets: Mutex::new(HashMap::new()),
            statuses: Mutex::new(BTreeMap::new()),
            read_up_to: Mutex::new(HashMap::new()),
            progress: Notify::new(),
        });
        for topic in [&topics.configs, &topics.offsets, &topics.statuses] {
            let mut consumer = Consumer::with_cluster(
                Arc::clone(&cluster),
                ConsumerConfig {
                    auto_offset_reset: OffsetReset::Earliest,
                    fetch_max_wait: Duration::from_millis(100),
                    max_poll_records: 10_000,
                    // Exactly-once source tasks write offsets in their
                    // transactions: an aborted one's must never count.
                    isolation_level: IsolationLevel::ReadCommitted,
                    ..ConsumerConfig::default()
                },
            );
            let partitions = consumer.partitions_of(topic).await?;
            consumer.assign(partitions.clone()).await?;
            for tp in &partitions {
                consumer.seek_to_beginning(tp);
            }
            let ends = end_offsets(&admin, &partitions).await?;
            let reader = Arc::clone(&store);
            let token = shutdown.clone();
            let (caught_up_tx, caught_up_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                reader.tail(consumer, ends, caught_up_tx, token).await;
            });
            caught_up_rx.await.map_err(|_| StoreError::Stopping)?;
        }
        Ok(store)
    }

    async fn tail(
        self: Arc<Self>,
        mut consumer: Consumer,
        ends: Vec<(TopicPartition, i64)>,
        caught_up: tokio::sync::oneshot::Sender<()>,
        shutdown: CancellationToken,
    ) {
        let mut caught_up = Some(caught_up);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            if caught_up.is_some()
                && ends
                    .iter()
                    .all(|(tp, end)| consumer.position(tp).unwrap_or(0) >= *end)
                && let Some(tx) = caught_up.take()
            {
                let _ = tx.send(());
            }
            let polled = tokio::select! {
                () = shutdown.cancelled() => return,
                r = consumer.poll(Duration::from_millis(500)) => r,
            };
            match polled {
                Ok(records) => {
                    backoff.reset();
                    let live = caught_up.is_none();
                    for r in records {
                        self.apply(&r, live);
                    }
                    let mut up_to = self.read_up_to.lock();
                    for tp in consumer.assignment() {
                        if let Some(p) = consumer.position(tp) {
                            up_to.insert(tp.clone(), p);
                        }
                    }
                    drop(up_to);
                    self.progress.notify_waiters();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading an internal connect topic failed; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    fn apply(&self, r: &ConsumerRecord, live: bool) {
        let Some(key) = r.key.as_ref() else {
            return;
        };
        let value: Option<Json> = r
            .value
            .as_ref()
            .and_then(|v| serde_json::from_slice(v).ok());
        if *r.topic == *self.topics.configs {
            let key = String::from_utf8_lossy(key);
            self.apply_config(&key, value, r.offset + 1, live);
        } else if *r.topic == *self.topics.offsets {
            let Ok(Json::Array(parts)) = serde_json::from_slice::<Json>(key) else {
                return;
            };
            let [Json::String(connector), partition] = parts.as_slice() else {
                return;
            };
            let mut offsets = self.offsets.lock();
            let of = offsets.entry(connector.clone()).or_default();
            match value {
                Some(v) => {
                    of.insert(partition.to_string(), (partition.clone(), v));
                }
                None => {
                    of.remove(&partition.to_string());
                }
            }
        } else if *r.topic == *self.topics.statuses {
            let key = String::from_utf8_lossy(key).into_owned();
            let mut statuses = self.statuses.lock();
            match value.and_then(|v| serde_json::from_value::<Status>(v).ok()) {
                Some(s) => {
                    statuses.insert(key, s);
                }
                None => {
                    statuses.remove(&key);
                }
            }
        }
    }

    fn apply_config(&self, key: &str, value: Option<Json>, next_offset: i64, live: bool) {
        if let Some(name) = key.strip_prefix("restart-connector-") {
            if live && let Some(v) = value {
                let flag = |k: &str| v.get(k).and_then(Json::as_bool).unwrap_or(false);
                let _ = self.restarts.send(RestartRequest {
                    connector: name.to_owned(),
                    include_tasks: flag("include-tasks"),
                    only_failed: flag("only-failed"),
                });
            }
            self.configs
                .send_modify(|c| Arc::make_mut(c).offset = next_offset);
            return;
        }
        self.configs.send_modify(|c| {
            let c = Arc::make_mut(c);
            c.offset = next_offset;
            if let Some(name) = key.strip_prefix("connector-") {
                let props = value
                    .as_ref()
                    .and_then(|v| v.get("properties"))
                    .and_then(|p| crate::configdef::props_from_json(p).ok());
                match props {
                    Some(props) => {
                        let target = c
                            .connectors
                            .get(name)
                            .map_or(TargetState::Started, |e| e.target);
                        c.connectors
                            .insert(name.to_owned(), ConnectorEntry { props, target });
                    }
                    None => {
                        c.connectors.remove(name);
                    }
                }
            } else if let Some(name) = key.strip_prefix("target-state-") {
                let target = value
                    .and_then(|v| v.get("state").cloned())
                    .and_then(|s| serde_json::from_value::<TargetState>(s).ok());
                if let (Some(entry), Some(t)) = (c.connectors.get_mut(name), target) {
                    entry.target = t;
                }
            }
        });
    }

    /// Follows the connector configs.
    pub fn configs(&self) -> watch::Receiver<Arc<Configs>> {
        self.configs.subscribe()
    }

    /// The connector configs as read so far.
    pub fn current(&self) -> Arc<Configs> {
        Arc::clone(&self.configs.borrow())
    }

    /// Restart requests as they arrive.
    pub fn restarts(&self) -> tokio::sync::broadcast::Receiver<RestartRequest> {
        self.restarts.subscribe()
    }

    /// Waits until this worker has read the config topic up to `offset`.
    pub async fn wait_for_configs(&self, offset: i64, within: Duration) -> bool {
        let mut rx = self.configs();
        tokio::time::timeout(within, rx.wait_for(|c| c.offset >= offset))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    async fn write(&self, topic: &str, key: Bytes, value: Option<Json>) -> Result<(), StoreError> {
        let mut record = ProducerRecord::new(topic, Bytes::new()).key(key);
        record.value = value.map(|v| Bytes::from(v.to_string()));
        let delivery = self.producer.send(record).await?;
        let meta = delivery.await?;
        self.wait_read(topic, meta.partition, meta.offset + 1).await;
        Ok(())
    }

    /// Waits (briefly) until this worker has read its own write, so what
    /// the REST API answers next already includes it.
    async fn wait_read(&self, topic: &str, partition: i32, offset: i64) {
        let tp = TopicPartition::new(topic, partition);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let notified = self.progress.notified();
            if self
                .read_up_to
                .lock()
                .get(&tp)
                .is_some_and(|p| *p >= offset)
            {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Writes a connector's config.
    pub async fn put_connector(&self, name: &str, props: &Props) -> Result<(), StoreError> {
        let value = json!({"properties": props});
        self.write(
            &self.topics.configs,
            Bytes::from(format!("connector-{name}")),
            Some(value),
        )
        .await
    }

    /// Deletes a connector (its config, target state and statuses).
    pub async fn delete_connector(&self, name: &str, tasks: usize) -> Result<(), StoreError> {
        self.write(
            &self.topics.configs,
            Bytes::from(format!("connector-{name}")),
            None,
        )
        .await?;
        self.write(
            &self.topics.configs,
            Bytes::from(format!("target-state-{name}")),
            None,
        )
        .await?;
        self.write(
            &self.topics.statuses,
            Bytes::from(format!("status-connector-{name}")),
            None,
        )
        .await?;
        for t in 0..tasks {
            self.write(
                &self.topics.statuses,
                Bytes::from(format!("status-task-{name}-{t}")),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// Sets a connector's target state.
    pub async fn put_target_state(&self, name: &str, state: TargetState) -> Result<(), StoreError> {
        self.write(
            &self.topics.configs,
            Bytes::from(format!("target-state-{name}")),
            Some(json!({"state": state})),
        )
        .await
    }

    /// Asks every worker to restart what it runs of a connector.
    pub async fn request_restart(&self, r: &RestartRequest) -> Result<(), StoreError> {
        self.write(
            &self.topics.configs,
            Bytes::from(format!("restart-connector-{}", r.connector)),
            Some(json!({"include-tasks": r.include_tasks, "only-failed": r.only_failed})),
        )
        .await
    }

    /// The committed source offsets of a connector.
    pub fn source_offsets(&self, connector: &str) -> Vec<(Json, Json)> {
        self.offsets
            .lock()
            .get(connector)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Commits source offsets of a connector (acks=all).
    pub async fn put_source_offsets(
        &self,
        connector: &str,
        offsets: &[(Json, Json)],
    ) -> Result<(), StoreError> {
        let mut deliveries = Vec::with_capacity(offsets.len());
        for record in self.source_offset_records(connector, offsets) {
            deliveries.push(self.producer.send(record).await?);
        }
        for d in deliveries {
            d.await?;
        }
        self.note_source_offsets(connector, offsets);
        Ok(())
    }

    /// The offsets-topic records of a connector's source offsets (for an
    /// exactly-once source task to write in its own transaction).
    pub fn source_offset_records(
        &self,
        connector: &str,
        offsets: &[(Json, Json)],
    ) -> Vec<ProducerRecord> {
        offsets
            .iter()
            .map(|(partition, offset)| {
                let key = json!([connector, partition]).to_string();
                ProducerRecord::new(self.topics.offsets.clone(), Bytes::from(offset.to_string()))
                    .key(Bytes::from(key))
            })
            .collect()
    }

    /// Source offsets now committed (before the reader sees them).
    pub fn note_source_offsets(&self, connector: &str, offsets: &[(Json, Json)]) {
        let mut all = self.offsets.lock();
        let of = all.entry(connector.to_owned()).or_default();
        for (partition, offset) in offsets {
            of.insert(partition.to_string(), (partition.clone(), offset.clone()));
        }
    }

    /// Records a connector's status (`task: None`) or a task's.
    pub async fn put_status(
        &self,
        connector: &str,
        task: Option<usize>,
        status: &Status,
    ) -> Result<(), StoreError> {
        let key = status_key(connector, task);
        self.statuses.lock().insert(key.clone(), status.clone());
        let value = serde_json::to_value(status).unwrap_or(Json::Null);
        self.write(&self.topics.statuses, Bytes::from(key), Some(value))
            .await
    }

    /// The status of a connector (`task: None`) or one of its tasks.
    pub fn status(&self, connector: &str, task: Option<usize>) -> Option<Status> {
        self.statuses
            .lock()
            .get(&status_key(connector, task))
            .cloned()
    }
}

fn status_key(connector: &str, task: Option<usize>) -> String {
    match task {
        None => format!("status-connector-{connector}"),
        Some(t) => format!("status-task-{connector}-{t}"),
    }
}

async fn end_offsets(
    admin: &Admin,
    partitions: &[TopicPartition],
) -> Result<Vec<(TopicPartition, i64)>, ClientError> {
    let mut out = Vec::with_capacity(partitions.len());
    for tp in partitions {
        // What a read_committed reader can reach: an open transaction
        // (a killed exactly-once task's) does not hold up the start.
        let (_, end) = admin
            .offsets_at(&tp.topic, tp.partition, IsolationLevel::ReadCommitted)
            .await?;
        out.push((tp.clone(), end));
    }
    Ok(out)
}

/// Creates a compacted internal topic unless it exists.
async fn ensure(admin: &Admin, name: &str, partitions: i32, rf: i32) -> Result<(), ClientError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut tries = 0;
    loop {
        tries += 1;
        let result = async {
            if admin.list_topics().await?.iter().any(|t| t == name) {
                return Ok(());
            }
            let brokers = admin.describe_cluster().await?.brokers.len().max(1) as i32;
            let rf = rf.clamp(1, brokers);
            let topic = NewTopic::new(name)
                .partitions(partitions)
                .replication_factor(rf)
                .config("cleanup.policy", "compact")
                .config("min.insync.replicas", if rf > 1 { "2" } else { "1" });
            match admin.create_topic(topic).await {
                Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => Ok(()),
                other => other,
            }
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retriable() && tries < 50 => {
                tracing::info!(topic = name, error = %e, "cannot create the internal topic yet; retrying");
                backoff.wait().await;
            }
            Err(e) => return Err(e),
        }
    }
}
