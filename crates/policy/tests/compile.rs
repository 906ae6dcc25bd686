//! Map sizes (allow-all is O(1), namespace-wide rules O(1) per namespace
//! however many identities the namespace has), the entry budget, the host
//! entry, and the errors that name a policy.

mod common;

use common::{cnp, gnp, knp, labels};
use serde_json::json;
use std::net::Ipv4Addr;
use weft_policy::{
    CompileError, Compiler, Direction, Endpoint, Entry, Identity, Key, L4, Outcome, Packet, Peer,
    PolicyDocument, RuleRef, lookup,
    model::{HOST, WORLD},
};

fn doc(v: serde_json::Value) -> PolicyDocument {
    PolicyDocument::from_json(&v).unwrap()
}

/// Namespaces x (id 1) and y (id 2), `per_ns` identities in each with
/// distinct labels, and an endpoint in x.
fn big(per_ns: u32) -> (Compiler, Endpoint) {
    let mut c = Compiler::new();
    c.upsert_namespace("x", 1, labels(&[("ns", "x")])).unwrap();
    c.upsert_namespace("y", 2, labels(&[("ns", "y")])).unwrap();
    for i in 0..per_ns {
        for (k, ns) in ["x", "y"].iter().enumerate() {
            let pod = format!("p{i}");
            let identity = Identity {
                namespace: ns.to_string(),
                labels: labels(&[("pod", &pod)]),
                ..Identity::default()
            };
            c.upsert_identity(1000 + i * 2 + k as u32, identity).unwrap();
        }
    }
    let ep = Endpoint {
        identity: 1000,
        namespace: "x".into(),
        labels: labels(&[("pod", "p0")]),
        named_ports: Default::default(),
        addr: Ipv4Addr::new(10, 244, 1, 1),
    };
    (c, ep)
}

#[test]
fn allow_from_all_is_one_entry_per_direction() {
    let (mut c, ep) = big(100);
    c.upsert_policy(doc(knp(
        "x",
        "allow-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]}),
    )))
    .unwrap();
    let p = c.compile(&ep).unwrap();
    let any = |e: &Entry| e.key == Key { peer: Peer::Any, cidr_class: 0, l4: L4::Any } && e.verdict.allowed();
    assert_eq!(p.egress.entries.len(), 1);
    assert!(any(&p.egress.entries[0]));
    // Plus the host's entry on ingress.
    assert_eq!(p.ingress.entries.len(), 2, "{:#?}", p.ingress.entries);
    assert!(any(&p.ingress.entries[0]));
    assert_eq!(p.ingress.entries[1].key, Key { peer: Peer::Identity(HOST), cidr_class: 0, l4: L4::Any });
    assert_eq!(p.ingress.entries[1].verdict.rule, RuleRef::HostAlwaysAllowed);
}

#[test]
fn namespace_wide_rules_do_not_grow_with_identities() {
    for per_ns in [10, 1000] {
        let (mut c, ep) = big(per_ns);
        // From all of namespace y, on TCP 80.
        c.upsert_policy(doc(knp(
            "x",
            "from-y",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                                                   "ports": [{"port": 80}]}]}),
        )))
        .unwrap();
        // From every pod of x itself (podSelector {}), any port.
        c.upsert_policy(doc(knp(
            "x",
            "same-ns",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
        )))
        .unwrap();
        // Egress: a Calico namespace-wide rule across namespaces.
        c.upsert_policy(doc(cnp(
            "x",
            "to-y",
            json!({"egress": [{"action": "Allow", "destination": {"namespaceSelector": "ns == 'y'"}}]}),
        )))
        .unwrap();
        let p = c.compile(&ep).unwrap();
        // Ingress: end-of-tier deny, (y, TCP 80), (x, any), host.
        assert_eq!(p.ingress.entries.len(), 4, "{per_ns} per namespace: {:#?}", p.ingress.entries);
        // Egress: end-of-tier deny, (y, any).
        assert_eq!(p.egress.entries.len(), 2, "{per_ns} per namespace: {:#?}", p.egress.entries);
    }
}

#[test]
fn identities_get_entries_only_where_they_differ() {
    let (mut c, ep) = big(200);
    // Deny p7 of y, allow the rest of y: one identity entry, one namespace entry.
    c.upsert_policy(doc(gnp(
        "deny-p7",
        json!({"order": 1, "ingress": [
            {"action": "Deny", "source": {"selector": "pod == 'p7'", "namespaceSelector": "ns == 'y'"}},
            {"action": "Allow", "source": {"namespaceSelector": "ns == 'y'"}}]}),
    )))
    .unwrap();
    let p = c.compile(&ep).unwrap();
    let peers: Vec<Peer> = p.ingress.entries.iter().map(|e| e.key.peer).collect();
    assert_eq!(
        peers,
        vec![Peer::Any, Peer::Namespace(2), Peer::Identity(HOST), Peer::Identity(1000 + 7 * 2 + 1)]
    );
}

