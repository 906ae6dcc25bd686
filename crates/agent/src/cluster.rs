//! The node in its cluster: the cluster settings, this node's registration
//! (a leased key that vanishes when the node stops renewing it), and the
//! ipcache, rebuilt from the store so every node knows every other node's
//! pods (address -> identity, node).
//!
//! A store outage must never cost a live node its pods' reachability: when
//! etcd comes back after being unreachable for longer than the lease TTL,
//! it expires every lease at once (it checks them by the clock), so each
//! node would see every other node leave. [`View`] notices the outage and
//! gives nodes a grace period to renew before anyone is removed; a node
//! never removes itself or its own pods (those come from its journal).

use crate::{
    config::{Mode, StoreConfig},
    state::{Agent, EndpointRecord},
};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};
use weft_datapath::maps::{IPCACHE_F_NODE, IpcacheInfo, ip_to_be};
use weft_ipam::Cidr;
use weft_store::{
    EtcdStore, LocalStore, Store, get_json,
    identity::{IDENTITY_HOST, IDENTITY_REMOTE_NODE},
    list_json,
};

pub const CLUSTER_KEY: &str = "config/cluster";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClusterConfig {
    pub mode: String,
    pub pool: Cidr,
}

/// A node as the store knows it (`nodes/<name>`, leased).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    pub name: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: Cidr,
}

