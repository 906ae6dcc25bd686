//! What each request of the local API does: the CNI operations go to
//! `endpoint`, a relabel to `relabel`, and the views (`endpoint list`,
//! `bpf … list`, `status`, …) are read here from the agent's state and the
//! datapath's maps. `server` owns the socket and calls [`dispatch`].

use crate::{endpoint, state::Agent};
use serde::Serialize;
use weft_api::{
    AgentStatus, ApiError, BpfEndpointView, EndpointView, GcResult, IdentityView, IpcacheView, MapStatus,
    NodeView, Request, Response, code,
};
use weft_net::mac_string;

fn ok<T: Serialize>(v: T) -> Response {
    Response::Ok(serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
}

/// The objects of an apply request (`weft policy apply`, `weft service
/// apply`), each read with `read`: all of them, or a refusal naming the
/// first bad one, so that nothing is applied in part.
pub(crate) fn read_documents<T>(
    documents: &[serde_json::Value],
    read: impl Fn(&serde_json::Value) -> Result<T, String>,
) -> Result<Vec<T>, ApiError> {
    if documents.is_empty() {
        return Err(ApiError::bad_request("no documents to apply", "the file holds no objects"));
    }
    documents
        .iter()
        .enumerate()
        .map(|(i, v)| {
            read(v).map_err(|e| {
                ApiError::bad_request(format!("document {} is invalid, nothing was applied", i + 1), e)
            })
        })
        .collect()
}

pub fn dispatch(agent: &Agent, req: Request) -> Response {
    let r = match req {
        Request::Add(r) => endpoint::add(agent, r).map(ok),
        Request::Del(r) => crate::removal::del(agent, r).map(|_| ok(())),
        Request::Check(r) => endpoint::check(agent, r).map(|_| ok(())),
        Request::Gc(r) => Ok(ok(GcResult { released: endpoint::gc(agent, &r.network, &r.valid) })),
        Request::Status => cni_status(agent).map(|_| ok(())),
        Request::EndpointList => Ok(ok(endpoints(agent))),
        Request::BpfEndpointList => bpf_endpoints(agent).map(ok),
        Request::IdentityList => identities(agent).map(ok),
        Request::NodeList => nodes(agent).map(ok),
        Request::BpfIpcacheList => ipcache(agent).map(ok),
        Request::BpfCtList => crate::conntrack::list(agent).map(ok),
        Request::BpfNatList => crate::nat::list(agent).map(ok),
        Request::BpfCtFlush => crate::conntrack::flush(agent).map(ok),
        Request::PolicyApply(r) => crate::policy::objects::apply(agent, &r).map(ok),
        Request::PolicyList => Ok(ok(crate::policy::list(agent))),
        Request::PolicyGet(n) => crate::policy::objects::get(agent, &n).map(ok),
        Request::PolicyDelete(n) => crate::policy::objects::delete(agent, &n).map(|_| ok(())),
        Request::PolicySelectors => Ok(ok(crate::policy::selectors(agent))),
        Request::NamespaceLabel(r) => crate::policy::objects::label_namespace(agent, &r).map(ok),
        Request::NamespaceList => Ok(ok(crate::policy::namespaces(agent))),
        Request::BpfPolicyGet(r) => crate::policy::bpf_get(agent, r.endpoint).map(ok),
        Request::BpfLbList => lb_list(agent).map(ok),
        Request::ServiceApply(r) => crate::services::apply(agent, &r.documents).map(ok),
        Request::ServiceList => Ok(ok(crate::services::list(agent))),
        Request::ServiceDelete(n) => crate::services::delete(agent, &n).map(|_| ok(())),
        Request::AgentStatus => Ok(ok(status(agent))),
        Request::PodPorts(p) => crate::policy::objects::set_pod_ports(agent, &p).map(|_| ok(())),
        Request::PodLabels(p) => pod_labels_valid(&p).and_then(|_| label_pod(agent, &p)).map(ok),
        Request::Monitor(_) => unreachable!("handled before dispatch"),
    };
    r.unwrap_or_else(Response::Error)
}

/// Stores the pod's new labels, then moves its endpoints on this node to
/// the new identity at once (other nodes follow the store).
fn label_pod(agent: &Agent, p: &weft_api::PodLabels) -> Result<weft_api::PodLabelsResult, ApiError> {
    let labels =
        crate::relabel::edit_stored(agent.store.as_ref(), &p.namespace, &p.name, &p.labels, &p.remove)
            .map_err(|e| ApiError::new(code::INTERNAL, "storing pod labels failed", e.to_string()))?;
    let relabelled = crate::relabel::apply(agent, &p.namespace, &p.name, &labels)?;
    Ok(weft_api::PodLabelsResult { labels, relabelled })
}

/// Kubernetes names and labels only: they become store keys and identities.
fn pod_labels_valid(p: &weft_api::PodLabels) -> Result<(), ApiError> {
    use weft_api::validate as v;
    let bad = |e: v::Invalid| ApiError::new(code::BAD_REQUEST, "invalid pod labels", e.to_string());
    v::pod_namespace(&p.namespace).map_err(bad)?;
    v::pod_name(&p.name).map_err(bad)?;
    p.labels.iter().try_for_each(|(k, val)| v::label(k, val)).map_err(bad)?;
    p.remove.iter().try_for_each(|k| v::label(k, "")).map_err(bad)
}

/// CNI STATUS: the node can serve ADD when it has free addresses.
fn cni_status(agent: &Agent) -> Result<(), ApiError> {
    let inner = agent.pods();
    if inner.ipam.in_use() >= inner.ipam.capacity() {
        return Err(ApiError::new(
            code::NOT_READY,
            "no free pod addresses",
            format!("all {} addresses of {} are in use", inner.ipam.capacity(), agent.pod_cidr),
        ));
    }
    Ok(())
}

fn endpoints(agent: &Agent) -> Vec<EndpointView> {
    let records: Vec<_> = agent.pods().endpoints.values().cloned().collect();
    records
        .iter()
        .map(|r| EndpointView {
            id: r.id,
            identity: r.identity,
            labels: r.labels.clone(),
            ipv4: r.ip,
            mac: mac_string(&r.pod_mac),
            ifname: r.host_ifname.clone(),
            container_id: r.container_id.clone(),
            netns: r.netns.clone(),
            // The journal's phase; a ready pod whose device vanished is not.
            policy_ingress: policy_text(agent, r.id, true),
            policy_egress: policy_text(agent, r.id, false),
            state: match r.phase {
                crate::journal::Phase::Ready if weft_net::ifindex(&r.host_ifname).is_none() => {
                    "not-ready".into()
                }
                p => p.name().into(),
            },
        })
        .collect()
}

/// `weft bpf lb list`: the service maps as the kernel holds them.
fn lb_list(agent: &Agent) -> Result<Vec<weft_api::LbView>, ApiError> {
    use weft_datapath::maps::{LB_F_AFFINITY, LB_F_LOCAL, LB_F_MAGLEV, LB_F_NODEPORT, LB_F_SNAT};
    let err = |e: weft_datapath::Error| {
        ApiError::new(code::DATAPATH, "reading the service maps failed", e.to_string())
    };
    let maps = weft_datapath::lb::ServiceMaps::open(&agent.cfg.bpffs).map_err(err)?;
    let proto = weft_api::proto_name;
    Ok(maps
        .list()
        .map_err(err)?
        .into_iter()
        .map(|(fe, info, backends)| weft_api::LbView {
            frontend: format!("{}:{}/{}", fe.address, fe.port, proto(fe.proto)),
            rev_nat_id: info.rev_nat_id,
            flags: [
                (LB_F_NODEPORT, "nodeport"),
                (LB_F_AFFINITY, "affinity"),
                (LB_F_LOCAL, "local"),
                (LB_F_SNAT, "snat"),
                (LB_F_MAGLEV, "maglev"),
            ]
            .iter()
            .filter(|(bit, _)| info.flags & bit != 0)
            .map(|(_, n)| n.to_string())
            .collect(),
            backends: backends.iter().map(|b| format!("{}:{} (id {})", b.address, b.port, b.id)).collect(),
        })
        .collect())
}

/// An endpoint's enforcement in one direction, for `weft endpoint list`.
fn policy_text(agent: &Agent, ep: u16, ingress: bool) -> String {
    let st = agent.policy.endpoint(ep);
    let on = if ingress { st.ingress } else { st.egress };
    let base = if on { "Enabled" } else { "Disabled" };
    match st.error {
        Some(e) => format!("{base} (last good; {e})"),
        None => base.into(),
    }
}

fn bpf_endpoints(agent: &Agent) -> Result<Vec<BpfEndpointView>, ApiError> {
    let list = agent
        .dp()
        .list_endpoints()
        .map_err(|e| ApiError::new(code::DATAPATH, "reading weft_endpoints failed", e.to_string()))?;
    Ok(list
        .into_iter()
        .map(|(ip, v)| BpfEndpointView {
            ip,
            id: v.ep_id,
            identity: v.sec_identity,
            ifindex: v.ifindex,
            mac: mac_string(&v.mac),
            node_mac: mac_string(&v.node_mac),
            host: v.flags & weft_datapath::maps::ENDPOINT_F_HOST != 0,
        })
        .collect())
}

fn nodes(agent: &Agent) -> Result<Vec<NodeView>, ApiError> {
    let list = if agent.cluster {
        crate::cluster::live_nodes(agent.store.as_ref())
            .map_err(|e| ApiError::new(code::INTERNAL, "reading nodes from the store failed", e))?
    } else {
        vec![agent.node_record()]
    };
    Ok(list
        .into_iter()
        .map(|n| NodeView {
            local: n.name == agent.cfg.node_name,
            name: n.name,
            ip: n.ip,
            pod_cidr: n.pod_cidr.to_string(),
        })
        .collect())
}

fn ipcache(agent: &Agent) -> Result<Vec<IpcacheView>, ApiError> {
    let list = agent
        .dp()
        .list_ipcache()
        .map_err(|e| ApiError::new(code::DATAPATH, "reading weft_ipcache failed", e.to_string()))?;
    Ok(list
        .into_iter()
        .map(|(ip, p, v)| IpcacheView {
            prefix: format!("{ip}/{p}"),
            identity: v.sec_identity,
            tunnel_endpoint: weft_datapath::maps::be_to_ip(v.tunnel_endpoint),
            node: v.flags & weft_datapath::maps::IPCACHE_F_NODE != 0,
        })
        .collect())
}

fn identities(agent: &Agent) -> Result<Vec<IdentityView>, ApiError> {
    let list = agent
        .identities
        .list()
        .map_err(|e| ApiError::new(code::INTERNAL, "reading identities failed", e.to_string()))?;
    let inner = agent.pods();
    Ok(list
        .into_iter()
        .map(|(id, labels)| IdentityView {
            id,
            labels,
            reserved: id < weft_store::identity::FIRST_ALLOCATED,
            endpoints: inner.endpoints.values().filter(|e| e.identity == id).count(),
        })
        .collect())
}

fn status(agent: &Agent) -> AgentStatus {
    let monitors = agent.monitor.count();
    let owed_removals = crate::removal::owed(agent);
    let (endpoints, ipam_allocated, ipam_capacity) = {
        let pods = agent.pods();
        (pods.endpoints.len(), pods.ipam.in_use(), pods.ipam.capacity())
    };
    let mut dp = agent.dp();
    let attached = dp.is_attached(crate::node::HOST_DEV, weft_datapath::Hook::Egress);
    let plan = dp.attach_mode();
    let eps = dp.list_endpoints().map(|l| l.len()).unwrap_or(0);
    let lxc = dp.lxc().map(|m| m.keys().count()).unwrap_or(0);
    let ipc = dp.list_ipcache().map(|l| l.len()).unwrap_or(0);
    let drops: Vec<(u8, u64)> = dp.drop_counts().unwrap_or_default();
    let ct = agent.ct.status();
    let refused =
        drops.iter().find(|(r, _)| *r == weft_datapath::events::DROP_CT_CREATE_FAILED).map_or(0, |d| d.1);
    let count = |reason: u8| drops.iter().find(|(r, _)| *r == reason).map_or(0, |d| d.1);
    let nat_refused =
        count(weft_datapath::events::DROP_NAT_NO_PORT) + count(weft_datapath::events::DROP_NAT_TABLE_FULL);
    let warnings: Vec<String> = ct.warning(refused).into_iter().chain(ct.nat_warning(nat_refused)).collect();
    AgentStatus {
        node: agent.cfg.node_name.clone(),
        node_ip: agent.node_ip,
        mode: if agent.cluster { agent.mode.name().into() } else { "single node".into() },
        pod_mtu: agent.pod_mtu,
        pod_cidr: agent.pod_cidr.to_string(),
        gateway: agent.gateway,
        datapath_attached: attached,
        attach_node: plan.node.name().into(),
        attach_pods: plan.pods.name().into(),
        adopted_pins: dp.adopted(),
        pin_dir: dp.dir().display().to_string(),
        maps: vec![
            MapStatus { name: "weft_endpoints".into(), entries: eps, max_entries: 65536 },
            MapStatus { name: "weft_lxc".into(), entries: lxc, max_entries: 65536 },
            MapStatus { name: "weft_ipcache".into(), entries: ipc, max_entries: 65536 },
            MapStatus {
                name: "weft_ct_tcp".into(),
                entries: ct.tcp_live as usize,
                max_entries: ct.tcp_limit as u32,
            },
            MapStatus {
                name: "weft_ct_any".into(),
                entries: ct.any_live as usize,
                max_entries: ct.any_limit as u32,
            },
        ],
        drops: drops
            .into_iter()
            .map(|(r, n)| (format!("{} ({r})", weft_datapath::events::drop_reason_text(r)), n))
            .collect(),
        warnings,
        endpoints,
        ipam_allocated,
        ipam_capacity,
        store: agent.store.describe(),
        monitors,
        owed_removals,
        removals_in_progress: agent.removals.in_progress(),
    }
}
