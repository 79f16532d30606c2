//! The controller's SQLite store: the metadata log and the state it produces.
//!
//! Appending records and applying them to the state tables happen in one
//! transaction, together with the applied offset, so the state on disk is
//! always exactly the log folded up to `applied.next_offset`. The schema is in
//! `migrations/`, run at start.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use prost::Message;
use runnel_common::metadata::{
    BrokerState, CoordinatorState, MetadataImage, PartitionState, TopicState, acl_binding,
    quota_entity, scram_credential, topic_id,
};
use runnel_common::quota::{EntityName, QuotaEntity, QuotaKey};
use runnel_proto::metadata::v1::{
    AclEntry, CoordinatorRegistered, Endpoint, MetadataEvent, MetadataRecord,
    OffsetsPartitionOwner, PartitionChanged, PartitionCreated, UserScramCredentialSet,
    metadata_record::Record,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("metadata store: {0}")]
    Sql(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("metadata store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Stored data does not decode (a bug or a damaged file).
    #[error("metadata store is inconsistent: {0}")]
    Corrupt(String),
}

/// The metadata store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

fn ids_to_text(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

fn text_to_ids(text: &str) -> Result<Vec<i32>, StoreError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|s| {
            s.parse()
                .map_err(|_| StoreError::Corrupt(format!("bad broker id list {text:?}")))
        })
        .collect()
}

impl Store {
    /// Opens (creating if needed) the database at `path` and runs migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // An acknowledged metadata change must survive a power loss.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../../migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    /// Opens a copy made by [`Store::copy_to`] to read it.
    pub async fn open_copy(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?.filename(path);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        Ok(Store { pool })
    }

