//! Raft's state machine: the controller's SQLite metadata store, plus the
//! in-memory image and the event stream every controller serves `Watch`
//! from.
//!
//! Applying an entry gives its records the next metadata offsets, checks
//! that they apply to the image (all or none; the check is deterministic, so
//! every controller decides alike) and writes them with the entry's Raft
//! position in one transaction. A snapshot is a consistent copy of the
//! database (`VACUUM INTO`), whose `raft_applied` row is its position.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use parking_lot::RwLock;
use runnel_common::metadata::MetadataImage;
use runnel_proto::metadata::v1::MetadataEvent;
use tokio::sync::broadcast;

use super::{Applied, TypeConfig};
use crate::store::{Store, StoreError};

type NodeId = u64;
type Membership = StoredMembership<NodeId, BasicNode>;

/// Events per broadcast message when a snapshot brings many at once.
const REPLAY_PAGE: i64 = 1000;

/// What the rest of the controller reads: the applied image, the cluster
/// id and a stream of applied events.
#[derive(Debug)]
pub struct Shared {
    image: RwLock<Arc<MetadataImage>>,
    cluster_id: RwLock<Option<String>>,
    events: broadcast::Sender<Arc<Vec<MetadataEvent>>>,
}

impl Shared {
    /// The image as of the last applied entry.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image.read())
    }

    /// The cluster id, once set.
    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id.read().clone()
    }

    /// A receiver of every applied batch of events.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<MetadataEvent>>> {
        self.events.subscribe()
    }

    fn publish(&self, image: MetadataImage, events: Vec<MetadataEvent>) {
        publish_gauges(&image);
        *self.image.write() = Arc::new(image);
        if !events.is_empty() {
            let _ = self.events.send(Arc::new(events));
        }
    }
}

fn publish_gauges(image: &MetadataImage) {
    metrics::gauge!("runnel_controller_metadata_end_offset").set(image.next_offset as f64);
    crate::metrics::publish_partition_gauges(image);
}

/// A Raft position as the store keeps it (openraft's JSON), decoded.
fn decode_position(
    stored: Option<(String, String)>,
) -> Result<(Option<LogId<NodeId>>, Membership), serde_json::Error> {
    match stored {
        Some((log_id, membership)) => Ok((
            serde_json::from_str(&log_id)?,
            serde_json::from_str(&membership)?,
        )),
        None => Ok((None, Membership::default())),
    }
}

/// The state machine.
#[derive(Debug)]
pub struct StateMachine {
    store: Store,
    shared: Arc<Shared>,
    dir: PathBuf,
    /// Held while `snapshot.db` is written or read, so a reader never sees
    /// half of a new one.
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_snapshot(None, &e).into()
}

impl StateMachine {
    /// The state machine over `store`, with snapshots kept in `dir`.
    pub async fn open(store: Store, dir: &Path) -> Result<StateMachine, StoreError> {
        let image = store.load_image().await?;
        let (applied, membership) = decode_position(store.raft_applied().await?)
            .map_err(|e| StoreError::Corrupt(format!("raft_applied: {e}")))?;
        publish_gauges(&image);
        let shared = Arc::new(Shared {
            image: RwLock::new(Arc::new(image)),
            cluster_id: RwLock::new(store.cluster_id().await?),
            events: broadcast::channel(1024).0,
        });
        Ok(StateMachine {
            store,
            shared,
            dir: dir.to_owned(),
            snapshot_lock: Arc::default(),
            applied,
            membership,
        })
    }

