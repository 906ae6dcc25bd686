//! The local API: a unix socket, one thread per connection, one JSON request
//! line in, one JSON response line out (or a stream for `monitor`).

use crate::{endpoint, state::Agent};
use serde::Serialize;
use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    sync::Arc,
    time::Duration,
};
use weft_api::{
    AgentStatus, ApiError, BpfEndpointView, EndpointView, GcResult, IdentityView, IpcacheView, MapStatus,
    NodeView, Request, Response, code,
};
use weft_net::mac_string;

pub fn serve(agent: Arc<Agent>) -> Result<(), String> {
    let path = &agent.cfg.socket;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // A socket file left by a killed agent would make bind fail.
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    log::info!("listening on {}", path.display());
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let agent = agent.clone();
                std::thread::spawn(move || handle(agent, stream));
            }
            Err(e) => log::warn!("accept: {e}"),
        }
    }
    Ok(())
}

fn handle(agent: Arc<Agent>, stream: UnixStream) {
    let mut line = String::new();
    let Ok(reader) = stream.try_clone() else { return };
    if BufReader::new(reader).read_line(&mut line).is_err() || line.trim().is_empty() {
        return;
    }
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let err = ApiError::new(code::BAD_REQUEST, "cannot decode request", e.to_string());
            reply(stream, Response::Error(err));
            return;
        }
    };
    if let Request::Monitor(m) = req {
        stream_events(&agent, stream, m.debug);
        return;
    }
    reply(stream, dispatch(&agent, req));
}

fn ok<T: Serialize>(v: T) -> Response {
    Response::Ok(serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
}

fn dispatch(agent: &Agent, req: Request) -> Response {
    let r = match req {
        Request::Add(r) => endpoint::add(agent, r).map(ok),
        Request::Del(r) => endpoint::del(agent, r).map(|_| ok(())),
        Request::Check(r) => endpoint::check(agent, r).map(|_| ok(())),
        Request::Gc(r) => Ok(ok(GcResult { released: endpoint::gc(agent, &r.network, &r.valid) })),
        Request::Status => cni_status(agent).map(|_| ok(())),
        Request::EndpointList => Ok(ok(endpoints(agent))),
        Request::BpfEndpointList => bpf_endpoints(agent).map(ok),
        Request::IdentityList => identities(agent).map(ok),
        Request::NodeList => nodes(agent).map(ok),
        Request::BpfIpcacheList => ipcache(agent).map(ok),
        Request::AgentStatus => Ok(ok(status(agent))),
        Request::PodLabels(p) => {
            let key = weft_store::identity::pod_labels_key(&p.namespace, &p.name);
            weft_store::put_json(agent.store.as_ref(), &key, &p.labels)
                .map(|_| ok(()))
                .map_err(|e| ApiError::new(code::INTERNAL, "storing pod labels failed", e.to_string()))
        }
        Request::Monitor(_) => unreachable!("handled before dispatch"),
    };
    r.unwrap_or_else(Response::Error)
}

fn reply(mut stream: UnixStream, resp: Response) {
    if let Ok(mut s) = serde_json::to_vec(&resp) {
        s.push(b'\n');
        let _ = stream.write_all(&s);
    }
}

/// CNI STATUS: the node can serve ADD when it has free addresses.
fn cni_status(agent: &Agent) -> Result<(), ApiError> {
    let inner = agent.lock();
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
    let inner = agent.lock();
    inner
        .endpoints
        .values()
        .map(|r| EndpointView {
            id: r.id,
            identity: r.identity,
            labels: r.labels.clone(),
            ipv4: r.ip,
            mac: mac_string(&r.pod_mac),
            ifname: r.host_ifname.clone(),
            container_id: r.container_id.clone(),
            netns: r.netns.clone(),
            state: if weft_net::ifindex(&r.host_ifname).is_some() {
                "ready".into()
            } else {
                "not-ready".into()
            },
        })
        .collect()
}

fn bpf_endpoints(agent: &Agent) -> Result<Vec<BpfEndpointView>, ApiError> {
    let mut inner = agent.lock();
    let list = inner
        .dp
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
        .lock()
        .dp
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
    let inner = agent.lock();
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
    let mut inner = agent.lock();
    let attached = inner.dp.is_attached(crate::node::HOST_DEV, weft_datapath::Hook::Egress);
    let eps = inner.dp.list_endpoints().map(|l| l.len()).unwrap_or(0);
    let lxc = inner.dp.lxc().map(|m| m.keys().count()).unwrap_or(0);
    let ipc = inner.dp.list_ipcache().map(|l| l.len()).unwrap_or(0);
    AgentStatus {
        node: agent.cfg.node_name.clone(),
        node_ip: agent.node_ip,
        mode: if agent.cluster { agent.mode.name().into() } else { "single node".into() },
        pod_mtu: agent.pod_mtu,
        pod_cidr: agent.pod_cidr.to_string(),
        gateway: agent.gateway,
        datapath_attached: attached,
        adopted_pins: inner.dp.adopted(),
        pin_dir: inner.dp.dir().display().to_string(),
        maps: vec![
            MapStatus { name: "weft_endpoints".into(), entries: eps, max_entries: 65536 },
            MapStatus { name: "weft_lxc".into(), entries: lxc, max_entries: 65536 },
            MapStatus { name: "weft_ipcache".into(), entries: ipc, max_entries: 65536 },
        ],
        endpoints: inner.endpoints.len(),
        ipam_allocated: inner.ipam.in_use(),
        ipam_capacity: inner.ipam.capacity(),
        store: agent.store.describe(),
        monitors,
    }
}

/// Streams events until the client hangs up.
fn stream_events(agent: &Agent, mut stream: UnixStream, debug: bool) {
    let (id, rx) = agent.monitor.subscribe(debug);
    agent.sync_monitor_flags();
    agent.monitor.set_live(true);
    let mut probe = stream.try_clone().ok();
    if let Some(p) = &probe {
        let _ = p.set_nonblocking(true);
    }
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                if stream.write_all(line.as_bytes()).is_err() || stream.write_all(b"\n").is_err() {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // A closed peer reads as EOF.
                let mut b = [0u8; 1];
                if let Some(p) = probe.as_mut()
                    && let Ok(0) = p.read(&mut b)
                {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    agent.monitor.set_live(false);
    agent.monitor.unsubscribe(id);
    agent.sync_monitor_flags();
}
