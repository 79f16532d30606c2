//! State stores: the keyed state of aggregations, in serialized bytes as
//! Kafka Streams keeps it, so what a store holds is exactly what its
//! changelog topic carries.
//!
//! [`RedbStore`] keeps a task's state on local disk in redb: pure Rust (no
//! C++ toolchain, as RocksDB would need), one file per store, ACID commits
//! and MVCC reads, so interactive queries read while the task writes.
//! Writes wait in memory until [`KeyValueStore::commit`], which the task
//! calls once the commit interval's outputs are safe in the cluster: the
//! changelog, not the local file, is what makes state survive, so the file
//! is synced once per commit interval rather than per record. Each commit
//! records, in the same redb transaction, the changelog offset the store
//! is complete up to (Kafka Streams' checkpoint file), so a restart
//! restores only what came after it; with exactly-once, uncommitted writes
//! are discarded when a transaction aborts and the file only ever holds
//! state of committed transactions.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::StreamsError;

/// A task's key-value store.
pub trait KeyValueStore: Send {
    /// The value under `key` (writes not yet committed included).
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StreamsError>;
    /// Sets `key` to `value`; `None` deletes it.
    fn put(&mut self, key: &[u8], value: Option<Bytes>) -> Result<(), StreamsError>;
    /// Makes every write so far durable, with `checkpoint` (when given) as
    /// the changelog offset the store now holds everything before.
    fn commit(&mut self, checkpoint: Option<i64>) -> Result<(), StreamsError>;
    /// Forgets the writes since the last commit.
    fn discard(&mut self);
    /// The changelog offset of the last commit that gave one.
    fn checkpoint(&self) -> Result<Option<i64>, StreamsError>;
    /// Empties the store and forgets its checkpoint (its changelog is
    /// restored from the start).
    fn clear(&mut self) -> Result<(), StreamsError>;
    /// Every entry, in key order (writes not yet committed included).
    fn all(&self) -> Result<Vec<(Bytes, Bytes)>, StreamsError>;
    /// The entries with keys from `from` (inclusive) to `to` (exclusive),
    /// in key order (writes not yet committed included).
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StreamsError>;
    /// A handle reading the committed state from other threads, for
    /// stores that have one (interactive queries).
    fn reader(&self) -> Option<StoreReader> {
        None
    }
    /// Writes a batch of changelog records (in changelog order, `None`
    /// values deleting) restored into the store, complete up to the
    /// changelog offset `checkpoint`. Stores may defer making a load
    /// durable until the next [`KeyValueStore::commit`]: a crash before it
    /// restores again from the last durable checkpoint.
    fn load(
        &mut self,
        batch: Vec<(Bytes, Option<Bytes>)>,
        checkpoint: i64,
    ) -> Result<(), StreamsError> {
        for (key, value) in batch {
            self.put(&key, value)?;
        }
        self.commit(Some(checkpoint))
    }
}

/// `committed` with the `pending` writes between `from` and `to` laid over
/// it (all of them when `to` is `None`), in key order.
fn merged(
    committed: impl Iterator<Item = (Bytes, Bytes)>,
    pending: &BTreeMap<Bytes, Option<Bytes>>,
    from: &[u8],
    to: Option<&[u8]>,
) -> Vec<(Bytes, Bytes)> {
    let mut all: BTreeMap<Bytes, Bytes> = committed
        .filter(|(k, _)| !pending.contains_key(k))
        .collect();
    if to.is_some_and(|to| to <= from) {
        return Vec::new();
    }
    let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
    for (k, v) in pending.range::<[u8], _>((Bound::Included(from), upper)) {
        if let Some(v) = v {
            all.insert(k.clone(), v.clone());
        }
    }
    all.into_iter().collect()
}

