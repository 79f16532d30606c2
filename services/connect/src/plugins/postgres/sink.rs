//! `PostgresSink`: writes records (JSON objects, with or without a Connect
//! schema) to a table: insert, or upsert by primary key, one transaction
//! per batch, optionally creating the table from the first records and
//! deleting rows on tombstones. Values go through
//! `jsonb_populate_recordset`, so PostgreSQL itself converts each field to
//! its column's type.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value as Json, json};
use sqlx::Row;
use sqlx::postgres::PgPool;

use super::{CONNECTION, Db, ident, is_connection_error, sql_type, url_problems};
use crate::configdef::{self, Check, Key, Props, Type};
use crate::data::{Data, Value};
use crate::plugins::{Failed, Kind, Plugin, SinkRecord, SinkTask, TaskError};

/// `PostgresSink`.
pub struct PostgresSink;

const SINK_KEYS: &[Key] = &[
    CONNECTION[0],
    CONNECTION[1],
    CONNECTION[2],
    CONNECTION[3],
    CONNECTION[4],
    Key::optional(
        "table.name.format",
        Type::String,
        "${topic}",
        "Destination table; ${topic} is the record's topic.",
    )
    .group("Writes"),
    Key::optional(
        "insert.mode",
        Type::String,
        "insert",
        "insert, or upsert (insert or update by primary key).",
    )
    .check(Check::OneOf(&["insert", "upsert"]))
    .group("Writes"),
    Key::optional(
        "pk.mode",
        Type::String,
        "none",
        "Where the primary key comes from: none, record_key or record_value.",
    )
    .check(Check::OneOf(&["none", "record_key", "record_value"]))
    .group("Writes"),
    Key::optional(
        "pk.fields",
        Type::List,
        "",
        "Primary key columns (record_key with a plain key: one name for it).",
    )
    .group("Writes"),
    Key::optional(
        "auto.create",
        Type::Boolean,
        "false",
        "Create the table from the first records when it does not exist.",
    )
    .group("DDL Support"),
    Key::optional(
        "delete.enabled",
        Type::Boolean,
        "false",
        "Delete the row of a tombstone's key (needs pk.mode=record_key).",
    )
    .group("Writes"),
    Key::optional(
        "batch.size",
        Type::Int,
        "3000",
        "Most records per statement.",
    )
    .check(Check::AtLeast(1))
    .group("Writes"),
    Key::optional(
        "max.retries",
        Type::Int,
        "10",
        "Retries of a batch after a connection error before the task fails.",
    )
    .check(Check::AtLeast(0))
    .group("Retries"),
    Key::optional(
        "retry.backoff.ms",
        Type::Int,
        "3000",
        "Wait between those retries.",
    )
    .check(Check::AtLeast(0))
    .group("Retries"),
];

impl Plugin for PostgresSink {
    fn class(&self) -> &'static str {
        "io.runnel.connect.postgres.PostgresSinkConnector"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["PostgresSink"]
    }
    fn kind(&self) -> Kind {
        Kind::Sink
    }
    fn keys(&self) -> &'static [Key] {
        SINK_KEYS
    }
    fn validate(&self, props: &Props) -> Vec<(String, String)> {
        let mut out = url_problems(props);
        let mode = configdef::get(props, "pk.mode", "none");
        let fields = configdef::list(props, "pk.fields");
        if configdef::get(props, "insert.mode", "insert").eq_ignore_ascii_case("upsert")
            && mode == "none"
        {
            out.push((
                "insert.mode".into(),
                "upsert needs a primary key: set pk.mode to record_key or record_value".into(),
            ));
        }
        if mode == "record_value" && fields.is_empty() {
            out.push((
                "pk.fields".into(),
                "pk.mode=record_value needs the key columns in pk.fields".into(),
            ));
        }
        if configdef::get_bool(props, "delete.enabled", false) && mode != "record_key" {
            out.push((
                "delete.enabled".into(),
                "delete.enabled needs pk.mode=record_key".into(),
            ));
        }
        out
    }
    fn task_configs(&self, props: &Props, max_tasks: usize) -> Vec<Props> {
        vec![props.clone(); max_tasks.max(1)]
    }
    fn sink_task(&self, props: &Props) -> Result<Box<dyn SinkTask>, TaskError> {
        Ok(Box::new(PgSinkTask {
            db: Db::new(props),
            table_format: configdef::get(props, "table.name.format", "${topic}").to_owned(),
            upsert: configdef::get(props, "insert.mode", "insert").eq_ignore_ascii_case("upsert"),
            pk_mode: configdef::get(props, "pk.mode", "none").to_ascii_lowercase(),
            pk_fields: configdef::list(props, "pk.fields"),
            auto_create: configdef::get_bool(props, "auto.create", false),
            delete_enabled: configdef::get_bool(props, "delete.enabled", false),
            batch_size: configdef::get_i64(props, "batch.size", 3000).max(1) as usize,
            max_retries: configdef::get_i64(props, "max.retries", 10).max(0) as u32,
            retry_backoff: Duration::from_millis(
                configdef::get_i64(props, "retry.backoff.ms", 3000).max(0) as u64,
            ),
            tables: HashMap::new(),
        }))
    }
}

