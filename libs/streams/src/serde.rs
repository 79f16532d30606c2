//! Serdes: how a key or value of type `T` becomes record bytes and back.
//!
//! The encodings are Kafka's: [`I64Serde`] is Kafka's `LongSerializer`
//! (eight bytes, big-endian), [`I32Serde`] its `IntegerSerializer`,
//! [`F64Serde`] its `DoubleSerializer`, [`StringSerde`] UTF-8 and
//! [`JsonSerde`] what `serde_json` writes. A null key or value (a
//! tombstone) never reaches a serde: the topology sees it as `None`.

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;

/// A key or value that does not (de)serialize.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{serde} cannot {action} a record of topic {topic}: {reason}")]
pub struct SerdeError {
    /// Which serde.
    pub serde: &'static str,
    /// `serialize` or `deserialize`.
    pub action: &'static str,
    /// The record's topic.
    pub topic: String,
    /// What was wrong.
    pub reason: String,
}

impl SerdeError {
    fn deserialize(serde: &'static str, topic: &str, reason: impl fmt::Display) -> SerdeError {
        SerdeError {
            serde,
            action: "deserialize",
            topic: topic.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// Turns values of `T` into record bytes and back (Kafka's `Serde<T>`).
pub trait Serde<T>: Send + Sync + 'static {
    /// A short name for errors (`string`, `json`, ...).
    fn name(&self) -> &'static str;
    /// The bytes of `value`, for a record of `topic`.
    fn serialize(&self, topic: &str, value: &T) -> Result<Bytes, SerdeError>;
    /// The value `data` holds, from a record of `topic`.
    fn deserialize(&self, topic: &str, data: &[u8]) -> Result<T, SerdeError>;

    /// The bytes of `value`, or none (a null key or value on the wire).
    fn serialize_nullable(&self, topic: &str, value: &T) -> Result<Option<Bytes>, SerdeError> {
        self.serialize(topic, value).map(Some)
    }
    /// What a null key or value reads as: an error, unless the type has a
    /// null ([`Nullable`]).
    fn deserialize_null(&self, topic: &str) -> Result<T, SerdeError> {
        Err(SerdeError::deserialize(
            self.name(),
            topic,
            "null where a value belongs (use Nullable for optional keys or values)",
        ))
    }
}

/// `Option<T>` through the serde of `T`: `None` is a null key or value.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nullable<S>(pub S);

impl<T, S: Serde<T>> Serde<Option<T>> for Nullable<S> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn serialize(&self, topic: &str, value: &Option<T>) -> Result<Bytes, SerdeError> {
        match value {
            Some(v) => self.0.serialize(topic, v),
            None => Ok(Bytes::new()),
        }
    }
    fn deserialize(&self, topic: &str, data: &[u8]) -> Result<Option<T>, SerdeError> {
        self.0.deserialize(topic, data).map(Some)
    }
    fn serialize_nullable(
        &self,
        topic: &str,
        value: &Option<T>,
    ) -> Result<Option<Bytes>, SerdeError> {
        value
            .as_ref()
            .map(|v| self.0.serialize(topic, v))
            .transpose()
    }
    fn deserialize_null(&self, _topic: &str) -> Result<Option<T>, SerdeError> {
        Ok(None)
    }
}

/// Reads an optional key or value: null through [`Serde::deserialize_null`].
pub(crate) fn read<T>(
    serde: &impl Serde<T>,
    topic: &str,
    data: Option<&[u8]>,
) -> Result<T, SerdeError> {
    match data {
        Some(d) => serde.deserialize(topic, d),
        None => serde.deserialize_null(topic),
    }
}

/// Bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesSerde;

impl Serde<Bytes> for BytesSerde {
    fn name(&self) -> &'static str {
        "bytes"
    }
    fn serialize(&self, _topic: &str, value: &Bytes) -> Result<Bytes, SerdeError> {
        Ok(value.clone())
    }
    fn deserialize(&self, _topic: &str, data: &[u8]) -> Result<Bytes, SerdeError> {
        Ok(Bytes::copy_from_slice(data))
    }
}

/// UTF-8 text (Kafka's `StringSerializer`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StringSerde;

impl Serde<String> for StringSerde {
    fn name(&self) -> &'static str {
        "string"
    }
    fn serialize(&self, _topic: &str, value: &String) -> Result<Bytes, SerdeError> {
        Ok(Bytes::copy_from_slice(value.as_bytes()))
    }
    fn deserialize(&self, topic: &str, data: &[u8]) -> Result<String, SerdeError> {
        String::from_utf8(data.to_vec()).map_err(|e| SerdeError::deserialize(self.name(), topic, e))
    }
}

/// Fixed-width big-endian numbers, as Kafka's serializers write them.
macro_rules! fixed_width_serde {
    ($serde:ident, $t:ty, $name:literal, $kafka:literal) => {
        #[doc = concat!("`", stringify!($t), "`, big-endian (Kafka's `", $kafka, "`).")]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $serde;

        impl Serde<$t> for $serde {
            fn name(&self) -> &'static str {
                $name
            }
            fn serialize(&self, _topic: &str, value: &$t) -> Result<Bytes, SerdeError> {
                Ok(Bytes::copy_from_slice(&value.to_be_bytes()))
            }
            fn deserialize(&self, topic: &str, data: &[u8]) -> Result<$t, SerdeError> {
                let bytes = data.try_into().map_err(|_| {
                    SerdeError::deserialize(
                        self.name(),
                        topic,
                        format_args!("{} bytes, not {}", data.len(), std::mem::size_of::<$t>()),
                    )
                })?;
                Ok(<$t>::from_be_bytes(bytes))
            }
        }
    };
}

