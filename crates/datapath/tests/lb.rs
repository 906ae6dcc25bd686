//! BPF_PROG_TEST_RUN tests of per-packet service translation (lib/lb.h):
//! a packet to a ClusterIP is rewritten to a backend with valid IPv4 and
//! L4 checksums, every packet of the flow keeps its backend, the reply is
//! translated back, and a service without backends is a drop that says so.

mod fixture;

use fixture::*;
use std::net::Ipv4Addr;
use weft_datapath::{
    conntrack::Conntrack,
    lb::{Backend, Frontend, FrontendInfo, ServiceMaps},
    maps::*,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn service(f: &Fixture, backends: &[Backend]) {
    let maps = ServiceMaps::open(&f.base).unwrap();
    let fe = Frontend { address: VIP, port: 80, proto: 6 };
    maps.put(fe, FrontendInfo { rev_nat_id: 7, ..Default::default() }, backends).unwrap();
}

#[test]
fn a_cluster_ip_becomes_the_flows_backend_and_the_reply_the_service_again() {
    let mut f = fixture();
    service(&f, &[Backend { id: 1, address: POD_B, port: 8080, proto: 6 }]);
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, VIP, 80, pkt::TCP_SYN);
    let (verdict, out) = run(&mut f, "from_container", &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(addr(&out[30..34]), POD_B, "destination rewritten to the backend");
    assert_eq!(u16::from_be_bytes([out[36], out[37]]), 8080, "port rewritten");
    assert_eq!(pkt::csum(&out[14..34]), 0, "IPv4 checksum still valid");
    assert!(l4_ok(&out), "TCP checksum still valid");
    let ev = events(&mut f);
    let from = ev.iter().find(|e| e.observation_point.as_deref() == Some("from-endpoint")).unwrap();
    assert_eq!(from.orig_ip, VIP, "the trace names the service");
    let ct = Conntrack::open(&f.base).unwrap().entries().unwrap();
    let svc = ct.iter().find(|(k, _)| k.scope == CT_SERVICE).expect("the flow's backend is remembered");
    assert_eq!((svc.1.backend_id, svc.1.rev_nat_id), (1, 7));
    let egress = ct.iter().find(|(k, _)| k.scope == CT_EGRESS).unwrap();
    assert_eq!((ip_to_be(POD_B), egress.1.rev_nat_id), (egress.0.daddr, 7), "tracked as to the backend");

    // B answers from 8080: A receives it from the service.
    f.dp.lxc().unwrap().insert(TEST_IFINDEX, LxcInfo { ip4: ip_to_be(POD_B), ep_id: 22, pad: 0 }, 0).unwrap();
    let synack = pkt::tcp(MAC_B, LXC_B, POD_B, 8080, POD_A, 40000, pkt::TCP_SYN | pkt::TCP_ACK);
    let (verdict, out) = run(&mut f, "from_container", &synack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(addr(&out[26..30]), VIP, "source is the service again");
    assert_eq!(u16::from_be_bytes([out[34], out[35]]), 80);
    assert_eq!(pkt::csum(&out[14..34]), 0);
    assert!(l4_ok(&out), "TCP checksum still valid after reverse NAT");
}

#[test]
fn every_packet_of_a_flow_keeps_its_backend_and_udp_checksums_hold() {
    let mut f = fixture();
    let maps = ServiceMaps::open(&f.base).unwrap();
    let dns = Frontend { address: VIP, port: 53, proto: 17 };
    let b: Vec<Backend> = (0..4)
        .map(|i| Backend {
            id: 10 + i,
            address: Ipv4Addr::new(10, 244, 2, 10 + i as u8),
            port: 5353,
            proto: 17,
        })
        .collect();
    maps.put(dns, FrontendInfo { rev_nat_id: 9, ..Default::default() }, &b).unwrap();
    let mut chosen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let q = pkt::udp(MAC_A, LXC_A, POD_A, 41000, VIP, 53, 20);
        let (_, out) = run(&mut f, "from_container", &q);
        chosen.insert(addr(&out[30..34]));
        assert!(l4_ok(&out), "UDP checksum");
    }
    assert_eq!(chosen.len(), 1, "one flow, one backend: {chosen:?}");
}

#[test]
fn a_service_without_backends_answers_port_unreachable_at_once_and_says_why() {
    let mut f = fixture();
    service(&f, &[]);
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, VIP, 80, pkt::TCP_SYN);
    let (verdict, out) = run(&mut f, "from_container", &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the answer goes back to the pod");
    assert_eq!(&out[0..6], &MAC_A, "to the client");
    assert_eq!(&out[6..12], &LXC_A, "from its gateway MAC");
    assert_eq!((out[23], out[34], out[35]), (1, 3, 3), "ICMP destination unreachable, port unreachable");
    assert_eq!((addr(&out[26..30]), addr(&out[30..34])), (VIP, POD_A), "from the service to the client");
    assert_eq!(&out[42..62], &syn[14..34], "quoting the client's IPv4 header");
    assert_eq!(pkt::csum(&out[14..34]), 0);
    assert_eq!(pkt::csum(&out[34..]), 0, "ICMP checksum");
    let ev = events(&mut f);
    let drop = ev.iter().find(|e| e.kind == "drop").unwrap();
    assert_eq!(drop.reason_text.as_deref(), Some("Service backend not found"));
    assert_eq!(drop.file.as_deref(), Some("lb.h"));
}

#[test]
fn session_affinity_keeps_a_client_on_one_backend_across_flows() {
    let mut f = fixture();
    let maps = ServiceMaps::open(&f.base).unwrap();
    let fe = Frontend { address: VIP, port: 80, proto: 6 };
    let b: Vec<Backend> = (0..8)
        .map(|i| Backend {
            id: 20 + i,
            address: Ipv4Addr::new(10, 244, 2, 20 + i as u8),
            port: 8080,
            proto: 6,
        })
        .collect();
    let sticky = FrontendInfo { rev_nat_id: 11, flags: LB_F_AFFINITY, affinity_timeout: 10800 };
    maps.put(fe, sticky, &b).unwrap();
    let mut chosen = std::collections::BTreeSet::new();
    for sport in 42000..42020 {
        let syn = pkt::tcp(MAC_A, LXC_A, POD_A, sport, VIP, 80, pkt::TCP_SYN);
        let (_, out) = run(&mut f, "from_container", &syn);
        chosen.insert(addr(&out[30..34]));
    }
    assert_eq!(chosen.len(), 1, "twenty flows of one client, one backend: {chosen:?}");
    // Without affinity the same twenty flows spread.
    maps.put(fe, FrontendInfo { rev_nat_id: 12, ..Default::default() }, &b).unwrap();
    let mut spread = std::collections::BTreeSet::new();
    for sport in 43000..43020 {
        let syn = pkt::tcp(MAC_A, LXC_A, POD_A, sport, VIP, 80, pkt::TCP_SYN);
        let (_, out) = run(&mut f, "from_container", &syn);
        spread.insert(addr(&out[30..34]));
    }
    assert!(spread.len() > 1, "random without affinity: {spread:?}");
}

#[test]
fn a_flow_whose_backend_leaves_the_service_moves_to_another_at_its_next_packet() {
    let mut f = fixture();
    let maps = ServiceMaps::open(&f.base).unwrap();
    let dns = Frontend { address: VIP, port: 53, proto: 17 };
    let one = Backend { id: 31, address: Ipv4Addr::new(10, 244, 2, 31), port: 5353, proto: 17 };
    let two = Backend { id: 32, address: Ipv4Addr::new(10, 244, 2, 32), port: 5353, proto: 17 };
    let info = FrontendInfo { rev_nat_id: 13, ..Default::default() };
    maps.put(dns, info, &[one]).unwrap();
    let q = pkt::udp(MAC_A, LXC_A, POD_A, 41000, VIP, 53, 20);
    assert_eq!(addr(&run(&mut f, "from_container", &q).1[30..34]), one.address);
    // `one` leaves the service (it stays in the backend map: others may
    // use it); the same flow's next datagram goes to `two`.
    maps.put(dns, info, &[two]).unwrap();
    assert_eq!(addr(&run(&mut f, "from_container", &q).1[30..34]), two.address);
}

#[test]
fn a_nodeport_from_outside_reaches_a_local_backend_and_the_reply_leaves_as_the_node() {
    let mut f = fixture();
    let node = Ipv4Addr::new(198, 18, 0, 11);
    let client = Ipv4Addr::new(203, 0, 113, 5);
    let mut c = f.dp.config().unwrap();
    c.node_ip4 = ip_to_be(node);
    c.underlay_ifindex = TEST_IFINDEX;
    c.nodeport_min = 30000;
    c.nodeport_max = 32767;
    f.dp.set_config(c).unwrap();
    let maps = ServiceMaps::open(&f.base).unwrap();
    let np = Frontend { address: node, port: 30080, proto: 6 };
    let info = FrontendInfo { rev_nat_id: 21, flags: LB_F_NODEPORT | LB_F_LOCAL, affinity_timeout: 0 };
    maps.put(np, info, &[Backend { id: 5, address: POD_B, port: 8080, proto: 6 }]).unwrap();

    let mac = [0x02, 0, 0, 0, 0, 0x33];
    let syn = pkt::tcp(mac, mac, client, 50000, node, 30080, pkt::TCP_SYN);
    let (verdict, out) = run(&mut f, "from_network", &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "into the backend pod");
    assert_eq!((addr(&out[30..34]), u16::from_be_bytes([out[36], out[37]])), (POD_B, 8080));
    assert_eq!(&out[0..6], &MAC_B);
    assert!(l4_ok(&out) && pkt::csum(&out[14..34]) == 0, "checksums");
    let ev = events(&mut f);
    let t = ev.iter().find(|e| e.observation_point.as_deref() == Some("from-network")).unwrap();
    assert_eq!((t.orig_ip, t.src_identity), (node, 2), "from the world, to the node's port");

    f.dp.lxc().unwrap().insert(TEST_IFINDEX, LxcInfo { ip4: ip_to_be(POD_B), ep_id: 22, pad: 0 }, 0).unwrap();
    let synack = pkt::tcp(MAC_B, LXC_B, POD_B, 8080, client, 50000, pkt::TCP_SYN | pkt::TCP_ACK);
    let (verdict, out) = run(&mut f, "from_container", &synack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "straight out of the node's device");
    assert_eq!((addr(&out[26..30]), u16::from_be_bytes([out[34], out[35]])), (node, 30080), "as the node");
    assert!(l4_ok(&out) && pkt::csum(&out[14..34]) == 0, "checksums");
    let ev = events(&mut f);
    assert!(ev.iter().any(|e| e.observation_point.as_deref() == Some("to-network")));
}

#[test]
fn a_fragmented_datagram_to_a_cluster_ip_keeps_its_payload_and_reaches_one_backend() {
    let mut f = fixture();
    let maps = ServiceMaps::open(&f.base).unwrap();
    let dns = Frontend { address: VIP, port: 53, proto: 17 };
    maps.put(
        dns,
        FrontendInfo { rev_nat_id: 14, ..Default::default() },
        &[Backend { id: 40, address: POD_B, port: 5353, proto: 17 }],
    )
    .unwrap();
    let mut first_body = vec![0x11u8; 1480];
    first_body[0..2].copy_from_slice(&41000u16.to_be_bytes());
    first_body[2..4].copy_from_slice(&53u16.to_be_bytes());
    first_body[4..6].copy_from_slice(&2008u16.to_be_bytes());
    let first = pkt::ipv4_fragment(MAC_A, LXC_A, POD_A, VIP, 17, 0x7777, 0, true, &first_body);
    let rest = [0x5au8; 528];
    let second = pkt::ipv4_fragment(MAC_A, LXC_A, POD_A, VIP, 17, 0x7777, 185, false, &rest);
    let (v1, out1) = run(&mut f, "from_container", &first);
    let (v2, out2) = run(&mut f, "from_container", &second);
    assert_eq!((v1, v2), (TC_ACT_REDIRECT, TC_ACT_REDIRECT));
    assert_eq!((addr(&out1[30..34]), u16::from_be_bytes([out1[36], out1[37]])), (POD_B, 5353));
    assert_eq!(addr(&out2[30..34]), POD_B, "the later fragment follows the first");
    assert_eq!(&out2[34..], &rest[..], "and its payload is untouched (it has no UDP header)");
    assert_eq!((pkt::csum(&out1[14..34]), pkt::csum(&out2[14..34])), (0, 0));
}

#[test]
fn a_pod_reaching_itself_through_its_service_comes_from_the_hairpin_address_and_hears_the_service() {
    let mut f = fixture();
    service(&f, &[Backend { id: 1, address: POD_A, port: 8080, proto: 6 }]);
    let hairpin = Ipv4Addr::new(169, 254, 42, 1);
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, VIP, 80, pkt::TCP_SYN);
    let (verdict, out) = run(&mut f, "from_container", &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "back into the pod");
    assert_eq!(
        (addr(&out[26..30]), u16::from_be_bytes([out[34], out[35]])),
        (hairpin, 40000),
        "not a martian"
    );
    assert_eq!((addr(&out[30..34]), u16::from_be_bytes([out[36], out[37]])), (POD_A, 8080));
    assert!(l4_ok(&out) && pkt::csum(&out[14..34]) == 0, "checksums");

    // The pod answers the hairpin address through its gateway: it hears
    // the service.
    let synack = pkt::tcp(MAC_A, LXC_A, POD_A, 8080, hairpin, 40000, pkt::TCP_SYN | pkt::TCP_ACK);
    let (verdict, out) = run(&mut f, "from_container", &synack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!((addr(&out[26..30]), u16::from_be_bytes([out[34], out[35]])), (VIP, 80), "from the service");
    assert_eq!((addr(&out[30..34]), u16::from_be_bytes([out[36], out[37]])), (POD_A, 40000), "to the client");
    assert!(l4_ok(&out) && pkt::csum(&out[14..34]) == 0, "checksums");
}

#[test]
fn the_host_per_packet_reaches_a_backend_and_a_service_without_one_refuses_into_the_host() {
    let mut f = fixture();
    let host_mac = [0x02, 0, 0, 0, 0, 0x01];
    service(&f, &[Backend { id: 1, address: POD_B, port: 8080, proto: 6 }]);
    let syn = pkt::tcp(host_mac, host_mac, GW, 45000, VIP, 80, pkt::TCP_SYN);
    let (verdict, out) = run(&mut f, "from_host", &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "into the backend pod");
    assert_eq!((addr(&out[30..34]), u16::from_be_bytes([out[36], out[37]])), (POD_B, 8080));
    assert!(l4_ok(&out) && pkt::csum(&out[14..34]) == 0, "checksums");
    let ev = events(&mut f);
    let from = ev.iter().find(|e| e.observation_point.as_deref() == Some("from-host")).unwrap();
    assert_eq!(from.orig_ip, VIP, "the trace names the service");

    service(&f, &[]);
    let syn = pkt::tcp(host_mac, host_mac, GW, 45001, VIP, 80, pkt::TCP_SYN);
    let (verdict, out) = run(&mut f, "from_host", &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the answer goes up into the host");
    assert_eq!((out[23], out[34], out[35]), (1, 3, 3), "ICMP port unreachable");
    assert_eq!((addr(&out[26..30]), addr(&out[30..34])), (VIP, GW), "from the service to the host");
    assert_eq!(pkt::csum(&out[34..]), 0, "ICMP checksum");
}

/// A NodePort whose backend is the node's host (a hostNetwork pod): the
/// connection goes up to the host's stack on the backend's port, tracked;
/// the host's reply gets the node port back at the underlay's egress
/// (to-network) once the agent has turned that lookup on, and the host's
/// other traffic is left alone.
#[test]
fn a_nodeport_served_by_the_host_goes_up_to_it_and_its_reply_leaves_from_the_node_port() {
    let mut f = masquerading(61000, 61099);
    let maps = ServiceMaps::open(&f.base).unwrap();
    let np = Frontend { address: NODE, port: 30080, proto: 6 };
    let info = FrontendInfo { rev_nat_id: 31, flags: LB_F_NODEPORT, affinity_timeout: 0 };
    maps.put(np, info, &[Backend { id: 6, address: NODE, port: 8080, proto: 6 }]).unwrap();
    let syn = pkt::tcp(ROUTER_MAC, ROUTER_MAC, CLIENT, 50000, NODE, 30080, pkt::TCP_SYN);
    let (verdict, out) = run(&mut f, "from_network", &syn);
    assert_eq!(verdict, TC_ACT_OK, "up to the host: {:?}", drop_reasons(&mut f));
    assert_eq!(
        (addr(&out[30..34]), u16::from_be_bytes([out[36], out[37]])),
        (NODE, 8080),
        "the backend's port"
    );
    assert!(l4_ok(&out) && pkt::csum(&out[14..34]) == 0, "checksums");

    let host_mac = [0x02, 0, 0, 0, 0, 0x01];
    let synack = pkt::tcp(host_mac, ROUTER_MAC, NODE, 8080, CLIENT, 50000, pkt::TCP_SYN | pkt::TCP_ACK);
    let (_, out) = run(&mut f, "to_network", &synack);
    assert_eq!(out, synack, "untouched while no NodePort has the host as a backend (no lookup)");
    let mut c = f.dp.config().unwrap();
    c.flags |= CFG_F_HOST_BACKENDS;
    f.dp.set_config(c).unwrap();
    events(&mut f);
    let (verdict, out) = run(&mut f, "to_network", &synack);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        (addr(&out[26..30]), u16::from_be_bytes([out[34], out[35]])),
        (NODE, 30080),
        "from the node port"
    );
    assert_eq!((addr(&out[30..34]), u16::from_be_bytes([out[36], out[37]])), (CLIENT, 50000));
    assert!(l4_ok(&out) && pkt::csum(&out[14..34]) == 0, "checksums");
    let ev = events(&mut f);
    let to = ev.iter().find(|e| e.observation_point.as_deref() == Some("to-network")).expect("traced");
    assert_eq!(to.state, "reply");

    // The host's own connections from the same port: untouched.
    let own = pkt::tcp(host_mac, ROUTER_MAC, NODE, 8080, EXT, 443, pkt::TCP_SYN);
    assert_eq!(run(&mut f, "to_network", &own).1, own);

    // A UDP NodePort the host serves, with nothing listening: the host's
    // "port unreachable" quotes the datagram as the client sent it.
    let dns = Frontend { address: NODE, port: 30053, proto: 17 };
    let info = FrontendInfo { rev_nat_id: 32, flags: LB_F_NODEPORT, affinity_timeout: 0 };
    maps.put(dns, info, &[Backend { id: 7, address: NODE, port: 5353, proto: 17 }]).unwrap();
    let q = pkt::udp(ROUTER_MAC, ROUTER_MAC, CLIENT, 50001, NODE, 30053, 20);
    let (verdict, got) = run(&mut f, "from_network", &q);
    assert_eq!((verdict, u16::from_be_bytes([got[36], got[37]])), (TC_ACT_OK, 5353));
    let refused = pkt::icmp_error(host_mac, ROUTER_MAC, NODE, CLIENT, 3, 3, &got);
    let (_, out) = run(&mut f, "to_network", &refused);
    let inner = &out[42..];
    assert_eq!(
        (addr(&inner[16..20]), u16::from_be_bytes([inner[22], inner[23]])),
        (NODE, 30053),
        "the node port"
    );
    assert_eq!((addr(&out[26..30]), addr(&out[30..34])), (NODE, CLIENT));
    assert_eq!(pkt::csum(&out[34..]), 0, "ICMP checksum");
    assert_eq!(pkt::csum(&inner[..20]), 0, "the quoted header's checksum");
}

/// A pod (outside socket LB's cgroup) connecting to another node's address
/// on a NodePort: translated per packet with this node's NodePort (the
/// agent programs NodePorts under this node's address only), and the reply
/// comes from the node it asked, not from this one.
#[test]
fn a_pod_reaches_another_nodes_nodeport_per_packet_and_hears_that_node() {
    let mut f = masquerading(61000, 61099);
    let mut c = f.dp.config().unwrap();
    c.mode = MODE_NATIVE;
    f.dp.set_config(c).unwrap();
    let maps = ServiceMaps::open(&f.base).unwrap();
    let np = Frontend { address: NODE, port: 30080, proto: 6 };
    let info = FrontendInfo { rev_nat_id: 31, flags: LB_F_NODEPORT | LB_F_SNAT, affinity_timeout: 0 };
    maps.put(np, info, &[Backend { id: 6, address: REMOTE_POD, port: 8080, proto: 6 }]).unwrap();
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, NODE2, 30080, pkt::TCP_SYN);
    let (verdict, out) = run(&mut f, "from_container", &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "{:?}", drop_reasons(&mut f));
    assert_eq!(
        (addr(&out[30..34]), u16::from_be_bytes([out[36], out[37]])),
        (REMOTE_POD, 8080),
        "to the backend"
    );
    assert_eq!(addr(&out[26..30]), POD_A, "from the pod itself (no SNAT between pods)");
    let synack =
        pkt::tcp(ROUTER_MAC, ROUTER_MAC, REMOTE_POD, 8080, POD_A, 40000, pkt::TCP_SYN | pkt::TCP_ACK);
    let (verdict, out) = run(&mut f, "from_network", &synack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "to the pod");
    assert_eq!(
        (addr(&out[26..30]), u16::from_be_bytes([out[34], out[35]])),
        (NODE2, 30080),
        "from the node it asked"
    );
    assert!(l4_ok(&out) && pkt::csum(&out[14..34]) == 0, "checksums");

    // This node's own address on the NodePort: replies from it, as before.
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, 40001, NODE, 30080, pkt::TCP_SYN);
    assert_eq!(run(&mut f, "from_container", &syn).0, TC_ACT_REDIRECT);
    let synack =
        pkt::tcp(ROUTER_MAC, ROUTER_MAC, REMOTE_POD, 8080, POD_A, 40001, pkt::TCP_SYN | pkt::TCP_ACK);
    let out = run(&mut f, "from_network", &synack).1;
    assert_eq!((addr(&out[26..30]), u16::from_be_bytes([out[34], out[35]])), (NODE, 30080));
}

