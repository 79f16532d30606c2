//! `PostgresSource`: polls tables in incrementing-column or timestamp mode,
//! one task per table (at most `tasks.max`), and produces each new row as
//! a Connect struct to `<topic.prefix><table>`. Its offset is the last
//! incrementing value or timestamp read, so a restart goes on after it.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value as Json, json};
use sqlx::Row;
use sqlx::postgres::PgPool;

use super::{CONNECTION, Db, column_mapping, ident, is_connection_error, url_problems};
use crate::configdef::{self, Check, Key, Props, Type};
use crate::data::{Data, Value};
use crate::plugins::{Kind, Plugin, SourceContext, SourceRecord, SourceTask, TaskError};

/// `PostgresSource`.
pub struct PostgresSource;

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
