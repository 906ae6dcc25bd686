//! The Kubernetes label selector (`metav1.LabelSelector`), as a
//! `networking.k8s.io/v1` NetworkPolicy carries it in `podSelector` and
//! `namespaceSelector`.
//!
//! A selector that is present but empty matches every object. What an
//! *absent* selector means depends on the field holding it (an absent
//! `namespaceSelector` in a peer means "the policy's own namespace"), so
//! the types that hold one use `Option<LabelSelector>` and decide there.

use crate::Labels;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A Kubernetes label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Each entry `k: v` requires label `k` to be present with value `v`.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Labels::is_empty")]
    pub match_labels: Labels,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// One entry of `matchExpressions`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Must be non-empty for `In` and `NotIn`, empty for the others
    /// ([`LabelSelector::validate`] checks it).
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The operator of a [`Requirement`], spelled as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Why a selector is refused: the path of the offending field inside the
/// selector (`matchExpressions[1].values`) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

/// How many characters of a bad key or value an error shows: the input may
/// come from anyone who can create a policy object.
const SHOWN_CHARS: usize = 64;
/// A label value, and the name part of a label key.
const MAX_NAME: usize = 63;
/// The optional prefix of a label key, a DNS-1123 subdomain.
const MAX_PREFIX: usize = 253;

impl LabelSelector {
    /// Whether an object with these labels is selected. All requirements
    /// are ANDed, so the empty selector selects everything.
    ///
    /// This does not validate: an invalid selector gets the answer its
    /// requirements literally give (an `In` without values never holds).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// True when the selector has no requirement (and so selects everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Checks the selector as the Kubernetes API server would: label keys
    /// and values well-formed, value lists that fit their operator. Stops
    /// at the first error, `matchLabels` (in key order) before
    /// `matchExpressions` (in list order).
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, value) in &self.match_labels {
            label_key(key).map_err(|reason| Invalid::new("matchLabels", reason))?;
            // The key is valid now, so it is short and safe to put in a path.
            label_value(value).map_err(|reason| Invalid::new(format!("matchLabels[{key}]"), reason))?;
        }
        for (i, requirement) in self.match_expressions.iter().enumerate() {
            requirement.validate().map_err(|e| e.within(&format!("matchExpressions[{i}]")))?;
        }
        Ok(())
    }
}

impl Requirement {
    /// Whether this one requirement holds. `NotIn` and `DoesNotExist` hold
    /// when the key is absent; `In` and `Exists` need it present.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }

    /// Field paths in the error are relative to the requirement (`key`,
    /// `values`, `values[2]`).
    pub fn validate(&self) -> Result<(), Invalid> {
        label_key(&self.key).map_err(|reason| Invalid::new("key", reason))?;
        match self.operator {
            Operator::In | Operator::NotIn if self.values.is_empty() => {
                return Err(Invalid::new(
                    "values",
                    format!("operator {:?} needs at least one value", self.operator),
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !self.values.is_empty() => {
                return Err(Invalid::new(
                    "values",
                    format!("operator {:?} takes no values, found {}", self.operator, self.values.len()),
                ));
            }
            _ => {}
        }
        for (i, value) in self.values.iter().enumerate() {
            label_value(value).map_err(|reason| Invalid::new(format!("values[{i}]"), reason))?;
        }
        Ok(())
    }
}

impl Invalid {
    /// An error at `field` (a path such as `spec.ingress[0].ports[1]`;
    /// empty for the whole object).
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid { field: field.into(), reason: reason.into() }
    }

    /// The same error, its field path prefixed with the path of what holds
    /// the selector (`spec.podSelector`, `matchExpressions[1]`). An empty
    /// path becomes the prefix itself, and an index (`[2].spec`) joins
    /// without a dot (`items[2].spec`).
    pub fn within(self, prefix: &str) -> Self {
        let field = if self.field.is_empty() {
            prefix.to_string()
        } else if self.field.starts_with('[') || prefix.is_empty() {
            format!("{prefix}{}", self.field)
        } else {
            format!("{prefix}.{}", self.field)
        };
        Invalid { field, reason: self.reason }
    }
}

/// `field: reason`, or just the reason when the error is about the whole
/// input (empty path).
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

/// Go's JSON decoder reads `null` as the empty value, and manifests do say
/// `matchLabels: null`; serde's `default` alone only covers absent fields.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A Kubernetes label key: `[prefix/]name`, the prefix a DNS-1123
/// subdomain of at most 253 bytes, the name 1 to 63 bytes of
/// `[A-Za-z0-9_.-]` starting and ending alphanumeric.
fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let part =
        |what: &str, rule: String| format!("{} is not a valid label key: its {what} {rule}", quoted(key));
    if let Some(prefix) = prefix {
        dns_subdomain(prefix).map_err(|rule| part("prefix", rule))?;
    }
    if name.is_empty() {
        return Err(part("name", "is empty".into()));
    }
    label_name(name).map_err(|rule| part("name", rule))
}

/// A Kubernetes label value: empty, or what the name of a key may be.
fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    label_name(value).map_err(|rule| format!("{} is not a valid label value: it {rule}", quoted(value)))
}

