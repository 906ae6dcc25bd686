//! The agent's state, and how it comes up: open the stores, load (or adopt)
//! the datapath, set up the node's devices, reconcile endpoints, start the
//! event reader.

use crate::{
    cluster::{self, NodeRecord},
    config::{AgentConfig, Mode, StoreConfig},
    monitor::Monitor,
    node, reconcile,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex, MutexGuard},
};
use weft_datapath::Datapath;
use weft_ipam::{Cidr, Ipam};
use weft_store::{Store, identity::IdentityAllocator, pool};

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
    /// Part of a cluster (etcd): registration, ipcache, overlay.
    pub cluster: bool,
    pub mode: Mode,
    pub pod_cidr: Cidr,
    pub node_ip: Ipv4Addr,
    /// The device that holds node_ip (eth0 in the lab).
    pub underlay_dev: String,
    pub pod_mtu: u32,
    pub gateway: Ipv4Addr,
    known_nodes: Mutex<std::collections::BTreeSet<String>>,
    pub store: Arc<dyn Store>,
    pub identities: IdentityAllocator,
    pub monitor: Monitor,
    inner: Mutex<Inner>,
}

impl Agent {
    pub fn start(cfg: AgentConfig) -> Result<Arc<Agent>, String> {
        std::fs::create_dir_all(&cfg.state_dir)
            .map_err(|e| format!("cannot create state directory {}: {e}", cfg.state_dir.display()))?;
        let store = cluster::open_store(&cfg)?;
        let in_cluster = cfg.store != StoreConfig::Local;
        let mode = if in_cluster {
            cluster::cluster_mode(store.as_ref(), cfg.mode, cfg.cluster_pool)?
        } else {
            cfg.mode.unwrap_or(Mode::Vxlan)
        };
        let pod_cidr = pod_cidr(&cfg, store.as_ref(), in_cluster)?;
        let (underlay_dev, node_ip) = node::underlay(cfg.node_ip)?;
        let pod_mtu = cfg.mtu.unwrap_or_else(|| {
            let mtu = weft_net::ip::link_mtu(&underlay_dev).unwrap_or(1500);
            if in_cluster { mtu - mode.overhead() } else { mtu }
        });
        let ipam = Ipam::open(&cfg.ipam_file(), pod_cidr).map_err(|e| format!("IPAM: {e}"))?;
        let gateway = ipam.gateway();
        let mut dp = Datapath::load(&cfg.bpffs).map_err(|e| format!("datapath: {e}"))?;
        if dp.adopted() {
            log::info!("found pinned datapath state in {}: adopting it", dp.dir().display());
        }
        let events = dp.take_events().map_err(|e| format!("datapath: {e}"))?;
        let agent = Arc::new(Agent {
            identities: IdentityAllocator::new(store.clone()),
            store,
            cluster: in_cluster,
            mode,
            pod_cidr,
            node_ip,
            underlay_dev,
            pod_mtu,
            gateway,
            known_nodes: Mutex::new(Default::default()),
            monitor: Monitor::default(),
            inner: Mutex::new(Inner { ipam, dp, endpoints: BTreeMap::new(), ids_in_use: Default::default() }),
            cfg,
        });
        node::setup(&agent)?;
        reconcile::run(&agent)?;
        if agent.cluster {
            cluster::start_registration(agent.clone())?;
            if let Err(e) = cluster::sync_once(&agent) {
                log::warn!("first ipcache sync: {e}");
            }
            cluster::start_sync(agent.clone());
        }
        crate::monitor::start_reader(agent.clone(), events);
        log::info!(
            "agent ready: node {} ({}) pod CIDR {} gateway {} mode {} pod MTU {} store {}",
            agent.cfg.node_name,
            agent.node_ip,
            agent.pod_cidr,
            agent.gateway,
            if agent.cluster { agent.mode.name() } else { "single node" },
            agent.pod_mtu,
            agent.store.describe()
        );
        Ok(agent)
    }

    pub fn node_record(&self) -> NodeRecord {
        NodeRecord { name: self.cfg.node_name.clone(), ip: self.node_ip, pod_cidr: self.pod_cidr }
    }

    /// The address pods route through.
    pub fn pod_gateway(&self) -> Ipv4Addr {
        match self.cfg.gateway_style {
            crate::config::GatewayStyle::Weft => self.gateway,
            crate::config::GatewayStyle::LinkLocal => crate::config::LINK_LOCAL_GATEWAY,
        }
    }

    /// Logs nodes joining and leaving the cluster.
    pub fn note_nodes(&self, nodes: &[NodeRecord]) {
        let mut known = self.known_nodes.lock().unwrap_or_else(|p| p.into_inner());
        let (joined, left) = cluster::diff_nodes(&known, nodes);
        for n in &joined {
            log::info!("node {n} joined");
        }
        for n in &left {
            log::info!("node {n} left (its registration expired)");
        }
        *known = nodes.iter().map(|n| n.name.clone()).collect();
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

/// The node's pod CIDR: given, or claimed from the cluster pool.
fn pod_cidr(cfg: &AgentConfig, store: &dyn Store, in_cluster: bool) -> Result<Cidr, String> {
    match (cfg.pod_cidr, in_cluster) {
        (Some(c), false) => Ok(c),
        (Some(c), true) => pool::claim_exact(store, c, &cfg.node_name).map_err(|e| e.to_string()),
        (None, true) => {
            pool::claim(store, cfg.cluster_pool, cfg.block_prefix, &cfg.node_name).map_err(|e| e.to_string())
        }
        (None, false) => Err("--pod-cidr is required without a cluster store (or use --store etcd)".into()),
    }
}
