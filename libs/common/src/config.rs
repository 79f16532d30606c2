//! Loading a service's config: a TOML file, then `RUNNEL_<SERVICE>_*`
//! environment variables over it (command-line flags go on top in `main`).
//!
//! An environment value is read as a TOML value when it parses as one
//! (`9092`, `true`, `["a", "b"]`, `"quoted"`), else as a string; quote a
//! string that looks like a number.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file or the merged config is not valid for this service.
    #[error("invalid config{}: {message}", path.as_deref().map(|p| format!(" in {p}")).unwrap_or_default())]
    Invalid {
        /// The file, when the problem is in it.
        path: Option<String>,
        /// What is wrong.
        message: String,
    },
}

/// Reads `file` (if any), applies `{env_prefix}KEY=value` variables as
/// `key = value`, and deserializes the result.
pub fn load<T: DeserializeOwned>(file: Option<&Path>, env_prefix: &str) -> Result<T, ConfigError> {
    load_with_env(file, env_prefix, std::env::vars())
}

/// [`load`] with command-line flags over the environment: `flags`
/// serializes to config keys (leave out, with `skip_serializing_if`, the
/// flags not given).
pub fn load_with_flags<T: DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    flags: &impl Serialize,
) -> Result<T, ConfigError> {
    let flags = toml::Table::try_from(flags).map_err(|e| ConfigError::Invalid {
        path: None,
        message: e.to_string(),
    })?;
    load_layers(file, env_prefix, std::env::vars(), flags)
}

/// [`load`] with an explicit environment (for tests).
pub fn load_with_env<T: DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    load_layers(file, env_prefix, env, toml::Table::new())
}

fn load_layers<T: DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
    flags: toml::Table,
) -> Result<T, ConfigError> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Invalid {
                path: Some(path.display().to_string()),
                message: e.to_string(),
            })?
        }
        None => toml::Table::new(),
    };
    for (name, value) in env {
        if let Some(key) = name.strip_prefix(env_prefix) {
            table.insert(key.to_ascii_lowercase(), env_value(&value));
        }
    }
    table.extend(flags);
    table
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid {
            path: file.map(|p| p.display().to_string()),
            message: e.to_string(),
        })
}

fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        port: u16,
        #[serde(default)]
        name: String,
        #[serde(default)]
        verbose: bool,
    }

    #[test]
    fn env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "port = 1\nname = \"a\"\n").unwrap();
        let env = [
            ("X_PORT".to_owned(), "9092".to_owned()),
            ("X_VERBOSE".to_owned(), "true".to_owned()),
            ("OTHER_PORT".to_owned(), "1".to_owned()),
        ];
        let c: Demo = load_with_env(Some(&path), "X_", env).unwrap();
        assert_eq!(
            c,
            Demo {
                port: 9092,
                name: "a".into(),
                verbose: true
            }
        );
    }

    #[test]
    fn flags_override_the_environment_and_flags_not_given_do_not() {
        #[derive(serde::Serialize)]
        struct Flags {
            #[serde(skip_serializing_if = "Option::is_none")]
            port: Option<u16>,
            #[serde(skip_serializing_if = "Option::is_none")]
            name: Option<String>,
        }
        let env = [
            ("X_PORT".to_owned(), "9092".to_owned()),
            ("X_NAME".to_owned(), "env".to_owned()),
        ];
        let flags = Flags {
            port: Some(9093),
            name: None,
        };
        let flags = toml::Table::try_from(&flags).unwrap();
        let c: Demo = load_layers(None, "X_", env, flags).unwrap();
        assert_eq!((c.port, c.name.as_str()), (9093, "env"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let err =
            load_with_env::<Demo>(None, "X_", [("X_PROT".to_owned(), "1".to_owned())]).unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
        let err = load_with_env::<Demo>(None, "X_", [("X_PORT".to_owned(), "high".to_owned())])
            .unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
    }
}
