//! PostgreSQL connectors, with the config keys of Confluent's JDBC
//! connectors that Kafka Connect users know.
//!
//! `PostgresSink` writes records (JSON objects, with or without a Connect
//! schema) to a table: insert, or upsert by primary key, one transaction
//! per batch, optionally creating the table from the first records and
//! deleting rows on tombstones. Values go through
//! `jsonb_populate_recordset`, so PostgreSQL itself converts each field to
//! its column's type.
//!
//! `PostgresSource` polls tables in incrementing-column or timestamp mode,
//! one task per table (at most `tasks.max`), and produces each new row as
//! a Connect struct to `<topic.prefix><table>`. Its offset is the last
//! incrementing value or timestamp read, so a restart goes on after it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value as Json, json};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Row};

use super::{
    Failed, Kind, Plugin, SinkRecord, SinkTask, SourceContext, SourceRecord, SourceTask, TaskError,
};
use crate::configdef::{self, Check, Key, Props, Type};
use crate::data::{Data, Value};

/// `PostgresSink`.
pub struct PostgresSink;

/// `PostgresSource`.
pub struct PostgresSource;

const CONNECTION: &[Key] = &[
    Key::required(
        "connection.url",
        Type::String,
        "postgres://host:port/database (jdbc:postgresql:// accepted).",
    )
    .group("Connection"),
    Key::optional(
        "connection.user",
        Type::String,
        "",
        "User name (or in the URL).",
    )
    .group("Connection"),
    Key::optional(
        "connection.password",
        Type::Password,
        "",
        "Password (or in the URL).",
    )
    .group("Connection"),
    Key::optional(
        "connection.attempts",
        Type::Int,
        "3",
        "Tries to connect before the task fails.",
    )
    .check(Check::AtLeast(1))
    .group("Connection"),
    Key::optional(
        "connection.backoff.ms",
        Type::Long,
        "10000",
        "Wait between connection attempts.",
    )
    .check(Check::AtLeast(0))
    .group("Connection"),
];

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

const SOURCE_KEYS: &[Key] = &[
    CONNECTION[0],
    CONNECTION[1],
    CONNECTION[2],
    CONNECTION[3],
    CONNECTION[4],
    Key::required("mode", Type::String, "incrementing or timestamp.")
        .check(Check::OneOf(&["incrementing", "timestamp"]))
        .group("Mode"),
    Key::optional("incrementing.column.name", Type::String, "", "A strictly increasing column (incrementing mode).").group("Mode"),
    Key::optional("timestamp.column.name", Type::String, "", "A column set to the time of each change (timestamp mode).").group("Mode"),
    Key::required("table.whitelist", Type::List, "Tables to copy, each by its own task (at most tasks.max tasks).").group("Database"),
    Key::required("topic.prefix", Type::String, "Each table's rows go to <topic.prefix><table>.").group("Connector"),
    Key::optional("poll.interval.ms", Type::Int, "5000", "How often each table is polled for new rows.")
        .check(Check::AtLeast(1))
        .group("Connector"),
    Key::optional("batch.max.rows", Type::Int, "100", "Most rows per poll.")
        .check(Check::AtLeast(1))
        .group("Connector"),
    Key::optional("timestamp.delay.interval.ms", Type::Long, "0", "Rows are read only once their timestamp is this much in the past (lets slow transactions commit).")
        .check(Check::AtLeast(0))
        .group("Connector"),
];

