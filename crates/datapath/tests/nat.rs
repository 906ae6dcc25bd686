//! BPF_PROG_TEST_RUN tests of SNAT (lib/nat.h): a pod's flow leaving the
//! cluster leaves as the node with a port of the SNAT range and valid
//! checksums, the reply (and an ICMP error about the flow) is translated
//! back to the pod, a range that is used up drops with its own reason
//! rather than leaking the pod's address, an expired flow's port is taken
//! again, and a NodePort flow to another node's backend is SNATed there
//! and back.

mod fixture;

use fixture::*;
use std::net::Ipv4Addr;
use weft_datapath::{
    lb::{Backend, Frontend, FrontendInfo, ServiceMaps},
    maps::*,
    nat::Nat,
};

fn drops(f: &mut Fixture, reason: u8) -> u64 {
    f.dp.drop_counts().unwrap().iter().find(|(r, _)| *r == reason).map_or(0, |d| d.1)
}

#[test]
fn a_pods_flow_to_the_outside_leaves_as_the_node_and_its_reply_comes_back_to_the_pod() {
    let mut f = masquerading(61000, 61099);
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, EXT, 80, pkt::TCP_SYN);
    let (verdict, out) = run(&mut f, "from_container", &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "out of the node's device");
    assert_eq!(addr(&out[26..30]), NODE, "as the node");
    let nat_port = port(&out[34..36]);
    assert!((61000..=61099).contains(&nat_port), "a port of the range: {nat_port}");
    assert_eq!((addr(&out[30..34]), port(&out[36..38])), (EXT, 80), "to where the pod sent it");
    assert_eq!(pkt::csum(&out[14..34]), 0, "IPv4 checksum");
    assert!(l4_ok(&out), "TCP checksum");
    let ev = events(&mut f);
    assert!(ev.iter().any(|e| e.observation_point.as_deref() == Some("to-network")), "traced leaving");
    let snat = ev
        .iter()
        .filter_map(|e| e.message.as_deref())
        .find(|m| m.starts_with("SNAT "))
        .expect("an SNAT debug message");
    assert_eq!(snat, format!("SNAT {POD_A}:40000 -> {NODE}:{nat_port}"));

    let flows = Nat::open(&f.base).unwrap().flows().unwrap();
    assert_eq!(flows.len(), 1);
    assert!(flows[0].has_reply_entry, "both entries of the flow are there");

    // The next packet of the flow keeps its port.
    let ack = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, EXT, 80, pkt::TCP_ACK);
    assert_eq!(port(&run(&mut f, "from_container", &ack).1[34..36]), nat_port);

    // The answer reaches the node's device: the pod gets it.
    let synack = pkt::tcp(ROUTER_MAC, ROUTER_MAC, EXT, 80, NODE, nat_port, pkt::TCP_SYN | pkt::TCP_ACK);
    let (verdict, out) = run(&mut f, "from_network", &synack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "delivered to the pod");
    assert_eq!(&out[0..6], &MAC_A);
    assert_eq!((addr(&out[30..34]), port(&out[36..38])), (POD_A, 40000), "to the pod's own address and port");
    assert_eq!((addr(&out[26..30]), port(&out[34..36])), (EXT, 80));
    assert_eq!(pkt::csum(&out[14..34]), 0);
    assert!(l4_ok(&out), "TCP checksum after reverse SNAT");
    let ev = events(&mut f);
    let to_ep = ev.iter().find(|e| e.observation_point.as_deref() == Some("to-endpoint")).unwrap();
    assert_eq!(to_ep.state, "reply", "the pod's flow, answered");

    // The node's own traffic to its address is not looked up.
    let own = pkt::tcp(ROUTER_MAC, ROUTER_MAC, EXT, 80, NODE, 40000, pkt::TCP_SYN | pkt::TCP_ACK);
    assert_eq!(run(&mut f, "from_network", &own).0, TC_ACT_OK, "to the node's stack");
}

