//! The ipcache (address -> identity, node) fed from watches on the cluster
//! store: `nodes/` and `endpoints/` are listed once and then followed event
//! by event, so a pod added on one node reaches every other node's map in
//! milliseconds, and the work per event is O(change): one endpoint event
//! touches one map entry. Node changes (rare) recompute everything.
//!
//! A store outage must never cost a live node its pods' reachability: when
//! etcd comes back after being unreachable for longer than the lease TTL,
//! it expires every lease at once (it checks them by the clock), so each
//! node would see every other node leave. [`View`] notices the outage and
//! gives nodes a grace period to renew before anyone is removed; a node
//! never removes itself or its own pods (those come from its journal).

use crate::{cluster::NodeRecord, config::Mode, journal::Phase, state::Agent};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{
        Arc,
        mpsc::{Receiver, RecvTimeoutError, SyncSender},
    },
    time::{Duration, Instant},
};
use weft_datapath::maps::{ENDPOINT_F_HOST, IPCACHE_F_NODE, IpcacheInfo, ip_to_be};
use weft_store::{
    Update,
    identity::{IDENTITY_HOST, IDENTITY_REMOTE_NODE},
};

/// How often grace periods and this node's own pods are looked at when no
/// event comes.
pub const TICK: Duration = Duration::from_secs(1);

/// Messages queued to the ipcache thread, at most this many.
const QUEUE: usize = 4096;

pub type Desired = BTreeMap<(Ipv4Addr, u8), IpcacheInfo>;

/// What wakes the ipcache thread.
pub enum Msg {
    Nodes(Update),
    Endpoints(Update),
    /// This node's pods changed (ADD, DEL, relabel).
    Local,
}

/// The other nodes as this node sees them, and how the store is doing.
#[derive(Default)]
pub struct View {
    known: BTreeMap<String, NodeRecord>,
    /// Until then, a known node missing from the store is kept.
    grace_until: Option<Instant>,
    store_down: bool,
}

impl View {
    /// The store could not be reached.
    pub fn store_failed(&mut self) {
        self.store_down = true;
    }

    /// Something (our own expired lease) says the store was out: leases
    /// may all expire when it returns.
    pub fn outage(&mut self) {
        self.store_down = true;
        self.grace_until = None;
    }

    pub fn store_down(&self) -> bool {
        self.store_down
    }

    /// Takes the nodes the store lists and returns those to program: the
    /// listed ones, this node always, and — for `grace` after the store
    /// came back from an outage — known nodes that have not re-registered
    /// yet. Called when the store answered (an event or listing arrived).
    pub fn observe(
        &mut self,
        listed: Vec<NodeRecord>,
        me: NodeRecord,
        now: Instant,
        grace: Duration,
    ) -> Vec<NodeRecord> {
        if self.store_down {
            self.store_down = false;
            self.grace_until = Some(now + grace);
            log::info!(
                "the store answers again; nodes get {}s to renew their registration before any is removed",
                grace.as_secs()
            );
        }
        let in_grace = self.grace_until.is_some_and(|g| now < g);
        let mut nodes: BTreeMap<String, NodeRecord> =
            listed.into_iter().map(|n| (n.name.clone(), n)).collect();
        nodes.insert(me.name.clone(), me);
        for (name, n) in &self.known {
            if nodes.contains_key(name) {
                continue;
            }
            if in_grace {
                nodes.insert(name.clone(), n.clone());
            } else {
                log::info!("node {name} left (its registration expired)");
            }
        }
        for name in nodes.keys().filter(|n| !self.known.contains_key(*n)) {
            log::info!("node {name} joined");
        }
        self.known = nodes;
        self.known.values().cloned().collect()
    }
}

/// One ipcache entry of a node's pod.
fn pod_entry(identity: u32, tunnel: u32) -> IpcacheInfo {
    IpcacheInfo { sec_identity: identity, tunnel_endpoint: tunnel, flags: 0, pad: 0 }
}

