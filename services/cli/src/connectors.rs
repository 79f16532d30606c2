//! `runnel connectors ...`: connectors on a connect worker, through its
//! REST API (Kafka Connect's), as `curl` against Kafka Connect would.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use runnel_common::http::HttpClient;
use serde_json::{Value, json};

use crate::outln;

/// `runnel connectors` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A connect worker's REST URL.
    #[arg(
        long,
        global = true,
        env = "RUNNEL_CONNECT_URL",
        default_value = "http://127.0.0.1:8083"
    )]
    connect_url: String,
    #[command(subcommand)]
    command: Command,
}

/// `runnel connectors` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List connectors with their type, state and tasks.
    List,
    /// Create a connector from a config file (JSON or TOML, as in the
    /// worker's connectors directory).
    Create {
        /// The file.
        file: PathBuf,
    },
    /// Replace a connector's config from a file (creating it if needed).
    Update {
        /// The file.
        file: PathBuf,
    },
    /// Show a connector's config.
    Config {
        /// Connector name.
        name: String,
    },
    /// Show a connector's state and its tasks' (worker, error trace).
    Status {
        /// Connector name.
        name: String,
    },
    /// Pause a connector: its tasks stop moving data.
    Pause {
        /// Connector name.
        name: String,
    },
    /// Resume a paused or stopped connector.
    Resume {
        /// Connector name.
        name: String,
    },
    /// Stop a connector: its tasks shut down; resume starts them again.
    Stop {
        /// Connector name.
        name: String,
    },
    /// Restart a connector and its tasks (with --only-failed: just what has FAILED).
    Restart {
        /// Connector name.
        name: String,
        /// Restart only the connector and tasks that have FAILED.
        #[arg(long)]
        only_failed: bool,
    },
    /// Delete a connector.
    Delete {
        /// Connector name.
        name: String,
    },
    /// List the connector classes the worker has.
    Plugins,
}

struct Rest {
    base: String,
    client: HttpClient,
}

impl Rest {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let response = self
            .client
            .request(
                method,
                &url,
                body.map(|b| Bytes::from(b.to_string())),
                &[],
                Duration::from_secs(30),
            )
            .await
            .with_context(|| {
                format!(
                    "is a connect worker running at {}? (--connect-url)",
                    self.base
                )
            })?;
        let value: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if !(200..300).contains(&response.status) {
            let message = value["message"]
                .as_str()
                .map_or_else(|| response.text(), str::to_owned);
            // Errors are one line: Kafka's validation message lists one problem per line.
            let one_line: Vec<&str> = message
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            bail!("{}", one_line.join("; "));
        }
        Ok(value)
    }
}

/// Runs a `runnel connectors` command.
pub async fn run(client: HttpClient, args: Args) -> anyhow::Result<()> {
    let rest = Rest {
        base: args.connect_url,
        client,
    };
    match args.command {
        Command::List => {
            let all = rest
                .call("GET", "/connectors?expand=status&expand=info", None)
                .await?;
            outln!(
                "{:<32}  {:<6}  {:<10}  {:<5}  TASKS",
                "NAME",
                "TYPE",
                "STATE",
                "COUNT"
            )?;
            if let Some(map) = all.as_object() {
                for (name, v) in map {
                    let tasks: Vec<String> = v["status"]["tasks"]
                        .as_array()
                        .map(|ts| {
                            ts.iter()
                                .map(|t| {
                                    format!(
                                        "{}:{}",
                                        t["id"].as_i64().unwrap_or(-1),
                                        t["state"].as_str().unwrap_or("?")
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    outln!(
                        "{:<32}  {:<6}  {:<10}  {:<5}  {}",
                        name,
                        v["info"]["type"].as_str().unwrap_or("?"),
                        v["status"]["connector"]["state"].as_str().unwrap_or("?"),
                        tasks.len(),
                        tasks.join(" ")
                    )?;
                }
            }
        }
        Command::Create { file } => {
            let (name, props) = runnel_connect::files::parse(&file)?;
            rest.call(
                "POST",
                "/connectors",
                Some(json!({"name": name, "config": props})),
            )
            .await?;
            outln!("Created connector {name}")?;
        }
        Command::Update { file } => {
            let (name, props) = runnel_connect::files::parse(&file)?;
            rest.call(
                "PUT",
                &format!("/connectors/{name}/config"),
                Some(json!(props)),
            )
            .await?;
            outln!("Updated connector {name}")?;
        }
        Command::Config { name } => {
            let config = rest
                .call("GET", &format!("/connectors/{name}/config"), None)
                .await?;
            if let Some(map) = config.as_object() {
                for (k, v) in map {
                    outln!("{k}={}", v.as_str().unwrap_or_default())?;
                }
            }
        }
        Command::Status { name } => {
            let s = rest
                .call("GET", &format!("/connectors/{name}/status"), None)
                .await?;
            outln!(
                "Connector: {}  Type: {}  State: {}  Worker: {}",
                name,
                s["type"].as_str().unwrap_or("?"),
                s["connector"]["state"].as_str().unwrap_or("?"),
                s["connector"]["worker_id"].as_str().unwrap_or("")
            )?;
            outln!("{:>4}  {:<11}  {:<22}  TRACE", "TASK", "STATE", "WORKER")?;
            for t in s["tasks"].as_array().into_iter().flatten() {
                let trace = t["trace"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("");
                outln!(
                    "{:>4}  {:<11}  {:<22}  {}",
                    t["id"].as_i64().unwrap_or(-1),
                    t["state"].as_str().unwrap_or("?"),
                    t["worker_id"].as_str().unwrap_or(""),
                    trace
                )?;
            }
        }
        Command::Pause { name } => {
            rest.call("PUT", &format!("/connectors/{name}/pause"), None)
                .await?;
            outln!("Paused connector {name}")?;
        }
        Command::Resume { name } => {
            rest.call("PUT", &format!("/connectors/{name}/resume"), None)
                .await?;
            outln!("Resumed connector {name}")?;
        }
        Command::Stop { name } => {
            rest.call("PUT", &format!("/connectors/{name}/stop"), None)
                .await?;
            outln!("Stopped connector {name}")?;
        }
        Command::Restart { name, only_failed } => {
            rest.call(
                "POST",
                &format!("/connectors/{name}/restart?includeTasks=true&onlyFailed={only_failed}"),
                None,
            )
            .await?;
            outln!("Restarting connector {name}")?;
        }
        Command::Delete { name } => {
            rest.call("DELETE", &format!("/connectors/{name}"), None)
                .await?;
            outln!("Deleted connector {name}")?;
        }
        Command::Plugins => {
            let plugins = rest.call("GET", "/connector-plugins", None).await?;
            outln!("{:<60}  TYPE", "CLASS")?;
            for p in plugins.as_array().into_iter().flatten() {
                outln!(
                    "{:<60}  {}",
                    p["class"].as_str().unwrap_or("?"),
                    p["type"].as_str().unwrap_or("?")
                )?;
            }
        }
    }
    Ok(())
}
