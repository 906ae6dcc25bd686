//! Operator views of one node, read from its agent.

use crate::{Format, table};
use weft_api::{
    AgentStatus, BpfEndpointView, BpfPolicyGet, BpfPolicyView, Client, CtFlushResult, CtView, EndpointView,
    IdentityView, IpcacheView, LbView, NamespaceLabel, NamespaceView, NatView, NodeView, PolicyApply,
    PolicyApplyResult, PolicyName, PolicyView, Request, SelectorView,
};

type R = Result<(), String>;

fn json(v: &impl serde::Serialize) -> R {
    println!("{}", serde_json::to_string_pretty(v).map_err(|e| e.to_string())?);
    Ok(())
}

pub fn status(c: &Client, f: Format) -> R {
    let s: AgentStatus = c.call_as(&Request::AgentStatus).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&s);
    }
    println!("Node:          {} ({})", s.node, s.node_ip);
    println!("Routing:       {} (pod MTU {})", s.mode, s.pod_mtu);
    println!("Store:         {}", s.store);
    println!(
        "Datapath:      {} (node devices {}, pod devices {}; pins in {}{})",
        if s.datapath_attached { "attached" } else { "NOT attached" },
        s.attach_node,
        s.attach_pods,
        s.pin_dir,
        if s.adopted_pins { ", adopted from a previous agent" } else { "" }
    );
    println!("IPAM:          IPv4: {}/{} allocated from {}", s.ipam_allocated, s.ipam_capacity, s.pod_cidr);
    println!("Gateway:       {}", s.gateway);
    println!("Endpoints:     {}", s.endpoints);
    if s.owed_removals > 0 {
        println!(
            "Warning:       {} deleted pods still wait for the store to forget them (addresses reserved; retried every second)",
            s.owed_removals
        );
    }
    println!("Monitors:      {}", s.monitors);
    for w in &s.warnings {
        println!("Warning:       {w}");
    }
    println!("Maps:");
    for m in s.maps {
        println!("  {:<16} {}/{}", m.name, m.entries, m.max_entries);
    }
    if !s.drops.is_empty() {
        println!("Drops:");
        for (reason, n) in &s.drops {
            println!("  {reason:<48} {n}");
        }
    }
    Ok(())
}

pub fn endpoints(c: &Client, f: Format) -> R {
    let eps: Vec<EndpointView> = c.call_as(&Request::EndpointList).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&eps);
    }
    let rows: Vec<Vec<String>> = eps
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.policy_ingress.clone(),
                e.policy_egress.clone(),
                e.identity.to_string(),
                e.labels.join("\n"),
                e.ipv4.to_string(),
                e.mac.clone(),
                e.ifname.clone(),
                e.state.clone(),
            ]
        })
        .collect();
    table::print(
        &[
            "ENDPOINT",
            "POLICY (ingress)",
            "POLICY (egress)",
            "IDENTITY",
            "LABELS (source:key[=value])",
            "IPv4",
            "MAC",
            "IFNAME",
            "STATUS",
        ],
        &rows,
    );
    Ok(())
}

pub fn identities(c: &Client, f: Format) -> R {
    let ids: Vec<IdentityView> = c.call_as(&Request::IdentityList).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&ids);
    }
    let rows: Vec<Vec<String>> =
        ids.iter().map(|i| vec![i.id.to_string(), i.labels.join("\n"), i.endpoints.to_string()]).collect();
    table::print(&["ID", "LABELS", "ENDPOINTS"], &rows);
    Ok(())
}

pub fn bpf_endpoints(c: &Client, f: Format) -> R {
    let eps: Vec<BpfEndpointView> = c.call_as(&Request::BpfEndpointList).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&eps);
    }
    let rows: Vec<Vec<String>> = eps
        .iter()
        .map(|e| {
            let info = if e.host {
                "(localhost)".to_string()
            } else {
                format!(
                    "id={:<5} sec_id={:<6} ifindex={:<4} mac={} nodemac={}",
                    e.id, e.identity, e.ifindex, e.mac, e.node_mac
                )
            };
            vec![format!("{}:0", e.ip), info]
        })
        .collect();
    table::print(&["IP ADDRESS", "LOCAL ENDPOINT INFO"], &rows);
    Ok(())
}

