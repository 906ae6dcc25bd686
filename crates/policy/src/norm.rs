//! Policies in the form the compiler works on: every kind reduced to
//! ordered rules whose conditions are split by what they depend on —
//! the peer's pod labels (as interned [`Atom`]s whose matches are cached
//! across endpoints), the peer's address (CIDRs, decided by its class),
//! the local endpoint (checked once per compile), and layer 4.

use crate::{
    Ipv4Cidr, LabelSelector, Labels, PolicyDocument, Selector,
    calico_policy::{Action, CalicoPolicySpec, CalicoPort, EntityRule},
    model::{self, CompileError, Direction, PolicyRef},
    netpol::{NetworkPolicyPort, Peer as NetpolPeer, PortRef, Protocol},
};
use std::{net::Ipv4Addr, sync::Arc};

/// Index of an interned [`Atom`] in the compiler's table.
pub(crate) type AtomId = usize;

/// The namespaces a pod condition looks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum NsScope {
    /// The policy's own namespace.
    Own(String),
    /// A Kubernetes `namespaceSelector` over namespace labels.
    K8s(LabelSelector),
    /// A Calico `namespaceSelector` over namespace labels.
    Calico(Selector),
    /// Every namespace.
    All,
}

/// A condition on a pod: in a namespace of the scope, and selected. It is
/// never true of a peer that is not a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Atom {
    /// A Kubernetes peer: pods of the scope matching `pods` (absent: all).
    K8s { ns: NsScope, pods: Option<LabelSelector> },
    /// A Calico selector (absent: every pod of the scope), which sees the
    /// pod's labels plus `projectcalico.org/namespace`.
    Calico { ns: NsScope, sel: Option<Selector> },
}

/// A pod, as atoms look at it.
pub(crate) struct PodView<'a> {
    pub ns: &'a str,
    pub ns_labels: &'a Labels,
    pub labels: &'a Labels,
    /// `labels` plus `projectcalico.org/namespace`.
    pub calico_labels: &'a Labels,
}

impl NsScope {
    pub(crate) fn matches(&self, ns: &str, ns_labels: &Labels) -> bool {
        match self {
            NsScope::Own(own) => own == ns,
            NsScope::K8s(s) => s.matches(ns_labels),
            NsScope::Calico(s) => s.matches(ns_labels),
            NsScope::All => true,
        }
    }
}

impl Atom {
    pub(crate) fn scope(&self) -> &NsScope {
        match self {
            Atom::K8s { ns, .. } | Atom::Calico { ns, .. } => ns,
        }
    }

    pub(crate) fn matches(&self, pod: &PodView) -> bool {
        self.scope().matches(pod.ns, pod.ns_labels)
            && match self {
                Atom::K8s { pods, .. } => pods.as_ref().is_none_or(|s| s.matches(pod.labels)),
                Atom::Calico { sel, .. } => sel.as_ref().is_none_or(|s| s.matches(pod.calico_labels)),
            }
    }
}

/// A Calico entity rule, less its ports: every part that is set must hold.
#[derive(Debug, Clone)]
pub(crate) struct Entity<A> {
    pub nets: Vec<Ipv4Cidr>,
    pub not_nets: Vec<Ipv4Cidr>,
    /// Must match (a pod).
    pub pos: Option<A>,
    /// Must not match.
    pub neg: Option<A>,
}

/// What a rule asks of the peer.
#[derive(Debug, Clone)]
pub(crate) enum PeerCond {
    /// Nothing: every peer.
    Any,
    /// Kubernetes `from`/`to`: any of these.
    K8s(Vec<K8sPeer>),
    Calico(Entity<AtomId>),
}

#[derive(Debug, Clone)]
pub(crate) enum K8sPeer {
    Pods(AtomId),
    /// The address is in `cidr` and in none of `except`.
    Block {
        cidr: Ipv4Cidr,
        except: Vec<Ipv4Cidr>,
    },
}

/// Whether an address of class `class` (its longest referenced CIDR, or
/// `None`) is in `net`: referenced CIDRs nest, so exactly when `net`
/// contains the class's CIDR.
fn in_net(net: &Ipv4Cidr, class: Option<Ipv4Cidr>) -> bool {
    class.is_some_and(|c| net.contains_net(&c))
}

