//! The cluster as the policy compiler sees it: namespaces (with the ids the
//! datapath knows them by), pod security identities, tiers and policies.
//!
//! This is plain data with the invariants the compiler relies on checked at
//! the door (an identity's namespace exists, namespace ids are unique and
//! not 0). [`crate::decide`] reads it directly; [`crate::Compiler`] keeps
//! one privately, next to the caches derived from it.

use crate::{Labels, PolicyDocument, calico_policy, netpol::PolicyType};
use std::{
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
};

/// The reserved identity of this node (the host's own addresses).
pub const HOST: u32 = 1;
/// The reserved identity of every address outside the cluster.
pub const WORLD: u32 = 2;
/// The reserved identity of another node's addresses.
pub const REMOTE_NODE: u32 = 6;
/// Pod identities are allocated from here up; anything below is reserved.
pub const FIRST_POD_IDENTITY: u32 = 256;

/// The label every namespace carries with its own name (Kubernetes sets it
/// since 1.21; [`Cluster::upsert_namespace`] adds it if missing).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The label Calico selectors see on every pod: its namespace's name.
pub const CALICO_NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
/// The order of a tier that was not given one (Calico's `default` tier).
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;
/// The order a Kubernetes NetworkPolicy has in the `default` tier, as
/// Calico gives it.
pub const K8S_POLICY_ORDER: f64 = 1000.0;

/// Container port names to the (IP protocol, port) pairs they stand for.
/// A set, because one identity is many pods and a name may differ between
/// them: a named port matches any of its values.
pub type NamedPorts = BTreeMap<String, BTreeSet<(u8, u16)>>;

/// The two directions of a flow, seen from the local endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// The peer is the source.
    Ingress,
    /// The peer is the destination.
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub(crate) fn policy_type(self) -> PolicyType {
        match self {
            Direction::Ingress => PolicyType::Ingress,
            Direction::Egress => PolicyType::Egress,
        }
    }
}

/// A namespace: the id the datapath sees for its pods, and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Never 0 (0 means "not a pod" in the datapath).
    pub id: u16,
    /// Always holds [`NAMESPACE_NAME_LABEL`].
    pub labels: Labels,
}

/// A pod security identity: the pods of one namespace that share labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    /// The pods' own labels (without [`CALICO_NAMESPACE_LABEL`]).
    pub labels: Labels,
    /// The union of the named container ports of the identity's pods, for
    /// egress rules that name a port.
    pub named_ports: NamedPorts,
}

/// The local endpoint a policy is compiled for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub identity: u32,
    pub namespace: String,
    /// The pod's own labels.
    pub labels: Labels,
    /// The pod's named container ports, for ingress rules that name a port.
    pub named_ports: NamedPorts,
    /// The pod's address, for Calico rules whose local side has `nets`.
    pub addr: Ipv4Addr,
}

/// Which of the three policy kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// `networking.k8s.io/v1` NetworkPolicy.
    K8s,
    /// `projectcalico.org/v3` NetworkPolicy.
    Calico,
    /// `projectcalico.org/v3` GlobalNetworkPolicy.
    CalicoGlobal,
}

/// What identifies a policy: kind, namespace (none for global ones), name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyRef {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl PolicyRef {
    pub fn of(doc: &PolicyDocument) -> PolicyRef {
        let meta = doc.metadata();
        let (kind, namespace) = match doc {
            PolicyDocument::K8s(_) => (PolicyKind::K8s, Some(meta.namespace_or_default().to_string())),
            PolicyDocument::Calico(_) => (PolicyKind::Calico, Some(meta.namespace_or_default().to_string())),
            PolicyDocument::CalicoGlobal(_) => (PolicyKind::CalicoGlobal, None),
        };
        PolicyRef { kind, namespace, name: meta.name.clone() }
    }
}

/// `NetworkPolicy shop/allow-web`, `projectcalico.org/v3 NetworkPolicy
/// shop/deny-db`, `GlobalNetworkPolicy block-metadata`.
impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            PolicyKind::K8s => "NetworkPolicy",
            PolicyKind::Calico => "projectcalico.org/v3 NetworkPolicy",
            PolicyKind::CalicoGlobal => "GlobalNetworkPolicy",
        };
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