#[test]
fn a_free_port_of_the_pods_own_is_kept_and_udp_checksums_hold() {
    let mut f = masquerading(61000, 61099);
    let q = pkt::udp(MAC_A, LXC_A, POD_A, 61050, EXT, 53, 30);
    let (verdict, out) = run(&mut f, "from_container", &q);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!((addr(&out[26..30]), port(&out[34..36])), (NODE, 61050), "its own port, free in the range");
    assert!(l4_ok(&out), "UDP checksum");
    let a = pkt::udp(ROUTER_MAC, ROUTER_MAC, EXT, 53, NODE, 61050, 60);
    let (verdict, out) = run(&mut f, "from_network", &a);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!((addr(&out[30..34]), port(&out[36..38])), (POD_A, 61050));
    assert!(l4_ok(&out), "UDP checksum after reverse SNAT");
}

#[test]
fn a_used_up_range_drops_with_its_own_reason_and_never_sends_the_pods_address() {
    let mut f = masquerading(61000, 61001);
    let mut taken = std::collections::BTreeSet::new();
    for sport in [40000, 40001] {
        let syn = pkt::tcp(MAC_A, LXC_A, POD_A, sport, EXT, 80, pkt::TCP_SYN);
        let (verdict, out) = run(&mut f, "from_container", &syn);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        taken.insert(port(&out[34..36]));
    }
    assert_eq!(taken, [61000, 61001].into(), "two flows, the two ports");
    let _ = events(&mut f);
    let third = pkt::tcp(MAC_A, LXC_A, POD_A, 40002, EXT, 80, pkt::TCP_SYN);
    let (verdict, _) = run(&mut f, "from_container", &third);
    assert_eq!(verdict, TC_ACT_SHOT, "dropped, not sent with the pod's address");
    let ev = events(&mut f);
    let drop = ev.iter().find(|e| e.kind == "drop").expect("a drop event");
    assert_eq!(drop.reason_text.as_deref(), Some("NAT: no free port towards the destination"));
    assert_eq!(drop.file.as_deref(), Some("nat.h"));
    assert_eq!(drops(&mut f, 233), 1, "counted");
    // Ports are per destination: another one still has both.
    let other = pkt::tcp(MAC_A, LXC_A, POD_A, 40002, EXT, 443, pkt::TCP_SYN);
    assert_eq!(run(&mut f, "from_container", &other).0, TC_ACT_REDIRECT);

    // A flow whose entries expired gives its port to the next flow at
    // once, and its stale half goes with it.
    let nat = Nat::open(&f.base).unwrap();
    let flows = nat.flows().unwrap();
    let old = flows.iter().find(|fl| u16::from_be(fl.out.sport) == 40000).unwrap().clone();
    {
        let mut m: aya::maps::HashMap<_, NatKey, NatEntry> = aya::maps::HashMap::try_from(
            aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(f.dp.dir().join(MAP_NAT)).unwrap())
                .unwrap(),
        )
        .unwrap();
        let reply = weft_datapath::nat::reply_key(&old.out, &old.to);
        for k in [old.out, reply] {
            let mut e = m.get(&k, 0).unwrap();
            e.expires = e.expires.wrapping_sub(100_000);
            m.insert(k, e, 0).unwrap();
        }
    }
    let (verdict, out) = run(&mut f, "from_container", &third);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the expired flow's port is free again");
    assert_eq!(port(&out[34..36]), u16::from_be(old.to.port));
    let flows = nat.flows().unwrap();
    assert!(!flows.iter().any(|fl| fl.out == old.out), "the expired flow's outbound entry is gone");
    assert!(flows.iter().all(|fl| fl.has_reply_entry));
}

#[test]
fn a_protocol_snat_cannot_translate_is_dropped_not_leaked() {
    let mut f = masquerading(61000, 61099);
    let mut gre = pkt::udp(MAC_A, LXC_A, POD_A, 1, EXT, 2, 8);
    gre[23] = 47; // GRE
    let (verdict, _) = run(&mut f, "from_container", &gre);
    assert_eq!(verdict, TC_ACT_SHOT);
    let ev = events(&mut f);
    let drop = ev.iter().find(|e| e.kind == "drop").unwrap();
    assert_eq!(drop.reason_text.as_deref(), Some("NAT: unsupported protocol"));
}

