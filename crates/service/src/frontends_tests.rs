//! Tests of [`ServiceTable`]: frontends, selection per traffic policy,
//! stable ids and incremental updates.

use super::*;
use crate::{ServiceDocument, maglev::MAGLEV_SMALL};
use serde_json::{Value, json};

const NODE: &str = "node1";

fn service(name: &str, spec: Value) -> Service {
    Service::from_json(&json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"}, "spec": spec}))
    .unwrap_or_else(|e| panic!("service: {e}"))
}

fn slice(name: &str, service: &str, endpoints: Value, ports: Value) -> EndpointSlice {
    EndpointSlice::from_json(&json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "shop", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports}))
    .unwrap_or_else(|e| panic!("slice: {e}"))
}

/// An endpoint: address, node, and conditions (`{}` = all unknown).
fn ep(ip: &str, node: &str, conditions: Value) -> Value {
    json!({"addresses": [ip], "nodeName": node, "conditions": conditions})
}

fn ready() -> Value {
    json!({"ready": true, "serving": true, "terminating": false})
}

fn draining() -> Value {
    json!({"ready": false, "serving": true, "terminating": true})
}

fn unready() -> Value {
    json!({"ready": false, "serving": false, "terminating": false})
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("shop", name)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

/// (address, port) of a frontend's backends.
fn addrs(f: &ServiceFrontend) -> Vec<(String, u16)> {
    f.backends.iter().map(|b| (b.ip.to_string(), b.port)).collect()
}

fn web_node_port(spec_extra: Value) -> Service {
    let mut spec = json!({"type": "NodePort", "clusterIP": "10.96.1.1",
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]});
    if let (Value::Object(spec), Value::Object(extra)) = (&mut spec, spec_extra) {
        spec.extend(extra);
    }
    service("web", spec)
}

/// Two local endpoints (one ready, one draining), two remote (ready, unready).
fn web_slice(local_ready: bool) -> EndpointSlice {
    let first = if local_ready { ready() } else { unready() };
    slice(
        "web-a",
        "web",
        json!([
            ep("10.244.1.2", NODE, first),
            ep("10.244.1.3", NODE, draining()),
            ep("10.244.2.2", "node2", ready()),
            ep("10.244.2.3", "node2", unready())
        ]),
        json!([{"name": "http", "port": 8080}]),
    )
}

fn table_with(services: Vec<Service>, slices: Vec<EndpointSlice>) -> ServiceTable {
    let mut t = ServiceTable::new(NODE);
    for s in services {
        t.upsert_service(s).expect("ids");
    }
    for s in slices {
        t.upsert_slice(s).expect("ids");
    }
    t
}

#[test]
fn cluster_ip_frontends_take_ready_endpoints_by_port_name() {
    let svc = service(
        "web",
        json!({"clusterIP": "10.96.1.1", "ports": [
        {"name": "http", "port": 80, "targetPort": "http"}, {"name": "metrics", "port": 9100, "targetPort": 9090}]}),
    );
    let sl = slice(
        "web-a",
        "web",
        json!([
            ep("10.244.1.2", NODE, ready()),
            ep("10.244.2.2", "node2", json!({})),
            ep("10.244.2.3", "node2", unready())
        ]),
        json!([{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}]),
    );
    let t = table_with(vec![svc], vec![sl]);
    let fes = t.frontends_of(&key("web"));
    assert_eq!(fes.len(), 2);
    let http = &fes[0];
    assert_eq!(http.frontend, Frontend::ClusterIp { ip: ip("10.96.1.1"), port: 80, protocol: Protocol::Tcp });
    assert_eq!(http.port_name, "http");
    assert_eq!(addrs(http), [("10.244.1.2".into(), 8080), ("10.244.2.2".into(), 8080)]);
    assert_eq!(
        (http.action, http.traffic_policy, http.terminating_fallback),
        (Action::Forward, TrafficPolicy::Cluster, false)
    );
    assert!(http.keep_client_address && !http.snat_remote_backends);
    assert_eq!(http.affinity_timeout, None);
    assert_eq!(http.backends.iter().map(|b| b.local).collect::<Vec<_>>(), [true, false]);
    // Unknown conditions read as ready and serving.
    assert!(http.backends[1].ready && http.backends[1].serving && !http.backends[1].terminating);
    assert_eq!(addrs(&fes[1]), [("10.244.1.2".into(), 9090), ("10.244.2.2".into(), 9090)]);
    assert_eq!(
        fes[1].frontend,
        Frontend::ClusterIp { ip: ip("10.96.1.1"), port: 9100, protocol: Protocol::Tcp }
    );
    assert_ne!(fes[0].id, fes[1].id);
    assert_eq!(http.backend_slots(), http.backends.iter().map(|b| b.id).collect::<Vec<_>>());
}

