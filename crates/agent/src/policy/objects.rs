//! Policy objects in the cluster store, and the API that manages them:
//!
//! - `policies/<k8s|calico|global>/<namespace or _>/<name>`: a Kubernetes
//!   NetworkPolicy, Calico NetworkPolicy or GlobalNetworkPolicy, as JSON;
//! - `tiers/<name>`: a Calico Tier (its order);
//! - `namespaces/<name>`: a namespace's labels (kubernetes.io/metadata.name
//!   is implied).
//!
//! `weft policy apply` validates every document first (shape, and whether
//! the datapath can enforce it) and then writes them in one transaction:
//! a file with one bad document changes nothing.

use crate::{
    endpoint::{STORE, store_err},
    state::Agent,
};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use weft_api::{ApiError, NamespaceLabel, PolicyApply, PolicyApplyResult, PolicyName, code};
use weft_k8s::kinds::expect;
use weft_policy::{
    CompileError, Compiler, Invalid, Labels, ObjectMeta, PolicyDocument, PolicyKind, PolicyRef, calico_policy,
};
use weft_store::{Cmp, Op, Store};

pub const POLICIES: &str = "policies/";
pub const TIERS: &str = "tiers/";
pub const NAMESPACES: &str = "namespaces/";
/// `pods/<ns>/<name>/labels` (the relabel path) and `.../ports`.
pub const PODS: &str = "pods/";

pub fn pod_ports_key(namespace: &str, name: &str) -> String {
    format!("{PODS}{namespace}/{name}/ports")
}

/// The `kind` word of the CLI and the store key.
pub fn kind_word(k: PolicyKind) -> &'static str {
    match k {
        PolicyKind::K8s => "k8s",
        PolicyKind::Calico => "calico",
        PolicyKind::CalicoGlobal => "global",
    }
}

fn kind_of_word(w: &str) -> Option<PolicyKind> {
    match w {
        "k8s" => Some(PolicyKind::K8s),
        "calico" => Some(PolicyKind::Calico),
        "global" => Some(PolicyKind::CalicoGlobal),
        _ => None,
    }
}

pub fn policy_key(r: &PolicyRef) -> String {
    format!("{POLICIES}{}/{}/{}", kind_word(r.kind), r.namespace.as_deref().unwrap_or("_"), r.name)
}

/// `policies/<kind>/<ns>/<name>` (without the prefix too) -> the policy.
pub fn parse_policy_key(key: &str) -> Option<PolicyRef> {
    let rest = key.strip_prefix(POLICIES).unwrap_or(key);
    let mut it = rest.splitn(3, '/');
    let kind = kind_of_word(it.next()?)?;
    let ns = it.next()?;
    let name = it.next()?.to_string();
    let namespace = (kind != PolicyKind::CalicoGlobal).then(|| ns.to_string());
    Some(PolicyRef { kind, namespace, name })
}

/// The `kind` of a Calico Tier (`projectcalico.org/v3`).
const TIER_KIND: &str = "Tier";

/// A Calico Tier: where its policies stand among the others'.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TierDoc {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    #[serde(default)]
    spec: TierSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierSpec {
    /// Lower first; absent: after every ordered tier.
    #[serde(default)]
    order: Option<f64>,
}

/// The order a tier without one gets: after every ordered tier (Calico).
pub const TIER_ORDER_LAST: f64 = f64::MAX;

enum Doc {
    Policy(Box<PolicyDocument>, Value),
    Tier { name: String, order: f64, value: Value },
}

impl TierDoc {
    /// Reads and checks a Tier as the policy objects are read: errors
    /// name their field. Its name is a DNS-1123 label, the rule for the
    /// `spec.tier` that refers to it.
    fn from_json(v: &Value) -> Result<TierDoc, Invalid> {
        let t: TierDoc = weft_k8s::from_value(v)?;
        expect("apiVersion", &t.api_version, calico_policy::API_VERSION)?;
        expect("kind", &t.kind, TIER_KIND)?;
        t.metadata.validate(weft_k8s::names::dns1123_label).map_err(|e| e.within("metadata"))?;
        if t.spec.order.is_some_and(|o| !o.is_finite()) {
            return Err(Invalid::new("spec.order", "must be a finite number"));
        }
        Ok(t)
    }
}

fn parse(v: &Value) -> Result<Doc, String> {
    if v.get("kind").and_then(Value::as_str) == Some(TIER_KIND) {
        let t = TierDoc::from_json(v).map_err(|e| e.to_string())?;
        return Ok(Doc::Tier {
            name: t.metadata.name,
            order: t.spec.order.unwrap_or(TIER_ORDER_LAST),
            value: v.clone(),
        });
    }
    let doc = PolicyDocument::from_json(v).map_err(|e| e.to_string())?;
    Ok(Doc::Policy(Box::new(doc), v.clone()))
}

/// Tiers as stored: name -> order.
pub fn stored_tiers(store: &dyn Store) -> Result<BTreeMap<String, f64>, ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in store.list(TIERS).map_err(store_err(STORE))? {
        let name = k.strip_prefix(TIERS).unwrap_or(&k).to_string();
        out.insert(name, tier_order(&v));
    }
    Ok(out)
}