/// Quotes an SQL identifier (a table may be `schema.table`). Every name in
/// the SQL built here goes through it and every value is a bind parameter,
/// which is why the statements are marked `AssertSqlSafe`.
fn ident(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

fn connect_options(props: &Props) -> Result<PgConnectOptions, TaskError> {
    let url = configdef::get(props, "connection.url", "");
    let url = url.strip_prefix("jdbc:").unwrap_or(url);
    let mut options: PgConnectOptions = url
        .parse()
        .map_err(|e| TaskError::Fatal(format!("connection.url {url}: {e}")))?;
    let user = configdef::get(props, "connection.user", "");
    if !user.is_empty() {
        options = options.username(user);
    }
    let password = configdef::get(props, "connection.password", "");
    if !password.is_empty() {
        options = options.password(password);
    }
    Ok(options.disable_statement_logging())
}

fn url_problems(props: &Props) -> Vec<(String, String)> {
    let url = configdef::get(props, "connection.url", "");
    let bare = url.strip_prefix("jdbc:").unwrap_or(url);
    if !(url.is_empty() || bare.starts_with("postgres://") || bare.starts_with("postgresql://")) {
        return vec![(
            "connection.url".into(),
            format!("{url} is not a postgres:// or postgresql:// URL"),
        )];
    }
    if !url.is_empty() && bare.parse::<PgConnectOptions>().is_err() {
        return vec![(
            "connection.url".into(),
            format!("{url} is not a valid PostgreSQL URL"),
        )];
    }
    Vec::new()
}

/// Opens a pool, trying `connection.attempts` times.
async fn open_pool(props: &Props) -> Result<PgPool, TaskError> {
    let options = connect_options(props)?;
    let attempts = configdef::get_i64(props, "connection.attempts", 3).max(1);
    let backoff = Duration::from_millis(
        configdef::get_i64(props, "connection.backoff.ms", 10_000).max(0) as u64,
    );
    let mut last = String::new();
    for attempt in 1..=attempts {
        match PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
        {
            Ok(pool) => return Ok(pool),
            Err(e) => {
                last = e.to_string();
                tracing::warn!(attempt, error = %e, "cannot connect to PostgreSQL");
                if attempt < attempts {
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }
    Err(TaskError::Fatal(format!(
        "cannot connect to PostgreSQL at {} after {attempts} attempt(s): {last}",
        configdef::get(props, "connection.url", "")
    )))
}

/// A task's connection pool, opened on first use and again after a
/// connection error.
struct Db {
    props: Props,
    pool: Option<PgPool>,
}

impl Db {
    fn new(props: &Props) -> Db {
        Db {
            props: props.clone(),
            pool: None,
        }
    }

    /// The pool, opened with `connection.attempts` tries if need be.
    async fn get(&mut self) -> Result<PgPool, TaskError> {
        if let Some(p) = &self.pool {
            return Ok(p.clone());
        }
        let pool = open_pool(&self.props).await?;
        self.pool = Some(pool.clone());
        Ok(pool)
    }

    /// Forgets the pool (after a connection error).
    fn reset(&mut self) {
        self.pool = None;
    }

    async fn close(&mut self) {
        if let Some(p) = self.pool.take() {
            p.close().await;
        }
    }
}

/// Whether a database error is about the connection rather than the data.
fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        // Class 08: connection exception; 57P: operator intervention (shutdown).
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

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

/// The SQL type for a Connect type (or, without a schema, a JSON value).
fn sql_type(connect: Option<&str>, sample: &Json) -> &'static str {
    match connect {
        Some("int8" | "int16") => "SMALLINT",
        Some("int32") => "INTEGER",
        Some("int64") => "BIGINT",
        Some("float32") => "REAL",
        Some("float64") => "DOUBLE PRECISION",
        Some("boolean") => "BOOLEAN",
        Some("string") => "TEXT",
        Some("bytes") => "BYTEA",
        Some("org.apache.kafka.connect.data.Timestamp") => "TIMESTAMPTZ",
        Some("org.apache.kafka.connect.data.Date") => "DATE",
        Some(_) => "JSONB",
        None => match sample {
            Json::Bool(_) => "BOOLEAN",
            Json::Number(n) if n.is_i64() || n.is_u64() => "BIGINT",
            Json::Number(_) => "DOUBLE PRECISION",
            Json::String(_) => "TEXT",
            _ => "JSONB",
        },
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

impl Plugin for PostgresSource {
    fn class(&self) -> &'static str {
        "io.runnel.connect.postgres.PostgresSourceConnector"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["PostgresSource"]
    }
    fn kind(&self) -> Kind {
        Kind::Source
    }
    fn keys(&self) -> &'static [Key] {
        SOURCE_KEYS
    }
    fn validate(&self, props: &Props) -> Vec<(String, String)> {
        let mut out = url_problems(props);
        match configdef::get(props, "mode", "") {
            "incrementing" if configdef::get(props, "incrementing.column.name", "").is_empty() => {
                out.push((
                    "incrementing.column.name".into(),
                    "mode=incrementing needs incrementing.column.name".into(),
                ));
            }
            "timestamp" if configdef::get(props, "timestamp.column.name", "").is_empty() => {
                out.push((
                    "timestamp.column.name".into(),
                    "mode=timestamp needs timestamp.column.name".into(),
                ));
            }
            _ => {}
        }
        let prefix = configdef::get(props, "topic.prefix", "");
        for t in configdef::list(props, "table.whitelist") {
            if let Err(e) = runnel_common::topics::validate_topic_name(&format!("{prefix}{t}")) {
                out.push(("topic.prefix".into(), e.to_string()));
            }
        }
        out
    }
    fn task_configs(&self, props: &Props, max_tasks: usize) -> Vec<Props> {
        let tables = configdef::list(props, "table.whitelist");
        let n = tables.len().min(max_tasks.max(1));
        (0..n)
            .map(|i| {
                let mine: Vec<String> = tables.iter().skip(i).step_by(n).cloned().collect();
                let mut p = props.clone();
                p.insert("tables".into(), mine.join(","));
                p
            })
            .collect()
    }
    fn source_task(&self, props: &Props) -> Result<Box<dyn SourceTask>, TaskError> {
        let timestamp = configdef::get(props, "mode", "") == "timestamp";
        Ok(Box::new(PgSourceTask {
            db: Db::new(props),
            tables: configdef::list(props, "tables")
                .into_iter()
                .map(|name| TableCursor {
                    name,
                    columns: None,
                    offset: None,
                    next_poll: tokio::time::Instant::now(),
                })
                .collect(),
            timestamp,
            column: configdef::get(
                props,
                if timestamp {
                    "timestamp.column.name"
                } else {
                    "incrementing.column.name"
                },
                "",
            )
            .to_owned(),
            prefix: configdef::get(props, "topic.prefix", "").to_owned(),
            poll_interval: Duration::from_millis(
                configdef::get_i64(props, "poll.interval.ms", 5000).max(1) as u64,
            ),
            batch: configdef::get_i64(props, "batch.max.rows", 100).max(1),
            delay_ms: configdef::get_i64(props, "timestamp.delay.interval.ms", 0).max(0),
        }))
    }
}

struct TableCursor {
    name: String,
    /// Select expressions and the Connect schema fields, once looked up.
    columns: Option<(Vec<String>, Vec<Json>)>,
    /// The last incrementing value (or timestamp in µs) read.
    offset: Option<i64>,
    next_poll: tokio::time::Instant,
}

struct PgSourceTask {
    db: Db,
    tables: Vec<TableCursor>,
    timestamp: bool,
    column: String,
    prefix: String,
    poll_interval: Duration,
    batch: i64,
    delay_ms: i64,
}

/// A column's select expression and Connect schema, from its PostgreSQL type.
fn column_mapping(name: &str, pg_type: &str, nullable: bool) -> (String, Json) {
    let c = ident(name);
    let (expr, ty, logical) = match pg_type {
        "smallint" => (c.clone(), "int16", None),
        "integer" => (c.clone(), "int32", None),
        "bigint" => (c.clone(), "int64", None),
        "real" => (c.clone(), "float32", None),
        "double precision" => (c.clone(), "float64", None),
        "numeric" => (format!("{c}::float8"), "float64", None),
        "boolean" => (c.clone(), "boolean", None),
        "bytea" => (format!("encode({c}, 'base64')"), "bytes", None),
        "date" => (
            format!("({c} - DATE '1970-01-01')"),
            "int32",
            Some("org.apache.kafka.connect.data.Date"),
        ),
        "timestamp with time zone" | "timestamp without time zone" => (
            format!("(extract(epoch from {c}) * 1000)::bigint"),
            "int64",
            Some("org.apache.kafka.connect.data.Timestamp"),
        ),
        _ => (format!("{c}::text"), "string", None),
    };
    let mut field = json!({"field": name, "type": ty, "optional": nullable});
    if let Some(l) = logical {
        field["name"] = json!(l);
        field["version"] = json!(1);
    }
    (format!("'{}', {expr}", name.replace('\'', "''")), field)
}

impl PgSourceTask {
    async fn poll_table(
        &self,
        pool: &PgPool,
        t: &mut TableCursor,
    ) -> Result<Vec<SourceRecord>, sqlx::Error> {
        if t.columns.is_none() {
            let (schema, table) = match t.name.split_once('.') {
                Some((s, n)) => (Some(s.to_owned()), n.to_owned()),
                None => (None, t.name.clone()),
            };
            let rows = sqlx::query(
                "SELECT column_name::text, data_type::text, is_nullable = 'YES' FROM information_schema.columns \
                 WHERE table_name = $1 AND table_schema = COALESCE($2, current_schema()) ORDER BY ordinal_position",
            )
            .bind(&table)
            .bind(&schema)
            .fetch_all(pool)
            .await?;
            if rows.is_empty() {
                return Err(sqlx::Error::Protocol(format!(
                    "table {} does not exist",
                    t.name
                )));
            }
            let mut exprs = Vec::new();
            let mut fields = Vec::new();
            for r in &rows {
                let (e, f) = column_mapping(
                    &r.try_get::<String, _>(0)?,
                    &r.try_get::<String, _>(1)?,
                    r.try_get::<bool, _>(2)?,
                );
                exprs.push(e);
                fields.push(f);
            }
            t.columns = Some((exprs, fields));
        }
        let Some((exprs, fields)) = &t.columns else {
            return Ok(Vec::new());
        };
        let col = ident(&self.column);
        let offset_expr = if self.timestamp {
            format!("(extract(epoch from {col}) * 1000000)::bigint")
        } else {
            format!("{col}::bigint")
        };
        let mut conditions = vec![format!("{offset_expr} > $1")];
        if self.timestamp {
            conditions.push(format!(
                "{col} < now() - ($2::bigint * interval '1 millisecond')"
            ));
        } else {
            conditions.push("$2::bigint >= 0".into());
        }
        let sql = format!(
            "SELECT json_build_object({})::text, {offset_expr} FROM {} WHERE {} ORDER BY {col} LIMIT $3",
            exprs.join(", "),
            ident(&t.name),
            conditions.join(" AND ")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(t.offset.unwrap_or(i64::MIN))
            .bind(self.delay_ms)
            .bind(self.batch)
            .fetch_all(pool)
            .await?;
        let mut read: Vec<(String, i64)> = Vec::with_capacity(rows.len());
        for r in &rows {
            read.push((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?));
        }
        // A full batch may end inside a run of equal timestamps: leave that
        // run for the next poll (unless it is the whole batch), so no row
        // sharing the offset is skipped.
        if self.timestamp
            && read.len() as i64 == self.batch
            && let Some(last) = read.last().map(|r| r.1)
            && read.iter().any(|r| r.1 != last)
        {
            read.retain(|r| r.1 != last);
        }
        let schema = json!({"type": "struct", "name": t.name, "optional": false, "fields": fields});
        let topic = format!(
            "{}{}",
            self.prefix,
            t.name.rsplit('.').next().unwrap_or(&t.name)
        );
        let key = if self.timestamp {
            "timestamp_us"
        } else {
            "incrementing"
        };
        let mut out = Vec::with_capacity(read.len());
        for (doc, off) in read {
            let payload: Json =
                serde_json::from_str(&doc).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            t.offset = Some(off);
            out.push(SourceRecord {
                source_partition: json!({"table": t.name}),
                source_offset: json!({ key: off }),
                topic: topic.clone(),
                partition: None,
                key: Data::null(),
                value: Data {
                    schema: Some(schema.clone()),
                    value: Value::Json(payload),
                },
                timestamp: None,
            });
        }
        Ok(out)
    }
}

impl SourceTask for PgSourceTask {
    fn start(&mut self, ctx: SourceContext) -> BoxFuture<'_, Result<(), TaskError>> {
        async move {
            let key = if self.timestamp {
                "timestamp_us"
            } else {
                "incrementing"
            };
            for t in &mut self.tables {
                t.offset = ctx
                    .offset(&json!({"table": t.name}))
                    .and_then(|o| o.get(key))
                    .and_then(Json::as_i64);
            }
            self.db.get().await.map(|_| ())
        }
        .boxed()
    }

    fn poll(&mut self) -> BoxFuture<'_, Result<Vec<SourceRecord>, TaskError>> {
        async move {
            let now = tokio::time::Instant::now();
            let Some(due) = self.tables.iter().map(|t| t.next_poll).min() else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Ok(Vec::new());
            };
            if due > now {
                tokio::time::sleep_until(due.min(now + Duration::from_millis(500))).await;
                return Ok(Vec::new());
            }
            let pool = self.db.get().await?;
            let mut out = Vec::new();
            let mut tables = std::mem::take(&mut self.tables);
            let mut result = Ok(());
            for t in tables.iter_mut().filter(|t| t.next_poll <= now) {
                match self.poll_table(&pool, t).await {
                    Ok(records) => {
                        // A full batch means more is waiting: poll again at once.
                        let full = records.len() as i64 >= self.batch;
                        out.extend(records);
                        t.next_poll = if full { now } else { now + self.poll_interval };
                    }
                    Err(e) if is_connection_error(&e) => {
                        self.db.reset();
                        result = Err(TaskError::Retriable(format!("PostgreSQL unreachable: {e}")));
                        break;
                    }
                    Err(e) => {
                        result = Err(TaskError::Fatal(format!("polling {}: {e}", t.name)));
                        break;
                    }
                }
            }
            self.tables = tables;
            result.map(|()| out)
        }
        .boxed()
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        async move { self.db.close().await }.boxed()
    }
}
