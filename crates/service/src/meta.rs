//! The `metadata` of a Service or an EndpointSlice: what identifies the
//! object, plus the fields the API server writes, accepted so that
//! `kubectl get -o json` output can be fed back in.

use crate::{
    Invalid, Labels,
    de::{Ignored, null_as_default},
    names,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The namespace of an object that names none, as `kubectl` assumes.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Object metadata: name, namespace, labels (an EndpointSlice names its
/// Service in a label) and annotations as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "RawObjectMeta")]
pub struct ObjectMeta {
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
    /// The namespace as written, else [`DEFAULT_NAMESPACE`].
    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// Checks the namespace (a DNS-1123 label) and the name with `name_rule`
    /// (each kind has its own). Paths are relative: `name`, `namespace`.
    pub(crate) fn validate(&self, name_rule: fn(&str) -> Result<(), String>) -> Result<(), Invalid> {
        name_rule(&self.name).map_err(|reason| Invalid::new("name", reason))?;
        if let Some(namespace) = &self.namespace {
            names::dns1123_label(namespace).map_err(|reason| Invalid::new("namespace", reason))?;
        }
        Ok(())
    }
}

/// What `metadata` may hold. Anything else is refused: a misspelt
/// `namespace` must not silently put the object in `default`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawObjectMeta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    labels: Labels,
    #[serde(default, deserialize_with = "null_as_default")]
    annotations: BTreeMap<String, String>,
    // Written by the API server or controllers; nothing here reads them.
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
    use crate::de::from_value;
    use serde_json::json;

    #[test]
    fn defaults_and_server_fields() {
        let m: ObjectMeta = from_value(&json!({
            "name": "web", "uid": "x", "resourceVersion": "12", "labels": null,
            "managedFields": [{"manager": "kubectl"}], "ownerReferences": [{"kind": "Service"}]
        }))
        .expect("parses");
        assert_eq!(m, ObjectMeta { name: "web".into(), ..ObjectMeta::default() });
        assert_eq!(m.namespace_or_default(), "default");
        let e = from_value::<ObjectMeta>(&json!({"name": "a", "namepsace": "x"})).unwrap_err();
        assert!(e.reason.starts_with("unknown field `namepsace`"), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        let m = ObjectMeta { name: "Web".into(), ..ObjectMeta::default() };
        assert_eq!(m.validate(names::dns1035_label).unwrap_err().field, "name");
        let m = ObjectMeta { name: "web".into(), namespace: Some("a.b".into()), ..ObjectMeta::default() };
        assert_eq!(m.validate(names::dns1035_label).unwrap_err().field, "namespace");
    }
}
