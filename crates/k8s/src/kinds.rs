//! Reading an object of one of several kinds: the JSON value is
//! dispatched on its `apiVersion` and `kind`, and anything else is refused
//! with the list of what is accepted. A crate that reads objects declares
//! its kinds once, in a [`Kinds`] table, and gets one object
//! ([`Kinds::read`]) and a text of several ([`Kinds::read_json`]) with
//! the same messages as every other.
//!
//! Reading is all or nothing: a text with one bad object yields the error
//! only, with the object's place in the path (`items[2].spec...`). A
//! policy set applied in part could allow what the missing part was meant
//! to deny; a Service applied without its slices would have no backends.

use crate::{Invalid, de::json_type, list, names::quoted};
use serde_json::{Map, Value};

/// One accepted kind: its `apiVersion`, `kind`, and how to read (and
/// validate) an object of it.
pub struct Kind<T> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub read: fn(&Value) -> Result<T, Invalid>,
}

/// The kinds one reader accepts.
pub struct Kinds<T: 'static> {
    /// What an object is called in messages, after "a": `policy document`.
    noun: &'static str,
    kinds: &'static [Kind<T>],
}

impl<T> Kinds<T> {
    /// `noun` names an object in messages (`a {noun} is a JSON object`).
    pub const fn new(noun: &'static str, kinds: &'static [Kind<T>]) -> Self {
        Kinds { noun, kinds }
    }

    /// Reads one object with the reader of its `apiVersion` and `kind`.
    /// An unknown `kind` of a known `apiVersion` is refused at `kind`, an
    /// unknown `apiVersion` at `apiVersion`, both with the accepted kinds.
    pub fn read(&self, value: &Value) -> Result<T, Invalid> {
        let Value::Object(object) = value else {
            return Err(Invalid::new(
                "",
                format!("a {} is a JSON object, not {}", self.noun, json_type(value)),
            ));
        };
        let api_version = self.type_field(object, "apiVersion")?;
        let kind = self.type_field(object, "kind")?;
        if let Some(known) = self.kinds.iter().find(|k| (k.api_version, k.kind) == (api_version, kind)) {
            return (known.read)(value);
        }
        if self.kinds.iter().any(|k| k.api_version == api_version) {
            let reason =
                format!("{} is not a supported kind of {api_version}; {}", quoted(kind), self.accepted());
            return Err(Invalid::new("kind", reason));
        }
        Err(Invalid::new(
            "apiVersion",
            format!("{} is not supported; {}", quoted(api_version), self.accepted()),
        ))
    }

    /// Reads a JSON text holding one object, an array of them or a List
    /// (see [`crate::list`]). Errors name the object: `[2].spec...` in an
    /// array, `items[2].spec...` in a List. Any error fails the whole call.
    pub fn read_json(&self, text: &str) -> Result<Vec<T>, Invalid> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Invalid::new("", format!("not valid JSON: {e}")))?;
        list::objects(&value)?
            .into_iter()
            .map(|(path, v)| self.read(v).map_err(|e| e.within(&path)))
            .collect()
    }

    /// `apiVersion` or `kind`: present, and a string.
    fn type_field<'a>(&self, object: &'a Map<String, Value>, field: &str) -> Result<&'a str, Invalid> {
        match object.get(field) {
            Some(Value::String(s)) => Ok(s),
            None | Some(Value::Null) => Err(Invalid::new(field, format!("missing; {}", self.accepted()))),
            Some(other) => Err(Invalid::new(field, format!("must be a string, not {}", json_type(other)))),
        }
    }

    fn accepted(&self) -> String {
        let kinds: Vec<String> = self.kinds.iter().map(|k| format!("{} {}", k.api_version, k.kind)).collect();
        format!("the accepted kinds are {}", kinds.join(", "))
    }
}

