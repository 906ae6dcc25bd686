//! Reading an object out of a parsed JSON value with serde so that every
//! refusal names its field (`spec.ports[1].port: invalid type: ...`).
//!
//! serde_json's own `Value` deserializer says what is wrong but not
//! where. [`from_value`] walks the value with a deserializer that tags an
//! error with each key or index it passes on its way out. It is also a
//! little stricter: a struct must be a JSON object (never an array of its
//! fields), and `null` is an absent value, as Go's decoder reads it.

use crate::{Invalid, names::quoted};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, Visitor,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Deserializes `T` from `value`; an error carries the path of its field.
pub(crate) fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, Invalid> {
    T::deserialize(Node(value)).map_err(|e| Invalid::new(e.path(), e.reason))
}

/// Go's decoder reads `null` as the empty value (`selector: null`), and
/// serde's `default` alone only covers an absent field.
pub(crate) fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A field the API server writes (`status`, `targetRef`, `hints`) that
/// nothing here reads: accepted whatever it holds, dropped, never written.
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

/// Where an error happened, outermost step last (steps are pushed as the
/// error travels out), and what it is.
#[derive(Debug)]
pub(crate) struct Error {
    steps: Vec<Step>,
    reason: String,
}

#[derive(Debug)]
enum Step {
    Key(String),
    Index(usize),
}

impl Error {
    fn at(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// `a.b[2].c`; a key that is not a plain word (a label key such as
    /// `kubernetes.io/service-name`) goes in brackets.
    fn path(&self) -> String {
        let mut out = String::new();
        for step in self.steps.iter().rev() {
            match step {
                Step::Index(i) => out.push_str(&format!("[{i}]")),
                Step::Key(k)
                    if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
                {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Step::Key(k) => out.push_str(&format!("[{}]", quoted(k).trim_matches('"'))),
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
            Value::Object(map) => visit_object(map, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    /// Only unit variants are used: an enum is written as its name.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
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

fn visit_object<'de, V: Visitor<'de>>(map: &'de Map<String, Value>, visitor: V) -> Result<V::Value, Error> {
    let mut entries = Entries { iter: map.iter(), pending: None };
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
}

struct Entries<'a> {
    iter: serde_json::map::Iter<'a>,
    /// The entry whose key was handed out and whose value comes next.
    pending: Option<(&'a String, &'a Value)>,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = Error;

    /// An error about a key (an unknown field) is about the object that
    /// holds it, so it gets no step of its own.
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.iter.next() else { return Ok(None) };
        self.pending = Some((key, value));
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.pending.take() else {
            return Err(de::Error::custom("a value was asked for before its key"));
        };
        seed.deserialize(Node(value)).map_err(|e| e.at(Step::Key(key.clone())))
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
        #[serde(default, deserialize_with = "null_as_default")]
        tags: BTreeMap<String, u16>,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        status: Option<Ignored>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        port: u16,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Mode {
        Fast,
    }

    fn error(v: Value) -> Invalid {
        from_value::<Outer>(&v).expect_err("must be refused")
    }

    #[test]
    fn errors_carry_their_path() {
        let e = error(json!({"inner": [{"port": 1}, {"port": "x"}]}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("inner[1].port", "invalid type: string \"x\", expected u16")
        );
        let e = error(json!({"inner": [{"port": 1, "prot": 2}]}));
        assert_eq!(e.field, "inner[0]");
        assert!(e.reason.starts_with("unknown field `prot`"), "{e}");
        let e = error(json!({"inner": [], "tags": {"kubernetes.io/name": "x"}}));
        assert_eq!(e.field, "tags[kubernetes.io/name]");
        let e = error(json!({"inner": [], "mode": "Slow"}));
        assert_eq!(e.field, "mode");
        assert!(e.reason.contains("unknown variant `Slow`"), "{e}");
        let e = error(json!({"inner": null}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("inner", "invalid type: null, expected a sequence")
        );
        let e = error(json!({"inner": [[80]]}));
        assert_eq!(e.reason, "invalid type: sequence, expected struct Inner");
        assert_eq!(error(json!({})).reason, "missing field `inner`");
    }

    #[test]
    fn nulls_and_ignored_fields() {
        let got: Outer =
            from_value(&json!({"inner": [], "tags": null, "mode": null, "status": {"x": [1, {"y": null}]}}))
                .expect("parses");
        assert_eq!(got, Outer { inner: vec![], tags: BTreeMap::new(), mode: None, status: Some(Ignored) });
    }
}
