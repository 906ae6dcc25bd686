//! Exhaustive agreement: for seeded random clusters and policy sets, every
//! endpoint, every known identity plus host, world, remote node and an
//! unknown identity, an address of every CIDR class (and of none), and
//! every L4 point that can matter (each port a policy or named port uses,
//! ±1, 0 and 65535, for TCP, UDP, SCTP, and other protocols), the compiled
//! map's lookup gives exactly `decide`'s verdict. Then the same after a
//! random series of incremental updates.

use serde_json::{Value, json};
use std::{collections::BTreeSet, net::Ipv4Addr};
use weft_policy::{
    Compiler, Direction, Endpoint, Identity, Labels, NamedPorts, Packet, PolicyDocument, PolicyRef, lookup,
    model::{HOST, REMOTE_NODE, WORLD},
};

/// xorshift64*: small, seeded, good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    fn some<T: Clone>(&mut self, items: &[T], max: usize) -> Vec<T> {
        (0..self.below(max + 1)).map(|_| self.pick(items)).collect()
    }
}

const CIDRS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "10.2.0.0/16",
    "192.168.0.0/16",
    "192.168.1.0/24",
    "0.0.0.0/0",
];
const PORTS: &[u16] = &[53, 80, 81, 443, 8080, 9090];
const RANGES: &[(u16, u16)] = &[(1000, 2000), (80, 90), (1, 1023), (8000, 8080)];
const APPS: &[&str] = &["web", "db", "cache"];

fn cidr_inside(outer: &str, inner: &str) -> bool {
    let o: weft_policy::Ipv4Cidr = outer.parse().unwrap();
    let i: weft_policy::Ipv4Cidr = inner.parse().unwrap();
    o.contains_net(&i) && o != i
}

fn k8s_selector(r: &mut Rng) -> Value {
    match r.below(6) {
        0 => json!({}),
        1 => json!({"matchLabels": {"app": r.pick(APPS)}}),
        2 => json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}),
        3 => json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": [r.pick(APPS)]}]}),
        4 => json!({"matchExpressions": [{"key": "role", "operator": "Exists"}]}),
        _ => json!({"matchExpressions": [{"key": "role", "operator": "DoesNotExist"}]}),
    }
}

fn k8s_ns_selector(r: &mut Rng) -> Value {
    match r.below(4) {
        0 => json!({}),
        1 => json!({"matchLabels": {"env": r.pick(&["prod", "dev"])}}),
        2 => json!({"matchExpressions": [{"key": "team", "operator": "Exists"}]}),
        _ => json!({"matchLabels": {"kubernetes.io/metadata.name": format!("n{}", r.below(3))}}),
    }
}

fn calico_selector(r: &mut Rng) -> String {
    r.pick(&[
        "all()",
        "app == 'web'",
        "app != 'db'",
        "has(role)",
        "!has(role)",
        "app in {'web', 'cache'}",
        "role == 'fe' || app == 'db'",
        "projectcalico.org/namespace == 'n1'",
    ])
    .into()
}

fn calico_ns_selector(r: &mut Rng) -> String {
    r.pick(&["all()", "env == 'prod'", "has(team)", "kubernetes.io/metadata.name != 'n0'"]).into()
}

