//! The policy compiler: policies and the cluster's identities in, the
//! entries of each endpoint's policy map out, such that the datapath's
//! lookup cascade ([`crate::map`]) gives, for every packet, exactly what
//! [`crate::decide`] gives — with entries per namespace and per identity
//! only where those differ from what the broader levels already give.
//!
//! How: the levels are built from the back. Level 6 (Any, no class) gets
//! the decision for a peer matching nothing specific (the world); level 5
//! (Any, class c) fixes what differs for addresses of class c; level 4
//! (Namespace ns) what differs for a "generic member" of ns — a pod with
//! no labels of its own there; level 3 (ns, c) likewise with the class;
//! levels 2 and 1 do the same for identities. Decisions are computed per
//! cell of the L4 space ([`crate::cells`]) and the entries of each group
//! come from [`crate::emit`].
//!
//! What keeps this small and fast: an identity needs entries only if some
//! rule's pod condition (an interned atom) holds differently for it than
//! for the generic member of its namespace, or (egress) it has a named
//! port a rule uses. Each atom caches, across endpoints, the namespaces
//! whose generic member it matches and the identities that differ from
//! theirs; the caches follow every update. Classes are only looked at
//! when some rule of the endpoint tests a CIDR that contains them, and
//! classes that every rule of the endpoint sees alike are compiled once.

use crate::{
    Ipv4Cidr, Labels, PolicyDocument,
    calico_policy::Action,
    cells::{Bits, Cells, Cuts, cut_proto, cut_range},
    cidr_class::ClassTable,
    emit::{V, emit, first_of},
    eval::{Packet, decide},
    l4::L4,
    map::{DirectionPolicy, EndpointPolicy, Entry, Key, Outcome, Peer, Probe, RuleRef, Verdict},
    model::{
        Cluster, CompileError, Direction, Endpoint, HOST, Identity, NamedPorts, PolicyRef, UpdateError,
        calico_labels, policy_cmp, tier_cmp,
    },
    norm::{Atom, AtomId, L4Cond, NRule, Norm, PodView, PortSpec, normalize},
};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

/// The entry budget of an endpoint unless set: Cilium's default policy map
/// size.
pub const DEFAULT_ENTRY_BUDGET: usize = 16_384;

/// The compiler and the cluster model it compiles from. Update it as the
/// cluster changes; compile endpoints whenever needed.
#[derive(Debug, Clone)]
pub struct Compiler {
    cluster: Cluster,
    norms: BTreeMap<PolicyRef, Norm>,
    atoms: Atoms,
    classes: ClassTable,
    index: IdentityIndex,
    budget: usize,
    /// Where pod addresses come from (empty: anywhere). A CIDR class outside
    /// every pool never goes with a namespace or pod identity, so the
    /// namespace and identity levels skip it.
    pod_pools: Vec<Ipv4Cidr>,
}

/// Interned atoms and what they match.
#[derive(Debug, Clone, Default)]
struct Atoms {
    ids: HashMap<Atom, AtomId>,
    slots: Vec<Option<AtomSlot>>,
    free: Vec<AtomId>,
}

#[derive(Debug, Clone)]
struct AtomSlot {
    atom: Atom,
    refs: usize,
    /// Namespaces whose generic member (no labels of its own) matches.
    generic: HashSet<String>,
    /// Identities that match differently from their namespace's generic
    /// member.
    differs: BTreeSet<u32>,
}

/// What is derived from identities, kept with them.
#[derive(Debug, Clone, Default)]
struct IdentityIndex {
    /// Per identity, its labels as Calico selectors see them.
    calico_labels: HashMap<u32, Labels>,
    /// Per namespace, the Calico labels of its generic member.
    generic_calico: HashMap<String, Labels>,
    by_namespace: HashMap<String, BTreeSet<u32>>,
    /// Per port name, the identities that have it...
    named_ids: HashMap<String, BTreeSet<u32>>,
    /// ...and its values across them, counted.
    named_values: HashMap<String, BTreeMap<(u8, u16), usize>>,
}

