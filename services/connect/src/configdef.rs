//! Connector config keys, their types and checks, and validation in the
//! shape of Kafka Connect's `PUT /connector-plugins/{plugin}/config/validate`
//! answer: every key with its value and errors, and the error count.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::data::Converter;
use crate::plugins::{self, Kind, Plugin};

/// A connector's config: Kafka Connect's string-to-string map.
pub type Props = BTreeMap<String, String>;

/// The type of a config value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// Text.
    String,
    /// A 32-bit integer.
    Int,
    /// A 64-bit integer.
    Long,
    /// `true` or `false`.
    Boolean,
    /// Comma-separated values.
    List,
    /// A class name.
    Class,
    /// A secret: shown as `[hidden]`.
    Password,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::String => "STRING",
            Type::Int => "INT",
            Type::Long => "LONG",
            Type::Boolean => "BOOLEAN",
            Type::List => "LIST",
            Type::Class => "CLASS",
            Type::Password => "PASSWORD",
        }
    }
}

/// An extra check on a value.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// Any value of the type.
    Any,
    /// One of these (case-insensitive).
    OneOf(&'static [&'static str]),
    /// A number at least this large.
    AtLeast(i64),
    /// Not empty.
    NonEmpty,
    /// A regular expression.
    Regex,
    /// A converter class.
    Converter,
}

/// One config key.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key.
    pub name: &'static str,
    /// Its type.
    pub ty: Type,
    /// Its default; `None`: the key is required.
    pub default: Option<&'static str>,
    /// Extra check.
    pub check: Check,
    /// Kafka's importance (HIGH, MEDIUM, LOW).
    pub importance: &'static str,
    /// One line on what it does.
    pub doc: &'static str,
    /// Group shown by validate.
    pub group: &'static str,
}

impl Key {
    /// A key of `ty` with a default.
    pub const fn optional(
        name: &'static str,
        ty: Type,
        default: &'static str,
        doc: &'static str,
    ) -> Key {
        Key {
            name,
            ty,
            default: Some(default),
            check: Check::Any,
            importance: "MEDIUM",
            doc,
            group: "Common",
        }
    }

    /// A required key of `ty`.
    pub const fn required(name: &'static str, ty: Type, doc: &'static str) -> Key {
        Key {
            name,
            ty,
            default: None,
            check: Check::NonEmpty,
            importance: "HIGH",
            doc,
            group: "Common",
        }
    }

    /// This key with a check.
    pub const fn check(mut self, check: Check) -> Key {
        self.check = check;
        self
    }

    /// This key in a group.
    pub const fn group(mut self, group: &'static str) -> Key {
        self.group = group;
        self
    }

    /// The problems with `value` for this key (none when it is fine).
    fn problems(&self, value: Option<&str>) -> Vec<String> {
        let Some(value) = value.or(self.default) else {
            return vec![format!(
                "Missing required configuration \"{}\" which has no default value.",
                self.name
            )];
        };
        let bad = |why: &str| {
            vec![format!(
                "Invalid value {value} for configuration {}: {why}",
                self.name
            )]
        };
        let v = value.trim();
        if v.is_empty() && self.default == Some("") && matches!(self.ty, Type::Int | Type::Long) {
            // A number with no default (Kafka's null): unset is fine.
            return Vec::new();
        }
        let type_problem = match self.ty {
            Type::Int if v.parse::<i32>().is_err() => Some("Not a number of type INT"),
            Type::Long if v.parse::<i64>().is_err() => Some("Not a number of type LONG"),
            Type::Boolean
                if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") =>
            {
                Some("Expected value to be either true or false")
            }
            _ => None,
        };
        if let Some(why) = type_problem {
            return bad(why);
        }
        match self.check {
            Check::Any => {}
            Check::OneOf(allowed) => {
                if !allowed.iter().any(|a| a.eq_ignore_ascii_case(value.trim())) {
                    return bad(&format!("String must be one of: {}", allowed.join(", ")));
                }
            }
            Check::AtLeast(min) => {
                if value.trim().parse::<i64>().is_ok_and(|v| v < min) {
                    return bad(&format!("Value must be at least {min}"));
                }
            }
            Check::NonEmpty => {
                if value.trim().is_empty() {
                    return bad("String may not be empty");
                }
            }
            Check::Regex => {
                if let Err(e) = regex::Regex::new(value) {
                    return bad(&format!("not a valid regular expression: {e}"));
                }
            }
            Check::Converter => {
                if !value.is_empty() && Converter::named(value, true).is_none() {
                    return bad(
                        "Class not found: the converters are StringConverter, JsonConverter and ByteArrayConverter",
                    );
                }
            }
        }
        Vec::new()
    }
}

