//! The `metadata` of an object: what identifies it, plus the fields the
//! API server writes, accepted so that `kubectl get -o json` output can be
//! fed back in. Every kind has the same metadata; only the rule for its
//! name differs, so [`ObjectMeta::validate`] takes that rule.

use crate::{Ignored, Invalid, Labels, names};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The namespace of a namespaced object that names none, as `kubectl`
/// and `calicoctl` assume.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Object metadata: the name and namespace identify the object; labels
/// and annotations are kept as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "RawObjectMeta")]
pub struct ObjectMeta {
    /// The object's name, unique per kind (and namespace).
    pub name: String,
    /// As written; see [`ObjectMeta::namespace_or_default`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// The namespace a namespaced object lives in: as written, else
    /// [`DEFAULT_NAMESPACE`].
    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// Checks the name with `name_rule` (each kind has its own: most take
    /// [`names::dns1123_subdomain`], a Service [`names::dns1035_label`])
    /// and, when written, the namespace (a DNS-1123 label). Paths are
    /// relative: `name`, `namespace`.
    pub fn validate(&self, name_rule: fn(&str) -> Result<(), String>) -> Result<(), Invalid> {
        name_rule(&self.name).map_err(|reason| Invalid::new("name", reason))?;
        if let Some(namespace) = &self.namespace {
            names::dns1123_label(namespace).map_err(|reason| Invalid::new("namespace", reason))?;
        }
        Ok(())
    }
}

/// What `metadata` may hold. Anything else is refused, as a strict API
/// server refuses it: a misspelt `namespace` must not silently put the
/// object in `default`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawObjectMeta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    // Written by the API server or by controllers; nothing reads them.
    #[serde(default, rename = "generateName")]
    _generate_name: Option<Ignored>,
    #[serde(default, rename = "uid")]
    _uid: Option<Ignored>,
    #[serde(default, rename = "resourceVersion")]
    _resource_version: Option<Ignored>,
    #[serde(default, rename = "generation")]
    _generation: Option<Ignored>,
    #[serde(default, rename = "creationTimestamp")]
    _creation_timestamp: Option<Ignored>,
    #[serde(default, rename = "deletionTimestamp")]
    _deletion_timestamp: Option<Ignored>,
    #[serde(default, rename = "deletionGracePeriodSeconds")]
    _deletion_grace_period_seconds: Option<Ignored>,
    #[serde(default, rename = "ownerReferences")]
    _owner_references: Option<Ignored>,
    #[serde(default, rename = "finalizers")]
    _finalizers: Option<Ignored>,
    #[serde(default, rename = "managedFields")]
    _managed_fields: Option<Ignored>,
    #[serde(default, rename = "selfLink")]
    _self_link: Option<Ignored>,
}

impl From<RawObjectMeta> for ObjectMeta {
    fn from(raw: RawObjectMeta) -> Self {
        ObjectMeta {
            name: raw.name,
            namespace: raw.namespace,
            labels: raw.labels,
            annotations: raw.annotations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_value;
    use serde_json::json;

    #[test]
    fn namespace_defaults() {
        let m: ObjectMeta = from_value(&json!({"name": "a"})).expect("parses");
        assert_eq!((m.namespace.as_deref(), m.namespace_or_default()), (None, "default"));
        let m: ObjectMeta = from_value(&json!({"name": "a", "namespace": "prod"})).expect("parses");
        assert_eq!(m.namespace_or_default(), "prod");
        let m: ObjectMeta = from_value(&json!({"name": "a", "namespace": null})).expect("parses");
        assert_eq!(m.namespace, None);
    }

    #[test]
    fn server_written_fields_are_accepted_and_dropped() {
        let m: ObjectMeta = from_value(&json!({
            "name": "allow-dns", "namespace": "kube-system",
            "uid": "5f1c0a52-8d3e-4a47-9d0b-1f7e0c8d9a10", "resourceVersion": "48213",
            "generation": 3, "creationTimestamp": "2026-01-02T03:04:05Z",
            "managedFields": [{"manager": "kubectl", "operation": "Update"}],
            "ownerReferences": [{"kind": "Service"}],
            "labels": {"team": "net"}, "annotations": null
        }))
        .expect("parses");
        let expected = ObjectMeta {
            name: "allow-dns".into(),
            namespace: Some("kube-system".into()),
            labels: [("team".to_string(), "net".to_string())].into(),
            annotations: BTreeMap::new(),
        };
        assert_eq!(m, expected);
        assert_eq!(
            serde_json::to_value(&m).expect("serializes"),
            json!({"name": "allow-dns", "namespace": "kube-system", "labels": {"team": "net"}})
        );
    }

    #[test]
    fn unknown_and_missing_fields_are_refused() {
        let e = from_value::<ObjectMeta>(&json!({"name": "a", "namepsace": "prod"})).unwrap_err();
        assert_eq!(e.field, "");
        assert!(e.reason.starts_with("unknown field `namepsace`"), "{e}");
        let e = from_value::<ObjectMeta>(&json!({"namespace": "prod"})).unwrap_err();
        assert_eq!(e.reason, "missing field `name`");
        let e = from_value::<ObjectMeta>(&json!({"name": "a", "labels": {"app": 1}})).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("labels[\"app\"]", "invalid type: integer `1`, expected a string")
        );
    }

    #[test]
    fn validation_names_the_field() {
        let meta = |name: &str, namespace: Option<&str>| ObjectMeta {
            name: name.into(),
            namespace: namespace.map(Into::into),
            ..ObjectMeta::default()
        };
        let subdomain = names::dns1123_subdomain;
        assert_eq!(meta("web.allow-80", Some("prod-1")).validate(subdomain), Ok(()));
        let e = meta("Web", None).validate(subdomain).unwrap_err();
        assert_eq!(e.field, "name");
        assert!(e.reason.starts_with("\"Web\" is not a valid DNS-1123 subdomain"), "{e}");
        let e = meta("", None).validate(subdomain).unwrap_err();
        assert_eq!(e.reason, "\"\" is not a valid DNS-1123 subdomain: it is empty");
        // The name's rule is the caller's.
        assert_eq!(meta("web.x", None).validate(names::dns1035_label).unwrap_err().field, "name");
        let e = meta("web", Some("prod.eu")).validate(subdomain).unwrap_err();
        assert_eq!(e.field, "namespace");
        assert!(e.reason.contains("contains '.'"), "{e}");
    }
}
