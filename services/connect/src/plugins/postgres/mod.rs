//! PostgreSQL connectors, with the config keys of Confluent's JDBC
//! connectors that Kafka Connect users know.
//!
//! [`PostgresSink`] (in `sink`) writes records to a table; [`PostgresSource`]
//! (in `source`) polls tables and produces their new rows. What both share
//! lives here: the connection keys and pool, identifier quoting, which
//! errors are about the connection, and the mapping between Connect and
//! PostgreSQL types in both directions.

use std::time::Duration;

use serde_json::{Value as Json, json};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::TaskError;
use crate::configdef::{self, Check, Key, Props, Type};

mod sink;
mod source;

pub use sink::PostgresSink;
pub use source::PostgresSource;

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