/// What the ipcache should hold: the nodes (with the local one as host) and
/// their pod CIDRs, and every endpoint as (node, address, identity).
pub fn desired_ipcache(me: &str, nodes: &[NodeRecord], endpoints: &[(String, Ipv4Addr, u32)]) -> Desired {
    let mut d = Desired::new();
    let by_name: BTreeMap<&str, &NodeRecord> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    for n in nodes {
        let local = n.name == me;
        let tunnel = if local { 0 } else { ip_to_be(n.ip) };
        let id = if local { IDENTITY_HOST } else { IDENTITY_REMOTE_NODE };
        d.insert(
            (n.ip, 32),
            IpcacheInfo { sec_identity: id, tunnel_endpoint: tunnel, flags: IPCACHE_F_NODE, pad: 0 },
        );
        if !local {
            d.insert((n.pod_cidr.addr, n.pod_cidr.prefix), pod_entry(IDENTITY_REMOTE_NODE, tunnel));
        }
    }
    for (node, ip, identity) in endpoints {
        let Some(node) = by_name.get(node.as_str()) else { continue };
        let tunnel = if node.name == me { 0 } else { ip_to_be(node.ip) };
        d.insert((*ip, 32), pod_entry(*identity, tunnel));
    }
    d
}

/// `endpoints/<node>/<ip>` -> (node, ip).
fn parse_endpoint_key(key: &str) -> Option<(String, Ipv4Addr)> {
    let mut parts = key.strip_prefix("endpoints/")?.split('/');
    let (node, ip) = (parts.next()?, parts.next()?.parse().ok()?);
    parts.next().is_none().then(|| (node.to_string(), ip))
}

/// The published identity of an endpoint record.
fn identity_of(value: &[u8]) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    v.get("identity")?.as_u64().and_then(|i| u32::try_from(i).ok())
}

/// The ipcache thread's state: what the store says, and what the map holds.
#[derive(Default)]
pub struct Cache {
    /// Registered nodes as the store lists them.
    listed: BTreeMap<String, NodeRecord>,
    /// The nodes programmed (listed + grace + this node).
    nodes: BTreeMap<String, NodeRecord>,
    /// Other nodes' pods: node -> address -> identity.
    remote: BTreeMap<String, BTreeMap<Ipv4Addr, u32>>,
    /// Which nodes publish an address (one, but for a moment two when an
    /// address moves): an event's entry is found without a scan of nodes.
    holders: BTreeMap<Ipv4Addr, BTreeSet<String>>,
    /// This node's pods: address -> identity.
    local: BTreeMap<Ipv4Addr, u32>,
    /// The node's own addresses (gateway included) as node setup wrote
    /// them: host identity, kept in every full computation.
    hosts: Desired,
    /// What the map holds (written by this thread, and for local
    /// endpoints by `Datapath::put_endpoint` with the same values).
    programmed: Desired,
    /// Both listings arrived: until then nothing is removed.
    have_nodes: bool,
    have_endpoints: bool,
}

/// A change the map must follow: (key, Some(value)) puts, None deletes.
pub type Writes = Vec<((Ipv4Addr, u8), Option<IpcacheInfo>)>;

impl Cache {
    fn ready(&self) -> bool {
        self.have_nodes && self.have_endpoints
    }

    /// Everything, from scratch: after a listing or a node change.
    fn full(&mut self, me: &str) -> Writes {
        let nodes: Vec<NodeRecord> = self.nodes.values().cloned().collect();
        let mut eps: Vec<(String, Ipv4Addr, u32)> = self
            .remote
            .iter()
            .flat_map(|(n, m)| m.iter().map(move |(ip, id)| (n.clone(), *ip, *id)))
            .collect();
        eps.extend(self.local.iter().map(|(ip, id)| (me.to_string(), *ip, *id)));
        let mut desired = desired_ipcache(me, &nodes, &eps);
        for (k, v) in &self.hosts {
            desired.entry(*k).or_insert(*v);
        }
        let mut w: Writes = desired
            .iter()
            .filter(|(k, v)| self.programmed.get(k) != Some(v))
            .map(|(k, v)| (*k, Some(*v)))
            .collect();
        w.extend(self.programmed.keys().filter(|k| !desired.contains_key(k)).map(|k| (*k, None)));
        w
    }

    /// The entry for one address: this node's pod, another node's pod (the
    /// first programmed node that publishes it), or none.
    fn entry_for(&self, ip: Ipv4Addr) -> Option<IpcacheInfo> {
        if let Some(id) = self.local.get(&ip) {
            return Some(pod_entry(*id, 0));
        }
        self.holders.get(&ip)?.iter().find_map(|node| {
            let n = self.nodes.get(node)?;
            self.remote.get(node)?.get(&ip).map(|id| pod_entry(*id, ip_to_be(n.ip)))
        })
    }