static NO_LABELS: Labels = Labels::new();

impl Default for Compiler {
    fn default() -> Self {
        Compiler::new()
    }
}

impl Compiler {
    pub fn new() -> Compiler {
        Compiler {
            cluster: Cluster::new(),
            norms: BTreeMap::new(),
            atoms: Atoms::default(),
            classes: ClassTable::new(),
            index: IdentityIndex::default(),
            budget: DEFAULT_ENTRY_BUDGET,
            pod_pools: Vec::new(),
        }
    }

    /// Tells the compiler where pod addresses come from (the cluster's pod
    /// pool): classes outside it cannot be a pod's, so entries that pair
    /// them with a namespace or an identity are left out. Without pools
    /// (the default) every class is assumed possible for every pod.
    pub fn with_pod_pools(mut self, pools: Vec<Ipv4Cidr>) -> Compiler {
        self.pod_pools = pools;
        self
    }

    /// Whether a pod's address can be in the class of `cidr`.
    fn pod_class(&self, cidr: &Ipv4Cidr) -> bool {
        self.pod_pools.is_empty()
            || self.pod_pools.iter().any(|p| p.contains_net(cidr) || cidr.contains_net(p))
    }

    /// Sets the most map entries (both directions) an endpoint may take.
    pub fn with_entry_budget(mut self, limit: usize) -> Compiler {
        self.budget = limit;
        self
    }

    /// The model as updated so far (for [`decide`] and tooling).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The CIDR classes, for the agent to mirror into the datapath's class
    /// map. Ids are stable across updates.
    pub fn classes(&self) -> &ClassTable {
        &self.classes
    }

    /// Adds or replaces a namespace.
    pub fn upsert_namespace(&mut self, name: &str, id: u16, labels: Labels) -> Result<(), UpdateError> {
        self.cluster.upsert_namespace(name, id, labels)?;
        let mut generic = Labels::new();
        generic.insert(crate::model::CALICO_NAMESPACE_LABEL.into(), name.into());
        self.index.generic_calico.insert(name.into(), generic);
        for slot in self.atoms.slots.iter_mut().flatten() {
            slot.refill_namespace(name, &self.cluster, &self.index);
        }
        Ok(())
    }

    /// Removes a namespace and its identities.
    pub fn remove_namespace(&mut self, name: &str) {
        let gone: Vec<(u32, Identity)> = self
            .cluster
            .identities()
            .iter()
            .filter(|(_, i)| i.namespace == name)
            .map(|(id, i)| (*id, i.clone()))
            .collect();
        self.cluster.remove_namespace(name);
        for (id, identity) in gone {
            self.index.remove(id, &identity);
            for slot in self.atoms.slots.iter_mut().flatten() {
                slot.differs.remove(&id);
            }
        }
        self.index.generic_calico.remove(name);
        for slot in self.atoms.slots.iter_mut().flatten() {
            slot.generic.remove(name);
        }
    }

    /// Adds or replaces a pod identity (its namespace must be known).
    pub fn upsert_identity(&mut self, id: u32, identity: Identity) -> Result<(), UpdateError> {
        let old = self.cluster.identity(id).cloned();
        self.cluster.upsert_identity(id, identity.clone())?;
        if let Some(old) = old {
            self.index.remove(id, &old);
        }
        self.index.add(id, &identity);
        for slot in self.atoms.slots.iter_mut().flatten() {
            slot.refill_identity(id, &self.cluster, &self.index);
        }
        Ok(())
    }

    pub fn remove_identity(&mut self, id: u32) {
        if let Some(old) = self.cluster.remove_identity(id) {
            self.index.remove(id, &old);
            for slot in self.atoms.slots.iter_mut().flatten() {
                slot.differs.remove(&id);
            }
        }
    }