fn k8s_policy(r: &mut Rng, name: &str, ns: &str) -> Value {
    let mut spec = json!({"podSelector": k8s_selector(r)});
    for (dir, peers_field) in [("ingress", "from"), ("egress", "to")] {
        if r.chance(40) {
            continue;
        }
        let rules: Vec<Value> = (0..r.below(3))
            .map(|_| {
                let peers: Vec<Value> = (0..r.below(3))
                    .map(|_| match r.below(4) {
                        0 => json!({"podSelector": k8s_selector(r)}),
                        1 => json!({"namespaceSelector": k8s_ns_selector(r)}),
                        2 => json!({"podSelector": k8s_selector(r), "namespaceSelector": k8s_ns_selector(r)}),
                        _ => {
                            let cidr = r.pick(CIDRS);
                            let inner: Vec<&str> =
                                CIDRS.iter().copied().filter(|c| cidr_inside(cidr, c)).collect();
                            let except = if inner.is_empty() { vec![] } else { r.some(&inner, 2) };
                            json!({"ipBlock": {"cidr": cidr, "except": except}})
                        }
                    })
                    .collect();
                let ports: Vec<Value> = (0..r.below(3))
                    .map(|_| {
                        let protocol = r.pick(&["TCP", "UDP", "SCTP"]);
                        match r.below(4) {
                            0 => json!({"protocol": protocol}),
                            1 => json!({"protocol": protocol, "port": r.pick(PORTS)}),
                            2 => {
                                let (a, b) = r.pick(RANGES);
                                json!({"protocol": protocol, "port": a, "endPort": b})
                            }
                            _ => json!({"protocol": protocol, "port": r.pick(&["http", "metrics", "dns"])}),
                        }
                    })
                    .collect();
                json!({peers_field: peers, "ports": ports})
            })
            .collect();
        spec[dir] = Value::Array(rules);
    }
    if r.chance(30) {
        spec["policyTypes"] = json!(r.pick(&[vec!["Ingress"], vec!["Egress"], vec!["Ingress", "Egress"]]));
    }
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn calico_entity(r: &mut Rng, ports_ok: bool, side_with_ports: bool) -> Value {
    let mut e = json!({});
    if r.chance(25) {
        e["nets"] = json!(r.some(CIDRS, 2));
    }
    if r.chance(20) {
        e["notNets"] = json!(r.some(CIDRS, 2));
    }
    if r.chance(35) {
        e["selector"] = json!(calico_selector(r));
    }
    if r.chance(15) {
        e["notSelector"] = json!(calico_selector(r));
    }
    if r.chance(20) {
        e["namespaceSelector"] = json!(calico_ns_selector(r));
    }
    if ports_ok && side_with_ports {
        let port = |r: &mut Rng| match r.below(3) {
            0 => json!(r.pick(PORTS)),
            1 => {
                let (a, b) = r.pick(RANGES);
                json!(format!("{a}:{b}"))
            }
            _ => json!(r.pick(&["http", "metrics"])),
        };
        if r.chance(40) {
            e["ports"] = Value::Array((0..r.below(2) + 1).map(|_| port(r)).collect());
        }
        if r.chance(25) {
            e["notPorts"] = Value::Array((0..r.below(2) + 1).map(|_| port(r)).collect());
        }
    }
    e
}

fn calico_policy(r: &mut Rng, name: &str, ns: Option<&str>) -> Value {
    let mut spec = json!({});
    if r.chance(70) {
        spec["order"] = json!(r.pick(&[1.0, 10.0, 10.0, 100.0, 1000.0]));
    }
    if r.chance(35) {
        spec["tier"] = json!(r.pick(&["t1", "t2"]));
    }
    if r.chance(60) {
        spec["selector"] = json!(calico_selector(r));
    }
    if ns.is_none() && r.chance(30) {
        spec["namespaceSelector"] = json!(calico_ns_selector(r));
    }
    for dir in ["ingress", "egress"] {
        let rules: Vec<Value> = (0..r.below(4))
            .map(|_| {
                let action = r.pick(&["Allow", "Deny", "Log", "Pass", "Allow", "Deny"]);
                let protocol: Option<Value> = match r.below(6) {
                    0 | 1 => None,
                    2 => Some(json!("TCP")),
                    3 => Some(json!("UDP")),
                    4 => Some(json!("ICMP")),
                    _ => Some(json!(r.pick(&[47, 132]))),
                };
                let ports_ok = matches!(&protocol, Some(p) if p == "TCP" || p == "UDP" || p == 132);
                let mut rule = json!({"action": action,
                                      "source": calico_entity(r, ports_ok, false),
                                      "destination": calico_entity(r, ports_ok, true)});
                if let Some(p) = protocol {
                    rule["protocol"] = p;
                }
                rule
            })
            .collect();
        spec[dir] = Value::Array(rules);
    }
    if r.chance(30) {
        spec["types"] = json!(r.pick(&[vec!["Ingress"], vec!["Egress"], vec!["Ingress", "Egress"]]));
    }
    match ns {
        Some(ns) => json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                           "metadata": {"name": name, "namespace": ns}, "spec": spec}),
        None => json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                       "metadata": {"name": name}, "spec": spec}),
    }
}

fn random_policy(r: &mut Rng, name: &str, namespaces: usize) -> PolicyDocument {
    let ns = format!("n{}", r.below(namespaces));
    let v = match r.below(3) {
        0 => k8s_policy(r, name, &ns),
        1 => calico_policy(r, name, Some(&ns)),
        _ => calico_policy(r, name, None),
    };
    PolicyDocument::from_json(&v).unwrap_or_else(|e| panic!("generated an invalid policy: {e}\n{v:#}"))
}