    /// Closes the database.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The cluster id, once the first active controller has set it.
    pub async fn cluster_id(&self) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT cluster_id FROM cluster WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("cluster_id")).transpose()?)
    }

    /// Which Raft entry the state includes and the membership as of it
    /// (openraft's JSON), if any entry was applied.
    pub async fn raft_applied(&self) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query("SELECT log_id, membership FROM raft_applied WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("log_id")?, r.try_get("membership")?)),
            None => None,
        })
    }

    /// Appends `events` (consecutive offsets from the current end), applies
    /// them to the state tables, sets the cluster id if given and not yet
    /// set, and records the Raft position `(log_id, membership)`, all in one
    /// transaction.
    pub async fn apply(
        &self,
        events: &[MetadataEvent],
        cluster_id: Option<&str>,
        raft_applied: (&str, &str),
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let next: i64 = sqlx::query("SELECT next_offset FROM applied WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get("next_offset")?;
        let mut expected = next;
        let mut log_rows = Vec::with_capacity(events.len());
        let mut partitions = PartitionRows::default();
        for event in events {
            if event.offset != expected {
                return Err(StoreError::Corrupt(format!(
                    "append at offset {} but the log ends at {expected}",
                    event.offset
                )));
            }
            let record = event
                .record
                .as_ref()
                .ok_or_else(|| StoreError::Corrupt("event without record".into()))?;
            log_rows.push((event.offset, event.timestamp_ms, record.encode_to_vec()));
            if !partitions.add(&mut tx, record).await? {
                partitions.flush(&mut tx).await?;
                apply(&mut tx, record).await?;
            }
            expected += 1;
        }
        partitions.flush(&mut tx).await?;
        for chunk in log_rows.chunks(ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                r#"INSERT INTO metadata_log ("offset", timestamp_ms, record) "#,
            );
            insert.push_values(chunk, |mut row, (offset, timestamp_ms, record)| {
                row.push_bind(offset)
                    .push_bind(timestamp_ms)
                    .push_bind(record.as_slice());
            });
            insert.build().execute(&mut *tx).await?;
        }
        sqlx::query("UPDATE applied SET next_offset = ? WHERE id = 1")
            .bind(expected)
            .execute(&mut *tx)
            .await?;
        if let Some(id) = cluster_id {
            sqlx::query("INSERT OR IGNORE INTO cluster (id, cluster_id) VALUES (1, ?)")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT OR REPLACE INTO raft_applied (id, log_id, membership) VALUES (1, ?, ?)",
        )
        .bind(raft_applied.0)
        .bind(raft_applied.1)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes a consistent copy of the whole database to `path` (a snapshot).
    pub async fn copy_to(&self, path: &Path) -> Result<(), StoreError> {
        let _ = std::fs::remove_file(path);
        sqlx::query("VACUUM INTO ?")
            .bind(path.display().to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces every table's contents with those of the database copy at
    /// `path` (a snapshot from another controller), in one transaction.
    pub async fn restore_from(&self, path: &Path) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("ATTACH DATABASE ? AS snap")
            .bind(path.display().to_string())
            .execute(&mut *conn)
            .await?;
        let result = async {
            let ours: i64 = sqlx::query("SELECT MAX(version) AS v FROM main._sqlx_migrations")
                .fetch_one(&mut *conn)
                .await?
                .try_get("v")?;
            let theirs: i64 = sqlx::query("SELECT MAX(version) AS v FROM snap._sqlx_migrations")
                .fetch_one(&mut *conn)
                .await?
                .try_get("v")?;
            if ours != theirs {
                return Err(StoreError::Corrupt(format!(
                    "snapshot has schema version {theirs}, this controller {ours}"
                )));
            }
            let tables: Vec<String> = sqlx::query(
                "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != '_sqlx_migrations'",
            )
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get("name"))
            .collect::<Result<_, _>>()?;
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            let copied = async {
                sqlx::query("PRAGMA defer_foreign_keys = ON")
                    .execute(&mut *conn)
                    .await?;
                // Table names come from this database's own schema.
                for t in &tables {
                    sqlx::query(sqlx::AssertSqlSafe(format!(r#"DELETE FROM main."{t}""#)))
                        .execute(&mut *conn)
                        .await?;
                }
                for t in &tables {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        r#"INSERT INTO main."{t}" SELECT * FROM snap."{t}""#
                    )))
                        .execute(&mut *conn)
                        .await?;
                }
                Ok::<_, StoreError>(())
            }
            .await;
            match copied {
                Ok(()) => {
                    sqlx::query("COMMIT").execute(&mut *conn).await?;
                    Ok(())
                }
                Err(e) => {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    Err(e)
                }
            }
        }
        .await;
        let _ = sqlx::query("DETACH DATABASE snap")
            .execute(&mut *conn)
            .await;
        result
    }

    /// Up to `limit` events from `from` on.
    pub async fn read_log(&self, from: i64, limit: i64) -> Result<Vec<MetadataEvent>, StoreError> {
        let rows = sqlx::query(
            r#"SELECT "offset", timestamp_ms, record FROM metadata_log WHERE "offset" >= ? ORDER BY "offset" LIMIT ?"#,
        )
        .bind(from)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let bytes: Vec<u8> = row.try_get("record")?;
                let record = MetadataRecord::decode(bytes.as_slice()).map_err(|e| {
                    StoreError::Corrupt(format!("undecodable metadata record: {e}"))
                })?;
                Ok(MetadataEvent {
                    offset: row.try_get("offset")?,
                    timestamp_ms: row.try_get("timestamp_ms")?,
                    record: Some(record),
                })
            })
            .collect()
    }

    /// The state tables as a metadata image.
    pub async fn load_image(&self) -> Result<MetadataImage, StoreError> {
        let mut image = MetadataImage {
            next_offset: sqlx::query("SELECT next_offset FROM applied WHERE id = 1")
                .fetch_one(&self.pool)
                .await?
                .try_get("next_offset")?,
            ..MetadataImage::default()
        };
        image.next_producer_id =
            sqlx::query("SELECT next_producer_id FROM producer_ids WHERE id = 1")
                .fetch_one(&self.pool)
                .await?
                .try_get("next_producer_id")?;
        for row in
            sqlx::query("SELECT broker_id, broker_epoch, incarnation_id, rack, fenced FROM brokers")
                .fetch_all(&self.pool)
                .await?
        {
            image.brokers.insert(
                row.try_get("broker_id")?,
                BrokerState {
                    epoch: row.try_get("broker_epoch")?,
                    endpoints: Vec::new(),
                    rack: row.try_get("rack")?,
                    incarnation_id: row.try_get("incarnation_id")?,
                    fenced: row.try_get::<i64, _>("fenced")? != 0,
                },
            );
        }
        for row in sqlx::query(
            "SELECT broker_id, name, host, port FROM broker_endpoints ORDER BY broker_id, position",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let id: i32 = row.try_get("broker_id")?;
            let broker = image
                .brokers
                .get_mut(&id)
                .ok_or_else(|| StoreError::Corrupt(format!("endpoint of unknown broker {id}")))?;
            broker.endpoints.push(Endpoint {
                name: row.try_get("name")?,
                host: row.try_get("host")?,
                port: row.try_get::<i64, _>("port")? as u32,
            });
        }
        for row in sqlx::query("SELECT name, topic_id FROM topics")
            .fetch_all(&self.pool)
            .await?
        {
            let id: Vec<u8> = row.try_get("topic_id")?;
            let id = topic_id(&id)
                .ok_or_else(|| StoreError::Corrupt("topic id is not 16 bytes".into()))?;
            image.topics.insert(
                row.try_get("name")?,
                TopicState {
                    id,
                    partitions: BTreeMap::new(),
                    configs: BTreeMap::new(),
                },
            );
        }
        for row in sqlx::query(
            "SELECT topic, partition, replicas, isr, leader, leader_epoch, partition_epoch, adding_replicas, removing_replicas FROM partitions",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let topic: String = row.try_get("topic")?;
            let t = image
                .topics
                .get_mut(&topic)
                .ok_or_else(|| StoreError::Corrupt(format!("partition of unknown topic {topic}")))?;
            t.partitions.insert(
                row.try_get("partition")?,
                PartitionState {
                    replicas: text_to_ids(&row.try_get::<String, _>("replicas")?)?,
                    isr: text_to_ids(&row.try_get::<String, _>("isr")?)?,
                    leader: row.try_get("leader")?,
                    leader_epoch: row.try_get("leader_epoch")?,
                    partition_epoch: row.try_get("partition_epoch")?,
                    adding_replicas: text_to_ids(&row.try_get::<String, _>("adding_replicas")?)?,
                    removing_replicas: text_to_ids(&row.try_get::<String, _>(
                        "removing_replicas",
                    )?)?,
                },
            );
        }
        for row in sqlx::query("SELECT resource_type, resource_name, key, value FROM configs")
            .fetch_all(&self.pool)
            .await?
        {
            let kind: i64 = row.try_get("resource_type")?;
            let name: String = row.try_get("resource_name")?;
            let configs = match kind {
                2 => {
                    &mut image
                        .topics
                        .get_mut(&name)
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!("config of unknown topic {name}"))
                        })?
                        .configs
                }
                4 => image.broker_configs.entry(name).or_default(),
                other => return Err(StoreError::Corrupt(format!("config resource type {other}"))),
            };
            configs.insert(row.try_get("key")?, row.try_get("value")?);
        }
        for row in sqlx::query("SELECT registration, fenced FROM coordinators")
            .fetch_all(&self.pool)
            .await?
        {
            let r = CoordinatorRegistered::decode(&row.try_get::<Vec<u8>, _>("registration")?[..])
                .map_err(|e| StoreError::Corrupt(format!("coordinator registration: {e}")))?;
            image.coordinators.insert(
                r.coordinator_id,
                CoordinatorState {
                    epoch: r.coordinator_epoch,
                    endpoints: r.endpoints,
                    incarnation_id: r.incarnation_id,
                    fenced: row.try_get::<i64, _>("fenced")? != 0,
                },
            );
        }
        for row in sqlx::query(
            "SELECT partition, coordinator_id, coordinator_epoch, owner_epoch, producer_id FROM offsets_owners",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let owner = OffsetsPartitionOwner {
                partition: row.try_get("partition")?,
                coordinator_id: row.try_get("coordinator_id")?,
                coordinator_epoch: row.try_get("coordinator_epoch")?,
                owner_epoch: row.try_get("owner_epoch")?,
                producer_id: row.try_get("producer_id")?,
            };
            image.offsets_owners.insert(owner.partition, owner);
        }
        for row in sqlx::query(
            "SELECT user, mechanism, iterations, salt, stored_key, server_key FROM scram_credentials",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let record = UserScramCredentialSet {
                user: row.try_get("user")?,
                mechanism: row.try_get("mechanism")?,
                iterations: row.try_get("iterations")?,
                salt: row.try_get::<Vec<u8>, _>("salt")?.into(),
                stored_key: row.try_get::<Vec<u8>, _>("stored_key")?.into(),
                server_key: row.try_get::<Vec<u8>, _>("server_key")?.into(),
            };
            let credential = scram_credential(&record).map_err(StoreError::Corrupt)?;
            image
                .scram_credentials
                .entry(record.user)
                .or_default()
                .insert(credential.mechanism, credential);
        }
        for row in sqlx::query(
            "SELECT resource_type, name, pattern_type, principal, host, operation, permission FROM acls",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let entry = AclEntry {
                resource_type: row.try_get("resource_type")?,
                name: row.try_get("name")?,
                pattern_type: row.try_get("pattern_type")?,
                principal: row.try_get("principal")?,
                host: row.try_get("host")?,
                operation: row.try_get("operation")?,
                permission: row.try_get("permission")?,
            };
            image
                .acls
                .add(acl_binding(&entry).map_err(StoreError::Corrupt)?);
        }
        for row in sqlx::query(
            "SELECT user_part, user, client_id_part, client_id, key, value FROM client_quotas",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let entity = QuotaEntity {
                user: entity_part(row.try_get("user_part")?, row.try_get("user")?)?,
                client_id: entity_part(row.try_get("client_id_part")?, row.try_get("client_id")?)?,
            };
            let key: String = row.try_get("key")?;
            let key = QuotaKey::parse(&key).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            image.quotas.set(entity, key, row.try_get("value")?);
        }
        Ok(image)
    }
}