impl PeerCond {
    /// `atom` gives the peer's value of an atom; `class` the CIDR of its
    /// address's class.
    pub(crate) fn matches(&self, atom: impl Fn(AtomId) -> bool, class: Option<Ipv4Cidr>) -> bool {
        match self {
            PeerCond::Any => true,
            PeerCond::K8s(peers) => peers.iter().any(|p| match p {
                K8sPeer::Pods(a) => atom(*a),
                K8sPeer::Block { cidr, except } => {
                    in_net(cidr, class) && !except.iter().any(|e| in_net(e, class))
                }
            }),
            PeerCond::Calico(e) => {
                (e.nets.is_empty() || e.nets.iter().any(|n| in_net(n, class)))
                    && !e.not_nets.iter().any(|n| in_net(n, class))
                    && e.pos.is_none_or(&atom)
                    && !e.neg.is_some_and(&atom)
            }
        }
    }

    pub(crate) fn atoms(&self) -> Vec<AtomId> {
        match self {
            PeerCond::Any => vec![],
            PeerCond::K8s(peers) => {
                peers.iter().filter_map(|p| if let K8sPeer::Pods(a) = p { Some(*a) } else { None }).collect()
            }
            PeerCond::Calico(e) => e.pos.iter().chain(&e.neg).copied().collect(),
        }
    }

    /// The CIDRs the condition tests the peer address against.
    pub(crate) fn cidrs(&self) -> Vec<Ipv4Cidr> {
        match self {
            PeerCond::Any => vec![],
            PeerCond::K8s(peers) => peers
                .iter()
                .flat_map(|p| match p {
                    K8sPeer::Pods(_) => vec![],
                    K8sPeer::Block { cidr, except } => {
                        std::iter::once(*cidr).chain(except.iter().copied()).collect()
                    }
                })
                .collect(),
            PeerCond::Calico(e) => e.nets.iter().chain(&e.not_nets).copied().collect(),
        }
    }
}

impl Entity<Atom> {
    /// The local endpoint's side of a Calico rule, against the endpoint.
    pub(crate) fn matches_local(&self, pod: &PodView, addr: Ipv4Addr) -> bool {
        (self.nets.is_empty() || self.nets.iter().any(|n| n.contains(addr)))
            && !self.not_nets.iter().any(|n| n.contains(addr))
            && self.pos.as_ref().is_none_or(|a| a.matches(pod))
            && !self.neg.as_ref().is_some_and(|a| a.matches(pod))
    }
}

/// A port or range of one protocol, or a container port name (resolved on
/// the destination: the local endpoint on ingress, the peer on egress).
#[derive(Debug, Clone)]
pub(crate) enum PortSpec {
    Range(u16, u16),
    Named(String),
}

/// What a rule asks of the protocol and destination port.
#[derive(Debug, Clone)]
pub(crate) enum L4Cond {
    /// Every protocol and port.
    Any,
    /// Kubernetes `ports`: any of these (protocol, port).
    AnyOf(Vec<(u8, PortSpec)>),
    /// Calico: the protocol, a port among `ports` (empty: any), none of
    /// `not_ports`.
    Calico { proto: u8, ports: Vec<PortSpec>, not_ports: Vec<PortSpec> },
}

