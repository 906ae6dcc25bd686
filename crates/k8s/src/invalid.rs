//! The one error type of the object readers and validators: which field,
//! and why. Reading ([`crate::de`]) and validation (each object's
//! `validate`) both report through it, so a path is written the same way
//! whichever step refused the object.
//!
//! A path is what an operator would type to reach the field: struct fields
//! joined with dots, array indexes and map keys in brackets, a map key
//! always quoted (`metadata.labels["app.kubernetes.io/name"]`), since a key
//! is data and may hold dots, slashes or brackets itself.

use crate::names::quoted;
use std::fmt;

/// Why an object is refused: the path of the offending field
/// (`spec.ports[1].targetPort`, empty for the whole object) and the rule
/// it breaks, so that whoever wrote the object can find and fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    /// An error at `field` (a path; empty for the whole object).
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid { field: field.into(), reason: reason.into() }
    }

    /// The same error seen from what holds the field: `prefix` is put in
    /// front of the path (`ports[0]` + `port` = `ports[0].port`). An empty
    /// path becomes `prefix`, and a path that starts with an index or key
    /// joins without a dot (`items` + `[2].spec` = `items[2].spec`).
    pub fn within(self, prefix: &str) -> Self {
        Invalid { field: join(prefix, &self.field), reason: self.reason }
    }
}

/// `path` seen from what holds it, as [`Invalid::within`] joins them.
pub fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// The path step of a map key: `["app.kubernetes.io/name"]`, quoted and
/// escaped, and cut short when long (keys are input too). Join it to the
/// map's path with [`Invalid::within`].
pub fn map_key(key: &str) -> String {
    format!("[{}]", quoted(key))
}

/// `field: reason`, or the reason alone when it is about the whole input.
impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for Invalid {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join() {
        let e = Invalid::new("port", "bad");
        assert_eq!(e.clone().within("ports[0]").within("spec").field, "spec.ports[0].port");
        // An error about the holder itself takes the holder's path.
        assert_eq!(Invalid::new("", "r").within("spec.ingress[0].from[1]").field, "spec.ingress[0].from[1]");
        // Indexes join without a dot, in both directions.
        assert_eq!(Invalid::new("[2].spec", "r").within("items").field, "items[2].spec");
        assert_eq!(Invalid::new("spec", "r").within("[2]").field, "[2].spec");
        assert_eq!(e.within("").field, "port");
    }

    #[test]
    fn map_keys_are_quoted() {
        let e = Invalid::new(map_key("app.kubernetes.io/name"), "bad").within("podSelector.matchLabels");
        assert_eq!(e.field, "podSelector.matchLabels[\"app.kubernetes.io/name\"]");
        assert_eq!(map_key("app"), "[\"app\"]");
        assert_eq!(map_key("a\"]b"), "[\"a\\\"]b\"]");
        assert_eq!(map_key(&"k".repeat(100)), format!("[{:?}… (100 bytes)]", "k".repeat(64)));
    }

    #[test]
    fn display_of_a_whole_input_error_is_the_reason() {
        assert_eq!(Invalid::new("", "not JSON").to_string(), "not JSON");
        assert_eq!(Invalid::new("spec", "bad").to_string(), "spec: bad");
    }
}
