//! BPF_PROG_TEST_RUN: the edges of service translation and SNAT that a
//! hostile review found broken (each of these failed once): services of
//! more than 64 backends, idle established flows through a service,
//! fragments to the node's own ports and to NodePorts, port reclaim next
//! to a live flow, a reused TCP tuple, a Maglev table ahead of its
//! backends, a NodePort packet too big for the tunnel.

mod fixture;

use fixture::*;
use std::net::Ipv4Addr;
use weft_datapath::{
    conntrack::Conntrack,
    lb::{Backend, Frontend, FrontendInfo, ServiceMaps},
    maps::*,
    nat::Nat,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

#[test]
fn a_flow_keeps_its_backend_in_a_service_of_more_than_64_backends() {
    let mut f = fixture();
    let maps = ServiceMaps::open(&f.base).unwrap();
    let fe = Frontend { address: VIP, port: 80, proto: 6 };
    let b: Vec<Backend> = (0..100u32)
        .map(|i| Backend {
            id: 1000 + i,
            address: Ipv4Addr::new(10, 244, 3, i as u8 + 1),
            port: 8080,
            proto: 6,
        })
        .collect();
    maps.put(fe, FrontendInfo { rev_nat_id: 7, ..Default::default() }, &b).unwrap();
    let mut moved = 0;
    for sport in 40000..40030u16 {
        let syn = pkt::tcp(MAC_A, LXC_A, POD_A, sport, VIP, 80, pkt::TCP_SYN);
        let first = addr(&run(&mut f, "from_container", &syn).1[30..34]);
        let ack = pkt::tcp(MAC_A, LXC_A, POD_A, sport, VIP, 80, pkt::TCP_ACK);
        let second = addr(&run(&mut f, "from_container", &ack).1[30..34]);
        if first != second {
            moved += 1;
        }
    }
    assert_eq!(moved, 0, "{moved} of 30 connections sent their second packet to another backend");
}

#[test]
fn the_service_entry_of_an_established_tcp_flow_lives_as_long_as_the_flow() {
    let mut f = fixture();
    let maps = ServiceMaps::open(&f.base).unwrap();
    let fe = Frontend { address: VIP, port: 80, proto: 6 };
    maps.put(
        fe,
        FrontendInfo { rev_nat_id: 7, ..Default::default() },
        &[Backend { id: 1, address: POD_B, port: 8080, proto: 6 }],
    )
    .unwrap();
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, VIP, 80, pkt::TCP_SYN);
    run(&mut f, "from_container", &syn);
    f.dp.lxc().unwrap().insert(TEST_IFINDEX, LxcInfo { ip4: ip_to_be(POD_B), ep_id: 22, pad: 0 }, 0).unwrap();
    let synack = pkt::tcp(MAC_B, LXC_B, POD_B, 8080, POD_A, 40000, pkt::TCP_SYN | pkt::TCP_ACK);
    run(&mut f, "from_container", &synack);
    f.dp.lxc().unwrap().insert(TEST_IFINDEX, LxcInfo { ip4: ip_to_be(POD_A), ep_id: 11, pad: 0 }, 0).unwrap();
    let ack = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, VIP, 80, pkt::TCP_ACK);
    run(&mut f, "from_container", &ack);
    let ct = Conntrack::open(&f.base).unwrap().entries().unwrap();
    let svc = ct.iter().find(|(k, _)| k.scope == CT_SERVICE).unwrap().1;
    let egress = ct.iter().find(|(k, _)| k.scope == CT_EGRESS).unwrap().1;
    let life = |e: &CtEntry| e.expires.wrapping_sub(e.created);
    assert!(
        life(&svc) >= life(&egress),
        "service entry lives {} s, the flow's own entry {} s",
        life(&svc),
        life(&egress)
    );
}

#[test]
fn a_fragmented_datagram_for_the_nodes_own_port_reaches_the_node_whole() {
    let mut f = masquerading(61000, 61099);
    let mut first_body = vec![0x11u8; 1480];
    first_body[0..2].copy_from_slice(&53u16.to_be_bytes());
    first_body[2..4].copy_from_slice(&40123u16.to_be_bytes()); // the node's own ephemeral port
    first_body[4..6].copy_from_slice(&2008u16.to_be_bytes());
    let first = pkt::ipv4_fragment(ROUTER_MAC, ROUTER_MAC, EXT, NODE, 17, 0x4242, 0, true, &first_body);
    let second = pkt::ipv4_fragment(ROUTER_MAC, ROUTER_MAC, EXT, NODE, 17, 0x4242, 185, false, &[0x5a; 528]);
    let (v1, _) = run(&mut f, "from_network", &first);
    let (v2, _) = run(&mut f, "from_network", &second);
    let drops = drop_reasons(&mut f);
    assert_eq!((v1, v2), (TC_ACT_OK, TC_ACT_OK), "both fragments to the node's stack; drops: {drops:?}");
}