/// A store in memory (what the test driver runs on).
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: BTreeMap<Bytes, Bytes>,
    pending: BTreeMap<Bytes, Option<Bytes>>,
    checkpoint: Option<i64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl KeyValueStore for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StreamsError> {
        match self.pending.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => Ok(self.entries.get(key).cloned()),
        }
    }
    fn put(&mut self, key: &[u8], value: Option<Bytes>) -> Result<(), StreamsError> {
        self.pending.insert(Bytes::copy_from_slice(key), value);
        Ok(())
    }
    fn commit(&mut self, checkpoint: Option<i64>) -> Result<(), StreamsError> {
        for (key, value) in std::mem::take(&mut self.pending) {
            match value {
                Some(v) => self.entries.insert(key, v),
                None => self.entries.remove(&key),
            };
        }
        if checkpoint.is_some() {
            self.checkpoint = checkpoint;
        }
        Ok(())
    }
    fn discard(&mut self) {
        self.pending.clear();
    }
    fn checkpoint(&self) -> Result<Option<i64>, StreamsError> {
        Ok(self.checkpoint)
    }
    fn clear(&mut self) -> Result<(), StreamsError> {
        *self = MemoryStore::default();
        Ok(())
    }
    fn all(&self) -> Result<Vec<(Bytes, Bytes)>, StreamsError> {
        let committed = self.entries.iter().map(|(k, v)| (k.clone(), v.clone()));
        Ok(merged(committed, &self.pending, &[], None))
    }
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StreamsError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let committed = self
            .entries
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
            .map(|(k, v)| (k.clone(), v.clone()));
        Ok(merged(committed, &self.pending, from, Some(to)))
    }
}

/// The table of a store file's entries.
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// The table holding the checkpoint, under [`CHECKPOINT`].
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const CHECKPOINT: &str = "changelog-offset";

/// A store in a redb file.
pub struct RedbStore {
    path: PathBuf,
    db: Arc<redb::Database>,
    /// Writes since the last commit (`None`: a deletion).
    pending: BTreeMap<Bytes, Option<Bytes>>,
}

impl RedbStore {
    /// Opens the store file at `path`, creating it if needed.
    pub fn open(path: &Path) -> Result<RedbStore, StreamsError> {
        let db = redb::Database::create(path).map_err(|e| store_error(path, e))?;
        Ok(RedbStore {
            path: path.to_owned(),
            db: Arc::new(db),
            pending: BTreeMap::new(),
        })
    }

    /// A handle that reads what the store has committed, from any thread,
    /// while the task goes on writing (for interactive queries).
    fn committed(&self) -> StoreReader {
        StoreReader {
            path: self.path.clone(),
            db: Arc::clone(&self.db),
        }
    }

    fn error(&self, e: impl std::fmt::Display) -> StreamsError {
        store_error(&self.path, e)
    }

    /// Sets `key` to `value` in `table`, or deletes it for `None`.
    fn write_entry(
        &self,
        table: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
        key: &Bytes,
        value: Option<&Bytes>,
    ) -> Result<(), StreamsError> {
        match value {
            Some(v) => table.insert(key.as_ref(), v.as_ref()).map(drop),
            None => table.remove(key.as_ref()).map(drop),
        }
        .map_err(|e| self.error(e))
    }

    /// Writes `batch` (changelog records in order, `None` deleting) and
    /// records each (mark, offset) of `marks` in the same transaction;
    /// synced now if `durable`, else with the next synced commit.
    pub fn load_marked(
        &mut self,
        mut batch: Vec<(Bytes, Option<Bytes>)>,
        marks: &[(&str, i64)],
        durable: bool,
    ) -> Result<(), StreamsError> {
        if !self.pending.is_empty() {
            // Loads go under the pending writes, which must stay on top.
            self.commit(None)?;
        }
        // B-tree inserts in key order touch each page once; the stable sort
        // keeps a key's records in changelog order, so its last one wins.
        batch.sort_by(|a, b| a.0.cmp(&b.0));
        let mut write = self.db.begin_write().map_err(|e| self.error(e))?;
        // Not synced: the next commit's sync makes this durable too (redb
        // persists a non-durable commit with the next durable one), and a
        // crash before it only means restoring this part again.
        if !durable {
            write
                .set_durability(redb::Durability::None)
                .map_err(|e| self.error(e))?;
        }
        {
            let mut table = write.open_table(ENTRIES).map_err(|e| self.error(e))?;
            let mut records = batch.iter().peekable();
            while let Some((key, value)) = records.next() {
                if records.peek().is_some_and(|(next, _)| next == key) {
                    continue;
                }
                self.write_entry(&mut table, key, value.as_ref())?;
            }
            let mut meta = write.open_table(META).map_err(|e| self.error(e))?;
            for (mark, offset) in marks {
                meta.insert(*mark, *offset).map_err(|e| self.error(e))?;
            }
        }
        write.commit().map_err(|e| self.error(e))
    }

