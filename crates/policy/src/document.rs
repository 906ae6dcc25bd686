//! Reading policy documents of any supported kind: one JSON value is
//! dispatched on its `apiVersion` and `kind`, and a text may hold one
//! document, an array of them, or a Kubernetes `List` (the dispatch and
//! the Lists are `weft-k8s`'s, shared with `weft-service`).
//!
//! Everything returned has been validated, and a text with one bad
//! document yields an error only: a policy set applied in part could allow
//! what the missing part was meant to deny, or the reverse.

use crate::{
    Invalid, ObjectMeta,
    calico_policy::{self, CalicoNetworkPolicy, GlobalNetworkPolicy},
    netpol::{self, NetworkPolicy},
};
use serde::Serialize;
use serde_json::Value;
use weft_k8s::{Kind, Kinds};

/// A validated policy object of one of the supported kinds. Serializes as
/// the object itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PolicyDocument {
    /// `networking.k8s.io/v1` `NetworkPolicy`.
    K8s(NetworkPolicy),
    /// `projectcalico.org/v3` `NetworkPolicy`.
    Calico(CalicoNetworkPolicy),
    /// `projectcalico.org/v3` `GlobalNetworkPolicy`.
    CalicoGlobal(GlobalNetworkPolicy),
}

/// The kinds [`PolicyDocument::from_json`] reads.
const KINDS: Kinds<PolicyDocument> = Kinds::new(
    "policy document",
    &[
        Kind {
            api_version: netpol::API_VERSION,
            kind: netpol::KIND,
            read: |v| NetworkPolicy::from_json(v).map(PolicyDocument::K8s),
        },
        Kind {
            api_version: calico_policy::API_VERSION,
            kind: calico_policy::KIND,
            read: |v| CalicoNetworkPolicy::from_json(v).map(PolicyDocument::Calico),
        },
        Kind {
            api_version: calico_policy::API_VERSION,
            kind: calico_policy::GLOBAL_KIND,
            read: |v| GlobalNetworkPolicy::from_json(v).map(PolicyDocument::CalicoGlobal),
        },
    ],
);

impl PolicyDocument {
    /// Reads and validates one policy object, choosing its type by
    /// `apiVersion` and `kind`. Errors name the field (`spec.ingress[0]`);
    /// an unsupported kind is refused with the list of supported ones.
    pub fn from_json(value: &Value) -> Result<PolicyDocument, Invalid> {
        KINDS.read(value)
    }

    /// Reads a JSON text holding one policy object, a JSON array of them,
    /// or a Kubernetes `List` (`{"apiVersion": "v1", "kind": "List",
    /// "items": [...]}`). Errors name the document: `[2].spec...` in an
    /// array, `items[2].spec...` in a List. Any error fails the whole call.
    pub fn parse_many(text: &str) -> Result<Vec<PolicyDocument>, Invalid> {
        KINDS.read_json(text)
    }

