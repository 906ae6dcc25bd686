//! The agent's state, and how it comes up: open the stores, load (or adopt)
//! the datapath, set up the node's devices, reconcile endpoints, start the
//! event reader.

use crate::{config::AgentConfig, monitor::Monitor, node, reconcile};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex, MutexGuard},
};
use weft_datapath::Datapath;
use weft_ipam::Ipam;
use weft_store::{LocalStore, Store, identity::IdentityAllocator};

/// One pod attachment as the agent remembers it (persisted in the store
/// under `endpoints/<node>/<container id>/<ifname>`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EndpointRecord {
    pub id: u16,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub network: String,
    pub ip: Ipv4Addr,
    pub host_ifname: String,
    pub host_mac: [u8; 6],
    pub pod_mac: [u8; 6],
    pub mtu: u32,
    pub identity: u32,
    pub labels: Vec<String>,
    #[serde(default)]
    pub pod_namespace: Option<String>,
    #[serde(default)]
    pub pod_name: Option<String>,
}

pub type AttachmentKey = (String, String);

/// What only one thread at a time may touch: IPAM, the datapath maps and the
/// endpoint table. ADDs of different pods run their device setup outside it.
pub struct Inner {
    pub ipam: Ipam,
    pub dp: Datapath,
    pub endpoints: BTreeMap<AttachmentKey, EndpointRecord>,
    /// Endpoint ids handed out (including ADDs still in progress).
    pub ids_in_use: std::collections::BTreeSet<u16>,
}

pub struct Agent {
    pub cfg: AgentConfig,
    pub gateway: Ipv4Addr,
    pub store: Arc<dyn Store>,
    pub identities: IdentityAllocator,
    pub monitor: Monitor,
    inner: Mutex<Inner>,
}

impl Agent {
    pub fn start(cfg: AgentConfig) -> Result<Arc<Agent>, String> {
        std::fs::create_dir_all(&cfg.state_dir)
            .map_err(|e| format!("cannot create state directory {}: {e}", cfg.state_dir.display()))?;
        let store: Arc<dyn Store> =
            Arc::new(LocalStore::open(&cfg.store_dir()).map_err(|e| format!("store: {e}"))?);
        let ipam = Ipam::open(&cfg.ipam_file(), cfg.pod_cidr).map_err(|e| format!("IPAM: {e}"))?;
        let gateway = ipam.gateway();
        let mut dp = Datapath::load(&cfg.bpffs).map_err(|e| format!("datapath: {e}"))?;
        if dp.adopted() {
            log::info!("found pinned datapath state in {}: adopting it", dp.dir().display());
        }
        let events = dp.take_events().map_err(|e| format!("datapath: {e}"))?;
        let agent = Arc::new(Agent {
            identities: IdentityAllocator::new(store.clone()),
            store,
            gateway,
            monitor: Monitor::default(),
            inner: Mutex::new(Inner { ipam, dp, endpoints: BTreeMap::new(), ids_in_use: Default::default() }),
            cfg,
        });
        node::setup(&agent)?;
        reconcile::run(&agent)?;
        crate::monitor::start_reader(agent.clone(), events);
        log::info!(
            "agent ready: node {} pod CIDR {} gateway {}",
            agent.cfg.node_name,
            agent.cfg.pod_cidr,
            agent.gateway
        );
        Ok(agent)
    }

    /// The single-writer lock. A panic while holding it would leave the
    /// process unusable anyway, so a poisoned lock is taken over as is.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn endpoint_key(&self, container_id: &str, ifname: &str) -> String {
        format!("endpoints/{}/{}/{}", self.cfg.node_name, container_id, ifname)
    }

    pub fn endpoints_prefix(&self) -> String {
        format!("endpoints/{}/", self.cfg.node_name)
    }

    /// Recomputes the monitor flags in the datapath's config map.
    pub fn sync_monitor_flags(&self) {
        let flags = self.monitor.datapath_flags();
        let mut inner = self.lock();
        match inner.dp.config() {
            Ok(mut c) if c.flags != flags => {
                c.flags = flags;
                if let Err(e) = inner.dp.set_config(c) {
                    log::warn!("cannot update datapath config: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!("cannot read datapath config: {e}"),
        }
    }
}