#[test]
fn over_budget_is_an_error() {
    let (c, ep) = big(50);
    let mut c = c.with_entry_budget(20);
    // Every y pod whose name starts with p1 gets an entry of its own.
    c.upsert_policy(doc(gnp(
        "p1-pods",
        json!({"ingress": [{"action": "Allow", "source": {"selector": "pod starts with 'p1'"}}]}),
    )))
    .unwrap();
    match c.compile(&ep) {
        Err(CompileError::TooManyEntries { needed, limit: 20 }) => assert!(needed > 20, "{needed}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn not_enforced_directions_have_no_entries() {
    let (mut c, ep) = big(3);
    let p = c.compile(&ep).unwrap();
    assert!(!p.ingress.enforced && !p.egress.enforced && p.is_empty());
    c.upsert_policy(doc(knp("x", "deny-in", json!({"podSelector": {}, "policyTypes": ["Ingress"]}))))
        .unwrap();
    let p = c.compile(&ep).unwrap();
    assert!(p.ingress.enforced && !p.egress.enforced);
    // The host still gets in; the world does not.
    let packet = |peer| Packet {
        direction: Direction::Ingress,
        peer,
        peer_addr: Ipv4Addr::new(10, 0, 0, 9),
        proto: 6,
        dport: 10250,
    };
    for (peer, outcome) in [(HOST, Outcome::Allow), (WORLD, Outcome::Deny)] {
        let got = lookup(&p.ingress, &c.probe(&packet(peer)));
        assert_eq!(got, c.decide(&ep, &packet(peer)).unwrap());
        assert_eq!(got.outcome, outcome);
    }
}

#[test]
fn unknown_tier_names_the_policy() {
    let (mut c, ep) = big(2);
    c.upsert_policy(doc(gnp("in-nowhere", json!({"tier": "security", "ingress": [{"action": "Allow"}]}))))
        .unwrap();
    let e = c.compile(&ep).unwrap_err();
    assert_eq!(e.to_string(), "GlobalNetworkPolicy in-nowhere: spec.tier: tier \"security\" does not exist");
    let packet = Packet {
        direction: Direction::Ingress,
        peer: WORLD,
        peer_addr: Ipv4Addr::new(1, 1, 1, 1),
        proto: 6,
        dport: 1,
    };
    assert_eq!(c.decide(&ep, &packet), Err(e));
    c.set_tier("security", 10.0);
    assert!(c.compile(&ep).is_ok());
}

#[test]
fn source_ports_are_refused_not_ignored() {
    let (mut c, ep) = big(2);
    let e = c
        .upsert_policy(doc(cnp(
            "x",
            "from-low-ports",
            json!({"ingress": [{"action": "Allow", "protocol": "TCP", "source": {"ports": ["1:1023"]}}]}),
        )))
        .unwrap_err();
    let CompileError::Unenforceable { policy, field, .. } = &e else { panic!("{e:?}") };
    assert_eq!((policy.name.as_str(), field.as_str()), ("from-low-ports", "spec.ingress[0].source.ports"));
    // Stored, and every endpoint it applies to fails to compile.
    assert_eq!(c.refusal(policy), Some(&e));
    assert_eq!(c.compile(&ep), Err(e.clone()));
    // Endpoints it does not apply to are fine.
    let other = Endpoint { namespace: "y".into(), ..ep.clone() };
    assert!(c.compile(&other).is_ok());
    assert!(c.remove_policy(&policy.clone()));
    assert!(c.compile(&ep).is_ok());
}

#[test]
fn classes_are_exposed_for_the_datapath() {
    let (mut c, _) = big(1);
    c.upsert_policy(doc(knp(
        "x",
        "cidr",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}]}),
    )))
    .unwrap();
    let classes = c.classes().classes();
    assert_eq!(classes.len(), 2);
    assert_eq!(c.classes().classify(Ipv4Addr::new(10, 1, 2, 3)), classes[1].1);
    assert_eq!(c.classes().classify(Ipv4Addr::new(11, 1, 2, 3)), 0);
}

/// Told the pod pool, the compiler leaves out entries pairing a namespace
/// or identity with a class no pod address can have (172.16/12 deny rules,
/// 192.168/16, the metadata address), and the map still decides every
/// packet a pod can send like the reference evaluator.
#[test]
fn a_pod_pool_drops_entries_no_pod_address_can_reach_and_agrees_with_decide() {
    use weft_policy::scenario::BenchScenario;
    // The scenario tells its compiler the pool (10.0.0.0/8), as the agent
    // does; `full` forgets it.
    let mut full = BenchScenario::new(7);
    full.compiler = full.compiler.clone().with_pod_pools(vec![]);
    let pooled = BenchScenario::new(7);
    let sample: Vec<&Endpoint> = full.endpoints.iter().step_by(37).collect();
    let (mut n_full, mut n_pooled) = (0, 0);
    for ep in &sample {
        let a = full.compiler.compile(ep).unwrap();
        let b = pooled.compiler.compile(ep).unwrap();
        n_full += a.len();
        n_pooled += b.len();
        // Peers: every sampled endpoint (a pod at its address), and
        // addresses outside the pool as the world.
        let mut peers: Vec<(u32, Ipv4Addr)> = sample.iter().map(|p| (p.identity, p.addr)).collect();
        peers.extend([
            (WORLD, Ipv4Addr::new(172, 20, 1, 1)),
            (WORLD, Ipv4Addr::new(192, 168, 3, 4)),
            (WORLD, Ipv4Addr::new(169, 254, 169, 254)),
        ]);
        for (peer, addr) in peers {
            for dir in [Direction::Ingress, Direction::Egress] {
                for (proto, dport) in
                    [(6, 80), (6, 443), (6, 5432), (6, 8050), (6, 1023), (17, 53), (1, 0), (6, 9999)]
                {
                    let pkt = Packet { direction: dir, peer, peer_addr: addr, proto, dport };
                    let want = pooled.compiler.decide(ep, &pkt).unwrap();
                    let got = lookup(b.direction(dir), &pooled.compiler.probe(&pkt));
                    assert_eq!(got.outcome, want.outcome, "endpoint {} {pkt:?}", ep.identity);
                }
            }
        }
    }
    // In this scenario most classes (10.x/16 excepts) hold pod addresses;
    // the external ones (172.16/12, 192.168/16, 169.254.169.254) go.
    assert!(n_pooled * 10 < n_full * 9, "the pool should save at least a tenth: {n_pooled} vs {n_full}");
    eprintln!("entries over {} endpoints: {n_full} without the pool, {n_pooled} with it", sample.len());
}