/// A non-empty `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?` of at most 63 bytes.
fn label_name(s: &str) -> Result<(), String> {
    check_len(s, MAX_NAME)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if let Some(c) = s.chars().find(|&c| !allowed(c)) {
        return Err(format!("contains {c:?}; only letters, digits, '-', '_' and '.' are allowed"));
    }
    starts_and_ends_alphanumeric(s, |c| c.is_ascii_alphanumeric(), "a letter or a digit")
}

/// A DNS-1123 subdomain: dot-separated parts of lowercase letters, digits
/// and '-', each starting and ending alphanumeric; at most 253 bytes.
pub(crate) fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    check_len(s, MAX_PREFIX)?;
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.');
    if let Some(c) = s.chars().find(|&c| !allowed(c)) {
        return Err(format!("contains {c:?}; only lowercase letters, digits, '-' and '.' are allowed"));
    }
    let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    for part in s.split('.') {
        if part.is_empty() {
            return Err("has an empty part between dots".into());
        }
        starts_and_ends_alphanumeric(part, lower_alnum, "a lowercase letter or a digit")
            .map_err(|rule| format!("part {} {rule}", quoted(part)))?;
    }
    Ok(())
}

fn check_len(s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("is {} bytes long; at most {max} are allowed", s.len()));
    }
    Ok(())
}

fn starts_and_ends_alphanumeric(s: &str, ok: impl Fn(char) -> bool, what: &str) -> Result<(), String> {
    if s.starts_with(&ok) && s.ends_with(&ok) {
        Ok(())
    } else {
        Err(format!("must start and end with {what}"))
    }
}