    /// Checks the document again (it was checked when read; this is for
    /// one built or changed in code).
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            PolicyDocument::K8s(p) => p.validate(),
            PolicyDocument::Calico(p) => p.validate(),
            PolicyDocument::CalicoGlobal(p) => p.validate(),
        }
    }

    /// The object's metadata (name, namespace).
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            PolicyDocument::K8s(p) => &p.metadata,
            PolicyDocument::Calico(p) => &p.metadata,
            PolicyDocument::CalicoGlobal(p) => &p.metadata,
        }
    }

    /// The object's `kind`.
    pub fn kind(&self) -> &str {
        match self {
            PolicyDocument::K8s(p) => &p.kind,
            PolicyDocument::Calico(p) => &p.kind,
            PolicyDocument::CalicoGlobal(p) => &p.kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn k8s(name: &str) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        })
    }

    fn calico(name: &str) -> Value {
        json!({
            "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"selector": "app == 'web'", "ingress": [{"action": "Allow"}]}
        })
    }

    fn global(name: &str) -> Value {
        json!({
            "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": name},
            "spec": {"order": 10, "egress": [{"action": "Deny", "destination": {"nets": ["169.254.169.254/32"]}}]}
        })
    }

    fn refused(value: Value) -> Invalid {
        match PolicyDocument::from_json(&value) {
            Ok(doc) => panic!("{value} should be refused, got {doc:?}"),
            Err(e) => e,
        }
    }

    fn many_refused(text: &str) -> Invalid {
        match PolicyDocument::parse_many(text) {
            Ok(docs) => panic!("{text} should be refused, got {} documents", docs.len()),
            Err(e) => e,
        }
    }

    fn names(docs: &[PolicyDocument]) -> Vec<&str> {
        docs.iter().map(|d| d.metadata().name.as_str()).collect()
    }

    #[test]
    fn dispatches_on_api_version_and_kind() {
        let doc = PolicyDocument::from_json(&k8s("deny-all")).expect("accepted");
        assert!(matches!(&doc, PolicyDocument::K8s(p) if p.metadata.name == "deny-all"), "{doc:?}");
        let doc = PolicyDocument::from_json(&calico("allow-web")).expect("accepted");
        assert!(matches!(&doc, PolicyDocument::Calico(p) if p.spec.ingress.len() == 1), "{doc:?}");
        assert_eq!(doc.kind(), "NetworkPolicy");
        let doc = PolicyDocument::from_json(&global("block-metadata")).expect("accepted");
        assert!(matches!(&doc, PolicyDocument::CalicoGlobal(p) if p.spec.order == Some(10.0)), "{doc:?}");
        assert_eq!((doc.kind(), doc.metadata().namespace.as_deref()), ("GlobalNetworkPolicy", None));
        assert_eq!(doc.validate(), Ok(()));
    }

    #[test]
    fn serializes_as_the_object() {
        for value in [k8s("a"), calico("b"), global("c")] {
            let doc = PolicyDocument::from_json(&value).expect("accepted");
            let back = serde_json::to_value(&doc).expect("serializes");
            assert_eq!(back["kind"], value["kind"]);
            assert_eq!(PolicyDocument::from_json(&back).expect("accepted"), doc);
        }
    }

    #[test]
    fn unknown_kinds_are_refused_listing_the_accepted_ones() {
        let accepted = "the accepted kinds are networking.k8s.io/v1 NetworkPolicy, \
                        projectcalico.org/v3 NetworkPolicy, projectcalico.org/v3 GlobalNetworkPolicy";
        let mut doc = k8s("a");
        doc["apiVersion"] = json!("extensions/v1beta1");
        let e = refused(doc);
        assert_eq!(e.to_string(), format!("apiVersion: \"extensions/v1beta1\" is not supported; {accepted}"));
        let mut doc = calico("a");
        doc["kind"] = json!("NetworkSet");
        let e = refused(doc);
        assert_eq!(
            e.to_string(),
            format!("kind: \"NetworkSet\" is not a supported kind of projectcalico.org/v3; {accepted}")
        );
        // The right kind under the other API group is refused too.
        let mut doc = k8s("a");
        doc["kind"] = json!("GlobalNetworkPolicy");
        assert_eq!(refused(doc).field, "kind");
        let mut doc = k8s("a");
        doc["apiVersion"] = json!("crd.projectcalico.org/v1");
        assert_eq!(refused(doc).field, "apiVersion");
    }

    #[test]
    fn missing_or_odd_type_fields() {
        let mut doc = k8s("a");
        doc.as_object_mut().expect("an object").remove("kind");
        let e = refused(doc);
        assert_eq!(e.field, "kind");
        assert!(e.reason.starts_with("missing; the accepted kinds are"), "{e}");
        let mut doc = k8s("a");
        doc["apiVersion"] = json!(1);
        assert_eq!(refused(doc).to_string(), "apiVersion: must be a string, not a number");
        assert_eq!(refused(json!(["x"])).to_string(), "a policy document is a JSON object, not an array");
    }

    #[test]
    fn errors_inside_a_document_keep_their_path() {
        let mut doc = k8s("a");
        doc["spec"]["ingress"] =
            json!([{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]);
        assert_eq!(refused(doc).field, "spec.ingress[0].from[0].ipBlock.except[0]");
        let mut doc = global("a");
        doc["spec"]["egress"][0]["destination"]["ports"] = json!([80]);
        let e = refused(doc);
        assert_eq!(e.field, "spec.egress[0].destination.ports");
    }

    #[test]
    fn one_object() {
        let docs = PolicyDocument::parse_many(&k8s("only").to_string()).expect("accepted");
        assert_eq!(names(&docs), vec!["only"]);
    }

    #[test]
    fn an_array_of_objects() {
        let text = json!([k8s("one"), calico("two"), global("three")]).to_string();
        let docs = PolicyDocument::parse_many(&text).expect("accepted");
        assert_eq!(names(&docs), vec!["one", "two", "three"]);
        assert!(matches!(docs[2], PolicyDocument::CalicoGlobal(_)));
        assert_eq!(PolicyDocument::parse_many("[]").expect("accepted"), vec![]);
    }

    #[test]
    fn a_kubernetes_list() {
        let text = json!({
            "apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
            "items": [k8s("one"), global("two")]
        })
        .to_string();
        let docs = PolicyDocument::parse_many(&text).expect("accepted");
        assert_eq!(names(&docs), vec!["one", "two"]);
        // apiVersion may be left out.
        let text = json!({"kind": "List", "items": [calico("x")]}).to_string();
        assert_eq!(names(&PolicyDocument::parse_many(&text).expect("accepted")), vec!["x"]);
    }

    #[test]
    fn errors_name_the_document() {
        let mut bad = k8s("bad");
        bad["spec"]["ingress"] = json!([{"ports": [{"port": 0}]}]);
        let text = json!([k8s("a"), calico("b"), bad.clone()]).to_string();
        let e = many_refused(&text);
        assert_eq!(e.field, "[2].spec.ingress[0].ports[0].port");
        let text =
            json!({"apiVersion": "v1", "kind": "List", "items": [k8s("a"), calico("b"), bad]}).to_string();
        let e = many_refused(&text);
        assert_eq!(
            e.to_string(),
            "items[2].spec.ingress[0].ports[0].port: port 0 is out of range; ports are 1 to 65535"
        );
        // An error about a whole document is at its index.
        let e = many_refused(&json!([k8s("a"), 5]).to_string());
        assert_eq!(e.to_string(), "[1]: a policy document is a JSON object, not a number");
        // Lists in Lists are read through, their documents named by both.
        let mut bad = calico("bad");
        bad["spec"]["selector"] = json!("app ==");
        let inner = json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicyList", "items": [calico("a"), bad]});
        let e = many_refused(&json!({"kind": "List", "items": [k8s("b"), inner]}).to_string());
        assert_eq!(e.field, "items[1].items[1].spec.selector");
    }

    #[test]
    fn nothing_is_half_returned() {
        // The bad document is the last one: the good ones before it are
        // not returned either.
        let mut bad = calico("bad");
        bad["metadata"]["name"] = json!("Bad");
        let text = json!([k8s("a"), global("b"), bad]).to_string();
        assert_eq!(many_refused(&text).field, "[2].metadata.name");
    }

    #[test]
    fn invalid_json_gives_line_and_column() {
        let e = many_refused("[\n  {\"kind\": \"NetworkPolicy\",}\n]");
        assert_eq!(e.field, "");
        assert_eq!(e.reason, "not valid JSON: trailing comma at line 2 column 28");
        let e = many_refused("");
        assert_eq!(e.to_string(), "not valid JSON: EOF while parsing a value at line 1 column 0");
    }

    #[test]
    fn other_top_level_values_are_refused() {
        let e = many_refused("\"NetworkPolicy\"");
        assert_eq!(e.to_string(), "a policy document is a JSON object, not a string");
        assert_eq!(many_refused("null").reason, "a policy document is a JSON object, not null");
    }

    #[test]
    fn lists_are_read_as_kubectl_reads_them() {
        // What the API server answers `GET .../networkpolicies` with.
        let text = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicyList",
                          "metadata": {"resourceVersion": "7"}, "items": [k8s("a")]});
        assert_eq!(names(&PolicyDocument::parse_many(&text.to_string()).expect("accepted")), vec!["a"]);
        // No items (or null): no documents, as Go reads an empty list.
        for text in [r#"{"apiVersion": "v1", "kind": "List"}"#, r#"{"kind": "List", "items": null}"#] {
            assert_eq!(PolicyDocument::parse_many(text).expect("accepted"), vec![], "{text}");
        }
        let e = many_refused(r#"{"kind": "List", "items": {}}"#);
        assert_eq!(e.to_string(), "items: must be an array, not an object");
        let e = many_refused(r#"{"kind": "List", "items": [], "item": []}"#);
        assert_eq!(e.to_string(), "unknown field \"item\"; a List has apiVersion, kind, metadata and items");
    }
}
