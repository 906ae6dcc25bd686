//! BPF_PROG_TEST_RUN tests of ICMP errors about translated flows that
//! travel the other way than the ones in nat.rs: towards a service's
//! backend (fragmentation needed from the client's path about a NodePort
//! reply) and sent by a pod (port unreachable about a NodePort datagram or
//! a masqueraded flow's reply). In each, whoever gets the error must find
//! its own packet in the quote, and the outer addresses must be ones the
//! receiver can route and expects.

mod fixture;

use fixture::*;
use std::net::Ipv4Addr;
use weft_datapath::{
    lb::{Backend, Frontend, FrontendInfo, ServiceMaps},
    maps::*,
};

const UDP: u8 = 17;
const TCP: u8 = 6;

/// An ICMP error's frame: (outer source, outer destination), the quoted
/// (source, sport) and (destination, dport), after checking every checksum
/// the receiver checks.
type Quote = ((Ipv4Addr, Ipv4Addr), (Ipv4Addr, u16), (Ipv4Addr, u16));

fn read_error(out: &[u8]) -> Quote {
    assert_eq!(out[23], 1, "an ICMP message");
    assert_eq!(pkt::csum(&out[14..34]), 0, "outer IPv4 checksum");
    assert_eq!(pkt::csum(&out[34..]), 0, "ICMP checksum");
    let inner = &out[42..];
    assert_eq!(pkt::csum(&inner[..20]), 0, "the quoted header's checksum");
    (
        (addr(&out[26..30]), addr(&out[30..34])),
        (addr(&inner[12..16]), port(&inner[20..22])),
        (addr(&inner[16..20]), port(&inner[22..24])),
    )
}

fn nodeport(f: &Fixture, port: u16, proto: u8, flags: u8, backend: Ipv4Addr, be_port: u16) {
    let maps = ServiceMaps::open(&f.base).unwrap();
    let fe = Frontend { address: NODE, port, proto };
    let info = FrontendInfo { rev_nat_id: 31, flags: LB_F_NODEPORT | flags, affinity_timeout: 0 };
    maps.put(fe, info, &[Backend { id: 6, address: backend, port: be_port, proto }]).unwrap();
}

fn native(f: &mut Fixture) {
    let mut c = f.dp.config().unwrap();
    c.mode = MODE_NATIVE;
    f.dp.set_config(c).unwrap();
}

#[test]
fn fragmentation_needed_about_a_nodeport_reply_reaches_the_local_backend_about_its_own_packet() {
    let mut f = masquerading(61000, 61099);
    nodeport(&f, 30080, TCP, 0, POD_A, 8080);
    let syn = pkt::tcp(ROUTER_MAC, ROUTER_MAC, CLIENT, 50000, NODE, 30080, pkt::TCP_SYN);
    let (v, got) = run(&mut f, "from_network", &syn);
    assert_eq!((v, addr(&got[30..34])), (TC_ACT_REDIRECT, POD_A), "the SYN reaches the backend");
    let synack = pkt::tcp(MAC_A, LXC_A, POD_A, 8080, CLIENT, 50000, pkt::TCP_SYN | pkt::TCP_ACK);
    let (v, reply) = run(&mut f, "from_container", &synack);
    assert_eq!((v, addr(&reply[26..30]), port(&reply[34..36])), (TC_ACT_REDIRECT, NODE, 30080));
    events(&mut f);

    // A router on the client's path cannot forward the reply as it left.
    let (v, out) = run(&mut f, "from_network", &frag_needed(ROUTER, NODE, &reply));
    assert_eq!(v, TC_ACT_REDIRECT, "to the backend; drops: {:?}", drop_reasons(&mut f));
    assert_eq!(&out[0..6], &MAC_A, "delivered to the backend pod");
    let (outer, src, dst) = read_error(&out);
    assert_eq!(outer, (ROUTER, POD_A), "from the router, to the backend");
    assert_eq!(src, (POD_A, 8080), "quoting the backend's own packet");
    assert_eq!(dst, (CLIENT, 50000));
    assert_eq!(port(&out[40..42]), 1400, "the MTU is kept");
    let ev = events(&mut f);
    let to_ep = ev.iter().find(|e| e.observation_point.as_deref() == Some("to-endpoint")).unwrap();
    assert_eq!(to_ep.state, "related", "delivered on the flow's entry");
}

