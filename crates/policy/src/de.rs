//! Reading a policy object out of a parsed JSON value with serde, so that
//! a refusal names the field it is about (`spec.ingress[0].ports[1].port:
//! invalid type: ...`) the way [`Invalid`] names fields for validation.
//!
//! serde_json's own `Value` deserializer says what was wrong but not where.
//! This is a deserializer over `&Value` that behaves like it (with two
//! stricter points, below) and prefixes every error with the key or index
//! of each level the error passes through on its way out.
//!
//! Stricter than serde_json: a struct must be written as a JSON object (a
//! derived struct would otherwise also accept an array of its fields in
//! order, which no Kubernetes or Calico client writes), and an array or
//! object must be used up entirely by what reads it.

use crate::Invalid;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Unexpected, Visitor,
    value::BorrowedStrDeserializer,
};
use serde_json::{Map, Number, Value};
use std::fmt;

/// How many characters of an object key a path shows: keys are input too.
const SHOWN_KEY_CHARS: usize = 64;

/// Deserializes `T` from `value`; an error carries the path of the field
/// it is about (empty for the value itself).
pub(crate) fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, Invalid> {
    T::deserialize(Node(value)).map_err(Error::into_invalid)
}

/// One step of a path: an object key or an array index.
#[derive(Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// A serde error and where it happened, innermost step first (steps are
/// added as the error travels out).
#[derive(Debug)]
pub(crate) struct Error {
    steps: Vec<Step>,
    reason: String,
}

impl Error {
    fn at(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    fn into_invalid(self) -> Invalid {
        Invalid::new(path(self.steps.iter().rev()), self.reason)
    }
}

/// `a.b[2].c`; a key that is not a plain word (a label key such as
/// `app.kubernetes.io/name`) goes in brackets so the path stays readable.
fn path<'a>(steps: impl Iterator<Item = &'a Step>) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Key(key) if is_word(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Key(key) => out.push_str(&format!("[{}]", shown_key(key))),
        }
    }
    out
}

fn is_word(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn shown_key(key: &str) -> String {
    match key.char_indices().nth(SHOWN_KEY_CHARS) {
        Some((cut, _)) => format!("{}…", &key[..cut]),
        None => key.to_string(),
    }
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error { steps: Vec::new(), reason: msg.to_string() }
    }

    /// As serde's, but a unit value is what JSON calls `null`.
    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        match unexpected {
            Unexpected::Unit => Self::custom(format_args!("invalid type: null, expected {expected}")),
            _ => Self::custom(format_args!("invalid type: {unexpected}, expected {expected}")),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Error {}

/// A value being read.
struct Node<'a>(&'a Value);

impl<'de> de::Deserializer<'de> for Node<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => visit_number(n, visitor),
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visit_array(items, visitor),
            Value::Object(map) => visit_object(map, visitor),
        }
    }

    /// `null` is an absent value, as in Go's decoder.
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
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(map) => visit_object(map, visitor),
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

fn visit_number<'de, V: Visitor<'de>>(n: &Number, visitor: V) -> Result<V::Value, Error> {
    if let Some(u) = n.as_u64() {
        visitor.visit_u64(u)
    } else if let Some(i) = n.as_i64() {
        visitor.visit_i64(i)
    } else {
        visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
    }
}

fn visit_array<'de, V: Visitor<'de>>(items: &'de [Value], visitor: V) -> Result<V::Value, Error> {
    let mut seq = Elements { items: items.iter().enumerate() };
    let out = visitor.visit_seq(&mut seq)?;
    match seq.items.len() {
        0 => Ok(out),
        left => Err(de::Error::custom(format!("{left} elements left over at the end of the array"))),
    }
}