/// Why a change to the cluster model is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// An identity names a namespace that is not known (add it first).
    UnknownNamespace { namespace: String },
    /// Another namespace already has this id.
    NamespaceIdTaken { id: u16, by: String },
    /// Namespace id 0 means "not a pod" to the datapath.
    ZeroNamespaceId { namespace: String },
    /// Identities below [`FIRST_POD_IDENTITY`] are reserved.
    ReservedIdentity { id: u32 },
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::UnknownNamespace { namespace } => write!(f, "namespace {namespace:?} is not known"),
            UpdateError::NamespaceIdTaken { id, by } => write!(f, "namespace id {id} is taken by {by:?}"),
            UpdateError::ZeroNamespaceId { namespace } => {
                write!(f, "namespace {namespace:?} cannot have id 0 (it means \"not a pod\")")
            }
            UpdateError::ReservedIdentity { id } => {
                write!(f, "identity {id} is reserved; pod identities start at {FIRST_POD_IDENTITY}")
            }
        }
    }
}

impl std::error::Error for UpdateError {}

/// Why an endpoint's policy cannot be compiled (or decided). The agent
/// then keeps the endpoint's last good policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileError {
    /// A policy that applies to the endpoint is in a tier that is not known.
    UnknownTier { policy: PolicyRef, tier: String },
    /// A policy that applies to the endpoint has a field the datapath
    /// cannot enforce; `field` is its path (`spec.ingress[0].source.ports`).
    Unenforceable { policy: PolicyRef, field: String, reason: String },
    /// The endpoint's namespace is not known.
    UnknownNamespace { namespace: String },
    /// The endpoint needs more map entries than its budget.
    TooManyEntries { needed: usize, limit: usize },
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileError::UnknownTier { policy, tier } => {
                write!(f, "{policy}: spec.tier: tier {tier:?} does not exist")
            }
            CompileError::Unenforceable { policy, field, reason } => write!(f, "{policy}: {field}: {reason}"),
            CompileError::UnknownNamespace { namespace } => {
                write!(f, "the endpoint's namespace {namespace:?} is not known")
            }
            CompileError::TooManyEntries { needed, limit } => {
                write!(f, "the endpoint needs {needed} policy map entries; its budget is {limit}")
            }
        }
    }
}

impl std::error::Error for CompileError {}

