//! The log manager: which partitions this broker hosts, kept in line with
//! the metadata (opened, updated, deleted, stray directories removed), and
//! their high watermarks checkpointed across restarts.
//!
//! A partition's log lives in `<data_dir>/<topic>-<partition>/`, next to a
//! `partition.metadata` file holding the topic id, so a topic deleted and
//! created again under the same name never inherits the old data.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use runnel_common::metadata::{MetadataImage, TopicId};
use runnel_log::TopicConfig;
use runnel_log::{Log, LogError, Offset, parse_partition_dir_name, partition_dir_name};

use crate::checkpoint::{HW_CHECKPOINT, format_hw_checkpoint, parse_hw_checkpoint};
use crate::io::{IoPool, IoStopped};
use crate::partition::{Partition, PartitionKey, ReplicaState};

const PARTITION_METADATA: &str = "partition.metadata";

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

/// The partitions hosted here, kept in line with the metadata.
#[derive(Debug)]
pub struct LogManager {
    data_dir: PathBuf,
    broker_id: i32,
    io: Arc<IoPool>,
    partitions: RwLock<HashMap<PartitionKey, Arc<Partition>>>,
    /// Serializes reconciliations.
    reconciling: tokio::sync::Mutex<()>,
    /// High watermarks as last checkpointed (read at start, updated at each write).
    high_watermarks: Mutex<HashMap<PartitionKey, Offset>>,
}

/// What the metadata wants this broker to host.
struct Desired {
    topic_id: TopicId,
    state: ReplicaState,
}

impl LogManager {
    /// A manager for logs under `data_dir`.
    pub fn new(data_dir: PathBuf, broker_id: i32, io: Arc<IoPool>) -> LogManager {
        let path = data_dir.join(HW_CHECKPOINT);
        let high_watermarks = match std::fs::read_to_string(&path) {
            Ok(text) => parse_hw_checkpoint(&text).unwrap_or_else(|reason| {
                // Only a hint: partitions then start from their log start, as without it.
                tracing::warn!(path = %path.display(), %reason, "ignoring unreadable high-watermark checkpoint");
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        };
        LogManager {
            data_dir,
            broker_id,
            io,
            partitions: RwLock::new(HashMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
            high_watermarks: Mutex::new(high_watermarks),
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
        for p in stale {
            self.remove(&p).await?;
        }
        for (key, want) in desired {
            let existing = self.partitions.read().get(&key).cloned();
            match existing {
                Some(p) => {
                    let io_key = key.clone();
                    self.io
                        .run(&io_key, move || p.update(want.state))
                        .await?
                        .map_err(|source| ManagerError::Log {
                            topic: key.0.clone(),
                            partition: key.1,
                            source,
                        })?;
                }
                None => self.open(key, want).await?,
            }
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
        let opened = self
            .io
            .run(&key, move || -> Result<Partition, ManagerError> {
                prepare_dir(&dir, &want.topic_id)?;
                let log = Log::open(&dir, want.state.config.log.clone()).map_err(|source| {
                    ManagerError::Log {
                        topic: topic.clone(),
                        partition: index,
                        source,
                    }
                })?;
                let report = log.open_report().clone();
                if report.recovered_segments > 0 || report.truncated_bytes > 0 {
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
                Ok(p)
            })
            .await??;
        tracing::debug!(topic = %key.0, partition = key.1, log_end_offset = opened.log_end_offset(), leader = opened.state().is_leader, "partition opened");
        self.partitions.write().insert(key, Arc::new(opened));
        Ok(())
    }

    async fn remove(&self, p: &Arc<Partition>) -> Result<(), ManagerError> {
        let key = p.key();
        self.partitions.write().remove(&key);
        self.high_watermarks.lock().remove(&key);
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
        let hosted: HashSet<PartitionKey> = self.partitions.read().keys().cloned().collect();
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

    /// Flushes and closes every log cleanly.
    pub async fn close_all(&self) {
        if let Err(e) = self.checkpoint_high_watermarks() {
            tracing::error!(error = %e, "writing the high-watermark checkpoint failed");
        }
        let all: Vec<Arc<Partition>> = self.partitions.write().drain().map(|(_, p)| p).collect();
        for p in all {
            let key = p.key();
            let closed = self
                .io
                .run(&key, move || match Arc::try_unwrap(p) {
                    Ok(p) => p.close(),
                    // A request still holds it; its log is flushed when the last handle drops.
                    Err(p) => p.flush(),
                })
                .await;
            match closed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(topic = %key.0, partition = key.1, error = %e, "closing log failed")
                }
                Err(e) => {
                    tracing::error!(topic = %key.0, partition = key.1, error = %e, "closing log failed")
                }
            }
        }
    }
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