    /// Sets a tier's order.
    pub fn set_tier(&mut self, name: &str, order: f64) {
        self.cluster.set_tier(name, order);
    }

    /// Removes a tier; its policies then fail to compile until it returns.
    pub fn remove_tier(&mut self, name: &str) {
        self.cluster.remove_tier(name);
    }

    /// Adds or replaces a policy. A policy that cannot be enforced (source
    /// ports) is kept all the same, marked refused: the endpoints it
    /// applies to fail to compile (and keep their last good policy) rather
    /// than get a policy without it. The refusal is returned, and stays
    /// readable with [`Compiler::refusal`].
    pub fn upsert_policy(&mut self, doc: PolicyDocument) -> Result<PolicyRef, CompileError> {
        let id = PolicyRef::of(&doc);
        self.remove_policy(&id);
        let (cluster, index, atoms) = (&self.cluster, &self.index, &mut self.atoms);
        let norm = normalize(&doc, &mut |atom| atoms.intern(atom, cluster, index));
        for cidr in &norm.cidrs {
            self.classes.acquire(*cidr);
        }
        let refused = norm.refused.clone();
        self.norms.insert(id.clone(), norm);
        self.cluster.upsert_policy(doc);
        match refused {
            Some(e) => Err(e),
            None => Ok(id),
        }
    }

    /// Removes a policy; false if there was none.
    pub fn remove_policy(&mut self, id: &PolicyRef) -> bool {
        let Some(old) = self.norms.remove(id) else { return false };
        for atom in &old.atom_ids {
            self.atoms.release(*atom);
        }
        for cidr in &old.cidrs {
            self.classes.release(*cidr);
        }
        self.cluster.remove_policy(id);
        true
    }

    /// Why a stored policy is refused, if it is.
    pub fn refusal(&self, id: &PolicyRef) -> Option<&CompileError> {
        self.norms.get(id).and_then(|n| n.refused.as_ref())
    }

    /// What the datapath would know of this packet (namespace id of the
    /// peer identity, class of the peer address).
    pub fn probe(&self, packet: &Packet) -> Probe {
        Probe {
            identity: packet.peer,
            namespace: self.cluster.namespace_id_of(packet.peer),
            cidr_class: self.classes.classify(packet.peer_addr),
            proto: packet.proto,
            dport: packet.dport,
        }
    }

    /// The reference decision for a packet ([`decide`] on this model).
    pub fn decide(&self, endpoint: &Endpoint, packet: &Packet) -> Result<Verdict, CompileError> {
        decide(&self.cluster, endpoint, packet)
    }

    /// The endpoint's policy map entries, both directions.
    pub fn compile(&self, endpoint: &Endpoint) -> Result<EndpointPolicy, CompileError> {
        let ns = self
            .cluster
            .namespace(&endpoint.namespace)
            .ok_or_else(|| CompileError::UnknownNamespace { namespace: endpoint.namespace.clone() })?;
        let calico = calico_labels(&endpoint.namespace, &endpoint.labels);
        let view = PodView {
            ns: &endpoint.namespace,
            ns_labels: &ns.labels,
            labels: &endpoint.labels,
            calico_labels: &calico,
        };
        let mut out = EndpointPolicy::default();
        for dir in Direction::BOTH {
            if let Some(program) = self.program(endpoint, &view, dir)? {
                *out.direction_mut(dir) = DirectionPolicy { enforced: true, entries: self.entries(&program) };
            }
        }
        if out.len() > self.budget {
            return Err(CompileError::TooManyEntries { needed: out.len(), limit: self.budget });
        }
        Ok(out)
    }

