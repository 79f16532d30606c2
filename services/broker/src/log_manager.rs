//! The log manager: which partitions this broker hosts, kept in line with
//! the metadata (opened, updated, deleted, stray directories removed), and
//! their high watermarks checkpointed across restarts.
//!
//! A partition's log lives in `<data_dir>/<topic>-<partition>/`, next to a
//! `partition.metadata` file holding the topic id, so a topic deleted and
//! created again under the same name never inherits the old data.
//!
//! Many partitions: every log opens its files through one [`CachedStorage`],
//! so the broker holds `log_max_open_files` descriptors whatever the
//! partition count; partitions open in parallel on the I/O threads; a
//! partition that cannot open (full disk, no descriptors, corruption) is
//! offline with its error and retried, and never stops the others. A clean
//! shutdown closes every log without an fsync each, syncs the file system
//! once and writes one `.clean-shutdown` marker for the data directory, so a
//! clean restart opens every log without recovery.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use runnel_common::metadata::{MetadataImage, TopicId};
use runnel_log::storage::StdStorage;
use runnel_log::{CachedStorage, FileCacheStats, SystemClock, TopicConfig};
use runnel_log::{Log, LogError, Offset, parse_partition_dir_name, partition_dir_name};

use crate::checkpoint::{HW_CHECKPOINT, format_hw_checkpoint, parse_hw_checkpoint};
use crate::io::{IoPool, IoStopped};
use crate::partition::{Partition, PartitionKey, ReplicaState};

const PARTITION_METADATA: &str = "partition.metadata";
/// Present in the data directory only after every log in it was closed
/// and the file system synced (Kafka's `.kafka_cleanshutdown`).
const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";
/// Partitions opened, updated or closed at once (spread over the I/O threads).
const PARALLEL_JOBS: usize = 64;

/// Why hosting a partition failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The log failed.
    #[error("{topic}-{partition}: {source}")]
    Log {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// What the log said.
        #[source]
        source: LogError,
    },
    /// The partition directory could not be prepared.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The I/O threads are gone (shutting down).
    #[error(transparent)]
    Stopped(#[from] IoStopped),
}

/// A partition assigned here whose log could not be opened or updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineReplica {
    /// What failed, as the log or the OS said it.
    pub error: String,
    /// Attempts so far (retried while it stays assigned here).
    pub attempts: u32,
}

/// The partitions hosted here, kept in line with the metadata.
#[derive(Debug)]
pub struct LogManager {
    data_dir: PathBuf,
    broker_id: i32,
    io: Arc<IoPool>,
    storage: CachedStorage,
    partitions: RwLock<HashMap<PartitionKey, Arc<Partition>>>,
    offline: Mutex<HashMap<PartitionKey, OfflineReplica>>,
    /// Serializes reconciliations.
    reconciling: tokio::sync::Mutex<()>,
    /// High watermarks as last checkpointed (read at start, updated at each write).
    high_watermarks: Mutex<HashMap<PartitionKey, Offset>>,
    /// Partition directories found at start not opened since, and whether
    /// the last shutdown left them clean (then their first open trusts them).
    found_at_start: Mutex<HashMap<String, bool>>,
    /// Logs whose open ran recovery (an unclean stop) since the start.
    recovered: std::sync::atomic::AtomicUsize,
}

/// What the metadata wants this broker to host.
struct Desired {
    topic_id: TopicId,
    state: ReplicaState,
}

/// The open-file budget for `configured` (0: half the open-file limit,
/// which is first raised to its hard limit).
pub fn open_files_budget(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = raised;
        }
    }
    // Half for logs leaves the rest for connections, sockets to peers and checkpoints.
    let soft = limit.current.unwrap_or(1 << 20).min(1 << 20);
    usize::try_from(soft / 2).unwrap_or(1 << 19).max(64)
}

