//! A pod's attachment: ADD creates the veth pair, addresses the pod, fills
//! the datapath maps and attaches from-container; DEL undoes all of it.
//! A failed ADD undoes what it did, so nothing is left behind.

use crate::{
    names,
    node::device_sysctls,
    state::{Agent, EndpointRecord, Inner},
};
use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};
use weft_api::{AddRequest, AddResult, ApiError, Attachment, CheckRequest, DelRequest, code};
use weft_datapath::maps::{EndpointInfo, LxcInfo, ip_to_be};
use weft_ipam::Owner;
use weft_net::{ip, mac_string, netns};
use weft_store::identity;

impl EndpointRecord {
    pub fn result(&self, gateway: Ipv4Addr) -> AddResult {
        AddResult {
            endpoint_id: self.id,
            ip: self.ip,
            gateway,
            host_ifname: self.host_ifname.clone(),
            host_mac: mac_string(&self.host_mac),
            ifname: self.ifname.clone(),
            pod_mac: mac_string(&self.pod_mac),
            netns: self.netns.clone(),
            mtu: self.mtu,
        }
    }

    pub fn bpf_value(&self, ifindex: u32) -> EndpointInfo {
        EndpointInfo {
            ifindex,
            sec_identity: self.identity,
            ep_id: self.id,
            flags: 0,
            mac: self.pod_mac,
            node_mac: self.host_mac,
        }
    }
}

fn validate(req: &AddRequest) -> Result<(), ApiError> {
    let bad = |what: &str| ApiError::new(code::BAD_REQUEST, "invalid ADD request", what.to_string());
    if req.container_id.is_empty() || req.container_id.contains('/') {
        return Err(bad("container id must be non-empty and contain no '/'"));
    }
    if req.ifname.is_empty() || req.ifname.len() > 15 || req.ifname.contains('/') {
        return Err(bad("ifname must be 1-15 characters without '/'"));
    }
    if let Some(m) = req.mtu
        && !(576..=65535).contains(&m)
    {
        return Err(ApiError::new(
            code::INVALID_CONFIG,
            "invalid mtu",
            format!("{m} is outside 576..=65535"),
        ));
    }
    if !netns::exists(Path::new(&req.netns)) {
        return Err(ApiError::new(
            code::NETNS_NOT_FOUND,
            "network namespace not found",
            format!("{} is not a network namespace; the runtime must create it before ADD", req.netns),
        ));
    }
    Ok(())
}

/// What ADD reserves under the lock before touching any device.
struct Reservation {
    rec: EndpointRecord,
}

pub fn add(agent: &Agent, req: AddRequest) -> Result<AddResult, ApiError> {
    validate(&req)?;
    let res = match reserve(agent, &req)? {
        Ok(existing) => return Ok(existing),
        Err(r) => r,
    };
    let rec = res.rec;
    let built = build_devices(agent, &rec).and_then(|_| activate(agent, &rec));
    match built {
        Ok(()) => {
            log::info!(
                "endpoint {} added: {} {} on {} identity {}",
                rec.id,
                rec.container_id,
                rec.ip,
                rec.host_ifname,
                rec.identity
            );
            Ok(rec.result(agent.pod_gateway()))
        }
        Err(e) => {
            log::warn!("ADD {} failed, rolling back: {e}", rec.container_id);
            let _ = ip::link_delete(&rec.host_ifname);
            let mut inner = agent.lock();
            forget(agent, &mut inner, &rec);
            Err(e)
        }
    }
}

