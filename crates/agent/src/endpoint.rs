//! A pod's attachment.
//!
//! ADD: validate → take an address and an endpoint id → the identity →
//! journal the intent (phase adding) → veth pair, datapath maps and program,
//! the pod's address and routes → publish to the cluster store → journal
//! ready. Every failure, and every crash before "ready" (on restart), runs
//! `removal::teardown`, which takes an attachment down from whatever phase
//! it reached (DEL is in `removal` too). One operation per attachment runs
//! at a time.

use crate::journal::Phase;
use crate::{
    faults, names, removal,
    state::{Agent, AttachmentKey, EndpointRecord},
    timing::Phases,
};
use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};
use weft_api::{AddRequest, AddResult, ApiError, Attachment, CheckRequest, DelRequest, code};
use weft_datapath::{
    Datapath,
    maps::{EndpointInfo, LxcInfo, ip_to_be},
};
use weft_ipam::Owner;
use weft_net::{
    mac_string,
    netlink::{self, Ipv4Conf, Netlink, Route, UpWith, Veth},
    netns,
};
use weft_store::identity;

/// `identity` of a record rebuilt from IPAM alone (an ADD cut short before
/// its journal entry): which identity it referenced is looked up.
pub const IDENTITY_UNKNOWN: u32 = u32::MAX;

impl EndpointRecord {
    pub fn key(&self) -> AttachmentKey {
        (self.container_id.clone(), self.ifname.clone())
    }
}

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

/// Names and lengths, before any work (a 10 MB container id is refused
/// here, not after devices were made).
fn validate(req: &AddRequest) -> Result<(), ApiError> {
    use weft_api::validate as v;
    let bad = |e: v::Invalid| ApiError::new(code::INVALID_ENV, "invalid ADD request", e.to_string());
    v::container_id(&req.container_id).map_err(bad)?;
    v::ifname(&req.ifname).map_err(bad)?;
    v::netns_path(&req.netns).map_err(bad)?;
    v::network_name(&req.network).map_err(bad)?;
    req.pod_namespace.as_deref().map(v::pod_namespace).transpose().map_err(bad)?;
    req.pod_name.as_deref().map(v::pod_name).transpose().map_err(bad)?;
    if let Some(m) = req.mtu
        && !(576..=65535).contains(&m)
    {
        return Err(ApiError::new(
            code::INVALID_CONFIG,
            "invalid mtu",
            format!("{m} is outside 576..=65535"),
        ));
    }
    Ok(())
}

/// The pod's namespace must be a network namespace of its own: not the
/// node's, not one that already has addresses (another host's).
fn check_netns(req: &AddRequest) -> Result<(), ApiError> {
    let path = Path::new(&req.netns);
    if !netns::exists(path) {
        return Err(ApiError::new(
            code::NETNS_NOT_FOUND,
            "network namespace not found",
            format!("{} is not a network namespace; the runtime must create it before ADD", req.netns),
        ));
    }
    netns::check_pod_netns(path)
        .map_err(|e| ApiError::new(code::INVALID_ENV, "CNI_NETNS cannot hold a pod", e))
}

/// What a failed call of the cluster store is reported as, where no more
/// precise words fit.
pub(crate) const STORE: &str = "the cluster store failed";

pub(crate) fn store_err(what: &'static str) -> impl FnOnce(weft_store::StoreError) -> ApiError {
    move |e| {
        let code = if matches!(e, weft_store::StoreError::Unavailable { .. }) {
            code::TRY_AGAIN
        } else {
            code::INTERNAL
        };
        ApiError::new(code, what, e.to_string())
    }
}