    /// The offsets recorded by [`RedbStore::load_marked`] under marks
    /// that begin with `prefix`, with the rest of each mark.
    pub fn marks(&self, prefix: &str) -> Result<Vec<(String, i64)>, StreamsError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let meta = match read.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.error(e)),
        };
        let mut out = Vec::new();
        for entry in meta.iter().map_err(|e| self.error(e))? {
            let (mark, offset) = entry.map_err(|e| self.error(e))?;
            if let Some(rest) = mark.value().strip_prefix(prefix) {
                out.push((rest.to_owned(), offset.value()));
            }
        }
        Ok(out)
    }
}

/// A store read by key from any thread: a global table's, which one
/// thread keeps up to date and every task reads.
pub trait ReadStore: Send + Sync {
    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StreamsError>;
}

impl ReadStore for StoreReader {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StreamsError> {
        StoreReader::get(self, key)
    }
}

impl ReadStore for parking_lot::Mutex<MemoryStore> {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StreamsError> {
        KeyValueStore::get(&*self.lock(), key)
    }
}

/// Reads a [`RedbStore`]'s committed state (redb's MVCC: readers never
/// wait for the writer).
#[derive(Clone)]
pub struct StoreReader {
    path: PathBuf,
    db: Arc<redb::Database>,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader")
            .field("path", &self.path)
            .finish()
    }
}

impl StoreReader {
    /// The committed value under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StreamsError> {
        read_committed(&self.db, &self.path, |table| {
            let value = table.get(key).map_err(|e| store_error(&self.path, e))?;
            Ok(value.map(|v| Bytes::copy_from_slice(v.value())))
        })
        .map(Option::flatten)
    }

    /// Every committed entry, in key order.
    pub fn all(&self) -> Result<Vec<(Bytes, Bytes)>, StreamsError> {
        read_committed(&self.db, &self.path, |table| {
            let entries = table.iter().map_err(|e| store_error(&self.path, e))?;
            collect(&self.path, entries)
        })
        .map(Option::unwrap_or_default)
    }

    /// The committed entries with keys from `from` (inclusive) to `to`
    /// (exclusive), in key order.
    pub fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StreamsError> {
        if from >= to {
            return Ok(Vec::new());
        }
        read_committed(&self.db, &self.path, |table| {
            let entries = table
                .range((Bound::Included(from), Bound::Excluded(to)))
                .map_err(|e| store_error(&self.path, e))?;
            collect(&self.path, entries)
        })
        .map(Option::unwrap_or_default)
    }
}

/// Runs `read` on the committed entries table (`None`: nothing committed yet).
fn read_committed<T>(
    db: &redb::Database,
    path: &Path,
    read: impl FnOnce(&redb::ReadOnlyTable<&[u8], &[u8]>) -> Result<T, StreamsError>,
) -> Result<Option<T>, StreamsError> {
    let tx = db.begin_read().map_err(|e| store_error(path, e))?;
    match tx.open_table(ENTRIES) {
        Ok(table) => read(&table).map(Some),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(store_error(path, e)),
    }
}