    /// The rules that can apply to the endpoint in one direction, in
    /// evaluation order, over the cells of their L4 space; `None` when no
    /// policy applies (not enforced).
    fn program<'a>(
        &'a self,
        ep: &'a Endpoint,
        view: &PodView,
        dir: Direction,
    ) -> Result<Option<Program<'a>>, CompileError> {
        let mut applicable = Vec::new();
        for norm in self.norms.values() {
            if norm.rules(dir).is_none() || !norm.applies.matches(view) {
                continue;
            }
            if let Some(e) = &norm.refused {
                return Err(e.clone());
            }
            let tier_order = self.cluster.tier_order(&norm.tier).ok_or_else(|| {
                CompileError::UnknownTier { policy: (*norm.id).clone(), tier: norm.tier.clone() }
            })?;
            applicable.push((tier_order, norm));
        }
        if applicable.is_empty() {
            return Ok(None);
        }
        applicable.sort_by(|(ta, a), (tb, b)| {
            tier_cmp((*ta, &a.tier), (*tb, &b.tier))
                .then_with(|| policy_cmp((a.order, &a.id), (b.order, &b.id)))
        });

        let mut p = Program {
            dir,
            tiers: Vec::new(),
            all_passed: [0; 2],
            cells: Cells::new(&Cuts::new()),
            verdicts: Vec::new(),
            verdict_ids: HashMap::new(),
            atoms: BTreeSet::new(),
            peer_names: BTreeSet::new(),
            cidrs: Vec::new(),
        };
        let mut cuts = Cuts::new();
        let local_ports = (dir == Direction::Ingress).then_some(&ep.named_ports);
        let mut i = 0;
        while i < applicable.len() {
            let tier = &applicable[i].1.tier;
            let in_tier = applicable[i..].iter().take_while(|(_, n)| &n.tier == tier).count();
            let mut rules = Vec::new();
            for (_, norm) in &applicable[i..i + in_tier] {
                for rule in norm.rules(dir).unwrap_or_default() {
                    if rule.local.as_ref().is_some_and(|l| !l.matches_local(view, ep.addr)) {
                        continue;
                    }
                    p.atoms.extend(rule.peer.atoms());
                    p.cidrs.extend(rule.peer.cidrs());
                    self.cut(&mut cuts, &rule.l4, local_ports, dir);
                    if dir == Direction::Egress {
                        p.peer_names.extend(rule.l4.names());
                    }
                    let v = match rule.action {
                        Action::Allow | Action::Deny => {
                            let outcome =
                                if rule.action == Action::Allow { Outcome::Allow } else { Outcome::Deny };
                            let r =
                                RuleRef::Rule { policy: norm.id.clone(), direction: dir, index: rule.index };
                            [
                                p.verdict(Verdict::new(outcome, false, r.clone())),
                                p.verdict(Verdict::new(outcome, true, r)),
                            ]
                        }
                        Action::Log | Action::Pass => [0; 2],
                    };
                    rules.push(ProgRule { rule, v, bits: None });
                }
            }
            let tier_ref = RuleRef::EndOfTier { tier: Arc::from(tier.as_str()) };
            let end = [
                p.verdict(Verdict::new(Outcome::Deny, false, tier_ref.clone())),
                p.verdict(Verdict::new(Outcome::Deny, true, tier_ref)),
            ];
            p.tiers.push(TierProg { rules, end });
            i += in_tier;
        }
        p.all_passed = [
            p.verdict(Verdict::new(Outcome::Allow, false, RuleRef::AllTiersPassed)),
            p.verdict(Verdict::new(Outcome::Allow, true, RuleRef::AllTiersPassed)),
        ];
        p.cells = Cells::new(&cuts);
        // Rules whose ports do not depend on the peer: their cells, once.
        for tier in &mut p.tiers {
            for r in &mut tier.rules {
                if dir == Direction::Ingress || r.rule.l4.names().is_empty() {
                    r.bits = Some(l4_bits(&p.cells, &r.rule.l4, local_ports));
                }
            }
        }
        p.cidrs.sort_unstable();
        p.cidrs.dedup();
        Ok(Some(p))
    }

    /// Cuts the L4 space where the condition's ranges begin and end. Named
    /// ports on egress take every value any identity gives the name.
    fn cut(&self, cuts: &mut Cuts, l4: &L4Cond, local: Option<&NamedPorts>, dir: Direction) {
        let spec = |cuts: &mut Cuts, proto: u8, s: &PortSpec| match s {
            PortSpec::Range(lo, hi) => cut_range(cuts, proto, *lo, *hi),
            PortSpec::Named(name) => {
                cut_proto(cuts, proto);
                let values: Vec<(u8, u16)> = match dir {
                    Direction::Ingress => local
                        .and_then(|m| m.get(name))
                        .map(|s| s.iter().copied().collect())
                        .unwrap_or_default(),
                    Direction::Egress => self
                        .index
                        .named_values
                        .get(name)
                        .map(|m| m.keys().copied().collect())
                        .unwrap_or_default(),
                };
                for (p, port) in values {
                    if p == proto {
                        cut_range(cuts, proto, port, port);
                    }
                }
            }
        };
        match l4 {
            L4Cond::Any => {}
            L4Cond::AnyOf(list) => list.iter().for_each(|(p, s)| spec(cuts, *p, s)),
            L4Cond::Calico { proto, ports, not_ports } => {
                cut_proto(cuts, *proto);
                ports.iter().chain(not_ports).for_each(|s| spec(cuts, *proto, s));
            }
        }
    }

    /// The map entries of one direction: levels 6 to 1, each emitting what
    /// differs from the levels after it in the cascade.
    fn entries(&self, p: &Program) -> Vec<Entry> {
        let n = p.cells.len();
        let none: Vec<Option<V>> = vec![None; n];
        let mut out = Vec::new();
        let mut push = |peer: Peer, classes: &[u32], list: &[(L4, V)]| {
            for &cidr_class in classes {
                for &(l4, v) in list {
                    out.push(Entry {
                        key: Key { peer, cidr_class, l4 },
                        verdict: p.verdicts[v as usize].clone(),
                    });
                }
            }
        };

        // The classes some rule here tells apart, grouped by the longest
        // CIDR of this program that holds them (rules see a group alike).
        let mut groups: BTreeMap<Ipv4Cidr, Vec<u32>> = BTreeMap::new();
        for (cidr, id) in self.classes.classes() {
            if let Some(eff) = p.cidrs.iter().filter(|c| c.contains_net(&cidr)).max_by_key(|c| c.prefix_len())
            {
                groups.entry(*eff).or_default().push(id);
            }
        }
        let groups: Vec<(Ipv4Cidr, Vec<u32>)> = groups.into_iter().collect();
        // The same groups with only the classes a pod's address can have:
        // what the namespace and identity levels need.
        let pod_groups: Vec<Vec<u32>> = groups
            .iter()
            .map(|(_, ids)| {
                ids.iter()
                    .copied()
                    .filter(|id| self.classes.cidr_of(*id).is_none_or(|c| self.pod_class(&c)))
                    .collect()
            })
            .collect();

        // 6 and 5: anything without a namespace.
        let (list, cov6) = emit(&p.cells, &self.eval(p, &Rep::World, None), &none);
        push(Peer::Any, &[0], &list);
        let mut cov5 = Vec::new();
        for (cidr, ids) in &groups {
            let (list, cov) = emit(&p.cells, &self.eval(p, &Rep::World, Some(*cidr)), &cov6);
            push(Peer::Any, ids, &list);
            cov5.push(cov);
        }

        // 4 and 3: the generic member of each namespace some atom matches
        // (in the others it is like the world, and needs nothing).
        let mut ns_cov: HashMap<&str, (Cover, Vec<Cover>)> = HashMap::new();
        let mattering: BTreeSet<&str> =
            p.atoms.iter().flat_map(|a| self.atoms.slot(*a).generic.iter().map(String::as_str)).collect();
        for ns in mattering {
            let Some(ns_id) = self.cluster.namespace(ns).map(|n| n.id) else { continue };
            let rep = Rep::Generic(ns);
            let (list, cov4) = emit(&p.cells, &self.eval(p, &rep, None), &cov6);
            push(Peer::Namespace(ns_id), &[0], &list);
            let mut cov3 = Vec::new();
            for (g, (cidr, _)) in groups.iter().enumerate() {
                if pod_groups[g].is_empty() {
                    cov3.push(none.clone());
                    continue;
                }
                let below = first_of(&[&cov4, &cov5[g], &cov6]);
                let (list, cov) = emit(&p.cells, &self.eval(p, &rep, Some(*cidr)), &below);
                push(Peer::Namespace(ns_id), &pod_groups[g], &list);
                cov3.push(cov);
            }
            ns_cov.insert(ns, (cov4, cov3));
        }

        // 2 and 1: identities that can differ from their namespace's
        // generic member.
        let mut candidates: BTreeSet<u32> = BTreeSet::new();
        for a in &p.atoms {
            candidates.extend(&self.atoms.slot(*a).differs);
        }
        for name in &p.peer_names {
            candidates.extend(self.index.named_ids.get(*name).into_iter().flatten());
        }
        let no_groups: Vec<Vec<Option<V>>> = vec![none.clone(); groups.len()];
        for id in candidates {
            let Some(identity) = self.cluster.identity(id) else { continue };
            let rep = Rep::Pod(id, identity);
            let (cov4, cov3) =
                ns_cov.get(identity.namespace.as_str()).map_or((&none, &no_groups), |(a, b)| (a, b));
            let (list, cov2) = emit(&p.cells, &self.eval(p, &rep, None), &first_of(&[cov4, &cov6]));
            push(Peer::Identity(id), &[0], &list);
            for (g, (cidr, _)) in groups.iter().enumerate() {
                if pod_groups[g].is_empty() {
                    continue;
                }
                let below = first_of(&[&cov2, &cov3[g], cov4, &cov5[g], &cov6]);
                let (list, _) = emit(&p.cells, &self.eval(p, &rep, Some(*cidr)), &below);
                push(Peer::Identity(id), &pod_groups[g], &list);
            }
        }

        if p.dir == Direction::Ingress {
            out.push(Entry {
                key: Key { peer: Peer::Identity(HOST), cidr_class: 0, l4: L4::Any },
                verdict: Verdict::host(),
            });
        }
        out.sort_unstable();
        debug_assert!(out.windows(2).all(|w| w[0].key != w[1].key), "two entries for one key");
        out
    }

    /// The verdict per cell for a representative peer with an address of
    /// class `class` (its CIDR; `None`: in no CIDR this program tests).
    fn eval(&self, p: &Program, rep: &Rep, class: Option<Ipv4Cidr>) -> Vec<V> {
        let n = p.cells.len();
        let mut out = vec![0; n];
        let mut log = Bits::zeros(n);
        let mut undecided = Bits::ones(n);
        let atom = |a: AtomId| match rep {
            Rep::World => false,
            Rep::Generic(ns) => self.atoms.slot(a).generic.contains(*ns),
            Rep::Pod(id, identity) => {
                let slot = self.atoms.slot(a);
                slot.generic.contains(&identity.namespace) != slot.differs.contains(id)
            }
        };
        let named = match rep {
            Rep::Pod(_, identity) => Some(&identity.named_ports),
            _ => None,
        };
        for tier in &p.tiers {
            let mut active = undecided.clone();
            for r in &tier.rules {
                if active.is_empty() {
                    break;
                }
                if !r.rule.peer.matches(atom, class) {
                    continue;
                }
                let mut hit = match &r.bits {
                    Some(b) => b.clone(),
                    None => l4_bits(&p.cells, &r.rule.l4, named),
                };
                hit.and(&active);
                if hit.is_empty() {
                    continue;
                }
                match r.rule.action {
                    Action::Allow | Action::Deny => {
                        for c in hit.iter() {
                            out[c] = r.v[usize::from(log.get(c))];
                        }
                        active.and_not(&hit);
                        undecided.and_not(&hit);
                    }
                    Action::Log => log.or(&hit),
                    Action::Pass => active.and_not(&hit),
                }
            }
            for c in active.iter() {
                out[c] = tier.end[usize::from(log.get(c))];
            }
            undecided.and_not(&active);
        }
        for c in undecided.iter() {
            out[c] = p.all_passed[usize::from(log.get(c))];
        }
        out
    }
}