pub fn add(agent: &Agent, req: AddRequest) -> Result<AddResult, ApiError> {
    validate(&req)?;
    let mut t = Phases::start();
    let key = (req.container_id.clone(), req.ifname.clone());
    let _one_at_a_time = agent.attachments.lock(&key);
    t.mark("wait");
    let existing = agent.pods().endpoints.get(&key).cloned();
    if let Some(rec) = existing {
        match rec.phase {
            Phase::Ready if rec.netns == req.netns => return Ok(rec.result(agent.pod_gateway())),
            Phase::Ready => {
                return Err(ApiError::new(
                    code::CONFLICT,
                    "attachment exists",
                    format!(
                        "container {} already has {} in {}; DEL it first",
                        req.container_id, req.ifname, rec.netns
                    ),
                ));
            }
            // A DEL that still owes the store: finish it before starting over.
            _ => removal::teardown(agent, rec).map_err(|e| {
                ApiError::new(
                    code::TRY_AGAIN,
                    "an earlier attachment of this container is still being removed",
                    e.to_string(),
                )
            })?,
        }
    }
    if let Err(e) = check_netns(&req) {
        // The namespace may still hold a pod the runtime deleted a moment
        // ago (a runtime may DEL and ADD again in one netns) whose device
        // the repair thread has not removed yet: finish those now.
        if agent.removals.in_progress() == 0 {
            return Err(e);
        }
        removal::finish_handed_over(agent)
            .map_err(|f| ApiError::new(code::TRY_AGAIN, "removing a deleted pod failed", f))?;
        check_netns(&req)?;
    }
    let labels = pod_labels(agent, &req)?;
    t.mark("labels");
    let mut rec = reserve(agent, &req, labels)?;
    t.mark("ipam");
    faults::point("add:after-ipam");
    match create(agent, &mut rec, &mut t) {
        Ok(()) => {
            log::info!(
                "endpoint {} added: {} {} on {} identity {} in {t}",
                rec.id,
                rec.container_id,
                rec.ip,
                rec.host_ifname,
                rec.identity
            );
            Ok(rec.result(agent.pod_gateway()))
        }
        Err(e) => {
            log::warn!("ADD {} failed, undoing it: {e}", rec.container_id);
            if let Err(owed) = removal::teardown(agent, rec) {
                log::warn!("undoing the failed ADD is not finished ({owed}); the repair loop retries it");
            }
            Err(e)
        }
    }
}

/// Under the lock: an address and an endpoint id, and the attachment's
/// entry (phase adding) so everything else sees the address as taken.
fn reserve(agent: &Agent, req: &AddRequest, labels: Vec<String>) -> Result<EndpointRecord, ApiError> {
    let mut inner = agent.pods();
    let owner = Owner {
        container_id: req.container_id.clone(),
        ifname: req.ifname.clone(),
        netns: req.netns.clone(),
    };
    let ip = inner
        .ipam
        .allocate(&owner)
        .map_err(|e| ApiError::new(code::IPAM_EXHAUSTED, "no address for the pod", e.to_string()))?;
    let Some(id) = inner.ids.take(names::endpoint_id_seed(&req.container_id, &req.ifname)) else {
        if let Err(e) = inner.ipam.release(&req.container_id, &req.ifname) {
            log::warn!("releasing {ip} again failed: {e}");
        }
        return Err(ApiError::new(
            code::IPAM_EXHAUSTED,
            "no free endpoint id",
            format!("all {} endpoint ids of this node are in use; delete pods first", inner.ids.in_use()),
        ));
    };
    let (mut host_mac, pod_mac) = names::macs(&req.container_id, &req.ifname);
    if agent.cfg.gateway_style == crate::config::GatewayStyle::LinkLocal {
        host_mac = crate::config::LINK_LOCAL_MAC;
    }
    let rec = EndpointRecord {
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
        identity: 0,
        labels,
        pod_namespace: req.pod_namespace.clone(),
        pod_name: req.pod_name.clone(),
        phase: Phase::Adding,
    };
    inner.endpoints.insert(rec.key(), rec.clone());
    Ok(rec)
}

/// Everything after the reservation, in the order a crash can be undone.
fn create(agent: &Agent, rec: &mut EndpointRecord, t: &mut Phases) -> Result<(), ApiError> {
    // Taken last (after the conflict and IPAM checks), released by teardown.
    rec.identity = agent
        .identities
        .acquire(&rec.labels, &agent.identity_holder(rec.ip))
        .map_err(store_err("allocating the pod's identity failed"))?;
    t.mark("identity");
    faults::point("add:after-identity");
    journal(agent, rec)?;
    t.mark("journal");
    faults::point("add:after-journal");
    build_devices(agent, rec, t)?;
    let mut published = rec.clone();
    published.phase = Phase::Ready;
    weft_store::put_json(agent.store.as_ref(), &agent.endpoint_key(rec.ip), &published)
        .map_err(store_err("publishing the endpoint in the store failed"))?;
    t.mark("publish");
    faults::point("add:after-publish");
    rec.phase = Phase::Ready;
    journal(agent, rec)?;
    crate::ipcache::local_changed(agent);
    crate::policy::sync(agent, std::time::Duration::from_secs(2));
    t.mark("ready");
    faults::point("add:after-ready");
    Ok(())
}