fixed_width_serde!(I64Serde, i64, "long", "LongSerializer");
fixed_width_serde!(I32Serde, i32, "integer", "IntegerSerializer");
fixed_width_serde!(F64Serde, f64, "double", "DoubleSerializer");

/// Nothing, for keys or values an application ignores (Kafka's `VoidSerde`):
/// writes no bytes, reads only an empty payload.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitSerde;

impl Serde<()> for UnitSerde {
    fn name(&self) -> &'static str {
        "void"
    }
    fn serialize(&self, _topic: &str, _value: &()) -> Result<Bytes, SerdeError> {
        Ok(Bytes::new())
    }
    fn deserialize(&self, topic: &str, data: &[u8]) -> Result<(), SerdeError> {
        if data.is_empty() {
            Ok(())
        } else {
            Err(SerdeError::deserialize(
                self.name(),
                topic,
                format_args!("{} bytes where none belong", data.len()),
            ))
        }
    }
}

/// Any `serde` type as JSON.
pub struct JsonSerde<T>(PhantomData<fn() -> T>);

impl<T> JsonSerde<T> {
    /// A JSON serde for `T`.
    pub fn new() -> JsonSerde<T> {
        JsonSerde(PhantomData)
    }
}

impl<T> Default for JsonSerde<T> {
    fn default() -> Self {
        JsonSerde::new()
    }
}

impl<T> Clone for JsonSerde<T> {
    fn clone(&self) -> Self {
        JsonSerde::new()
    }
}

impl<T> fmt::Debug for JsonSerde<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JsonSerde")
    }
}

impl<T> Serde<T> for JsonSerde<T>
where
    T: ::serde::Serialize + ::serde::de::DeserializeOwned + 'static,
{
    fn name(&self) -> &'static str {
        "json"
    }
    fn serialize(&self, topic: &str, value: &T) -> Result<Bytes, SerdeError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| SerdeError {
                serde: self.name(),
                action: "serialize",
                topic: topic.to_owned(),
                reason: e.to_string(),
            })
    }
    fn deserialize(&self, topic: &str, data: &[u8]) -> Result<T, SerdeError> {
        serde_json::from_slice(data).map_err(|e| SerdeError::deserialize(self.name(), topic, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_kafkas_big_endian_encodings() {
        // Kafka's LongSerializer writes 1 as 00 00 00 00 00 00 00 01.
        assert_eq!(
            &I64Serde.serialize("t", &1).unwrap()[..],
            &[0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(
            &I32Serde.serialize("t", &-2).unwrap()[..],
            &[0xff, 0xff, 0xff, 0xfe]
        );
        assert_eq!(
            &F64Serde.serialize("t", &1.5).unwrap()[..],
            &[0x3f, 0xf8, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            I64Serde
                .deserialize("t", &[0, 0, 0, 0, 0, 0, 1, 0])
                .unwrap(),
            256
        );
        let e = I64Serde.deserialize("orders", &[1, 2, 3]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "long cannot deserialize a record of topic orders: 3 bytes, not 8"
        );
    }

    #[test]
    fn text_json_and_nothing_round_trip_and_refuse_what_they_cannot_read() {
        let s = "grüße".to_owned();
        assert_eq!(
            StringSerde
                .deserialize("t", &StringSerde.serialize("t", &s).unwrap())
                .unwrap(),
            s
        );
        assert!(StringSerde.deserialize("t", &[0xff, 0xfe]).is_err());

        #[derive(Debug, PartialEq, ::serde::Serialize, ::serde::Deserialize)]
        struct Order {
            customer: String,
            cents: i64,
        }
        let json = JsonSerde::<Order>::new();
        let order = Order {
            customer: "alice".into(),
            cents: 1250,
        };
        let bytes = json.serialize("orders", &order).unwrap();
        assert_eq!(&bytes[..], br#"{"customer":"alice","cents":1250}"#);
        assert_eq!(json.deserialize("orders", &bytes).unwrap(), order);
        let e = json.deserialize("orders", b"{\"customer\":1}").unwrap_err();
        assert_eq!(
            (e.serde, e.action, e.topic.as_str()),
            ("json", "deserialize", "orders")
        );

        let opt = Nullable(StringSerde);
        assert_eq!(read(&opt, "t", None).unwrap(), None);
        assert_eq!(read(&opt, "t", Some(b"a")).unwrap(), Some("a".to_owned()));
        assert_eq!(opt.serialize_nullable("t", &None).unwrap(), None);
        let e = read(&StringSerde, "orders", None).unwrap_err();
        assert!(e.reason.starts_with("null where a value belongs"), "{e}");

        assert!(UnitSerde.serialize("t", &()).unwrap().is_empty());
        assert!(UnitSerde.deserialize("t", b"x").is_err());
        let raw = Bytes::from_static(b"\x00\x01");
        assert_eq!(BytesSerde.deserialize("t", &raw).unwrap(), raw);
    }
}