    /// The write (if any) that brings one pod address in line.
    fn one(&self, ip: Ipv4Addr) -> Writes {
        let want = self.entry_for(ip);
        if self.programmed.get(&(ip, 32)).copied() == want {
            return vec![];
        }
        // Never drop a node's own /32 because no pod has that address.
        if want.is_none() && self.programmed.get(&(ip, 32)).is_some_and(|v| v.flags & IPCACHE_F_NODE != 0) {
            return vec![];
        }
        vec![((ip, 32), want)]
    }

    /// Applies a message; returns the map writes it calls for and whether
    /// the node set changed (native routes follow it).
    pub fn apply(&mut self, msg: Msg, me: &NodeRecord, view: &mut View, grace: Duration) -> (Writes, bool) {
        match msg {
            Msg::Nodes(u) => self.apply_nodes(u, me, view, grace),
            Msg::Endpoints(u) => (self.apply_endpoints(u, &me.name, view), false),
            Msg::Local => (vec![], false),
        }
    }

    fn apply_nodes(
        &mut self,
        u: Update,
        me: &NodeRecord,
        view: &mut View,
        grace: Duration,
    ) -> (Writes, bool) {
        match u {
            Update::Reset { items, .. } => {
                self.listed = items
                    .values()
                    .filter_map(|v| serde_json::from_slice::<NodeRecord>(v).ok())
                    .map(|n| (n.name.clone(), n))
                    .collect();
                self.have_nodes = true;
            }
            Update::Put { value, .. } => {
                if let Ok(n) = serde_json::from_slice::<NodeRecord>(&value) {
                    self.listed.insert(n.name.clone(), n);
                }
            }
            Update::Delete { key, .. } => {
                if let Some(name) = key.strip_prefix("nodes/") {
                    self.listed.remove(name);
                }
            }
            Update::Down(_) => {
                view.store_failed();
                return (vec![], false);
            }
        }
        self.renodes(me, view, grace, Instant::now())
    }

    /// Recomputes the programmed node set; everything when it changed.
    pub fn renodes(
        &mut self,
        me: &NodeRecord,
        view: &mut View,
        grace: Duration,
        now: Instant,
    ) -> (Writes, bool) {
        let nodes = view.observe(self.listed.values().cloned().collect(), me.clone(), now, grace);
        let nodes: BTreeMap<String, NodeRecord> = nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        if nodes == self.nodes {
            return (vec![], false);
        }
        self.nodes = nodes;
        if !self.ready() {
            return (vec![], true);
        }
        (self.full(&me.name), true)
    }

    fn apply_endpoints(&mut self, u: Update, me: &str, view: &mut View) -> Writes {
        match u {
            Update::Reset { items, .. } => {
                self.remote.clear();
                self.holders.clear();
                for (key, value) in items {
                    if let (Some((node, ip)), Some(id)) = (parse_endpoint_key(&key), identity_of(&value))
                        && node != me
                    {
                        self.remote_insert(node, ip, id);
                    }
                }
                self.have_endpoints = true;
                if !self.ready() {
                    return vec![];
                }
                self.full(me)
            }
            Update::Put { key, value, .. } => {
                let (Some((node, ip)), Some(id)) = (parse_endpoint_key(&key), identity_of(&value)) else {
                    return vec![];
                };
                if node == me {
                    return vec![];
                }
                self.remote_insert(node, ip, id);
                if self.ready() { self.one(ip) } else { vec![] }
            }
            Update::Delete { key, .. } => {
                let Some((node, ip)) = parse_endpoint_key(&key) else { return vec![] };
                self.remote_remove(&node, ip);
                if self.ready() { self.one(ip) } else { vec![] }
            }
            Update::Down(_) => {
                view.store_failed();
                vec![]
            }
        }
    }

    fn remote_insert(&mut self, node: String, ip: Ipv4Addr, id: u32) {
        self.holders.entry(ip).or_default().insert(node.clone());
        self.remote.entry(node).or_default().insert(ip, id);
    }