/// The cells where an L4 condition holds; named ports resolve in `named`
/// (none: they match nothing).
fn l4_bits(cells: &Cells, l4: &L4Cond, named: Option<&NamedPorts>) -> Bits {
    let n = cells.len();
    let spec = |bits: &mut Bits, proto: u8, s: &PortSpec| match s {
        PortSpec::Range(lo, hi) => cells.add_ports(bits, proto, *lo, *hi),
        PortSpec::Named(name) => {
            for &(p, port) in named.and_then(|m| m.get(name)).into_iter().flatten() {
                if p == proto {
                    cells.add_ports(bits, proto, port, port);
                }
            }
        }
    };
    match l4 {
        L4Cond::Any => Bits::ones(n),
        L4Cond::AnyOf(list) => {
            let mut bits = Bits::zeros(n);
            list.iter().for_each(|(p, s)| spec(&mut bits, *p, s));
            bits
        }
        L4Cond::Calico { proto, ports, not_ports } => {
            let mut bits = Bits::zeros(n);
            if ports.is_empty() {
                cells.add_ports(&mut bits, *proto, 0, u16::MAX);
            }
            ports.iter().for_each(|s| spec(&mut bits, *proto, s));
            let mut not = Bits::zeros(n);
            not_ports.iter().for_each(|s| spec(&mut not, *proto, s));
            bits.and_not(&not);
            bits
        }
    }
}

