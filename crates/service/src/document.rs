//! Reading service objects of any supported kind: a JSON value is
//! dispatched on `apiVersion` and `kind`, and a text may hold one object,
//! an array of them, or a Kubernetes `List` (the dispatch and the Lists
//! are `weft-k8s`'s, shared with `weft-policy`). All or nothing: one bad
//! object fails the whole text, with its place in the path (`items[2]`).

use crate::{Invalid, ObjectMeta, service, service::Service, slice, slice::EndpointSlice};
use serde::Serialize;
use serde_json::Value;
use weft_k8s::{Kind, Kinds};

/// A validated Service or EndpointSlice. Serializes as the object itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ServiceDocument {
    Service(Service),
    EndpointSlice(EndpointSlice),
}

/// The kinds [`ServiceDocument::from_json`] reads.
const KINDS: Kinds<ServiceDocument> = Kinds::new(
    "Service or EndpointSlice",
    &[
        Kind {
            api_version: service::API_VERSION,
            kind: service::KIND,
            read: |v| Service::from_json(v).map(ServiceDocument::Service),
        },
        Kind {
            api_version: slice::API_VERSION,
            kind: slice::KIND,
            read: |v| EndpointSlice::from_json(v).map(ServiceDocument::EndpointSlice),
        },
    ],
);

impl ServiceDocument {
    /// Reads and validates one object, its type chosen by `apiVersion` and
    /// `kind`; anything else is refused with the list of accepted kinds.
    pub fn from_json(value: &Value) -> Result<ServiceDocument, Invalid> {
        KINDS.read(value)
    }

    /// Reads a JSON text: one object, an array, or a `List` (`{"apiVersion":
    /// "v1", "kind": "List", "items": [...]}`).
    pub fn parse_many(text: &str) -> Result<Vec<ServiceDocument>, Invalid> {
        KINDS.read_json(text)
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            ServiceDocument::Service(s) => &s.metadata,
            ServiceDocument::EndpointSlice(s) => &s.metadata,
        }
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