/// Under the lock: returns the existing result for a repeated ADD, or
/// reserves an address, an endpoint id and an identity for a new one.
fn reserve(agent: &Agent, req: &AddRequest) -> Result<Result<AddResult, Reservation>, ApiError> {
    let labels = pod_labels(agent, req)?;
    let ident = agent
        .identities
        .allocate(&labels)
        .map_err(|e| ApiError::new(code::INTERNAL, "identity allocation failed", e.to_string()))?;
    let mut inner = agent.lock();
    let key = (req.container_id.clone(), req.ifname.clone());
    if let Some(rec) = inner.endpoints.get(&key) {
        if rec.netns == req.netns {
            return Ok(Ok(rec.result(agent.pod_gateway())));
        }
        return Err(ApiError::new(
            code::CONFLICT,
            "attachment exists",
            format!(
                "container {} already has {} in {}; DEL it first",
                req.container_id, req.ifname, rec.netns
            ),
        ));
    }
    let owner = Owner {
        container_id: req.container_id.clone(),
        ifname: req.ifname.clone(),
        netns: req.netns.clone(),
    };
    let ip = inner
        .ipam
        .allocate(&owner)
        .map_err(|e| ApiError::new(code::IPAM_EXHAUSTED, "no address for the pod", e.to_string()))?;
    let id = free_endpoint_id(&inner, names::endpoint_id_seed(&req.container_id, &req.ifname));
    inner.ids_in_use.insert(id);
    let (mut host_mac, pod_mac) = names::macs(&req.container_id, &req.ifname);
    if agent.cfg.gateway_style == crate::config::GatewayStyle::LinkLocal {
        host_mac = crate::config::LINK_LOCAL_MAC;
    }
    Ok(Err(Reservation {
        rec: EndpointRecord {
            id,
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: req.netns.clone(),
            network: req.network.clone(),
            ip,
            host_ifname: names::host_ifname(&req.container_id, &req.ifname),
            host_mac,
            pod_mac,
            mtu: req.mtu.unwrap_or(agent.pod_mtu),
            identity: ident,
            labels,
            pod_namespace: req.pod_namespace.clone(),
            pod_name: req.pod_name.clone(),
        },
    }))
}

fn free_endpoint_id(inner: &Inner, seed: u16) -> u16 {
    let mut id = seed;
    while inner.ids_in_use.contains(&id) {
        id = if id >= 4095 { 1 } else { id + 1 };
    }
    id
}

/// Labels of the pod: its namespace plus labels kept for it in the store.
fn pod_labels(agent: &Agent, req: &AddRequest) -> Result<Vec<String>, ApiError> {
    let ns = req.pod_namespace.clone().unwrap_or_else(|| "default".into());
    let extra = match &req.pod_name {
        Some(name) => identity::stored_pod_labels(agent.store.as_ref(), &ns, name).map_err(|e| {
            ApiError::new(code::INTERNAL, "reading pod labels from the store failed", e.to_string())
        })?,
        None => BTreeMap::new(),
    };
    Ok(identity::pod_labels(&ns, &extra))
}

fn dev_err(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(code::DATAPATH, "setting up the pod's devices failed", what.to_string())
}

/// Creates the veth pair with its pod end directly in the pod's namespace
/// and configures both ends.
fn build_devices(agent: &Agent, rec: &EndpointRecord) -> Result<(), ApiError> {
    if ip::link_exists(&rec.host_ifname) {
        // Left by an ADD that died half-way: it belongs to this attachment.
        ip::link_delete(&rec.host_ifname).map_err(dev_err)?;
    }
    let (mtu, host_mac, pod_mac) = (rec.mtu.to_string(), mac_string(&rec.host_mac), mac_string(&rec.pod_mac));
    #[rustfmt::skip]
    ip::run(&[
        "link", "add", &rec.host_ifname, "mtu", &mtu, "address", &host_mac, "type", "veth",
        "peer", "name", &rec.ifname, "mtu", &mtu, "address", &pod_mac, "netns", &rec.netns,
    ])
    .map_err(dev_err)?;
    device_sysctls(&rec.host_ifname).map_err(dev_err)?;
    let ifindex = weft_net::ifindex(&rec.host_ifname)
        .ok_or_else(|| dev_err(format!("{} vanished", rec.host_ifname)))?;
    // The datapath must be in place before the pod's first ARP.
    program_datapath(&mut agent.lock(), rec, ifindex)?;
    ip::run(&["link", "set", &rec.host_ifname, "up"]).map_err(dev_err)?;
    configure_pod(agent.pod_gateway(), rec)
        .map_err(|e| ApiError::new(code::DATAPATH, "configuring the pod's interface failed", e))
}