impl L4Cond {
    pub(crate) fn names(&self) -> Vec<&str> {
        let specs: Vec<&PortSpec> = match self {
            L4Cond::Any => vec![],
            L4Cond::AnyOf(list) => list.iter().map(|(_, s)| s).collect(),
            L4Cond::Calico { ports, not_ports, .. } => ports.iter().chain(not_ports).collect(),
        };
        specs
            .into_iter()
            .filter_map(|s| if let PortSpec::Named(n) = s { Some(n.as_str()) } else { None })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct NRule {
    /// The rule's index in its policy's list for the direction.
    pub index: usize,
    pub action: Action,
    pub peer: PeerCond,
    /// Calico: the local endpoint's side (destination on ingress, source on
    /// egress); `None` when it asks nothing.
    pub local: Option<Entity<Atom>>,
    pub l4: L4Cond,
}

/// The endpoints a policy applies to.
#[derive(Debug, Clone)]
pub(crate) enum Applies {
    K8s { ns: String, sel: LabelSelector },
    Calico { ns: String, sel: Selector },
    Global { sel: Selector, ns_sel: Option<Selector> },
}

impl Applies {
    pub(crate) fn matches(&self, pod: &PodView) -> bool {
        match self {
            Applies::K8s { ns, sel } => ns == pod.ns && sel.matches(pod.labels),
            Applies::Calico { ns, sel } => ns == pod.ns && sel.matches(pod.calico_labels),
            Applies::Global { sel, ns_sel } => {
                sel.matches(pod.calico_labels) && ns_sel.as_ref().is_none_or(|s| s.matches(pod.ns_labels))
            }
        }
    }
}

/// A normalized policy.
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    pub id: Arc<PolicyRef>,
    pub tier: String,
    pub order: Option<f64>,
    pub applies: Applies,
    /// Rules per direction (ingress, egress); `None`: the policy does not
    /// apply in that direction.
    pub rules: [Option<Vec<NRule>>; 2],
    /// Set when the policy cannot be enforced; its rules are then empty.
    pub refused: Option<CompileError>,
    /// Every atom interned for it (to release on removal).
    pub atom_ids: Vec<AtomId>,
    /// The CIDRs its rules test peer addresses against, deduplicated.
    pub cidrs: Vec<Ipv4Cidr>,
}

impl Norm {
    pub(crate) fn rules(&self, dir: Direction) -> Option<&[NRule]> {
        self.rules[dir as usize].as_deref()
    }
}

/// Normalizes a policy, interning its peer atoms with `intern`.
pub(crate) fn normalize(doc: &PolicyDocument, intern: &mut dyn FnMut(Atom) -> AtomId) -> Norm {
    let id = PolicyRef::of(doc);
    let types = model::types_of(doc);
    let refused = model::check_enforceable(doc, &id).err().or_else(|| ports_without_protocol(doc, &id));
    let mut atom_ids = Vec::new();
    let mut intern = |a: Atom| {
        let i = intern(a);
        atom_ids.push(i);
        i
    };
    let mut rules: [Option<Vec<NRule>>; 2] = [None, None];
    for dir in Direction::BOTH {
        if !types.contains(&dir.policy_type()) {
            continue;
        }
        rules[dir as usize] = Some(if refused.is_some() {
            vec![]
        } else {
            match doc {
                PolicyDocument::K8s(p) => {
                    let ns = p.metadata.namespace_or_default();
                    let list: Vec<(&[NetpolPeer], &[NetworkPolicyPort])> = match dir {
                        Direction::Ingress => {
                            p.spec.ingress.iter().map(|r| (&r.from[..], &r.ports[..])).collect()
                        }
                        Direction::Egress => {
                            p.spec.egress.iter().map(|r| (&r.to[..], &r.ports[..])).collect()
                        }
                    };
                    list.into_iter()
                        .enumerate()
                        .map(|(index, (peers, ports))| NRule {
                            index,
                            action: Action::Allow,
                            peer: k8s_peers(peers, ns, &mut intern),
                            local: None,
                            l4: k8s_ports(ports),
                        })
                        .collect()
                }
                PolicyDocument::Calico(p) => {
                    calico_rules(&p.spec, dir, Some(p.metadata.namespace_or_default()), &mut intern)
                }
                PolicyDocument::CalicoGlobal(p) => calico_rules(&p.spec, dir, None, &mut intern),
            }
        });
    }
    let applies = match doc {
        PolicyDocument::K8s(p) => {
            Applies::K8s { ns: p.metadata.namespace_or_default().into(), sel: p.spec.pod_selector.clone() }
        }
        PolicyDocument::Calico(p) => {
            Applies::Calico { ns: p.metadata.namespace_or_default().into(), sel: p.spec.selector.clone() }
        }
        PolicyDocument::CalicoGlobal(p) => {
            Applies::Global { sel: p.spec.selector.clone(), ns_sel: p.spec.namespace_selector.clone() }
        }
    };
    let mut cidrs: Vec<Ipv4Cidr> = rules.iter().flatten().flatten().flat_map(|r| r.peer.cidrs()).collect();
    cidrs.sort_unstable();
    cidrs.dedup();
    Norm {
        id: Arc::new(id),
        tier: model::tier_of(doc).into(),
        order: model::order_of(doc),
        applies,
        rules,
        refused,
        atom_ids,
        cidrs,
    }
}

/// Validation refuses ports without a protocol; a document built in code
/// may not have been validated, and such ports have no meaning.
fn ports_without_protocol(doc: &PolicyDocument, id: &PolicyRef) -> Option<CompileError> {
    let spec = calico_spec(doc)?;
    for (list, rules) in [("ingress", &spec.ingress), ("egress", &spec.egress)] {
        for (i, r) in rules.iter().enumerate() {
            let d = &r.destination;
            if r.protocol.is_none_or(|p| !p.has_ports()) && !(d.ports.is_empty() && d.not_ports.is_empty()) {
                return Some(CompileError::Unenforceable {
                    policy: id.clone(),
                    field: format!("spec.{list}[{i}].destination.ports"),
                    reason: "ports need protocol TCP, UDP or SCTP".into(),
                });
            }
        }
    }
    None
}

fn calico_spec(doc: &PolicyDocument) -> Option<&CalicoPolicySpec> {
    match doc {
        PolicyDocument::K8s(_) => None,
        PolicyDocument::Calico(p) => Some(&p.spec),
        PolicyDocument::CalicoGlobal(p) => Some(&p.spec),
    }
}

fn k8s_peers(peers: &[NetpolPeer], policy_ns: &str, intern: &mut dyn FnMut(Atom) -> AtomId) -> PeerCond {
    if peers.is_empty() {
        return PeerCond::Any;
    }
    PeerCond::K8s(
        peers
            .iter()
            .map(|p| match &p.ip_block {
                Some(b) => K8sPeer::Block { cidr: b.cidr, except: b.except.clone() },
                None => {
                    let ns = match &p.namespace_selector {
                        None => NsScope::Own(policy_ns.into()),
                        Some(s) => NsScope::K8s(s.clone()),
                    };
                    K8sPeer::Pods(intern(Atom::K8s { ns, pods: p.pod_selector.clone() }))
                }
            })
            .collect(),
    )
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn k8s_ports(ports: &[NetworkPolicyPort]) -> L4Cond {
    if ports.is_empty() {
        return L4Cond::Any;
    }
    // Validated: numbers are 1..=65535 and endPort is not below port.
    let port = |n: i32| u16::try_from(n).unwrap_or(u16::MAX);
    L4Cond::AnyOf(
        ports
            .iter()
            .map(|p| {
                let spec = match &p.port {
                    None => PortSpec::Range(0, u16::MAX),
                    Some(PortRef::Number(n)) => PortSpec::Range(port(*n), port(p.end_port.unwrap_or(*n))),
                    Some(PortRef::Name(name)) => PortSpec::Named(name.clone()),
                };
                (proto_number(p.protocol), spec)
            })
            .collect(),
    )
}

fn calico_rules(
    spec: &CalicoPolicySpec,
    dir: Direction,
    policy_ns: Option<&str>,
    intern: &mut dyn FnMut(Atom) -> AtomId,
) -> Vec<NRule> {
    let list = match dir {
        Direction::Ingress => &spec.ingress,
        Direction::Egress => &spec.egress,
    };
    list.iter()
        .enumerate()
        .map(|(index, r)| {
            let (peer, local) = match dir {
                Direction::Ingress => (&r.source, &r.destination),
                Direction::Egress => (&r.destination, &r.source),
            };
            let peer = match entity(peer, policy_ns) {
                None => PeerCond::Any,
                Some(e) => PeerCond::Calico(Entity {
                    nets: e.nets,
                    not_nets: e.not_nets,
                    pos: e.pos.map(&mut *intern),
                    neg: e.neg.map(&mut *intern),
                }),
            };
            let d = &r.destination;
            let l4 = match r.protocol {
                None => L4Cond::Any,
                Some(p) => L4Cond::Calico {
                    proto: p.number(),
                    ports: d.ports.iter().map(calico_port).collect(),
                    not_ports: d.not_ports.iter().map(calico_port).collect(),
                },
            };
            NRule { index, action: r.action, peer, local: entity(local, policy_ns), l4 }
        })
        .collect()
}

/// A Calico entity as Calico's own conversion reads it: the positive
/// selector is `selector` restricted to the namespaces in scope
/// (`namespaceSelector`, else the policy's own namespace for a namespaced
/// policy); that restriction alone when only `notSelector` or
/// `namespaceSelector` is set; and `notSelector` unrestricted. `None` when
/// the entity asks nothing (ports aside).
fn entity(e: &EntityRule, policy_ns: Option<&str>) -> Option<Entity<Atom>> {
    let scope = match (&e.namespace_selector, policy_ns) {
        (Some(s), _) => Some(NsScope::Calico(s.clone())),
        (None, Some(ns)) => Some(NsScope::Own(ns.into())),
        (None, None) => None,
    };
    let positive = e.selector.is_some()
        || (scope.is_some() && (e.not_selector.is_some() || e.namespace_selector.is_some()));
    let pos = positive.then(|| Atom::Calico { ns: scope.unwrap_or(NsScope::All), sel: e.selector.clone() });
    let neg = e.not_selector.clone().map(|s| Atom::Calico { ns: NsScope::All, sel: Some(s) });
    let out = Entity { nets: e.nets.clone(), not_nets: e.not_nets.clone(), pos, neg };
    let empty = out.nets.is_empty() && out.not_nets.is_empty() && out.pos.is_none() && out.neg.is_none();
    (!empty).then_some(out)
}

fn calico_port(p: &CalicoPort) -> PortSpec {
    match p {
        CalicoPort::Number(n) => PortSpec::Range(*n, *n),
        CalicoPort::Range { first, last } => PortSpec::Range(*first, *last),
        CalicoPort::Named(name) => PortSpec::Named(name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: serde_json::Value) -> PolicyDocument {
        PolicyDocument::from_json(&v).expect("valid")
    }

    fn norm(d: &PolicyDocument) -> (Norm, Vec<Atom>) {
        let mut atoms = Vec::new();
        let n = normalize(d, &mut |a| {
            atoms.push(a);
            atoms.len() - 1
        });
        (n, atoms)
    }

    #[test]
    fn kubernetes_peers_and_ports() {
        let d = doc(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {"ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}},
                                           {"namespaceSelector": {}},
                                           {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                                  "ports": [{"port": 80, "endPort": 90}, {"protocol": "UDP"}, {"port": "dns"}]}]}
        }));
        let (n, atoms) = norm(&d);
        assert!(n.rules(Direction::Egress).is_none());
        let r = &n.rules(Direction::Ingress).unwrap()[0];
        assert_eq!(atoms.len(), 2);
        assert_eq!(atoms[0].scope(), &NsScope::Own("x".into()));
        assert_eq!(atoms[1], Atom::K8s { ns: NsScope::K8s(LabelSelector::default()), pods: None });
        assert_eq!(n.cidrs.len(), 2);
        let L4Cond::AnyOf(ports) = &r.l4 else { panic!("{:?}", r.l4) };
        assert!(matches!(ports[0], (6, PortSpec::Range(80, 90))));
        assert!(matches!(ports[1], (17, PortSpec::Range(0, 65535))));
        assert!(matches!(&ports[2], (6, PortSpec::Named(n)) if n == "dns"));
        // Address conditions by class: 10.2/16 is in 10/8 and not in 10.1/16.
        let c = |s: &str| Some(s.parse::<Ipv4Cidr>().unwrap());
        assert!(r.peer.matches(|_| false, c("10.2.0.0/16")));
        assert!(!r.peer.matches(|_| false, c("10.1.0.0/16")));
        assert!(!r.peer.matches(|_| false, None));
        assert!(r.peer.matches(|a| a == 1, None));
    }