/// A value for an error message: quoted, escaped, and cut to
/// [`SHOWN_CHARS`] characters so a huge value cannot flood a log.
pub(crate) fn quoted(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement { key: key.into(), operator, values: values.iter().map(|v| v.to_string()).collect() }
    }

    fn sel(match_labels: &[(&str, &str)], match_expressions: Vec<Requirement>) -> LabelSelector {
        LabelSelector { match_labels: labels(match_labels), match_expressions }
    }

    fn exprs(match_expressions: Vec<Requirement>) -> LabelSelector {
        sel(&[], match_expressions)
    }

    use Operator::{DoesNotExist, Exists, In, NotIn};

    #[test]
    fn truth_table() {
        let web = labels(&[("app", "web"), ("tier", "frontend")]);
        let db = labels(&[("app", "db"), ("tier", "backend"), ("canary", "")]);
        let bare = labels(&[]);
        // (selector, selects web, selects db, selects bare)
        let cases: Vec<(LabelSelector, [bool; 3])> = vec![
            (sel(&[], vec![]), [true, true, true]),
            (sel(&[("app", "web")], vec![]), [true, false, false]),
            (sel(&[("app", "web"), ("tier", "backend")], vec![]), [false, false, false]),
            (sel(&[("app", "db"), ("tier", "backend")], vec![]), [false, true, false]),
            (exprs(vec![req("app", In, &["web", "db"])]), [true, true, false]),
            (exprs(vec![req("app", In, &["cache"])]), [false, false, false]),
            (exprs(vec![req("app", NotIn, &["web"])]), [false, true, true]),
            (exprs(vec![req("canary", Exists, &[])]), [false, true, false]),
            (exprs(vec![req("canary", DoesNotExist, &[])]), [true, false, true]),
            // An empty value is a value: the key is present.
            (exprs(vec![req("canary", In, &[""])]), [false, true, false]),
            (exprs(vec![req("canary", NotIn, &[""])]), [true, false, true]),
            (exprs(vec![req("app", Exists, &[]), req("tier", NotIn, &["backend"])]), [true, false, false]),
            (sel(&[("tier", "backend")], vec![req("app", NotIn, &["db"])]), [false, false, false]),
            (sel(&[("tier", "frontend")], vec![req("canary", DoesNotExist, &[])]), [true, false, false]),
        ];
        for (selector, expected) in cases {
            let got = [selector.matches(&web), selector.matches(&db), selector.matches(&bare)];
            assert_eq!(got, expected, "{selector:?}");
        }
    }

    #[test]
    fn match_labels_compare_values_exactly() {
        let s = sel(&[("app", "web")], vec![]);
        assert!(!s.matches(&labels(&[("app", "Web")])));
        assert!(!s.matches(&labels(&[("app", "web ")])));
        assert!(!s.matches(&labels(&[("App", "web")])));
        assert!(s.matches(&labels(&[("app", "web"), ("other", "x")])));
    }

    #[test]
    fn invalid_requirements_match_literally() {
        // Refused by validate(), but matches() must not panic or guess.
        assert!(!exprs(vec![req("app", In, &[])]).matches(&labels(&[("app", "web")])));
        assert!(exprs(vec![req("app", NotIn, &[])]).matches(&labels(&[("app", "web")])));
        assert!(exprs(vec![req("app", Exists, &["x"])]).matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn is_empty() {
        assert!(LabelSelector::default().is_empty());
        assert!(!sel(&[("a", "b")], vec![]).is_empty());
        assert!(!exprs(vec![req("a", Exists, &[])]).is_empty());
    }

    #[test]
    fn valid_selectors_pass() {
        let s = sel(
            &[("app", "web"), ("example.com/team", "a.b-c_d"), ("empty", "")],
            vec![
                req("app.kubernetes.io/name", In, &["x", "Y9"]),
                req("k", NotIn, &[""]),
                req("K_8.s-9", Exists, &[]),
                req("a.b-c.d/e", DoesNotExist, &[]),
            ],
        );
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(LabelSelector::default().validate(), Ok(()));
        let longest = format!("{}/{}", "a".repeat(MAX_PREFIX), "b".repeat(MAX_NAME));
        assert_eq!(sel(&[(&longest, &"c".repeat(MAX_NAME))], vec![]).validate(), Ok(()));
    }

    fn invalid(s: LabelSelector) -> Invalid {
        match s.validate() {
            Err(e) => e,
            Ok(()) => panic!("{s:?} should be invalid"),
        }
    }

    #[test]
    fn operator_value_counts() {
        let e = invalid(exprs(vec![req("a", Exists, &[]), req("b", In, &[])]));
        assert_eq!(e.field, "matchExpressions[1].values");
        assert_eq!(e.to_string(), "matchExpressions[1].values: operator In needs at least one value");
        let e = invalid(exprs(vec![req("b", NotIn, &[])]));
        assert_eq!(e.field, "matchExpressions[0].values");
        assert!(e.reason.contains("NotIn needs at least one value"), "{e}");
        let e = invalid(exprs(vec![req("a", In, &["x"]), req("b", In, &["y"]), req("c", Exists, &["z"])]));
        assert_eq!(e.to_string(), "matchExpressions[2].values: operator Exists takes no values, found 1");
        let e = invalid(exprs(vec![req("c", DoesNotExist, &["y", "z"])]));
        assert!(e.reason.contains("DoesNotExist takes no values, found 2"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = invalid(exprs(vec![req("a", In, &["ok", "-bad"])]));
        assert_eq!(e.field, "matchExpressions[0].values[1]");
        assert_eq!(
            e.reason,
            "\"-bad\" is not a valid label value: it must start and end with a letter or a digit"
        );
        let e = invalid(sel(&[("app", "a b")], vec![]));
        assert_eq!(e.field, "matchLabels[app]");
        assert!(e.reason.contains("contains ' '"), "{e}");
        let e = invalid(sel(&[("app", &"v".repeat(64))], vec![]));
        assert!(e.reason.contains("64 bytes long; at most 63"), "{e}");
        for bad in ["a.", "_a", "é", "a/b", "a:b"] {
            assert_eq!(invalid(sel(&[("k", bad)], vec![])).field, "matchLabels[k]", "{bad}");
        }
    }

    #[test]
    fn bad_keys_are_named() {
        let key_error = |key: &str| invalid(exprs(vec![req("ok", Exists, &[]), req(key, Exists, &[])]));
        let e = key_error("");
        assert_eq!(e.field, "matchExpressions[1].key");
        assert_eq!(e.reason, "\"\" is not a valid label key: its name is empty");
        assert!(key_error("a b").reason.contains("its name contains ' '"));
        assert!(key_error("-a").reason.contains("its name must start and end with a letter or a digit"));
        assert!(key_error(&"k".repeat(64)).reason.contains("its name is 64 bytes long; at most 63"));
        assert!(key_error("example.com/").reason.contains("its name is empty"));
        assert!(key_error("/name").reason.contains("its prefix is empty"));
        assert!(key_error("a/b/c").reason.contains("its name contains '/'"));
        assert!(key_error("Example.com/x").reason.contains("its prefix contains 'E'"));
        assert!(key_error("example_com/x").reason.contains("its prefix contains '_'"));
        assert!(key_error("example..com/x").reason.contains("its prefix has an empty part"));
        assert!(key_error("example.-com/x").reason.contains("part \"-com\" must start and end"));
        let long_prefix = format!("{}/x", "a".repeat(MAX_PREFIX + 1));
        assert!(key_error(&long_prefix).reason.contains("prefix is 254 bytes long; at most 253"));
        // A key in matchLabels has no path of its own: the reason quotes it.
        let e = invalid(sel(&[("good", "x"), ("bad key", "x")], vec![]));
        assert_eq!(e.field, "matchLabels");
        assert!(e.reason.starts_with("\"bad key\" is not a valid label key"), "{e}");
    }

    #[test]
    fn match_labels_are_checked_before_expressions() {
        let e = invalid(sel(&[("k", "-")], vec![req("", In, &[])]));
        assert_eq!(e.field, "matchLabels[k]");
    }

    #[test]
    fn huge_values_are_shown_cut() {
        let e = invalid(sel(&[("k", &"x".repeat(1 << 20))], vec![]));
        assert!(e.reason.len() < 200, "{} bytes", e.reason.len());
        assert!(e.reason.contains("(1048576 bytes)"), "{e}");
    }

    #[test]
    fn within_prefixes_the_path() {
        let e = invalid(exprs(vec![req("a", In, &[])])).within("spec.podSelector");
        assert_eq!(e.field, "spec.podSelector.matchExpressions[0].values");
        // An error about the holder itself takes the holder's path.
        assert_eq!(Invalid::new("", "r").within("spec.ingress[0].from[1]").field, "spec.ingress[0].from[1]");
        // Indexes join without a dot, in both directions.
        assert_eq!(Invalid::new("[2].spec", "r").within("items").field, "items[2].spec");
        assert_eq!(Invalid::new("spec", "r").within("[2]").field, "[2].spec");
        assert_eq!(Invalid::new("spec", "r").within("").field, "spec");
    }

    #[test]
    fn display_of_a_whole_input_error_is_the_reason() {
        assert_eq!(Invalid::new("", "not JSON").to_string(), "not JSON");
        assert_eq!(Invalid::new("spec", "bad").to_string(), "spec: bad");
    }

    #[test]
    fn from_kubernetes_json() {
        let json = r#"{
            "matchLabels": {"app": "web", "app.kubernetes.io/part-of": "shop"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["frontend", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }"#;
        let s: LabelSelector = serde_json::from_str(json).expect("parses");
        let expected = sel(
            &[("app", "web"), ("app.kubernetes.io/part-of", "shop")],
            vec![req("tier", In, &["frontend", "edge"]), req("canary", DoesNotExist, &[])],
        );
        assert_eq!(s, expected);
        assert_eq!(s.validate(), Ok(()));
        // Written back the way Kubernetes writes it: empty fields omitted.
        let back = serde_json::to_value(&s).expect("serializes");
        assert_eq!(
            back["matchExpressions"][1],
            serde_json::json!({"key": "canary", "operator": "DoesNotExist"})
        );
        assert_eq!(serde_json::from_value::<LabelSelector>(back).expect("parses"), expected);
    }

    #[test]
    fn empty_and_null_fields() {
        // `podSelector: {}` selects every pod of the namespace.
        let s: LabelSelector = serde_json::from_str("{}").expect("parses");
        assert!(s.is_empty());
        assert_eq!(serde_json::to_string(&s).expect("serializes"), "{}");
        let s: LabelSelector =
            serde_json::from_str(r#"{"matchLabels": null, "matchExpressions": null}"#).expect("parses");
        assert!(s.is_empty());
        let s: LabelSelector = serde_json::from_str(
            r#"{"matchExpressions": [{"key": "a", "operator": "Exists", "values": null}]}"#,
        )
        .expect("parses");
        assert_eq!(s, exprs(vec![req("a", Exists, &[])]));
    }

    #[test]
    fn unknown_fields_and_operators_are_refused() {
        let e = serde_json::from_str::<LabelSelector>(r#"{"matchLabel": {"app": "web"}}"#).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unknown field `matchLabel`"), "{msg}");
        assert!(msg.contains("`matchLabels`") && msg.contains("`matchExpressions`"), "{msg}");
        let e = serde_json::from_str::<LabelSelector>(
            r#"{"matchExpressions": [{"key": "a", "operator": "Exists", "value": ["x"]}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `value`"), "{e}");
        let e = serde_json::from_str::<LabelSelector>(
            r#"{"matchExpressions": [{"key": "a", "operator": "in"}]}"#,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unknown variant `in`") && msg.contains("`In`"), "{msg}");
        let e = serde_json::from_str::<LabelSelector>(r#"{"matchExpressions": [{"operator": "Exists"}]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("missing field `key`"), "{e}");
    }
}