/// Namespaces, identities, tiers and policies. Policies are stored as
/// given, including ones the compiler refuses (they make the endpoints they
/// apply to fail to compile, rather than silently vanish).
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    namespaces: BTreeMap<String, Namespace>,
    identities: BTreeMap<u32, Identity>,
    tiers: BTreeMap<String, f64>,
    policies: BTreeMap<PolicyRef, PolicyDocument>,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::default()
    }

    /// Adds or replaces a namespace. [`NAMESPACE_NAME_LABEL`] is set to the
    /// name, as the API server does.
    pub fn upsert_namespace(&mut self, name: &str, id: u16, mut labels: Labels) -> Result<(), UpdateError> {
        if id == 0 {
            return Err(UpdateError::ZeroNamespaceId { namespace: name.into() });
        }
        if let Some((other, _)) = self.namespaces.iter().find(|(n, ns)| ns.id == id && n.as_str() != name) {
            return Err(UpdateError::NamespaceIdTaken { id, by: other.clone() });
        }
        labels.insert(NAMESPACE_NAME_LABEL.into(), name.into());
        self.namespaces.insert(name.into(), Namespace { id, labels });
        Ok(())
    }

    /// Removes a namespace and the identities in it; returns those ids.
    pub fn remove_namespace(&mut self, name: &str) -> Vec<u32> {
        self.namespaces.remove(name);
        let gone: Vec<u32> =
            self.identities.iter().filter(|(_, i)| i.namespace == name).map(|(id, _)| *id).collect();
        for id in &gone {
            self.identities.remove(id);
        }
        gone
    }

    /// Adds or replaces a pod identity; its namespace must be known.
    pub fn upsert_identity(&mut self, id: u32, identity: Identity) -> Result<(), UpdateError> {
        if id < FIRST_POD_IDENTITY {
            return Err(UpdateError::ReservedIdentity { id });
        }
        if !self.namespaces.contains_key(&identity.namespace) {
            return Err(UpdateError::UnknownNamespace { namespace: identity.namespace });
        }
        self.identities.insert(id, identity);
        Ok(())
    }

    pub fn remove_identity(&mut self, id: u32) -> Option<Identity> {
        self.identities.remove(&id)
    }

    /// Sets a tier's order (lower goes first; ties by name).
    pub fn set_tier(&mut self, name: &str, order: f64) {
        self.tiers.insert(name.into(), order);
    }

    pub fn remove_tier(&mut self, name: &str) {
        self.tiers.remove(name);
    }

    /// Adds or replaces (same kind, namespace and name) a policy.
    pub fn upsert_policy(&mut self, doc: PolicyDocument) -> PolicyRef {
        let id = PolicyRef::of(&doc);
        self.policies.insert(id.clone(), doc);
        id
    }

    pub fn remove_policy(&mut self, id: &PolicyRef) -> Option<PolicyDocument> {
        self.policies.remove(id)
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    pub fn namespaces(&self) -> &BTreeMap<String, Namespace> {
        &self.namespaces
    }

    pub fn identity(&self, id: u32) -> Option<&Identity> {
        self.identities.get(&id)
    }

    pub fn identities(&self) -> &BTreeMap<u32, Identity> {
        &self.identities
    }

    pub fn policies(&self) -> &BTreeMap<PolicyRef, PolicyDocument> {
        &self.policies
    }

    /// A tier's order: as set, [`DEFAULT_TIER_ORDER`] for an unset
    /// `default` tier, `None` for an unknown tier.
    pub fn tier_order(&self, name: &str) -> Option<f64> {
        match self.tiers.get(name) {
            Some(order) => Some(*order),
            None if name == calico_policy::DEFAULT_TIER => Some(DEFAULT_TIER_ORDER),
            None => None,
        }
    }

    /// The namespace id the datapath sees for a peer identity: 0 for the
    /// reserved identities and for unknown ones.
    pub fn namespace_id_of(&self, identity: u32) -> u16 {
        self.identities.get(&identity).and_then(|i| self.namespaces.get(&i.namespace)).map_or(0, |ns| ns.id)
    }
}

/// A policy's tier, order within it, and directions.
pub(crate) fn tier_of(doc: &PolicyDocument) -> &str {
    match doc {
        PolicyDocument::K8s(_) => calico_policy::DEFAULT_TIER,
        PolicyDocument::Calico(p) => p.spec.tier_or_default(),
        PolicyDocument::CalicoGlobal(p) => p.spec.tier_or_default(),
    }
}

pub(crate) fn order_of(doc: &PolicyDocument) -> Option<f64> {
    match doc {
        PolicyDocument::K8s(_) => Some(K8S_POLICY_ORDER),
        PolicyDocument::Calico(p) => p.spec.order,
        PolicyDocument::CalicoGlobal(p) => p.spec.order,
    }
}

/// Calico's order of policies in a tier: by `order` ascending, policies
/// without one after all others, then by name; kind and namespace only
/// break the remaining ties, so the order is total and deterministic.
pub(crate) fn policy_cmp(a: (Option<f64>, &PolicyRef), b: (Option<f64>, &PolicyRef)) -> Ordering {
    let by_order = match (a.0, b.0) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    by_order
        .then_with(|| a.1.name.cmp(&b.1.name))
        .then_with(|| a.1.kind.cmp(&b.1.kind))
        .then_with(|| a.1.namespace.cmp(&b.1.namespace))
}

/// Tiers go by order, then name.
pub(crate) fn tier_cmp(a: (f64, &str), b: (f64, &str)) -> Ordering {
    a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1))
}