/// Checks a field that has one right value (`apiVersion`, `kind`), for an
/// object's `validate`: one built in code has not been through [`Kinds`].
pub fn expect(field: &str, got: &str, expected: &str) -> Result<(), Invalid> {
    if got == expected {
        Ok(())
    } else {
        Err(Invalid::new(field, format!("{} must be {expected:?}", quoted(got))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A reader of two made-up kinds: the object's name, or its refusal.
    const KINDS: Kinds<String> = Kinds::new(
        "widget",
        &[
            Kind { api_version: "example.com/v1", kind: "Widget", read: name },
            Kind { api_version: "v1", kind: "Gadget", read: name },
        ],
    );

    fn name(value: &Value) -> Result<String, Invalid> {
        match value.pointer("/metadata/name").and_then(Value::as_str) {
            Some("bad") => Err(Invalid::new("metadata.name", "bad name")),
            Some(name) => Ok(name.to_string()),
            None => Err(Invalid::new("metadata", "no name")),
        }
    }

    fn widget(name: &str) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}})
    }

    const ACCEPTED: &str = "the accepted kinds are example.com/v1 Widget, v1 Gadget";

    #[test]
    fn dispatches_on_api_version_and_kind() {
        assert_eq!(KINDS.read(&widget("a")), Ok("a".to_string()));
        let gadget = json!({"apiVersion": "v1", "kind": "Gadget", "metadata": {"name": "g"}});
        assert_eq!(KINDS.read(&gadget), Ok("g".to_string()));
        assert_eq!(KINDS.read(&widget("bad")).unwrap_err().to_string(), "metadata.name: bad name");
    }

    #[test]
    fn unknown_kinds_are_refused_listing_the_accepted_ones() {
        let mut v = widget("a");
        v["kind"] = json!("Gadget");
        assert_eq!(
            KINDS.read(&v).unwrap_err().to_string(),
            format!("kind: \"Gadget\" is not a supported kind of example.com/v1; {ACCEPTED}")
        );
        v["apiVersion"] = json!("apps/v1");
        assert_eq!(
            KINDS.read(&v).unwrap_err().to_string(),
            format!("apiVersion: \"apps/v1\" is not supported; {ACCEPTED}")
        );
    }

    #[test]
    fn missing_or_odd_type_fields() {
        let mut v = widget("a");
        v["kind"] = Value::Null;
        assert_eq!(KINDS.read(&v).unwrap_err().to_string(), format!("kind: missing; {ACCEPTED}"));
        v.as_object_mut().expect("an object").remove("apiVersion");
        assert_eq!(KINDS.read(&v).unwrap_err().field, "apiVersion");
        v["apiVersion"] = json!(1);
        assert_eq!(KINDS.read(&v).unwrap_err().to_string(), "apiVersion: must be a string, not a number");
        assert_eq!(
            KINDS.read(&json!(["x"])).unwrap_err().to_string(),
            "a widget is a JSON object, not an array"
        );
    }

    #[test]
    fn a_json_text_of_several() {
        let names = |text: String| KINDS.read_json(&text).expect("accepted");
        assert_eq!(names(widget("one").to_string()), ["one"]);
        assert_eq!(names(json!([widget("a"), widget("b")]).to_string()), ["a", "b"]);
        assert_eq!(names(json!({"kind": "List", "items": [widget("a")]}).to_string()), ["a"]);
        assert_eq!(names("[]".to_string()), Vec::<String>::new());
    }

    #[test]
    fn errors_name_the_object_and_nothing_is_half_returned() {
        let text = json!({"kind": "List", "items": [widget("a"), widget("bad")]}).to_string();
        assert_eq!(KINDS.read_json(&text).unwrap_err().to_string(), "items[1].metadata.name: bad name");
        let text = json!([widget("a"), 5]).to_string();
        assert_eq!(
            KINDS.read_json(&text).unwrap_err().to_string(),
            "[1]: a widget is a JSON object, not a number"
        );
        assert_eq!(KINDS.read_json("null").unwrap_err().to_string(), "a widget is a JSON object, not null");
        let e = KINDS.read_json("[\n  {\"kind\": \"Widget\",}\n]").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("", "not valid JSON: trailing comma at line 2 column 21")
        );
        assert_eq!(
            KINDS.read_json("").unwrap_err().to_string(),
            "not valid JSON: EOF while parsing a value at line 1 column 0"
        );
    }

    #[test]
    fn expect_names_the_field() {
        assert_eq!(expect("kind", "Widget", "Widget"), Ok(()));
        assert_eq!(
            expect("kind", "Pod", "Widget").unwrap_err().to_string(),
            "kind: \"Pod\" must be \"Widget\""
        );
    }
}
