//! What the compiler produces for one endpoint: the entries of its policy
//! map, and [`lookup`], a simulation of the datapath's lookup cascade over
//! them (for tests and tooling; the datapath does the same in BPF).
//!
//! The map is one LPM trie keyed by `ep_id(16) direction(8) peer_kind(8)
//! peer(32) cidr_class(32) pad(8) proto(8) dport(16)`; everything up to the
//! pad is always matched in full, so an [`Entry`] here carries only what
//! varies per endpoint and direction: the peer, the class and the L4 part.
//! On a flow's first packet the datapath looks up, in this order, and the
//! first hit decides:
//!
//! 1. (Identity id, class c)  2. (Identity id, 0)
//! 3. (Namespace ns, class c) 4. (Namespace ns, 0)
//! 5. (Any, class c)          6. (Any, 0)
//!
//! skipping the class lookups when c is 0 and the namespace lookups when ns
//! is 0; within one lookup the longest matching L4 prefix wins. An enforced
//! direction with no hit denies; a direction that is not enforced allows
//! without a lookup.

use crate::{
    l4::L4,
    model::{Direction, PolicyRef},
};
use std::sync::Arc;

/// What a map entry does with a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Allow,
    Deny,
}

/// Why a flow got its outcome: the rule that decided, or the default that
/// applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleRef {
    /// Rule `index` of the policy's rules for `direction`.
    Rule { policy: Arc<PolicyRef>, direction: Direction, index: usize },
    /// No rule of this tier decided (nor passed): Calico's end-of-tier deny
    /// (for Kubernetes policies, the isolation they imply).
    EndOfTier { tier: Arc<str> },
    /// Every tier with a policy for the endpoint passed: allowed, as
    /// Calico's per-namespace profile allows Kubernetes pods' traffic.
    AllTiersPassed,
    /// Ingress from this node (kubelet probes) is always allowed.
    HostAlwaysAllowed,
    /// No policy applies in this direction: allowed without a lookup.
    NotEnforced,
    /// The lookup found no entry in an enforced direction: denied. The
    /// compiler covers every packet, so this only shows a missing map.
    NoEntry,
}

/// A decision: outcome, whether to log the flow (a `Log` rule matched on
/// the way), and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Verdict {
    pub outcome: Outcome,
    pub log: bool,
    pub rule: RuleRef,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    pub(crate) fn new(outcome: Outcome, log: bool, rule: RuleRef) -> Verdict {
        Verdict { outcome, log, rule }
    }

    pub(crate) fn not_enforced() -> Verdict {
        Verdict::new(Outcome::Allow, false, RuleRef::NotEnforced)
    }

    pub(crate) fn host() -> Verdict {
        Verdict::new(Outcome::Allow, false, RuleRef::HostAlwaysAllowed)
    }
}

/// The peer part of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// peer_kind 0, peer 0: every peer.
    Any,
    /// peer_kind 1: every pod of the namespace with this id.
    Namespace(u16),
    /// peer_kind 2: the peers with this security identity.
    Identity(u32),
}

/// An entry's key, less the endpoint id and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub peer: Peer,
    /// 0: no condition on the address; otherwise the class the peer
    /// address must have.
    pub cidr_class: u32,
    pub l4: L4,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    pub key: Key,
    pub verdict: Verdict,
}

/// One direction of an endpoint's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectionPolicy {
    /// Some policy applies in this direction: flows are looked up (and
    /// denied when nothing hits). Not enforced: everything is allowed.
    pub enforced: bool,
    /// Sorted by key, one entry per key.
    pub entries: Vec<Entry>,
}

/// Both directions of an endpoint's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    pub ingress: DirectionPolicy,
    pub egress: DirectionPolicy,
}