#[test]
fn fragmentation_needed_about_a_nodeport_reply_goes_to_the_other_nodes_backend_about_its_packet() {
    let mut f = masquerading(61000, 61099);
    native(&mut f);
    nodeport(&f, 30080, TCP, LB_F_SNAT, REMOTE_POD, 8080);
    let syn = pkt::tcp(ROUTER_MAC, ROUTER_MAC, CLIENT, 50000, NODE, 30080, pkt::TCP_SYN);
    let (_, sent) = run(&mut f, "from_network", &syn);
    let nat_port = port(&sent[34..36]);
    let synack =
        pkt::tcp(ROUTER_MAC, ROUTER_MAC, REMOTE_POD, 8080, NODE, nat_port, pkt::TCP_SYN | pkt::TCP_ACK);
    let (v, reply) = run(&mut f, "from_network", &synack);
    assert_eq!((v, addr(&reply[26..30]), port(&reply[34..36])), (TC_ACT_REDIRECT, NODE, 30080));

    let (v, out) = run(&mut f, "from_network", &frag_needed(ROUTER, NODE, &reply));
    assert_eq!(v, TC_ACT_REDIRECT, "on to the backend's node; drops: {:?}", drop_reasons(&mut f));
    let (outer, src, dst) = read_error(&out);
    assert_eq!(outer, (ROUTER, REMOTE_POD), "to the backend");
    assert_eq!(src, (REMOTE_POD, 8080), "quoting the backend's own packet");
    assert_eq!(dst, (NODE, nat_port), "to this node's port of the flow, as the backend sent it");
}

#[test]
fn a_backends_port_unreachable_about_a_nodeport_datagram_leaves_as_the_node_about_the_node_port() {
    let mut f = masquerading(61000, 61099);
    nodeport(&f, 30053, UDP, 0, POD_A, 5353);
    let q = pkt::udp(ROUTER_MAC, ROUTER_MAC, CLIENT, 50000, NODE, 30053, 20);
    let (v, got) = run(&mut f, "from_network", &q);
    assert_eq!((v, addr(&got[30..34]), port(&got[36..38])), (TC_ACT_REDIRECT, POD_A, 5353));
    // Nothing listens on 5353 in the pod.
    let err = pkt::icmp_error(MAC_A, LXC_A, POD_A, CLIENT, 3, 3, &got);
    let (v, out) = run(&mut f, "from_container", &err);
    assert_eq!(v, TC_ACT_REDIRECT, "out of the node's device; drops: {:?}", drop_reasons(&mut f));
    let (outer, src, dst) = read_error(&out);
    assert_eq!(outer, (NODE, CLIENT), "from the node (the client cannot route to a pod)");
    assert_eq!(src, (CLIENT, 50000));
    assert_eq!(dst, (NODE, 30053), "quoting the datagram as the client sent it");
}

#[test]
fn a_remote_backends_port_unreachable_about_a_nodeport_datagram_reaches_the_client_about_the_node_port() {
    let mut f = masquerading(61000, 61099);
    native(&mut f);
    nodeport(&f, 30053, UDP, LB_F_SNAT, REMOTE_POD, 5353);
    let q = pkt::udp(ROUTER_MAC, ROUTER_MAC, CLIENT, 50000, NODE, 30053, 20);
    let (_, sent) = run(&mut f, "from_network", &q);
    assert_eq!(addr(&sent[30..34]), REMOTE_POD);
    // The backend's node sends its pod's error to this node (native).
    let err = pkt::icmp_error(ROUTER_MAC, ROUTER_MAC, REMOTE_POD, NODE, 3, 3, &sent);
    let (v, out) = run(&mut f, "from_network", &err);
    assert_eq!(v, TC_ACT_REDIRECT, "back out to the client; drops: {:?}", drop_reasons(&mut f));
    let (outer, src, dst) = read_error(&out);
    assert_eq!(outer, (NODE, CLIENT), "from the node");
    assert_eq!(src, (CLIENT, 50000));
    assert_eq!(dst, (NODE, 30053), "quoting the datagram as the client sent it");
}