/// What one group's lookup gives per cell (`None`: falls through).
type Cover = Vec<Option<V>>;

/// A peer the compiler evaluates rules for.
enum Rep<'a> {
    /// No namespace, no labels: the world, the host (egress), remote
    /// nodes, and any pod where no atom holds.
    World,
    /// A pod of this namespace with no labels of its own.
    Generic(&'a str),
    Pod(u32, &'a Identity),
}

/// The rules of one endpoint and direction, ready to evaluate.
struct Program<'a> {
    dir: Direction,
    tiers: Vec<TierProg<'a>>,
    /// The verdicts when every tier passed (without, with log).
    all_passed: [V; 2],
    cells: Cells,
    verdicts: Vec<Verdict>,
    verdict_ids: HashMap<Verdict, V>,
    atoms: BTreeSet<AtomId>,
    /// Port names egress rules resolve on the peer.
    peer_names: BTreeSet<&'a str>,
    /// The CIDRs rules test peer addresses against.
    cidrs: Vec<Ipv4Cidr>,
}

struct TierProg<'a> {
    rules: Vec<ProgRule<'a>>,
    /// The end-of-tier deny (without, with log).
    end: [V; 2],
}

struct ProgRule<'a> {
    rule: &'a NRule,
    /// The verdicts of an Allow or Deny rule (without, with log).
    v: [V; 2],
    /// Its cells, when they do not depend on the peer.
    bits: Option<Bits>,
}

