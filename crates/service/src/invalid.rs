//! The one error type of the object readers: which field, and why.

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
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid { field: field.into(), reason: reason.into() }
    }

    /// The same error seen from the object holding the field: `prefix` is
    /// put in front of the path (`ports[0]` + `port` = `ports[0].port`;
    /// `items` + `[2]` = `items[2]`; an empty path becomes `prefix`).
    pub fn within(self, prefix: &str) -> Self {
        let field = match (prefix.is_empty(), self.field.is_empty()) {
            (true, _) => self.field,
            (false, true) => prefix.to_string(),
            (false, false) if self.field.starts_with('[') => format!("{prefix}{}", self.field),
            (false, false) => format!("{prefix}.{}", self.field),
        };
        Invalid { field, reason: self.reason }
    }
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
        assert_eq!(Invalid::new("[2]", "bad").within("items").field, "items[2]");
        assert_eq!(Invalid::new("", "bad").within("spec").field, "spec");
        assert_eq!(e.clone().within("").field, "port");
        assert_eq!(e.to_string(), "port: bad");
        assert_eq!(Invalid::new("", "bad").to_string(), "bad");
    }
}
