//! Raft's log and vote, in their own SQLite file (`raft.db`).
//!
//! Entries are JSON (openraft's serde form) keyed by index. Every write is
//! a transaction with `synchronous = FULL`, so an entry reported flushed, or
//! a vote reported saved, is on disk: Raft's safety depends on both.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::str::FromStr;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::TypeConfig;

type NodeId = u64;

/// The Raft log store: cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct LogStore {
    pool: SqlitePool,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS raft_log (
    idx   INTEGER PRIMARY KEY,
    entry BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS raft_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

fn index(i: u64) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

impl LogStore {
    /// Opens (creating if needed) the log store at `path`.
    pub async fn open(path: &Path) -> Result<LogStore, sqlx::Error> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        Ok(LogStore { pool })
    }

    /// Closes the database.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn get_state<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError<NodeId>> {
        let row = sqlx::query("SELECT value FROM raft_state WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(read_err)?;
        match row {
            None => Ok(None),
            Some(row) => {
                let text: String = row.try_get("value").map_err(read_err)?;
                serde_json::from_str(&text).map(Some).map_err(read_err)
            }
        }
    }

    async fn put_state<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), StorageError<NodeId>> {
        let text = serde_json::to_string(value).map_err(write_err)?;
        sqlx::query("INSERT OR REPLACE INTO raft_state (key, value) VALUES (?, ?)")
            .bind(key)
            .bind(text)
            .execute(&self.pool)
            .await
            .map_err(write_err)?;
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Result<Entry<TypeConfig>, StorageError<NodeId>> {
    serde_json::from_slice(bytes).map_err(read_err)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => index(i),
            Bound::Excluded(&i) => index(i).saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => index(i).saturating_add(1),
            Bound::Excluded(&i) => index(i),
            Bound::Unbounded => i64::MAX,
        };
        let rows =
            sqlx::query("SELECT entry FROM raft_log WHERE idx >= ? AND idx < ? ORDER BY idx")
                .bind(start)
                .bind(end)
                .fetch_all(&self.pool)
                .await
                .map_err(read_err)?;
        rows.iter()
            .map(|row| decode(&row.try_get::<Vec<u8>, _>("entry").map_err(read_err)?))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId<NodeId>> = self.get_state("last_purged").await?;
        let row = sqlx::query("SELECT entry FROM raft_log ORDER BY idx DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(read_err)?;
        let last = match row {
            Some(row) => {
                Some(decode(&row.try_get::<Vec<u8>, _>("entry").map_err(read_err)?)?.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_state("vote", vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_state("vote").await
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.put_state("committed", &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .get_state::<Option<LogId<NodeId>>>("committed")
            .await?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut tx = self.pool.begin().await.map_err(write_err)?;
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(write_err)?;
            sqlx::query("INSERT OR REPLACE INTO raft_log (idx, entry) VALUES (?, ?)")
                .bind(index(entry.log_id.index))
                .bind(bytes)
                .execute(&mut *tx)
                .await
                .map_err(write_err)?;
        }
        let result = tx.commit().await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        sqlx::query("DELETE FROM raft_log WHERE idx >= ?")
            .bind(index(log_id.index))
            .execute(&self.pool)
            .await
            .map_err(write_err)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: a crash between the two leaves
        // entries below it, which are ignored, never a gap.
        self.put_state("last_purged", &log_id).await?;
        sqlx::query("DELETE FROM raft_log WHERE idx <= ?")
            .bind(index(log_id.index))
            .execute(&self.pool)
            .await
            .map_err(write_err)?;
        Ok(())
    }
}