/// Inside the pod: the /32, the link up, and exactly two routes — the
/// gateway on-link and the default via the gateway.
fn configure_pod(gw: Ipv4Addr, rec: &EndpointRecord) -> Result<(), String> {
    let ifname = rec.ifname.clone();
    let cmds = vec![
        format!("addr add {}/32 dev {ifname}", rec.ip),
        format!("link set {ifname} up"),
        format!("route add {gw} dev {ifname} scope link"),
        format!("route add default via {gw} dev {ifname}"),
    ];
    netns::run_in(Path::new(&rec.netns), move || {
        let _ = weft_net::sysctl::set(&format!("net.ipv6.conf.{ifname}.disable_ipv6"), "1");
        ip::batch(&cmds)
    })
    .map_err(|e| e.to_string())
}

fn dp_err(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(code::DATAPATH, "programming the datapath failed", what.to_string())
}

/// Endpoint and lxc map entries, and from-container on the lxc ingress.
pub fn program_datapath(inner: &mut Inner, rec: &EndpointRecord, ifindex: u32) -> Result<(), ApiError> {
    inner.dp.put_endpoint(rec.ip, rec.bpf_value(ifindex)).map_err(dp_err)?;
    inner.dp.put_lxc(ifindex, LxcInfo { ip4: ip_to_be(rec.ip), ep_id: rec.id, pad: 0 }).map_err(dp_err)?;
    inner.dp.attach_lxc(&rec.host_ifname).map_err(dp_err)
}

/// Persists the record and makes it visible.
fn activate(agent: &Agent, rec: &EndpointRecord) -> Result<(), ApiError> {
    let key = agent.endpoint_key(&rec.container_id, &rec.ifname);
    weft_store::put_json(agent.store.as_ref(), &key, rec)
        .map_err(|e| ApiError::new(code::INTERNAL, "persisting the endpoint failed", e.to_string()))?;
    let mut inner = agent.lock();
    inner.endpoints.insert((rec.container_id.clone(), rec.ifname.clone()), rec.clone());
    Ok(())
}

/// Removes every trace of an attachment from the agent's state (not the
/// devices). Used by DEL, GC, rollback and reconciliation.
pub fn forget(agent: &Agent, inner: &mut Inner, rec: &EndpointRecord) {
    inner.dp.detach(&rec.host_ifname);
    if let Ok(Some(info)) =
        inner.dp.endpoints().map(|m| m.get(&weft_datapath::maps::EndpointKey::new(rec.ip), 0).ok())
        && info.ep_id == rec.id
    {
        if let Ok(mut lxc) = inner.dp.lxc() {
            let _ = lxc.remove(&info.ifindex);
        }
        inner.dp.del_endpoint(rec.ip);
    }
    if let Err(e) = inner.ipam.release(&rec.container_id, &rec.ifname) {
        log::warn!("IPAM release of {} failed: {e}", rec.ip);
    }
    inner.ids_in_use.remove(&rec.id);
    inner.endpoints.remove(&(rec.container_id.clone(), rec.ifname.clone()));
    let _ = agent.store.delete(&agent.endpoint_key(&rec.container_id, &rec.ifname));
    if !identity_in_use(agent, inner, rec.identity)
        && let Err(e) = agent.identities.release(rec.identity)
    {
        log::warn!("releasing identity {} failed: {e}", rec.identity);
    }
}

