//! The small file-system surface the log uses, behind a trait.
//!
//! Every byte the log reads or writes goes through [`Storage`] and
//! [`StorageFile`]: positional reads and writes (so a failed write never moves
//! a file cursor), `set_len`, `sync_data`, renames and directory syncs.
//! [`StdStorage`] is the real thing; [`FaultyStorage`] wraps it to inject a
//! full disk or a crash at a chosen operation, which is how the tests prove the
//! log stays consistent when the disk fails under it.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// An open file with positional I/O.
// A file's length is an I/O result, not a collection size: no `is_empty`.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `pos`; returns how many were read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `pos`.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Flushes the file's data (and the metadata needed to read it) to the device.
    fn sync_data(&self) -> io::Result<()>;
    /// Told that the file was renamed to `to` (through [`Storage::rename`]):
    /// a handle that reopens its file by name must use the new one.
    fn renamed(&self, _to: &Path) {}

    /// Fills `buf` from `pos`, failing with `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, pos) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Directory and file operations.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Opens a file for reading and writing, creating it when `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> bool;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing any file at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// File names (not paths) in a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes renames and creations in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The local file system through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdStorage;

impl StorageFile for File {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, pos)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}

impl Storage for StdStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(file))
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// A [`StdStorage`] that fails on command: a disk that fills up, or a process
/// that dies at the N-th mutating operation. For tests of this crate and of
/// the services built on it.
#[derive(Debug, Clone, Default)]
pub struct FaultyStorage {
    state: Arc<Mutex<FaultState>>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Bytes that may still be written before writes fail with ENOSPC.
    write_budget: Option<u64>,
    /// Mutating operations allowed before every later one fails.
    ops_left: Option<u64>,
    /// Mutating operations performed so far.
    ops: u64,
    /// File and directory fsyncs performed so far.
    syncs: u64,
}

impl FaultyStorage {
    /// A storage that does not fail until told to.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets `bytes` more bytes be written, then fails writes with ENOSPC
    /// (the write that crosses the limit writes a prefix first, as a real
    /// disk does). `None` lifts the limit.
    pub fn set_write_budget(&self, bytes: Option<u64>) {
        self.lock().write_budget = bytes;
    }

    /// Lets `ops` more mutating operations (writes, truncations, syncs,
    /// creations, renames, removals) succeed, then fails every later one, as
    /// if the process had died there. `None` lifts the limit.
    pub fn fail_after_ops(&self, ops: Option<u64>) {
        self.lock().ops_left = ops;
    }

    /// Mutating operations performed so far.
    pub fn mutating_ops(&self) -> u64 {
        self.lock().ops
    }

    /// File and directory fsyncs performed so far (each is also a mutating operation).
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    fn count_sync(&self) {
        self.lock().syncs += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        // A panicking test thread must not hide the state from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mutate(&self) -> io::Result<()> {
        let mut s = self.lock();
        s.ops += 1;
        match &mut s.ops_left {
            Some(0) => Err(io::Error::other("injected failure: process crashed")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// How many of `len` bytes may be written, consuming the budget.
    fn take_budget(&self, len: usize) -> usize {
        let mut s = self.lock();
        match &mut s.write_budget {
            None => len,
            Some(budget) => {
                let n = (*budget).min(len as u64);
                *budget -= n;
                n as usize
            }
        }
    }
}

#[derive(Debug)]
struct FaultyFile {
    file: File,
    faults: FaultyStorage,
}

fn disk_full() -> io::Error {
    io::Error::from_raw_os_error(28) // ENOSPC
}

impl StorageFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        FileExt::read_at(&self.file, buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.faults.mutate()?;
        let allowed = self.faults.take_budget(buf.len());
        FileExt::write_all_at(&self.file, &buf[..allowed], pos)?;
        if allowed < buf.len() {
            return Err(disk_full());
        }
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.mutate()?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.mutate()?;
        self.faults.count_sync();
        self.file.sync_data()
    }
}

impl Storage for FaultyStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        if create && !path.exists() {
            self.mutate()?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(FaultyFile {
            file,
            faults: self.clone(),
        }))
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.mutate()?;
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.mutate()?;
        std::fs::rename(from, to)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.mutate()?;
        std::fs::create_dir_all(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.mutate()?;
        std::fs::remove_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdStorage.list(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.mutate()?;
        self.count_sync();
        StdStorage.sync_dir(dir)
    }
}
