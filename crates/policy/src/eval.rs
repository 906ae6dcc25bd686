//! The reference evaluator: the decision for one packet, computed the
//! plain way — walk the tiers, the policies and their rules, and test each
//! rule against the concrete peer and address. It shares no matching code
//! with the compiler, so tests can hold the compiled map to it.
//!
//! The model is Calico's, with Kubernetes policies inside it:
//! - Tiers go by order (then name); in a tier, the policies that apply to
//!   the endpoint in the packet's direction go by `order` (absent: last),
//!   then name. Rules go in list order and the first match decides: Allow,
//!   Deny, Pass (on to the next tier) or Log (remember to log, go on).
//! - A tier with an applicable policy where no rule decided or passed
//!   denies (end of tier). Tiers with no applicable policy are skipped.
//! - No applicable policy at all: the direction is not enforced (allow).
//! - Every applicable tier passed: allow. This is Calico's behaviour for
//!   Kubernetes pods, whose per-namespace profile allows everything; weft
//!   has no profiles, so it takes that default.
//! - A Kubernetes NetworkPolicy sits in the `default` tier at order 1000;
//!   each of its rules is an Allow rule.
//! - Ingress from the host (identity 1) is always allowed when ingress is
//!   enforced (kubelet probes), whatever the rules say.
//! - A pod is never isolated from itself, but that is not decided here: the
//!   datapath skips policy for a packet from an endpoint to itself.
//!
//! Peers that are not pods (host, world, remote node, and identities not
//! known yet) have no namespace and no labels: selectors never match them,
//! only rules without a peer condition and address conditions (`ipBlock`,
//! `nets`, `notNets`) do. Address conditions apply to pods too.

use crate::{
    Labels, PolicyDocument,
    calico_policy::{Action, CalicoPort, EntityRule, Rule as CalicoRule},
    map::{Outcome, RuleRef, Verdict},
    model::{self, CALICO_NAMESPACE_LABEL, Cluster, CompileError, Direction, Endpoint, HOST, NamedPorts},
    netpol::{NetworkPolicyPort, Peer as K8sPeer, PortRef, Protocol},
};
use std::{net::Ipv4Addr, sync::Arc};

/// A flow's first packet, seen from the local endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Packet {
    pub direction: Direction,
    /// The peer's security identity (pod, or reserved: 1 host, 2 world,
    /// 6 remote node).
    pub peer: u32,
    /// The peer's address (source on ingress, destination on egress).
    pub peer_addr: Ipv4Addr,
    pub proto: u8,
    pub dport: u16,
}

/// Either side of a flow, as rules see it.
pub(crate) struct Side<'a> {
    /// (namespace name, namespace labels, pod labels) for a pod.
    pub(crate) pod: Option<(&'a str, &'a Labels, &'a Labels)>,
    pub(crate) addr: Ipv4Addr,
    pub(crate) named_ports: Option<&'a NamedPorts>,
}

/// The decision for `packet` to or from `endpoint`. Errors when a policy
/// that applies to the endpoint in the packet's direction is refused
/// (unknown tier, source ports), or the endpoint's namespace is unknown.
pub fn decide(cluster: &Cluster, endpoint: &Endpoint, packet: &Packet) -> Result<Verdict, CompileError> {
    let dir = packet.direction;
    let ns = cluster
        .namespace(&endpoint.namespace)
        .ok_or_else(|| CompileError::UnknownNamespace { namespace: endpoint.namespace.clone() })?;
    let local = Side {
        pod: Some((&endpoint.namespace, &ns.labels, &endpoint.labels)),
        addr: endpoint.addr,
        named_ports: Some(&endpoint.named_ports),
    };

    // The applicable policies, with their tier's order.
    let mut applicable = Vec::new();
    for (id, doc) in cluster.policies() {
        if !applies(doc, &local) || !model::types_of(doc).contains(&dir.policy_type()) {
            continue;
        }
        model::check_enforceable(doc, id)?;
        let tier = model::tier_of(doc);
        let tier_order = cluster
            .tier_order(tier)
            .ok_or_else(|| CompileError::UnknownTier { policy: id.clone(), tier: tier.into() })?;
        applicable.push((tier_order, tier, model::order_of(doc), id, doc));
    }
    if applicable.is_empty() {
        return Ok(Verdict::not_enforced());
    }
    if dir == Direction::Ingress && packet.peer == HOST {
        return Ok(Verdict::host());
    }
    applicable.sort_by(|a, b| {
        model::tier_cmp((a.0, a.1), (b.0, b.1)).then_with(|| model::policy_cmp((a.2, a.3), (b.2, b.3)))
    });

    let peer_identity = cluster.identity(packet.peer);
    let peer_ns = peer_identity.and_then(|i| cluster.namespace(&i.namespace).map(|ns| (i, ns)));
    let peer = Side {
        pod: peer_ns.map(|(i, ns)| (i.namespace.as_str(), &ns.labels, &i.labels)),
        addr: packet.peer_addr,
        named_ports: peer_identity.map(|i| &i.named_ports),
    };

    let mut log = false;
    let mut i = 0;
    while i < applicable.len() {
        let tier = applicable[i].1;
        let in_tier = applicable[i..].iter().take_while(|p| p.1 == tier).count();
        let mut passed = false;
        'policies: for &(_, _, _, id, doc) in &applicable[i..i + in_tier] {
            for (index, action) in matching_rules(doc, dir, &local, &peer, packet) {
                let rule = || RuleRef::Rule { policy: Arc::new(id.clone()), direction: dir, index };
                match action {
                    Action::Allow => return Ok(Verdict { outcome: Outcome::Allow, log, rule: rule() }),
                    Action::Deny => return Ok(Verdict { outcome: Outcome::Deny, log, rule: rule() }),
                    Action::Log => log = true,
                    Action::Pass => {
                        passed = true;
                        break 'policies;
                    }
                }
            }
        }
        if !passed {
            return Ok(Verdict {
                outcome: Outcome::Deny,
                log,
                rule: RuleRef::EndOfTier { tier: tier.into() },
            });
        }
        i += in_tier;
    }
    Ok(Verdict { outcome: Outcome::Allow, log, rule: RuleRef::AllTiersPassed })
}