impl LogManager {
    /// A manager for logs under `data_dir`, keeping at most
    /// `max_open_files` of their files open. Takes the data directory's
    /// clean-shutdown marker (a crash from here on is unclean).
    pub fn new(
        data_dir: PathBuf,
        broker_id: i32,
        io: Arc<IoPool>,
        max_open_files: usize,
    ) -> std::io::Result<LogManager> {
        let marker = data_dir.join(CLEAN_SHUTDOWN_MARKER);
        let clean = marker.exists();
        let found_at_start = partition_dirs(&data_dir)?
            .into_iter()
            .map(|name| (name, clean))
            .collect();
        if clean {
            std::fs::remove_file(&marker)?;
            std::fs::File::open(&data_dir)?.sync_all()?;
        }
        let path = data_dir.join(HW_CHECKPOINT);
        let high_watermarks = match std::fs::read_to_string(&path) {
            Ok(text) => parse_hw_checkpoint(&text).unwrap_or_else(|reason| {
                // Only a hint: partitions then start from their log start, as without it.
                tracing::warn!(path = %path.display(), %reason, "ignoring unreadable high-watermark checkpoint");
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        };
        Ok(LogManager {
            data_dir,
            broker_id,
            io,
            storage: CachedStorage::new(Arc::new(StdStorage), max_open_files),
            partitions: RwLock::new(HashMap::new()),
            offline: Mutex::new(HashMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
            high_watermarks: Mutex::new(high_watermarks),
            found_at_start: Mutex::new(found_at_start),
            recovered: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The open-file cache's counters.
    pub fn file_stats(&self) -> FileCacheStats {
        self.storage.stats()
    }

    /// Logs whose open had to recover them (validate their tails) since the
    /// broker started: none after a clean shutdown, none for new partitions.
    pub fn recovered_logs(&self) -> usize {
        self.recovered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Partitions assigned here that are offline, with their errors.
    pub fn offline(&self) -> HashMap<PartitionKey, OfflineReplica> {
        self.offline.lock().clone()
    }

    /// Whether any assigned partition is offline (and worth a retry).
    pub fn has_offline(&self) -> bool {
        !self.offline.lock().is_empty()
    }

    fn set_offline(&self, key: PartitionKey, error: &ManagerError) {
        let mut offline = self.offline.lock();
        let entry = offline.entry(key.clone()).or_insert(OfflineReplica {
            error: String::new(),
            attempts: 0,
        });
        entry.attempts += 1;
        let message = error.to_string();
        // Once per new error: a retry failing the same way stays quiet.
        if entry.error != message {
            tracing::error!(topic = %key.0, partition = key.1, attempts = entry.attempts, error = %message, "partition offline: its log cannot be opened");
            entry.error = message;
        }
        metrics::gauge!("runnel_broker_offline_partitions").set(offline.len() as f64);
    }

    fn set_online(&self, key: &PartitionKey) {
        let mut offline = self.offline.lock();
        if offline.remove(key).is_some() {
            tracing::info!(topic = %key.0, partition = key.1, "partition back online");
            metrics::gauge!("runnel_broker_offline_partitions").set(offline.len() as f64);
        }
    }

    /// Writes every hosted partition's high watermark to the checkpoint file
    /// (temp file, fsync, rename) when any changed since the last write
    /// (blocking; Kafka does it every `replica.high.watermark.checkpoint.interval.ms`).
    pub fn checkpoint_high_watermarks(&self) -> std::io::Result<()> {
        let mut known = self.high_watermarks.lock();
        let mut changed = false;
        for p in self.all() {
            let hw = p.high_watermark();
            if known.insert(p.key(), hw) != Some(hw) {
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        let text = format_hw_checkpoint(&known);
        let path = self.data_dir.join(HW_CHECKPOINT);
        let tmp = self.data_dir.join(format!("{HW_CHECKPOINT}.tmp"));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.data_dir)?.sync_all()
    }

    /// The directory holding every partition's log.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The data directory's file system: its size and the bytes free for
    /// this process, as DescribeLogDirs reports them.
    pub fn disk_space(&self) -> std::io::Result<(u64, u64)> {
        let stat = rustix::fs::statvfs(&self.data_dir)?;
        Ok((
            stat.f_blocks.saturating_mul(stat.f_frsize),
            stat.f_bavail.saturating_mul(stat.f_frsize),
        ))
    }

    /// The I/O threads.
    pub fn io(&self) -> &Arc<IoPool> {
        &self.io
    }

    /// A hosted partition.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// How many partitions are hosted (open).
    pub fn count(&self) -> usize {
        self.partitions.read().len()
    }

    /// How many hosted partitions this broker leads.
    pub fn leader_count(&self) -> usize {
        self.counts().1
    }

    /// Partitions hosted, led, and led with fewer in-sync replicas than replicas.
    pub fn counts(&self) -> (usize, usize, usize) {
        let hosted = self.partitions.read();
        let (mut leading, mut under) = (0, 0);
        for p in hosted.values() {
            if let Some(under_replicated) = p.leading_under_replicated() {
                leading += 1;
                under += usize::from(under_replicated);
            }
        }
        (hosted.len(), leading, under)
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    fn desired(&self, image: &MetadataImage) -> HashMap<PartitionKey, Desired> {
        let mut out = HashMap::new();
        for (name, t) in &image.topics {
            let config = TopicConfig::from_pairs(t.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .unwrap_or_else(|e| {
                    tracing::error!(topic = %name, error = %e, "invalid topic config in metadata; using defaults");
                    TopicConfig::default()
                });
            for (&index, p) in &t.partitions {
                if p.replicas.contains(&self.broker_id) {
                    out.insert(
                        (name.clone(), index),
                        Desired {
                            topic_id: t.id,
                            state: ReplicaState {
                                is_leader: p.leader == self.broker_id,
                                leader: p.leader,
                                leader_epoch: p.leader_epoch,
                                replicas: p.replicas.clone(),
                                adding: p.adding_replicas.clone(),
                                isr: p.isr.clone(),
                                config: config.clone(),
                            },
                        },
                    );
                }
            }
        }
        out
    }

    /// Opens, creates, updates and deletes logs so this broker hosts exactly
    /// the partitions `image` assigns it. With `delete_strays`, partition
    /// directories on disk that the metadata does not know are removed too
    /// (only once the broker has caught up with the metadata log).
    ///
    /// Partitions whose state did not change cost nothing; the rest are
    /// handled in parallel. One that fails is marked offline (see
    /// [`Self::offline`]) and does not stop the others; the next call tries
    /// it again.
    pub async fn reconcile(
        &self,
        image: &MetadataImage,
        delete_strays: bool,
    ) -> Result<(), ManagerError> {
        let _serial = self.reconciling.lock().await;
        let desired = self.desired(image);
        // Gone or replaced by a topic of the same name.
        let stale: Vec<Arc<Partition>> = self
            .partitions
            .read()
            .iter()
            .filter(|(k, p)| desired.get(*k).is_none_or(|d| d.topic_id != p.topic_id))
            .map(|(_, p)| Arc::clone(p))
            .collect();
        futures::stream::iter(stale)
            .for_each_concurrent(PARALLEL_JOBS, |p| async move {
                if let Err(e) = self.remove(&p).await {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "deleting a partition failed");
                }
            })
            .await;
        self.offline.lock().retain(|k, _| desired.contains_key(k));
        let started = std::time::Instant::now();
        let mut updates = Vec::new();
        let mut opens = Vec::new();
        {
            let hosted = self.partitions.read();
            for (key, want) in desired {
                match hosted.get(&key) {
                    Some(p) if p.has_state(&want.state) => {}
                    Some(p) => updates.push((Arc::clone(p), want)),
                    None => opens.push((key, want)),
                }
            }
        }
        let (updated, opened) = (updates.len(), opens.len());
        futures::stream::iter(updates)
            .for_each_concurrent(PARALLEL_JOBS, |(p, want)| async move {
                let key = p.key();
                let target = Arc::clone(&p);
                let updated = self.io.run(&key, move || target.update(want.state)).await;
                let error = match updated {
                    Ok(Ok(())) => return,
                    Ok(Err(source)) => ManagerError::Log {
                        topic: key.0.clone(),
                        partition: key.1,
                        source,
                    },
                    Err(e) => e.into(),
                };
                // Its log failed under it: reopened (and recovered) by a retry.
                self.partitions.write().remove(&key);
                self.set_offline(key, &error);
            })
            .await;
        futures::stream::iter(opens)
            .for_each_concurrent(PARALLEL_JOBS, |(key, want)| async move {
                match self.open(key.clone(), want).await {
                    Ok(()) => self.set_online(&key),
                    Err(ManagerError::Stopped(_)) => {}
                    Err(e) => self.set_offline(key, &e),
                }
            })
            .await;
        if updated + opened >= 1000 {
            tracing::info!(
                opened,
                updated,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "partitions reconciled with the metadata"
            );
        }
        if delete_strays {
            self.delete_strays()?;
        }
        Ok(())
    }

    async fn open(&self, key: PartitionKey, want: Desired) -> Result<(), ManagerError> {
        let dir = self.data_dir.join(partition_dir_name(&key.0, key.1));
        let (topic, index) = key.clone();
        let broker_id = self.broker_id;
        let checkpointed = self.high_watermarks.lock().get(&key).copied();
        // Only the first open of a directory the last shutdown left clean
        // trusts it: a later one may follow a failure in this run.
        let clean = self
            .found_at_start
            .lock()
            .remove(&partition_dir_name(&key.0, key.1))
            .unwrap_or(false);
        let storage: Arc<dyn runnel_log::storage::Storage> = Arc::new(self.storage.clone());
        let opened = self
            .io
            .run(&key, move || -> Result<(Partition, bool), ManagerError> {
                prepare_dir(&dir, &want.topic_id)?;
                let config = want.state.config.log.clone();
                let clock = Arc::new(SystemClock);
                let log = if clean {
                    Log::open_after_clean_shutdown(&dir, config, storage, clock)
                } else {
                    Log::open_with(&dir, config, storage, clock)
                }
                .map_err(|source| ManagerError::Log {
                    topic: topic.clone(),
                    partition: index,
                    source,
                })?;
                let report = log.open_report().clone();
                if report.recovered_bytes > 0 || report.truncated_bytes > 0 {
                    // At info, unlike the routine per-partition lines: only
                    // an unclean stop gets here, and it may have cut records.
                    tracing::info!(topic = %topic, partition = index, ?report, "log recovered");
                }
                let p = Partition::new(
                    broker_id,
                    &topic,
                    index,
                    want.topic_id,
                    log,
                    ReplicaState {
                        is_leader: false,
                        leader: -1,
                        leader_epoch: -1,
                        replicas: Vec::new(),
                        adding: Vec::new(),
                        isr: Vec::new(),
                        config: want.state.config.clone(),
                    },
                );
                if let Some(hw) = checkpointed {
                    p.restore_high_watermark(hw);
                }
                p.update(want.state).map_err(|source| ManagerError::Log {
                    topic: topic.clone(),
                    partition: index,
                    source,
                })?;
                Ok((p, report.recovered_segments > 0))
            })
            .await??;
        let (opened, recovered) = opened;
        if recovered {
            self.recovered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("runnel_broker_logs_recovered_total").increment(1);
        }
        tracing::debug!(topic = %key.0, partition = key.1, log_end_offset = opened.log_end_offset(), leader = opened.state().is_leader, "partition opened");
        self.partitions.write().insert(key, Arc::new(opened));
        Ok(())
    }

    async fn remove(&self, p: &Arc<Partition>) -> Result<(), ManagerError> {
        let key = p.key();
        self.partitions.write().remove(&key);
        self.high_watermarks.lock().remove(&key);
        self.found_at_start
            .lock()
            .remove(&partition_dir_name(&key.0, key.1));
        let dir = self.data_dir.join(partition_dir_name(&key.0, key.1));
        self.io
            .run(&key, move || {
                std::fs::remove_dir_all(&dir).or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
            })
            .await?
            .map_err(|source| ManagerError::Io {
                path: self.data_dir.join(partition_dir_name(&key.0, key.1)),
                source,
            })?;
        // Wake fetches waiting on it so they see it gone.
        p.data.notify_waiters();
        tracing::debug!(topic = %key.0, partition = key.1, "partition deleted");
        Ok(())
    }

    fn delete_strays(&self) -> Result<(), ManagerError> {
        let mut hosted: HashSet<PartitionKey> = self.partitions.read().keys().cloned().collect();
        // Assigned here but offline: its data waits for the retry.
        hosted.extend(self.offline.lock().keys().cloned());
        let entries = match std::fs::read_dir(&self.data_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ManagerError::Io {
                    path: self.data_dir.clone(),
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((topic, index)) = parse_partition_dir_name(&name) else {
                continue;
            };
            if !entry.path().join(PARTITION_METADATA).exists()
                || hosted.contains(&(topic.to_owned(), index))
            {
                continue;
            }
            tracing::info!(dir = %name, "deleting a partition the metadata no longer assigns here");
            std::fs::remove_dir_all(entry.path()).map_err(|source| ManagerError::Io {
                path: entry.path(),
                source,
            })?;
        }
        Ok(())
    }

    /// Forgets every log without flushing or closing it (a simulated crash).
    pub fn abandon(&self) {
        self.partitions.write().clear();
    }

    /// Closes every log cleanly. When every log closed and none is offline,
    /// the file system is synced once and the data directory's clean-shutdown
    /// marker written, so the next start opens the logs without recovery.
    pub async fn close_all(&self) {
        if let Err(e) = self.checkpoint_high_watermarks() {
            tracing::error!(error = %e, "writing the high-watermark checkpoint failed");
        }
        let all: Vec<Arc<Partition>> = self.partitions.write().drain().map(|(_, p)| p).collect();
        let count = all.len();
        let closed = futures::stream::iter(all)
            .map(|p| async move {
                let key = p.key();
                let closed = self
                    .io
                    .run(&key, move || match Arc::try_unwrap(p) {
                        Ok(p) => p.close_unsynced().map(|()| true),
                        // A request still holds it: flushed, but not closed.
                        Err(p) => p.flush().map(|()| false),
                    })
                    .await;
                match closed {
                    Ok(Ok(closed)) => closed,
                    Ok(Err(e)) => {
                        tracing::error!(topic = %key.0, partition = key.1, error = %e, "closing log failed");
                        false
                    }
                    Err(e) => {
                        tracing::error!(topic = %key.0, partition = key.1, error = %e, "closing log failed");
                        false
                    }
                }
            })
            .buffer_unordered(PARALLEL_JOBS)
            .filter(|closed| std::future::ready(*closed))
            .count()
            .await;
        let unclean_left = self
            .found_at_start
            .lock()
            .iter()
            .any(|(name, clean)| !clean && self.data_dir.join(name).exists());
        if closed < count || self.has_offline() || unclean_left {
            tracing::warn!(
                closed,
                logs = count,
                offline = self.offline.lock().len(),
                "not every log closed cleanly: the next start recovers them"
            );
            return;
        }
        let data_dir = self.data_dir.clone();
        match tokio::task::spawn_blocking(move || write_clean_marker(&data_dir)).await {
            Ok(Ok(())) => tracing::info!(logs = count, "logs closed cleanly"),
            Ok(Err(e)) => tracing::error!(error = %e, "writing the clean-shutdown marker failed"),
            Err(e) => tracing::error!(error = %e, "writing the clean-shutdown marker failed"),
        }
    }
}

/// Makes everything written under `data_dir` durable with one `syncfs`
/// (cheaper than an fsync per log: the kernel writes back in one pass),
/// then writes the clean-shutdown marker durably.
fn write_clean_marker(data_dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let dir = std::fs::File::open(data_dir)?;
    rustix::fs::syncfs(&dir)?;
    let tmp = data_dir.join(format!("{CLEAN_SHUTDOWN_MARKER}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(b"")?;
    f.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(CLEAN_SHUTDOWN_MARKER))?;
    dir.sync_all()
}

/// Names of the partition directories under `data_dir`.
fn partition_dirs(data_dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if parse_partition_dir_name(&name).is_some() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Makes `dir` hold a log of `topic_id`: a directory left by an older topic
/// of the same name is emptied first.
fn prepare_dir(dir: &Path, topic_id: &TopicId) -> Result<(), ManagerError> {
    let io_err = |source| ManagerError::Io {
        path: dir.to_owned(),
        source,
    };
    let meta = dir.join(PARTITION_METADATA);
    let wanted = format!(
        "version: 0\ntopic_id: {}\n",
        uuid::Uuid::from_bytes(*topic_id).simple()
    );
    match std::fs::read_to_string(&meta) {
        Ok(existing) if existing == wanted => return Ok(()),
        Ok(_) => {
            tracing::warn!(dir = %dir.display(), "partition directory belongs to an older topic; removing it");
            std::fs::remove_dir_all(dir).map_err(io_err)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let tmp = dir.join(format!("{PARTITION_METADATA}.tmp"));
    std::fs::write(&tmp, wanted).map_err(io_err)?;
    std::fs::rename(&tmp, &meta).map_err(io_err)?;
    Ok(())
}