/// A table the sink has seen: its columns and primary key.
#[derive(Debug, Clone)]
struct TableInfo {
    columns: Vec<String>,
    key: Vec<String>,
}

struct PgSinkTask {
    db: Db,
    table_format: String,
    upsert: bool,
    pk_mode: String,
    pk_fields: Vec<String>,
    auto_create: bool,
    delete_enabled: bool,
    batch_size: usize,
    max_retries: u32,
    retry_backoff: Duration,
    tables: HashMap<String, TableInfo>,
}

/// One record made ready for a table: its row (or a delete of its key).
struct Prepared {
    index: usize,
    table: String,
    row: Map<String, Json>,
    delete: bool,
    /// Connect field types from the record's schema, for auto.create.
    types: BTreeMap<String, String>,
}

/// Why one record cannot be written.
type Refusal = (usize, String);

/// A struct's fields, and the Connect type of each field its schema names.
type Fields = (Map<String, Json>, BTreeMap<String, String>);

fn object_of(data: Data, what: &str) -> Result<Fields, String> {
    let mut types = BTreeMap::new();
    if let Some(fields) = data
        .schema
        .as_ref()
        .and_then(|s| s.get("fields"))
        .and_then(Json::as_array)
    {
        for f in fields {
            if let (Some(name), Some(ty)) = (
                f.get("field").and_then(Json::as_str),
                f.get("type").and_then(Json::as_str),
            ) {
                let logical = f.get("name").and_then(Json::as_str).unwrap_or("");
                types.insert(
                    name.to_owned(),
                    if logical.is_empty() {
                        ty.to_owned()
                    } else {
                        logical.to_owned()
                    },
                );
            }
        }
    }
    match data.value {
        Value::Json(Json::Object(m)) => Ok((m, types)),
        Value::Null => Err(format!("the record has no {what}")),
        other => Err(format!(
            "the record's {what} is not a struct or JSON object but {}",
            describe(&other)
        )),
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "a string",
        Value::Json(Json::Array(_)) => "an array",
        Value::Json(_) => "a plain value",
    }
}

impl PgSinkTask {
    fn table_for(&self, topic: &str) -> String {
        self.table_format.replace("${topic}", topic)
    }