/// Applies one record to the state tables (the SQL twin of `MetadataImage::apply`).
/// Rows written by one multi-row statement. Each statement is a round trip
/// to SQLite's worker thread: a topic of 100,000 partitions took 200,000 of
/// them, one per row, and seconds of thread switches.
const ROWS_PER_STATEMENT: usize = 500;

/// A run of consecutive partition creations or plain partition changes (the
/// bulk of a big topic's creation, of a broker's fencing and unfencing),
/// written as multi-row statements. Every other record flushes the run
/// first, so the tables change in log order.
#[derive(Default)]
struct PartitionRows<'a> {
    created: Vec<&'a PartitionCreated>,
    changed: Vec<&'a PartitionChanged>,
    /// The partitions in `changed`: one statement may change each only once.
    changed_keys: HashSet<(&'a str, i32)>,
}

impl<'a> PartitionRows<'a> {
    /// Takes `record` into the run if it is one the run writes; false if
    /// the caller applies it (after flushing the run).
    async fn add(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        record: &'a MetadataRecord,
    ) -> Result<bool, StoreError> {
        match &record.record {
            Some(Record::PartitionCreated(r)) => {
                if !self.changed.is_empty() || self.created.len() == ROWS_PER_STATEMENT {
                    self.flush(tx).await?;
                }
                self.created.push(r);
            }
            Some(Record::PartitionChanged(r)) if r.assignment.is_none() => {
                let key = (r.topic.as_str(), r.partition);
                if !self.created.is_empty()
                    || self.changed.len() == ROWS_PER_STATEMENT
                    || self.changed_keys.contains(&key)
                {
                    self.flush(tx).await?;
                }
                self.changed_keys.insert(key);
                self.changed.push(r);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Writes the run.
    async fn flush(&mut self, tx: &mut Transaction<'_, Sqlite>) -> Result<(), StoreError> {
        if !self.created.is_empty() {
            insert_partitions(tx, &self.created).await?;
            self.created.clear();
        }
        if !self.changed.is_empty() {
            update_partitions(tx, &self.changed).await?;
            self.changed.clear();
            self.changed_keys.clear();
        }
        Ok(())
    }
}

/// Inserts created partitions, in one statement.
async fn insert_partitions(
    tx: &mut Transaction<'_, Sqlite>,
    created: &[&PartitionCreated],
) -> Result<(), StoreError> {
    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO partitions (topic, partition, replicas, isr, leader, leader_epoch, partition_epoch) ",
    );
    insert.push_values(created, |mut row, r| {
        row.push_bind(r.topic.as_str())
            .push_bind(r.partition)
            .push_bind(ids_to_text(&r.replicas))
            .push_bind(ids_to_text(&r.isr))
            .push_bind(r.leader)
            .push_bind(r.leader_epoch)
            .push_bind(r.partition_epoch);
    });
    insert.build().execute(&mut **tx).await?;
    Ok(())
}

/// Sets the leader, ISR and epochs of changed partitions (each at most once), in one statement.
async fn update_partitions(
    tx: &mut Transaction<'_, Sqlite>,
    changed: &[&PartitionChanged],
) -> Result<(), StoreError> {
    let mut update = QueryBuilder::<Sqlite>::new(
        "WITH v(topic, partition, isr, leader, leader_epoch, partition_epoch) AS (",
    );
    update.push_values(changed, |mut row, r| {
        row.push_bind(r.topic.as_str())
            .push_bind(r.partition)
            .push_bind(ids_to_text(&r.isr))
            .push_bind(r.leader)
            .push_bind(r.leader_epoch)
            .push_bind(r.partition_epoch);
    });
    update.push(
        ") UPDATE partitions SET isr = v.isr, leader = v.leader, leader_epoch = v.leader_epoch, \
         partition_epoch = v.partition_epoch FROM v \
         WHERE partitions.topic = v.topic AND partitions.partition = v.partition",
    );
    update.build().execute(&mut **tx).await?;
    Ok(())
}

async fn apply(
    tx: &mut Transaction<'_, Sqlite>,
    record: &MetadataRecord,
) -> Result<(), StoreError> {
    let Some(record) = &record.record else {
        return Err(StoreError::Corrupt("empty metadata record".into()));
    };
    match record {
        Record::BrokerRegistered(r) => {
            sqlx::query(
                "INSERT OR REPLACE INTO brokers (broker_id, broker_epoch, incarnation_id, rack, fenced) VALUES (?, ?, ?, ?, 1)",
            )
            .bind(r.broker_id)
            .bind(r.broker_epoch)
            .bind(&r.incarnation_id)
            .bind(&r.rack)
            .execute(&mut **tx)
            .await?;
            sqlx::query("DELETE FROM broker_endpoints WHERE broker_id = ?")
                .bind(r.broker_id)
                .execute(&mut **tx)
                .await?;
            for (i, e) in r.endpoints.iter().enumerate() {
                sqlx::query("INSERT INTO broker_endpoints (broker_id, position, name, host, port) VALUES (?, ?, ?, ?, ?)")
                    .bind(r.broker_id)
                    .bind(i as i64)
                    .bind(&e.name)
                    .bind(&e.host)
                    .bind(i64::from(e.port))
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Record::BrokerFenced(r) => set_fenced(tx, r.broker_id, r.broker_epoch, true).await?,
        Record::BrokerUnfenced(r) => set_fenced(tx, r.broker_id, r.broker_epoch, false).await?,
        Record::TopicCreated(r) => {
            sqlx::query("INSERT INTO topics (name, topic_id) VALUES (?, ?)")
                .bind(&r.name)
                .bind(r.topic_id.to_vec())
                .execute(&mut **tx)
                .await?;
        }
        Record::TopicDeleted(r) => {
            sqlx::query("DELETE FROM topics WHERE name = ? AND topic_id = ?")
                .bind(&r.name)
                .bind(r.topic_id.to_vec())
                .execute(&mut **tx)
                .await?;
            sqlx::query("DELETE FROM configs WHERE resource_type = 2 AND resource_name = ?")
                .bind(&r.name)
                .execute(&mut **tx)
                .await?;
        }
        Record::PartitionCreated(r) => insert_partitions(tx, &[r]).await?,
        Record::PartitionChanged(r) => {
            if let Some(a) = &r.assignment {
                sqlx::query(
                    "UPDATE partitions SET replicas = ?, adding_replicas = ?, removing_replicas = ? WHERE topic = ? AND partition = ?",
                )
                .bind(ids_to_text(&a.replicas))
                .bind(ids_to_text(&a.adding_replicas))
                .bind(ids_to_text(&a.removing_replicas))
                .bind(&r.topic)
                .bind(r.partition)
                .execute(&mut **tx)
                .await?;
            }
            update_partitions(tx, &[r]).await?;
        }
        Record::ProducerIdsAllocated(r) => {
            sqlx::query("UPDATE producer_ids SET next_producer_id = ? WHERE id = 1")
                .bind(r.next_producer_id)
                .execute(&mut **tx)
                .await?;
        }
        Record::CoordinatorRegistered(r) => {
            sqlx::query(
                "INSERT OR REPLACE INTO coordinators (coordinator_id, coordinator_epoch, incarnation_id, registration, fenced) VALUES (?, ?, ?, ?, 0)",
            )
            .bind(r.coordinator_id)
            .bind(r.coordinator_epoch)
            .bind(&r.incarnation_id)
            .bind(r.encode_to_vec())
            .execute(&mut **tx)
            .await?;
        }
        Record::CoordinatorFenced(r) => {
            sqlx::query(
                "UPDATE coordinators SET fenced = 1 WHERE coordinator_id = ? AND coordinator_epoch = ?",
            )
            .bind(r.coordinator_id)
            .bind(r.coordinator_epoch)
            .execute(&mut **tx)
            .await?;
        }
        Record::OffsetsPartitionsAssigned(r) => {
            for o in &r.owners {
                sqlx::query(
                    "INSERT OR REPLACE INTO offsets_owners (partition, coordinator_id, coordinator_epoch, owner_epoch, producer_id) VALUES (?, ?, ?, ?, ?)",
                )
                .bind(o.partition)
                .bind(o.coordinator_id)
                .bind(o.coordinator_epoch)
                .bind(o.owner_epoch)
                .bind(o.producer_id)
                .execute(&mut **tx)
                .await?;
            }
            sqlx::query("UPDATE producer_ids SET next_producer_id = ? WHERE id = 1")
                .bind(r.next_producer_id)
                .execute(&mut **tx)
                .await?;
        }
        Record::ConfigSet(r) => {
            let resource = r.resource.clone().unwrap_or_default();
            sqlx::query(
                "INSERT OR REPLACE INTO configs (resource_type, resource_name, key, value) VALUES (?, ?, ?, ?)",
            )
            .bind(resource.r#type)
            .bind(&resource.name)
            .bind(&r.key)
            .bind(&r.value)
            .execute(&mut **tx)
            .await?;
        }
        Record::UserScramCredentialSet(r) => {
            sqlx::query(
                "INSERT OR REPLACE INTO scram_credentials (user, mechanism, iterations, salt, stored_key, server_key) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&r.user)
            .bind(r.mechanism)
            .bind(r.iterations)
            .bind(r.salt.to_vec())
            .bind(r.stored_key.to_vec())
            .bind(r.server_key.to_vec())
            .execute(&mut **tx)
            .await?;
        }
        Record::AclCreated(r) => {
            let sql = "INSERT OR IGNORE INTO acls (resource_type, name, pattern_type, principal, host, operation, permission) VALUES (?, ?, ?, ?, ?, ?, ?)";
            acl_statement(sql, r.acl.as_ref())
                .execute(&mut **tx)
                .await?;
        }
        Record::AclRemoved(r) => {
            let sql = "DELETE FROM acls WHERE resource_type = ? AND name = ? AND pattern_type = ? AND principal = ? AND host = ? AND operation = ? AND permission = ?";
            acl_statement(sql, r.acl.as_ref())
                .execute(&mut **tx)
                .await?;
        }
        Record::ClientQuotaSet(r) => {
            let sql = "INSERT OR REPLACE INTO client_quotas (user_part, user, client_id_part, client_id, key, value) VALUES (?, ?, ?, ?, ?, ?)";
            quota_statement(sql, &r.entity, &r.key)?
                .bind(r.value)
                .execute(&mut **tx)
                .await?;
        }
        Record::ClientQuotaRemoved(r) => {
            let sql = "DELETE FROM client_quotas WHERE user_part = ? AND user = ? AND client_id_part = ? AND client_id = ? AND key = ?";
            quota_statement(sql, &r.entity, &r.key)?
                .execute(&mut **tx)
                .await?;
        }
        Record::UserScramCredentialRemoved(r) => {
            sqlx::query("DELETE FROM scram_credentials WHERE user = ? AND mechanism = ?")
                .bind(&r.user)
                .bind(r.mechanism)
                .execute(&mut **tx)
                .await?;
        }
        Record::ConfigRemoved(r) => {
            let resource = r.resource.clone().unwrap_or_default();
            sqlx::query(
                "DELETE FROM configs WHERE resource_type = ? AND resource_name = ? AND key = ?",
            )
            .bind(resource.r#type)
            .bind(&resource.name)
            .bind(&r.key)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

async fn set_fenced(
    tx: &mut Transaction<'_, Sqlite>,
    id: i32,
    epoch: i64,
    fenced: bool,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE brokers SET fenced = ? WHERE broker_id = ? AND broker_epoch = ?")
        .bind(i64::from(fenced))
        .bind(id)
        .bind(epoch)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `sql` with an ACL binding's seven columns bound in table order.
fn acl_statement(
    sql: &'static str,
    acl: Option<&AclEntry>,
) -> sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments> {
    let a = acl.cloned().unwrap_or_default();
    sqlx::query(sql)
        .bind(a.resource_type)
        .bind(a.name)
        .bind(a.pattern_type)
        .bind(a.principal)
        .bind(a.host)
        .bind(a.operation)
        .bind(a.permission)
}

/// `sql` with a quota entity's four columns and its key bound in table order.
fn quota_statement(
    sql: &'static str,
    parts: &[runnel_proto::metadata::v1::QuotaEntityPart],
    key: &str,
) -> Result<sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments>, StoreError> {
    let entity = quota_entity(parts).map_err(StoreError::Corrupt)?;
    let columns = |p: Option<&EntityName>| match p {
        None => (0_i64, String::new()),
        Some(EntityName::Default) => (1, String::new()),
        Some(EntityName::Named(n)) => (2, n.clone()),
    };
    let (user_part, user) = columns(entity.user.as_ref());
    let (client_id_part, client_id) = columns(entity.client_id.as_ref());
    Ok(sqlx::query(sql)
        .bind(user_part)
        .bind(user)
        .bind(client_id_part)
        .bind(client_id)
        .bind(key.to_owned()))
}

/// One part of a quota entity from its two columns.
fn entity_part(part: i64, name: String) -> Result<Option<EntityName>, StoreError> {
    match part {
        0 => Ok(None),
        1 => Ok(Some(EntityName::Default)),
        2 => Ok(Some(EntityName::Named(name))),
        other => Err(StoreError::Corrupt(format!(
            "client quota entity part {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_proto::metadata::v1::{ConfigResource, ConfigSet, ReplicaAssignment, TopicCreated};

    fn rec(r: Record) -> MetadataRecord {
        MetadataRecord { record: Some(r) }
    }

    fn changed(partition: i32, leader: i32, epoch: i32) -> Record {
        Record::PartitionChanged(PartitionChanged {
            topic: "wide".into(),
            topic_id: vec![7u8; 16].into(),
            partition,
            leader,
            isr: if leader < 0 { vec![] } else { vec![leader] },
            leader_epoch: epoch,
            partition_epoch: epoch,
            assignment: None,
        })
    }

    /// Runs of partition records go to SQLite many rows per statement; the
    /// tables must still be the log folded in order, record by record.
    #[tokio::test]
    async fn runs_of_partition_records_store_what_folding_them_one_by_one_gives() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("metadata.db")).await.unwrap();
        let id = vec![7u8; 16];
        let n = 3 * ROWS_PER_STATEMENT as i32 + 7;
        let mut records = vec![rec(Record::TopicCreated(TopicCreated {
            name: "wide".into(),
            topic_id: id.clone().into(),
        }))];
        records.extend((0..n).map(|p| {
            rec(Record::PartitionCreated(PartitionCreated {
                topic: "wide".into(),
                topic_id: id.clone().into(),
                partition: p,
                replicas: vec![1, 2],
                isr: vec![1, 2],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            }))
        }));
        // A fencing: every partition changes, then partition 3 again (a
        // second run) and 5, whose last change skips the runs.
        records.extend((0..n).map(|p| rec(changed(p, 2, 1))));
        records.push(rec(changed(3, -1, 2)));
        records.push(rec(changed(5, 1, 2)));
        records.push(rec(Record::ConfigSet(ConfigSet {
            resource: Some(ConfigResource {
                r#type: 2,
                name: "wide".into(),
            }),
            key: "retention.ms".into(),
            value: "1000".into(),
        })));
        records.push(rec(Record::PartitionChanged(PartitionChanged {
            assignment: Some(ReplicaAssignment {
                replicas: vec![1, 2, 3],
                adding_replicas: vec![3],
                removing_replicas: vec![],
            }),
            ..match changed(5, 2, 3) {
                Record::PartitionChanged(c) => c,
                _ => unreachable!(),
            }
        })));
        let mut expected = MetadataImage::default();
        let mut events = Vec::new();
        for (offset, record) in records.into_iter().enumerate() {
            expected.apply(offset as i64, &record).unwrap();
            events.push(MetadataEvent {
                offset: offset as i64,
                timestamp_ms: 1,
                record: Some(record),
            });
        }
        // Two transactions, the second starting mid-run.
        let (first, second) = events.split_at(n as usize + 10);
        store.apply(first, None, ("a", "m")).await.unwrap();
        store.apply(second, None, ("b", "m")).await.unwrap();
        let loaded = store.load_image().await.unwrap();
        let (got, want) = (&loaded.topics["wide"], &expected.topics["wide"]);
        let wrong: Vec<_> = want
            .partitions
            .iter()
            .filter(|(p, s)| got.partitions.get(p) != Some(s))
            .map(|(p, s)| (p, s, got.partitions.get(p)))
            .collect();
        assert!(wrong.is_empty(), "(partition, folded, stored): {wrong:?}");
        assert_eq!(loaded.topics, expected.topics);
        assert_eq!(loaded.next_offset, expected.next_offset);
        let log = store.read_log(0, i64::MAX).await.unwrap();
        assert_eq!(log, events, "the log holds every record once, in order");
        store.close().await;
    }
}