#[test]
fn named_target_port_resolves_per_endpoint() {
    // Pods of one service listen on "http" at different numbers; the
    // controller puts them in two slices, each with its own number.
    let svc = service(
        "web",
        json!({"clusterIP": "10.96.1.1", "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
    );
    let a = slice(
        "web-a",
        "web",
        json!([ep("10.244.1.2", NODE, ready())]),
        json!([{"name": "http", "port": 8080}]),
    );
    let b = slice(
        "web-b",
        "web",
        json!([ep("10.244.2.2", "node2", ready())]),
        json!([{"name": "http", "port": 9090}]),
    );
    let t = table_with(vec![svc], vec![a, b]);
    let fes = t.frontends_of(&key("web"));
    assert_eq!(addrs(&fes[0]), [("10.244.1.2".into(), 8080), ("10.244.2.2".into(), 9090)]);
}

#[test]
fn ports_join_by_name_and_protocol() {
    let svc = service(
        "dns",
        json!({"clusterIP": "10.96.0.10", "ports": [
        {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53}]}),
    );
    let sl = slice(
        "dns-a",
        "dns",
        json!([ep("10.244.1.9", NODE, ready())]),
        // "dns-tcp" is UDP here: the TCP service port of that name gets nothing.
        json!([{"name": "dns", "port": 5353, "protocol": "UDP"}, {"name": "dns-tcp", "port": 5354, "protocol": "UDP"}]),
    );
    let t = table_with(vec![svc], vec![sl]);
    let fes = t.frontends_of(&key("dns"));
    assert_eq!(addrs(&fes[0]), [("10.244.1.9".into(), 5353)]);
    assert_eq!(fes[0].backends[0].protocol, Protocol::Udp);
    assert!(fes[1].backends.is_empty());
    assert_eq!(fes[1].action, Action::Reject);
}

#[test]
fn headless_and_unallocated_services_have_no_frontend() {
    let headless = service("db", json!({"clusterIP": "None", "ports": [{"port": 5432}]}));
    let pending = service("new", json!({"ports": [{"port": 80}]}));
    let sl = slice("db-a", "db", json!([ep("10.244.1.5", NODE, ready())]), json!([{"port": 5432}]));
    let t = table_with(vec![headless, pending], vec![sl]);
    assert!(t.frontends_of(&key("db")).is_empty());
    assert!(t.frontends_of(&key("new")).is_empty());
    assert!(t.frontends_of(&key("nothing")).is_empty());
}

#[test]
fn no_endpoints_rejects() {
    let t = table_with(vec![web_node_port(json!({}))], vec![]);
    let fes = t.frontends_of(&key("web"));
    assert_eq!(fes.len(), 2);
    assert!(fes.iter().all(|f| f.backends.is_empty() && f.action == Action::Reject));
    // Only unready endpoints: the same.
    let sl = slice(
        "web-a",
        "web",
        json!([ep("10.244.2.3", "node2", unready())]),
        json!([{"name": "http", "port": 8080}]),
    );
    let t = table_with(vec![web_node_port(json!({}))], vec![sl]);
    assert!(t.frontends_of(&key("web")).iter().all(|f| f.action == Action::Reject));
}

#[test]
fn node_port_frontends_with_cluster_policy() {
    let t = table_with(vec![web_node_port(json!({}))], vec![web_slice(true)]);
    let fes = t.frontends_of(&key("web"));
    assert_eq!(fes.len(), 2);
    assert_eq!(fes[1].frontend, Frontend::NodePort { port: 30080, protocol: Protocol::Tcp });
    for f in &fes {
        assert_eq!(addrs(f), [("10.244.1.2".into(), 8080), ("10.244.2.2".into(), 8080)], "{:?}", f.frontend);
    }
    // From outside, a remote backend needs SNAT; from pods, nothing does.
    assert!(fes[1].snat_remote_backends && !fes[1].keep_client_address);
    assert!(!fes[0].snat_remote_backends && fes[0].keep_client_address);
    assert_eq!(fes[1].traffic_policy, TrafficPolicy::Cluster);
}

#[test]
fn external_policy_local_keeps_to_this_node() {
    let svc = web_node_port(json!({"externalTrafficPolicy": "Local"}));
    let t = table_with(vec![svc.clone()], vec![web_slice(true)]);
    let fes = t.frontends_of(&key("web"));
    let (cluster_ip, node_port) = (&fes[0], &fes[1]);
    assert_eq!(addrs(node_port), [("10.244.1.2".into(), 8080)]);
    assert!(node_port.keep_client_address && !node_port.snat_remote_backends);
    assert_eq!((node_port.traffic_policy, node_port.terminating_fallback), (TrafficPolicy::Local, false));
    // The ClusterIP frontend follows internalTrafficPolicy (Cluster).
    assert_eq!(addrs(cluster_ip).len(), 2);
}

#[test]
fn external_policy_local_falls_back_to_local_terminating() {
    let svc = web_node_port(json!({"externalTrafficPolicy": "Local"}));
    let t = table_with(vec![svc], vec![web_slice(false)]);
    let node_port = &t.frontends_of(&key("web"))[1];
    // Not the remote ready one: the local serving-terminating one.
    assert_eq!(addrs(node_port), [("10.244.1.3".into(), 8080)]);
    assert!(node_port.terminating_fallback);
    assert_eq!(node_port.action, Action::Forward);
    let b = node_port.backends[0];
    assert!(!b.ready && b.serving && b.terminating && b.local);
}

#[test]
fn external_policy_local_without_local_endpoints_drops() {
    let svc = web_node_port(json!({"externalTrafficPolicy": "Local"}));
    let sl = slice(
        "web-a",
        "web",
        json!([ep("10.244.2.2", "node2", ready())]),
        json!([{"name": "http", "port": 8080}]),
    );
    let t = table_with(vec![svc], vec![sl]);
    let fes = t.frontends_of(&key("web"));
    assert_eq!((fes[1].action, fes[1].backends.len()), (Action::Drop, 0));
    assert_eq!(fes[0].action, Action::Forward);
}

#[test]
fn internal_policy_local() {
    let svc = web_node_port(json!({"internalTrafficPolicy": "Local"}));
    let t = table_with(vec![svc], vec![web_slice(true)]);
    let fes = t.frontends_of(&key("web"));
    assert_eq!(addrs(&fes[0]), [("10.244.1.2".into(), 8080)]);
    assert_eq!(fes[0].traffic_policy, TrafficPolicy::Local);
    // The NodePort frontend follows externalTrafficPolicy (Cluster).
    assert_eq!(addrs(&fes[1]).len(), 2);
    // Seen from node2, the local one there.
    let mut t2 = ServiceTable::new("node2");
    t2.upsert_service(web_node_port(json!({"internalTrafficPolicy": "Local"}))).expect("ids");
    t2.upsert_slice(web_slice(true)).expect("ids");
    assert_eq!(addrs(&t2.frontends_of(&key("web"))[0]), [("10.244.2.2".into(), 8080)]);
}

#[test]
fn cluster_policy_falls_back_to_terminating_when_nothing_is_ready() {
    let sl = slice(
        "web-a",
        "web",
        json!([ep("10.244.2.4", "node2", draining()), ep("10.244.2.3", "node2", unready())]),
        json!([{"name": "http", "port": 8080}]),
    );
    let t = table_with(vec![web_node_port(json!({}))], vec![sl]);
    let fes = t.frontends_of(&key("web"));
    assert_eq!(addrs(&fes[0]), [("10.244.2.4".into(), 8080)]);
    assert!(fes[0].terminating_fallback);
}

#[test]
fn affinity_is_carried_per_frontend() {
    let t = table_with(vec![web_node_port(json!({"sessionAffinity": "ClientIP"}))], vec![web_slice(true)]);
    assert!(t.frontends_of(&key("web")).iter().all(|f| f.affinity_timeout == Some(10_800)));
    let svc = web_node_port(
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}),
    );
    let t = table_with(vec![svc], vec![]);
    assert!(t.frontends_of(&key("web")).iter().all(|f| f.affinity_timeout == Some(30)));
}

