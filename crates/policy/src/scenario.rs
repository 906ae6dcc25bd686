//! A synthetic cluster for benchmarking the compiler: 1,000 endpoints,
//! 200 policies (Kubernetes, Calico namespaced and global, in two tiers)
//! and 2,000 identities over 25 namespaces, deterministic for a seed.
//! `make bench` (or the ignored test `bench_scenario_timing`) times a full
//! compile of every endpoint and an incremental one after a label change.

use crate::{Compiler, Endpoint, EndpointPolicy, Identity, Labels, NamedPorts, PolicyDocument};
use serde_json::{Value, json};
use std::net::Ipv4Addr;

pub const NAMESPACES: usize = 25;
pub const IDENTITIES: usize = 2_000;
pub const ENDPOINTS: usize = 1_000;
pub const POLICIES: usize = 200;
const APPS: usize = 40;

/// The cluster, loaded into a compiler, and the endpoints to compile.
pub struct BenchScenario {
    pub compiler: Compiler,
    pub endpoints: Vec<Endpoint>,
    rng: u64,
}

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

impl BenchScenario {
    /// Builds the scenario (this is the "full" part of a full compile,
    /// with [`BenchScenario::compile_all`]).
    pub fn new(seed: u64) -> BenchScenario {
        // Pod addresses are 10.<namespace>.x.y: the pool, as the agent
        // passes its cluster pool.
        let pool = crate::Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8).expect("a network address");
        let compiler = Compiler::new().with_pod_pools(vec![pool]);
        let mut s = BenchScenario { compiler, endpoints: Vec::new(), rng: seed | 1 };
        s.compiler.set_tier("security", 100.0);
        for n in 0..NAMESPACES {
            let l = labels(&[("team", format!("t{}", n % 5)), ("env", ["prod", "dev"][n % 2].into())]);
            s.compiler.upsert_namespace(&format!("ns-{n}"), n as u16 + 1, l).expect("fresh namespace");
        }
        for i in 0..IDENTITIES {
            let identity = s.identity(i);
            s.compiler.upsert_identity(256 + i as u32, identity).expect("known namespace");
        }
        for i in 0..ENDPOINTS {
            // Two endpoints per identity over the first half of them.
            let id = 256 + (i / 2) as u32;
            let ident = s.compiler.cluster().identity(id).expect("just added").clone();
            let ns = i / 2 % NAMESPACES;
            s.endpoints.push(Endpoint {
                identity: id,
                namespace: ident.namespace,
                labels: ident.labels,
                named_ports: ident.named_ports,
                addr: Ipv4Addr::new(10, ns as u8, (i / 250) as u8, (i % 250) as u8 + 1),
            });
        }
        for i in 0..POLICIES {
            let v = s.policy(i);
            let doc = PolicyDocument::from_json(&v).unwrap_or_else(|e| panic!("bench policy {i}: {e}"));
            s.compiler.upsert_policy(doc).expect("enforceable");
        }
        s
    }

    fn next(&mut self) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 16) as usize
    }

    fn identity(&mut self, i: usize) -> Identity {
        let mut named_ports = NamedPorts::new();
        named_ports.entry("http".into()).or_default().insert((6, [8080, 8000, 80][i % 3]));
        if i.is_multiple_of(4) {
            named_ports.entry("metrics".into()).or_default().insert((6, 9090));
        }
        let version = self.next() % 4;
        Identity {
            namespace: format!("ns-{}", i % NAMESPACES),
            labels: labels(&[
                ("app", format!("app{}", i / NAMESPACES % APPS)),
                ("tier", ["fe", "be", "db"][i % 3].into()),
                ("version", format!("v{version}")),
            ]),
            named_ports,
        }
    }

    /// Policy `i`: 100 Kubernetes, 60 Calico namespaced, 40 global.
    fn policy(&mut self, i: usize) -> Value {
        let ns = format!("ns-{}", i % NAMESPACES);
        let app = format!("app{}", self.next() % APPS);
        let meta = |name: String| json!({"name": name, "namespace": ns});
        match i {
            0..100 => {
                let spec = match i % 4 {
                    0 => json!({"podSelector": {"matchLabels": {"app": app}},
                                "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "fe"}}}],
                                             "ports": [{"port": "http"}]}]}),
                    1 => json!({"podSelector": {"matchLabels": {"tier": "db"}},
                                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", i % 5)}},
                                                       "podSelector": {"matchLabels": {"tier": "be"}}}],
                                             "ports": [{"port": 5432}]}]}),
                    2 => json!({"podSelector": {},
                                "policyTypes": ["Ingress", "Egress"],
                                "ingress": [{"from": [{"podSelector": {}}]},
                                            {"from": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                                   "except": [format!("10.{}.0.0/16", i % 50)]}}],
                                             "ports": [{"port": 8000, "endPort": 8100}]}],
                                "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}]},
                                           {"to": [{"podSelector": {}}]}]}),
                    _ => json!({"podSelector": {"matchExpressions": [{"key": "version", "operator": "In",
                                                                      "values": ["v1", "v2"]}]},
                                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"env": "prod"}}}]}]}),
                };
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                       "metadata": meta(format!("knp-{i}")), "spec": spec})
            }
            100..160 => {
                let spec = match i % 3 {
                    0 => json!({"order": (i % 7) * 10, "selector": format!("app == '{app}'"),
                                "ingress": [{"action": "Deny", "source": {"selector": "version == 'v0'"}},
                                            {"action": "Allow", "protocol": "TCP",
                                             "destination": {"ports": ["http", "8443"]}}]}),
                    1 => json!({"order": 500, "selector": "tier == 'be'",
                                "egress": [{"action": "Allow", "protocol": "TCP",
                                            "destination": {"selector": "tier == 'db'", "ports": [5432]}},
                                           {"action": "Log", "destination": {"nets": ["192.168.0.0/16"]}},
                                           {"action": "Deny", "destination": {"nets": ["192.168.0.0/16"]}}]}),
                    _ => json!({"selector": "all()",
                                "ingress": [{"action": "Allow", "source": {"namespaceSelector": "team == 't1'"}},
                                            {"action": "Allow", "protocol": "TCP",
                                             "source": {"notNets": [format!("10.{}.0.0/16", i % 50)]},
                                             "destination": {"notPorts": ["1:1023"]}}]}),
                };
                json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                       "metadata": meta(format!("cnp-{i}")), "spec": spec})
            }
            _ => {
                let spec = match i % 4 {
                    0 => json!({"tier": "security", "order": i, "selector": "all()",
                                "egress": [{"action": "Deny", "destination": {"nets": ["169.254.169.254/32"]}},
                                           {"action": "Pass"}],
                                "types": ["Egress"]}),
                    1 => json!({"tier": "security", "order": i, "selector": format!("app == '{app}'"),
                                "ingress": [{"action": "Allow", "protocol": "TCP",
                                             "source": {"namespaceSelector": "team == 't0'"},
                                             "destination": {"ports": ["metrics"]}},
                                            {"action": "Pass"}]}),
                    2 => json!({"order": i, "namespaceSelector": format!("team == 't{}'", i % 5),
                                "ingress": [{"action": "Deny", "source": {"nets": [format!("172.{}.0.0/16", 16 + i % 16)]}}]}),
                    _ => json!({"order": i, "selector": "tier == 'fe'",
                                "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [80, 443]}}],
                                "egress": [{"action": "Allow", "destination": {"selector": "tier == 'be'"}}]}),
                };
                json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                       "metadata": {"name": format!("gnp-{i}")}, "spec": spec})
            }
        }
    }

    /// Compiles every endpoint; panics on an error (the scenario is sized
    /// to fit the default budget).
    pub fn compile_all(&self) -> Vec<EndpointPolicy> {
        self.endpoints
            .iter()
            .map(|e| self.compiler.compile(e).unwrap_or_else(|err| panic!("endpoint {}: {err}", e.identity)))
            .collect()
    }

    /// One pod label change: identity 256 + `i` moves between `tier=fe`
    /// and `tier=be` (global rules let fe reach be), so what other
    /// endpoints allow to and from it changes, and so do its own
    /// endpoints' labels (the incremental part of the benchmark).
    pub fn label_change(&mut self, i: usize) {
        let id = 256 + i as u32;
        let mut identity = self.compiler.cluster().identity(id).expect("scenario identity").clone();
        let tier = if identity.labels.get("tier").is_some_and(|t| t == "fe") { "be" } else { "fe" };
        identity.labels.insert("tier".into(), tier.into());
        for e in self.endpoints.iter_mut().filter(|e| e.identity == id) {
            e.labels = identity.labels.clone();
        }
        self.compiler.upsert_identity(id, identity).expect("known namespace");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// `cargo test --release -p weft-policy bench_scenario_timing -- --ignored --nocapture`
    #[test]
    #[ignore = "a benchmark: run in release"]
    fn bench_scenario_timing() {
        let t = Instant::now();
        let mut s = BenchScenario::new(42);
        let built = t.elapsed();
        let t = Instant::now();
        let maps = s.compile_all();
        let compiled = t.elapsed();
        let entries: usize = maps.iter().map(EndpointPolicy::len).sum();
        let largest = maps.iter().map(EndpointPolicy::len).max().unwrap_or(0);
        let t = Instant::now();
        s.label_change(7);
        let updated = t.elapsed();
        let t = Instant::now();
        let again = s.compile_all();
        let recompiled = t.elapsed();
        let differ = maps.iter().zip(&again).filter(|(a, b)| a != b).count();
        println!(
            "bench: model+policies {built:?}, compile {} endpoints {compiled:?} ({entries} entries, largest {largest}); \
             label change {updated:?}, recompile all {recompiled:?} ({differ} endpoints changed); classes {}",
            maps.len(),
            s.compiler.classes().classes().len()
        );
        assert_eq!(again.len(), ENDPOINTS);
    }

    #[test]
    fn a_label_change_changes_what_some_endpoints_allow() {
        let mut s = BenchScenario::new(42);
        let sample: Vec<Endpoint> = s.endpoints.iter().step_by(5).cloned().collect();
        let before: Vec<_> = sample.iter().map(|e| s.compiler.compile(e).unwrap()).collect();
        s.label_change(7);
        let changed =
            sample.iter().zip(&before).filter(|(e, b)| s.compiler.compile(e).unwrap() != **b).count();
        assert!(changed > 0, "the label change must matter to someone");
    }

    #[test]
    fn the_scenario_is_what_it_says() {
        let s = BenchScenario::new(1);
        assert_eq!(s.endpoints.len(), ENDPOINTS);
        assert_eq!(s.compiler.cluster().identities().len(), IDENTITIES);
        assert_eq!(s.compiler.cluster().policies().len(), POLICIES);
        // A sample compiles within the budget.
        for e in s.endpoints.iter().step_by(97) {
            s.compiler.compile(e).expect("fits");
        }
    }
}
