//! Reading an object out of a parsed JSON value with serde, so that a
//! refusal names the field it is about (`spec.ingress[0].ports[1].port:
//! invalid type: ...`) the way validation names fields in [`Invalid`].
//!
//! serde_json's own `Value` deserializer says what is wrong but not where.
//! [`from_value`] walks the value with a deserializer that tags an error
//! with each field, index or map key it passes on its way out.
//!
//! It reads as the API server does where serde_json would not:
//! - `null` for a field of an object is the field left out, as Go's
//!   decoder reads it: an optional field gets its default, a required one
//!   is missing (`matchLabels: null` and `ports: null` are what manifests
//!   and generated clients write). A `null` inside an array or as a map
//!   value is not a field and stays an error, as does a misspelt field,
//!   even when it is `null`.
//! - A struct must be written as a JSON object (a derived struct would
//!   otherwise also take an array of its fields in order, which no client
//!   writes), and an array or object must be used up by what reads it.

use crate::{Invalid, invalid::map_key};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor,
    value::BorrowedStrDeserializer,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Deserializes `T` from `value`; an error carries the path of the field
/// it is about (empty for the value itself).
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, Invalid> {
    T::deserialize(Node(value)).map_err(|e| Invalid::new(e.path(), e.reason))
}

/// A field the API server writes (`status`, `targetRef`, `uid`) that
/// nothing reads: accepted whatever it holds, dropped, never written back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        de::IgnoredAny::deserialize(deserializer).map(|_| Ignored)
    }
}

impl Serialize for Ignored {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

/// What a JSON value is, for messages: `a number`, `an object`, `null`.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One step of a path.
#[derive(Debug)]
enum Step {
    /// A struct field: `.name`.
    Field(String),
    /// An array index: `[2]`.
    Index(usize),
    /// A map key: `["app.kubernetes.io/name"]`.
    Key(String),
}

/// A serde error and where it happened, innermost step first (steps are
/// pushed as the error travels out).
#[derive(Debug)]
struct Error {
    steps: Vec<Step>,
    reason: String,
}

impl Error {
    fn at(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    fn path(&self) -> String {
        let mut out = String::new();
        for step in self.steps.iter().rev() {
            match step {
                Step::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
                Step::Key(key) => out.push_str(&map_key(key)),
            }
        }
        out
    }
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error { steps: Vec::new(), reason: msg.to_string() }
    }

    /// As serde's, but JSON calls the unit value `null`.
    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        match unexpected {
            Unexpected::Unit => Self::custom(format_args!("invalid type: null, expected {expected}")),
            other => Self::custom(format_args!("invalid type: {other}, expected {expected}")),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Error {}

/// The value being read.
struct Node<'a>(&'a Value);

impl<'de> Deserializer<'de> for Node<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => visitor.visit_u64(u),
                (None, Some(i)) => visitor.visit_i64(i),
                (None, None) => visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => {
                let mut seq = Items(items.iter().enumerate());
                let out = visitor.visit_seq(&mut seq)?;
                match seq.0.len() {
                    0 => Ok(out),
                    n => Err(de::Error::custom(format!("{n} elements left over at the end of the array"))),
                }
            }
            Value::Object(map) => visit_object(map, None, visitor),
        }
    }

    /// `null` is an absent value (`None`).
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    /// Enums are written as their variant's name (only unit variants are
    /// used); anything else gets the visitor's own "invalid type".
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(BorrowedStrDeserializer::new(s)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(map) => visit_object(map, Some(fields), visitor),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

/// An object read as a struct (`fields`: its field names) or as a map.
fn visit_object<'de, V: Visitor<'de>>(
    map: &'de Map<String, Value>,
    fields: Option<&'static [&'static str]>,
    visitor: V,
) -> Result<V::Value, Error> {
    let mut entries = Entries { iter: map.iter(), fields, pending: None };
    let out = visitor.visit_map(&mut entries)?;
    match entries.iter.len() {
        0 => Ok(out),
        n => Err(de::Error::custom(format!("{n} fields left over at the end of the object"))),
    }
}

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            (None, None) => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

struct Items<'a>(std::iter::Enumerate<std::slice::Iter<'a, Value>>);

impl<'de> SeqAccess<'de> for Items<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        match self.0.next() {
            Some((i, item)) => seed.deserialize(Node(item)).map(Some).map_err(|e| e.at(Step::Index(i))),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries<'a> {
    iter: serde_json::map::Iter<'a>,
    /// The struct's field names; `None` for a map.
    fields: Option<&'static [&'static str]>,
    /// The entry whose key was handed out and whose value comes next.
    pending: Option<(&'a String, &'a Value)>,
}

impl<'a> Entries<'a> {
    /// The next entry that is there: a known field set to `null` is
    /// skipped, as if left out.
    fn next_present(&mut self) -> Option<(&'a String, &'a Value)> {
        let fields = self.fields;
        self.iter.by_ref().find(|(key, value)| {
            !(value.is_null() && fields.is_some_and(|fields| fields.contains(&key.as_str())))
        })
    }
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = Error;