/// Whether the stored policy `doc` selects `endpoint` (in any direction):
/// what `weft policy list` counts.
pub fn selects(cluster: &Cluster, doc: &PolicyDocument, endpoint: &Endpoint) -> bool {
    let Some(ns) = cluster.namespace(&endpoint.namespace) else { return false };
    let local = Side {
        pod: Some((&endpoint.namespace, &ns.labels, &endpoint.labels)),
        addr: endpoint.addr,
        named_ports: Some(&endpoint.named_ports),
    };
    applies(doc, &local)
}

/// Whether the policy selects the endpoint (any direction).
pub(crate) fn applies(doc: &PolicyDocument, local: &Side) -> bool {
    let Some((ns, ns_labels, labels)) = local.pod else { return false };
    match doc {
        PolicyDocument::K8s(p) => {
            p.metadata.namespace_or_default() == ns && p.spec.pod_selector.matches(labels)
        }
        PolicyDocument::Calico(p) => {
            p.metadata.namespace_or_default() == ns && p.spec.selector.matches(&calico_view(ns, labels))
        }
        PolicyDocument::CalicoGlobal(p) => {
            p.spec.selector.matches(&calico_view(ns, labels))
                && p.spec.namespace_selector.as_ref().is_none_or(|s| s.matches(ns_labels))
        }
    }
}

/// The (index, action) of every rule of the policy, for the direction,
/// that matches the packet, in order.
fn matching_rules(
    doc: &PolicyDocument,
    dir: Direction,
    local: &Side,
    peer: &Side,
    packet: &Packet,
) -> Vec<(usize, Action)> {
    // The destination side resolves named ports.
    let dest = match dir {
        Direction::Ingress => local,
        Direction::Egress => peer,
    };
    match doc {
        PolicyDocument::K8s(p) => {
            let ns = p.metadata.namespace_or_default();
            let rules: Vec<(&[K8sPeer], &[NetworkPolicyPort])> = match dir {
                Direction::Ingress => p.spec.ingress.iter().map(|r| (&r.from[..], &r.ports[..])).collect(),
                Direction::Egress => p.spec.egress.iter().map(|r| (&r.to[..], &r.ports[..])).collect(),
            };
            rules
                .into_iter()
                .enumerate()
                .filter(|(_, (peers, ports))| {
                    (peers.is_empty() || peers.iter().any(|x| k8s_peer_matches(x, ns, peer)))
                        && (ports.is_empty() || ports.iter().any(|x| k8s_port_matches(x, dest, packet)))
                })
                .map(|(i, _)| (i, Action::Allow))
                .collect()
        }
        PolicyDocument::Calico(p) => calico_matches(
            p.spec_rules(dir),
            Some(p.metadata.namespace_or_default()),
            dir,
            local,
            peer,
            packet,
        ),
        PolicyDocument::CalicoGlobal(p) => calico_matches(p.spec_rules(dir), None, dir, local, peer, packet),
    }
}

trait SpecRules {
    fn spec_rules(&self, dir: Direction) -> &[CalicoRule];
}