    fn remote_remove(&mut self, node: &str, ip: Ipv4Addr) {
        if let Some(m) = self.remote.get_mut(node) {
            m.remove(&ip);
            if m.is_empty() {
                self.remote.remove(node);
            }
        }
        if let Some(h) = self.holders.get_mut(&ip) {
            h.remove(node);
            if h.is_empty() {
                self.holders.remove(&ip);
            }
        }
    }

    /// This node's pods as the journal has them (all but those being
    /// deleted, once they have an identity).
    pub fn relocal(&mut self, local: BTreeMap<Ipv4Addr, u32>) -> Writes {
        let old = std::mem::replace(&mut self.local, local);
        let touched: BTreeSet<Ipv4Addr> = old.keys().chain(self.local.keys()).copied().collect();
        if !self.ready() {
            return vec![];
        }
        touched.into_iter().flat_map(|ip| self.one(ip)).collect()
    }

    /// Records writes that reached the map.
    pub fn programmed(&mut self, k: (Ipv4Addr, u8), v: Option<IpcacheInfo>) {
        match v {
            Some(v) => self.programmed.insert(k, v),
            None => self.programmed.remove(&k),
        };
    }

    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.nodes.values().cloned().collect()
    }
}

fn local_pods(agent: &Agent) -> BTreeMap<Ipv4Addr, u32> {
    agent
        .pods()
        .endpoints
        .values()
        .filter(|r| {
            r.phase != Phase::Deleting && r.identity != 0 && r.identity != crate::endpoint::IDENTITY_UNKNOWN
        })
        .map(|r| (r.ip, r.identity))
        .collect()
}

/// Starts following the store and the ipcache thread. `WEFT_IPCACHE=poll`
/// re-lists the store every second instead of watching it: the design
/// before the watch, kept as the benchmark's baseline.
pub fn start(agent: Arc<Agent>) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(QUEUE);
    if std::env::var("WEFT_IPCACHE").is_ok_and(|v| v == "poll") {
        log::warn!("WEFT_IPCACHE=poll: re-listing the store every second instead of watching it");
        forward(poll(agent.store.clone(), "nodes/"), tx.clone(), Msg::Nodes)?;
        forward(poll(agent.store.clone(), "endpoints/"), tx.clone(), Msg::Endpoints)?;
    } else {
        let nodes = weft_store::follow(agent.store.clone(), "nodes/", "nodes");
        let endpoints = weft_store::follow(agent.store.clone(), "endpoints/", "endpoints");
        forward(move || nodes.recv(), tx.clone(), Msg::Nodes)?;
        forward(move || endpoints.recv(), tx.clone(), Msg::Endpoints)?;
    }
    agent.ipcache_tx.set(tx).map_err(|_| "the ipcache is started once".to_string())?;
    std::thread::Builder::new()
        .name("weft-ipcache".into())
        .spawn(move || run(&agent, rx))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// One thread per follower moves its updates onto the ipcache queue