const TOLERANCE: &[&str] = &["none", "all"];

/// Keys every connector has (Kafka's `ConnectorConfig`).
pub const COMMON: &[Key] = &[
    Key::required(
        "name",
        Type::String,
        "Globally unique name to use for this connector.",
    ),
    Key::required(
        "connector.class",
        Type::String,
        "Name or alias of the class for this connector.",
    ),
    Key::optional(
        "tasks.max",
        Type::Int,
        "1",
        "Maximum number of tasks to use for this connector.",
    )
    .check(Check::AtLeast(1)),
    Key::optional(
        "key.converter",
        Type::Class,
        "",
        "Converter class for record keys (default: the worker's).",
    )
    .check(Check::Converter),
    Key::optional(
        "value.converter",
        Type::Class,
        "",
        "Converter class for record values (default: the worker's).",
    )
    .check(Check::Converter),
    Key::optional(
        "key.converter.schemas.enable",
        Type::Boolean,
        "true",
        "JsonConverter: keys carry a schema envelope.",
    ),
    Key::optional(
        "value.converter.schemas.enable",
        Type::Boolean,
        "true",
        "JsonConverter: values carry a schema envelope.",
    ),
    Key::optional(
        "errors.tolerance",
        Type::String,
        "none",
        "none: an error fails the task; all: records that fail are skipped.",
    )
    .check(Check::OneOf(TOLERANCE))
    .group("Error Handling"),
    Key::optional(
        "errors.log.enable",
        Type::Boolean,
        "false",
        "Log every skipped record.",
    )
    .group("Error Handling"),
];

/// `transaction.boundary`'s values (KIP-618).
const BOUNDARIES: &[&str] = &["poll", "interval", "connector"];

/// Keys of source connectors (KIP-618's, used with the worker's
/// `exactly.once.source.support=enabled`).
pub const SOURCE: &[Key] = &[
    Key::optional(
        "exactly.once.support",
        Type::String,
        "requested",
        "requested, or required: the task fails unless the worker runs it exactly once.",
    )
    .check(Check::OneOf(&["requested", "required"]))
    .group("Exactly Once Support"),
    Key::optional(
        "transaction.boundary",
        Type::String,
        "poll",
        "Where an exactly-once source task commits: poll (every batch it polls) or interval.",
    )
    .check(Check::OneOf(BOUNDARIES))
    .group("Exactly Once Support"),
    Key::optional(
        "transaction.boundary.interval.ms",
        Type::Long,
        "",
        "With transaction.boundary=interval: how often to commit (default: the worker's offset.flush.interval.ms).",
    )
    .check(Check::AtLeast(1))
    .group("Exactly Once Support"),
];

/// Keys of sink connectors.
pub const SINK: &[Key] = &[
    Key::optional(
        "topics",
        Type::List,
        "",
        "Topics to consume (or topics.regex).",
    )
    .group("Common"),
    Key::optional(
        "topics.regex",
        Type::String,
        "",
        "Regular expression of topics to consume (or topics).",
    )
    .check(Check::Regex),
    Key::optional(
        "errors.deadletterqueue.topic.name",
        Type::String,
        "",
        "Topic for records the sink could not convert or write (needs errors.tolerance=all).",
    )
    .group("Error Handling"),
    Key::optional(
        "errors.deadletterqueue.topic.replication.factor",
        Type::Int,
        "3",
        "Replication factor of the dead-letter topic when it is created.",
    )
    .check(Check::AtLeast(1))
    .group("Error Handling"),
    Key::optional(
        "errors.deadletterqueue.context.headers.enable",
        Type::Boolean,
        "false",
        "Add __connect.errors.* headers saying why to dead-letter records.",
    )
    .group("Error Handling"),
];

/// One key's part of a validate answer.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigInfo {
    /// The key's definition.
    pub definition: Definition,
    /// The value given and its problems.
    pub value: ConfigValue,
}

/// A key's definition as validate shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Definition {
    /// Key.
    pub name: String,
    /// Type (`STRING`, `INT`, ...).
    #[serde(rename = "type")]
    pub ty: String,
    /// Whether a value must be given.
    pub required: bool,
    /// Default value.
    pub default_value: Option<String>,
    /// HIGH, MEDIUM or LOW.
    pub importance: String,
    /// What it does.
    pub documentation: String,
    /// Group.
    pub group: String,
}