impl Program<'_> {
    fn verdict(&mut self, v: Verdict) -> V {
        if let Some(id) = self.verdict_ids.get(&v) {
            return *id;
        }
        let id = self.verdicts.len() as V;
        self.verdicts.push(v.clone());
        self.verdict_ids.insert(v, id);
        id
    }
}

impl Atoms {
    fn intern(&mut self, atom: Atom, cluster: &Cluster, index: &IdentityIndex) -> AtomId {
        if let Some(&id) = self.ids.get(&atom) {
            if let Some(slot) = self.slots[id].as_mut() {
                slot.refs += 1;
            }
            return id;
        }
        let mut slot =
            AtomSlot { atom: atom.clone(), refs: 1, generic: HashSet::new(), differs: BTreeSet::new() };
        for name in cluster.namespaces().keys() {
            slot.refill_namespace(name, cluster, index);
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.ids.insert(atom, id);
        id
    }

    fn release(&mut self, id: AtomId) {
        let Some(slot) = self.slots[id].as_mut() else { return };
        slot.refs -= 1;
        if slot.refs == 0 {
            self.ids.remove(&slot.atom);
            self.slots[id] = None;
            self.free.push(id);
        }
    }

    fn slot(&self, id: AtomId) -> &AtomSlot {
        self.slots[id].as_ref().expect("atoms of live policies stay interned")
    }
}

impl AtomSlot {
    /// Recomputes the namespace's generic member and its identities.
    fn refill_namespace(&mut self, name: &str, cluster: &Cluster, index: &IdentityIndex) {
        self.generic.remove(name);
        let ids = index.by_namespace.get(name);
        for id in ids.into_iter().flatten() {
            self.differs.remove(id);
        }
        let Some(ns) = cluster.namespace(name) else { return };
        // Outside the atom's namespaces nothing matches, generic or not.
        if !self.atom.scope().matches(name, &ns.labels) {
            return;
        }
        let generic = self.atom.matches(&PodView {
            ns: name,
            ns_labels: &ns.labels,
            labels: &NO_LABELS,
            calico_labels: &index.generic_calico[name],
        });
        if generic {
            self.generic.insert(name.into());
        }
        for &id in ids.into_iter().flatten() {
            if self.identity_matches(id, cluster, index) != Some(generic) {
                self.differs.insert(id);
            }
        }
    }