    #[test]
    fn calico_entities_follow_calicos_conversion() {
        let d = doc(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {"ingress": [
                {"action": "Allow", "source": {"notSelector": "pod == 'a'"}},
                {"action": "Deny", "source": {"namespaceSelector": "ns == 'y'"},
                 "destination": {"selector": "pod == 'b'"}},
                {"action": "Allow", "protocol": "TCP", "destination": {"ports": [80, "http"], "notPorts": ["81:82"]}}
            ]}
        }));
        let (n, atoms) = norm(&d);
        let rules = n.rules(Direction::Ingress).unwrap();
        // notSelector alone, in a namespaced policy: a pod of x, not pod=a.
        let PeerCond::Calico(e) = &rules[0].peer else { panic!() };
        assert_eq!(atoms[e.pos.unwrap()], Atom::Calico { ns: NsScope::Own("x".into()), sel: None });
        assert_eq!(atoms[e.neg.unwrap()].scope(), &NsScope::All);
        // The destination of an ingress rule is the local endpoint.
        assert!(rules[1].local.is_some() && rules[0].local.is_none());
        assert!(matches!(&rules[2].l4, L4Cond::Calico { proto: 6, ports, not_ports }
            if ports.len() == 2 && not_ports.len() == 1));
        assert_eq!(rules[2].l4.names(), vec!["http"]);
    }

    #[test]
    fn source_ports_are_refused() {
        let d = doc(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "g"},
            "spec": {"egress": [{"action": "Allow"},
                                {"action": "Allow", "protocol": "UDP", "source": {"notPorts": [53]}}]}
        }));
        let (n, _) = norm(&d);
        let Some(CompileError::Unenforceable { field, .. }) = &n.refused else { panic!("{:?}", n.refused) };
        assert_eq!(field, "spec.egress[1].source.notPorts");
        assert_eq!(n.rules(Direction::Egress).map(<[_]>::len), Some(0));
    }
}