    /// Turns a record into the row to write, or says why it cannot be.
    fn prepare(&self, index: usize, r: SinkRecord) -> Result<Prepared, String> {
        let table = self.table_for(&r.topic);
        let tombstone = r.value.value == Value::Null;
        let mut row = Map::new();
        let mut types = BTreeMap::new();
        if self.pk_mode == "record_key" {
            match &r.key.value {
                Value::Json(Json::Object(_)) => {
                    let (k, t) = object_of(r.key, "key")?;
                    for (name, v) in k {
                        if self.pk_fields.is_empty() || self.pk_fields.contains(&name) {
                            row.insert(name, v);
                        }
                    }
                    types.extend(t);
                }
                Value::Null => return Err("pk.mode=record_key but the record has no key".into()),
                plain => {
                    let name = self
                        .pk_fields
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "__connect_key".into());
                    types.extend(
                        r.key
                            .schema
                            .as_ref()
                            .and_then(|s| s.get("type"))
                            .and_then(Json::as_str)
                            .map(|t| (name.clone(), t.to_owned())),
                    );
                    row.insert(name, plain.to_json());
                }
            }
        }
        if tombstone {
            if self.delete_enabled {
                return Ok(Prepared {
                    index,
                    table,
                    row,
                    delete: true,
                    types,
                });
            }
            return Err("a tombstone (null value) and delete.enabled is false".into());
        }
        let (value, t) = object_of(r.value, "value")?;
        types.extend(t);
        for (k, v) in value {
            row.entry(k).or_insert(v);
        }
        if self.pk_mode == "record_value" {
            for f in &self.pk_fields {
                if row.get(f).is_none_or(Json::is_null) {
                    return Err(format!(
                        "the primary key field {f} is missing from the value"
                    ));
                }
            }
        }
        Ok(Prepared {
            index,
            table,
            row,
            delete: false,
            types,
        })
    }

    fn key_columns(&self, first: &Prepared) -> Vec<String> {
        match self.pk_mode.as_str() {
            "record_value" => self.pk_fields.clone(),
            "record_key" if self.pk_fields.is_empty() => {
                first.row.keys().take(1).cloned().collect()
            }
            "record_key" => self.pk_fields.clone(),
            _ => Vec::new(),
        }
    }

    /// Looks the table up (creating it with auto.create).
    async fn table(
        &mut self,
        pool: &PgPool,
        name: &str,
        sample: &Prepared,
    ) -> Result<TableInfo, sqlx::Error> {
        if let Some(t) = self.tables.get(name) {
            return Ok(t.clone());
        }
        let (schema, table) = match name.split_once('.') {
            Some((s, t)) => (Some(s.to_owned()), t.to_owned()),
            None => (None, name.to_owned()),
        };
        let lookup = || async {
            let rows = sqlx::query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_name = $1 AND table_schema = COALESCE($2, current_schema()) ORDER BY ordinal_position",
            )
            .bind(&table)
            .bind(&schema)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut columns = lookup().await?;
        let key = self.key_columns(sample);
        if columns.is_empty() && self.auto_create {
            let mut defs: Vec<String> = sample
                .row
                .iter()
                .map(|(k, v)| {
                    let ty = sql_type(sample.types.get(k).map(String::as_str), v);
                    let not_null = if key.contains(k) { " NOT NULL" } else { "" };
                    format!("{} {ty}{not_null}", ident(k))
                })
                .collect();
            if !key.is_empty() {
                defs.push(format!(
                    "PRIMARY KEY ({})",
                    key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ")
                ));
            }
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {} ({})",
                ident(name),
                defs.join(", ")
            );
            tracing::info!(table = name, %ddl, "creating the sink table (auto.create)");
            sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(pool).await?;
            columns = lookup().await?;
        }
        let info = TableInfo { columns, key };
        self.tables.insert(name.to_owned(), info.clone());
        Ok(info)
    }

    /// Writes rows of one table in one transaction.
    async fn write(
        &self,
        pool: &PgPool,
        table: &str,
        info: &TableInfo,
        rows: &[&Prepared],
    ) -> Result<(), sqlx::Error> {
        let mut tx = pool.begin().await?;
        self.write_in(&mut tx, table, info, rows).await?;
        tx.commit().await
    }

    async fn write_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        table: &str,
        info: &TableInfo,
        rows: &[&Prepared],
    ) -> Result<(), sqlx::Error> {
        let q = ident(table);
        let (deletes, upserts): (Vec<&&Prepared>, Vec<&&Prepared>) =
            rows.iter().partition(|p| p.delete);
        if !deletes.is_empty() && !info.key.is_empty() {
            let keys = rows_json(&deletes);
            let cols = info
                .key
                .iter()
                .map(|k| ident(k))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "DELETE FROM {q} WHERE ({cols}) IN (SELECT {cols} FROM jsonb_populate_recordset(NULL::{q}, $1::jsonb))"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(keys)
                .execute(&mut **tx)
                .await?;
        }
        if upserts.is_empty() {
            return Ok(());
        }
        // Only the columns the records carry, so absent ones keep their defaults.
        let mut present: Vec<&String> = info
            .columns
            .iter()
            .filter(|c| upserts.iter().any(|p| p.row.contains_key(*c)))
            .collect();
        present.dedup();
        let cols = present
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let data = rows_json(&upserts);
        let mut sql = format!(
            "INSERT INTO {q} ({cols}) SELECT {cols} FROM jsonb_populate_recordset(NULL::{q}, $1::jsonb)"
        );
        if self.upsert && !info.key.is_empty() {
            let key = info
                .key
                .iter()
                .map(|k| ident(k))
                .collect::<Vec<_>>()
                .join(", ");
            let updates: Vec<String> = present
                .iter()
                .filter(|c| !info.key.contains(c))
                .map(|c| format!("{0} = EXCLUDED.{0}", ident(c)))
                .collect();
            if updates.is_empty() {
                sql.push_str(&format!(" ON CONFLICT ({key}) DO NOTHING"));
            } else {
                sql.push_str(&format!(
                    " ON CONFLICT ({key}) DO UPDATE SET {}",
                    updates.join(", ")
                ));
            }
        }
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(data)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Writes a batch; a batch the data refuses is written record by
    /// record so that only the bad records are reported.
    async fn put_batch(
        &mut self,
        prepared: Vec<Prepared>,
        failed: &mut Vec<Refusal>,
    ) -> Result<(), TaskError> {
        let mut by_table: BTreeMap<String, Vec<Prepared>> = BTreeMap::new();
        for p in prepared {
            by_table.entry(p.table.clone()).or_default().push(p);
        }
        for (table, mut rows) in by_table {
            let mut attempt = 0;
            loop {
                let pool = self.db.get().await?;
                let result = async {
                    let Some(first) = rows.first() else {
                        return Ok(());
                    };
                    let info = self.table(&pool, &table, first).await?;
                    if info.columns.is_empty() {
                        return Err(sqlx::Error::Protocol(format!("table {table} does not exist (set auto.create=true to create it)")));
                    }
                    // Upserts by key: the last record of a key wins within a batch.
                    let mut chosen: Vec<&Prepared> = Vec::with_capacity(rows.len());
                    if info.key.is_empty() {
                        chosen.extend(rows.iter());
                    } else {
                        let mut last: HashMap<String, usize> = HashMap::new();
                        for (i, p) in rows.iter().enumerate() {
                            let k: Vec<&Json> = info.key.iter().map(|c| p.row.get(c).unwrap_or(&Json::Null)).collect();
                            last.insert(json!(k).to_string(), i);
                        }
                        let mut keep: Vec<usize> = last.into_values().collect();
                        keep.sort_unstable();
                        chosen.extend(keep.into_iter().filter_map(|i| rows.get(i)));
                    }
                    for chunk in chosen.chunks(self.batch_size) {
                        match self.write(&pool, &table, &info, chunk).await {
                            Ok(()) => {}
                            Err(e) if is_connection_error(&e) => return Err(e),
                            Err(e) => {
                                // The data was refused: find which records.
                                tracing::debug!(table, error = %e, "batch refused; writing it record by record");
                                for p in chunk {
                                    if let Err(e) = self.write(&pool, &table, &info, std::slice::from_ref(p)).await {
                                        if is_connection_error(&e) {
                                            return Err(e);
                                        }
                                        failed.push((p.index, format!("table {table}: {e}")));
                                    }
                                }
                            }
                        }
                    }
                    Ok(())
                }
                .await;
                match result {
                    Ok(()) => break,
                    Err(e) if is_connection_error(&e) && attempt < self.max_retries => {
                        attempt += 1;
                        tracing::warn!(table, attempt, error = %e, "PostgreSQL unreachable; retrying the batch");
                        self.db.reset();
                        failed.retain(|(i, _)| !rows.iter().any(|p| p.index == *i));
                        tokio::time::sleep(self.retry_backoff).await;
                    }
                    Err(e) if is_connection_error(&e) => {
                        return Err(TaskError::Fatal(format!(
                            "PostgreSQL unreachable after {} retries: {e}",
                            self.max_retries
                        )));
                    }
                    Err(e) => {
                        // The table itself is wrong (missing, cannot be created): every record fails.
                        for p in rows.drain(..) {
                            failed.push((p.index, e.to_string()));
                        }
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The rows as one JSON array, serialized without copying them.
fn rows_json(rows: &[&&Prepared]) -> String {
    let refs: Vec<&Map<String, Json>> = rows.iter().map(|p| &p.row).collect();
    serde_json::to_string(&refs).unwrap_or_else(|_| "[]".into())
}

impl SinkTask for PgSinkTask {
    fn start(&mut self) -> BoxFuture<'_, Result<(), TaskError>> {
        async move { self.db.get().await.map(|_| ()) }.boxed()
    }

    fn put(&mut self, records: Vec<SinkRecord>) -> BoxFuture<'_, Result<Vec<Failed>, TaskError>> {
        async move {
            let mut refused: Vec<Refusal> = Vec::new();
            let mut prepared = Vec::with_capacity(records.len());
            for (i, r) in records.into_iter().enumerate() {
                match self.prepare(i, r) {
                    Ok(p) => prepared.push(p),
                    Err(why) => refused.push((i, why)),
                }
            }
            self.put_batch(prepared, &mut refused).await?;
            refused.sort_by_key(|(i, _)| *i);
            Ok(refused
                .into_iter()
                .map(|(index, reason)| Failed { index, reason })
                .collect())
        }
        .boxed()
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<(), TaskError>> {
        // Every put commits its own transactions.
        async { Ok(()) }.boxed()
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        async move { self.db.close().await }.boxed()
    }
}