/// A flow's CT_SERVICE entry is admitted like any conntrack entry: it
/// counts against the limit, and a full table drops a new service flow
/// (with conntrack's reason, not the "no backend" reject) before writing
/// it, so service entries cannot push the LRU into evicting live flows.
#[test]
fn service_entries_count_against_the_conntrack_limit() {
    let mut f = fixture();
    let mut c = f.dp.config().unwrap();
    c.ct_tcp_limit = 3; // one flow: its service entry, A's egress, B's ingress
    f.dp.set_config(c).unwrap();
    service(&f, &[Backend { id: 1, address: POD_B, port: 8080, proto: 6 }]);
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, 50000, VIP, 80, pkt::TCP_SYN);
    assert_eq!(run(&mut f, "from_container", &syn).0, TC_ACT_REDIRECT);
    let ct = Conntrack::open(&f.base).unwrap();
    assert_eq!(ct.live(weft_datapath::conntrack::Table::Tcp).unwrap(), 3, "the service entry is counted");
    events(&mut f);

    let other = pkt::tcp(MAC_A, LXC_A, POD_A, 50001, VIP, 80, pkt::TCP_SYN);
    assert_eq!(run(&mut f, "from_container", &other).0, TC_ACT_SHOT, "dropped, not answered");
    assert_eq!(drop_reasons(&mut f), vec!["CT: Map insertion failed".to_string()]);
    let entries = ct.entries().unwrap();
    assert_eq!(entries.len(), 3, "nothing written for the refused flow: {entries:?}");
}