/// Whether any endpoint, here or (in a cluster) on another node, still has
/// the identity: identities are shared cluster-wide.
fn identity_in_use(agent: &Agent, inner: &Inner, id: u32) -> bool {
    if inner.endpoints.values().any(|e| e.identity == id) {
        return true;
    }
    if !agent.cluster {
        return false;
    }
    match weft_store::list_json::<EndpointRecord>(agent.store.as_ref(), "endpoints/") {
        Ok(all) => all.iter().any(|(_, e)| e.identity == id),
        Err(_) => true, // unsure: keep it
    }
}

/// DEL is idempotent: an unknown attachment or a vanished netns is success.
pub fn del(agent: &Agent, req: DelRequest) -> Result<(), ApiError> {
    let mut inner = agent.lock();
    let key = (req.container_id.clone(), req.ifname.clone());
    let host_ifname = names::host_ifname(&req.container_id, &req.ifname);
    match inner.endpoints.get(&key).cloned() {
        Some(rec) => {
            forget(agent, &mut inner, &rec);
            log::info!("endpoint {} deleted: {} {}", rec.id, rec.container_id, rec.ip);
        }
        None => {
            // An ADD that crashed before persisting may still hold an address.
            let _ = inner.ipam.release(&req.container_id, &req.ifname);
        }
    }
    drop(inner);
    ip::link_delete(&host_ifname)
        .map_err(|e| ApiError::new(code::DATAPATH, "deleting the pod's device failed", e.to_string()))
}

pub fn check(agent: &Agent, req: CheckRequest) -> Result<(), ApiError> {
    let mut inner = agent.lock();
    let rec =
        inner.endpoints.get(&(req.container_id.clone(), req.ifname.clone())).cloned().ok_or_else(|| {
            ApiError::new(
                code::UNKNOWN_CONTAINER,
                "unknown container",
                format!("no attachment {} {} on this node", req.container_id, req.ifname),
            )
        })?;
    let fail = |what: String| Err(ApiError::new(code::DATAPATH, "attachment is not healthy", what));
    if rec.netns != req.netns || !netns::exists(Path::new(&req.netns)) {
        return fail(format!("network namespace {} is not the endpoint's ({})", req.netns, rec.netns));
    }
    if let Some(ip) = req.ip
        && ip != rec.ip
    {
        return fail(format!("the runtime expects {ip}, the endpoint has {}", rec.ip));
    }
    let Some(ifindex) = weft_net::ifindex(&rec.host_ifname) else {
        return fail(format!("host device {} is missing", rec.host_ifname));
    };
    if !inner.dp.is_attached(&rec.host_ifname, weft_datapath::Hook::Ingress) {
        return fail(format!("from-container is not attached to {}", rec.host_ifname));
    }
    match inner.dp.endpoints().map(|m| m.get(&weft_datapath::maps::EndpointKey::new(rec.ip), 0).ok()) {
        Ok(Some(v)) if v == rec.bpf_value(ifindex) => Ok(()),
        _ => fail(format!("endpoint map entry for {} is missing or stale", rec.ip)),
    }
}

/// GC: everything of `network` not in `valid` goes.
pub fn gc(agent: &Agent, network: &str, valid: &[Attachment]) -> Vec<Attachment> {
    let valid: std::collections::HashSet<_> = valid.iter().cloned().collect();
    let stale: Vec<EndpointRecord> = agent
        .lock()
        .endpoints
        .values()
        .filter(|r| r.network == network)
        .filter(|r| {
            !valid.contains(&Attachment { container_id: r.container_id.clone(), ifname: r.ifname.clone() })
        })
        .cloned()
        .collect();
    let mut released = Vec::new();
    for rec in stale {
        let req =
            DelRequest { container_id: rec.container_id.clone(), ifname: rec.ifname.clone(), netns: None };
        if del(agent, req).is_ok() {
            released.push(Attachment { container_id: rec.container_id, ifname: rec.ifname });
        }
    }
    released
}
