//! A budget of open files shared by many logs.
//!
//! A broker hosting 100,000 partitions has at least 300,000 segment files;
//! a process may hold a few tens of thousands open. [`CachedStorage`] wraps
//! any [`Storage`] so that the files it hands out open on demand and close
//! again when the budget is exceeded, least recently used first. The log
//! never notices: every read and write is positional, so a file reopened
//! later carries no cursor to restore, and an `fsync` through a new
//! descriptor flushes the inode's dirty pages whichever descriptor wrote
//! them.
//!
//! The budget bounds idle files. A file in use when it is evicted stays
//! open until that I/O returns, so the count can pass the budget by the
//! number of I/Os in flight; it falls back at the next eviction.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::storage::{Storage, StorageFile};

/// Counters of a [`CachedStorage`], for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileCacheStats {
    /// The budget: files kept open at most (apart from I/O in flight).
    pub budget: usize,
    /// Files open through the cache now.
    pub open: usize,
    /// Files opened since the start (first opens and reopens).
    pub opened: u64,
    /// Files closed to stay within the budget.
    pub evicted: u64,
}

/// A [`Storage`] whose files stay open only while the budget allows.
#[derive(Debug, Clone)]
pub struct CachedStorage {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    inner: Arc<dyn Storage>,
    budget: usize,
    open: AtomicUsize,
    /// Access counter: a handle's last use, in this order, ranks it for eviction.
    clock: AtomicU64,
    /// Handles that opened a file (some since closed or dropped: pruned at eviction).
    open_handles: Mutex<Vec<Weak<CachedFile>>>,
    opened: AtomicU64,
    evicted: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not wedge every log of the broker.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CachedStorage {
    /// Wraps `inner`, keeping at most `budget` of its files open (at least one).
    pub fn new(inner: Arc<dyn Storage>, budget: usize) -> CachedStorage {
        CachedStorage {
            shared: Arc::new(Shared {
                inner,
                budget: budget.max(1),
                open: AtomicUsize::new(0),
                clock: AtomicU64::new(0),
                open_handles: Mutex::new(Vec::new()),
                opened: AtomicU64::new(0),
                evicted: AtomicU64::new(0),
            }),
        }
    }

    /// The cache's counters now.
    pub fn stats(&self) -> FileCacheStats {
        let s = &self.shared;
        FileCacheStats {
            budget: s.budget,
            open: s.open.load(Ordering::Relaxed),
            opened: s.opened.load(Ordering::Relaxed),
            evicted: s.evicted.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a file just opened by `handle`, closing the least recently
    /// used ones when that goes over the budget.
    fn opened(&self, handle: Weak<CachedFile>) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let mut handles = lock(&self.open_handles);
        handles.push(handle);
        if self.open.fetch_add(1, Ordering::Relaxed) + 1 > self.budget {
            self.evict(&mut handles);
        }
    }

    /// Closes files until an eighth of the budget is free, so that a scan
    /// of the open handles pays for many opens.
    fn evict(&self, handles: &mut Vec<Weak<CachedFile>>) {
        let mut live: Vec<(u64, Arc<CachedFile>)> = Vec::with_capacity(handles.len());
        handles.retain(|w| match w.upgrade() {
            Some(h) if h.is_open.load(Ordering::Relaxed) => {
                live.push((h.last_used.load(Ordering::Relaxed), h));
                true
            }
            _ => false,
        });
        let target = self.budget - self.budget / 8;
        let excess = self.open.load(Ordering::Relaxed).saturating_sub(target);
        if excess == 0 || live.is_empty() {
            return;
        }
        let excess = excess.min(live.len());
        if excess < live.len() {
            live.select_nth_unstable_by_key(excess, |(used, _)| *used);
        }
        for (_, h) in &live[..excess] {
            if h.close() {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A file opened through [`CachedStorage`]: its descriptor comes and goes.
#[derive(Debug)]
struct CachedFile {
    shared: Arc<Shared>,
    me: Weak<CachedFile>,
    path: Mutex<PathBuf>,
    file: Mutex<Option<Arc<dyn StorageFile>>>,
    is_open: AtomicBool,
    last_used: AtomicU64,
}

impl CachedFile {
    /// The open file, reopening it if it was evicted.
    fn get(&self) -> io::Result<Arc<dyn StorageFile>> {
        self.last_used.store(self.shared.tick(), Ordering::Relaxed);
        let mut slot = lock(&self.file);
        if let Some(f) = slot.as_ref() {
            return Ok(Arc::clone(f));
        }
        let path = lock(&self.path).clone();
        let f = self.shared.inner.open(&path, false)?;
        *slot = Some(Arc::clone(&f));
        self.is_open.store(true, Ordering::Relaxed);
        drop(slot);
        self.shared.opened(self.me.clone());
        Ok(f)
    }

    /// Closes the descriptor (it reopens on the next use); whether it was open.
    fn close(&self) -> bool {
        let closed = lock(&self.file).take().is_some();
        if closed {
            self.is_open.store(false, Ordering::Relaxed);
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
        }
        closed
    }
}

impl Drop for CachedFile {
    fn drop(&mut self) {
        self.close();
    }
}

impl StorageFile for CachedFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.get()?.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.get()?.write_all_at(buf, pos)
    }
    fn len(&self) -> io::Result<u64> {
        self.get()?.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.get()?.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.get()?.sync_data()
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        // One lookup for the whole read, not one per partial read.
        self.get()?.read_exact_at(buf, pos)
    }
    fn renamed(&self, to: &Path) {
        *lock(&self.path) = to.to_owned();
    }
}

impl Storage for CachedStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        // Opened now, not on first use: a missing file or a refused
        // permission is the opener's error, as with any storage.
        let f = self.shared.inner.open(path, create)?;
        let handle = Arc::new_cyclic(|me| CachedFile {
            shared: Arc::clone(&self.shared),
            me: me.clone(),
            path: Mutex::new(path.to_owned()),
            file: Mutex::new(Some(f)),
            is_open: AtomicBool::new(true),
            last_used: AtomicU64::new(self.shared.tick()),
        });
        self.shared.opened(Arc::downgrade(&handle));
        Ok(handle)
    }
    fn exists(&self, path: &Path) -> bool {
        self.shared.inner.exists(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.shared.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.shared.inner.rename(from, to)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.shared.inner.create_dir_all(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.shared.inner.remove_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.shared.inner.list(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.shared.inner.sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdStorage;

    /// Descriptors this process holds now.
    fn fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
    }

    #[test]
    fn files_beyond_the_budget_close_and_reopen_transparently() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CachedStorage::new(Arc::new(StdStorage), 16);
        let files: Vec<_> = (0..200)
            .map(|i| {
                let f = storage
                    .open(&dir.path().join(format!("{i}.log")), true)
                    .unwrap();
                f.write_all_at(format!("file {i}").as_bytes(), 0).unwrap();
                f
            })
            .collect();
        assert!(storage.stats().open <= 16, "{:?}", storage.stats());
        for (i, f) in files.iter().enumerate().rev() {
            let want = format!("file {i}");
            let mut buf = vec![0; want.len()];
            f.read_exact_at(&mut buf, 0).unwrap();
            assert_eq!(buf, want.as_bytes());
            f.write_all_at(b"!", want.len() as u64).unwrap();
            assert_eq!(f.len().unwrap(), want.len() as u64 + 1);
            assert!(storage.stats().open <= 16);
        }
        let stats = storage.stats();
        assert!(stats.evicted >= 184 && stats.opened >= 384, "{stats:?}");
        drop(files);
        assert_eq!(storage.stats().open, 0);
    }

    #[test]
    fn the_most_recently_used_files_stay_open() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CachedStorage::new(Arc::new(StdStorage), 8);
        let hot = storage.open(&dir.path().join("hot"), true).unwrap();
        let mut cold = Vec::new();
        for i in 0..100 {
            cold.push(
                storage
                    .open(&dir.path().join(format!("{i}")), true)
                    .unwrap(),
            );
            hot.write_all_at(b"x", i).unwrap();
        }
        let opened = storage.stats().opened;
        hot.write_all_at(b"y", 100).unwrap();
        assert_eq!(
            storage.stats().opened,
            opened,
            "the hot file was never closed"
        );
    }

    #[test]
    fn a_renamed_file_reopens_under_its_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CachedStorage::new(Arc::new(StdStorage), 1);
        let (from, to) = (dir.path().join("a.cleaned"), dir.path().join("a.log"));
        let f = storage.open(&from, true).unwrap();
        f.write_all_at(b"data", 0).unwrap();
        storage.rename(&from, &to).unwrap();
        f.renamed(&to);
        // Evict it, then use it again.
        let _other = storage.open(&dir.path().join("b"), true).unwrap();
        let mut buf = [0; 4];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"data");
    }

    #[test]
    fn descriptors_held_follow_the_budget_not_the_file_count() {
        let dir = tempfile::tempdir().unwrap();
        let before = fds();
        let storage = CachedStorage::new(Arc::new(StdStorage), 32);
        let files: Vec<_> = (0..2000)
            .map(|i| {
                storage
                    .open(&dir.path().join(format!("{i}")), true)
                    .unwrap()
            })
            .collect();
        for f in &files {
            f.sync_data().unwrap();
        }
        // Other tests of this binary run in parallel and open files too: allow them some.
        assert!(fds() < before + 32 + 64, "{} descriptors", fds() - before);
        drop(files);
    }

    #[test]
    fn an_open_that_fails_counts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CachedStorage::new(Arc::new(StdStorage), 4);
        let err = storage
            .open(&dir.path().join("missing"), false)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(storage.stats().open, 0);
        // A file deleted while evicted fails on its next use, with the OS's error.
        let f = storage.open(&dir.path().join("gone"), true).unwrap();
        storage.remove_file(&dir.path().join("gone")).unwrap();
        let _others: Vec<_> = (0..8)
            .map(|i| {
                storage
                    .open(&dir.path().join(format!("{i}")), true)
                    .unwrap()
            })
            .collect();
        assert_eq!(f.len().unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn threads_share_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let storage = CachedStorage::new(Arc::new(StdStorage), 10);
        let files: Arc<Vec<_>> = Arc::new(
            (0..100)
                .map(|i| {
                    storage
                        .open(&dir.path().join(format!("{i}")), true)
                        .unwrap()
                })
                .collect(),
        );
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let files = Arc::clone(&files);
                std::thread::spawn(move || {
                    for round in 0..50u64 {
                        for (i, f) in files.iter().enumerate() {
                            if (i as u64 + t).is_multiple_of(4) {
                                f.write_all_at(&[t as u8], round * 4 + t).unwrap();
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for (i, f) in files.iter().enumerate() {
            let t = (4 - i % 4) % 4;
            let mut buf = [0u8; 1];
            f.read_exact_at(&mut buf, 49 * 4 + t as u64).unwrap();
            assert_eq!(buf[0], t as u8);
        }
        // In flight at most one per thread beyond the budget, and none now.
        assert!(storage.stats().open <= 10, "{:?}", storage.stats());
    }
}
