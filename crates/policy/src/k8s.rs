//! The Kubernetes label selector (`metav1.LabelSelector`), as a
//! `networking.k8s.io/v1` NetworkPolicy carries it in `podSelector` and
//! `namespaceSelector`.
//!
//! A selector that is present but empty matches every object. What an
//! *absent* selector means depends on the field holding it (an absent
//! `namespaceSelector` in a peer means "the policy's own namespace"), so
//! the types that hold one use `Option<LabelSelector>` and decide there.

use crate::{Invalid, Labels};
use serde::{Deserialize, Serialize};
use weft_k8s::{
    invalid::map_key,
    names::{label_key, label_value},
};

/// A Kubernetes label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Each entry `k: v` requires label `k` to be present with value `v`.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub match_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
            label_value(value).map_err(|reason| Invalid::new(map_key(key), reason).within("matchLabels"))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use weft_k8s::from_value;

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
        let longest = format!("{}/{}", "a".repeat(253), "b".repeat(63));
        assert_eq!(sel(&[(&longest, &"c".repeat(63))], vec![]).validate(), Ok(()));
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
        // A value in matchLabels is at its key, quoted.
        let e = invalid(sel(&[("app", "a b")], vec![]));
        assert_eq!(e.field, "matchLabels[\"app\"]");
        assert!(e.reason.contains("contains ' '"), "{e}");
        let e = invalid(sel(&[("app.kubernetes.io/name", &"v".repeat(64))], vec![]));
        assert_eq!(e.field, "matchLabels[\"app.kubernetes.io/name\"]");
        assert!(e.reason.contains("64 bytes long; at most 63"), "{e}");
        for bad in ["a.", "_a", "é", "a/b", "a:b"] {
            assert_eq!(invalid(sel(&[("k", bad)], vec![])).field, "matchLabels[\"k\"]", "{bad}");
        }
    }

    #[test]
    fn bad_keys_are_named() {
        let key_error = |key: &str| invalid(exprs(vec![req("ok", Exists, &[]), req(key, Exists, &[])]));
        let e = key_error("");
        assert_eq!(e.field, "matchExpressions[1].key");
        assert_eq!(e.reason, "\"\" is not a valid label key: its name is empty");
        // The rules themselves are weft-k8s's; here, where their errors land.
        assert!(
            key_error("example.-com/x").reason.contains("its prefix has a part \"-com\" that must start")
        );
        // A key in matchLabels has no path of its own: the reason quotes it.
        let e = invalid(sel(&[("good", "x"), ("bad key", "x")], vec![]));
        assert_eq!(e.field, "matchLabels");
        assert!(e.reason.starts_with("\"bad key\" is not a valid label key"), "{e}");
    }

    #[test]
    fn match_labels_are_checked_before_expressions() {
        let e = invalid(sel(&[("k", "-")], vec![req("", In, &[])]));
        assert_eq!(e.field, "matchLabels[\"k\"]");
    }

    #[test]
    fn errors_take_the_path_of_the_selector() {
        let e = invalid(exprs(vec![req("a", In, &[])])).within("spec.podSelector");
        assert_eq!(e.field, "spec.podSelector.matchExpressions[0].values");
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
        let s: LabelSelector = read(json).expect("parses");
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
        assert_eq!(from_value::<LabelSelector>(&back).expect("parses"), expected);
    }

    fn read(json: &str) -> Result<LabelSelector, Invalid> {
        from_value(&serde_json::from_str(json).expect("JSON"))
    }

    #[test]
    fn empty_and_null_fields() {
        // `podSelector: {}` selects every pod of the namespace.
        let s = read("{}").expect("parses");
        assert!(s.is_empty());
        assert_eq!(serde_json::to_string(&s).expect("serializes"), "{}");
        let s = read(r#"{"matchLabels": null, "matchExpressions": null}"#).expect("parses");
        assert!(s.is_empty());
        let s = read(r#"{"matchExpressions": [{"key": "a", "operator": "Exists", "values": null}]}"#)
            .expect("parses");
        assert_eq!(s, exprs(vec![req("a", Exists, &[])]));
    }

    #[test]
    fn unknown_fields_and_operators_are_refused() {
        let e = read(r#"{"matchLabel": {"app": "web"}}"#).unwrap_err();
        assert_eq!(e.to_string(), "unknown field `matchLabel`, expected `matchLabels` or `matchExpressions`");
        let e = read(r#"{"matchExpressions": [{"key": "a", "operator": "Exists", "value": ["x"]}]}"#)
            .unwrap_err();
        assert_eq!(e.field, "matchExpressions[0]");
        assert!(e.reason.starts_with("unknown field `value`"), "{e}");
        let e = read(r#"{"matchExpressions": [{"key": "a", "operator": "in"}]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "matchExpressions[0].operator: unknown variant `in`, expected one of `In`, `NotIn`, `Exists`, `DoesNotExist`"
        );
        let e = read(r#"{"matchExpressions": [{"operator": "Exists"}]}"#).unwrap_err();
        assert_eq!(e.to_string(), "matchExpressions[0]: missing field `key`");
        let e = read(r#"{"matchLabels": {"app": null}}"#).unwrap_err();
        assert_eq!(e.to_string(), "matchLabels[\"app\"]: invalid type: null, expected a string");
    }
}