impl SpecRules for crate::CalicoNetworkPolicy {
    fn spec_rules(&self, dir: Direction) -> &[CalicoRule] {
        match dir {
            Direction::Ingress => &self.spec.ingress,
            Direction::Egress => &self.spec.egress,
        }
    }
}

impl SpecRules for crate::GlobalNetworkPolicy {
    fn spec_rules(&self, dir: Direction) -> &[CalicoRule] {
        match dir {
            Direction::Ingress => &self.spec.ingress,
            Direction::Egress => &self.spec.egress,
        }
    }
}

pub(crate) fn k8s_peer_matches(p: &K8sPeer, policy_ns: &str, peer: &Side) -> bool {
    if let Some(block) = &p.ip_block {
        return block.cidr.contains(peer.addr) && !block.except.iter().any(|e| e.contains(peer.addr));
    }
    let Some((ns, ns_labels, labels)) = peer.pod else { return false };
    let ns_ok = match &p.namespace_selector {
        None => ns == policy_ns,
        Some(s) => s.matches(ns_labels),
    };
    ns_ok && p.pod_selector.as_ref().is_none_or(|s| s.matches(labels))
}

fn k8s_port_matches(port: &NetworkPolicyPort, dest: &Side, packet: &Packet) -> bool {
    let proto = match port.protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    };
    if proto != packet.proto {
        return false;
    }
    let dport = i32::from(packet.dport);
    match &port.port {
        None => true,
        Some(PortRef::Number(first)) => (*first..=port.end_port.unwrap_or(*first)).contains(&dport),
        Some(PortRef::Name(name)) => named(dest, name, packet),
    }
}

/// Whether the destination has a container port of that name that is the
/// packet's protocol and port.
fn named(dest: &Side, name: &str, packet: &Packet) -> bool {
    dest.named_ports.and_then(|m| m.get(name)).is_some_and(|s| s.contains(&(packet.proto, packet.dport)))
}

fn calico_matches(
    rules: &[CalicoRule],
    policy_ns: Option<&str>,
    dir: Direction,
    local: &Side,
    peer: &Side,
    packet: &Packet,
) -> Vec<(usize, Action)> {
    let (src, dst) = match dir {
        Direction::Ingress => (peer, local),
        Direction::Egress => (local, peer),
    };
    let port_hit = |p: &CalicoPort| match p {
        CalicoPort::Number(n) => *n == packet.dport,
        CalicoPort::Range { first, last } => (*first..=*last).contains(&packet.dport),
        CalicoPort::Named(name) => named(dst, name, packet),
    };
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.protocol.is_none_or(|p| p.number() == packet.proto)
                && entity_matches(&r.source, policy_ns, src)
                && entity_matches(&r.destination, policy_ns, dst)
                && (r.destination.ports.is_empty() || r.destination.ports.iter().any(port_hit))
                && !r.destination.not_ports.iter().any(port_hit)
        })
        .map(|(i, r)| (i, r.action))
        .collect()
}

/// A Calico entity rule against one side (ports aside). As Calico converts
/// it: the positive selector is `selector`, restricted to the namespaces
/// in scope (`namespaceSelector`, else the policy's own namespace for a
/// namespaced policy); that restriction alone applies when only
/// `notSelector` or `namespaceSelector` is set. `notSelector` is not
/// restricted to a namespace.
pub(crate) fn entity_matches(e: &EntityRule, policy_ns: Option<&str>, side: &Side) -> bool {
    if !e.nets.is_empty() && !e.nets.iter().any(|n| n.contains(side.addr)) {
        return false;
    }
    if e.not_nets.iter().any(|n| n.contains(side.addr)) {
        return false;
    }
    let scoped = e.namespace_selector.is_some() || policy_ns.is_some();
    let positive =
        e.selector.is_some() || (scoped && (e.not_selector.is_some() || e.namespace_selector.is_some()));
    if positive {
        let Some((ns, ns_labels, labels)) = side.pod else { return false };
        let in_scope = match (&e.namespace_selector, policy_ns) {
            (Some(s), _) => s.matches(ns_labels),
            (None, Some(own)) => ns == own,
            (None, None) => true,
        };
        if !in_scope || e.selector.as_ref().is_some_and(|s| !s.matches(&calico_view(ns, labels))) {
            return false;
        }
    }
    if let (Some(not), Some((ns, _, labels))) = (&e.not_selector, side.pod)
        && not.matches(&calico_view(ns, labels))
    {
        return false;
    }
    true
}

fn calico_view(ns: &str, labels: &Labels) -> Labels {
    let mut out = labels.clone();
    out.insert(CALICO_NAMESPACE_LABEL.into(), ns.into());
    out
}