#[test]
fn a_pods_port_unreachable_about_a_masqueraded_flows_reply_leaves_as_the_node() {
    let mut f = masquerading(61000, 61099);
    let q = pkt::udp(MAC_A, LXC_A, POD_A, 40000, EXT, 53, 20);
    let (_, left) = run(&mut f, "from_container", &q);
    let nat_port = port(&left[34..36]);
    let answer = pkt::udp(ROUTER_MAC, ROUTER_MAC, EXT, 53, NODE, nat_port, 20);
    let (v, got) = run(&mut f, "from_network", &answer);
    assert_eq!((v, addr(&got[30..34]), port(&got[36..38])), (TC_ACT_REDIRECT, POD_A, 40000));
    // The pod's socket closed before the answer came.
    let err = pkt::icmp_error(MAC_A, LXC_A, POD_A, EXT, 3, 3, &got);
    let (v, out) = run(&mut f, "from_container", &err);
    assert_eq!(v, TC_ACT_REDIRECT, "out of the node's device; drops: {:?}", drop_reasons(&mut f));
    let (outer, src, dst) = read_error(&out);
    assert_eq!(outer, (NODE, EXT), "from the node, never the pod's address");
    assert_eq!(src, (EXT, 53));
    assert_eq!(dst, (NODE, nat_port), "quoting the answer as it was sent");
}

#[test]
fn a_pods_port_unreachable_to_a_pod_on_another_node_is_sent_there() {
    let mut f = masquerading(61000, 61099);
    native(&mut f);
    let q = pkt::udp(ROUTER_MAC, ROUTER_MAC, REMOTE_POD, 41000, POD_A, 7777, 20);
    let (v, got) = run(&mut f, "from_network", &q);
    assert_eq!((v, addr(&got[30..34])), (TC_ACT_REDIRECT, POD_A));
    let err = pkt::icmp_error(MAC_A, LXC_A, POD_A, REMOTE_POD, 3, 3, &got);
    let (v, out) = run(&mut f, "from_container", &err);
    assert_eq!(v, TC_ACT_REDIRECT, "towards the other node; drops: {:?}", drop_reasons(&mut f));
    let (outer, src, dst) = read_error(&out);
    assert_eq!(outer, (POD_A, REMOTE_POD), "untranslated: no NAT between pods");
    assert_eq!((src, dst), ((REMOTE_POD, 41000), (POD_A, 7777)));
}

#[test]
fn a_pods_icmp_error_about_no_flow_of_its_own_is_dropped_with_its_reason() {
    let mut f = masquerading(61000, 61099);
    let never = pkt::udp(ROUTER_MAC, ROUTER_MAC, EXT, 53, POD_A, 40000, 20);
    let err = pkt::icmp_error(MAC_A, LXC_A, POD_A, EXT, 3, 3, &never);
    let (v, _) = run(&mut f, "from_container", &err);
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(drop_reasons(&mut f), vec!["ICMP error about no flow of the pod".to_string()]);
}

// ---- What a hostile pod can send as an "ICMP error", and a PMTU
// ---- error about a NodePort the host serves itself.

const POD_C: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 4);

fn as_pod(f: &mut Fixture, ip: Ipv4Addr, ep: u16) {
    f.dp.lxc().unwrap().insert(TEST_IFINDEX, LxcInfo { ip4: ip_to_be(ip), ep_id: ep, pad: 0 }, 0).unwrap();
}

fn enforce(f: &Fixture, ep: u16, ingress: bool, egress: bool) {
    weft_datapath::policy::PolicyMaps::open(&f.base)
        .unwrap()
        .set_endpoint(
            ep,
            Some(PolicyEndpoint { ingress: ingress as u8, egress: egress as u8, pad: 0, revision: 1 }),
        )
        .unwrap();
}

/// Pod A (egress: nothing allowed) sends pod B (ingress: nothing allowed)
/// a "port unreachable" quoting B's own datagram to a third pod C. A never
/// saw that datagram; B's kernel would take the error for its flow to C
/// (ECONNREFUSED on a connected UDP socket, a lowered PMTU for TCP with
/// code 4). The ICMP payload after the quote is A's to choose. It must be
/// dropped: the outer header does not answer the quoted packet.
#[test]
fn a_pod_cannot_forge_an_error_about_another_pods_flow_past_policy() {
    let mut f = fixture();
    f.dp.put_endpoint(
        POD_C,
        EndpointInfo {
            ifindex: 4343,
            sec_identity: 258,
            ep_id: 33,
            flags: 0,
            mac: [2, 0, 0, 0, 0, 0xc1],
            node_mac: [2, 0, 0, 0, 0, 0xc2],
        },
    )
    .unwrap();
    // B's own flow to C.
    as_pod(&mut f, POD_B, 22);
    let b_to_c = pkt::udp(MAC_B, LXC_B, POD_B, 5000, POD_C, 53, 20);
    assert_eq!(run(&mut f, "from_container", &b_to_c).0, TC_ACT_REDIRECT);
    // Lock both down.
    enforce(&f, 11, false, true);
    enforce(&f, 22, true, false);
    as_pod(&mut f, POD_A, 11);
    let plain = pkt::udp(MAC_A, LXC_A, POD_A, 6000, POD_B, 53, 20);
    assert_eq!(run(&mut f, "from_container", &plain).0, TC_ACT_SHOT, "A may not reach B");
    events(&mut f);

    let forged = pkt::icmp_error(MAC_A, LXC_A, POD_A, POD_B, 3, 3, &b_to_c);
    let (v, out) = run(&mut f, "from_container", &forged);
    assert_eq!(
        v,
        TC_ACT_SHOT,
        "forged error delivered to B (dst mac {:02x?}); drops: {:?}",
        &out[0..6],
        drop_reasons(&mut f)
    );
}