fn ns_labels(r: &mut Rng) -> Labels {
    let mut l = Labels::new();
    l.insert("env".into(), r.pick(&["prod", "dev"]).into());
    if r.chance(50) {
        l.insert("team".into(), r.pick(&["a", "b"]).into());
    }
    l
}

fn identity(r: &mut Rng, namespaces: usize) -> Identity {
    let mut labels = Labels::new();
    if r.chance(70) {
        labels.insert("app".into(), r.pick(APPS).into());
    }
    if r.chance(40) {
        labels.insert("role".into(), r.pick(&["fe", "be"]).into());
    }
    let mut named_ports = NamedPorts::new();
    if r.chance(60) {
        named_ports.entry("http".into()).or_default().insert(r.pick(&[
            (6, 80),
            (6, 8080),
            (17, 80),
            (132, 80),
        ]));
    }
    if r.chance(30) {
        named_ports.entry("http".into()).or_default().insert((6, 81));
    }
    if r.chance(30) {
        named_ports.entry("metrics".into()).or_default().insert((6, 9090));
    }
    Identity { namespace: format!("n{}", r.below(namespaces)), labels, named_ports }
}

struct Scenario {
    compiler: Compiler,
    namespaces: usize,
    next_policy: usize,
    addrs: Vec<Ipv4Addr>,
}

fn scenario(seed: u64) -> (Scenario, Rng) {
    let mut r = Rng::new(seed);
    let mut compiler = Compiler::new();
    compiler.set_tier("t1", 50.0);
    compiler.set_tier("t2", 2_000_000.0);
    let namespaces = 2 + r.below(3);
    for n in 0..namespaces {
        let labels = ns_labels(&mut r);
        compiler.upsert_namespace(&format!("n{n}"), n as u16 + 1, labels).unwrap();
    }
    for i in 0..3 + r.below(8) {
        let id = identity(&mut r, namespaces);
        compiler.upsert_identity(256 + i as u32, id).unwrap();
    }
    let mut s = Scenario { compiler, namespaces, next_policy: 0, addrs: vec![] };
    for _ in 0..1 + r.below(5) {
        s.add_policy(&mut r);
    }
    s.addrs = (0..4)
        .map(|_| {
            r.pick(&[
                Ipv4Addr::new(10, 1, 2, 3),
                Ipv4Addr::new(10, 1, 2, 9),
                Ipv4Addr::new(10, 2, 0, 1),
                Ipv4Addr::new(192, 168, 1, 1),
                Ipv4Addr::new(172, 16, 0, 1),
            ])
        })
        .collect();
    (s, r)
}

impl Scenario {
    fn add_policy(&mut self, r: &mut Rng) {
        let name = format!("p{}", self.next_policy % 7);
        self.next_policy += 1;
        let doc = random_policy(r, &name, self.namespaces);
        self.compiler.upsert_policy(doc).unwrap();
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        self.compiler
            .cluster()
            .identities()
            .iter()
            .enumerate()
            .map(|(i, (id, ident))| Endpoint {
                identity: *id,
                namespace: ident.namespace.clone(),
                labels: ident.labels.clone(),
                named_ports: ident.named_ports.clone(),
                addr: self.addrs[i % self.addrs.len()],
            })
            .collect()
    }

