//! Small text files that remember offsets across restarts, written atomically
//! (temp file, fsync, rename, directory fsync) so a crash leaves the old or
//! the new version, never a mix.
//!
//! Format, as Kafka's checkpoint files: a version line (`0`), then for a
//! single-value file the value, for a list a count line and one entry per line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::LogError;
use crate::storage::Storage;
use crate::{LeaderEpoch, Offset};

const VERSION: &str = "0";

/// Writes `contents` to `path` so that a crash leaves either the old or the new file.
pub(crate) fn write_atomically(
    storage: &dyn Storage,
    path: &Path,
    contents: &[u8],
) -> Result<(), LogError> {
    replace(storage, path, contents, true)
}

/// Replaces `path` with `contents` through a rename but without fsync: for
/// files that carry their own checksum and can be rebuilt, so a crash that
/// loses or tears them costs a rebuild, never a wrong answer.
pub(crate) fn write_unsynced(
    storage: &dyn Storage,
    path: &Path,
    contents: &[u8],
) -> Result<(), LogError> {
    replace(storage, path, contents, false)
}

fn replace(
    storage: &dyn Storage,
    path: &Path,
    contents: &[u8],
    sync: bool,
) -> Result<(), LogError> {
    let tmp = tmp_path(path);
    let file = storage
        .open(&tmp, true)
        .map_err(LogError::io("create checkpoint", &tmp))?;
    file.set_len(0)
        .map_err(LogError::io("write checkpoint", &tmp))?;
    file.write_all_at(contents, 0)
        .map_err(LogError::io("write checkpoint", &tmp))?;
    if sync {
        file.sync_data()
            .map_err(LogError::io("sync checkpoint", &tmp))?;
    }
    storage
        .rename(&tmp, path)
        .map_err(LogError::io("rename checkpoint", &tmp))?;
    if sync && let Some(dir) = path.parent() {
        storage
            .sync_dir(dir)
            .map_err(LogError::io("sync directory", dir))?;
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Reads a whole file; `None` when it does not exist.
pub(crate) fn read_file(storage: &dyn Storage, path: &Path) -> Result<Option<Vec<u8>>, LogError> {
    if !storage.exists(path) {
        return Ok(None);
    }
    let file = storage
        .open(path, false)
        .map_err(LogError::io("open checkpoint", path))?;
    let len = file.len().map_err(LogError::io("stat checkpoint", path))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0)
        .map_err(LogError::io("read checkpoint", path))?;
    Ok(Some(buf))
}

fn corrupt(path: &Path, reason: impl Into<String>) -> LogError {
    LogError::Corrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Reads the lines of a checkpoint after checking its version line.
fn lines(storage: &dyn Storage, path: &Path) -> Result<Option<Vec<String>>, LogError> {
    let Some(bytes) = read_file(storage, path)? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).map_err(|_| corrupt(path, "not UTF-8"))?;
    let mut lines = text.lines().map(str::to_owned);
    match lines.next() {
        Some(v) if v.trim() == VERSION => Ok(Some(lines.collect())),
        Some(v) => Err(corrupt(path, format!("unsupported version {v:?}"))),
        None => Err(corrupt(path, "empty file")),
    }
}

/// Reads a single-offset checkpoint; `None` when the file does not exist.
pub(crate) fn read_offset(storage: &dyn Storage, path: &Path) -> Result<Option<Offset>, LogError> {
    let Some(lines) = lines(storage, path)? else {
        return Ok(None);
    };
    let value = lines
        .first()
        .ok_or_else(|| corrupt(path, "missing value"))?;
    value
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| corrupt(path, format!("not an offset: {value:?}")))
}

/// Writes a single-offset checkpoint.
pub(crate) fn write_offset(
    storage: &dyn Storage,
    path: &Path,
    offset: Offset,
) -> Result<(), LogError> {
    write_atomically(storage, path, format!("{VERSION}\n{offset}\n").as_bytes())
}

/// Writes a single-offset checkpoint without fsync, for a caller that syncs
/// the whole file system afterwards.
pub(crate) fn write_unsynced_offset(
    storage: &dyn Storage,
    path: &Path,
    offset: Offset,
) -> Result<(), LogError> {
    write_unsynced(storage, path, format!("{VERSION}\n{offset}\n").as_bytes())
}

/// Where a leader epoch began: its first offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: LeaderEpoch,
    /// First offset written in that epoch.
    pub start_offset: Offset,
}