    /// What the controller reads.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    fn position(&self) -> Result<(String, String), StorageError<NodeId>> {
        Ok((
            serde_json::to_string(&self.applied).map_err(sm_err)?,
            serde_json::to_string(&self.membership).map_err(sm_err)?,
        ))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut image = (*self.shared.image()).clone();
        let mut events = Vec::new();
        let mut responses = Vec::new();
        let mut cluster_id = None;
        for entry in entries {
            self.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(Applied::Nothing),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    responses.push(Applied::Nothing);
                }
                EntryPayload::Normal(batch) => {
                    let batch = batch.0;
                    let first_offset = image.next_offset;
                    let mut next = image.clone();
                    let mut fresh = Vec::with_capacity(batch.records.len());
                    let mut refused = None;
                    for record in batch.records {
                        let offset = next.next_offset;
                        if let Err(e) = next.apply(offset, &record) {
                            refused = Some(e.to_string());
                            break;
                        }
                        fresh.push(MetadataEvent {
                            offset,
                            record: Some(record),
                            timestamp_ms: batch.timestamp_ms,
                        });
                    }
                    if let Some(why) = refused {
                        tracing::warn!(log_id = %entry.log_id, reason = %why, "metadata entry refused");
                        responses.push(Applied::Refused(why));
                        continue;
                    }
                    if !batch.cluster_id.is_empty()
                        && self.shared.cluster_id().is_none()
                        && cluster_id.is_none()
                    {
                        cluster_id = Some(batch.cluster_id);
                    }
                    responses.push(Applied::Records {
                        first_offset,
                        count: fresh.len(),
                    });
                    image = next;
                    events.extend(fresh);
                }
            }
        }
        let (log_id, membership) = self.position()?;
        self.store
            .apply(&events, cluster_id.as_deref(), (&log_id, &membership))
            .await
            .map_err(sm_err)?;
        if let Some(id) = cluster_id {
            *self.shared.cluster_id.write() = Some(id);
        }
        self.shared.publish(image, events);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            dir: self.dir.clone(),
            snapshot_lock: Arc::clone(&self.snapshot_lock),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let incoming = self.dir.join("snapshot-incoming.db");
        let bytes = snapshot.into_inner();
        tokio::fs::write(&incoming, &bytes).await.map_err(sm_err)?;
        let before = self.shared.image().next_offset;
        self.store.restore_from(&incoming).await.map_err(sm_err)?;
        // The copy's `raft_applied` row is the snapshot's position: the
        // leader read `meta` from it.
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let image = self.store.load_image().await.map_err(sm_err)?;
        *self.shared.cluster_id.write() = self.store.cluster_id().await.map_err(sm_err)?;
        {
            // Keep the received copy as this controller's own latest snapshot.
            let _guard = self.snapshot_lock.lock().await;
            tokio::fs::rename(&incoming, self.dir.join("snapshot.db"))
                .await
                .map_err(sm_err)?;
        }
        tracing::info!(
            last_log_id = ?meta.last_log_id,
            metadata_end_offset = image.next_offset,
            "installed a snapshot from the active controller"
        );
        // Watchers of this controller get the records the snapshot brought.
        let end = image.next_offset;
        self.shared.publish(image, Vec::new());
        let mut from = before;
        while from < end {
            let page = self
                .store
                .read_log(from, REPLAY_PAGE)
                .await
                .map_err(sm_err)?;
            let Some(last) = page.last() else { break };
            from = last.offset + 1;
            let _ = self.shared.events.send(Arc::new(page));
        }
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let _guard = self.snapshot_lock.lock().await;
        read_snapshot(&self.dir).await
    }
}

/// The snapshot in `dir`, if any; its position comes from the copy itself.
/// The caller holds the snapshot lock.
async fn read_snapshot(dir: &Path) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
    let path = dir.join("snapshot.db");
    let data = match tokio::fs::read(&path).await {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(snap_err(e)),
    };
    let copy = Store::open_copy(&path).await.map_err(snap_err)?;
    let position = copy.raft_applied().await.map_err(snap_err);
    copy.close().await;
    let (last_log_id, last_membership) = decode_position(position?).map_err(snap_err)?;
    let meta = SnapshotMeta {
        snapshot_id: last_log_id.map_or_else(
            || "empty".to_owned(),
            |l| format!("{}-{}", l.leader_id.term, l.index),
        ),
        last_log_id,
        last_membership,
    };
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(data)),
    }))
}

/// Builds snapshots while the state machine goes on applying.
#[derive(Debug)]
pub struct SnapshotBuilder {
    store: Store,
    dir: PathBuf,
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let tmp = self.dir.join("snapshot.db.tmp");
        self.store.copy_to(&tmp).await.map_err(snap_err)?;
        let _guard = self.snapshot_lock.lock().await;
        tokio::fs::rename(&tmp, self.dir.join("snapshot.db"))
            .await
            .map_err(snap_err)?;
        let snapshot = read_snapshot(&self.dir)
            .await?
            .ok_or_else(|| snap_err(std::io::Error::other("snapshot vanished")))?;
        tracing::info!(last_log_id = ?snapshot.meta.last_log_id, "metadata snapshot taken");
        Ok(snapshot)
    }
}