    fn refill_identity(&mut self, id: u32, cluster: &Cluster, index: &IdentityIndex) {
        self.differs.remove(&id);
        let Some(identity) = cluster.identity(id) else { return };
        let generic = self.generic.contains(&identity.namespace);
        if self.identity_matches(id, cluster, index) != Some(generic) {
            self.differs.insert(id);
        }
    }

    fn identity_matches(&self, id: u32, cluster: &Cluster, index: &IdentityIndex) -> Option<bool> {
        let identity = cluster.identity(id)?;
        let ns = cluster.namespace(&identity.namespace)?;
        Some(self.atom.matches(&PodView {
            ns: &identity.namespace,
            ns_labels: &ns.labels,
            labels: &identity.labels,
            calico_labels: index.calico_labels.get(&id)?,
        }))
    }
}

impl IdentityIndex {
    fn add(&mut self, id: u32, identity: &Identity) {
        self.calico_labels.insert(id, calico_labels(&identity.namespace, &identity.labels));
        self.by_namespace.entry(identity.namespace.clone()).or_default().insert(id);
        for (name, values) in &identity.named_ports {
            self.named_ids.entry(name.clone()).or_default().insert(id);
            let counts = self.named_values.entry(name.clone()).or_default();
            for v in values {
                *counts.entry(*v).or_default() += 1;
            }
        }
    }

    fn remove(&mut self, id: u32, identity: &Identity) {
        self.calico_labels.remove(&id);
        if let Some(set) = self.by_namespace.get_mut(&identity.namespace) {
            set.remove(&id);
        }
        for (name, values) in &identity.named_ports {
            if let Some(set) = self.named_ids.get_mut(name) {
                set.remove(&id);
                if set.is_empty() {
                    self.named_ids.remove(name);
                }
            }
            if let Some(counts) = self.named_values.get_mut(name) {
                for v in values {
                    if let Some(c) = counts.get_mut(v) {
                        *c -= 1;
                        if *c == 0 {
                            counts.remove(v);
                        }
                    }
                }
                if counts.is_empty() {
                    self.named_values.remove(name);
                }
            }
        }
    }
}
