//! BPF_PROG_TEST_RUN tests of policy (bpf/lib/policy.h): entries written by
//! hand the way the agent's compiler writes them, crafted packets through
//! the real pipeline, checking verdicts, drop events, policy-verdict events
//! and that replies pass on their conntrack entry alone.

mod fixture;

use fixture::*;
use std::net::Ipv4Addr;
use weft_datapath::{conntrack::Conntrack, events::MonitorEvent, maps::*, policy::PolicyMaps};

const EP_A: u16 = 11;
const EP_B: u16 = 22;
const ID_A: u32 = 256;

/// The L4 part of a key: any protocol, a protocol, or a port prefix.
#[derive(Clone, Copy)]
enum L4 {
    Any,
    Proto(u8),
    Port(u8, u16, u8),
}

fn key(ep: u16, dir: u8, kind: u8, peer: u32, class: u32, l4: L4) -> PolicyKey {
    let (prefixlen, proto, dport) = match l4 {
        L4::Any => (POLICY_STATIC_BITS, 0, 0),
        L4::Proto(p) => (POLICY_STATIC_BITS + 8, p, 0),
        L4::Port(p, port, len) => (POLICY_STATIC_BITS + 8 + len as u32, p, port.to_be()),
    };
    PolicyKey {
        prefixlen,
        ep_id: ep,
        direction: dir,
        peer_kind: kind,
        peer,
        cidr_class: class,
        pad: 0,
        proto,
        dport,
    }
}

fn put(f: &Fixture, k: PolicyKey, action: u8, rule: u32) {
    let maps = PolicyMaps::open(&f.base).unwrap();
    maps.put(&[(k, PolicyEntry { action, flags: 0, prefixlen: k.prefixlen as u16, rule })]).unwrap();
}

fn enforce(f: &Fixture, ep: u16, ingress: bool, egress: bool) {
    let maps = PolicyMaps::open(&f.base).unwrap();
    maps.set_endpoint(
        ep,
        Some(PolicyEndpoint { ingress: ingress as u8, egress: egress as u8, pad: 0, revision: 1 }),
    )
    .unwrap();
}

fn verdicts(ev: &[MonitorEvent]) -> Vec<(u16, u32, String, String, String, u32)> {
    ev.iter()
        .filter_map(|e| {
            let p = e.policy.as_ref()?;
            Some((
                e.source,
                e.src_identity,
                p.direction.clone(),
                p.action.clone(),
                p.match_kind.clone(),
                p.rule,
            ))
        })
        .collect()
}

fn syn(dport: u16) -> Vec<u8> {
    pkt::tcp(MAC_A, LXC_A, POD_A, 40000, POD_B, dport, pkt::TCP_SYN)
}

#[test]
fn a_new_flow_nothing_allows_is_dropped_as_policy_denied_with_a_verdict() {
    let mut f = fixture();
    enforce(&f, EP_B, true, false);
    assert_eq!(run(&mut f, "from_container", &syn(80)).0, TC_ACT_SHOT);
    let ev = events(&mut f);
    let drop = ev.iter().find(|e| e.kind == "drop").expect("a drop event");
    assert_eq!(drop.reason_text.as_deref(), Some("Policy denied"));
    assert_eq!(drop.file.as_deref(), Some("policy.h"));
    let policy_h = include_str!("../../../bpf/lib/policy.h");
    let line = policy_h.lines().position(|l| l.contains("return DROP(DROP_POLICY);")).unwrap() + 1;
    assert_eq!(drop.line, Some(line as u16));
    assert_eq!((drop.dst_endpoint, drop.src_identity), (EP_B, ID_A));
    assert_eq!(verdicts(&ev), vec![(EP_B, ID_A, "ingress".into(), "deny".into(), "none".into(), 0)]);
    let line = ev.iter().find(|e| e.kind == "policy-verdict").unwrap().line();
    assert!(
        line.contains("local EP ID 22, remote ID 256, proto 6, ingress, action deny, match none"),
        "{line}"
    );
    let ct = Conntrack::open(&f.base).unwrap().entries().unwrap();
    assert!(ct.iter().all(|(k, _)| k.scope != CT_INGRESS), "a denied flow leaves no ingress entry: {ct:?}");
    assert_eq!(f.dp.drop_counts().unwrap(), vec![(133, 1)]);
}