/// (std channels cannot wait on two receivers).
fn forward(
    mut next: impl FnMut() -> Option<Update> + Send + 'static,
    tx: SyncSender<Msg>,
    wrap: fn(Update) -> Msg,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("weft-follow".into())
        .spawn(move || {
            while let Some(u) = next() {
                if tx.send(wrap(u)).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A full listing every second, as a stream of resets.
fn poll(store: Arc<dyn weft_store::Store>, prefix: &'static str) -> impl FnMut() -> Option<Update> + Send {
    let mut first = true;
    move || {
        if !std::mem::take(&mut first) {
            std::thread::sleep(TICK);
        }
        Some(match store.list_at(prefix) {
            Ok((items, rev)) => Update::Reset { items: items.into_iter().collect(), rev },
            Err(e) => Update::Down(e.to_string()),
        })
    }
}

fn run(agent: &Agent, rx: Receiver<Msg>) {
    let me = agent.node_record();
    let grace = agent.cfg.lease_ttl * 2;
    let mut cache = Cache::default();
    // What the (pinned) map holds from before a restart: stale entries in
    // it are removed by the first full computation.
    match agent.dp().list_ipcache() {
        Ok(list) => list.into_iter().for_each(|(ip, p, v)| cache.programmed((ip, p), Some(v))),
        Err(e) => log::warn!("reading weft_ipcache: {e}"),
    }
    match agent.dp().list_endpoints() {
        Ok(list) => {
            cache.hosts = list
                .iter()
                .filter(|(_, e)| e.flags & ENDPOINT_F_HOST != 0)
                .map(|(ip, e)| ((*ip, 32), weft_datapath::loader::local_ipcache_entry(e)))
                .collect()
        }
        Err(e) => log::warn!("reading weft_endpoints: {e}"),
    }
    let (mut last_tick, mut local_due) = (Instant::now(), true);
    loop {
        let msg = rx.recv_timeout(TICK);
        let mut writes = Writes::new();
        let mut nodes_changed = false;
        match msg {
            Ok(Msg::Local) => local_due = true,
            Ok(m) => {
                let (w, changed) = cache.apply(m, &me, &mut agent.view(), grace);
                writes.extend(w);
                nodes_changed |= changed;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Own pods when they changed (and once a second, in case a signal
        // was dropped on a full queue); grace periods end by the clock.
        let tick = last_tick.elapsed() >= TICK;
        if local_due || tick {
            writes.extend(cache.relocal(local_pods(agent)));
            local_due = false;
        }
        if tick {
            last_tick = Instant::now();
            let mut view = agent.view();
            if !view.store_down() {
                let (w, changed) = cache.renodes(&me, &mut view, grace, Instant::now());
                writes.extend(w);
                nodes_changed |= changed;
            }
        }
        program(agent, &mut cache, writes);
        if nodes_changed
            && agent.mode == Mode::Native
            && let Err(e) = crate::routes::sync(agent, &cache.nodes())
        {
            log::warn!("native routes: {e}");
        }
    }
}

fn program(agent: &Agent, cache: &mut Cache, writes: Writes) {
    if writes.is_empty() {
        return;
    }
    let mut dp = agent.dp();
    for (k, v) in writes {
        let r = match v {
            Some(v) => dp.put_ipcache(k.0, k.1, v).map_err(|e| e.to_string()),
            None => {
                dp.del_ipcache(k.0, k.1);
                Ok(())
            }
        };
        match r {
            Ok(()) => cache.programmed(k, v),
            Err(e) => log::warn!("ipcache {}/{}: {e}", k.0, k.1),
        }
    }
}

/// This node's pods changed: the ipcache thread looks now (if its queue is
/// full it looks at its next message or tick anyway).
pub fn local_changed(agent: &Agent) {
    if let Some(tx) = agent.ipcache_tx.get() {
        let _ = tx.try_send(Msg::Local);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: [u8; 4], cidr: &str) -> NodeRecord {
        NodeRecord { name: name.into(), ip: Ipv4Addr::from(ip), pod_cidr: cidr.parse().unwrap() }
    }

    fn ep_value(identity: u32) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "identity": identity, "phase": "ready" })).unwrap()
    }

    #[test]
    fn ipcache_places_remote_pods_behind_their_node() {
        let nodes =
            vec![node("a", [198, 18, 0, 11], "10.244.0.0/24"), node("b", [198, 18, 0, 12], "10.244.1.0/24")];
        let eps = vec![
            ("a".to_string(), Ipv4Addr::new(10, 244, 0, 2), 256),
            ("b".to_string(), Ipv4Addr::new(10, 244, 1, 2), 257),
            ("c".to_string(), Ipv4Addr::new(10, 244, 9, 9), 258),
        ];
        let d = desired_ipcache("a", &nodes, &eps);
        let b = ip_to_be(Ipv4Addr::new(198, 18, 0, 12));
        assert_eq!(d[&(Ipv4Addr::new(10, 244, 1, 2), 32)], pod_entry(257, b));
        assert_eq!(d[&(Ipv4Addr::new(10, 244, 0, 2), 32)].tunnel_endpoint, 0, "local pods need no tunnel");
        assert_eq!(d[&(Ipv4Addr::new(198, 18, 0, 12), 32)].flags, IPCACHE_F_NODE);
        assert_eq!(d[&(Ipv4Addr::new(198, 18, 0, 12), 32)].sec_identity, 6);
        assert_eq!(d[&(Ipv4Addr::new(198, 18, 0, 11), 32)].sec_identity, 1);
        assert_eq!(d[&(Ipv4Addr::new(10, 244, 1, 0), 24)].tunnel_endpoint, b);
        assert!(!d.contains_key(&(Ipv4Addr::new(10, 244, 0, 0), 24)), "own CIDR is not remote");
        assert!(
            !d.contains_key(&(Ipv4Addr::new(10, 244, 9, 9), 32)),
            "pods of nodes that are gone are dropped"
        );
    }

    #[test]
    fn an_outage_gives_nodes_a_grace_period_and_a_node_never_drops_itself() {
        let (a, b) =
            (node("a", [198, 18, 0, 11], "10.244.0.0/24"), node("b", [198, 18, 0, 12], "10.244.1.0/24"));
        let (s, grace) = (Duration::from_secs(1), Duration::from_secs(10));
        let t0 = Instant::now();
        let mut v = View::default();
        let names = |n: Vec<NodeRecord>| n.into_iter().map(|n| n.name).collect::<Vec<_>>();
        assert_eq!(names(v.observe(vec![a.clone(), b.clone()], a.clone(), t0, grace)), ["a", "b"]);
        // Normal times: a node whose lease expires leaves at once.
        assert_eq!(names(v.observe(vec![a.clone()], a.clone(), t0 + s, grace)), ["a"]);
        assert_eq!(names(v.observe(vec![a.clone(), b.clone()], a.clone(), t0 + 2 * s, grace)), ["a", "b"]);
        // The store was down; when it answers, every lease has expired,
        // this node's included.
        v.store_failed();
        let back = t0 + 20 * s;
        assert_eq!(names(v.observe(vec![], a.clone(), back, grace)), ["a", "b"], "kept in the grace period");
        assert_eq!(names(v.observe(vec![a.clone()], a.clone(), back + 5 * s, grace)), ["a", "b"]);
        assert_eq!(
            names(v.observe(vec![a.clone()], a.clone(), back + 11 * s, grace)),
            ["a"],
            "then it leaves"
        );
    }

    /// Applies writes to a model of the map.
    fn run(cache: &mut Cache, map: &mut Desired, w: Writes) {
        for (k, v) in w {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
            cache.programmed(k, v);
        }
    }

    #[test]
    fn events_touch_only_their_entry_and_end_where_a_full_listing_would() {
        let (a, b) =
            (node("a", [198, 18, 0, 11], "10.244.0.0/24"), node("b", [198, 18, 0, 12], "10.244.1.0/24"));
        let grace = Duration::from_secs(10);
        let (mut cache, mut view, mut map) = (Cache::default(), View::default(), Desired::new());
        let nodes = |ns: &[&NodeRecord]| Update::Reset {
            items: ns.iter().map(|n| (format!("nodes/{}", n.name), serde_json::to_vec(n).unwrap())).collect(),
            rev: 1,
        };
        let (w, changed) = cache.apply(Msg::Nodes(nodes(&[&a, &b])), &a, &mut view, grace);
        assert!(w.is_empty() && changed, "nothing is written before both listings");
        let items = [("endpoints/b/10.244.1.2".to_string(), ep_value(300))].into_iter().collect();
        let (w, _) = cache.apply(Msg::Endpoints(Update::Reset { items, rev: 2 }), &a, &mut view, grace);
        run(&mut cache, &mut map, w);
        assert_eq!(map.len(), 4, "two node /32s, b's CIDR, b's pod: {map:?}");
        let bt = ip_to_be(b.ip);

        // One pod added on b: exactly one write.
        let put = Update::Put { key: "endpoints/b/10.244.1.3".into(), value: ep_value(301), rev: 3 };
        let (w, _) = cache.apply(Msg::Endpoints(put), &a, &mut view, grace);
        assert_eq!(w, vec![((Ipv4Addr::new(10, 244, 1, 3), 32), Some(pod_entry(301, bt)))]);
        run(&mut cache, &mut map, w);
        // Its identity changes: one write; the same value again: none.
        let put = Update::Put { key: "endpoints/b/10.244.1.3".into(), value: ep_value(302), rev: 4 };
        let (w, _) = cache.apply(Msg::Endpoints(put.clone()), &a, &mut view, grace);
        assert_eq!(w.len(), 1);
        run(&mut cache, &mut map, w);
        assert!(cache.apply(Msg::Endpoints(put), &a, &mut view, grace).0.is_empty());
        // This node's own publications are ignored (the journal is the truth).
        let own = Update::Put { key: "endpoints/a/10.244.0.9".into(), value: ep_value(303), rev: 5 };
        assert!(cache.apply(Msg::Endpoints(own), &a, &mut view, grace).0.is_empty());
        // A local pod comes from the journal.
        let w = cache.relocal([(Ipv4Addr::new(10, 244, 0, 2), 256)].into_iter().collect());
        assert_eq!(w, vec![((Ipv4Addr::new(10, 244, 0, 2), 32), Some(pod_entry(256, 0)))]);
        run(&mut cache, &mut map, w);
        // A pod deleted on b: one delete.
        let del = Update::Delete { key: "endpoints/b/10.244.1.2".into(), rev: 6 };
        let (w, _) = cache.apply(Msg::Endpoints(del), &a, &mut view, grace);
        assert_eq!(w, vec![((Ipv4Addr::new(10, 244, 1, 2), 32), None)]);
        run(&mut cache, &mut map, w);

        let full = desired_ipcache(
            "a",
            &[a.clone(), b.clone()],
            &[
                ("b".into(), Ipv4Addr::new(10, 244, 1, 3), 302),
                ("a".into(), Ipv4Addr::new(10, 244, 0, 2), 256),
            ],
        );
        assert_eq!(map, full, "the events led where a full listing leads");

        // Node b leaves (normal times): all of its entries go.
        let (w, changed) =
            cache.apply(Msg::Nodes(Update::Delete { key: "nodes/b".into(), rev: 7 }), &a, &mut view, grace);
        assert!(changed);
        run(&mut cache, &mut map, w);
        assert_eq!(
            map,
            desired_ipcache(
                "a",
                std::slice::from_ref(&a),
                &[("a".into(), Ipv4Addr::new(10, 244, 0, 2), 256)]
            )
        );
    }

    #[test]
    fn an_address_that_moves_between_nodes_follows_the_node_still_publishing_it() {
        let (a, b, c) = (
            node("a", [198, 18, 0, 11], "10.244.0.0/24"),
            node("b", [198, 18, 0, 12], "10.244.1.0/24"),
            node("c", [198, 18, 0, 13], "10.244.2.0/24"),
        );
        let grace = Duration::from_secs(10);
        let (mut cache, mut view, mut map) = (Cache::default(), View::default(), Desired::new());
        let items: BTreeMap<String, Vec<u8>> = [&a, &b, &c]
            .iter()
            .map(|n| (format!("nodes/{}", n.name), serde_json::to_vec(n).unwrap()))
            .collect();
        let w = cache.apply(Msg::Nodes(Update::Reset { items, rev: 1 }), &a, &mut view, grace).0;
        run(&mut cache, &mut map, w);
        let w = cache
            .apply(Msg::Endpoints(Update::Reset { items: Default::default(), rev: 1 }), &a, &mut view, grace)
            .0;
        run(&mut cache, &mut map, w);
        let ip = Ipv4Addr::new(10, 244, 9, 9);
        let put =
            |n: &str, id| Update::Put { key: format!("endpoints/{n}/{ip}"), value: ep_value(id), rev: 2 };
        let w = cache.apply(Msg::Endpoints(put("b", 400)), &a, &mut view, grace).0;
        run(&mut cache, &mut map, w);
        let w = cache.apply(Msg::Endpoints(put("c", 401)), &a, &mut view, grace).0;
        run(&mut cache, &mut map, w);
        let del = Update::Delete { key: format!("endpoints/b/{ip}"), rev: 3 };
        let w = cache.apply(Msg::Endpoints(del), &a, &mut view, grace).0;
        run(&mut cache, &mut map, w);
        assert_eq!(map[&(ip, 32)], pod_entry(401, ip_to_be(c.ip)), "c still publishes it");
        let del = Update::Delete { key: format!("endpoints/c/{ip}"), rev: 4 };
        let w = cache.apply(Msg::Endpoints(del), &a, &mut view, grace).0;
        run(&mut cache, &mut map, w);
        assert!(!map.contains_key(&(ip, 32)));
    }

    #[test]
    fn endpoint_keys_parse() {
        assert_eq!(
            parse_endpoint_key("endpoints/node1/10.244.0.2"),
            Some(("node1".into(), Ipv4Addr::new(10, 244, 0, 2)))
        );
        assert_eq!(parse_endpoint_key("endpoints/node1/c/eth0"), None);
        assert_eq!(parse_endpoint_key("endpoints/node1/10.244.0.2/x"), None);
    }
}
