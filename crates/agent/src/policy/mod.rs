//! The policy subsystem: follows policies, tiers, namespaces and identities
//! in the cluster store, compiles the local endpoints' policy with
//! `weft_policy` (pure, in its own crate) and programs the datapath's
//! policy maps with the difference (`program.rs`).
//!
//! Everything runs on one thread fed by store watches and by this node's
//! endpoint changes; messages that arrive together are applied together
//! and compiled once. Until every watch has delivered its first listing
//! nothing is programmed, so a restarted agent never replaces the pinned
//! policy with a partial one. An endpoint whose policy cannot be compiled
//! (an unenforceable policy applies to it, or it would need more entries
//! than its budget) keeps its last good policy; `weft endpoint list` and
//! the log say why.

pub mod objects;
mod program;

use crate::{journal::Phase, state::Agent};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{
        Arc, Mutex, OnceLock,
        mpsc::{Receiver, RecvTimeoutError, SyncSender},
    },
    time::Duration,
};
use weft_api::{ApiError, BpfPolicyView, NamespaceView, PolicyEntryView, PolicyView, code};
use weft_datapath::{maps::*, policy::PolicyMaps};
use weft_policy::{Compiler, Endpoint, Identity, Labels, NamedPorts, PolicyDocument, PolicyKind, PolicyRef};
use weft_store::Update;

pub use program::rule_text;

/// Messages queued to the policy thread, at most this many.
const QUEUE: usize = 4096;

/// Rule ids handed out before the table starts over.
const RULE_IDS_MAX: usize = 1 << 16;

pub enum Msg {
    Policies(Update),
    Tiers(Update),
    Namespaces(Update),
    Identities(Update),
    /// Pods' labels and named ports.
    Pods(Update),
    /// This node's endpoints changed (ADD, DEL, relabel).
    Local,
    /// Like Local, and answer once the endpoints' policy is programmed.
    Sync(SyncSender<()>),
}

/// How one endpoint's policy stands, for `weft endpoint list`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointStatus {
    pub ingress: bool,
    pub egress: bool,
    pub entries: usize,
    /// Why its last compile failed (it keeps the policy before that).
    pub error: Option<String>,
}

/// What the API reads of the policy thread's work.
#[derive(Default)]
pub struct PolicyState {
    tx: OnceLock<SyncSender<Msg>>,
    view: Mutex<View>,
    rules: Mutex<program::RuleIds>,
}

#[derive(Default, Clone)]
struct View {
    /// The model as last compiled (for `weft policy selectors`).
    cluster: Arc<weft_policy::Cluster>,
    endpoints: BTreeMap<u16, EndpointStatus>,
    namespaces: BTreeMap<String, (u16, Labels)>,
    policies: Vec<PolicyView>,
}

impl PolicyState {
    pub fn endpoint(&self, ep: u16) -> EndpointStatus {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).endpoints.get(&ep).cloned().unwrap_or_default()
    }
}

/// Tells the policy thread this node's endpoints changed.
pub fn local_changed(agent: &Agent) {
    if let Some(tx) = agent.policy.tx.get() {
        let _ = tx.try_send(Msg::Local);
    }
}

/// Tells the policy thread this node's endpoints changed and waits (at
/// most `timeout`) until their policy is in the maps: an ADD answers only
/// then, so no container of a selected pod runs a moment unprotected.
pub fn sync(agent: &Agent, timeout: Duration) {
    let Some(tx) = agent.policy.tx.get() else { return };
    let (done, wait) = std::sync::mpsc::sync_channel(1);
    if tx.try_send(Msg::Sync(done)).is_err() {
        log::warn!("policy: the queue is full; a new endpoint's policy follows shortly");
        return;
    }
    if wait.recv_timeout(timeout).is_err() {
        log::warn!(
            "policy: a new endpoint's policy was not programmed within {timeout:?}; it follows shortly"
        );
    }
}

