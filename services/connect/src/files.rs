//! Connector config files: every `*.json` and `*.toml` file in
//! `connectors_dir` is a connector, created or updated in the config topic
//! when the file appears or changes and deleted when it goes away. A file
//! that cannot be read or validated is reported (file and key) and
//! skipped; the other connectors keep running.
//!
//! A file holds either Kafka Connect's REST body (`{"name": ..., "config":
//! {...}}`) or the config keys themselves; nested TOML tables and dotted
//! keys (`tasks.max = 2`) mean the same as quoted flat keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use runnel_common::shutdown::CancellationToken;
use serde_json::Value as Json;

use crate::configdef::{self, Props};
use crate::store::Store;

/// How often the directory is looked at.
const SCAN_EVERY: Duration = Duration::from_secs(1);

/// Why a connector file was skipped.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid JSON or TOML, or not a connector config.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// Keys have invalid values.
    #[error("{file}: invalid connector config: {}", problems.join("; "))]
    Invalid {
        /// The file.
        file: String,
        /// Every problem, `key: why`.
        problems: Vec<String>,
    },
}

/// Reads one connector file into its name and config, and validates it.
pub fn read(path: &Path) -> Result<(String, Props), FileError> {
    let (name, props) = parse(path)?;
    let infos = configdef::validate(&props, None);
    if infos.error_count > 0 {
        return Err(FileError::Invalid {
            file: path.display().to_string(),
            problems: infos.problems(),
        });
    }
    Ok((name, props))
}

/// Reads one connector file into its name and config, unvalidated (what
/// `runnel connectors create` sends for the worker to validate).
pub fn parse(path: &Path) -> Result<(String, Props), FileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        file: file.clone(),
        source,
    })?;
    let parse = |message: String| FileError::Parse {
        file: file.clone(),
        message,
    };
    let value: Json = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => {
            let t: toml::Table =
                toml::from_str(&text).map_err(|e| parse(format!("not valid TOML: {e}")))?;
            serde_json::to_value(t).map_err(|e| parse(e.to_string()))?
        }
        _ => serde_json::from_str(&text).map_err(|e| parse(format!("not valid JSON: {e}")))?,
    };
    let Json::Object(mut top) = value else {
        return Err(parse(
            "a connector file holds an object of config keys".into(),
        ));
    };
    let outer_name = match top.get("config") {
        Some(Json::Object(_)) => top.remove("name"),
        _ => None,
    };
    let body = match top.remove("config") {
        Some(Json::Object(c)) => c,
        Some(other) => {
            top.insert("config".into(), other);
            top
        }
        None => top,
    };
    let mut flat = serde_json::Map::new();
    flatten("", &Json::Object(body), &mut flat).map_err(parse)?;
    let mut props = configdef::props_from_json(&Json::Object(flat)).map_err(parse)?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("connector")
        .to_owned();
    let name = match (outer_name, props.get("name")) {
        (Some(Json::String(n)), _) => n,
        (_, Some(n)) => n.clone(),
        _ => stem,
    };
    props.insert("name".into(), name.clone());
    Ok((name, props))
}

fn flatten(
    prefix: &str,
    value: &Json,
    out: &mut serde_json::Map<String, Json>,
) -> Result<(), String> {
    match value {
        Json::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out)?;
            }
            Ok(())
        }
        Json::Array(items) => {
            // A TOML or JSON list is a comma-separated list key (topics = ["a", "b"]).
            let parts: Result<Vec<String>, String> = items
                .iter()
                .map(|i| match i {
                    Json::String(s) => Ok(s.clone()),
                    Json::Number(n) => Ok(n.to_string()),
                    _ => Err(format!(
                        "key {prefix}: list items must be strings or numbers"
                    )),
                })
                .collect();
            out.insert(prefix.to_owned(), Json::String(parts?.join(",")));
            Ok(())
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
            Ok(())
        }
    }
}

/// Watches `dir` until `shutdown`, keeping the config topic in line with its files.
pub async fn watch(dir: PathBuf, store: Arc<Store>, shutdown: CancellationToken) {
    let mut seen: BTreeMap<PathBuf, SystemTime> = BTreeMap::new();
    // Connector names created from files, by file.
    let mut owned: BTreeMap<PathBuf, String> = BTreeMap::new();
    loop {
        let mut present = BTreeMap::new();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let path = e.path();
                    let ext = path.extension().and_then(|x| x.to_str());
                    if !matches!(ext, Some("json" | "toml")) {
                        continue;
                    }
                    let modified = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    present.insert(path, modified);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list the connectors directory")
            }
        }
        for (path, modified) in &present {
            if seen.get(path) == Some(modified) {
                continue;
            }
            match read(path) {
                Ok((name, props)) => {
                    let current = store.current();
                    if current.connectors.get(&name).map(|e| &e.props) != Some(&props) {
                        match store.put_connector(&name, &props).await {
                            Ok(()) => {
                                tracing::info!(file = %path.display(), connector = %name, "connector config loaded from file")
                            }
                            Err(e) => {
                                tracing::warn!(file = %path.display(), error = %e, "cannot store the connector config; retrying");
                                continue;
                            }
                        }
                    }
                    owned.insert(path.clone(), name);
                }
                Err(e) => tracing::error!("connector file skipped: {e}"),
            }
            seen.insert(path.clone(), *modified);
        }
        let gone: Vec<PathBuf> = seen
            .keys()
            .filter(|p| !present.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            seen.remove(&path);
            if let Some(name) = owned.remove(&path)
                && !owned.values().any(|n| *n == name)
            {
                let tasks = store
                    .current()
                    .connectors
                    .get(&name)
                    .map_or(0, |e| crate::worker::task_configs(&e.props).len());
                match store.delete_connector(&name, tasks).await {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), connector = %name, "connector file removed; connector deleted")
                    }
                    Err(e) => {
                        tracing::warn!(connector = %name, error = %e, "cannot delete the connector of a removed file")
                    }
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SCAN_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_dotted_keys_and_lists_are_flat_config_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.toml");
        std::fs::write(
            &path,
            "connector.class = \"FileStreamSink\"\ntasks.max = 2\ntopics = [\"a\", \"b\"]\nfile = \"/tmp/x\"\n",
        )
        .unwrap();
        let (name, props) = read(&path).unwrap();
        assert_eq!(name, "out", "named after the file");
        assert_eq!(props["tasks.max"], "2");
        assert_eq!(props["topics"], "a,b");
    }

    #[test]
    fn json_rest_bodies_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(
            &path,
            r#"{"name": "lines", "config": {"connector.class": "FileStreamSource", "file": "/tmp/in", "topic": "t"}}"#,
        )
        .unwrap();
        let (name, props) = read(&path).unwrap();
        assert_eq!(name, "lines");
        assert_eq!(props["name"], "lines");
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "connector.class = \"FileStreamSource\"\nfile = \"/tmp/in\"\ntopic = \"t\"\ntasks.max = \"many\"\n").unwrap();
        let e = read(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("tasks.max"), "{e}");
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{\"name\": ").unwrap();
        let e = read(&broken).unwrap_err().to_string();
        assert!(
            e.contains("broken.json") && e.contains("not valid JSON"),
            "{e}"
        );
    }
}
