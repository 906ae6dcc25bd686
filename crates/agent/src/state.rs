//! The agent's state, and how it comes up: open the stores, load (or adopt)
//! the datapath, set up the node's devices, reconcile endpoints, start the
//! event reader.

use crate::{
    attach_lock::AttachmentLocks,
    cluster::{self, NodeRecord},
    config::{AgentConfig, Mode, StoreConfig},
    ids::{self, EndpointIds},
    journal::{Journal, Phase},
    monitor::Monitor,
    node, reconcile,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex, MutexGuard},
};
use weft_datapath::{
    Datapath,
    maps::{CFG_F_DEBUG, CFG_F_TRACE},
};
use weft_ipam::{Cidr, Ipam};
use weft_store::{Store, identity::IdentityAllocator, pool};

/// One pod attachment as the agent remembers it: in the node's journal
/// (`<state dir>/endpoints/<ip>.json`, with its phase) and, once its devices
/// work, published in the cluster store under `endpoints/<node>/<ip>`.
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
    #[serde(default)]
    pub phase: Phase,
}

pub type AttachmentKey = (String, String);

/// Who holds which address: IPAM, endpoint ids and the endpoint table
/// change together (an address is never held without an entry), under one
/// short lock that is never held across a syscall.
pub struct Pods {
    pub ipam: Ipam,
    /// Every attachment in any phase (ADDs in flight and DELs that still
    /// owe the store included): what holds an address holds an entry.
    pub endpoints: BTreeMap<AttachmentKey, EndpointRecord>,
    /// Endpoint ids handed out (including ADDs still in progress).
    pub ids: EndpointIds,
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
    /// The other nodes as this one sees them (and how the store is doing).
    pub view: Mutex<crate::ipcache::View>,
    pub store: Arc<dyn Store>,
    pub journal: Journal,
    pub attachments: AttachmentLocks,
    /// DELs that answered and left the device and address to the repair
    /// thread.
    pub removals: crate::removal::Removals,
    /// Store work a failure left for the repair loop (publications,
    /// identity references of this node).
    pub store_sync_pending: std::sync::atomic::AtomicBool,
    pub identities: IdentityAllocator,
    pub monitor: Monitor,
    /// The ipcache thread's queue (cluster only), for this node's changes.
    pub ipcache_tx: std::sync::OnceLock<std::sync::mpsc::SyncSender<crate::ipcache::Msg>>,
    /// What the conntrack GC last found.
    pub ct: crate::conntrack::CtState,
    /// The policy thread's queue and what it last programmed.
    pub policy: crate::policy::PolicyState,
    /// What the services thread last programmed.
    pub services: crate::services::ServicesState,
    /// Lock order: `pods` before `dp` where a caller needs both.
    pods: Mutex<Pods>,
    /// The loaded datapath: map updates and attaches (microseconds each).
    dp: Mutex<Datapath>,
}

