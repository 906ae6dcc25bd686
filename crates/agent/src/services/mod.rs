//! Services: the kube-proxy replacement's control plane. `weft service
//! apply` stores Services (with a ClusterIP and NodePorts allocated in the
//! same store transaction that claims them) and EndpointSlices; a thread
//! follows both and programs this node's service maps through
//! `weft_service::ServiceTable` (pure, in its own crate), touching only the
//! services a change concerns.

use crate::{
    config::LbAlgorithm,
    endpoint::{STORE, store_err},
    state::Agent,
};
use serde_json::Value;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};
use weft_api::{ApiError, ServiceApplyResult, ServiceName, ServiceView, code};
use weft_datapath::{
    lb::{Backend as LbBackend, Frontend as LbFrontend, FrontendInfo, ServiceMaps},
    maps::{
        CFG_F_HOST_BACKENDS, LB_F_AFFINITY, LB_F_LOCAL, LB_F_MAGLEV, LB_F_NODEPORT, LB_F_SNAT, LB_MAGLEV_SIZE,
    },
};
use weft_service::{
    Action, ClusterIpRange, Frontend, MaglevBackend, NodePortRange, Protocol, Service, ServiceDocument,
    ServiceFrontend, ServiceKey, ServiceTable,
};
use weft_store::{Cmp, Op, Update};

mod sockets;

pub const SERVICES: &str = "services/";
pub const SLICES: &str = "endpointslices/";
/// Claimed addresses and ports: `service-ips/<ip>`, `service-nodeports/<port>`.
const IPS: &str = "service-ips/";
const NODEPORTS: &str = "service-nodeports/";