/// Starts following the store and the policy thread.
pub fn start(agent: Arc<Agent>) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(QUEUE);
    for (prefix, name, wrap) in [
        (objects::POLICIES, "policies", Msg::Policies as fn(Update) -> Msg),
        (objects::TIERS, "tiers", Msg::Tiers),
        (objects::NAMESPACES, "namespaces", Msg::Namespaces),
        ("identities/id/", "identities", Msg::Identities),
        (objects::PODS, "pods", Msg::Pods),
    ] {
        let f = weft_store::follow(agent.store.clone(), prefix, name);
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("weft-follow".into())
            .spawn(move || {
                while let Some(u) = f.recv() {
                    if tx.send(wrap(u)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| e.to_string())?;
    }
    agent.policy.tx.set(tx).map_err(|_| "the policy thread is started once".to_string())?;
    let maps = PolicyMaps::open(&agent.cfg.bpffs).map_err(|e| e.to_string())?;
    let programmed = program::Programmed::read(&maps)?;
    let ns_ids = NamespaceIds::open(&agent.cfg.state_dir)?;
    std::thread::Builder::new()
        .name("weft-policy".into())
        .spawn(move || run(&agent, rx, maps, programmed, ns_ids))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// One prefix of the store as last seen; `ready` once listed.
#[derive(Default)]
struct Raw {
    items: BTreeMap<String, Vec<u8>>,
    ready: bool,
}

impl Raw {
    /// Applies an update; returns the keys whose value changed.
    fn apply(&mut self, u: Update) -> BTreeSet<String> {
        let mut changed = BTreeSet::new();
        match u {
            Update::Reset { items, .. } => {
                for (k, v) in &items {
                    if self.items.get(k) != Some(v) {
                        changed.insert(k.clone());
                    }
                }
                changed.extend(self.items.keys().filter(|k| !items.contains_key(*k)).cloned());
                self.items = items;
                self.ready = true;
            }
            Update::Put { key, value, .. } => {
                if self.items.get(&key) != Some(&value) {
                    self.items.insert(key.clone(), value);
                    changed.insert(key);
                }
            }
            Update::Delete { key, .. } => {
                if self.items.remove(&key).is_some() {
                    changed.insert(key);
                }
            }
            Update::Down(e) => {
                log::warn!("policy: the store is unreachable ({e}); keeping the programmed policy")
            }
        }
        changed
    }
}

/// Node-local namespace ids (the datapath's u16 for a namespace), kept in
/// the state directory so a restarted agent keeps them and the pinned
/// entries stay right.
struct NamespaceIds {
    path: std::path::PathBuf,
    ids: BTreeMap<String, u16>,
}

impl NamespaceIds {
    fn open(state_dir: &std::path::Path) -> Result<Self, String> {
        let path = state_dir.join("namespace-ids.json");
        let ids = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Self { path, ids })
    }

    fn id(&mut self, name: &str) -> Result<u16, String> {
        if let Some(id) = self.ids.get(name) {
            return Ok(*id);
        }
        let used: BTreeSet<u16> = self.ids.values().copied().collect();
        let id = (1..=u16::MAX)
            .find(|i| !used.contains(i))
            .ok_or("all 65535 namespace ids are in use on this node")?;
        self.ids.insert(name.to_string(), id);
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.ids).expect("ids serialize"))
            .and_then(|_| std::fs::rename(&tmp, &self.path))
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok(id)
    }
}

/// The identity labels `k8s:key=value` of the allocator, as the pod's
/// namespace and its own labels.
fn split_identity_labels(labels: &[String]) -> (String, Labels) {
    let mut ns = "default".to_string();
    let mut own = Labels::new();
    for l in labels {
        let Some(l) = l.strip_prefix("k8s:") else { continue };
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        if k == "io.kubernetes.pod.namespace" {
            ns = v.to_string();
        } else {
            own.insert(k.to_string(), v.to_string());
        }
    }
    (ns, own)
}

struct World {
    compiler: Compiler,
    policies: Raw,
    tiers: Raw,
    namespaces: Raw,
    identities: Raw,
    pods: Raw,
    ns_ids: NamespaceIds,
    /// Something besides this node's endpoints changed since the last
    /// compile: every endpoint is compiled again. Otherwise only those
    /// that are new or changed (an ADD costs one compile, not all).
    model_changed: bool,
    /// The endpoints as last compiled.
    last: BTreeMap<u16, Endpoint>,
}

/// A pod's named ports as stored (`PodPorts`).
fn stored_ports(value: &[u8]) -> NamedPorts {
    let ports: Vec<weft_api::ContainerPort> = serde_json::from_slice(value).unwrap_or_default();
    let mut out = NamedPorts::new();
    for p in ports {
        if let Some(proto) = p.proto_number() {
            out.entry(p.name).or_default().insert((proto, p.port));
        }
    }
    out
}

impl World {
    fn ready(&self) -> bool {
        self.policies.ready
            && self.tiers.ready
            && self.namespaces.ready
            && self.identities.ready
            && self.pods.ready
    }