/// The leader-epoch checkpoint: epoch → start offset, truncated with the log.
///
/// Followers use it to find where their log diverges from a new leader's
/// (Kafka's OffsetForLeaderEpoch): see [`LeaderEpochCache::end_offset_for`].
#[derive(Debug)]
pub struct LeaderEpochCache {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    entries: Vec<EpochEntry>,
    /// The entries as the file holds them: `entries` differ after changes
    /// kept in memory (see [`Self::assign_at_end`]).
    on_disk: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Loads the cache from `path` (empty when the file does not exist).
    pub(crate) fn load(storage: Arc<dyn Storage>, path: PathBuf) -> Result<Self, LogError> {
        let mut entries = Vec::new();
        if let Some(lines) = lines(storage.as_ref(), &path)? {
            let count: usize = lines
                .first()
                .and_then(|c| c.trim().parse().ok())
                .ok_or_else(|| corrupt(&path, "missing entry count"))?;
            for line in lines.iter().skip(1).take(count) {
                let mut parts = line.split_whitespace();
                let (Some(epoch), Some(offset), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(corrupt(&path, format!("malformed entry {line:?}")));
                };
                let entry = EpochEntry {
                    epoch: epoch
                        .parse()
                        .map_err(|_| corrupt(&path, format!("bad epoch {epoch:?}")))?,
                    start_offset: offset
                        .parse()
                        .map_err(|_| corrupt(&path, format!("bad offset {offset:?}")))?,
                };
                if entries.last().is_some_and(|l: &EpochEntry| {
                    l.epoch >= entry.epoch || l.start_offset > entry.start_offset
                }) {
                    return Err(corrupt(&path, "entries are not increasing"));
                }
                entries.push(entry);
            }
            if entries.len() != count {
                return Err(corrupt(
                    &path,
                    format!("expected {count} entries, found {}", entries.len()),
                ));
            }
        }
        Ok(LeaderEpochCache {
            storage,
            path,
            on_disk: entries.clone(),
            entries,
        })
    }

    /// An empty cache at `path` that replaces whatever file is there on its first write.
    pub(crate) fn empty(storage: Arc<dyn Storage>, path: PathBuf) -> Self {
        LeaderEpochCache {
            storage,
            path,
            entries: Vec::new(),
            on_disk: Vec::new(),
        }
    }

    fn encode(&self) -> String {
        let mut text = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        text
    }

    /// Writes the file (fsynced) as the cache is now.
    pub(crate) fn persist(&mut self) -> Result<(), LogError> {
        write_atomically(self.storage.as_ref(), &self.path, self.encode().as_bytes())?;
        self.on_disk = self.entries.clone();
        Ok(())
    }

