//! The node in its cluster: the cluster settings, this node's registration
//! (a leased key that vanishes when the node stops renewing it), and the
//! ipcache, rebuilt from the store so every node knows every other node's
//! pods (address -> identity, node).

use crate::{
    config::{Mode, StoreConfig},
    state::{Agent, EndpointRecord},
};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, BTreeSet},
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
            loop {
                std::thread::sleep(ttl / 3);
                match agent.store.keep_alive(lease) {
                    Ok(true) => continue,
                    Ok(false) => log::warn!("registration lease expired; registering again"),
                    Err(e) => {
                        log::warn!("renewing the registration failed: {e}");
                        continue;
                    }
                }
                match register(&agent) {
                    Ok(l) => lease = l,
                    Err(e) => log::warn!("registering again failed: {e}"),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Keeps the ipcache in step with the store, once a second.
pub fn start_sync(agent: Arc<Agent>) {
    std::thread::Builder::new()
        .name("weft-ipcache".into())
        .spawn(move || {
            loop {
                if let Err(e) = sync_once(&agent) {
                    log::warn!("ipcache sync: {e}");
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .expect("spawn ipcache sync");
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

/// What the ipcache should hold, from the nodes and endpoints in the store.
pub fn desired_ipcache(
    me: &str,
    nodes: &[NodeRecord],
    endpoints: &[EndpointRecord],
    owners: &BTreeMap<String, String>,
) -> Desired {
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
    for e in endpoints {
        let Some(node) = owners.get(&e.container_id).and_then(|n| by_name.get(n.as_str())) else { continue };
        let tunnel = if node.name == me { 0 } else { ip_to_be(node.ip) };
        d.insert(
            (e.ip, 32),
            IpcacheInfo { sec_identity: e.identity, tunnel_endpoint: tunnel, flags: 0, pad: 0 },
        );
    }
    d
}

pub fn sync_once(agent: &Agent) -> Result<(), String> {
    let nodes = live_nodes(agent.store.as_ref())?;
    let mut endpoints = Vec::new();
    let mut owners = BTreeMap::new();
    for (key, rec) in
        list_json::<EndpointRecord>(agent.store.as_ref(), "endpoints/").map_err(|e| e.to_string())?
    {
        // endpoints/<node>/<container>/<ifname>
        if let Some(node) = key.split('/').nth(1) {
            owners.insert(rec.container_id.clone(), node.to_string());
            endpoints.push(rec);
        }
    }
    let desired = desired_ipcache(&agent.cfg.node_name, &nodes, &endpoints, &owners);
    agent.note_nodes(&nodes);
    if agent.mode == Mode::Native {
        sync_routes(agent, &nodes)?;
    }
    let mut inner = agent.lock();
    let current: BTreeMap<(Ipv4Addr, u8), IpcacheInfo> = inner
        .dp
        .list_ipcache()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(ip, p, v)| ((ip, p), v))
        .collect();
    for (k, v) in &desired {
        if current.get(k) != Some(v) {
            inner.dp.put_ipcache(k.0, k.1, *v).map_err(|e| e.to_string())?;
        }
    }
    for k in current.keys().filter(|k| !desired.contains_key(k)) {
        inner.dp.del_ipcache(k.0, k.1);
    }
    Ok(())
}

/// Routes of weft's own making carry this protocol number, so the agent can
/// find (and remove) them again without keeping state.
pub const ROUTE_PROTO: &str = "201";

/// Native mode: a route per remote node's pod CIDR via its underlay address,
/// for the host's own traffic (pods' traffic is routed in BPF).
fn sync_routes(agent: &Agent, nodes: &[NodeRecord]) -> Result<(), String> {
    let dev = &agent.underlay_dev;
    let want: BTreeMap<String, Ipv4Addr> = nodes
        .iter()
        .filter(|n| n.name != agent.cfg.node_name)
        .map(|n| (n.pod_cidr.to_string(), n.ip))
        .collect();
    let out = weft_net::ip::output(&["-j", "-4", "route", "show", "proto", ROUTE_PROTO])
        .map_err(|e| e.to_string())?;
    let have: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    let mut cmds = Vec::new();
    for r in &have {
        let dst = r["dst"].as_str().unwrap_or_default();
        let gw = r["gateway"].as_str().and_then(|g| g.parse::<Ipv4Addr>().ok());
        if want.get(dst) != gw.as_ref() {
            cmds.push(format!("route del {dst} proto {ROUTE_PROTO}"));
        }
    }
    for (dst, gw) in &want {
        let present =
            have.iter().any(|r| r["dst"] == dst.as_str() && r["gateway"] == gw.to_string().as_str());
        if !present {
            cmds.push(format!("route replace {dst} via {gw} dev {dev} proto {ROUTE_PROTO}"));
        }
    }
    weft_net::ip::batch(&cmds).map_err(|e| e.to_string())
}

/// Logs nodes that joined or left since the last look.
pub fn diff_nodes(before: &BTreeSet<String>, now: &[NodeRecord]) -> (Vec<String>, Vec<String>) {
    let now: BTreeSet<String> = now.iter().map(|n| n.name.clone()).collect();
    (now.difference(before).cloned().collect(), before.difference(&now).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: [u8; 4], cidr: &str) -> NodeRecord {
        NodeRecord { name: name.into(), ip: Ipv4Addr::from(ip), pod_cidr: cidr.parse().unwrap() }
    }

    fn ep(cid: &str, ip: [u8; 4], identity: u32) -> EndpointRecord {
        EndpointRecord {
            id: 1,
            container_id: cid.into(),
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
        }
    }

    #[test]
    fn ipcache_places_remote_pods_behind_their_node() {
        let nodes =
            vec![node("a", [198, 18, 0, 11], "10.244.0.0/24"), node("b", [198, 18, 0, 12], "10.244.1.0/24")];
        let eps = vec![
            ep("p1", [10, 244, 0, 2], 256),
            ep("p2", [10, 244, 1, 2], 257),
            ep("gone", [10, 244, 9, 9], 258),
        ];
        let owners: BTreeMap<String, String> = [("p1", "a"), ("p2", "b"), ("gone", "c")]
            .iter()
            .map(|(c, n)| (c.to_string(), n.to_string()))
            .collect();
        let d = desired_ipcache("a", &nodes, &eps, &owners);
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
}