    /// One pod's named ports.
    fn pod_ports(&self, namespace: &str, name: &str) -> NamedPorts {
        self.pods
            .items
            .get(&objects::pod_ports_key(namespace, name))
            .map(|v| stored_ports(v))
            .unwrap_or_default()
    }

    /// Every identity's named ports: the union over the pods with its
    /// namespace and labels (the identity's own definition). Returns
    /// whether any changed.
    fn refresh_named_ports(&mut self) -> bool {
        let mut by_labels: BTreeMap<(String, Labels), NamedPorts> = BTreeMap::new();
        for (key, value) in &self.pods.items {
            let Some(pod) = key.strip_prefix(objects::PODS).and_then(|k| k.strip_suffix("/ports")) else {
                continue;
            };
            let Some((ns, name)) = pod.split_once('/') else { continue };
            let labels: Labels = self
                .pods
                .items
                .get(&format!("{}{ns}/{name}/labels", objects::PODS))
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            let ports = by_labels.entry((ns.to_string(), labels)).or_default();
            for (n, set) in stored_ports(value) {
                ports.entry(n).or_default().extend(set);
            }
        }
        let updates: Vec<(u32, Identity)> = self
            .compiler
            .cluster()
            .identities()
            .iter()
            .filter_map(|(id, i)| {
                let want =
                    by_labels.get(&(i.namespace.clone(), i.labels.clone())).cloned().unwrap_or_default();
                (want != i.named_ports).then(|| (*id, Identity { named_ports: want, ..i.clone() }))
            })
            .collect();
        let changed = !updates.is_empty();
        for (id, identity) in updates {
            if let Err(e) = self.compiler.upsert_identity(id, identity) {
                log::warn!("policy: identity {id}: {e}");
            }
        }
        changed
    }

    /// Makes sure the compiler knows namespace `name` (labels from the
    /// store, or none: every pod's namespace exists implicitly).
    fn namespace(&mut self, name: &str) -> Result<(), String> {
        let labels: Labels = self
            .namespaces
            .items
            .get(&format!("{}{name}", objects::NAMESPACES))
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        let id = self.ns_ids.id(name)?;
        self.compiler.upsert_namespace(name, id, labels).map_err(|e| e.to_string())
    }

    /// Like `namespace`, only when the compiler does not know it yet.
    fn ensure_namespace(&mut self, name: &str) -> Result<(), String> {
        if self.compiler.cluster().namespace(name).is_some() {
            return Ok(());
        }
        self.namespace(name)
    }