    /// Makes `epoch` start at `start_offset` in memory, dropping entries
    /// that contradict it; whether anything changed.
    fn put(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> bool {
        if epoch < 0
            || self
                .entries
                .last()
                .is_some_and(|l| l.epoch == epoch && l.start_offset <= start_offset)
        {
            return false;
        }
        self.entries
            .retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Drops, in memory, the entries starting at or after `end_offset`;
    /// whether anything changed.
    fn drop_from(&mut self, end_offset: Offset) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// Records that `epoch` starts at `log_end`, the end of the log: a new
    /// leader taking over. Kept in memory only until the log is flushed or
    /// closed ([`Self::sync`], [`Self::write_unsynced`]): no data depends on
    /// the entry yet, and batches appended in the epoch carry it, so a
    /// crash that loses it loses nothing (recovery takes the epochs of the
    /// batches it validates, and the restarted broker never leads in that
    /// epoch again). A broker taking over thousands of partitions at once
    /// then writes no file for each.
    pub(crate) fn assign_at_end(&mut self, epoch: LeaderEpoch, log_end: Offset) {
        self.put(epoch, log_end);
    }

    /// Writes entries kept in memory by [`Self::assign_at_end`] without
    /// fsync, for a caller that syncs the whole file system next and a log
    /// ending at `log_end`. Entries from `log_end` on have no data: the next
    /// open drops them whatever the file says, so a change in those alone
    /// (a partition led but never written) writes nothing.
    pub(crate) fn write_unsynced(&mut self, log_end: Offset) -> Result<(), LogError> {
        let with_data = |v: &[EpochEntry]| -> Vec<EpochEntry> {
            v.iter()
                .copied()
                .filter(|e| e.start_offset < log_end)
                .collect()
        };
        let same = with_data(&self.entries) == with_data(&self.on_disk);
        if !same {
            write_unsynced(self.storage.as_ref(), &self.path, self.encode().as_bytes())?;
            self.on_disk = self.entries.clone();
        }
        Ok(())
    }

    /// Makes entries kept by [`Self::assign_at_end`] durable.
    pub(crate) fn sync(&mut self) -> Result<(), LogError> {
        if self.entries != self.on_disk {
            self.persist()?;
        }
        Ok(())
    }

    /// Takes the epoch a recovered batch carries: a later epoch starts at
    /// its base. Whether it was new.
    pub(crate) fn assign_recovered(&mut self, epoch: LeaderEpoch, base_offset: Offset) -> bool {
        let new = epoch >= 0 && self.latest_epoch().is_none_or(|e| epoch > e);
        if new {
            self.entries.push(EpochEntry {
                epoch,
                start_offset: base_offset,
            });
        }
        new
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The latest epoch, if any leader has written.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. Entries that contradict
    /// it (same or later epoch, or starting at or after the offset) go.
    pub(crate) fn assign(
        &mut self,
        epoch: LeaderEpoch,
        start_offset: Offset,
    ) -> Result<(), LogError> {
        let before = self.entries.clone();
        if !self.put(epoch, start_offset) {
            return Ok(());
        }
        self.persist().inspect_err(|_| self.entries = before)
    }

    /// Forgets epochs starting at or after `end_offset` (the log was truncated there).
    pub(crate) fn truncate_from_end(&mut self, end_offset: Offset) -> Result<(), LogError> {
        let before = self.entries.clone();
        if !self.drop_from(end_offset) {
            return Ok(());
        }
        self.persist().inspect_err(|_| self.entries = before)
    }

    /// [`Self::truncate_from_end`] kept in memory until the next flush or
    /// close: for opening a log, where the entries it drops (epochs with no
    /// data, such as a leader's that never wrote) come back from the file
    /// after a crash only to be dropped again.
    pub(crate) fn truncate_from_end_lazily(&mut self, end_offset: Offset) {
        self.drop_from(end_offset);
    }

    /// Drops epochs wholly before `start_offset` (the log start advanced); the
    /// epoch in force at `start_offset` now starts there.
    pub(crate) fn truncate_from_start(&mut self, start_offset: Offset) -> Result<(), LogError> {
        let covered = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if covered == 0 || (covered == 1 && self.entries[0].start_offset == start_offset) {
            return Ok(());
        }
        let before = self.entries.clone();
        let mut kept = self.entries.split_off(covered - 1);
        kept[0].start_offset = start_offset;
        self.entries = kept;
        self.persist().inspect_err(|_| self.entries = before)
    }

    /// Kafka's OffsetForLeaderEpoch: the largest epoch at or below `requested`
    /// and the offset where it ended (the next epoch's start, or `log_end` for
    /// the latest). `None` when `requested` is unknown (newer than any, or -1).
    pub fn end_offset_for(
        &self,
        requested: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        if requested < 0 {
            return None;
        }
        if self.latest_epoch() == Some(requested) {
            return Some((requested, log_end));
        }
        let higher = self.entries.iter().position(|e| e.epoch > requested)?;
        let end = self.entries[higher].start_offset;
        match higher.checked_sub(1) {
            Some(floor) => Some((self.entries[floor].epoch, end)),
            // Older than every epoch we know: nothing of it survives before `end`.
            None => Some((requested, end)),
        }
    }

    /// Removes the checkpoint file and forgets every epoch.
    pub(crate) fn clear(&mut self) -> Result<(), LogError> {
        if self.entries.is_empty() {
            return Ok(());
        }
        self.entries.clear();
        self.persist()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;

    fn cache(dir: &Path) -> LeaderEpochCache {
        LeaderEpochCache::load(Arc::new(StdStorage), dir.join("leader-epoch-checkpoint")).unwrap()
    }

    #[test]
    fn end_offsets_follow_kafka_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cache(dir.path());
        c.assign(1, 0).unwrap();
        c.assign(3, 10).unwrap();
        c.assign(5, 25).unwrap();
        assert_eq!(c.end_offset_for(5, 40), Some((5, 40)));
        assert_eq!(c.end_offset_for(3, 40), Some((3, 25)));
        assert_eq!(
            c.end_offset_for(4, 40),
            Some((3, 25)),
            "unknown epoch: floor epoch"
        );
        assert_eq!(c.end_offset_for(0, 40), Some((0, 0)), "older than any");
        assert_eq!(c.end_offset_for(6, 40), None, "newer than any");
        assert_eq!(c.end_offset_for(-1, 40), None);
    }

    #[test]
    fn survives_reload_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cache(dir.path());
        c.assign(1, 0).unwrap();
        c.assign(1, 5).unwrap(); // same epoch later: no new entry
        c.assign(2, 10).unwrap();
        c.assign(4, 20).unwrap();
        assert_eq!(cache(dir.path()).entries(), c.entries());
        c.truncate_from_end(15).unwrap();
        assert_eq!(c.latest_epoch(), Some(2));
        c.truncate_from_start(12).unwrap();
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: 12
            }]
        );
        assert_eq!(cache(dir.path()).entries(), c.entries());
        // As in Kafka, a new entry removes every entry that contradicts it
        // (same or later epoch, same or later start), keeping the cache monotonic.
        c.assign(1, 30).unwrap();
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 1,
                start_offset: 30
            }]
        );
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leader-epoch-checkpoint");
        std::fs::write(&path, "0\n2\n1 0\n").unwrap();
        assert!(LeaderEpochCache::load(Arc::new(StdStorage), path.clone()).is_err());
        std::fs::write(&path, "7\n0\n").unwrap();
        assert!(LeaderEpochCache::load(Arc::new(StdStorage), path).is_err());
    }
}