fn proto(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

fn service_key(k: &ServiceKey) -> String {
    format!("{SERVICES}{}/{}", k.namespace, k.name)
}

/// What a stored service holds: its cluster IP and node ports.
fn claims(s: &Service) -> (Option<Ipv4Addr>, Vec<u16>) {
    let ip = match s.spec.cluster_ip() {
        weft_service::ClusterIp::Addr(a) => Some(a),
        _ => None,
    };
    (ip, s.spec.ports.iter().filter_map(|p| p.node_port()).collect())
}

/// `weft service apply`: every document valid first; each Service's
/// address and ports claimed in the transaction that stores it.
pub fn apply(agent: &Agent, documents: &[Value]) -> Result<ServiceApplyResult, ApiError> {
    let docs = crate::requests::read_documents(documents, |v| {
        ServiceDocument::from_json(v).map_err(|e| e.to_string())
    })?;
    let mut results = Vec::new();
    let mut claimed: Option<Claimed> = None;
    for d in docs {
        match d {
            ServiceDocument::Service(s) => results.push(store_service(agent, s, &mut claimed)?),
            ServiceDocument::EndpointSlice(sl) => {
                let (ns, name) = sl.slice_key();
                let bytes = serde_json::to_vec(&sl).expect("slices serialize");
                agent.store.put(&format!("{SLICES}{ns}/{name}"), &bytes).map_err(store_err(STORE))?;
                results.push(format!("EndpointSlice {ns}/{name} stored"));
            }
        }
    }
    Ok(ServiceApplyResult { results })
}

/// The ClusterIPs and NodePorts claimed in the store, read once per apply
/// (not once per Service: an apply of many would read them all again for
/// each) and kept up to date with this apply's own claims; read again when
/// a transaction finds the store moved.
struct Claimed {
    ips: BTreeSet<Ipv4Addr>,
    ports: BTreeSet<u16>,
}

impl Claimed {
    fn read(agent: &Agent) -> Result<Claimed, ApiError> {
        let ips = agent.store.list(IPS).map_err(store_err(STORE))?;
        let ports = agent.store.list(NODEPORTS).map_err(store_err(STORE))?;
        Ok(Claimed {
            ips: ips.iter().filter_map(|(k, _)| k.strip_prefix(IPS)?.parse().ok()).collect(),
            ports: ports.iter().filter_map(|(k, _)| k.strip_prefix(NODEPORTS)?.parse().ok()).collect(),
        })
    }
}

fn store_service(agent: &Agent, mut s: Service, cache: &mut Option<Claimed>) -> Result<String, ApiError> {
    let key = s.key();
    let skey = service_key(&key);
    for _ in 0..10 {
        if cache.is_none() {
            *cache = Some(Claimed::read(agent)?);
        }
        let claimed = cache.as_mut().expect("read above");
        let old = agent.store.get(&skey).map_err(store_err(STORE))?;
        let old_svc: Option<Service> = old.as_ref().and_then(|b| serde_json::from_slice(b).ok());
        let (old_ip, old_ports) = old_svc.as_ref().map(claims).unwrap_or((None, vec![]));
        // An update keeps its address unless it names another.
        if matches!(s.spec.cluster_ip(), weft_service::ClusterIp::Unassigned)
            && let Some(ip) = old_ip
        {
            s.spec.cluster_ip = weft_service::ClusterIp::Addr(ip);
        }
        let mut used_ips: BTreeSet<Ipv4Addr> =
            claimed.ips.iter().copied().filter(|ip| Some(*ip) != old_ip).collect();
        let mut used_ports: BTreeSet<u16> =
            claimed.ports.iter().copied().filter(|p| !old_ports.contains(p)).collect();
        weft_service::assign(
            &mut s,
            &ClusterIpRange::default(),
            &mut used_ips,
            &NodePortRange::default(),
            &mut used_ports,
        )
        .map_err(|e| {
            ApiError::bad_request(
                format!("service {}/{}: {}", key.namespace, key.name, e.field),
                e.to_string(),
            )
        })?;
        let (ip, ports) = claims(&s);
        let owner = format!("{}/{}", key.namespace, key.name).into_bytes();
        let mut cmps = vec![match &old {
            Some(b) => Cmp::ValueIs(skey.clone(), b.clone()),
            None => Cmp::Absent(skey.clone()),
        }];
        let mut ops = vec![Op::Put(skey.clone(), serde_json::to_vec(&s).expect("services serialize"))];
        if let Some(ip) = ip.filter(|ip| Some(*ip) != old_ip) {
            cmps.push(Cmp::Absent(format!("{IPS}{ip}")));
            ops.push(Op::Put(format!("{IPS}{ip}"), owner.clone()));
        }
        if let Some(old) = old_ip.filter(|o| Some(*o) != ip) {
            ops.push(Op::Delete(format!("{IPS}{old}")));
        }
        for p in ports.iter().filter(|p| !old_ports.contains(p)) {
            cmps.push(Cmp::Absent(format!("{NODEPORTS}{p}")));
            ops.push(Op::Put(format!("{NODEPORTS}{p}"), owner.clone()));
        }
        for p in old_ports.iter().filter(|p| !ports.contains(p)) {
            ops.push(Op::Delete(format!("{NODEPORTS}{p}")));
        }
        if agent.store.txn(&cmps, &ops).map_err(store_err(STORE))? {
            claimed.ips.extend(ip);
            if let Some(o) = old_ip.filter(|o| Some(*o) != ip) {
                claimed.ips.remove(&o);
            }
            claimed.ports.retain(|p| !old_ports.contains(p));
            claimed.ports.extend(ports.iter().copied());
            let ip = ip.map(|i| i.to_string()).unwrap_or_else(|| "None".into());
            return Ok(format!("Service {}/{} stored (ClusterIP {ip})", key.namespace, key.name));
        }
        // The store moved under us (another apply claimed): read again.
        *cache = None;
    }
    Err(ApiError::new(code::TRY_AGAIN, "the service's address or ports kept being taken", "try again"))
}

/// `weft service delete`: a Service (its claims released) or a slice.
pub fn delete(agent: &Agent, n: &ServiceName) -> Result<(), ApiError> {
    let ns = n.namespace.as_deref().unwrap_or(weft_k8s::DEFAULT_NAMESPACE);
    if n.kind.as_deref() == Some("endpointslice") {
        let found = agent.store.delete(&format!("{SLICES}{ns}/{}", n.name)).map_err(store_err(STORE))?;
        return if found {
            Ok(())
        } else {
            Err(ApiError::bad_request(format!("no EndpointSlice {ns}/{}", n.name), ""))
        };
    }
    let skey = format!("{SERVICES}{ns}/{}", n.name);
    let Some(old) = agent.store.get(&skey).map_err(store_err(STORE))? else {
        return Err(ApiError::new(
            code::UNKNOWN_CONTAINER,
            format!("no service {ns}/{}", n.name),
            "see weft service list",
        ));
    };
    let svc: Option<Service> = serde_json::from_slice(&old).ok();
    let (ip, ports) = svc.as_ref().map(claims).unwrap_or((None, vec![]));
    let mut ops = vec![Op::Delete(skey.clone())];
    ops.extend(ip.map(|ip| Op::Delete(format!("{IPS}{ip}"))));
    ops.extend(ports.iter().map(|p| Op::Delete(format!("{NODEPORTS}{p}"))));
    agent.store.txn(&[Cmp::ValueIs(skey, old)], &ops).map_err(store_err(STORE))?;
    Ok(())
}

/// The services thread's view, for `weft service list`: kept per service
/// and updated for the services a batch of changes touched only (rebuilt
/// whole per batch, applying many Services one by one grew with the
/// square of their number).
#[derive(Default)]
pub struct ServicesState {
    view: Mutex<BTreeMap<ServiceKey, ServiceView>>,
}

pub fn list(agent: &Agent) -> Vec<ServiceView> {
    agent.services.view.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
}

/// Starts following services and slices, programming the service maps.
pub fn start(agent: Arc<Agent>) -> Result<(), String> {
    let maps = ServiceMaps::open(&agent.cfg.bpffs).map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<(bool, Update)>(1024);
    for (prefix, is_service) in [(SERVICES, true), (SLICES, false)] {
        let f =
            weft_store::follow(agent.store.clone(), prefix, if is_service { "services" } else { "slices" });
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("weft-follow".into())
            .spawn(move || {
                while let Some(u) = f.recv() {
                    if tx.send((is_service, u)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| e.to_string())?;
    }
    std::thread::Builder::new()
        .name("weft-services".into())
        .spawn(move || run(&agent, rx, maps))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// What one ServiceFrontend becomes in the maps: one frontend per address.
fn map_frontends(agent: &Agent, f: &ServiceFrontend) -> Vec<(LbFrontend, FrontendInfo, Vec<LbBackend>)> {
    let mut flags = 0;
    if f.affinity_timeout.is_some() {
        flags |= LB_F_AFFINITY;
    }
    if f.snat_remote_backends {
        flags |= LB_F_SNAT;
    }
    let (addrs, port, p) = match f.frontend {
        Frontend::ClusterIp { ip, port, protocol } => (vec![ip], port, protocol),
        Frontend::NodePort { port, protocol } => {
            flags |= LB_F_NODEPORT;
            if f.keep_client_address {
                flags |= LB_F_LOCAL;
            }
            (vec![agent.node_ip], port, protocol)
        }
    };
    // A NodePort's backends on other nodes (externalTrafficPolicy
    // Cluster) are reached as this node (SNAT, bpf/lib/nat.h); with Local
    // the selection holds this node's only.
    let backends: Vec<LbBackend> = if f.action == Action::Forward {
        f.backends
            .iter()
            .map(|b| LbBackend { id: b.id, address: b.ip, port: b.port, proto: proto(b.protocol) })
            .collect()
    } else {
        vec![]
    };
    let info = FrontendInfo { rev_nat_id: f.id, flags, affinity_timeout: f.affinity_timeout.unwrap_or(0) };
    addrs
        .into_iter()
        .map(|a| (LbFrontend { address: a, port, proto: proto(p) }, info, backends.clone()))
        .collect()
}

/// With `--lb-algorithm maglev`, the frontend's Maglev table goes in
/// before the frontend that points to it (LB_F_MAGLEV); a frontend whose
/// table cannot be written stays random rather than unreachable.
fn maglev(
    agent: &Agent,
    maps: &ServiceMaps,
    info: &mut FrontendInfo,
    backends: &[LbBackend],
) -> Result<(), String> {
    if agent.cfg.lb_algorithm != LbAlgorithm::Maglev || backends.is_empty() {
        return maps.delete_maglev(info.rev_nat_id).map_err(|e| e.to_string());
    }
    let members: Vec<MaglevBackend> =
        backends.iter().map(|b| MaglevBackend { id: b.id, ip: b.address, port: b.port }).collect();
    let table = weft_service::maglev::table(&members, LB_MAGLEV_SIZE as u32).map_err(|e| e.to_string())?;
    maps.put_maglev(info.rev_nat_id, &table).map_err(|e| e.to_string())?;
    info.flags |= LB_F_MAGLEV;
    Ok(())
}

fn run(agent: &Agent, rx: std::sync::mpsc::Receiver<(bool, Update)>, maps: ServiceMaps) {
    let mut table = ServiceTable::new(agent.cfg.node_name.clone());
    let mut raw: [BTreeMap<String, Vec<u8>>; 2] = Default::default();
    let mut programmed: BTreeMap<ServiceKey, Vec<LbFrontend>> = BTreeMap::new();
    let mut backends_in_use: BTreeMap<u32, usize> = BTreeMap::new();
    let mut per_service_backends: BTreeMap<ServiceKey, Vec<u32>> = BTreeMap::new();
    // A UDP frontend's backends as programmed, to see which ones leave.
    let mut udp_backends: BTreeMap<LbFrontend, BTreeSet<(Ipv4Addr, u16)>> = BTreeMap::new();
    // NodePort frontends served by this node's host (a hostNetwork pod),
    // and whether to-network translates the host's replies (the bit as the
    // pinned config has it: an earlier agent set it for the maps it left).
    let mut host_served: BTreeSet<LbFrontend> = BTreeSet::new();
    let mut host_flag = agent.dp().config().ok().map(|c| c.flags & CFG_F_HOST_BACKENDS != 0);
    // Which of services and slices have been listed whole: until both
    // have, the view is partial and says nothing about the host's NodePorts.
    let mut listed = [false; 2];
    loop {
        let Ok(first) = rx.recv_timeout(Duration::from_secs(5)) else { continue };
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let mut touched: BTreeSet<ServiceKey> = BTreeSet::new();
        for (is_service, u) in batch {
            let which = if is_service { 0 } else { 1 };
            let changes: Vec<(String, Option<Vec<u8>>)> = match u {
                Update::Reset { items, .. } => {
                    listed[which] = true;
                    let mut c: Vec<_> = raw[which]
                        .keys()
                        .filter(|k| !items.contains_key(*k))
                        .map(|k| (k.clone(), None))
                        .collect();
                    c.extend(items.into_iter().map(|(k, v)| (k, Some(v))));
                    c
                }
                Update::Put { key, value, .. } => vec![(key, Some(value))],
                Update::Delete { key, .. } => vec![(key, None)],
                Update::Down(e) => {
                    log::warn!("services: the store is unreachable ({e}); keeping the programmed services");
                    vec![]
                }
            };
            for (key, value) in changes {
                match &value {
                    Some(v) => raw[which].insert(key.clone(), v.clone()),
                    None => raw[which].remove(&key),
                };
                let rest = key.strip_prefix(if is_service { SERVICES } else { SLICES }).unwrap_or(&key);
                let Some((ns, name)) = rest.split_once('/') else { continue };
                if is_service {
                    let parsed = value
                        .and_then(|v| serde_json::from_slice::<Value>(&v).ok())
                        .map(|v| Service::from_json(&v));
                    match parsed {
                        Some(Ok(s)) => match table.upsert_service(s) {
                            Ok(k) => {
                                touched.insert(k);
                            }
                            Err(e) => log::error!("services: {ns}/{name}: {e}"),
                        },
                        Some(Err(e)) => log::warn!("services: stored {ns}/{name} is invalid ({e}); ignored"),
                        None => {
                            let k = ServiceKey::new(ns, name);
                            table.remove_service(&k);
                            touched.insert(k);
                        }
                    }
                } else {
                    let parsed = value
                        .and_then(|v| serde_json::from_slice::<Value>(&v).ok())
                        .map(|v| weft_service::EndpointSlice::from_json(&v));
                    match parsed {
                        Some(Ok(sl)) => match table.upsert_slice(sl) {
                            Ok(keys) => touched.extend(keys),
                            Err(e) => log::error!("services: slice {ns}/{name}: {e}"),
                        },
                        Some(Err(e)) => {
                            log::warn!("services: stored slice {ns}/{name} is invalid ({e}); ignored")
                        }
                        None => touched.extend(table.remove_slice(ns, name)),
                    }
                }
            }
        }
        let mut departed: BTreeSet<(Ipv4Addr, u16)> = BTreeSet::new();
        // Backends whose last user this batch let go (only these can have
        // become unused).
        let mut released: BTreeSet<u32> = BTreeSet::new();
        let mut views: Vec<(ServiceKey, Option<ServiceView>)> = Vec::new();
        for key in touched {
            let fronts = table.frontends_of(&key);
            let mut now = Vec::new();
            let mut ids = Vec::new();
            for f in &fronts {
                for (fe, mut info, backends) in map_frontends(agent, f) {
                    ids.extend(backends.iter().map(|b| b.id));
                    if let Err(e) = maglev(agent, &maps, &mut info, &backends) {
                        log::error!("services: {}/{}: Maglev table of {fe:?}: {e}", key.namespace, key.name);
                    }
                    if let Err(e) = maps.put(fe, info, &backends) {
                        log::error!("services: {}/{}: writing {fe:?}: {e}", key.namespace, key.name);
                    }
                    if info.flags & LB_F_NODEPORT != 0 && backends.iter().any(|b| b.address == agent.node_ip)
                    {
                        host_served.insert(fe);
                    } else {
                        host_served.remove(&fe);
                    }
                    if fe.proto == proto(Protocol::Udp) {
                        let set: BTreeSet<_> = backends.iter().map(|b| (b.address, b.port)).collect();
                        let old = udp_backends.insert(fe, set.clone()).unwrap_or_default();
                        departed.extend(old.difference(&set));
                    }
                    now.push(fe);
                }
            }
            for gone in programmed.get(&key).into_iter().flatten().filter(|f| !now.contains(f)) {
                if let Err(e) = maps.delete(*gone) {
                    log::error!("services: {}/{}: removing {gone:?}: {e}", key.namespace, key.name);
                }
                departed.extend(udp_backends.remove(gone).unwrap_or_default());
                host_served.remove(gone);
            }
            for id in per_service_backends.remove(&key).unwrap_or_default() {
                if let Some(n) = backends_in_use.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        released.insert(id);
                    }
                }
            }
            for id in &ids {
                *backends_in_use.entry(*id).or_default() += 1;
            }
            per_service_backends.insert(key.clone(), ids);
            views.push((key.clone(), view(&table, &key)));
            if now.is_empty() {
                programmed.remove(&key);
            } else {
                programmed.insert(key, now);
            }
        }
        if !departed.is_empty() {
            sockets::end_connected_to(agent, departed);
        }
        let wanted = !host_served.is_empty();
        if listed == [true, true] && host_flag != Some(wanted) && set_host_backends(agent, wanted) {
            host_flag = Some(wanted);
        }
        for id in released {
            if backends_in_use.get(&id) == Some(&0) {
                let _ = maps.delete_backend(id);
                backends_in_use.remove(&id);
            }
        }
        let mut shown = agent.services.view.lock().unwrap_or_else(|p| p.into_inner());
        for (key, v) in views {
            match v {
                Some(v) => shown.insert(key, v),
                None => shown.remove(&key),
            };
        }
    }
}

/// Turns to-network's lookup of the host's NodePort replies on or off
/// (CFG_F_HOST_BACKENDS; only that bit of the config). Returns whether the
/// config holds it now (a failure is logged and retried at the next batch).
fn set_host_backends(agent: &Agent, on: bool) -> bool {
    let mut dp = agent.dp();
    let written = dp.config().and_then(|mut c| {
        c.flags = if on { c.flags | CFG_F_HOST_BACKENDS } else { c.flags & !CFG_F_HOST_BACKENDS };
        dp.set_config(c)
    });
    if let Err(e) = &written {
        log::error!(
            "services: cannot {} the host's NodePort replies: {e}",
            if on { "translate" } else { "stop translating" }
        );
    }
    written.is_ok()
}

/// What `weft service list` shows of one service (`None`: not stored).
fn view(table: &ServiceTable, k: &ServiceKey) -> Option<ServiceView> {
    let s = table.service(k)?;
    let fronts = table.frontends_of(k);
    Some(ServiceView {
        namespace: k.namespace.clone(),
        name: k.name.clone(),
        kind: format!("{:?}", s.spec.type_),
        cluster_ip: match s.spec.cluster_ip() {
            weft_service::ClusterIp::Addr(a) => a.to_string(),
            weft_service::ClusterIp::Headless => "None".into(),
            weft_service::ClusterIp::Unassigned => "-".into(),
        },
        frontends: fronts
            .iter()
            .map(|f| {
                let what = match f.frontend {
                    Frontend::ClusterIp { ip, port, protocol } => format!("{ip}:{port}/{protocol:?}"),
                    Frontend::NodePort { port, protocol } => format!("<node>:{port}/{protocol:?}"),
                };
                let to: Vec<String> = f.backends.iter().map(|b| format!("{}:{}", b.ip, b.port)).collect();
                format!("{what} -> {}", if to.is_empty() { format!("{:?}", f.action) } else { to.join(",") })
            })
            .collect(),
    })
}
