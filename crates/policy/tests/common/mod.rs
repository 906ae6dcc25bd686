//! A small cluster for policy tests: namespaces x, y, z (ids 1, 2, 3,
//! labels ns=<name>), pods a, b, c in each (labels pod=<name>, address
//! 10.244.<ns id>.<1..3>, container ports named as the upstream netpol e2e
//! pods name theirs: serve-80-tcp, serve-81-tcp, serve-80-udp), and an
//! outside address (world, 192.0.2.1).

#![allow(dead_code)]

use serde_json::{Value, json};
use std::net::Ipv4Addr;
use weft_policy::{
    Compiler, Direction, Endpoint, EndpointPolicy, Identity, Labels, NamedPorts, Packet, PolicyDocument,
    Verdict, lookup, model::WORLD,
};

pub const NAMES: [&str; 10] = ["xa", "xb", "xc", "ya", "yb", "yc", "za", "zb", "zc", "w"];
pub const WORLD_INDEX: usize = 9;

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub fn named_ports() -> NamedPorts {
    let mut m = NamedPorts::new();
    m.entry("serve-80-tcp".into()).or_default().insert((6, 80));
    m.entry("serve-81-tcp".into()).or_default().insert((6, 81));
    m.entry("serve-80-udp".into()).or_default().insert((17, 80));
    m
}

pub struct Lab {
    pub compiler: Compiler,
    pub endpoints: Vec<Endpoint>,
    pub compiled: Vec<EndpointPolicy>,
}

pub fn pod_identity(i: usize) -> u32 {
    256 + i as u32
}

pub fn addr(i: usize) -> Ipv4Addr {
    if i == WORLD_INDEX {
        Ipv4Addr::new(192, 0, 2, 1)
    } else {
        Ipv4Addr::new(10, 244, (i / 3 + 1) as u8, (i % 3 + 1) as u8)
    }
}

pub fn lab(policies: &[Value], tiers: &[(&str, f64)]) -> Lab {
    let mut compiler = Compiler::new();
    for (i, ns) in ["x", "y", "z"].iter().enumerate() {
        compiler.upsert_namespace(ns, i as u16 + 1, labels(&[("ns", ns)])).unwrap();
    }
    for (name, order) in tiers {
        compiler.set_tier(name, *order);
    }
    let mut endpoints = Vec::new();
    for (i, name) in NAMES[..9].iter().enumerate() {
        let (ns, pod) = name.split_at(1);
        let identity =
            Identity { namespace: ns.into(), labels: labels(&[("pod", pod)]), named_ports: named_ports() };
        compiler.upsert_identity(pod_identity(i), identity.clone()).unwrap();
        endpoints.push(Endpoint {
            identity: pod_identity(i),
            namespace: ns.into(),
            labels: identity.labels,
            named_ports: named_ports(),
            addr: addr(i),
        });
    }
    for p in policies {
        let doc = PolicyDocument::from_json(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        compiler.upsert_policy(doc).unwrap();
    }
    let compiled = endpoints.iter().map(|e| compiler.compile(e).unwrap()).collect();
    Lab { compiler, endpoints, compiled }
}

impl Lab {
    /// The verdict at endpoint `at` for a packet with peer `peer` (an index
    /// in [`NAMES`]), by `decide` and by `lookup` over the compiled map.
    pub fn verdicts(
        &self,
        at: usize,
        dir: Direction,
        peer: usize,
        proto: u8,
        dport: u16,
    ) -> (Verdict, Verdict) {
        let packet = Packet {
            direction: dir,
            peer: if peer == WORLD_INDEX { WORLD } else { pod_identity(peer) },
            peer_addr: addr(peer),
            proto,
            dport,
        };
        let decided = self.compiler.decide(&self.endpoints[at], &packet).unwrap();
        let looked_up = lookup(self.compiled[at].direction(dir), &self.compiler.probe(&packet));
        (decided, looked_up)
    }

    /// Whether `from` may open a connection to `to`: egress at `from` and
    /// ingress at `to` both allow (the world has neither). The decide and
    /// lookup verdicts must be equal, rule and log flag included.
    pub fn allowed(&self, from: usize, to: usize, proto: u8, dport: u16) -> bool {
        let mut ok = true;
        for (at, dir, peer) in [(from, Direction::Egress, to), (to, Direction::Ingress, from)] {
            if at == WORLD_INDEX {
                continue;
            }
            let (d, l) = self.verdicts(at, dir, peer, proto, dport);
            assert_eq!(d, l, "{} {dir:?} peer {}: decide vs lookup, {proto}/{dport}", NAMES[at], NAMES[peer]);
            ok &= d.allowed();
        }
        ok
    }
}

pub fn knp(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

pub fn cnp(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

pub fn gnp(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
           "metadata": {"name": name}, "spec": spec})
}
