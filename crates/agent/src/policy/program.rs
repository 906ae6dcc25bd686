//! Compiled policy into the datapath's maps (`bpf/lib/policy.h`), as
//! differences: what the maps hold is remembered (and read back after a
//! restart), so a change writes only the entries that changed, and the
//! maps are never emptied and refilled (flows would meet a missing policy
//! in between).
//!
//! Order keeps every moment consistent for new flows: identities and CIDR
//! classes first, then an endpoint's new entries, its enforcement, and only
//! then the entries and classes nothing uses any more.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};
use weft_datapath::{
    maps::{
        PEER_ANY, PEER_IDENTITY, PEER_NAMESPACE, POLICY_ALLOW, POLICY_DENY, POLICY_EGRESS, POLICY_F_LOG,
        POLICY_INGRESS, POLICY_STATIC_BITS, PolicyEndpoint, PolicyEntry, PolicyKey,
    },
    policy::PolicyMaps,
};
use weft_policy::{Direction, EndpointPolicy, Entry, L4, Outcome, Peer, RuleRef};

/// Rule references as the small numbers map entries carry, and back.
#[derive(Default)]
pub struct RuleIds {
    ids: BTreeMap<RuleRef, u32>,
    names: Vec<String>,
}

impl RuleIds {
    fn id(&mut self, r: &RuleRef) -> u32 {
        if let Some(id) = self.ids.get(r) {
            return *id;
        }
        self.names.push(rule_text(r));
        let id = self.names.len() as u32;
        self.ids.insert(r.clone(), id);
        id
    }

    /// How many rules have an id (ids are never reused while the table
    /// lives; the policy thread starts a fresh one when this grows large).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// The text of a rule id (0 and unknown ids: "-").
    pub fn name(&self, id: u32) -> String {
        self.names.get((id as usize).wrapping_sub(1)).cloned().unwrap_or_else(|| "-".into())
    }
}

/// A rule as `weft bpf policy get` shows it.
pub fn rule_text(r: &RuleRef) -> String {
    match r {
        RuleRef::Rule { policy, direction, index } => {
            let d = match direction {
                Direction::Ingress => "ingress",
                Direction::Egress => "egress",
            };
            format!("{policy} {d}[{index}]")
        }
        RuleRef::EndOfTier { tier } => format!("end of tier {tier}"),
        RuleRef::AllTiersPassed => "every tier passed".into(),
        RuleRef::HostAlwaysAllowed => "the host is always allowed".into(),
        RuleRef::NotEnforced => "not enforced".into(),
        RuleRef::NoEntry => "no entry".into(),
    }
}

fn direction_byte(d: Direction) -> u8 {
    match d {
        Direction::Ingress => POLICY_INGRESS,
        Direction::Egress => POLICY_EGRESS,
    }
}

/// One compiled entry as the map holds it.
pub fn bpf_entry(ep: u16, d: Direction, e: &Entry, rules: &mut RuleIds) -> (PolicyKey, PolicyEntry) {
    let (kind, peer) = match e.key.peer {
        Peer::Any => (PEER_ANY, 0),
        Peer::Namespace(ns) => (PEER_NAMESPACE, ns as u32),
        Peer::Identity(id) => (PEER_IDENTITY, id),
    };
    let (proto, dport) = match e.key.l4 {
        L4::Any => (0, 0),
        L4::Proto(p) => (p, 0),
        L4::Port { proto, port, .. } => (proto, port.to_be()),
    };
    let prefixlen = POLICY_STATIC_BITS + e.key.l4.prefix_bits();
    let key = PolicyKey {
        prefixlen,
        ep_id: ep,
        direction: direction_byte(d),
        peer_kind: kind,
        peer,
        cidr_class: e.key.cidr_class,
        pad: 0,
        proto,
        dport,
    };
    let value = PolicyEntry {
        action: if e.verdict.outcome == Outcome::Allow { POLICY_ALLOW } else { POLICY_DENY },
        flags: if e.verdict.log { POLICY_F_LOG } else { 0 },
        prefixlen: prefixlen as u16,
        rule: rules.id(&e.verdict.rule),
    };
    (key, value)
}

/// Both directions of one endpoint's compiled policy as map contents.
pub fn endpoint_contents(
    ep: u16,
    p: &EndpointPolicy,
    rules: &mut RuleIds,
) -> (BTreeMap<PolicyKey, PolicyEntry>, Option<PolicyEndpoint>) {
    let mut entries = BTreeMap::new();
    for d in [Direction::Ingress, Direction::Egress] {
        let dp = p.direction(d);
        if !dp.enforced {
            continue;
        }
        for e in &dp.entries {
            let (k, v) = bpf_entry(ep, d, e, rules);
            entries.insert(k, v);
        }
    }
    let enforce = (p.ingress.enforced || p.egress.enforced).then_some(PolicyEndpoint {
        ingress: p.ingress.enforced as u8,
        egress: p.egress.enforced as u8,
        pad: 0,
        revision: 0,
    });
    (entries, enforce)
}