/// Native routing: the host's per-packet flow from the node's own address
/// (a process bound to it) to a backend on another node; the reply comes
/// back over the underlay to the node's address and must reach the host
/// from the service, not from the backend (the host's socket would answer
/// it with a reset).
#[test]
fn in_native_routing_the_reply_to_the_hosts_flow_from_the_node_address_is_from_the_service() {
    let mut f = masquerading(61000, 61099);
    let mut c = f.dp.config().unwrap();
    c.mode = MODE_NATIVE;
    f.dp.set_config(c).unwrap();
    let host_mac = [0x02, 0, 0, 0, 0, 0x01];
    service(&f, &[Backend { id: 1, address: REMOTE_POD, port: 8080, proto: 6 }]);
    let syn = pkt::tcp(host_mac, host_mac, NODE, 45000, VIP, 80, pkt::TCP_SYN);
    let (verdict, out) = run(&mut f, "from_host", &syn);
    assert_eq!((verdict, addr(&out[30..34])), (TC_ACT_REDIRECT, REMOTE_POD), "routed to the backend's node");
    let synack = pkt::tcp(ROUTER_MAC, ROUTER_MAC, REMOTE_POD, 8080, NODE, 45000, pkt::TCP_SYN | pkt::TCP_ACK);
    let (verdict, out) = run(&mut f, "from_network", &synack);
    assert_eq!(verdict, TC_ACT_OK, "up to the host");
    assert_eq!((addr(&out[26..30]), u16::from_be_bytes([out[34], out[35]])), (VIP, 80), "from the service");
    assert!(l4_ok(&out) && pkt::csum(&out[14..34]) == 0, "checksums");
}