fn visit_object<'de, V: Visitor<'de>>(map: &'de Map<String, Value>, visitor: V) -> Result<V::Value, Error> {
    let mut entries = Entries { iter: map.iter(), pending: None };
    let out = visitor.visit_map(&mut entries)?;
    match entries.iter.len() {
        0 => Ok(out),
        left => Err(de::Error::custom(format!("{left} fields left over at the end of the object"))),
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

struct Elements<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Value>>,
}

impl<'de> SeqAccess<'de> for Elements<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        let Some((i, item)) = self.items.next() else {
            return Ok(None);
        };
        seed.deserialize(Node(item)).map(Some).map_err(|e| e.at(Step::Index(i)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Entries<'a> {
    iter: serde_json::map::Iter<'a>,
    /// The entry whose key was just handed out and whose value is next.
    pending: Option<(&'a String, &'a Value)>,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = Error;

    /// An error about the key itself (an unknown field) is about the
    /// object holding it, so it gets no step of its own.
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        self.pending = Some((key, value));
        seed.deserialize(BorrowedStrDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.pending.take() else {
            return Err(de::Error::custom("a value was asked for before its key"));
        };
        seed.deserialize(Node(value)).map_err(|e| e.at(Step::Key(key.clone())))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
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
        let v = json!({"inner": [{"port": 80}, {"port": 443, "name": null}, {"port": 8080, "name": "alt"}],
                       "tags": {"a": 1}, "mode": "Slow"});
        let got: Outer = from_value(&v).expect("deserializes");
        let direct: Outer = serde_json::from_value(v).expect("deserializes");
        assert_eq!(got, direct);
        assert_eq!(got.inner[2].name.as_deref(), Some("alt"));
        assert_eq!(got.mode, Some(Mode::Slow));
    }

    #[test]
    fn errors_name_their_field() {
        let e = error(json!({"inner": [{"port": 80}, {"port": "http"}]}));
        assert_eq!(e.field, "inner[1].port");
        assert_eq!(e.reason, "invalid type: string \"http\", expected u16");
        let e = error(json!({"inner": [{"port": 70000}]}));
        assert_eq!(e.field, "inner[0].port");
        assert!(e.reason.contains("70000"), "{e}");
        let e = error(json!({"inner": [{"port": -1}]}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("inner[0].port", "invalid value: integer `-1`, expected u16")
        );
        let e = error(json!({"inner": [{"port": 1.5}]}));
        assert_eq!(e.reason, "invalid type: floating point `1.5`, expected u16");
        let e = error(json!({"inner": [], "mode": "Medium"}));
        assert_eq!(e.field, "mode");
        assert!(e.reason.contains("unknown variant `Medium`, expected `Fast` or `Slow`"), "{e}");
        let e = error(json!({"inner": [], "mode": 3}));
        assert_eq!(e.field, "mode");
        assert!(e.reason.starts_with("invalid type: integer `3`"), "{e}");
    }

    #[test]
    fn unknown_and_missing_fields_name_their_object() {
        let e = error(json!({"inner": [{"port": 1, "nmae": "x"}]}));
        assert_eq!(e.field, "inner[0]");
        assert_eq!(e.reason, "unknown field `nmae`, expected `port` or `name`");
        let e = error(json!({"inner": [{"name": "x"}]}));
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("inner[0]", "missing field `port`"));
        let e = error(json!({}));
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("", "missing field `inner`"));
    }

    #[test]
    fn odd_keys_go_in_brackets() {
        let e = error(json!({"inner": [], "tags": {"app.kubernetes.io/name": "x"}}));
        assert_eq!(e.field, "tags[app.kubernetes.io/name]");
        let e = error(json!({"inner": [], "tags": {"plain_key1": "x"}}));
        assert_eq!(e.field, "tags.plain_key1");
        let long = "k/".repeat(100);
        let e = error(json!({"inner": [], "tags": {long: "x"}}));
        assert_eq!(e.field, format!("tags[{}…]", "k/".repeat(32)));
    }

    #[test]
    fn structs_must_be_objects() {
        // serde_json's Value would take [80] as Inner { port: 80 }.
        let e = error(json!({"inner": [[80]]}));
        assert_eq!(e.field, "inner[0]");
        assert_eq!(e.reason, "invalid type: sequence, expected struct Inner");
        let e = error(json!("x"));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("", "invalid type: string \"x\", expected struct Outer")
        );
        let e = error(json!({"inner": {"port": 1}}));
        assert_eq!(e.field, "inner");
        assert!(e.reason.starts_with("invalid type: map, expected a sequence"), "{e}");
    }

    #[test]
    fn tuples_must_use_the_whole_array() {
        let e = from_value::<(u8, u8)>(&json!([1, 2, 3])).unwrap_err();
        assert_eq!(e.reason, "1 elements left over at the end of the array");
        assert_eq!(from_value::<(u8, u8)>(&json!([1, 2])).expect("fits"), (1, 2));
    }

    #[test]
    fn null_is_absent_for_options_only() {
        let got: Outer = from_value(&json!({"inner": [], "mode": null})).expect("deserializes");
        assert_eq!(got.mode, None);
        let e = error(json!({"inner": null}));
        assert_eq!(e.field, "inner");
        assert_eq!(e.reason, "invalid type: null, expected a sequence");
    }
}