/// A stored tier's order.
pub fn tier_order(value: &[u8]) -> f64 {
    serde_json::from_slice::<Value>(value)
        .ok()
        .and_then(|v| v.pointer("/spec/order").and_then(Value::as_f64))
        .unwrap_or(TIER_ORDER_LAST)
}

/// Would the datapath enforce this policy as written? (A scratch compiler
/// with the tiers that will exist refuses what it cannot.)
fn check_enforceable(doc: &PolicyDocument, tiers: &BTreeMap<String, f64>) -> Result<(), CompileError> {
    let mut c = Compiler::new();
    for (t, o) in tiers {
        c.set_tier(t, *o);
    }
    c.upsert_policy(doc.clone()).map(|_| ())
}

/// `weft policy apply`: every document valid and enforceable, or nothing.
pub fn apply(agent: &Agent, req: &PolicyApply) -> Result<PolicyApplyResult, ApiError> {
    let docs = crate::requests::read_documents(&req.documents, parse)?;
    let mut tiers = stored_tiers(agent.store.as_ref())?;
    for d in &docs {
        if let Doc::Tier { name, order, .. } = d {
            tiers.insert(name.clone(), *order);
        }
    }
    let mut ops = Vec::new();
    let mut results = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let (key, value, what) = match d {
            Doc::Policy(doc, value) => {
                check_enforceable(doc, &tiers).map_err(|e| {
                    ApiError::bad_request(
                        format!("document {} cannot be enforced, nothing was applied", i + 1),
                        e.to_string(),
                    )
                })?;
                let r = PolicyRef::of(doc);
                (policy_key(&r), value, r.to_string())
            }
            Doc::Tier { name, value, .. } => (format!("{TIERS}{name}"), value, format!("Tier {name}")),
        };
        let bytes = serde_json::to_vec(value).expect("JSON values serialize");
        let old = agent.store.get(&key).map_err(store_err(STORE))?;
        let verb = match old {
            None => "created",
            Some(o) if serde_json::from_slice::<Value>(&o).ok().as_ref() == Some(value) => "unchanged",
            Some(_) => "configured",
        };
        results.push(format!("{what} {verb}"));
        ops.push(Op::Put(key, bytes));
    }
    if !agent.store.txn(&[], &ops).map_err(store_err(STORE))? {
        return Err(ApiError::new(
            code::TRY_AGAIN,
            "the cluster store did not apply the transaction",
            "try again",
        ));
    }
    for r in &results {
        log::info!("policy apply: {r}");
    }
    Ok(PolicyApplyResult { results })
}

/// The stored objects `name` can mean: (key, kind word).
fn find(store: &dyn Store, n: &PolicyName) -> Result<Vec<(String, String)>, ApiError> {
    let kinds: Vec<&str> = match n.kind.as_deref() {
        Some(k @ ("k8s" | "calico" | "global" | "tier")) => vec![k],
        Some(other) => {
            return Err(ApiError::bad_request(
                format!("unknown policy kind {other:?}"),
                "use k8s, calico, global or tier",
            ));
        }
        None => vec!["k8s", "calico", "global", "tier"],
    };
    let ns = n.namespace.as_deref().unwrap_or(weft_k8s::DEFAULT_NAMESPACE);
    let mut out = Vec::new();
    for k in kinds {
        let key = match k {
            "tier" => format!("{TIERS}{}", n.name),
            "global" => format!("{POLICIES}global/_/{}", n.name),
            k => format!("{POLICIES}{k}/{ns}/{}", n.name),
        };
        if store.get(&key).map_err(store_err(STORE))?.is_some() {
            out.push((key, k.to_string()));
        }
    }
    match out.len() {
        0 => Err(ApiError::new(
            code::UNKNOWN_CONTAINER,
            format!("no policy {:?} in namespace {ns}", n.name),
            "see `weft policy list`",
        )),
        1 => Ok(out),
        _ => Err(ApiError::bad_request(
            format!("{:?} names more than one object", n.name),
            format!("give --kind: {}", out.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>().join(", ")),
        )),
    }
}

pub fn get(agent: &Agent, n: &PolicyName) -> Result<Value, ApiError> {
    let (key, _) = find(agent.store.as_ref(), n)?.remove(0);
    let bytes = agent.store.get(&key).map_err(store_err(STORE))?.unwrap_or_default();
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(code::INTERNAL, format!("stored {key} is not JSON"), e.to_string()))
}

pub fn delete(agent: &Agent, n: &PolicyName) -> Result<(), ApiError> {
    let (key, _) = find(agent.store.as_ref(), n)?.remove(0);
    agent.store.delete(&key).map_err(store_err(STORE))?;
    log::info!("policy delete: {key}");
    Ok(())
}

/// Stored namespace labels (without the implied name label).
pub fn namespace_labels(store: &dyn Store, name: &str) -> Result<Labels, ApiError> {
    match store.get(&format!("{NAMESPACES}{name}")).map_err(store_err(STORE))? {
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| ApiError::new(code::INTERNAL, "stored namespace labels", e.to_string())),
        None => Ok(Labels::new()),
    }
}