#[test]
fn every_fragment_of_a_nodeport_datagram_reaches_the_backend() {
    let mut f = masquerading(61000, 61099);
    let maps = ServiceMaps::open(&f.base).unwrap();
    let np = Frontend { address: NODE, port: 30053, proto: 17 };
    let info = FrontendInfo { rev_nat_id: 21, flags: LB_F_NODEPORT | LB_F_LOCAL, affinity_timeout: 0 };
    maps.put(np, info, &[Backend { id: 5, address: POD_B, port: 5353, proto: 17 }]).unwrap();
    let mut first_body = vec![0x11u8; 1480];
    first_body[0..2].copy_from_slice(&50000u16.to_be_bytes());
    first_body[2..4].copy_from_slice(&30053u16.to_be_bytes());
    first_body[4..6].copy_from_slice(&2008u16.to_be_bytes());
    let first = pkt::ipv4_fragment(ROUTER_MAC, ROUTER_MAC, CLIENT, NODE, 17, 0x4343, 0, true, &first_body);
    let second =
        pkt::ipv4_fragment(ROUTER_MAC, ROUTER_MAC, CLIENT, NODE, 17, 0x4343, 185, false, &[0x5a; 528]);
    let (v1, out1) = run(&mut f, "from_network", &first);
    let (v2, out2) = run(&mut f, "from_network", &second);
    assert_eq!((v1, addr(&out1[30..34])), (TC_ACT_REDIRECT, POD_B), "the first fragment reaches the backend");
    assert_eq!(
        (v2, addr(&out2[30..34])),
        (TC_ACT_REDIRECT, POD_B),
        "the later fragment must follow it (verdict 0 = to the node's stack, untranslated)"
    );
}

#[test]
fn reclaiming_an_orphaned_port_keeps_the_live_flows_translation() {
    let mut f = masquerading(61000, 61000);
    // F gets the only port, 61000.
    let f_pkt = pkt::udp(MAC_A, LXC_A, POD_A, 61001, EXT, 53, 20);
    let (v, out) = run(&mut f, "from_container", &f_pkt);
    assert_eq!((v, port(&out[34..36])), (TC_ACT_REDIRECT, 61000));
    // F is idle past its lifetime (GC has not run yet).
    {
        let mut m = nat_map(&f);
        let keys: Vec<NatKey> = m.keys().map(|k| k.unwrap()).collect();
        for k in keys {
            let mut e = m.get(&k, 0).unwrap();
            e.expires = e.expires.wrapping_sub(100_000);
            m.insert(k, e, 0).unwrap();
        }
    }
    // The range grows (or F's random probe lands elsewhere): F's next
    // datagram takes 61001, its own port; NAT_IN(61000) stays, expired.
    let mut c = f.dp.config().unwrap();
    c.snat_port_max = 61001;
    f.dp.set_config(c).unwrap();
    let (v, out) = run(&mut f, "from_container", &f_pkt);
    assert_eq!((v, port(&out[34..36])), (TC_ACT_REDIRECT, 61001));
    let nat = Nat::open(&f.base).unwrap();
    assert!(nat.flows().unwrap().iter().any(|fl| u16::from_be(fl.out.sport) == 61001), "F is live");
    // Another flow G reclaims 61000.
    let g_pkt = pkt::udp(MAC_A, LXC_A, POD_A, 61000, EXT, 53, 20);
    let (v, out) = run(&mut f, "from_container", &g_pkt);
    assert_eq!((v, port(&out[34..36])), (TC_ACT_REDIRECT, 61000));
    let flows = nat.flows().unwrap();
    assert!(
        flows.iter().any(|fl| u16::from_be(fl.out.sport) == 61001),
        "F's live NAT_OUT entry (-> 61001) was deleted by G's reclaim of 61000: {flows:?}"
    );
}

#[test]
fn a_nodeport_datagram_too_big_for_the_tunnel_is_refused_not_sent() {
    let mut f = masquerading(61000, 61099);
    with_vxlan(&mut f);
    let mut c = f.dp.config().unwrap();
    c.path_mtu = 1450;
    f.dp.set_config(c).unwrap();
    let maps = ServiceMaps::open(&f.base).unwrap();
    let np = Frontend { address: NODE, port: 30053, proto: 17 };
    let info = FrontendInfo { rev_nat_id: 31, flags: LB_F_NODEPORT | LB_F_SNAT, affinity_timeout: 0 };
    maps.put(np, info, &[Backend { id: 6, address: REMOTE_POD, port: 5353, proto: 17 }]).unwrap();
    let mut big = pkt::udp(ROUTER_MAC, ROUTER_MAC, CLIENT, 50000, NODE, 30053, 1472 - 8 + 8);
    big[20] |= 0x40; // DF
    big[24..26].copy_from_slice(&[0, 0]);
    let c = pkt::csum(&big[14..34]);
    big[24..26].copy_from_slice(&c.to_be_bytes());
    let (v, out) = run(&mut f, "from_network", &big);
    assert_eq!(v, TC_ACT_REDIRECT, "the answer goes back out");
    assert_eq!((out[23], out[34], out[35]), (1, 3, 4), "ICMP fragmentation needed");
    assert_eq!((addr(&out[26..30]), addr(&out[30..34])), (NODE, CLIENT), "from the node to the client");
    assert_eq!(port(&out[40..42]), 1450, "with the path's MTU");
    let inner = &out[42..];
    assert_eq!(
        (addr(&inner[16..20]), port(&inner[22..24])),
        (NODE, 30053),
        "quoting the client's own packet"
    );
    assert_eq!(pkt::csum(&out[34..]), 0, "ICMP checksum");
    assert!(drop_reasons(&mut f).iter().any(|r| r == "Fragmentation needed"), "the drop is an event");
}