pub fn label_pod(c: &Client, pod: &str, labels: &[String]) -> R {
    let (ns, name) = pod.split_once('/').ok_or_else(|| format!("pod must be NAMESPACE/NAME, got {pod:?}"))?;
    let (mut set, mut remove) = (std::collections::BTreeMap::new(), Vec::new());
    for l in labels {
        match weft_agent::relabel::parse_edit(l)? {
            weft_agent::relabel::Edit::Set(k, v) => {
                set.insert(k, v);
            }
            weft_agent::relabel::Edit::Remove(k) => remove.push(k),
        }
    }
    let r: weft_api::PodLabelsResult = c
        .call_as(&Request::PodLabels(weft_api::PodLabels {
            namespace: ns.to_string(),
            name: name.to_string(),
            labels: set,
            remove,
        }))
        .map_err(|e| e.to_string())?;
    let shown: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{pod}: {} ({} endpoint(s) on this node relabelled)", shown.join(" "), r.relabelled);
    Ok(())
}

pub fn nodes(c: &Client, f: Format) -> R {
    let nodes: Vec<NodeView> = c.call_as(&Request::NodeList).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&nodes);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let name = if n.local { format!("{} (local)", n.name) } else { n.name.clone() };
            vec![name, n.ip.to_string(), n.pod_cidr.clone()]
        })
        .collect();
    table::print(&["NAME", "IPv4 ADDRESS", "POD CIDR"], &rows);
    Ok(())
}

pub fn ct_list(c: &Client, f: Format) -> R {
    let entries: Vec<CtView> = c.call_as(&Request::BpfCtList).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&entries);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.endpoint.to_string(),
                e.scope.clone(),
                e.proto.clone(),
                format!("{} -> {}", e.src, e.dst),
                e.state.clone(),
                e.expires_in.to_string(),
                format!("{}/{}", e.tx_packets, e.tx_bytes),
                format!("{}/{}", e.rx_packets, e.rx_bytes),
                e.peer_identity.to_string(),
            ]
        })
        .collect();
    table::print(
        &[
            "ENDPOINT",
            "SCOPE",
            "PROTO",
            "FLOW",
            "STATE",
            "EXPIRES(s)",
            "TX pkts/bytes",
            "RX pkts/bytes",
            "PEER ID",
        ],
        &rows,
    );
    Ok(())
}

pub fn nat_list(c: &Client, f: Format) -> R {
    let flows: Vec<NatView> = c.call_as(&Request::BpfNatList).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&flows);
    }
    let rows: Vec<Vec<String>> = flows
        .iter()
        .map(|n| {
            let kind = if n.rev_nat_id != 0 {
                format!("{} (revnat {})", n.kind, n.rev_nat_id)
            } else {
                n.kind.clone()
            };
            vec![
                kind,
                n.proto.clone(),
                format!("{} -> {}", n.src, n.dst),
                n.translated.clone(),
                n.state.clone(),
                n.expires_in.to_string(),
            ]
        })
        .collect();
    table::print(&["KIND", "PROTO", "FLOW", "LEAVES AS", "STATE", "EXPIRES(s)"], &rows);
    Ok(())
}

/// `weft policy apply` and `weft service apply`: the file's objects, sent
/// in one `request`; the agent answers one line per object.
pub fn apply(c: &Client, file: &std::path::Path, f: Format, request: fn(PolicyApply) -> Request) -> R {
    let documents = read_objects(file)?;
    let r: PolicyApplyResult = c.call_as(&request(PolicyApply { documents })).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&r);
    }
    r.results.iter().for_each(|l| println!("{l}"));
    Ok(())
}

/// A YAML or JSON file's objects, for the apply commands.
fn read_objects(file: &std::path::Path) -> Result<Vec<serde_json::Value>, String> {
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| format!("reading stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?
    };
    weft_k8s::text::objects(&text).map_err(|e| format!("{}: {e}", file.display()))
}

pub fn service_list(c: &Client, f: Format) -> R {
    let list: Vec<weft_api::ServiceView> = c.call_as(&Request::ServiceList).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.namespace.clone(),
                s.name.clone(),
                s.kind.clone(),
                s.cluster_ip.clone(),
                s.frontends.join("\n"),
            ]
        })
        .collect();
    table::print(&["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "FRONTENDS -> BACKENDS"], &rows);
    Ok(())
}

pub fn service_delete(c: &Client, n: weft_api::ServiceName) -> R {
    let what = n.name.clone();
    let _: () = c.call_as(&Request::ServiceDelete(n)).map_err(|e| e.to_string())?;
    println!("{what} deleted");
    Ok(())
}

pub fn policy_list(c: &Client, f: Format) -> R {
    let list: Vec<PolicyView> = c.call_as(&Request::PolicyList).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            vec![
                p.kind.clone(),
                p.namespace.clone().unwrap_or_else(|| "-".into()),
                p.name.clone(),
                p.tier.clone(),
                p.order.map(|o| o.to_string()).unwrap_or_else(|| "-".into()),
                p.types.join(","),
                p.endpoints.to_string(),
                p.refused.clone().map(|r| format!("REFUSED: {r}")).unwrap_or_default(),
            ]
        })
        .collect();
    table::print(&["KIND", "NAMESPACE", "NAME", "TIER", "ORDER", "TYPES", "ENDPOINTS", ""], &rows);
    Ok(())
}