impl EndpointPolicy {
    pub fn direction(&self, direction: Direction) -> &DirectionPolicy {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub(crate) fn direction_mut(&mut self, direction: Direction) -> &mut DirectionPolicy {
        match direction {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }

    /// Map entries in both directions (what the budget counts).
    pub fn len(&self) -> usize {
        self.ingress.entries.len() + self.egress.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the datapath knows of a flow's first packet when it looks it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probe {
    /// The peer's security identity.
    pub identity: u32,
    /// The peer identity's namespace id; 0 if not a pod.
    pub namespace: u16,
    /// The peer address's CIDR class; 0 if in no referenced CIDR.
    pub cidr_class: u32,
    pub proto: u8,
    pub dport: u16,
}

/// The datapath's decision for a probe, as its lookup cascade gives it.
pub fn lookup(policy: &DirectionPolicy, probe: &Probe) -> Verdict {
    if !policy.enforced {
        return Verdict::not_enforced();
    }
    let c = probe.cidr_class;
    let levels = [
        (Peer::Identity(probe.identity), c),
        (Peer::Identity(probe.identity), 0),
        (Peer::Namespace(probe.namespace), c),
        (Peer::Namespace(probe.namespace), 0),
        (Peer::Any, c),
        (Peer::Any, 0),
    ];
    for (i, (peer, class)) in levels.into_iter().enumerate() {
        let class_level = i % 2 == 0;
        if (class_level && c == 0) || (matches!(peer, Peer::Namespace(_)) && probe.namespace == 0) {
            continue;
        }
        let hit = policy
            .entries
            .iter()
            .filter(|e| e.key.peer == peer && e.key.cidr_class == class)
            .filter(|e| e.key.l4.matches(probe.proto, probe.dport))
            .max_by_key(|e| e.key.l4.prefix_bits());
        if let Some(entry) = hit {
            return entry.verdict.clone();
        }
    }
    Verdict::new(Outcome::Deny, false, RuleRef::NoEntry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(peer: Peer, cidr_class: u32, l4: L4, outcome: Outcome) -> Entry {
        Entry { key: Key { peer, cidr_class, l4 }, verdict: Verdict::new(outcome, false, RuleRef::NoEntry) }
    }

    fn probe(identity: u32, namespace: u16, cidr_class: u32, proto: u8, dport: u16) -> Probe {
        Probe { identity, namespace, cidr_class, proto, dport }
    }

    #[test]
    fn not_enforced_allows_and_empty_enforced_denies() {
        let p = probe(300, 1, 0, 6, 80);
        assert_eq!(lookup(&DirectionPolicy::default(), &p).rule, RuleRef::NotEnforced);
        let v = lookup(&DirectionPolicy { enforced: true, entries: vec![] }, &p);
        assert_eq!((v.outcome, v.rule), (Outcome::Deny, RuleRef::NoEntry));
    }

    #[test]
    fn cascade_order_and_longest_l4() {
        use Outcome::*;
        let policy = DirectionPolicy {
            enforced: true,
            entries: vec![
                entry(Peer::Any, 0, L4::Any, Deny),
                entry(Peer::Any, 0, L4::Port { proto: 6, port: 80, prefix_len: 16 }, Allow),
                entry(Peer::Namespace(1), 0, L4::Proto(6), Deny),
                entry(Peer::Identity(300), 7, L4::Port { proto: 6, port: 80, prefix_len: 15 }, Allow),
                // Never emitted; here to show namespace 0 is not looked up.
                entry(Peer::Namespace(0), 0, L4::Any, Deny),
            ],
        };
        let out = |p: Probe| lookup(&policy, &p).outcome;
        // Namespace 1's proto entry shadows the (Any) port entry...
        assert_eq!(out(probe(301, 1, 0, 6, 80)), Deny);
        // ...but not for other protocols, which fall through to Any.
        assert_eq!(out(probe(301, 1, 0, 17, 80)), Deny);
        assert_eq!(out(probe(301, 2, 0, 6, 80)), Allow);
        // The identity's class entry goes first, only with its class.
        assert_eq!(out(probe(300, 1, 7, 6, 81)), Allow);
        assert_eq!(out(probe(300, 1, 0, 6, 81)), Deny);
        // Namespace lookups are skipped for namespace 0 (not a pod).
        assert_eq!(out(probe(2, 0, 0, 6, 80)), Allow);
    }
}