#[test]
fn a_ping_to_the_outside_gets_an_id_of_the_node_and_the_reply_its_own_again() {
    let mut f = masquerading(61000, 61099);
    let echo = pkt::icmp_echo(MAC_A, LXC_A, POD_A, EXT, 64);
    let id = port(&echo[38..40]);
    let (verdict, out) = run(&mut f, "from_container", &echo);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(addr(&out[26..30]), NODE);
    let nat_id = port(&out[38..40]);
    assert!((61000..=61099).contains(&nat_id), "the echo id is a port of the range: {nat_id}");
    assert_eq!(pkt::csum(&out[34..]), 0, "ICMP checksum");
    // The host answers with the id it saw.
    let mut reply = pkt::icmp_echo(ROUTER_MAC, ROUTER_MAC, EXT, NODE, 64);
    reply[34] = 0; // echo reply
    set_echo_id(&mut reply, nat_id);
    let (verdict, out) = run(&mut f, "from_network", &reply);
    assert_eq!(verdict, TC_ACT_REDIRECT, "to the pod");
    assert_eq!((addr(&out[30..34]), port(&out[38..40])), (POD_A, id), "its address and id again");
    assert_eq!(pkt::csum(&out[34..]), 0, "ICMP checksum");
    assert_eq!(pkt::csum(&out[14..34]), 0);

    // An echo id of 0 (some pingers use it) is an id like any other.
    let mut zero = pkt::icmp_echo(MAC_A, LXC_A, POD_A, EXT, 64);
    set_echo_id(&mut zero, 0);
    let (verdict, out) = run(&mut f, "from_container", &zero);
    assert_eq!(verdict, TC_ACT_REDIRECT, "translated, not dropped: {:?}", drop_reasons(&mut f));
    let zero_id = port(&out[38..40]);
    assert!((61000..=61099).contains(&zero_id) && zero_id != nat_id, "an id of its own: {zero_id}");
    assert_eq!(pkt::csum(&out[34..]), 0, "ICMP checksum");
    set_echo_id(&mut reply, zero_id);
    let (verdict, out) = run(&mut f, "from_network", &reply);
    assert_eq!(verdict, TC_ACT_REDIRECT, "to the pod");
    assert_eq!((addr(&out[30..34]), port(&out[38..40])), (POD_A, 0), "with id 0 again");
    assert_eq!(pkt::csum(&out[34..]), 0, "ICMP checksum");
}

#[test]
fn fragmentation_needed_about_a_masqueraded_flow_reaches_the_pod_about_its_own_packet() {
    let mut f = masquerading(61000, 61099);
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, EXT, 80, pkt::TCP_SYN);
    let (_, left) = run(&mut f, "from_container", &syn);
    let nat_port = port(&left[34..36]);
    // A router on the way cannot forward the packet as it left the node.
    let (verdict, out) = run(&mut f, "from_network", &frag_needed(ROUTER, NODE, &left));
    assert_eq!(verdict, TC_ACT_REDIRECT, "to the pod");
    assert_eq!(&out[0..6], &MAC_A);
    assert_eq!(addr(&out[30..34]), POD_A, "addressed to the pod");
    let inner = &out[42..];
    assert_eq!((addr(&inner[12..16]), port(&inner[20..22])), (POD_A, 40000), "quoting the pod's own packet");
    assert_eq!((addr(&inner[16..20]), port(&inner[22..24])), (EXT, 80));
    assert_eq!(pkt::csum(&inner[..20]), 0, "the quoted header's checksum");
    assert_eq!(pkt::csum(&out[34..]), 0, "ICMP checksum");
    assert_eq!(pkt::csum(&out[14..34]), 0);
    assert_eq!(port(&out[40..42]), 1400, "the MTU is kept");
    let _ = nat_port;
    let ev = events(&mut f);
    let to_ep = ev.iter().find(|e| e.observation_point.as_deref() == Some("to-endpoint")).unwrap();
    assert_eq!(to_ep.state, "related");
}

