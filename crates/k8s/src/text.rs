//! Reading objects from a file as people write them: YAML (one or many
//! documents separated by `---`) or JSON, each document an object, an
//! array of objects or a Kubernetes `List` ([`crate::list`]). The result
//! is JSON values, one per object, for a [`crate::Kinds`] reader (or any
//! other); `weft policy apply` and `weft service apply` send them to the
//! agent as they are.

use crate::{de::json_type, list};
use serde_json::{Map, Number, Value};
use yaml_rust2::{
    Yaml, YamlLoader,
    parser::{Event, Parser},
};

/// Texts larger than this are refused (an object file is kilobytes).
pub const MAX_TEXT: usize = 1 << 20;

/// Every object of a YAML or JSON text, in order; empty YAML documents
/// are skipped. Errors say where: `document 2: items[1]: ...` (the
/// document only when the text is YAML).
pub fn objects(text: &str) -> Result<Vec<Value>, String> {
    if text.len() > MAX_TEXT {
        return Err(format!("the text is {} bytes; at most {MAX_TEXT} are read", text.len()));
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let doc = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        return objects_of(&doc);
    }
    refuse_aliases(text)?;
    let yaml = YamlLoader::load_from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut out = Vec::new();
    for (i, y) in yaml.iter().enumerate() {
        let doc = to_json(y).and_then(|doc| match doc {
            Value::Null => Ok(vec![]),
            doc => objects_of(&doc),
        });
        out.extend(doc.map_err(|e| format!("document {}: {e}", i + 1))?);
    }
    Ok(out)
}

/// The objects of one document; anything else in it is refused.
fn objects_of(doc: &Value) -> Result<Vec<Value>, String> {
    let found = list::objects(doc).map_err(|e| e.to_string())?;
    found
        .into_iter()
        .map(|(path, v)| match v {
            Value::Object(_) => Ok(v.clone()),
            other => {
                let at = if path.is_empty() { String::new() } else { format!("{path}: ") };
                Err(format!("{at}expected an object, not {}", json_type(other)))
            }
        })
        .collect()
}

/// The loader copies an alias's value at every use, so a few hundred bytes
/// of nested aliases expand to billions of values: aliases are refused
/// before loading (an object file has no use for them).
fn refuse_aliases(text: &str) -> Result<(), String> {
    let mut p = Parser::new_from_str(text);
    loop {
        match p.next_token().map_err(|e| format!("not valid YAML: {e}"))? {
            (Event::StreamEnd, _) => return Ok(()),
            (Event::Alias(_), mark) => {
                return Err(format!(
                    "YAML aliases (*name) are not supported (line {}); write the value out",
                    mark.line()
                ));
            }
            _ => {}
        }
    }
}

fn to_json(y: &Yaml) -> Result<Value, String> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::Number((*i).into()),
        Yaml::Real(s) => {
            let f: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
            Value::Number(Number::from_f64(f).ok_or_else(|| format!("{s} is not a finite number"))?)
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => return Err(format!("a mapping key must be a scalar, not {other:?}")),
                };
                m.insert(key, to_json(v)?);
            }
            Value::Object(m)
        }
        Yaml::Alias(_) => return Err("YAML aliases are not supported; write the value out".into()),
        Yaml::BadValue => return Err("a value YAML cannot represent".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_lists_and_json_all_read_as_objects() {
        let yaml = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: a\nspec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n---\n# nothing\n---\nkind: List\nitems:\n- {kind: X, metadata: {name: b}}\n- {kind: X, metadata: {name: c}}\n";
        let objs = objects(yaml).unwrap();
        assert_eq!(objs.len(), 3);
        assert_eq!(objs[0]["spec"]["ingress"][0]["ports"][0]["port"], 80);
        assert_eq!(objs[0]["spec"]["podSelector"], serde_json::json!({}));
        assert_eq!(objs[2]["metadata"]["name"], "c");
        let json = r#"[{"kind":"X"},{"kind":"Y"}]"#;
        assert_eq!(objects(json).unwrap().len(), 2);
        assert_eq!(objects("").unwrap(), Vec::<Value>::new());
    }

    #[test]
    fn bad_input_says_what_and_where() {
        assert!(objects("a: [1, 2").unwrap_err().starts_with("not valid YAML"));
        assert!(objects("{\"a\": ").unwrap_err().starts_with("not valid JSON"));
        assert!(
            objects("a: &x 1\nb: *x\n").unwrap_err().contains("aliases (*name) are not supported (line 2)")
        );
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            bomb += &format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
                p = i - 1
            );
        }
        let started = std::time::Instant::now();
        assert!(objects(&bomb).unwrap_err().contains("aliases"));
        assert!(started.elapsed().as_secs() < 2, "refused before expanding");
        assert_eq!(objects("---\n42\n").unwrap_err(), "document 1: expected an object, not a number");
        assert_eq!(
            objects("kind: X\n---\nkind: List\nitems:\n- kind: X\n- \n").unwrap_err(),
            "document 2: items[1]: expected an object, not null"
        );
        assert_eq!(
            objects("kind: List\nitems: {a: 1}\n").unwrap_err(),
            "document 1: items: must be an array, not an object"
        );
        assert_eq!(objects("[{\"kind\": \"X\"}, 5]").unwrap_err(), "[1]: expected an object, not a number");
        assert!(objects(&"x".repeat(MAX_TEXT + 1)).unwrap_err().contains("at most"));
    }
}