pub fn policy_selectors(c: &Client, f: Format) -> R {
    let list: Vec<SelectorView> = c.call_as(&Request::PolicySelectors).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let ids: Vec<String> = s.identities.iter().map(|i| i.to_string()).collect();
            vec![
                s.used_by.clone(),
                s.selector.clone(),
                if ids.is_empty() { "<none>".into() } else { ids.join(" ") },
            ]
        })
        .collect();
    table::print(&["USED BY", "SELECTOR", "IDENTITIES"], &rows);
    Ok(())
}

pub fn policy_get(c: &Client, n: PolicyName) -> R {
    let v: serde_json::Value = c.call_as(&Request::PolicyGet(n)).map_err(|e| e.to_string())?;
    json(&v)
}

pub fn policy_delete(c: &Client, n: PolicyName) -> R {
    let what = n.name.clone();
    let _: () = c.call_as(&Request::PolicyDelete(n)).map_err(|e| e.to_string())?;
    println!("{what} deleted");
    Ok(())
}

pub fn namespace_label(c: &Client, name: String, labels: Vec<String>) -> R {
    let l: std::collections::BTreeMap<String, String> = c
        .call_as(&Request::NamespaceLabel(NamespaceLabel { name: name.clone(), labels }))
        .map_err(|e| e.to_string())?;
    let text: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("namespace {name}: {}", if text.is_empty() { "<no labels>".into() } else { text.join(",") });
    Ok(())
}

pub fn namespace_list(c: &Client, f: Format) -> R {
    let list: Vec<NamespaceView> = c.call_as(&Request::NamespaceList).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|n| {
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![n.name.clone(), n.id.to_string(), labels.join("\n")]
        })
        .collect();
    table::print(&["NAMESPACE", "ID", "LABELS"], &rows);
    Ok(())
}

pub fn bpf_policy(c: &Client, endpoint: u16, f: Format) -> R {
    let v: BpfPolicyView =
        c.call_as(&Request::BpfPolicyGet(BpfPolicyGet { endpoint })).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&v);
    }
    let onoff = |b: bool| if b { "enforced" } else { "not enforced" };
    println!(
        "Endpoint {}: ingress {}, egress {}",
        v.endpoint,
        onoff(v.ingress_enforced),
        onoff(v.egress_enforced)
    );
    let rows: Vec<Vec<String>> = v
        .entries
        .iter()
        .map(|e| {
            vec![
                e.direction.clone(),
                e.peer.clone(),
                e.cidr.clone().unwrap_or_else(|| "-".into()),
                e.proto.clone(),
                e.ports.clone(),
                if e.log { format!("{} (log)", e.action) } else { e.action.clone() },
                e.rule.clone(),
            ]
        })
        .collect();
    table::print(&["DIRECTION", "PEER", "CIDR", "PROTO", "PORTS", "ACTION", "RULE"], &rows);
    Ok(())
}

pub fn lb_list(c: &Client, f: Format) -> R {
    let list: Vec<LbView> = c.call_as(&Request::BpfLbList).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|l| {
            let backends =
                if l.backends.is_empty() { "<none: rejected>".into() } else { l.backends.join("\n") };
            vec![l.frontend.clone(), l.rev_nat_id.to_string(), l.flags.join(","), backends]
        })
        .collect();
    table::print(&["SERVICE ADDRESS", "REVNAT", "FLAGS", "BACKEND ADDRESS"], &rows);
    Ok(())
}

pub fn ct_flush(c: &Client, f: Format) -> R {
    let r: CtFlushResult = c.call_as(&Request::BpfCtFlush).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&r);
    }
    println!("Flushed {} conntrack entries", r.deleted);
    Ok(())
}

pub fn ipcache(c: &Client, f: Format) -> R {
    let entries: Vec<IpcacheView> = c.call_as(&Request::BpfIpcacheList).map_err(|e| e.to_string())?;
    if f == Format::Json {
        return json(&entries);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let flags = if e.node { "node" } else { "<none>" };
            vec![
                e.prefix.clone(),
                format!("identity={} tunnelendpoint={} flags={flags}", e.identity, e.tunnel_endpoint),
            ]
        })
        .collect();
    table::print(&["IP PREFIX/ADDRESS", "IDENTITY"], &rows);
    Ok(())
}