#[test]
fn a_pod_listed_twice_keeps_its_best_state() {
    let svc = service("web", json!({"clusterIP": "10.96.1.1", "ports": [{"port": 80}]}));
    let a = slice("web-a", "web", json!([ep("10.244.1.2", NODE, unready())]), json!([{"port": 8080}]));
    let b = slice("web-b", "web", json!([ep("10.244.1.2", NODE, ready())]), json!([{"port": 8080}]));
    let t = table_with(vec![svc], vec![a, b]);
    let fes = t.frontends_of(&key("web"));
    assert_eq!(addrs(&fes[0]), [("10.244.1.2".into(), 8080)]);
    assert!(fes[0].backends[0].ready);
}

fn id_of(t: &ServiceTable, ip_: &str, port: u16) -> Option<u32> {
    t.backend_id(&BackendKey { ip: ip(ip_), port, protocol: Protocol::Tcp })
}

#[test]
fn backend_ids_are_stable_across_updates() {
    let mut t = table_with(vec![web_node_port(json!({}))], vec![web_slice(true)]);
    let before: Vec<Option<u32>> =
        ["10.244.1.2", "10.244.1.3", "10.244.2.2", "10.244.2.3"].iter().map(|a| id_of(&t, a, 8080)).collect();
    assert!(before.iter().all(Option::is_some));
    // One endpoint goes, another comes, a third changes state.
    let changed = slice(
        "web-a",
        "web",
        json!([
            ep("10.244.1.2", NODE, draining()),
            ep("10.244.2.2", "node2", ready()),
            ep("10.244.2.3", "node2", ready()),
            ep("10.244.3.2", "node3", ready())
        ]),
        json!([{"name": "http", "port": 8080}]),
    );
    assert_eq!(t.upsert_slice(changed).expect("ids"), vec![key("web")]);
    assert_eq!(id_of(&t, "10.244.1.2", 8080), before[0]);
    assert_eq!(id_of(&t, "10.244.1.3", 8080), None, "released with its endpoint");
    assert_eq!(id_of(&t, "10.244.2.2", 8080), before[2]);
    assert_eq!(id_of(&t, "10.244.2.3", 8080), before[3]);
    let new = id_of(&t, "10.244.3.2", 8080).expect("new backend has an id");
    assert!(!before.contains(&Some(new)), "a fresh id, not the one just released");
    let fes = t.frontends_of(&key("web"));
    assert_eq!(
        fes[0].backends.iter().find(|b| b.ip == ip("10.244.2.2")).map(|b| Some(b.id)),
        Some(before[2])
    );
}