/// A NodePort backend pod's "error" about its NodePort datagram, sent to
/// any address but the client: the node rewrites it to come from its own
/// address and puts it on the wire to that address.
#[test]
fn a_backend_pod_cannot_make_the_node_send_icmp_as_itself_anywhere() {
    let mut f = masquerading(61000, 61099);
    nodeport(&f, 30053, UDP, 0, POD_A, 5353);
    let q = pkt::udp(ROUTER_MAC, ROUTER_MAC, CLIENT, 50000, NODE, 30053, 20);
    let (_, got) = run(&mut f, "from_network", &q);
    let victim = Ipv4Addr::new(192, 0, 2, 77);
    let forged = pkt::icmp_error(MAC_A, LXC_A, POD_A, victim, 3, 3, &got);
    let (v, out) = run(&mut f, "from_container", &forged);
    assert_ne!(
        (v, addr(&out[26..30]), addr(&out[30..34])),
        (TC_ACT_REDIRECT, NODE, victim),
        "the node sent the pod's ICMP, as itself, to an address that never had the flow"
    );
}

/// Fragmentation needed about the reply of a NodePort the host serves
/// (nodeport_to_host + to-network): the host must hear it quoting its own
/// port, or its TCP never lowers the path MTU.
#[test]
fn fragmentation_needed_about_a_host_served_nodeport_reply_reaches_the_host() {
    let mut f = masquerading(61000, 61099);
    nodeport(&f, 30080, TCP, 0, NODE, 8080);
    let mut c = f.dp.config().unwrap();
    c.flags |= CFG_F_HOST_BACKENDS;
    f.dp.set_config(c).unwrap();
    let syn = pkt::tcp(ROUTER_MAC, ROUTER_MAC, CLIENT, 50000, NODE, 30080, pkt::TCP_SYN);
    assert_eq!(run(&mut f, "from_network", &syn).0, TC_ACT_OK);
    let host_mac = [0x02, 0, 0, 0, 0, 0x01];
    let synack = pkt::tcp(host_mac, ROUTER_MAC, NODE, 8080, CLIENT, 50000, pkt::TCP_SYN | pkt::TCP_ACK);
    let (_, reply) = run(&mut f, "to_network", &synack);
    assert_eq!(port(&reply[34..36]), 30080);
    events(&mut f);
    let (v, out) = run(&mut f, "from_network", &frag_needed(ROUTER, NODE, &reply));
    assert_eq!(v, TC_ACT_OK, "up to the host; drops: {:?}", drop_reasons(&mut f));
    let (_, src, _) = read_error(&out);
    assert_eq!(src, (NODE, 8080), "quoting the host's own segment");
}

/// A large ping with echo id 0 (first fragment): ct_extract returns from
/// ct_fragment before it marks the echo, so nat_proto_ok sees id 0 and no
/// echo mark.
#[test]
fn a_fragmented_ping_with_id_0_is_masqueraded_too() {
    let mut f = masquerading(61000, 61099);
    let mut body = vec![8u8, 0, 0, 0, 0, 0, 0, 1];
    body.extend_from_slice(&[0xab; 64]);
    let frag = pkt::ipv4_fragment(MAC_A, LXC_A, POD_A, EXT, 1, 77, 0, true, &body);
    let (v, _) = run(&mut f, "from_container", &frag);
    assert_eq!(v, TC_ACT_REDIRECT, "drops: {:?}", drop_reasons(&mut f));
}