/// Maglev: two nodes whose tables name the same backends (under their own
/// ids) send every flow to the same backend; removing one backend moves
/// its flows and hardly any other.
#[test]
fn with_maglev_every_node_picks_the_same_backend_and_a_removal_moves_little_else() {
    use weft_service::maglev::{MaglevBackend, table};
    let addrs: Vec<Ipv4Addr> = (0..3).map(|i| Ipv4Addr::new(10, 244, 2, 30 + i)).collect();
    let program = |f: &Fixture, first_id: u32, members: &[Ipv4Addr]| {
        let maps = ServiceMaps::open(&f.base).unwrap();
        let backends: Vec<Backend> = members
            .iter()
            .enumerate()
            .map(|(i, a)| Backend { id: first_id + i as u32, address: *a, port: 8080, proto: 6 })
            .collect();
        let m: Vec<MaglevBackend> =
            backends.iter().map(|b| MaglevBackend { id: b.id, ip: b.address, port: b.port }).collect();
        maps.put_maglev(7, &table(&m, LB_MAGLEV_SIZE as u32).unwrap()).unwrap();
        let fe = Frontend { address: VIP, port: 80, proto: 6 };
        maps.put(fe, FrontendInfo { rev_nat_id: 7, flags: LB_F_MAGLEV, affinity_timeout: 0 }, &backends)
            .unwrap();
    };
    let picks = |f: &mut Fixture, sports: std::ops::Range<u16>| -> Vec<Ipv4Addr> {
        sports
            .map(|sport| {
                let syn = pkt::tcp(MAC_A, LXC_A, POD_A, sport, VIP, 80, pkt::TCP_SYN);
                addr(&run(f, "from_container", &syn).1[30..34])
            })
            .collect()
    };
    let (mut one, mut two) = (fixture(), fixture());
    program(&one, 1, &addrs);
    program(&two, 101, &addrs);
    let a = picks(&mut one, 50000..50200);
    let b = picks(&mut two, 50000..50200);
    assert_eq!(a, b, "both nodes send every flow to the same backend");
    let used: std::collections::BTreeSet<_> = a.iter().collect();
    assert_eq!(used.len(), 3, "and the flows spread over all three");

    // The third backend leaves: new flows of the same tuples (fresh
    // conntrack) go where they went unless they were on it.
    let mut three = fixture();
    program(&three, 1, &addrs[..2]);
    let c = picks(&mut three, 50000..50200);
    let moved = a.iter().zip(&c).filter(|(was, now)| **was != addrs[2] && was != now).count();
    assert!(c.iter().all(|x| *x != addrs[2]), "nothing goes to the removed backend");
    assert!(moved <= 10, "{moved} of the flows on the remaining backends moved");
}

