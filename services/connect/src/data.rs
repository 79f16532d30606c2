//! Connect's data between a connector and the log: a value with an optional
//! schema, and the converters (`key.converter`, `value.converter`) that turn
//! it into record bytes and back, as Kafka Connect's `StringConverter`,
//! `JsonConverter` (with and without schemas) and `ByteArrayConverter` do.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::{Value as Json, json};

/// A value a connector reads or writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value (a null key, or a tombstone).
    Null,
    /// Raw bytes.
    Bytes(Bytes),
    /// Text.
    String(String),
    /// A structured value (numbers, booleans, arrays, objects).
    Json(Json),
}

impl Value {
    /// The value as text: strings as they are, structured values as JSON,
    /// bytes as UTF-8 (lossy). What a file sink writes.
    pub fn to_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Json(j) => Some(j.to_string()),
        }
    }

    /// The value as JSON: bytes as base64 text, as Kafka's JsonConverter writes them.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::String(s) => Json::String(s.clone()),
            Value::Bytes(b) => Json::String(BASE64.encode(b)),
            Value::Json(j) => j.clone(),
        }
    }
}

/// A value with its schema (Kafka Connect's JSON schema form, e.g.
/// `{"type":"struct","fields":[...]}`), when it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Data {
    /// The schema, if the source or the converter gave one.
    pub schema: Option<Json>,
    /// The value.
    pub value: Value,
}

impl Data {
    /// No value and no schema.
    pub fn null() -> Data {
        Data {
            schema: None,
            value: Value::Null,
        }
    }

    /// A string with Connect's string schema.
    pub fn string(s: impl Into<String>) -> Data {
        Data {
            schema: Some(json!({"type": "string", "optional": false})),
            value: Value::String(s.into()),
        }
    }
}

/// A value that cannot be converted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

/// A converter named by `key.converter` / `value.converter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converter {
    /// `org.apache.kafka.connect.storage.StringConverter`.
    String,
    /// `org.apache.kafka.connect.json.JsonConverter`; `schemas` is
    /// `schemas.enable`: values travel as `{"schema": ..., "payload": ...}`.
    Json {
        /// `schemas.enable`.
        schemas: bool,
    },
    /// `org.apache.kafka.connect.converters.ByteArrayConverter`.
    Bytes,
}

/// Kafka's class names for the converters, with the short names accepted too.
pub const CONVERTER_CLASSES: &[(&str, &str)] = &[
    ("org.apache.kafka.connect.storage.StringConverter", "string"),
    ("org.apache.kafka.connect.json.JsonConverter", "json"),
    (
        "org.apache.kafka.connect.converters.ByteArrayConverter",
        "bytes",
    ),
];

impl Converter {
    /// The converter a `*.converter` value names (full class name, simple
    /// class name or short name), with `schemas.enable` for JSON.
    pub fn named(name: &str, schemas_enable: bool) -> Option<Converter> {
        let short = CONVERTER_CLASSES.iter().find_map(|(class, short)| {
            let simple = class.rsplit('.').next().unwrap_or(class);
            (name == *class || name == simple || name.eq_ignore_ascii_case(short)).then_some(*short)
        })?;
        Some(match short {
            "string" => Converter::String,
            "json" => Converter::Json {
                schemas: schemas_enable,
            },
            _ => Converter::Bytes,
        })
    }

    /// Record bytes for `data` (`None` for a null value).
    pub fn from_connect(&self, data: &Data) -> Result<Option<Bytes>, ConvertError> {
        if data.value == Value::Null && !matches!(self, Converter::Json { schemas: true }) {
            return Ok(None);
        }
        match self {
            Converter::String => Ok(data.value.to_text().map(Bytes::from)),
            Converter::Bytes => match &data.value {
                Value::Bytes(b) => Ok(Some(b.clone())),
                Value::Null => Ok(None),
                other => Err(ConvertError(format!(
                    "ByteArrayConverter is not compatible with a {} value",
                    kind(other)
                ))),
            },
            Converter::Json { schemas } => {
                let payload = data.value.to_json();
                let body = if *schemas {
                    if data.value == Value::Null && data.schema.is_none() {
                        return Ok(None);
                    }
                    let schema = data.schema.clone().or_else(|| match &data.value {
                        Value::String(_) => Some(json!({"type": "string", "optional": false})),
                        Value::Bytes(_) => Some(json!({"type": "bytes", "optional": false})),
                        _ => None,
                    });
                    json!({"schema": schema, "payload": payload})
                } else {
                    payload
                };
                serde_json::to_vec(&body)
                    .map(|v| Some(Bytes::from(v)))
                    .map_err(|e| ConvertError(e.to_string()))
            }
        }
    }