#[test]
fn a_reused_tcp_tuple_gets_the_established_nat_lifetime() {
    let mut f = masquerading(61000, 61099);
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, EXT, 80, pkt::TCP_SYN);
    let (_, out) = run(&mut f, "from_container", &syn);
    let p = port(&out[34..36]);
    let fin = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, EXT, 80, 0x01 | pkt::TCP_ACK);
    let rst = pkt::tcp(ROUTER_MAC, ROUTER_MAC, EXT, 80, NODE, p, pkt::TCP_RST);
    run(&mut f, "from_container", &fin);
    run(&mut f, "from_network", &rst);
    // A new connection on the same tuple, answered and established.
    run(&mut f, "from_container", &syn);
    let synack = pkt::tcp(ROUTER_MAC, ROUTER_MAC, EXT, 80, NODE, p, pkt::TCP_SYN | pkt::TCP_ACK);
    run(&mut f, "from_network", &synack);
    let ack = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, EXT, 80, pkt::TCP_ACK);
    run(&mut f, "from_container", &ack);
    let flow = Nat::open(&f.base).unwrap().flows().unwrap().remove(0);
    let left = flow.to.expires.wrapping_sub(weft_datapath::conntrack::now());
    assert!(left > 60, "an established connection's NAT entry lives {left} s (flags {:#x})", flow.to.flags);
}

#[test]
fn a_maglev_table_written_before_its_backends_refuses_no_client() {
    use weft_service::maglev::{MaglevBackend, table};
    let mut f = fixture();
    let maps = ServiceMaps::open(&f.base).unwrap();
    let fe = Frontend { address: VIP, port: 80, proto: 6 };
    let old = Backend { id: 1, address: POD_B, port: 8080, proto: 6 };
    maps.put(fe, FrontendInfo { rev_nat_id: 7, flags: LB_F_MAGLEV, affinity_timeout: 0 }, &[old]).unwrap();
    let new = MaglevBackend { id: 2, ip: Ipv4Addr::new(10, 244, 1, 9), port: 8080 };
    maps.put_maglev(7, &table(&[new], LB_MAGLEV_SIZE as u32).unwrap()).unwrap();
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, VIP, 80, pkt::TCP_SYN);
    let (_, out) = run(&mut f, "from_container", &syn);
    let drops = drop_reasons(&mut f);
    assert!(
        !(out[23] == 1 && out[34] == 3 && out[35] == 3),
        "the client got port unreachable from a service with a backend; drops {drops:?}"
    );
}

#[test]
fn an_icmp_error_from_a_backend_quotes_the_service_to_the_client() {
    let mut f = fixture();
    let mut c = f.dp.config().unwrap();
    c.mode = MODE_NATIVE;
    c.underlay_ifindex = TEST_IFINDEX;
    c.node_ip4 = ip_to_be(NODE);
    f.dp.set_config(c).unwrap();
    let maps = ServiceMaps::open(&f.base).unwrap();
    let dns = Frontend { address: VIP, port: 53, proto: 17 };
    let be = Backend { id: 3, address: REMOTE_POD, port: 5353, proto: 17 };
    maps.put(dns, FrontendInfo { rev_nat_id: 9, ..Default::default() }, &[be]).unwrap();
    let q = pkt::udp(MAC_A, LXC_A, POD_A, 41000, VIP, 53, 20);
    let (v, sent) = run(&mut f, "from_container", &q);
    assert_eq!((v, addr(&sent[30..34])), (TC_ACT_REDIRECT, REMOTE_POD));
    // The backend has no listener: "port unreachable" about what it got.
    let err = pkt::icmp_error(ROUTER_MAC, ROUTER_MAC, REMOTE_POD, POD_A, 3, 3, &sent);
    let (v, out) = run(&mut f, "from_network", &err);
    assert_eq!(v, TC_ACT_REDIRECT, "delivered to the pod");
    let inner = &out[42..];
    assert_eq!(
        (addr(&inner[16..20]), port(&inner[22..24])),
        (VIP, 53),
        "the quoted packet is the one the client sent (to the service)"
    );
    assert_eq!(pkt::csum(&inner[..20]), 0, "the quoted header's checksum");
    assert_eq!(pkt::csum(&out[34..]), 0, "ICMP checksum");
}