/// A pod's ICMP error about a packet of its hairpin flow (it is
/// its own service's backend): the pod, as the client, must get it from
/// the service, quoting its packet to the service.
#[test]
fn an_icmp_error_about_a_hairpin_packet_reaches_the_pod() {
    let mut f = fixture();
    service(&f, &[Backend { id: 1, address: POD_A, port: 8080, proto: 6 }]);
    let mut c = f.dp.config().unwrap();
    c.flags |= CFG_F_MASQUERADE;
    c.node_ip4 = ip_to_be(Ipv4Addr::new(198, 18, 0, 11));
    c.underlay_ifindex = TEST_IFINDEX;
    c.snat_port_min = 61000;
    c.snat_port_max = 61099;
    f.dp.set_config(c).unwrap();
    let q = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, VIP, 80, pkt::TCP_SYN);
    let (v, got) = run(&mut f, "from_container", &q);
    assert_eq!(v, TC_ACT_REDIRECT);
    let hairpin = Ipv4Addr::new(169, 254, 42, 1);
    assert_eq!((addr(&got[26..30]), addr(&got[30..34])), (hairpin, POD_A));
    let err = pkt::icmp_error(MAC_A, LXC_A, POD_A, hairpin, 3, 3, &got);
    let (v, out) = run(&mut f, "from_container", &err);
    events(&mut f);
    assert_eq!(
        (v, addr(&out[26..30]), addr(&out[30..34])),
        (TC_ACT_REDIRECT, VIP, POD_A),
        "back to the pod from the service"
    );
}