    /// The value record bytes hold (`None`: a null key or a tombstone).
    pub fn to_connect(&self, bytes: Option<&Bytes>) -> Result<Data, ConvertError> {
        let Some(bytes) = bytes else {
            return Ok(Data::null());
        };
        match self {
            Converter::Bytes => Ok(Data {
                schema: Some(json!({"type": "bytes", "optional": true})),
                value: Value::Bytes(bytes.clone()),
            }),
            Converter::String => match std::str::from_utf8(bytes) {
                Ok(s) => Ok(Data::string(s)),
                Err(e) => Err(ConvertError(format!("not UTF-8 text: {e}"))),
            },
            Converter::Json { schemas } => {
                let parsed: Json = serde_json::from_slice(bytes)
                    .map_err(|e| ConvertError(format!("not JSON: {e}")))?;
                if !schemas {
                    return Ok(Data {
                        schema: None,
                        value: from_json(parsed),
                    });
                }
                let Json::Object(mut envelope) = parsed else {
                    return Err(ConvertError(ENVELOPE.into()));
                };
                if envelope.len() != 2 || !envelope.contains_key("schema") {
                    return Err(ConvertError(ENVELOPE.into()));
                }
                let (Some(schema), Some(payload)) =
                    (envelope.remove("schema"), envelope.remove("payload"))
                else {
                    return Err(ConvertError(ENVELOPE.into()));
                };
                let schema = (!schema.is_null()).then_some(schema);
                let is_bytes = schema
                    .as_ref()
                    .and_then(|s| s.get("type"))
                    .and_then(Json::as_str)
                    == Some("bytes");
                let value = match payload {
                    Json::String(s) if is_bytes => {
                        Value::Bytes(Bytes::from(BASE64.decode(s.as_bytes()).map_err(|e| {
                            ConvertError(format!("bytes payload not base64: {e}"))
                        })?))
                    }
                    other => from_json(other),
                };
                Ok(Data { schema, value })
            }
        }
    }
}

const ENVELOPE: &str = "JsonConverter with schemas.enable requires \"schema\" and \"payload\" fields and may not contain additional fields. If you are trying to deserialize plain JSON data, set schemas.enable=false in your converter configuration.";

fn from_json(j: Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::String(s) => Value::String(s),
        other => Value::Json(other),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "string",
        Value::Json(_) => "structured",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_owned())
    }

    #[test]
    fn converters_are_found_by_class_simple_and_short_names() {
        for name in [
            "org.apache.kafka.connect.json.JsonConverter",
            "JsonConverter",
            "json",
        ] {
            assert_eq!(
                Converter::named(name, false),
                Some(Converter::Json { schemas: false })
            );
        }
        assert_eq!(Converter::named("string", true), Some(Converter::String));
        assert_eq!(
            Converter::named(
                "org.apache.kafka.connect.converters.ByteArrayConverter",
                true
            ),
            Some(Converter::Bytes)
        );
        assert_eq!(Converter::named("com.example.Avro", true), None);
    }

    #[test]
    fn json_with_schemas_writes_kafkas_envelope_and_reads_it_back() {
        let c = Converter::Json { schemas: true };
        let bytes = c.from_connect(&Data::string("hello")).unwrap().unwrap();
        assert_eq!(
            serde_json::from_slice::<Json>(&bytes).unwrap(),
            json!({"schema": {"type": "string", "optional": false}, "payload": "hello"})
        );
        assert_eq!(c.to_connect(Some(&bytes)).unwrap(), Data::string("hello"));
        let err = c.to_connect(Some(&b(r#"{"id": 1}"#))).unwrap_err();
        assert!(err.0.contains("schemas.enable=false"), "{err}");
    }

    #[test]
    fn json_without_schemas_is_plain_json() {
        let c = Converter::Json { schemas: false };
        let d = c.to_connect(Some(&b(r#"{"id": 1, "name": "a"}"#))).unwrap();
        assert_eq!(d.value, Value::Json(json!({"id": 1, "name": "a"})));
        assert_eq!(
            c.from_connect(&d).unwrap().unwrap(),
            b(r#"{"id":1,"name":"a"}"#)
        );
        assert!(c.to_connect(Some(&b("not json"))).is_err());
    }

    #[test]
    fn bytes_pass_through_and_base64_in_json() {
        let raw = Bytes::from_static(&[0, 159, 255]);
        let d = Converter::Bytes.to_connect(Some(&raw)).unwrap();
        assert_eq!(
            Converter::Bytes.from_connect(&d).unwrap(),
            Some(raw.clone())
        );
        let j = Converter::Json { schemas: true };
        let encoded = j.from_connect(&d).unwrap().unwrap();
        assert_eq!(
            j.to_connect(Some(&encoded)).unwrap().value,
            Value::Bytes(raw)
        );
        assert!(Converter::Bytes.from_connect(&Data::string("x")).is_err());
    }

    #[test]
    fn nulls_stay_null() {
        for c in [
            Converter::String,
            Converter::Bytes,
            Converter::Json { schemas: true },
            Converter::Json { schemas: false },
        ] {
            assert_eq!(c.from_connect(&Data::null()).unwrap(), None, "{c:?}");
            assert_eq!(c.to_connect(None).unwrap(), Data::null());
        }
        assert!(
            Converter::String
                .to_connect(Some(&Bytes::from_static(&[0xff])))
                .is_err()
        );
    }
}