/// A key's value as validate shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigValue {
    /// Key.
    pub name: String,
    /// The value in effect.
    pub value: Option<String>,
    /// Values the key may take, where it is a closed set.
    pub recommended_values: Vec<String>,
    /// What is wrong with it.
    pub errors: Vec<String>,
    /// Whether it applies.
    pub visible: bool,
}

/// A whole validate answer (Kafka's `ConfigInfos`).
#[derive(Debug, Clone, Serialize)]
pub struct ConfigInfos {
    /// The connector class validated against.
    pub name: String,
    /// How many errors in all.
    pub error_count: usize,
    /// Key groups.
    pub groups: Vec<String>,
    /// Every key.
    pub configs: Vec<ConfigInfo>,
}

impl ConfigInfos {
    /// Every error as `key: problem`, for a 400 answer and for logs.
    pub fn problems(&self) -> Vec<String> {
        self.configs
            .iter()
            .flat_map(|c| {
                c.value
                    .errors
                    .iter()
                    .map(move |e| format!("{}: {e}", c.value.name))
            })
            .collect()
    }
}

/// Validates `props` against the keys of the connector class they name
/// (or `plugin`, when validating for a given plugin).
pub fn validate(props: &Props, plugin: Option<&'static dyn Plugin>) -> ConfigInfos {
    let class = props
        .get("connector.class")
        .map(String::as_str)
        .unwrap_or("");
    let plugin = plugin.or_else(|| plugins::find(class));
    let mut keys: Vec<Key> = COMMON.to_vec();
    if let Some(p) = plugin {
        match p.kind() {
            Kind::Sink => keys.extend_from_slice(SINK),
            Kind::Source => keys.extend_from_slice(SOURCE),
        }
        keys.extend_from_slice(p.keys());
    }
    let mut configs: Vec<ConfigInfo> = keys
        .iter()
        .map(|k| {
            let given = props.get(k.name).map(String::as_str);
            let mut errors = k.problems(given);
            if k.name == "connector.class" && errors.is_empty() && plugin.is_none() {
                errors.push(format!(
                    "Failed to find any class that implements Connector and which name matches {class}, available connectors are: {}",
                    plugins::ALL.iter().map(|p| p.class()).collect::<Vec<_>>().join(", ")
                ));
            }
            let shown = given.map(str::to_owned).or(k.default.map(str::to_owned));
            let recommended_values = match k.check {
                Check::OneOf(v) => v.iter().map(|s| (*s).to_owned()).collect(),
                _ => Vec::new(),
            };
            ConfigInfo {
                definition: Definition {
                    name: k.name.into(),
                    ty: k.ty.name().into(),
                    required: k.default.is_none(),
                    default_value: k.default.map(str::to_owned),
                    importance: k.importance.into(),
                    documentation: k.doc.into(),
                    group: k.group.into(),
                },
                value: ConfigValue {
                    name: k.name.into(),
                    value: if k.ty == Type::Password { shown.map(|_| "[hidden]".into()) } else { shown },
                    recommended_values,
                    errors,
                    visible: true,
                },
            }
        })
        .collect();
    let mut extra: Vec<(String, String)> = Vec::new();
    if let Some(name) = props.get("name")
        && name.chars().any(char::is_control)
    {
        extra.push((
            "name".into(),
            "Connector name may not contain ISO control characters".into(),
        ));
    }
    if let Some(p) = plugin {
        if p.kind() == Kind::Sink {
            extra.extend(sink_problems(props));
        }
        if p.kind() == Kind::Source && get(props, "transaction.boundary", "poll") == "connector" {
            extra.push((
                "transaction.boundary".into(),
                format!("The connector {} does not define its own transaction boundaries; use poll or interval", p.class()),
            ));
        }
        extra.extend(p.validate(props));
    }
    for (key, problem) in extra {
        if let Some(c) = configs.iter_mut().find(|c| c.value.name == key) {
            c.value.errors.push(problem);
        }
    }
    let mut groups: Vec<String> = Vec::new();
    for c in &configs {
        if !groups.contains(&c.definition.group) {
            groups.push(c.definition.group.clone());
        }
    }
    ConfigInfos {
        name: plugin.map_or(class.to_owned(), |p| p.class().to_owned()),
        error_count: configs.iter().map(|c| c.value.errors.len()).sum(),
        groups,
        configs,
    }
}