/// The fields no dport-keyed map can enforce: source ports (the map is
/// keyed by destination port only). Refused, not ignored: a rule enforced
/// without them would match other traffic than the one written.
pub(crate) fn check_enforceable(doc: &PolicyDocument, id: &PolicyRef) -> Result<(), CompileError> {
    let spec = match doc {
        PolicyDocument::K8s(_) => return Ok(()),
        PolicyDocument::Calico(p) => &p.spec,
        PolicyDocument::CalicoGlobal(p) => &p.spec,
    };
    for (list, rules) in [("ingress", &spec.ingress), ("egress", &spec.egress)] {
        for (i, rule) in rules.iter().enumerate() {
            for (field, ports) in [("ports", &rule.source.ports), ("notPorts", &rule.source.not_ports)] {
                if !ports.is_empty() {
                    return Err(CompileError::Unenforceable {
                        policy: id.clone(),
                        field: format!("spec.{list}[{i}].source.{field}"),
                        reason: "source ports cannot be enforced: weft's policy map is keyed by \
                                 destination port only"
                            .into(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// A policy's effective directions.
pub(crate) fn types_of(doc: &PolicyDocument) -> Vec<PolicyType> {
    match doc {
        PolicyDocument::K8s(p) => p.spec.effective_policy_types(),
        PolicyDocument::Calico(p) => p.spec.effective_types(),
        PolicyDocument::CalicoGlobal(p) => p.spec.effective_types(),
    }
}

/// A pod's labels as Calico selectors see them.
pub(crate) fn calico_labels(namespace: &str, labels: &Labels) -> Labels {
    let mut out = labels.clone();
    out.insert(CALICO_NAMESPACE_LABEL.into(), namespace.into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn namespaces_get_their_name_label_and_unique_ids() {
        let mut c = Cluster::new();
        c.upsert_namespace("x", 1, labels(&[("ns", "x")])).unwrap();
        assert_eq!(c.namespace("x").unwrap().labels, labels(&[("ns", "x"), (NAMESPACE_NAME_LABEL, "x")]));
        assert_eq!(
            c.upsert_namespace("y", 1, Labels::new()),
            Err(UpdateError::NamespaceIdTaken { id: 1, by: "x".into() })
        );
        assert!(matches!(
            c.upsert_namespace("y", 0, Labels::new()),
            Err(UpdateError::ZeroNamespaceId { .. })
        ));
        // Re-adding x with its own id is a replace.
        c.upsert_namespace("x", 1, Labels::new()).unwrap();
    }

    #[test]
    fn identities_need_a_known_namespace_and_a_pod_id() {
        let mut c = Cluster::new();
        let ident = Identity { namespace: "x".into(), ..Identity::default() };
        assert!(matches!(c.upsert_identity(300, ident.clone()), Err(UpdateError::UnknownNamespace { .. })));
        c.upsert_namespace("x", 7, Labels::new()).unwrap();
        assert_eq!(c.upsert_identity(WORLD, ident.clone()), Err(UpdateError::ReservedIdentity { id: 2 }));
        c.upsert_identity(300, ident).unwrap();
        assert_eq!((c.namespace_id_of(300), c.namespace_id_of(HOST), c.namespace_id_of(999)), (7, 0, 0));
        assert_eq!(c.remove_namespace("x"), vec![300]);
        assert!(c.identity(300).is_none());
    }

    #[test]
    fn tiers_default_and_unknown() {
        let mut c = Cluster::new();
        assert_eq!(c.tier_order("default"), Some(DEFAULT_TIER_ORDER));
        assert_eq!(c.tier_order("security"), None);
        c.set_tier("security", 10.0);
        c.set_tier("default", 5.0);
        assert_eq!((c.tier_order("security"), c.tier_order("default")), (Some(10.0), Some(5.0)));
    }

    #[test]
    fn policy_order_puts_unordered_last_then_names() {
        let r = |name: &str| PolicyRef { kind: PolicyKind::Calico, namespace: None, name: name.into() };
        let (a, b) = (r("a"), r("b"));
        assert_eq!(policy_cmp((Some(5.0), &b), (Some(10.0), &a)), Ordering::Less);
        assert_eq!(policy_cmp((None, &a), (Some(1e9), &b)), Ordering::Greater);
        assert_eq!(policy_cmp((Some(1.0), &a), (Some(1.0), &b)), Ordering::Less);
        assert_eq!(policy_cmp((None, &a), (None, &b)), Ordering::Less);
    }
}