/// Writes the record to the journal and the agent's table.
pub(crate) fn journal(agent: &Agent, rec: &EndpointRecord) -> Result<(), ApiError> {
    agent
        .journal
        .write(rec)
        .map_err(|e| ApiError::new(code::INTERNAL, "writing the endpoint journal failed", e))?;
    agent.pods().endpoints.insert(rec.key(), rec.clone());
    Ok(())
}

/// Labels of the pod: its namespace plus labels kept for it in the store.
fn pod_labels(agent: &Agent, req: &AddRequest) -> Result<Vec<String>, ApiError> {
    let ns = req.pod_namespace.clone().unwrap_or_else(|| "default".into());
    let extra = match &req.pod_name {
        Some(name) => identity::stored_pod_labels(agent.store.as_ref(), &ns, name)
            .map_err(store_err("reading pod labels from the store failed"))?,
        None => BTreeMap::new(),
    };
    Ok(identity::pod_labels(&ns, &extra))
}

fn dev_err(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(code::DATAPATH, "setting up the pod's devices failed", what.to_string())
}

/// Creates the veth pair with its pod end directly in the pod's namespace
/// and configures both ends. The host end comes up only once from-container
/// is attached: a device of ours never carries a packet without its program.
fn build_devices(agent: &Agent, rec: &EndpointRecord, t: &mut Phases) -> Result<(), ApiError> {
    let mut nl = Netlink::open().map_err(dev_err)?;
    // One left by an ADD that died half-way belongs to this attachment.
    nl.link_delete(&rec.host_ifname).map_err(dev_err)?;
    nl.veth_create(&Veth {
        name: &rec.host_ifname,
        mac: Some(rec.host_mac),
        peer: &rec.ifname,
        peer_mac: Some(rec.pod_mac),
        peer_netns: Some(Path::new(&rec.netns)),
        mtu: Some(rec.mtu),
    })
    .map_err(dev_err)?;
    t.mark("veth");
    faults::point("add:after-veth");
    let ifindex = nl.require_index(&rec.host_ifname).map_err(dev_err)?;
    // The datapath must be in place before the pod's first ARP.
    attach_new_device(agent, rec, ifindex)?;
    t.mark("attach");
    faults::point("add:after-datapath");
    // Up while the pod's end is still down (so no link-local address is
    // made before the setting takes). Replies to the pod leave by the
    // stack through this device: no reverse-path check (the pod's /32 is
    // not routed here), forwarding on.
    let up = UpWith { ipv4: &[(Ipv4Conf::RpFilter, 0), (Ipv4Conf::Forwarding, 1)], no_ipv6_link_local: true };
    nl.link_up_with(&rec.host_ifname, &up).map_err(dev_err)?;
    configure_pod(agent.pod_gateway(), rec)
        .map_err(|e| ApiError::new(code::DATAPATH, "configuring the pod's interface failed", e))?;
    t.mark("pod");
    faults::point("add:after-pod-config");
    Ok(())
}

/// The two routes a pod has: the gateway on-link, the default via it.
fn pod_routes(gw: Ipv4Addr, ifname: &str) -> [Route; 2] {
    [Route::on_link(gw, ifname), Route::default_via(gw, ifname)]
}