fn sink_problems(props: &Props) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let topics = list(props, "topics");
    let regex = props.get("topics.regex").map(|s| s.trim()).unwrap_or("");
    match (topics.is_empty(), regex.is_empty()) {
        (true, true) => out.push((
            "topics".into(),
            "Must configure one of topics or topics.regex".into(),
        )),
        (false, false) => out.push((
            "topics".into(),
            "topics and topics.regex are mutually exclusive options, but both are set.".into(),
        )),
        _ => {}
    }
    let dlq = props
        .get("errors.deadletterqueue.topic.name")
        .map(|s| s.trim())
        .unwrap_or("");
    if !dlq.is_empty() {
        if topics.iter().any(|t| t == dlq)
            || regex::Regex::new(regex).is_ok_and(|r| !regex.is_empty() && r.is_match(dlq))
        {
            out.push((
                "errors.deadletterqueue.topic.name".into(),
                format!("The dead-letter topic {dlq} may not be one the connector consumes"),
            ));
        }
        if let Err(e) = runnel_common::topics::validate_topic_name(dlq) {
            out.push(("errors.deadletterqueue.topic.name".into(), e.to_string()));
        }
    }
    for t in &topics {
        if let Err(e) = runnel_common::topics::validate_topic_name(t) {
            out.push(("topics".into(), e.to_string()));
        }
    }
    out
}

/// A list key's values (comma-separated, trimmed, empties dropped).
pub fn list(props: &Props, key: &str) -> Vec<String> {
    props
        .get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A key's value, or `default`.
pub fn get<'a>(props: &'a Props, key: &str, default: &'a str) -> &'a str {
    props.get(key).map(String::as_str).unwrap_or(default)
}

/// A numeric key's value, or `default` (validated configs only).
pub fn get_i64(props: &Props, key: &str, default: i64) -> i64 {
    props
        .get(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A boolean key's value, or `default`.
pub fn get_bool(props: &Props, key: &str, default: bool) -> bool {
    props
        .get(key)
        .map_or(default, |v| v.trim().eq_ignore_ascii_case("true"))
}

/// Turns the JSON object of a REST body or a config file into props:
/// numbers and booleans become their text, as Kafka Connect's REST layer
/// does. Nested objects and arrays are refused.
pub fn props_from_json(value: &serde_json::Value) -> Result<Props, String> {
    let serde_json::Value::Object(map) = value else {
        return Err("a connector config must be an object of keys to values".into());
    };
    let mut out = Props::new();
    for (k, v) in map {
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Null => continue,
            _ => {
                return Err(format!(
                    "config key {k}: value must be a string, number or boolean"
                ));
            }
        };
        out.insert(k.clone(), text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Props {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn every_problem_is_listed() {
        let infos = validate(
            &props(&[
                ("name", "in"),
                ("connector.class", "FileStreamSink"),
                ("tasks.max", "zero"),
                ("errors.tolerance", "some"),
            ]),
            None,
        );
        let problems = infos.problems();
        assert_eq!(infos.error_count, 4, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("file: Missing required"))
        );
        assert!(problems.iter().any(|p| p.starts_with("tasks.max: ")));
        assert!(problems.iter().any(|p| p.starts_with("errors.tolerance: ")));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("topics or topics.regex"))
        );
    }

    #[test]
    fn unknown_classes_name_the_known_ones() {
        let infos = validate(
            &props(&[("name", "x"), ("connector.class", "com.example.Nope")]),
            None,
        );
        assert_eq!(infos.error_count, 1);
        assert!(
            infos.problems()[0].contains("FileStreamSource"),
            "{:?}",
            infos.problems()
        );
    }

    #[test]
    fn a_good_config_has_no_errors() {
        let infos = validate(
            &props(&[
                ("name", "out"),
                (
                    "connector.class",
                    "org.apache.kafka.connect.file.FileStreamSinkConnector",
                ),
                ("topics", "orders"),
                ("file", "/tmp/out.txt"),
            ]),
            None,
        );
        assert_eq!(infos.error_count, 0, "{:?}", infos.problems());
    }

    #[test]
    fn json_values_become_text() {
        let p =
            props_from_json(&serde_json::json!({"tasks.max": 2, "x": true, "name": "a"})).unwrap();
        assert_eq!(p["tasks.max"], "2");
        assert_eq!(p["x"], "true");
        assert!(props_from_json(&serde_json::json!({"a": {"b": 1}})).is_err());
    }
}