    fn apply(&mut self, msg: Msg) -> Result<(), String> {
        // Pods matter only through their named ports (refresh says).
        if !matches!(msg, Msg::Local | Msg::Sync(_) | Msg::Pods(_)) {
            self.model_changed = true;
        }
        match msg {
            Msg::Local | Msg::Sync(_) => {}
            Msg::Pods(u) => {
                if !self.pods.apply(u).is_empty() && self.refresh_named_ports() {
                    self.model_changed = true;
                }
            }
            Msg::Tiers(u) => {
                for key in self.tiers.apply(u) {
                    let name = key.strip_prefix(objects::TIERS).unwrap_or(&key).to_string();
                    match self.tiers.items.get(&key) {
                        Some(v) => self.compiler.set_tier(&name, objects::tier_order(v)),
                        None => self.compiler.remove_tier(&name),
                    }
                }
            }
            Msg::Namespaces(u) => {
                for key in self.namespaces.apply(u) {
                    let name = key.strip_prefix(objects::NAMESPACES).unwrap_or(&key).to_string();
                    self.namespace(&name)?;
                }
            }
            Msg::Identities(u) => {
                for key in self.identities.apply(u) {
                    let Some(id) = key.rsplit('/').next().and_then(|s| s.parse::<u32>().ok()) else {
                        continue;
                    };
                    let labels: Option<Vec<String>> =
                        self.identities.items.get(&key).and_then(|b| serde_json::from_slice(b).ok());
                    match labels {
                        Some(l) => {
                            let (ns, own) = split_identity_labels(&l);
                            self.ensure_namespace(&ns)?;
                            let identity = Identity { namespace: ns, labels: own, ..Default::default() };
                            if let Err(e) = self.compiler.upsert_identity(id, identity) {
                                log::warn!("policy: identity {id}: {e}");
                            }
                        }
                        None => self.compiler.remove_identity(id),
                    }
                }
                let _ = self.refresh_named_ports();
            }
            Msg::Policies(u) => {
                for key in self.policies.apply(u) {
                    let Some(r) = objects::parse_policy_key(&key) else { continue };
                    let doc = self.policies.items.get(&key).map(|b| {
                        serde_json::from_slice::<serde_json::Value>(b)
                            .map_err(|e| e.to_string())
                            .and_then(|v| PolicyDocument::from_json(&v).map_err(|e| e.to_string()))
                    });
                    match doc {
                        Some(Ok(doc)) => {
                            if let Some(ns) = &r.namespace {
                                self.ensure_namespace(ns)?;
                            }
                            if let Err(e) = self.compiler.upsert_policy(doc) {
                                log::warn!("policy: {r} cannot be enforced: {e}");
                            }
                        }
                        Some(Err(e)) => log::warn!("policy: stored {key} is invalid ({e}); ignored"),
                        None => {
                            self.compiler.remove_policy(&r);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The local endpoints to compile for: (endpoint id, endpoint).
fn local_endpoints(agent: &Agent, w: &World) -> Vec<(u16, Endpoint)> {
    let records: Vec<_> = agent
        .pods()
        .endpoints
        .values()
        .filter(|r| r.phase != Phase::Deleting && r.identity >= weft_store::identity::FIRST_ALLOCATED)
        .cloned()
        .collect();
    records
        .into_iter()
        .map(|r| {
            let (ns, labels) = split_identity_labels(&r.labels);
            let namespace = r.pod_namespace.clone().unwrap_or(ns);
            let named_ports = match &r.pod_name {
                Some(name) => w.pod_ports(&namespace, name),
                None => NamedPorts::new(),
            };
            (r.id, Endpoint { identity: r.identity, namespace, labels, named_ports, addr: r.ip })
        })
        .collect()
}

fn kind_word(k: PolicyKind) -> String {
    objects::kind_word(k).to_string()
}

/// Compiles every local endpoint and programs the difference.
fn recompile(agent: &Agent, w: &mut World, maps: &PolicyMaps, p: &mut program::Programmed) {
    let endpoints = local_endpoints(agent, w);
    for (_, e) in &endpoints {
        if w.compiler.cluster().namespace(&e.namespace).is_none() {
            w.model_changed = true;
            if let Err(e) = w.ensure_namespace(&e.namespace) {
                log::warn!("policy: {e}");
            }
        }
    }
    let identities: BTreeMap<u32, u16> = w
        .compiler
        .cluster()
        .identities()
        .keys()
        .map(|id| (*id, w.compiler.cluster().namespace_id_of(*id)))
        .collect();
    let classes: BTreeMap<(Ipv4Addr, u8), u32> =
        w.compiler.classes().classes().into_iter().map(|(c, id)| ((c.addr(), c.prefix_len()), id)).collect();
    if let Err(e) = p.add_lookups(maps, &identities, &classes) {
        log::error!("policy: writing identities and CIDR classes failed: {e}");
        return;
    }
    let mut statuses = BTreeMap::new();
    let before = agent.policy.view.lock().unwrap_or_else(|p| p.into_inner()).endpoints.clone();
    let mut rules = agent.policy.rules.lock().unwrap_or_else(|p| p.into_inner());
    // Rule ids are never reused, so policy churn grows the table: past the
    // limit, a full compile starts a fresh one (every entry's id changes
    // once, and the difference rewrites them).
    if w.model_changed && rules.len() > RULE_IDS_MAX {
        *rules = program::RuleIds::default();
    }
    for (ep, endpoint) in &endpoints {
        if !w.model_changed
            && w.last.get(ep) == Some(endpoint)
            && let Some(st) = before.get(ep)
        {
            statuses.insert(*ep, st.clone());
            continue;
        }
        let mut st = EndpointStatus::default();
        match w.compiler.compile(endpoint) {
            Ok(compiled) => {
                let (want, enforce) = program::endpoint_contents(*ep, &compiled, &mut rules);
                st.ingress = compiled.ingress.enforced;
                st.egress = compiled.egress.enforced;
                st.entries = want.len();
                if let Err(e) = p.set_endpoint(maps, *ep, want, enforce) {
                    log::error!(
                        "policy: endpoint {ep}: writing its entries failed ({e}); it keeps what it had"
                    );
                    st.error = Some(format!("programming failed: {e}"));
                }
            }
            Err(e) => {
                log::warn!("policy: endpoint {ep}: {e}; it keeps its last good policy");
                let old = agent.policy.endpoint(*ep);
                st = EndpointStatus { error: Some(e.to_string()), ..old };
            }
        }
        statuses.insert(*ep, st);
    }
    drop(rules);
    let eps: BTreeSet<u16> = endpoints.iter().map(|(ep, _)| *ep).collect();
    if let Err(e) = p.prune(maps, &eps, &identities, &classes) {
        log::error!("policy: removing stale entries failed: {e}");
    }
    let cluster = if w.model_changed {
        Arc::new(w.compiler.cluster().clone())
    } else {
        agent.policy.view.lock().unwrap_or_else(|p| p.into_inner()).cluster.clone()
    };
    w.model_changed = false;
    w.last = endpoints.iter().cloned().collect();
    let view = View {
        cluster,
        endpoints: statuses,
        namespaces: w
            .compiler
            .cluster()
            .namespaces()
            .iter()
            .map(|(n, ns)| (n.clone(), (ns.id, ns.labels.clone())))
            .collect(),
        policies: policy_views(w, &endpoints),
    };
    *agent.policy.view.lock().unwrap_or_else(|p| p.into_inner()) = view;
}

fn policy_views(w: &World, endpoints: &[(u16, Endpoint)]) -> Vec<PolicyView> {
    let mut out = Vec::new();
    for (r, doc) in w.compiler.cluster().policies() {
        let (tier, order, types) = match doc {
            PolicyDocument::K8s(p) => ("default".to_string(), Some(1000.0), p.spec.effective_policy_types()),
            PolicyDocument::Calico(p) => {
                (p.spec.tier_or_default().to_string(), p.spec.order, p.spec.effective_types())
            }
            PolicyDocument::CalicoGlobal(p) => {
                (p.spec.tier_or_default().to_string(), p.spec.order, p.spec.effective_types())
            }
        };
        let applies = endpoints.iter().filter(|(_, e)| selects(w, r, e)).count();
        out.push(PolicyView {
            kind: kind_word(r.kind),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            tier,
            order,
            types: types.iter().map(|t| format!("{t:?}")).collect(),
            endpoints: applies,
            refused: w.compiler.refusal(r).map(|e| e.to_string()),
        });
    }
    for (key, v) in &w.tiers.items {
        out.push(PolicyView {
            kind: "tier".into(),
            namespace: None,
            name: key.strip_prefix(objects::TIERS).unwrap_or(key).to_string(),
            tier: String::new(),
            order: Some(objects::tier_order(v)).filter(|o| *o != objects::TIER_ORDER_LAST),
            types: vec![],
            endpoints: 0,
            refused: None,
        });
    }
    out
}

/// Whether policy `r` applies to endpoint `e` (in some direction).
fn selects(w: &World, r: &PolicyRef, e: &Endpoint) -> bool {
    w.compiler
        .cluster()
        .policies()
        .get(r)
        .is_some_and(|doc| weft_policy::selects(w.compiler.cluster(), doc, e))
}

/// Where pod addresses come from: the cluster's pool, or this node's pod
/// CIDR on a single node.
fn pod_pools(agent: &Agent) -> Vec<weft_policy::Ipv4Cidr> {
    let c = if agent.cluster { agent.cfg.cluster_pool } else { agent.pod_cidr };
    weft_policy::Ipv4Cidr::new(c.addr, c.prefix).into_iter().collect()
}

fn run(
    agent: &Agent,
    rx: Receiver<Msg>,
    maps: PolicyMaps,
    mut programmed: program::Programmed,
    ns_ids: NamespaceIds,
) {
    let mut w = World {
        compiler: Compiler::new()
            .with_entry_budget(agent.cfg.policy_max_entries)
            .with_pod_pools(pod_pools(agent)),
        policies: Raw::default(),
        tiers: Raw::default(),
        namespaces: Raw::default(),
        identities: Raw::default(),
        pods: Raw::default(),
        ns_ids,
        model_changed: true,
        last: BTreeMap::new(),
    };
    w.compiler.set_tier(weft_policy::calico_policy::DEFAULT_TIER, 1_000_000.0);
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch: Vec<Msg> = first.into_iter().collect();
        batch.extend(rx.try_iter());
        let mut waiting = Vec::new();
        for m in batch {
            if let Msg::Sync(done) = m {
                waiting.push(done);
                continue;
            }
            if let Err(e) = w.apply(m) {
                log::error!("policy: {e}");
            }
        }
        // Not ready (the store has not listed everything yet): nothing is
        // programmed, and waiting ADDs are let go rather than held.
        if w.ready() {
            recompile(agent, &mut w, &maps, &mut programmed);
        }
        for done in waiting {
            let _ = done.try_send(());
        }
    }
}

// ----- API -----

pub fn list(agent: &Agent) -> Vec<PolicyView> {
    agent.policy.view.lock().unwrap_or_else(|p| p.into_inner()).policies.clone()
}

/// `weft policy selectors`: which identities each selector matches.
pub fn selectors(agent: &Agent) -> Vec<weft_api::SelectorView> {
    let cluster = agent.policy.view.lock().unwrap_or_else(|p| p.into_inner()).cluster.clone();
    weft_policy::selectors::selector_matches(&cluster)
        .into_iter()
        .map(|m| weft_api::SelectorView {
            used_by: format!("{}: {}", m.policy, m.place),
            selector: m.selector,
            identities: m.identities,
        })
        .collect()
}

pub fn namespaces(agent: &Agent) -> Vec<NamespaceView> {
    let v = agent.policy.view.lock().unwrap_or_else(|p| p.into_inner());
    v.namespaces
        .iter()
        .map(|(n, (id, labels))| NamespaceView { name: n.clone(), id: *id, labels: labels.clone() })
        .collect()
}

fn l4_text(k: &PolicyKey) -> (String, String) {
    let proto = match (k.prefixlen > POLICY_STATIC_BITS, k.proto) {
        (false, _) => return ("ANY".into(), "ANY".into()),
        (true, 6) => "TCP".to_string(),
        (true, 17) => "UDP".to_string(),
        (true, 132) => "SCTP".to_string(),
        (true, 1) => "ICMP".to_string(),
        (true, n) => n.to_string(),
    };
    let bits = k.prefixlen.saturating_sub(POLICY_STATIC_BITS + 8);
    if bits == 0 {
        return (proto, "ANY".into());
    }
    let port = u16::from_be(k.dport);
    let last = port | (u16::MAX.checked_shr(bits).unwrap_or(0));
    let ports = if last == port { port.to_string() } else { format!("{port}-{last}") };
    (proto, ports)
}

/// `weft bpf policy get EP`: the endpoint's entries, readable.
pub fn bpf_get(agent: &Agent, ep: u16) -> Result<BpfPolicyView, ApiError> {
    let err = |e: weft_datapath::Error| {
        ApiError::new(code::DATAPATH, "reading the policy maps failed", e.to_string())
    };
    let maps = PolicyMaps::open(&agent.cfg.bpffs).map_err(err)?;
    let enforce = maps.endpoint(ep).map_err(err)?.unwrap_or_default();
    let classes: BTreeMap<u32, String> =
        maps.classes_list().map_err(err)?.into_iter().map(|((a, l), c)| (c, format!("{a}/{l}"))).collect();
    let ns_names: BTreeMap<u16, String> = {
        let v = agent.policy.view.lock().unwrap_or_else(|p| p.into_inner());
        v.namespaces.iter().map(|(n, (id, _))| (*id, n.clone())).collect()
    };
    let rules = agent.policy.rules.lock().unwrap_or_else(|p| p.into_inner());
    let entries = maps
        .entries()
        .map_err(err)?
        .into_iter()
        .filter(|(k, _)| k.ep_id == ep)
        .map(|(k, v)| {
            let (proto, ports) = l4_text(&k);
            PolicyEntryView {
                direction: if k.direction == POLICY_INGRESS { "ingress" } else { "egress" }.into(),
                peer: match k.peer_kind {
                    PEER_IDENTITY => format!("identity {}", k.peer),
                    PEER_NAMESPACE => format!(
                        "namespace {} ({})",
                        ns_names.get(&(k.peer as u16)).map(String::as_str).unwrap_or("?"),
                        k.peer
                    ),
                    _ => "any".into(),
                },
                cidr: (k.cidr_class != 0).then(|| {
                    classes.get(&k.cidr_class).cloned().unwrap_or_else(|| format!("class {}", k.cidr_class))
                }),
                proto,
                ports,
                action: if v.action == POLICY_ALLOW { "allow" } else { "deny" }.into(),
                log: v.flags & POLICY_F_LOG != 0,
                rule: rules.name(v.rule),
            }
        })
        .collect();
    Ok(BpfPolicyView {
        endpoint: ep,
        ingress_enforced: enforce.ingress != 0,
        egress_enforced: enforce.egress != 0,
        entries,
    })
}