/// What the maps hold.
#[derive(Default)]
pub struct Programmed {
    pub entries: BTreeMap<u16, BTreeMap<PolicyKey, PolicyEntry>>,
    pub enforce: BTreeMap<u16, PolicyEndpoint>,
    pub identities: BTreeMap<u32, u16>,
    pub classes: BTreeMap<(Ipv4Addr, u8), u32>,
}

impl Programmed {
    /// Reads the maps as an earlier agent left them.
    pub fn read(maps: &PolicyMaps) -> Result<Programmed, String> {
        let mut p = Programmed::default();
        for (k, v) in maps.entries().map_err(|e| e.to_string())? {
            p.entries.entry(k.ep_id).or_default().insert(k, v);
        }
        p.enforce = maps.endpoints_list().map_err(|e| e.to_string())?.into_iter().collect();
        p.identities = maps.identities_list().map_err(|e| e.to_string())?.into_iter().collect();
        p.classes = maps.classes_list().map_err(|e| e.to_string())?.into_iter().collect();
        Ok(p)
    }

    /// Identities and classes that must exist before entries use them.
    pub fn add_lookups(
        &mut self,
        maps: &PolicyMaps,
        identities: &BTreeMap<u32, u16>,
        classes: &BTreeMap<(Ipv4Addr, u8), u32>,
    ) -> Result<(), String> {
        for (id, ns) in identities {
            if self.identities.get(id) != Some(ns) {
                maps.set_identity(*id, Some(*ns)).map_err(|e| e.to_string())?;
                self.identities.insert(*id, *ns);
            }
        }
        for ((addr, len), class) in classes {
            if self.classes.get(&(*addr, *len)) != Some(class) {
                maps.set_cidr_class(*addr, *len, Some(*class)).map_err(|e| e.to_string())?;
                self.classes.insert((*addr, *len), *class);
            }
        }
        Ok(())
    }

    /// Brings one endpoint's entries and enforcement to `want`.
    pub fn set_endpoint(
        &mut self,
        maps: &PolicyMaps,
        ep: u16,
        want: BTreeMap<PolicyKey, PolicyEntry>,
        enforce: Option<PolicyEndpoint>,
    ) -> Result<usize, String> {
        let have = self.entries.remove(&ep).unwrap_or_default();
        let puts: Vec<(PolicyKey, PolicyEntry)> =
            want.iter().filter(|(k, v)| have.get(k) != Some(v)).map(|(k, v)| (*k, *v)).collect();
        let stale: Vec<PolicyKey> = have.keys().filter(|k| !want.contains_key(k)).copied().collect();
        if let Err(e) = maps.put(&puts) {
            // Some may have been written: remember both, so the next try
            // diffs against what can be there.
            let mut both = have;
            both.extend(puts);
            self.entries.insert(ep, both);
            return Err(e.to_string());
        }
        let changed = puts.len() + stale.len();
        match enforce {
            Some(e) if self.enforce.get(&ep) != Some(&e) => {
                maps.set_endpoint(ep, Some(e)).map_err(|e| e.to_string())?;
                self.enforce.insert(ep, e);
            }
            None if self.enforce.contains_key(&ep) => {
                maps.set_endpoint(ep, None).map_err(|e| e.to_string())?;
                self.enforce.remove(&ep);
            }
            _ => {}
        }
        maps.delete(&stale).map_err(|e| e.to_string())?;
        if !want.is_empty() {
            self.entries.insert(ep, want);
        }
        Ok(changed)
    }

    /// Removes what no endpoint, identity or class needs any more.
    pub fn prune(
        &mut self,
        maps: &PolicyMaps,
        endpoints: &BTreeSet<u16>,
        identities: &BTreeMap<u32, u16>,
        classes: &BTreeMap<(Ipv4Addr, u8), u32>,
    ) -> Result<(), String> {
        let gone: Vec<u16> = self
            .entries
            .keys()
            .chain(self.enforce.keys())
            .filter(|e| !endpoints.contains(e))
            .copied()
            .collect();
        for ep in gone {
            self.set_endpoint(maps, ep, BTreeMap::new(), None)?;
        }
        let ids: Vec<u32> = self.identities.keys().filter(|i| !identities.contains_key(i)).copied().collect();
        for id in ids {
            maps.set_identity(id, None).map_err(|e| e.to_string())?;
            self.identities.remove(&id);
        }
        let cls: Vec<(Ipv4Addr, u8)> =
            self.classes.keys().filter(|c| !classes.contains_key(c)).copied().collect();
        for (addr, len) in cls {
            maps.set_cidr_class(addr, len, None).map_err(|e| e.to_string())?;
            self.classes.remove(&(addr, len));
        }
        Ok(())
    }
}