/// `weft namespace label NS k=v k2-`: a compare-and-swap on the labels.
pub fn label_namespace(agent: &Agent, req: &NamespaceLabel) -> Result<Labels, ApiError> {
    weft_api::validate::pod_namespace(&req.name)
        .map_err(|e| ApiError::bad_request("invalid namespace name", e.to_string()))?;
    let key = format!("{NAMESPACES}{}", req.name);
    for _ in 0..10 {
        let old = agent.store.get(&key).map_err(store_err(STORE))?;
        let mut labels: Labels = match &old {
            Some(b) => serde_json::from_slice(b).unwrap_or_default(),
            None => Labels::new(),
        };
        for l in &req.labels {
            if let Some(k) = l.strip_suffix('-') {
                labels.remove(k);
            } else if let Some((k, v)) = l.split_once('=') {
                weft_api::validate::label(k, v)
                    .map_err(|e| ApiError::bad_request(format!("invalid label {l:?}"), e.to_string()))?;
                if k == weft_policy::model::NAMESPACE_NAME_LABEL {
                    return Err(ApiError::bad_request(
                        format!("{k} is the namespace's name"),
                        "it cannot be set",
                    ));
                }
                labels.insert(k.to_string(), v.to_string());
            } else {
                return Err(ApiError::bad_request(
                    format!("invalid label change {l:?}"),
                    "use key=value to set or key- to remove",
                ));
            }
        }
        let bytes = serde_json::to_vec(&labels).expect("labels serialize");
        let cmp = match old {
            Some(o) => Cmp::ValueIs(key.clone(), o),
            None => Cmp::Absent(key.clone()),
        };
        if agent.store.txn(&[cmp], &[Op::Put(key.clone(), bytes)]).map_err(store_err(STORE))? {
            log::info!("namespace {}: labels {:?}", req.name, labels);
            return Ok(labels);
        }
    }
    Err(ApiError::new(code::TRY_AGAIN, "the namespace's labels kept changing under us", "try again"))
}

/// `PodPorts`: a pod's named container ports, stored for every node (egress
/// rules resolve a port name on the destination pod, wherever it runs).
pub fn set_pod_ports(agent: &Agent, p: &weft_api::PodPorts) -> Result<(), ApiError> {
    use weft_api::validate as v;
    let invalid = |e: String| ApiError::bad_request("invalid pod ports", e);
    v::pod_namespace(&p.namespace).map_err(|e| invalid(e.to_string()))?;
    v::pod_name(&p.name).map_err(|e| invalid(e.to_string()))?;
    if p.ports.len() > 256 {
        return Err(invalid(format!("{} ports; a pod has at most 256 here", p.ports.len())));
    }
    for port in &p.ports {
        weft_k8s::names::port_name(&port.name).map_err(|e| invalid(format!("port {:?}: {e}", port.name)))?;
        if port.proto_number().is_none() {
            return Err(invalid(format!(
                "port {:?}: protocol {:?} is not TCP, UDP or SCTP",
                port.name, port.protocol
            )));
        }
        if port.port == 0 {
            return Err(invalid(format!("port {:?}: 0 is not a port", port.name)));
        }
    }
    let bytes = serde_json::to_vec(&p.ports).expect("ports serialize");
    agent.store.put(&pod_ports_key(&p.namespace, &p.name), &bytes).map_err(store_err(STORE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tier(order: Value) -> Value {
        json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "security"},
               "spec": {"order": order}})
    }

    fn refused(v: Value) -> String {
        match parse(&v) {
            Ok(_) => panic!("{v} should be refused"),
            Err(e) => e,
        }
    }

    #[test]
    fn tiers_are_read_like_the_policies() {
        let Ok(Doc::Tier { name, order, .. }) = parse(&tier(json!(100))) else { panic!("a tier") };
        assert_eq!((name.as_str(), order), ("security", 100.0));
        // A null order is an absent one: after every ordered tier.
        let Ok(Doc::Tier { order, .. }) = parse(&tier(Value::Null)) else { panic!("a tier") };
        assert_eq!(order, TIER_ORDER_LAST);
        assert_eq!(refused(tier(json!("first"))), "spec.order: invalid type: string \"first\", expected f64");
        let mut v = tier(json!(1));
        v["spec"]["ordr"] = json!(1);
        assert_eq!(refused(v), "spec: unknown field `ordr`, expected `order`");
        let mut v = tier(json!(1));
        v["apiVersion"] = json!("crd.projectcalico.org/v1");
        assert_eq!(refused(v), "apiVersion: \"crd.projectcalico.org/v1\" must be \"projectcalico.org/v3\"");
        // spec.tier is a DNS-1123 label, so a Tier's name is one too.
        let mut v = tier(json!(1));
        v["metadata"]["name"] = json!("net.security");
        assert!(refused(v).starts_with("metadata.name: \"net.security\" is not a valid DNS-1123 label"));
    }
}