#[test]
fn an_allowed_port_passes_and_creates_the_flow_and_its_reply_needs_no_policy() {
    let mut f = fixture();
    enforce(&f, EP_B, true, false);
    put(&f, key(EP_B, POLICY_INGRESS, PEER_IDENTITY, ID_A, 0, L4::Port(6, 80, 16)), POLICY_ALLOW, 7);
    assert_eq!(run(&mut f, "from_container", &syn(80)).0, TC_ACT_REDIRECT);
    let ev = events(&mut f);
    assert_eq!(verdicts(&ev), vec![(EP_B, ID_A, "ingress".into(), "allow".into(), "L3-L4".into(), 7)]);
    assert_eq!(Conntrack::open(&f.base).unwrap().entries().unwrap().len(), 2);
    // The same peer on another port: denied.
    assert_eq!(run(&mut f, "from_container", &syn(81)).0, TC_ACT_SHOT);
    events(&mut f);

    // A enforces ingress and allows nothing: B's answer still comes in.
    enforce(&f, EP_A, true, true);
    f.dp.lxc()
        .unwrap()
        .insert(TEST_IFINDEX, LxcInfo { ip4: ip_to_be(POD_B), ep_id: EP_B, pad: 0 }, 0)
        .unwrap();
    let synack = pkt::tcp(MAC_B, LXC_B, POD_B, 80, POD_A, 40000, pkt::TCP_SYN | pkt::TCP_ACK);
    assert_eq!(
        run(&mut f, "from_container", &synack).0,
        TC_ACT_REDIRECT,
        "a reply passes on conntrack alone"
    );
    let ev = events(&mut f);
    assert!(verdicts(&ev).is_empty(), "no policy decision for a reply: {:?}", verdicts(&ev));
    // A new flow from B to A is A's ingress policy's business: denied.
    let other = pkt::tcp(MAC_B, LXC_B, POD_B, 5555, POD_A, 80, pkt::TCP_SYN);
    assert_eq!(run(&mut f, "from_container", &other).0, TC_ACT_SHOT);
}

#[test]
fn a_namespace_entry_covers_every_identity_of_it_and_the_most_specific_peer_decides() {
    let mut f = fixture();
    let maps = PolicyMaps::open(&f.base).unwrap();
    maps.set_identity(ID_A, Some(5)).unwrap();
    maps.set_cidr_class(Ipv4Addr::new(10, 244, 1, 0), 24, Some(9)).unwrap();
    enforce(&f, EP_B, true, false);
    // Any peer in 10.244.1.0/24: deny; namespace 5: allow all protocols.
    put(&f, key(EP_B, POLICY_INGRESS, PEER_ANY, 0, 9, L4::Any), POLICY_DENY, 1);
    put(&f, key(EP_B, POLICY_INGRESS, PEER_NAMESPACE, 5, 0, L4::Any), POLICY_ALLOW, 2);
    assert_eq!(run(&mut f, "from_container", &syn(80)).0, TC_ACT_REDIRECT, "namespace before any+class");
    assert_eq!(
        verdicts(&events(&mut f)),
        vec![(EP_B, ID_A, "ingress".into(), "allow".into(), "L3-Only".into(), 2)]
    );
    // (namespace, class) is looked at before (namespace): deny UDP from it.
    put(&f, key(EP_B, POLICY_INGRESS, PEER_NAMESPACE, 5, 9, L4::Proto(17)), POLICY_DENY, 3);
    let dgram = pkt::udp(MAC_A, LXC_A, POD_A, 40000, POD_B, 53, 4);
    assert_eq!(run(&mut f, "from_container", &dgram).0, TC_ACT_SHOT);
    assert_eq!(verdicts(&events(&mut f))[0].5, 3);
    // ... but only for UDP: TCP misses it and falls to (namespace).
    assert_eq!(run(&mut f, "from_container", &syn(81)).0, TC_ACT_REDIRECT);
    // The identity beats the namespace: ports 8192-8199 allowed (one
    // prefix: 13 bits fixed, 3 free), everything else of A's denied.
    put(&f, key(EP_B, POLICY_INGRESS, PEER_IDENTITY, ID_A, 0, L4::Any), POLICY_DENY, 4);
    put(&f, key(EP_B, POLICY_INGRESS, PEER_IDENTITY, ID_A, 0, L4::Port(6, 8192, 13)), POLICY_ALLOW, 5);
    events(&mut f);
    assert_eq!(run(&mut f, "from_container", &syn(8199)).0, TC_ACT_REDIRECT);
    assert_eq!(run(&mut f, "from_container", &syn(8200)).0, TC_ACT_SHOT);
    assert_eq!(run(&mut f, "from_container", &syn(82)).0, TC_ACT_SHOT);
    let v = verdicts(&events(&mut f));
    assert_eq!(v.iter().map(|v| v.5).collect::<Vec<_>>(), vec![5, 4, 4]);
    assert_eq!(v[0].4, "L3-L4");
}

#[test]
fn egress_is_decided_at_the_source_and_a_pod_always_reaches_itself() {
    let mut f = fixture();
    enforce(&f, EP_A, false, true);
    put(&f, key(EP_A, POLICY_EGRESS, PEER_ANY, 0, 0, L4::Port(6, 80, 16)), POLICY_ALLOW, 1);
    assert_eq!(run(&mut f, "from_container", &syn(80)).0, TC_ACT_REDIRECT);
    assert_eq!(
        verdicts(&events(&mut f)),
        vec![(EP_A, 257, "egress".into(), "allow".into(), "L4-Only".into(), 1)]
    );
    let to_host = pkt::tcp(MAC_A, LXC_A, POD_A, 40001, GW, 22, pkt::TCP_SYN);
    assert_eq!(run(&mut f, "from_container", &to_host).0, TC_ACT_SHOT);
    let ev = events(&mut f);
    assert_eq!(ev.iter().find(|e| e.kind == "drop").unwrap().dst_identity, 1, "the host is identity 1");
    let to_self = pkt::tcp(MAC_A, LXC_A, POD_A, 40002, POD_A, 9, pkt::TCP_SYN);
    assert_eq!(run(&mut f, "from_container", &to_self).0, TC_ACT_REDIRECT, "never isolated from itself");
}