    /// An error about a key (an unknown field) is about the object that
    /// holds it, so it gets no step of its own.
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.next_present() else { return Ok(None) };
        self.pending = Some((key, value));
        seed.deserialize(BorrowedStrDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.pending.take() else {
            return Err(de::Error::custom("a value was asked for before its key"));
        };
        let step = match self.fields {
            Some(_) => Step::Field(key.clone()),
            None => Step::Key(key.clone()),
        };
        seed.deserialize(Node(value)).map_err(|e| e.at(step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Outer {
        inner: Vec<Inner>,
        #[serde(default)]
        tags: BTreeMap<String, u16>,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        status: Option<Ignored>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Inner {
        port: u16,
        #[serde(default)]
        name: Option<String>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Mode {
        Fast,
        Slow,
    }

    fn error(value: Value) -> Invalid {
        match from_value::<Outer>(&value) {
            Ok(v) => panic!("{value} should not deserialize, got {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let v = json!({"inner": [{"port": 80}, {"port": 443, "name": "tls"}, {"port": 8080, "name": "alt"}],
                       "tags": {"a": 1}, "mode": "Slow", "status": {"x": [1, {"y": null}]}});
        let got: Outer = from_value(&v).expect("deserializes");
        let direct: Outer = serde_json::from_value(v).expect("deserializes");
        assert_eq!(got, direct);
        assert_eq!(got.inner[2].name.as_deref(), Some("alt"));
        assert_eq!((got.mode, got.status), (Some(Mode::Slow), Some(Ignored)));
    }

    #[test]
    fn errors_name_their_field() {
        let e = error(json!({"inner": [{"port": 80}, {"port": "http"}]}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("inner[1].port", "invalid type: string \"http\", expected u16")
        );
        let e = error(json!({"inner": [{"port": -1}]}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("inner[0].port", "invalid value: integer `-1`, expected u16")
        );
        let e = error(json!({"inner": [{"port": 70000}]}));
        assert_eq!(e.reason, "invalid value: integer `70000`, expected u16");
        let e = error(json!({"inner": [{"port": 1.5}]}));
        assert_eq!(e.reason, "invalid type: floating point `1.5`, expected u16");
        let e = error(json!({"inner": [], "mode": "Medium"}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("mode", "unknown variant `Medium`, expected `Fast` or `Slow`")
        );
        let e = error(json!({"inner": [], "mode": 3}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("mode", "invalid type: integer `3`, expected enum Mode")
        );
    }

    #[test]
    fn unknown_and_missing_fields_name_their_object() {
        let e = error(json!({"inner": [{"port": 1, "nmae": "x"}]}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("inner[0]", "unknown field `nmae`, expected `port` or `name`")
        );
        let e = error(json!({"inner": [{"name": "x"}]}));
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("inner[0]", "missing field `port`"));
        let e = error(json!({}));
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("", "missing field `inner`"));
    }

    #[test]
    fn map_keys_are_quoted_in_brackets() {
        let e = error(json!({"inner": [], "tags": {"app.kubernetes.io/name": "x"}}));
        assert_eq!(e.field, "tags[\"app.kubernetes.io/name\"]");
        assert_eq!(e.reason, "invalid type: string \"x\", expected u16");
        // A plain key is a key too: its brackets tell it from a field.
        let e = error(json!({"inner": [], "tags": {"plain_key1": "x"}}));
        assert_eq!(e.field, "tags[\"plain_key1\"]");
        let long = "k/".repeat(100);
        let e = error(json!({"inner": [], "tags": {long: "x"}}));
        assert_eq!(e.field, format!("tags[{:?}… (200 bytes)]", "k/".repeat(32)));
    }

    #[test]
    fn structs_must_be_objects() {
        // serde_json's Value would take [80] as Inner { port: 80 }.
        let e = error(json!({"inner": [[80]]}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("inner[0]", "invalid type: sequence, expected struct Inner")
        );
        let e = error(json!("x"));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("", "invalid type: string \"x\", expected struct Outer")
        );
        let e = error(json!({"inner": {"port": 1}}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("inner", "invalid type: map, expected a sequence")
        );
    }

    #[test]
    fn tuples_must_use_the_whole_array() {
        let e = from_value::<(u8, u8)>(&json!([1, 2, 3])).unwrap_err();
        assert_eq!(e.reason, "1 elements left over at the end of the array");
        assert_eq!(from_value::<(u8, u8)>(&json!([1, 2])).expect("fits"), (1, 2));
    }

    #[test]
    fn a_null_field_is_an_absent_field() {
        let got: Outer = from_value(
            &json!({"inner": [{"port": 1, "name": null}], "tags": null, "mode": null, "status": null}),
        )
        .expect("deserializes");
        let absent: Outer = from_value(&json!({"inner": [{"port": 1}]})).expect("deserializes");
        assert_eq!(got, absent);
        assert_eq!(
            got,
            Outer {
                inner: vec![Inner { port: 1, name: None }],
                tags: BTreeMap::new(),
                mode: None,
                status: None
            }
        );
        // A required field set to null is missing, as when left out.
        let e = error(json!({"inner": null}));
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("", "missing field `inner`"));
        let e = error(json!({"inner": [{"port": null}]}));
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("inner[0]", "missing field `port`"));
    }

    #[test]
    fn a_null_that_is_not_a_field_is_refused() {
        // A misspelt field stays unknown, whatever it holds.
        let e = error(json!({"inner": [], "tgas": null}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("", "unknown field `tgas`, expected one of `inner`, `tags`, `mode`, `status`")
        );
        // An array item and a map value are values, not fields.
        let e = error(json!({"inner": [null]}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("inner[0]", "invalid type: null, expected struct Inner")
        );
        let e = error(json!({"inner": [], "tags": {"a": null}}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("tags[\"a\"]", "invalid type: null, expected u16")
        );
    }

    #[test]
    fn json_types_for_messages() {
        let names: Vec<&str> = [json!(null), json!(true), json!(1), json!("s"), json!([]), json!({})]
            .iter()
            .map(json_type)
            .collect();
        assert_eq!(names, ["null", "a boolean", "a number", "a string", "an array", "an object"]);
    }
}
