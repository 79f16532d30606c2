//! Walking the batches of a segment file through a reusable buffer.
//!
//! Recovery, index rebuilds, offset lookups and the cleaner all walk a segment
//! batch by batch. The scanner reads large chunks (so recovery runs at memory
//! speed, not syscall speed) and either skims headers or hands out whole,
//! CRC-checked batches.

use std::io;

use runnel_records::batch::{BatchError, BatchHeader, RECORD_BATCH_OVERHEAD, RecordBatch};

use crate::storage::StorageFile;

/// Why a scan stopped early.
#[derive(Debug)]
pub(crate) enum ScanError {
    /// Reading the file failed.
    Io(io::Error),
    /// The bytes at `position` are not a valid batch (torn write or corruption).
    Invalid {
        /// File position of the bad batch.
        position: u64,
        /// What is wrong.
        error: BatchError,
    },
}

/// Reads batches of one file between two positions.
#[derive(Debug)]
pub(crate) struct Scanner<'f> {
    file: &'f dyn StorageFile,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]` and how many bytes of `buf` are valid.
    buf_pos: u64,
    buf_len: usize,
    chunk: usize,
}

/// Largest read a lookup starts with; a lookup reads from an index entry to
/// about the next one (`index.interval.bytes` apart).
pub(crate) const MAX_LOOKUP_CHUNK: usize = 64 * 1024;
/// Chunk size for whole-segment scans.
pub(crate) const SCAN_CHUNK: usize = 4 * 1024 * 1024;

impl<'f> Scanner<'f> {
    /// Scans `file` from `start` up to (not including) `end`, reading `chunk` bytes at a time.
    pub(crate) fn new(file: &'f dyn StorageFile, start: u64, end: u64, chunk: usize) -> Self {
        Scanner {
            file,
            pos: start,
            end,
            buf: Vec::new(),
            buf_pos: 0,
            buf_len: 0,
            chunk,
        }
    }

    /// Makes `buf` hold `[pos, pos + need)`; `need` must not pass `end`.
    fn fill(&mut self, pos: u64, need: usize) -> Result<usize, ScanError> {
        if pos >= self.buf_pos && pos + need as u64 <= self.buf_pos + self.buf_len as u64 {
            return Ok((pos - self.buf_pos) as usize);
        }
        let len = need.max(self.chunk).min((self.end - pos) as usize);
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        match self.file.read_exact_at(&mut self.buf[..len], pos) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.buf_len = 0;
                return Err(ScanError::Invalid {
                    position: pos,
                    error: BatchError::Truncated {
                        needed: need,
                        available: 0,
                    },
                });
            }
            Err(e) => {
                self.buf_len = 0;
                return Err(ScanError::Io(e));
            }
        }
        self.buf_pos = pos;
        self.buf_len = len;
        Ok(0)
    }

    fn header_at(&mut self, pos: u64) -> Result<BatchHeader, ScanError> {
        let left = self.end - pos;
        let invalid = |error| ScanError::Invalid {
            position: pos,
            error,
        };
        if left < RECORD_BATCH_OVERHEAD as u64 {
            // Parse what is there to tell a bad magic from a short tail.
            let at = self.fill(pos, left as usize)?;
            return Err(invalid(
                BatchHeader::parse(&self.buf[at..at + left as usize])
                    .err()
                    .unwrap_or(BatchError::Truncated {
                        needed: RECORD_BATCH_OVERHEAD,
                        available: left as usize,
                    }),
            ));
        }
        let at = self.fill(pos, RECORD_BATCH_OVERHEAD)?;
        let header =
            BatchHeader::parse(&self.buf[at..at + RECORD_BATCH_OVERHEAD]).map_err(invalid)?;
        if header.size() as u64 > left {
            return Err(invalid(BatchError::Truncated {
                needed: header.size(),
                available: left as usize,
            }));
        }
        Ok(header)
    }

    /// The next batch's position and header, without reading its records or checking its CRC.
    pub(crate) fn next_header(&mut self) -> Result<Option<(u64, BatchHeader)>, ScanError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let pos = self.pos;
        let header = self.header_at(pos)?;
        self.pos = pos + header.size() as u64;
        Ok(Some((pos, header)))
    }

    /// The next whole batch, validated (length, magic, CRC, record count).
    pub(crate) fn next_batch(&mut self) -> Result<Option<(u64, RecordBatch<'_>)>, ScanError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let pos = self.pos;
        let size = self.header_at(pos)?.size();
        let at = self.fill(pos, size)?;
        let (batch, _) =
            RecordBatch::parse(&self.buf[at..at + size]).map_err(|error| ScanError::Invalid {
                position: pos,
                error,
            })?;
        self.pos = pos + size as u64;
        Ok(Some((pos, batch)))
    }
}