/// Opens the configured store; etcd gets 30 s to become reachable.
pub fn open_store(cfg: &crate::AgentConfig) -> Result<Arc<dyn Store>, String> {
    match &cfg.store {
        StoreConfig::Local => {
            Ok(Arc::new(LocalStore::open(&cfg.store_dir()).map_err(|e| format!("store: {e}"))?))
        }
        StoreConfig::Etcd { urls } => {
            let store = EtcdStore::new(urls, "/weft/").map_err(|e| e.to_string())?;
            let start = Instant::now();
            loop {
                match store.check() {
                    Ok(()) => return Ok(Arc::new(store)),
                    Err(e) if start.elapsed() > Duration::from_secs(30) => {
                        return Err(format!("{e} (gave up after 30 s)"));
                    }
                    Err(e) => {
                        log::warn!("waiting for etcd: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        }
    }
}

/// The cluster's mode: the first agent writes it, the others must agree.
pub fn cluster_mode(store: &dyn Store, wanted: Option<Mode>, pool: Cidr) -> Result<Mode, String> {
    let mine = ClusterConfig { mode: wanted.unwrap_or(Mode::Vxlan).name().into(), pool };
    let bytes = serde_json::to_vec(&mine).unwrap();
    store.create(CLUSTER_KEY, &bytes).map_err(|e| e.to_string())?;
    let stored: ClusterConfig = get_json(store, CLUSTER_KEY)
        .map_err(|e| e.to_string())?
        .ok_or("the cluster configuration vanished from the store")?;
    let mode: Mode = stored.mode.parse()?;
    if let Some(w) = wanted
        && w != mode
    {
        return Err(format!(
            "this node asks for mode {} but the cluster runs {} (config/cluster in the store); all nodes share one mode",
            w.name(),
            mode.name()
        ));
    }
    Ok(mode)
}

fn node_key(name: &str) -> String {
    format!("nodes/{name}")
}

/// Registers the node under a lease and keeps renewing it; when the lease
/// is lost (etcd was unreachable for longer than its TTL) the node
/// registers anew, which re-admits it everywhere.
pub fn start_registration(agent: Arc<Agent>) -> Result<(), String> {
    let rec = agent.node_record();
    let ttl = agent.cfg.lease_ttl;
    let register = move |agent: &Agent| -> Result<u64, String> {
        let lease = agent.store.grant_lease(ttl).map_err(|e| e.to_string())?;
        let v = serde_json::to_vec(&rec).unwrap();
        agent.store.put_leased(&node_key(&rec.name), &v, lease).map_err(|e| e.to_string())?;
        Ok(lease)
    };
    let mut lease = register(&agent)?;
    std::thread::Builder::new()
        .name("weft-lease".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                // After a failure, retry sooner: the lease may be about to go.
                std::thread::sleep(if failing { Duration::from_millis(500).min(ttl / 3) } else { ttl / 3 });
                match agent.store.keep_alive(lease) {
                    Ok(true) => {
                        failing = false;
                        continue;
                    }
                    Ok(false) => {
                        log::warn!(
                            "registration lease expired (the store was unreachable?); registering again"
                        );
                        agent.view().outage();
                    }
                    Err(e) => {
                        if !failing {
                            log::warn!("renewing the registration failed: {e}");
                        }
                        failing = true;
                        continue;
                    }
                }
                match register(&agent) {
                    Ok(l) => {
                        lease = l;
                        failing = false;
                    }
                    Err(e) => {
                        log::warn!("registering again failed: {e}");
                        failing = true;
                    }
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps the ipcache in step with the store, once a second and whenever
/// this node's pods change.
pub fn start_sync(agent: Arc<Agent>) {
    std::thread::Builder::new()
        .name("weft-ipcache".into())
        .spawn(move || {
            loop {
                if let Err(e) = sync_once(&agent) {
                    log::warn!("ipcache sync: {e}");
                }
                agent.local_changes.wait(SYNC_INTERVAL);
            }
        })
        .expect("spawn ipcache sync");
}

/// This node's pods changed (ADD, DEL, relabel): the ipcache follows now.
pub fn local_changed(agent: &Agent) {
    agent.local_changes.notify();
}

/// A wake-up flag: `notify` never blocks, `wait` returns at the first
/// notification since the last wait, or after the timeout.
#[derive(Default)]
pub struct Wake {
    flag: std::sync::Mutex<bool>,
    cond: std::sync::Condvar,
}

impl Wake {
    pub fn notify(&self) {
        *self.flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
    }

    pub fn wait(&self, timeout: Duration) {
        let flag = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        let (mut flag, _) =
            self.cond.wait_timeout_while(flag, timeout, |f| !*f).unwrap_or_else(|p| p.into_inner());
        *flag = false;
    }
}

/// Nodes currently registered (their lease is alive).
pub fn live_nodes(store: &dyn Store) -> Result<Vec<NodeRecord>, String> {
    Ok(list_json::<NodeRecord>(store, "nodes/")
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(_, n)| n)
        .collect())
}

type Desired = BTreeMap<(Ipv4Addr, u8), IpcacheInfo>;

/// The other nodes as this node sees them, and how the store is doing.
#[derive(Default)]
pub struct View {
    known: BTreeMap<String, NodeRecord>,
    /// Until then, a known node missing from the store is kept.
    grace_until: Option<Instant>,
    last_ok: Option<Instant>,
    store_down: bool,
}

impl View {
    /// The store could not be read.
    pub fn store_failed(&mut self) {
        self.store_down = true;
    }

    /// Something (a failed read, our own expired lease) says the store was
    /// out: leases may all expire when it returns.
    pub fn outage(&mut self) {
        self.store_down = true;
        self.grace_until = None;
    }

    /// Takes the nodes the store lists and returns those to program: the
    /// listed ones, this node always, and — for `grace` after the store
    /// came back from an outage — known nodes that have not re-registered
    /// yet. `interval` is how often this is called: a gap much longer than
    /// that is an outage too (the call itself hung).
    pub fn observe(
        &mut self,
        listed: Vec<NodeRecord>,
        me: NodeRecord,
        now: Instant,
        grace: Duration,
        interval: Duration,
    ) -> Vec<NodeRecord> {
        let stalled = self.last_ok.is_some_and(|t| now.duration_since(t) > interval * 3);
        if self.store_down || stalled {
            self.store_down = false;
            self.grace_until = Some(now + grace);
            log::info!(
                "the store answers again; nodes get {}s to renew their registration before any is removed",
                grace.as_secs()
            );
        }
        self.last_ok = Some(now);
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

/// What the ipcache should hold: the nodes (with the local one as host) and
/// their pod CIDRs, and every endpoint as (node, record).
pub fn desired_ipcache(me: &str, nodes: &[NodeRecord], endpoints: &[(String, EndpointRecord)]) -> Desired {
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
            d.insert(
                (n.pod_cidr.addr, n.pod_cidr.prefix),
                IpcacheInfo { sec_identity: IDENTITY_REMOTE_NODE, tunnel_endpoint: tunnel, flags: 0, pad: 0 },
            );
        }
    }
    for (node, e) in endpoints {
        let Some(node) = by_name.get(node.as_str()) else { continue };
        let tunnel = if node.name == me { 0 } else { ip_to_be(node.ip) };
        d.insert(
            (e.ip, 32),
            IpcacheInfo { sec_identity: e.identity, tunnel_endpoint: tunnel, flags: 0, pad: 0 },
        );
    }
    d
}

pub fn sync_once(agent: &Agent) -> Result<(), String> {
    let listed = live_nodes(agent.store.as_ref()).and_then(|nodes| {
        let eps =
            list_json::<EndpointRecord>(agent.store.as_ref(), "endpoints/").map_err(|e| e.to_string())?;
        Ok((nodes, eps))
    });
    let (listed, published) = match listed {
        Ok(l) => l,
        Err(e) => {
            // Nothing changes while the store cannot be read.
            agent.view().store_failed();
            return Err(e);
        }
    };
    let me = agent.cfg.node_name.clone();
    let ttl = agent.cfg.lease_ttl;
    let nodes = agent.view().observe(listed, agent.node_record(), Instant::now(), ttl * 2, SYNC_INTERVAL);
    // endpoints/<node>/<ip>; this node's own pods come from its journal.
    let mut endpoints: Vec<(String, EndpointRecord)> = published
        .into_iter()
        .filter_map(|(key, rec)| Some((key.split('/').nth(1)?.to_string(), rec)))
        .filter(|(node, _)| *node != me)
        .collect();
    if agent.mode == Mode::Native {
        crate::routes::sync(agent, &nodes)?;
    }
    endpoints.extend(
        agent
            .pods()
            .endpoints
            .values()
            .filter(|r| r.phase != crate::journal::Phase::Deleting && r.identity != 0)
            .map(|r| (me.clone(), r.clone())),
    );
    let desired = desired_ipcache(&me, &nodes, &endpoints);
    let mut dp = agent.dp();
    let current: BTreeMap<(Ipv4Addr, u8), IpcacheInfo> =
        dp.list_ipcache().map_err(|e| e.to_string())?.into_iter().map(|(ip, p, v)| ((ip, p), v)).collect();
    for (k, v) in &desired {
        if current.get(k) != Some(v) {
            dp.put_ipcache(k.0, k.1, *v).map_err(|e| e.to_string())?;
        }
    }
    for k in current.keys().filter(|k| !desired.contains_key(k)) {
        dp.del_ipcache(k.0, k.1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: [u8; 4], cidr: &str) -> NodeRecord {
        NodeRecord { name: name.into(), ip: Ipv4Addr::from(ip), pod_cidr: cidr.parse().unwrap() }
    }

    fn ep(ip: [u8; 4], identity: u32) -> EndpointRecord {
        EndpointRecord {
            id: 1,
            container_id: format!("c{}", ip[3]),
            ifname: "eth0".into(),
            netns: String::new(),
            network: "weft".into(),
            ip: Ipv4Addr::from(ip),
            host_ifname: String::new(),
            host_mac: [0; 6],
            pod_mac: [0; 6],
            mtu: 1450,
            identity,
            labels: vec![],
            pod_namespace: None,
            pod_name: None,
            phase: Default::default(),
        }
    }

    #[test]
    fn ipcache_places_remote_pods_behind_their_node() {
        let nodes =
            vec![node("a", [198, 18, 0, 11], "10.244.0.0/24"), node("b", [198, 18, 0, 12], "10.244.1.0/24")];
        let eps = vec![
            ("a".to_string(), ep([10, 244, 0, 2], 256)),
            ("b".to_string(), ep([10, 244, 1, 2], 257)),
            ("c".to_string(), ep([10, 244, 9, 9], 258)),
        ];
        let d = desired_ipcache("a", &nodes, &eps);
        let b = ip_to_be(Ipv4Addr::new(198, 18, 0, 12));
        assert_eq!(
            d[&(Ipv4Addr::new(10, 244, 1, 2), 32)],
            IpcacheInfo { sec_identity: 257, tunnel_endpoint: b, flags: 0, pad: 0 }
        );
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
        let (s, grace, tick) = (Duration::from_secs(1), Duration::from_secs(10), Duration::from_secs(3));
        let t0 = Instant::now();
        let mut v = View::default();
        let names = |n: Vec<NodeRecord>| n.into_iter().map(|n| n.name).collect::<Vec<_>>();
        assert_eq!(names(v.observe(vec![a.clone(), b.clone()], a.clone(), t0, grace, tick)), ["a", "b"]);
        // Normal times: a node whose lease expires leaves at once.
        assert_eq!(names(v.observe(vec![a.clone()], a.clone(), t0 + s, grace, tick)), ["a"]);
        assert_eq!(
            names(v.observe(vec![a.clone(), b.clone()], a.clone(), t0 + 2 * s, grace, tick)),
            ["a", "b"]
        );
        // The store was down; when it answers, every lease has expired,
        // this node's included.
        v.store_failed();
        let back = t0 + 20 * s;
        assert_eq!(
            names(v.observe(vec![], a.clone(), back, grace, tick)),
            ["a", "b"],
            "kept in the grace period"
        );
        assert_eq!(names(v.observe(vec![a.clone()], a.clone(), back + 5 * s, grace, tick)), ["a", "b"]);
        assert_eq!(
            names(v.observe(vec![a.clone()], a.clone(), back + 11 * s, grace, tick)),
            ["a"],
            "then it leaves"
        );
        // A read that hung (a gap far longer than the interval) is an outage too.
        assert_eq!(
            names(v.observe(vec![a.clone(), b.clone()], a.clone(), back + 12 * s, grace, tick)),
            ["a", "b"]
        );
        assert_eq!(names(v.observe(vec![], a.clone(), back + 30 * s, grace, tick)), ["a", "b"]);
    }
}