/// Inside the pod: the /32, the link up, and exactly two routes — the
/// gateway on-link and the default via the gateway.
fn configure_pod(gw: Ipv4Addr, rec: &EndpointRecord) -> Result<(), String> {
    let (ifname, ip) = (rec.ifname.clone(), rec.ip);
    netlink::in_netns(Path::new(&rec.netns), move |nl| {
        // Pods are IPv4-only (from-container drops any other protocol):
        // no IPv6 address, so the pod sends no neighbour discovery.
        nl.no_ipv6_link_local(&ifname)?;
        nl.address_add(&ifname, ip, 32)?;
        nl.link_up(&ifname)?;
        for r in pod_routes(gw, &ifname) {
            nl.route_add(&r)?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())
}

/// What CHECK finds wrong inside the pod's namespace, as the reference
/// plugins look: the device, exactly the pod's /32, the MTU, both routes.
fn check_pod(gw: Ipv4Addr, rec: &EndpointRecord) -> Result<(), String> {
    let (ifname, ip, mtu, ns) = (rec.ifname.clone(), rec.ip, rec.mtu, rec.netns.clone());
    netlink::in_netns(Path::new(&rec.netns), move |nl| {
        let bad = |what: String| Err(weft_net::Error(what));
        let Some(link) = nl.link(&ifname)? else {
            return bad(format!("device {ifname} is missing in {ns}"));
        };
        let addrs: Vec<String> =
            nl.addresses_of(&ifname)?.iter().map(|a| format!("{}/{}", a.ip, a.prefix_len)).collect();
        let want = format!("{ip}/32");
        if addrs != [want.clone()] {
            let has = if addrs.is_empty() { "no address".to_string() } else { addrs.join(", ") };
            return bad(format!("{ifname} in {ns} has {has}, expected exactly {want}"));
        }
        if link.mtu != mtu {
            return bad(format!("{ifname} in {ns} has MTU {}, expected {mtu}", link.mtu));
        }
        let routes = nl.routes_via(&ifname)?;
        for r in pod_routes(gw, &ifname) {
            if !routes.iter().any(|have| r.matches(have)) {
                return bad(format!("route {r} missing in {ns}"));
            }
        }
        Ok(())
    })
    .map_err(|e| e.to_string())
}

fn dp_err(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(code::DATAPATH, "programming the datapath failed", what.to_string())
}

/// Endpoint and lxc map entries, and from-container on the lxc ingress.
pub fn program_datapath(dp: &mut Datapath, rec: &EndpointRecord, ifindex: u32) -> Result<(), ApiError> {
    put_maps(dp, rec, ifindex)?;
    dp.attach_lxc(&rec.host_ifname).map_err(dp_err)
}

fn put_maps(dp: &mut Datapath, rec: &EndpointRecord, ifindex: u32) -> Result<(), ApiError> {
    dp.put_endpoint(rec.ip, rec.bpf_value(ifindex)).map_err(dp_err)?;
    dp.put_lxc(ifindex, LxcInfo { ip4: ip_to_be(rec.ip), ep_id: rec.id, pad: 0 }).map_err(dp_err)
}

/// `program_datapath` for a device ADD just made: the maps under the
/// datapath's lock, the tcx attach (the kernel waits for an RCU grace
/// period in it) outside, so concurrent ADDs wait side by side.
fn attach_new_device(agent: &Agent, rec: &EndpointRecord, ifindex: u32) -> Result<(), ApiError> {
    let attacher = {
        let mut dp = agent.dp();
        put_maps(&mut dp, rec, ifindex)?;
        dp.lxc_attacher().map_err(dp_err)?
    };
    let attached = match attacher {
        Some(a) => a.attach_new(&rec.host_ifname).map_err(dp_err)?,
        None => false,
    };
    if !attached {
        agent.dp().attach_lxc(&rec.host_ifname).map_err(dp_err)?;
    }
    Ok(())
}

pub fn check(agent: &Agent, req: CheckRequest) -> Result<(), ApiError> {
    let rec = agent
        .pods()
        .endpoints
        .get(&(req.container_id.clone(), req.ifname.clone()))
        .filter(|r| r.phase == Phase::Ready)
        .cloned()
        .ok_or_else(|| {
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
    {
        let mut dp = agent.dp();
        if !dp.is_attached(&rec.host_ifname, weft_datapath::Hook::Ingress) {
            return fail(format!("from-container is not attached to {}", rec.host_ifname));
        }
        match dp.endpoints().map(|m| m.get(&weft_datapath::maps::EndpointKey::new(rec.ip), 0).ok()) {
            Ok(Some(v)) if v == rec.bpf_value(ifindex) => {}
            _ => return fail(format!("endpoint map entry for {} is missing or stale", rec.ip)),
        }
    }
    check_pod(agent.pod_gateway(), &rec).or_else(fail)
}

/// GC: every ready attachment of `network` not in `valid` goes.
pub fn gc(agent: &Agent, network: &str, valid: &[Attachment]) -> Vec<Attachment> {
    let valid: std::collections::HashSet<_> = valid.iter().cloned().collect();
    let stale: Vec<EndpointRecord> = agent
        .pods()
        .endpoints
        .values()
        .filter(|r| r.network == network && r.phase == Phase::Ready)
        .filter(|r| {
            !valid.contains(&Attachment { container_id: r.container_id.clone(), ifname: r.ifname.clone() })
        })
        .cloned()
        .collect();
    let mut released = Vec::new();
    for rec in stale {
        let req =
            DelRequest { container_id: rec.container_id.clone(), ifname: rec.ifname.clone(), netns: None };
        if removal::del(agent, req).is_ok() {
            released.push(Attachment { container_id: rec.container_id, ifname: rec.ifname });
        }
    }
    released
}