#[test]
fn a_nodeport_to_another_nodes_backend_leaves_as_the_node_and_the_answer_as_the_service() {
    let mut f = masquerading(61000, 61099);
    let mut c = f.dp.config().unwrap();
    c.mode = MODE_NATIVE;
    f.dp.set_config(c).unwrap();
    let client = Ipv4Addr::new(203, 0, 113, 5);
    let maps = ServiceMaps::open(&f.base).unwrap();
    let np = Frontend { address: NODE, port: 30080, proto: 6 };
    let info = FrontendInfo { rev_nat_id: 31, flags: LB_F_NODEPORT | LB_F_SNAT, affinity_timeout: 0 };
    maps.put(np, info, &[Backend { id: 6, address: REMOTE_POD, port: 8080, proto: 6 }]).unwrap();

    let syn = pkt::tcp(ROUTER_MAC, ROUTER_MAC, client, 50000, NODE, 30080, pkt::TCP_SYN);
    let (verdict, out) = run(&mut f, "from_network", &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "on towards the backend's node");
    assert_eq!((addr(&out[30..34]), port(&out[36..38])), (REMOTE_POD, 8080), "to the backend");
    assert_eq!(addr(&out[26..30]), NODE, "from the node");
    let nat_port = port(&out[34..36]);
    assert!(
        (61000..=61099).contains(&nat_port),
        "with a port of the SNAT range, not the client's: {nat_port}"
    );
    assert!(l4_ok(&out) && pkt::csum(&out[14..34]) == 0, "checksums");
    let flows = Nat::open(&f.base).unwrap().flows().unwrap();
    assert_eq!((flows.len(), flows[0].rev_nat_id), (1, 31), "a NodePort flow, remembered with its service");

    // The backend answers the node; the client hears the service.
    let synack =
        pkt::tcp(ROUTER_MAC, ROUTER_MAC, REMOTE_POD, 8080, NODE, nat_port, pkt::TCP_SYN | pkt::TCP_ACK);
    let (verdict, out) = run(&mut f, "from_network", &synack);
    assert_eq!(verdict, TC_ACT_REDIRECT, "back out to the client");
    assert_eq!((addr(&out[26..30]), port(&out[34..36])), (NODE, 30080), "from the node port");
    assert_eq!((addr(&out[30..34]), port(&out[36..38])), (client, 50000), "to the client");
    assert!(l4_ok(&out) && pkt::csum(&out[14..34]) == 0, "checksums");
    let ev = events(&mut f);
    assert!(
        ev.iter().filter_map(|e| e.message.as_deref()).any(|m| m.starts_with("Reverse NAT to the service")),
        "{ev:?}"
    );
}

#[test]
fn fragmentation_needed_about_a_translated_service_flow_quotes_the_service() {
    let mut f = fixture();
    let mut c = f.dp.config().unwrap();
    c.path_mtu = 1400;
    f.dp.set_config(c).unwrap();
    with_vxlan(&mut f);
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let maps = ServiceMaps::open(&f.base).unwrap();
    let fe = Frontend { address: vip, port: 53, proto: 17 };
    let be = Backend { id: 1, address: REMOTE_POD, port: 5353, proto: 17 };
    maps.put(fe, FrontendInfo { rev_nat_id: 7, ..Default::default() }, &[be]).unwrap();
    let mut big = pkt::udp(MAC_A, LXC_A, POD_A, 40000, vip, 53, 1440);
    big[20] |= 0x40; // DF
    big[24..26].copy_from_slice(&[0, 0]);
    let c = pkt::csum(&big[14..34]);
    big[24..26].copy_from_slice(&c.to_be_bytes());
    let (verdict, out) = run(&mut f, "from_container", &big);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the ICMP error goes back to the pod");
    assert_eq!((out[34], out[35]), (3, 4), "fragmentation needed");
    let inner = &out[42..];
    assert_eq!((addr(&inner[16..20]), port(&inner[22..24])), (vip, 53), "about the packet to the service");
    assert_eq!(pkt::csum(&inner[..20]), 0, "the quoted header's checksum");
}

