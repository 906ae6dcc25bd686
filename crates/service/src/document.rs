//! Reading service objects of any supported kind: a JSON value is
//! dispatched on `apiVersion` and `kind`, and a text may hold one object,
//! an array of them, or a Kubernetes `List`. All or nothing: one bad
//! object fails the whole text, with its place in the path (`items[2]`).

use crate::{
    Invalid, meta::ObjectMeta, names::quoted, service, service::Service, slice, slice::EndpointSlice,
};
use serde::Serialize;
use serde_json::{Map, Value};

/// A validated Service or EndpointSlice. Serializes as the object itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ServiceDocument {
    Service(Service),
    EndpointSlice(EndpointSlice),
}

const ACCEPTED: [(&str, &str); 2] =
    [(service::API_VERSION, service::KIND), (slice::API_VERSION, slice::KIND)];

impl ServiceDocument {
    /// Reads and validates one object, its type chosen by `apiVersion` and
    /// `kind`; anything else is refused with the list of accepted kinds.
    pub fn from_json(value: &Value) -> Result<ServiceDocument, Invalid> {
        let Value::Object(object) = value else {
            return Err(Invalid::new("", format!("an object is a JSON object, not {}", what(value))));
        };
        let api_version = type_field(object, "apiVersion")?;
        let kind = type_field(object, "kind")?;
        match (api_version, kind) {
            (service::API_VERSION, service::KIND) => Service::from_json(value).map(ServiceDocument::Service),
            (slice::API_VERSION, slice::KIND) => {
                EndpointSlice::from_json(value).map(ServiceDocument::EndpointSlice)
            }
            _ if ACCEPTED.iter().any(|(v, _)| *v == api_version) => Err(Invalid::new(
                "kind",
                format!("{} is not a supported kind of {api_version}; {}", quoted(kind), accepted()),
            )),
            _ => Err(Invalid::new(
                "apiVersion",
                format!("{} is not supported; {}", quoted(api_version), accepted()),
            )),
        }
    }

    /// Reads a JSON text: one object, an array, or a `List` (`{"apiVersion":
    /// "v1", "kind": "List", "items": [...]}`).
    pub fn parse_many(text: &str) -> Result<Vec<ServiceDocument>, Invalid> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Invalid::new("", format!("not valid JSON: {e}")))?;
        match &value {
            Value::Array(items) => from_each(items, ""),
            Value::Object(object) if object.get("kind").and_then(Value::as_str) == Some("List") => {
                from_each(list_items(object)?, "items")
            }
            Value::Object(_) => ServiceDocument::from_json(&value).map(|d| vec![d]),
            other => Err(Invalid::new(
                "",
                format!("expected an object, an array of them or a List, not {}", what(other)),
            )),
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            ServiceDocument::Service(s) => &s.metadata,
            ServiceDocument::EndpointSlice(s) => &s.metadata,
        }
    }
}

fn type_field<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a str, Invalid> {
    match object.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(Invalid::new(field, format!("missing; {}", accepted()))),
        Some(other) => Err(Invalid::new(field, format!("must be a string, not {}", what(other)))),
    }
}

fn accepted() -> String {
    let kinds: Vec<String> = ACCEPTED.iter().map(|(v, k)| format!("{v} {k}")).collect();
    format!("the accepted objects are {}", kinds.join(", "))
}

/// A List's items, after checking it holds nothing else (`metadata` of a
/// list is accepted and ignored).
fn list_items(list: &Map<String, Value>) -> Result<&[Value], Invalid> {
    if let Some(v) = list.get("apiVersion").filter(|v| !v.is_null())
        && v.as_str() != Some("v1")
    {
        return Err(Invalid::new("apiVersion", format!("a List has apiVersion \"v1\", not {v}")));
    }
    if let Some(key) =
        list.keys().find(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "items"))
    {
        return Err(Invalid::new(
            "",
            format!("unknown field {}; a List has apiVersion, kind, metadata and items", quoted(key)),
        ));
    }
    match list.get("items") {
        Some(Value::Array(items)) => Ok(items),
        None | Some(Value::Null) => Err(Invalid::new("items", "missing; a List holds its objects in items")),
        Some(other) => Err(Invalid::new("items", format!("must be an array, not {}", what(other)))),
    }
}

fn from_each(items: &[Value], holder: &str) -> Result<Vec<ServiceDocument>, Invalid> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| ServiceDocument::from_json(item).map_err(|e| e.within(&format!("{holder}[{i}]"))))
        .collect()
}

fn what(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{ClusterIp, ServiceKey};
    use serde_json::json;

    fn list() -> Value {
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
             "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "web"},
                      "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "web-x1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
             "addressType": "IPv4",
             "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}, "nodeName": "node1"}],
             "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
        ]})
    }

    #[test]
    fn a_list_of_a_service_and_its_slice() {
        let docs = ServiceDocument::parse_many(&list().to_string()).expect("parses");
        let [ServiceDocument::Service(svc), ServiceDocument::EndpointSlice(slice)] = docs.as_slice() else {
            panic!("unexpected documents: {docs:?}");
        };
        assert_eq!(svc.spec.cluster_ip(), ClusterIp::Addr("10.96.0.20".parse().expect("ip")));
        assert_eq!(slice.service_key(), svc.key());
        assert_eq!(docs[1].metadata().name, "web-x1");
        // The table built from them serves the service (full path).
        let mut table = crate::ServiceTable::new("node1");
        table.upsert_service(svc.clone()).expect("ids");
        table.upsert_slice(slice.clone()).expect("ids");
        let fes = table.frontends_of(&ServiceKey::new("shop", "web"));
        assert_eq!(fes.len(), 1);
        assert_eq!(fes[0].backends.len(), 1);
        assert_eq!(fes[0].backends[0].port, 8080);
    }

    #[test]
    fn errors_name_the_item() {
        let mut v = list();
        v["items"][1]["endpoints"][0]["addresses"][0] = json!("10.244.1");
        let e = ServiceDocument::parse_many(&v.to_string()).unwrap_err();
        assert_eq!(e.field, "items[1].endpoints[0].addresses[0]");
        let mut v = list();
        v["items"][0]["spec"]["ports"][0]["port"] = json!(0);
        assert_eq!(
            ServiceDocument::parse_many(&v.to_string()).unwrap_err().field,
            "items[0].spec.ports[0].port"
        );
        let arr = json!([list()["items"][0], {"apiVersion": "v1", "kind": "Pod"}]);
        let e = ServiceDocument::parse_many(&arr.to_string()).unwrap_err();
        assert_eq!(e.field, "[1].kind");
        assert!(e.reason.contains("v1 Service, discovery.k8s.io/v1 EndpointSlice"), "{e}");
        let e =
            ServiceDocument::from_json(&json!({"apiVersion": "apps/v1", "kind": "Deployment"})).unwrap_err();
        assert_eq!(e.field, "apiVersion");
        let e = ServiceDocument::from_json(&json!({"kind": "Service"})).unwrap_err();
        assert_eq!(e.field, "apiVersion");
        let e = ServiceDocument::parse_many(r#"{"kind": "List", "items": [], "extra": 1}"#).unwrap_err();
        assert!(e.reason.starts_with("unknown field \"extra\""), "{e}");
        assert!(ServiceDocument::parse_many("{").unwrap_err().reason.starts_with("not valid JSON"));
        assert_eq!(ServiceDocument::parse_many(&list()["items"][0].to_string()).expect("one").len(), 1);
    }
}