    /// Checks every endpoint; returns how many probes were compared.
    fn check(&self, seed: u64) -> usize {
        let c = &self.compiler;
        let mut peers: Vec<u32> = c.cluster().identities().keys().copied().collect();
        peers.extend([HOST, WORLD, REMOTE_NODE, 9999]);
        let classes = c.classes().classes();
        let addrs: Vec<Ipv4Addr> =
            classes.iter().map(|(_, id)| *id).chain([0]).filter_map(|id| c.classes().sample(id)).collect();
        let mut ports: BTreeSet<u16> = [0, 1, 65534, 65535].into();
        for &p in PORTS.iter().chain(&[9090, 8080]) {
            ports.extend([p - 1, p, p + 1]);
        }
        for &(a, b) in RANGES {
            ports.extend([a - 1, a, a + 1, b - 1, b, b + 1]);
        }
        let mut l4: Vec<(u8, u16)> = Vec::new();
        for proto in [6, 17, 132] {
            l4.extend(ports.iter().map(|&p| (proto, p)));
        }
        for proto in [0, 1, 47, 255] {
            l4.extend([(proto, 0), (proto, 80)]);
        }
        let mut probes = 0;
        for ep in self.endpoints() {
            let compiled = match c.compile(&ep) {
                Ok(p) => p,
                Err(e) => panic!("seed {seed}: compile of {} failed: {e}", ep.identity),
            };
            for dir in Direction::BOTH {
                for &peer in &peers {
                    for &peer_addr in &addrs {
                        for &(proto, dport) in &l4 {
                            let packet = Packet { direction: dir, peer, peer_addr, proto, dport };
                            let want = c.decide(&ep, &packet).unwrap();
                            let got = lookup(compiled.direction(dir), &c.probe(&packet));
                            probes += 1;
                            if want != got {
                                let policies: Vec<String> = c
                                    .cluster()
                                    .policies()
                                    .values()
                                    .map(|d| serde_json::to_string(d).unwrap())
                                    .collect();
                                panic!(
                                    "seed {seed}: endpoint {} ({:?}) {dir:?} {packet:?} {:?}:\n decide {want:?}\n lookup \
                                     {got:?}\nentries {:#?}\npolicies {policies:#?}\nidentities {:#?}",
                                    ep.identity,
                                    ep.labels,
                                    c.probe(&packet),
                                    compiled.direction(dir).entries,
                                    c.cluster().identities()
                                );
                            }
                        }
                    }
                }
            }
        }
        probes
    }

    /// One random change of the model.
    fn mutate(&mut self, r: &mut Rng) {
        let ids: Vec<u32> = self.compiler.cluster().identities().keys().copied().collect();
        match r.below(6) {
            0 => self.add_policy(r),
            1 => {
                let refs: Vec<PolicyRef> = self.compiler.cluster().policies().keys().cloned().collect();
                if !refs.is_empty() {
                    let victim = r.pick(&refs);
                    assert!(self.compiler.remove_policy(&victim));
                }
            }
            2 if !ids.is_empty() => {
                // A label change: same id, new labels and ports.
                let id = r.pick(&ids);
                let ident = identity(r, self.namespaces);
                self.compiler.upsert_identity(id, ident).unwrap();
            }
            3 => {
                let n = r.below(self.namespaces);
                let labels = ns_labels(r);
                self.compiler.upsert_namespace(&format!("n{n}"), n as u16 + 1, labels).unwrap();
            }
            4 if ids.len() > 1 => self.compiler.remove_identity(r.pick(&ids)),
            _ => {
                let id = 256 + 100 + r.below(50) as u32;
                let ident = identity(r, self.namespaces);
                self.compiler.upsert_identity(id, ident).unwrap();
            }
        }
    }
}

#[test]
fn compiled_maps_agree_with_decide() {
    let mut probes = 0;
    for seed in 0..60 {
        let (s, _) = scenario(seed);
        probes += s.check(seed);
    }
    assert!(probes > 100_000, "only {probes} probes");
}

#[test]
fn agreement_survives_incremental_updates() {
    for seed in 1000..1025 {
        let (mut s, mut r) = scenario(seed);
        for _ in 0..6 {
            s.mutate(&mut r);
        }
        s.check(seed);
        // A cluster built from scratch in the final state compiles to the
        // same verdicts (class ids may differ: they are never reused).
        let mut fresh = Compiler::new();
        fresh.set_tier("t1", 50.0);
        fresh.set_tier("t2", 2_000_000.0);
        for (name, ns) in s.compiler.cluster().namespaces() {
            fresh.upsert_namespace(name, ns.id, ns.labels.clone()).unwrap();
        }
        for (id, ident) in s.compiler.cluster().identities() {
            fresh.upsert_identity(*id, ident.clone()).unwrap();
        }
        for doc in s.compiler.cluster().policies().values() {
            fresh.upsert_policy(doc.clone()).unwrap();
        }
        for ep in s.endpoints() {
            let (a, b) = (s.compiler.compile(&ep).unwrap(), fresh.compile(&ep).unwrap());
            assert_eq!(a.len(), b.len(), "seed {seed}: incremental and fresh differ in size");
        }
    }
}

#[test]
fn class_ids_stay_put_when_policies_come_and_go() {
    let (mut s, mut r) = scenario(7);
    let before = s.compiler.classes().classes();
    s.add_policy(&mut r);
    s.add_policy(&mut r);
    let after = s.compiler.classes().classes();
    for (cidr, id) in &before {
        if let Some((_, id2)) = after.iter().find(|(c, _)| c == cidr) {
            assert_eq!(id, id2, "{cidr} changed id");
        }
    }
}