/// Attaches socket load balancing to the configured cgroup (its links are
/// pinned: it keeps working while no agent runs).
fn socket_lb(cfg: &AgentConfig) -> Result<(), String> {
    let Some(cg) = &cfg.cgroup_root else {
        log::warn!("no cgroup2 root (--cgroup-root): services are not translated at connect()");
        return Ok(());
    };
    let mut lb = weft_datapath::sock::SocketLb::load(&cfg.bpffs).map_err(|e| format!("socket LB: {e}"))?;
    lb.attach(cg, &cfg.bpffs).map_err(|e| format!("socket LB on {}: {e}", cg.display()))?;
    log::info!("socket load balancing attached to {}", cg.display());
    Ok(())
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
        check_capacity(pod_cidr)?;
        let journal = Journal::open(&cfg.state_dir)?;
        let (underlay_dev, node_ip) = node::underlay(cfg.node_ip)?;
        let pod_mtu = match cfg.mtu {
            Some(m) => m,
            None => {
                let mut nl = weft_net::netlink::Netlink::open().map_err(|e| e.to_string())?;
                let mtu = nl.link_mtu(&underlay_dev).map_err(|e| e.to_string())?.unwrap_or(1500);
                if in_cluster { mtu - mode.overhead() } else { mtu }
            }
        };
        let ipam = Ipam::open(&cfg.ipam_file(), pod_cidr).map_err(|e| format!("IPAM: {e}"))?;
        let gateway = ipam.gateway();
        let (attach, why) = cfg.tc_mode.resolve();
        log::info!("datapath attach: {attach} ({why})");
        let mut dp = Datapath::load_opts(&cfg.bpffs, &crate::conntrack::load_options(&cfg))
            .map_err(|e| format!("datapath: {e}"))?;
        if dp.adopted() {
            log::info!("found pinned datapath state in {}: adopting it", dp.dir().display());
        }
        let events = dp.take_events().map_err(|e| format!("datapath: {e}"))?;
        socket_lb(&cfg)?;
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
            view: Mutex::new(Default::default()),
            journal,
            attachments: AttachmentLocks::default(),
            removals: Default::default(),
            store_sync_pending: Default::default(),
            monitor: Monitor::default(),
            ct: Default::default(),
            policy: Default::default(),
            services: Default::default(),
            ipcache_tx: Default::default(),
            pods: Mutex::new(Pods { ipam, endpoints: BTreeMap::new(), ids: EndpointIds::default() }),
            dp: Mutex::new(dp),
            cfg,
        });
        node::setup(&agent)?;
        reconcile::run(&agent)?;
        reconcile::start_repair(agent.clone());
        if agent.cluster {
            cluster::start_registration(agent.clone())?;
            crate::ipcache::start(agent.clone())?;
        }
        crate::monitor::start_reader(agent.clone(), events);
        crate::conntrack::start_gc(agent.clone())?;
        crate::policy::start(agent.clone())?;
        crate::services::start(agent.clone())?;
        crate::linkwatch::start(agent.clone())?;
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

    pub fn view(&self) -> MutexGuard<'_, crate::ipcache::View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address book (IPAM, ids, endpoint table). A panic while holding
    /// a lock would leave the process unusable anyway, so a poisoned lock
    /// is taken over as is.
    pub fn pods(&self) -> MutexGuard<'_, Pods> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The datapath (maps, program attachments).
    pub fn dp(&self) -> MutexGuard<'_, Datapath> {
        self.dp.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the endpoint is published for the other nodes.
    pub fn endpoint_key(&self, ip: Ipv4Addr) -> String {
        format!("endpoints/{}/{ip}", self.cfg.node_name)
    }

    /// Who holds a reference to the pod's identity: the address on this node.
    pub fn identity_holder(&self, ip: Ipv4Addr) -> String {
        format!("{}/{ip}", self.cfg.node_name)
    }

    pub fn endpoints_prefix(&self) -> String {
        format!("endpoints/{}/", self.cfg.node_name)
    }

    /// Recomputes the monitor flags in the datapath's config map (and
    /// only those: masquerade is the node's setting).
    pub fn sync_monitor_flags(&self) {
        let monitor = CFG_F_TRACE | CFG_F_DEBUG;
        let mut dp = self.dp();
        match dp.config() {
            Ok(mut c) if c.flags & monitor != self.monitor.datapath_flags() => {
                c.flags = (c.flags & !monitor) | self.monitor.datapath_flags();
                if let Err(e) = dp.set_config(c) {
                    log::warn!("cannot update datapath config: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!("cannot read datapath config: {e}"),
        }
    }
}

/// A node holds at most `ids::MAX_ENDPOINTS` pods: a CIDR with more
/// addresses would run out of endpoint ids (and map entries) before it runs
/// out of addresses, so it is refused up front.
fn check_capacity(cidr: Cidr) -> Result<(), String> {
    let addresses = Ipam::capacity_of(cidr);
    if addresses > ids::MAX_ENDPOINTS {
        return Err(format!(
            "pod CIDR {cidr} has {addresses} pod addresses, more than the {} endpoints a node can hold (16-bit endpoint ids, map sizes); give the node a /17 or smaller",
            ids::MAX_ENDPOINTS
        ));
    }
    Ok(())
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
