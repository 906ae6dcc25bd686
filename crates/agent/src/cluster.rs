//! The node in its cluster: the cluster settings, the store connection and
//! this node's registration (a leased key that vanishes when the node stops
//! renewing it). What the other nodes publish reaches the maps through
//! `ipcache`, which follows the store.

use crate::{
    config::{Mode, StoreConfig},
    state::Agent,
};
use serde::{Deserialize, Serialize};
use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};
use weft_ipam::Cidr;
use weft_store::{EtcdStore, LocalStore, Store, get_json, list_json};

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
        StoreConfig::Etcd { urls, tls } => {
            let urls: Vec<String> =
                urls.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
            if tls.is_none() {
                log::warn!(
                    "etcd at {} without TLS: anyone on the network can read and change the cluster state; use --etcd-ca/--etcd-cert/--etcd-key",
                    urls.join(",")
                );
            }
            let store = EtcdStore::new(&urls, "/weft/", tls.as_ref()).map_err(|e| e.to_string())?;
            let start = Instant::now();
            loop {
                match store.check() {
                    Ok(()) => return Ok(Arc::new(store)),
                    // A certificate etcd or we reject will not heal by waiting.
                    Err(e) if tls.is_some() && e.to_string().to_lowercase().contains("certificate") => {
                        return Err(format!("{e} (check --etcd-ca/--etcd-cert/--etcd-key)"));
                    }
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
                        // Leases may all expire when the store returns.
                        agent.view().store_failed();
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

/// Nodes currently registered (their lease is alive).
pub fn live_nodes(store: &dyn Store) -> Result<Vec<NodeRecord>, String> {
    Ok(list_json::<NodeRecord>(store, "nodes/")
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(_, n)| n)
        .collect())
}