#[test]
fn frontend_ids_are_stable_across_service_updates() {
    let mut t = table_with(vec![web_node_port(json!({}))], vec![]);
    let ids =
        |t: &ServiceTable| t.frontends_of(&key("web")).iter().map(|f| (f.frontend, f.id)).collect::<Vec<_>>();
    let before = ids(&t);
    // A second port is added; the first port's frontends keep their ids.
    let svc = service(
        "web",
        json!({"type": "NodePort", "clusterIP": "10.96.1.1", "ports": [
        {"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}, {"name": "https", "port": 443, "nodePort": 30443}]}),
    );
    t.upsert_service(svc).expect("ids");
    let after = ids(&t);
    assert_eq!(after.len(), 4);
    for f in &before {
        assert!(after.contains(f), "{f:?} kept its id");
    }
    // NodePort → ClusterIP: the node-port frontends go, the others stay.
    let svc = service(
        "web",
        json!({"clusterIP": "10.96.1.1", "ports": [
        {"name": "http", "port": 80, "targetPort": "http"}, {"name": "https", "port": 443}]}),
    );
    t.upsert_service(svc).expect("ids");
    let last = ids(&t);
    assert_eq!(last.len(), 2);
    assert!(last.iter().all(|f| after.contains(f)));
    assert!(t.remove_service(&key("web")));
    assert!(t.frontends_of(&key("web")).is_empty());
    assert!(!t.remove_service(&key("web")));
}

#[test]
fn a_backend_shared_by_two_services_keeps_its_id_until_both_let_go() {
    let a = service("a", json!({"clusterIP": "10.96.1.1", "ports": [{"port": 80}]}));
    let b = service("b", json!({"clusterIP": "10.96.1.2", "ports": [{"port": 80}]}));
    let sa = slice("a-1", "a", json!([ep("10.244.1.2", NODE, ready())]), json!([{"port": 8080}]));
    let sb = slice("b-1", "b", json!([ep("10.244.1.2", NODE, ready())]), json!([{"port": 8080}]));
    let mut t = table_with(vec![a, b], vec![sa, sb]);
    let id = id_of(&t, "10.244.1.2", 8080).expect("id");
    assert_eq!(t.frontends_of(&key("b"))[0].backends[0].id, id);
    assert_eq!(t.remove_slice("shop", "a-1"), Some(key("a")));
    assert_eq!(id_of(&t, "10.244.1.2", 8080), Some(id));
    assert_eq!(t.frontends_of(&key("a"))[0].action, Action::Reject);
    assert_eq!(t.remove_slice("shop", "b-1"), Some(key("b")));
    assert_eq!(id_of(&t, "10.244.1.2", 8080), None);
    assert_eq!(t.remove_slice("shop", "b-1"), None);
}

#[test]
fn updates_name_only_the_services_they_change() {
    let a = service("a", json!({"clusterIP": "10.96.1.1", "ports": [{"port": 80}]}));
    let b = service("b", json!({"clusterIP": "10.96.1.2", "ports": [{"port": 80}]}));
    let mut t = ServiceTable::new(NODE);
    // A slice may come before its service.
    let s = slice("x-1", "a", json!([ep("10.244.1.2", NODE, ready())]), json!([{"port": 8080}]));
    assert_eq!(t.upsert_slice(s).expect("ids"), vec![key("a")]);
    assert_eq!(t.upsert_service(a).expect("ids"), key("a"));
    t.upsert_service(b).expect("ids");
    assert_eq!(t.frontends_of(&key("a"))[0].backends.len(), 1);
    let b_before = t.frontends_of(&key("b"));
    // The slice is relabelled to service b: both change, and only they.
    let s = slice("x-1", "b", json!([ep("10.244.1.2", NODE, ready())]), json!([{"port": 8080}]));
    assert_eq!(t.upsert_slice(s).expect("ids"), vec![key("b"), key("a")]);
    assert_eq!(t.frontends_of(&key("a"))[0].action, Action::Reject);
    assert_eq!(t.frontends_of(&key("b"))[0].backends.len(), 1);
    assert_ne!(t.frontends_of(&key("b")), b_before);
    assert_eq!(t.service_keys().count(), 2);
}

#[test]
fn id_exhaustion_changes_nothing() {
    let mut t = ServiceTable::with_id_ranges(NODE, (1, 2), (1, 3));
    t.upsert_service(web_node_port(json!({}))).expect("two frontends fit");
    let three = slice(
        "web-a",
        "web",
        json!([
            ep("10.244.1.2", NODE, ready()),
            ep("10.244.1.3", NODE, ready()),
            ep("10.244.1.4", NODE, ready())
        ]),
        json!([{"name": "http", "port": 8080}]),
    );
    assert_eq!(t.upsert_slice(three).unwrap_err(), IdsExhausted { first: 1, last: 2 });
    assert!(t.frontends_of(&key("web"))[0].backends.is_empty());
    assert_eq!(id_of(&t, "10.244.1.2", 8080), None);
    let two = slice(
        "web-a",
        "web",
        json!([ep("10.244.1.2", NODE, ready()), ep("10.244.1.3", NODE, ready())]),
        json!([{"name": "http", "port": 8080}]),
    );
    t.upsert_slice(two).expect("two fit");
    // Replacing one backend by another fits: the old id is freed first.
    let swapped = slice(
        "web-a",
        "web",
        json!([ep("10.244.1.2", NODE, ready()), ep("10.244.1.9", NODE, ready())]),
        json!([{"name": "http", "port": 8080}]),
    );
    t.upsert_slice(swapped).expect("swap fits");
    assert!(id_of(&t, "10.244.1.9", 8080).is_some());
    let two_ports = service(
        "web",
        json!({"type": "NodePort", "clusterIP": "10.96.1.1", "ports": [
        {"name": "http", "port": 80, "nodePort": 30080}, {"name": "https", "port": 443, "nodePort": 30443}]}),
    );
    assert!(t.upsert_service(two_ports).is_err());
    assert_eq!(t.frontends_of(&key("web")).len(), 2, "the old service stands");
}

#[test]
fn publish_not_ready_addresses_trusts_ready() {
    let svc = service(
        "web",
        json!({"clusterIP": "10.96.1.1", "ports": [{"port": 80}], "publishNotReadyAddresses": true}),
    );
    let sl = slice(
        "web-a",
        "web",
        json!([ep("10.244.1.2", NODE, json!({"ready": true, "serving": false, "terminating": true}))]),
        json!([{"port": 8080}]),
    );
    let t = table_with(vec![svc], vec![sl]);
    assert_eq!(t.frontends_of(&key("web"))[0].backends.len(), 1);
}

#[test]
fn maglev_from_a_frontend() {
    let t = table_with(vec![web_node_port(json!({}))], vec![web_slice(true)]);
    let f = &t.frontends_of(&key("web"))[0];
    let table = f.maglev_table(MAGLEV_SMALL).expect("table");
    assert_eq!(table.len(), 251);
    let ids: BTreeSet<u32> = table.into_iter().collect();
    assert_eq!(ids, f.backends.iter().map(|b| b.id).collect());
}

#[test]
fn from_a_list_document() {
    let text = json!({"apiVersion": "v1", "kind": "List", "items": [
        serde_json::to_value(web_node_port(json!({"externalTrafficPolicy": "Local"}))).expect("json"),
        serde_json::to_value(web_slice(false)).expect("json")]})
    .to_string();
    let mut t = ServiceTable::new(NODE);
    for doc in ServiceDocument::parse_many(&text).expect("parses") {
        match doc {
            ServiceDocument::Service(s) => drop(t.upsert_service(s).expect("ids")),
            ServiceDocument::EndpointSlice(s) => drop(t.upsert_slice(s).expect("ids")),
        }
    }
    assert!(t.frontends_of(&key("web"))[1].terminating_fallback);
}

#[test]
fn backend_ids_are_counted_by_the_change_among_other_services() {
    // Three backend ids, and services whose slices share backends: the
    // check counts only the backends a slice adds or drops, against the
    // ids the other services hold.
    let mut t = ServiceTable::with_id_ranges(NODE, (1, 3), (1, 10));
    for (name, ip) in [("a", "10.96.1.1"), ("b", "10.96.1.2"), ("c", "10.96.1.3")] {
        t.upsert_service(service(name, json!({"clusterIP": ip, "ports": [{"port": 80}]}))).expect("ids");
    }
    let eps = |ips: &[&str]| Value::Array(ips.iter().map(|i| ep(i, NODE, ready())).collect());
    let port = || json!([{"port": 8080}]);
    t.upsert_slice(slice("a-1", "a", eps(&["10.244.1.2", "10.244.1.3"]), port())).expect("two fit");
    // A shared backend takes no new id: one new of the one left.
    t.upsert_slice(slice("b-1", "b", eps(&["10.244.1.3", "10.244.1.4"]), port())).expect("shared fits");
    let full = t.upsert_slice(slice("c-1", "c", eps(&["10.244.1.5"]), port()));
    assert_eq!(full.unwrap_err(), IdsExhausted { first: 1, last: 3 });
    assert!(t.frontends_of(&key("c"))[0].backends.is_empty());
    // b lets go of its own backend (the shared one stays a's): c fits.
    t.upsert_slice(slice("b-1", "b", eps(&["10.244.1.3"]), port())).expect("ids");
    assert_eq!(id_of(&t, "10.244.1.4", 8080), None);
    t.upsert_slice(slice("c-1", "c", eps(&["10.244.1.5"]), port())).expect("a freed id fits");
    // A slice moved from c to a: a gains one backend c gives up.
    t.upsert_slice(slice("c-1", "a", eps(&["10.244.1.5"]), port())).expect("a move needs no new id");
    assert!(t.frontends_of(&key("c"))[0].backends.is_empty());
    assert_eq!(t.frontends_of(&key("a"))[0].backends.len(), 3);
    // Still full for a backend nobody holds.
    let more = t.upsert_slice(slice("c-2", "c", eps(&["10.244.1.6"]), port()));
    assert!(more.is_err());
}
