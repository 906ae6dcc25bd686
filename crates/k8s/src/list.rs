//! The objects of a value that may hold several: an array of them, or a
//! Kubernetes `List` (`kubectl get -o yaml` writes `kind: List`, the API
//! server `kind: NetworkPolicyList` and the like). One place decides what
//! a List is, for files ([`crate::text`]) and for JSON texts
//! ([`crate::Kinds::read_json`]) alike.
//!
//! A List is read as `kubectl apply` reads one: any `kind` ending in
//! `List`, whatever its `apiVersion`; its `items` may be absent or `null`
//! (none, as Go reads it); Lists and arrays inside are flattened too.

use crate::{Invalid, de::json_type, invalid::join, names::quoted};
use serde_json::{Map, Value};

/// Every value `value` stands for, with its path (`[2]`, `items[2]`, empty
/// for `value` itself): arrays and Lists give their items, anything else
/// is one value, to be read (and refused if it is not an object) by the
/// caller. A malformed List is refused.
pub fn objects(value: &Value) -> Result<Vec<(String, &Value)>, Invalid> {
    let mut out = Vec::new();
    collect(value, String::new(), &mut out)?;
    Ok(out)
}

/// Whether `object` is a List: its `kind` ends in `List`.
pub fn is_list(object: &Map<String, Value>) -> bool {
    object.get("kind").and_then(Value::as_str).is_some_and(|kind| kind.ends_with("List"))
}

fn collect<'a>(value: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) -> Result<(), Invalid> {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect(item, format!("{path}[{i}]"), out)?;
            }
        }
        Value::Object(object) if is_list(object) => {
            let items = list_items(object).map_err(|e| e.within(&path))?;
            let holder = join(&path, "items");
            for (i, item) in items.iter().enumerate() {
                collect(item, format!("{holder}[{i}]"), out)?;
            }
        }
        _ => out.push((path, value)),
    }
    Ok(())
}

/// A List's items, after checking that it holds nothing else (`metadata`
/// is accepted and ignored: a List has no name).
fn list_items(list: &Map<String, Value>) -> Result<&[Value], Invalid> {
    if let Some(key) =
        list.keys().find(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "items"))
    {
        let reason =
            format!("unknown field {}; a List has apiVersion, kind, metadata and items", quoted(key));
        return Err(Invalid::new("", reason));
    }
    match list.get("items") {
        Some(Value::Array(items)) => Ok(items),
        None | Some(Value::Null) => Ok(&[]),
        Some(other) => Err(Invalid::new("items", format!("must be an array, not {}", json_type(other)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// (path, name) of every object found.
    fn found(value: Value) -> Vec<(String, String)> {
        objects(&value)
            .expect("accepted")
            .into_iter()
            .map(|(path, v)| (path, v["name"].as_str().unwrap_or("?").to_string()))
            .collect()
    }

    fn at(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(p, n)| (p.to_string(), n.to_string())).collect()
    }

    #[test]
    fn one_object_is_itself() {
        assert_eq!(found(json!({"kind": "Service", "name": "a"})), at(&[("", "a")]));
    }

    #[test]
    fn arrays_and_lists_give_their_items_with_paths() {
        assert_eq!(found(json!([{"name": "a"}, {"name": "b"}])), at(&[("[0]", "a"), ("[1]", "b")]));
        let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
                          "items": [{"name": "a"}, {"name": "b"}]});
        assert_eq!(found(list), at(&[("items[0]", "a"), ("items[1]", "b")]));
        // What the API server answers a list request with.
        let list = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicyList", "items": [{"name": "a"}]});
        assert_eq!(found(list), at(&[("items[0]", "a")]));
        // Nested, as kubectl flattens them.
        let nested = json!([{"kind": "List", "items": [{"name": "a"}, [{"name": "b"}]]}, {"name": "c"}]);
        assert_eq!(found(nested), at(&[("[0].items[0]", "a"), ("[0].items[1][0]", "b"), ("[1]", "c")]));
    }

    #[test]
    fn a_list_without_items_is_empty() {
        assert_eq!(found(json!({"kind": "List"})), vec![]);
        assert_eq!(found(json!({"kind": "List", "items": null})), vec![]);
        assert_eq!(found(json!([])), vec![]);
    }

    #[test]
    fn anything_else_is_left_to_the_caller() {
        let v = json!([5, null]);
        let got: Vec<(String, &Value)> = objects(&v).expect("accepted");
        assert_eq!(got, vec![("[0]".to_string(), &json!(5)), ("[1]".to_string(), &Value::Null)]);
    }

    #[test]
    fn malformed_lists_are_refused_where_they_are() {
        let e = objects(&json!({"kind": "List", "items": {}})).unwrap_err();
        assert_eq!(e.to_string(), "items: must be an array, not an object");
        let e = objects(&json!({"kind": "List", "items": [], "item": []})).unwrap_err();
        assert_eq!(e.to_string(), "unknown field \"item\"; a List has apiVersion, kind, metadata and items");
        let e = objects(&json!([{"name": "a"}, {"kind": "List", "items": 3}])).unwrap_err();
        assert_eq!(e.to_string(), "[1].items: must be an array, not a number");
        let e = objects(&json!([{"name": "a"}, {"kind": "List", "itemz": []}])).unwrap_err();
        assert_eq!(e.field, "[1]");
    }
}