/// The entries a redb table iterator yields, copied out.
fn collect(
    path: &Path,
    entries: redb::Range<'_, &'static [u8], &'static [u8]>,
) -> Result<Vec<(Bytes, Bytes)>, StreamsError> {
    let mut out = Vec::new();
    for entry in entries {
        let (k, v) = entry.map_err(|e| store_error(path, e))?;
        out.push((
            Bytes::copy_from_slice(k.value()),
            Bytes::copy_from_slice(v.value()),
        ));
    }
    Ok(out)
}

fn store_error(path: &Path, e: impl std::fmt::Display) -> StreamsError {
    StreamsError::Store {
        store: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl KeyValueStore for RedbStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StreamsError> {
        match self.pending.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => self.committed().get(key),
        }
    }

    fn put(&mut self, key: &[u8], value: Option<Bytes>) -> Result<(), StreamsError> {
        self.pending.insert(Bytes::copy_from_slice(key), value);
        Ok(())
    }

    fn commit(&mut self, checkpoint: Option<i64>) -> Result<(), StreamsError> {
        if self.pending.is_empty() && checkpoint.is_none() {
            return Ok(());
        }
        let write = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = write.open_table(ENTRIES).map_err(|e| self.error(e))?;
            for (key, value) in &self.pending {
                self.write_entry(&mut table, key, value.as_ref())?;
            }
            if let Some(offset) = checkpoint {
                let mut meta = write.open_table(META).map_err(|e| self.error(e))?;
                meta.insert(CHECKPOINT, offset).map_err(|e| self.error(e))?;
            }
        }
        write.commit().map_err(|e| self.error(e))?;
        self.pending.clear();
        Ok(())
    }

    fn discard(&mut self) {
        self.pending.clear();
    }

    fn checkpoint(&self) -> Result<Option<i64>, StreamsError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let meta = match read.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let offset = meta.get(CHECKPOINT).map_err(|e| self.error(e))?;
        Ok(offset.map(|v| v.value()))
    }

    fn clear(&mut self) -> Result<(), StreamsError> {
        self.pending.clear();
        let write = self.db.begin_write().map_err(|e| self.error(e))?;
        write.delete_table(ENTRIES).map_err(|e| self.error(e))?;
        write.delete_table(META).map_err(|e| self.error(e))?;
        write.commit().map_err(|e| self.error(e))
    }

    fn all(&self) -> Result<Vec<(Bytes, Bytes)>, StreamsError> {
        let committed = self.committed().all()?;
        Ok(merged(committed.into_iter(), &self.pending, &[], None))
    }

    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StreamsError> {
        let committed = self.committed().range(from, to)?;
        Ok(merged(committed.into_iter(), &self.pending, from, Some(to)))
    }

    fn reader(&self) -> Option<StoreReader> {
        Some(self.committed())
    }

    fn load(
        &mut self,
        batch: Vec<(Bytes, Option<Bytes>)>,
        checkpoint: i64,
    ) -> Result<(), StreamsError> {
        self.load_marked(batch, &[(CHECKPOINT, checkpoint)], false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redb_store_reads_its_own_writes_and_keeps_what_was_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counts.redb");
        let mut store = RedbStore::open(&path).unwrap();
        assert_eq!(store.get(b"a").unwrap(), None);
        store.put(b"a", Some(Bytes::from_static(b"1"))).unwrap();
        store.put(b"b", Some(Bytes::from_static(b"2"))).unwrap();
        assert_eq!(store.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        store.commit(None).unwrap();
        store.put(b"b", None).unwrap();
        assert_eq!(
            store.get(b"b").unwrap(),
            None,
            "a pending delete hides the flushed value"
        );
        store.commit(None).unwrap();
        store.put(b"c", Some(Bytes::from_static(b"3"))).unwrap();
        drop(store);
        // Reopened: flushed writes are there; the unflushed one is for the
        // changelog to restore.
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(store.get(b"b").unwrap(), None);
        assert_eq!(store.get(b"c").unwrap(), None);
    }

    #[test]
    fn a_commit_keeps_its_checkpoint_with_the_data_and_discard_drops_what_came_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counts.redb");
        let mut store = RedbStore::open(&path).unwrap();
        assert_eq!(store.checkpoint().unwrap(), None);
        store.put(b"a", Some(Bytes::from_static(b"1"))).unwrap();
        store.commit(Some(7)).unwrap();
        store.put(b"a", Some(Bytes::from_static(b"2"))).unwrap();
        store.put(b"b", Some(Bytes::from_static(b"3"))).unwrap();
        store.discard();
        assert_eq!(store.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(store.get(b"b").unwrap(), None);
        // A commit without a checkpoint keeps the last one.
        store.put(b"c", Some(Bytes::from_static(b"4"))).unwrap();
        store.commit(None).unwrap();
        drop(store);
        let mut store = RedbStore::open(&path).unwrap();
        assert_eq!(store.checkpoint().unwrap(), Some(7));
        assert_eq!(store.get(b"c").unwrap().as_deref(), Some(&b"4"[..]));
        store.clear().unwrap();
        assert_eq!(store.checkpoint().unwrap(), None);
        assert_eq!(store.get(b"a").unwrap(), None);
        // The memory store behaves the same.
        let mut mem = MemoryStore::new();
        mem.put(b"a", Some(Bytes::from_static(b"1"))).unwrap();
        mem.commit(Some(3)).unwrap();
        mem.put(b"a", None).unwrap();
        assert_eq!(mem.get(b"a").unwrap(), None);
        mem.discard();
        assert_eq!(mem.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(mem.checkpoint().unwrap(), Some(3));
    }

    #[test]
    fn a_load_keeps_each_keys_last_changelog_record_and_its_checkpoint() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let batch = || {
            vec![
                (b("b"), Some(b("1"))),
                (b("a"), Some(b("1"))),
                (b("b"), Some(b("2"))),
                (b("c"), Some(b("1"))),
                (b("a"), None),
                (b("c"), Some(b("2"))),
            ]
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counts.redb");
        let mut stores: Vec<Box<dyn KeyValueStore>> = vec![
            Box::new(RedbStore::open(&path).unwrap()),
            Box::new(MemoryStore::new()),
        ];
        for store in &mut stores {
            store.put(b"a", Some(b("0"))).unwrap();
            store.load(batch(), 6).unwrap();
            store.commit(Some(6)).unwrap();
            assert_eq!(
                store.all().unwrap(),
                vec![(b("b"), b("2")), (b("c"), b("2"))],
                "the last record of a key wins, a tombstone deletes"
            );
            assert_eq!(store.checkpoint().unwrap(), Some(6));
        }
        drop(stores);
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(
            store.get(b"c").unwrap(),
            Some(b("2")),
            "synced by the commit"
        );
        assert_eq!(store.checkpoint().unwrap(), Some(6));
    }

    #[test]
    fn a_range_reads_committed_and_pending_entries_between_its_bounds() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let mut stores: Vec<Box<dyn KeyValueStore>> = vec![
            Box::new(RedbStore::open(&dir.path().join("s.redb")).unwrap()),
            Box::new(MemoryStore::new()),
        ];
        for store in &mut stores {
            for k in ["a", "b", "c", "d"] {
                store.put(k.as_bytes(), Some(b("1"))).unwrap();
            }
            store.commit(None).unwrap();
            store.put(b"b", None).unwrap();
            store.put(b"bb", Some(b("2"))).unwrap();
            store.put(b"e", Some(b("2"))).unwrap();
            assert_eq!(
                store.range(b"b", b"d").unwrap(),
                vec![(b("bb"), b("2")), (b("c"), b("1"))],
                "a pending delete hides a committed entry, the upper bound is excluded"
            );
            assert!(store.range(b"d", b"a").unwrap().is_empty());
        }
    }

    #[test]
    fn a_store_that_cannot_open_says_which_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let e = RedbStore::open(dir.path())
            .err()
            .expect("a directory is no store file");
        assert!(
            matches!(&e, StreamsError::Store { store, .. } if store == &dir.path().display().to_string()),
            "{e}"
        );
    }
}