/// A closed TCP flow's port waits out its closing lifetime: the far end may
/// still hold the tuple in TIME_WAIT (taking it a second after the close
/// cost one SYN retransmission in twenty connections in the bench).
#[test]
fn a_closed_tcp_flows_port_is_not_taken_before_its_entry_expires() {
    let mut f = masquerading(61000, 61000);
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, EXT, 80, pkt::TCP_SYN);
    assert_eq!(run(&mut f, "from_container", &syn).0, TC_ACT_REDIRECT);
    let fin = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, EXT, 80, pkt::TCP_FIN | pkt::TCP_ACK);
    assert_eq!(run(&mut f, "from_container", &fin).0, TC_ACT_REDIRECT);
    let fin_back = pkt::tcp(ROUTER_MAC, ROUTER_MAC, EXT, 80, NODE, 61000, pkt::TCP_FIN | pkt::TCP_ACK);
    assert_eq!(run(&mut f, "from_network", &fin_back).0, TC_ACT_REDIRECT);
    let nat = Nat::open(&f.base).unwrap();
    let mut m: aya::maps::HashMap<_, NatKey, NatEntry> = aya::maps::HashMap::try_from(
        aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(f.dp.dir().join(MAP_NAT)).unwrap())
            .unwrap(),
    )
    .unwrap();
    let age = |m: &mut aya::maps::HashMap<_, NatKey, NatEntry>, by: u32| {
        for (k, mut e) in nat.entries().unwrap() {
            e.expires = e.expires.wrapping_sub(by);
            m.insert(k, e, 0).unwrap();
        }
    };
    // Closed five seconds ago: the only port is still the old flow's.
    age(&mut m, 5);
    let next = pkt::tcp(MAC_A, LXC_A, POD_A, 40001, EXT, 80, pkt::TCP_SYN);
    assert_eq!(run(&mut f, "from_container", &next).0, TC_ACT_SHOT, "not before it expires");
    // Expired: the next flow has it.
    age(&mut m, 10);
    let (verdict, out) = run(&mut f, "from_container", &next);
    assert_eq!((verdict, port(&out[34..36])), (TC_ACT_REDIRECT, 61000));
}

/// A pod port used again after its flow expired gets the same SNAT port:
/// the far end sees the old tuple and takes over its TIME_WAIT (a random
/// port would meet another flow's TIME_WAIT, and the SYN be lost).
#[test]
fn a_pod_port_used_again_leaves_with_the_same_snat_port() {
    let mut f = masquerading(1024, 29999);
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, 40000, EXT, 80, pkt::TCP_SYN);
    let (_, out) = run(&mut f, "from_container", &syn);
    let first = port(&out[34..36]);
    let nat = Nat::open(&f.base).unwrap();
    let mut m: aya::maps::HashMap<_, NatKey, NatEntry> = aya::maps::HashMap::try_from(
        aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(f.dp.dir().join(MAP_NAT)).unwrap())
            .unwrap(),
    )
    .unwrap();
    for (k, mut e) in nat.entries().unwrap() {
        e.expires = e.expires.wrapping_sub(100_000);
        m.insert(k, e, 0).unwrap();
    }
    let (_, out) = run(&mut f, "from_container", &syn);
    assert_eq!(port(&out[34..36]), first, "the same port again");
    // Another port of the pod starts elsewhere.
    let other = pkt::tcp(MAC_A, LXC_A, POD_A, 40001, EXT, 80, pkt::TCP_SYN);
    let next = if first == 29999 { 1024 } else { first + 1 };
    assert_eq!(
        port(&run(&mut f, "from_container", &other).1[34..36]),
        next,
        "one pod's ports map one to one"
    );
}
