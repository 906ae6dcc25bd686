//! BPF_PROG_TEST_RUN tests: crafted packets through the real from-container
//! and from-host programs, checking verdict, rewritten bytes and events.
//! Needs root (loads BPF); run by `make test`.

mod fixture;

use fixture::*;
use std::net::Ipv4Addr;
use weft_datapath::{
    loader::{PROBE_LXC_OBJ, PROBE_OVERLAY_OBJ},
    maps::*,
};

#[test]
fn arp_request_for_gateway_gets_reply_with_lxc_mac() {
    let mut f = fixture();
    let req = pkt::arp_request(MAC_A, POD_A, GW);
    let (verdict, out) = run(&mut f, "from_container", &req);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the reply goes back out of the lxc device");
    assert_eq!(&out[0..6], &MAC_A, "eth dst = the asking pod");
    assert_eq!(&out[6..12], &LXC_A, "eth src = the lxc MAC");
    assert_eq!(&out[12..14], &[0x08, 0x06]);
    assert_eq!(&out[20..22], &[0, 2], "ARP op = reply");
    assert_eq!(&out[22..28], &LXC_A, "sender MAC = lxc MAC");
    assert_eq!(&out[28..32], &GW.octets(), "sender IP = the asked-for gateway");
    assert_eq!(&out[32..38], &MAC_A, "target MAC = the pod");
    assert_eq!(&out[38..42], &POD_A.octets(), "target IP = the pod");
    let ev = events(&mut f);
    assert!(ev.iter().any(
        |e| e.kind == "debug" && e.message.as_deref().unwrap_or("").contains("ARP reply for 10.244.1.1")
    ));
}

#[test]
fn arp_for_any_other_address_is_answered_too_but_not_for_own() {
    let mut f = fixture();
    let (verdict, out) =
        run(&mut f, "from_container", &pkt::arp_request(MAC_A, POD_A, Ipv4Addr::new(10, 9, 9, 9)));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[22..28], &LXC_A);
    let (verdict, _) = run(&mut f, "from_container", &pkt::arp_request(MAC_A, POD_A, POD_A));
    assert_eq!(verdict, TC_ACT_OK, "a probe for its own address is not answered");
}

#[test]
fn spoofed_source_ip_is_dropped_with_reason() {
    let mut f = fixture();
    let spoofed = pkt::icmp_echo(MAC_A, LXC_A, Ipv4Addr::new(10, 244, 1, 99), POD_B, 64);
    let (verdict, _) = run(&mut f, "from_container", &spoofed);
    assert_eq!(verdict, TC_ACT_SHOT);
    let ev = events(&mut f);
    let drop = ev.iter().find(|e| e.kind == "drop").expect("a drop event");
    assert_eq!(drop.reason, Some(132));
    assert_eq!(drop.reason_text.as_deref(), Some("Invalid source ip"));
    assert_eq!(drop.file.as_deref(), Some("lxc.c"));
    assert!(drop.line.unwrap() > 0);
    assert_eq!(drop.source, 11);
    assert!(drop.summary.contains("10.244.1.99 -> 10.244.1.3"), "{}", drop.summary);
}

#[test]
fn spoofed_source_mac_is_dropped_with_reason() {
    let mut f = fixture();
    let spoofed = pkt::icmp_echo([0x02, 1, 2, 3, 4, 5], LXC_A, POD_A, POD_B, 64);
    let (verdict, _) = run(&mut f, "from_container", &spoofed);
    assert_eq!(verdict, TC_ACT_SHOT);
    let ev = events(&mut f);
    assert_eq!(ev.iter().find(|e| e.kind == "drop").unwrap().reason, Some(130));
}

#[test]
fn packet_to_local_endpoint_is_redirected_with_rewritten_macs() {
    let mut f = fixture();
    let p = pkt::icmp_echo(MAC_A, LXC_A, POD_A, POD_B, 64);
    let (verdict, out) = run(&mut f, "from_container", &p);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[0..6], &MAC_B, "eth dst = destination pod");
    assert_eq!(&out[6..12], &LXC_B, "eth src = destination's gateway MAC");
    assert_eq!(out[14 + 8], 63, "TTL decremented");
    assert_eq!(pkt::csum(&out[14..34]), 0, "IPv4 header checksum still valid");
    assert_eq!(&out[34..], &p[34..], "payload untouched");
    let ev = events(&mut f);
    let pts: Vec<_> = ev.iter().filter_map(|e| e.observation_point.clone()).collect();
    assert_eq!(pts, vec!["from-endpoint", "to-endpoint"]);
    let to = ev.iter().find(|e| e.observation_point.as_deref() == Some("to-endpoint")).unwrap();
    assert_eq!((to.dst_endpoint, to.src_identity, to.dst_identity), (22, 256, 257));
    assert!(
        ev.iter()
            .any(|e| e.message.as_deref() == Some("Successfully mapped addr=10.244.1.3 to identity=257"))
    );
}

#[test]
fn packet_to_node_address_goes_to_host() {
    let mut f = fixture();
    let (verdict, out) = run(&mut f, "from_container", &pkt::icmp_echo(MAC_A, LXC_A, POD_A, GW, 64));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out[14 + 8], 64, "the host path does not touch the packet");
    let ev = events(&mut f);
    assert!(ev.iter().any(|e| e.observation_point.as_deref() == Some("to-host") && e.dst_identity == 1));
}

#[test]
fn packet_to_unknown_address_goes_to_stack() {
    let mut f = fixture();
    let (verdict, _) = run(
        &mut f,
        "from_container",
        &pkt::icmp_echo(MAC_A, LXC_A, POD_A, Ipv4Addr::new(198, 18, 0, 99), 64),
    );
    assert_eq!(verdict, TC_ACT_OK);
    assert!(events(&mut f).iter().any(|e| e.observation_point.as_deref() == Some("to-stack")));
}

#[test]
fn from_host_delivers_to_local_pod_as_host_identity() {
    let mut f = fixture();
    let p = pkt::icmp_echo([0x0e, 0, 0, 0, 0, 1], [0x0e, 0, 0, 0, 0, 1], GW, POD_B, 64);
    let (verdict, out) = run(&mut f, "from_host", &p);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[0..6], &MAC_B);
    assert_eq!(&out[6..12], &LXC_B);
    assert_eq!(out[14 + 8], 64, "locally originated: TTL untouched");
    let ev = events(&mut f);
    let pts: Vec<_> = ev.iter().filter_map(|e| e.observation_point.clone()).collect();
    assert_eq!(pts, vec!["from-host", "to-endpoint"]);
    assert!(ev.iter().all(|e| e.kind != "trace" || e.src_identity == 1));
}

#[test]
fn traces_are_silent_without_a_monitor() {
    let mut f = fixture();
    f.dp.set_config(WeftConfig::default()).unwrap();
    let (verdict, _) = run(&mut f, "from_container", &pkt::icmp_echo(MAC_A, LXC_A, POD_A, POD_B, 64));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert!(events(&mut f).is_empty());
    // ...but drops are always reported.
    let (verdict, _) =
        run(&mut f, "from_container", &pkt::icmp_echo(MAC_A, LXC_A, Ipv4Addr::new(1, 2, 3, 4), POD_B, 64));
    assert_eq!(verdict, TC_ACT_SHOT);
    let ev = events(&mut f);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, "drop");
}

#[test]
fn to_remote_pod_sets_tunnel_key_vni_is_source_identity() {
    let mut f = fixture();
    with_vxlan(&mut f);
    let mut probe = Probe::load(&f, PROBE_LXC_OBJ, "probe_from_container");
    let (verdict, _) = probe.run(&pkt::icmp_echo(MAC_A, LXC_A, POD_A, REMOTE_POD, 64));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (remote, vni, set) = probe.get();
    assert!(set, "a tunnel key was set");
    assert_eq!(remote, NODE2, "remote = the node that owns the pod");
    assert_eq!(vni, 256, "VNI = the sender's identity");
    let ev = events(&mut f);
    let to =
        ev.iter().find(|e| e.observation_point.as_deref() == Some("to-overlay")).expect("to-overlay trace");
    assert_eq!((to.ifindex, to.src_identity, to.dst_identity), (VXLAN_IFINDEX, 256, 300));
    assert!(
        ev.iter().any(|e| e.message.as_deref()
            == Some("Encapsulating to node 3323068428 (0xc612000c) from seclabel 256")),
        "{ev:?}"
    );
}

#[test]
fn host_to_remote_pod_is_encapsulated_as_host() {
    let mut f = fixture();
    with_vxlan(&mut f);
    let p = pkt::icmp_echo([0x0e, 0, 0, 0, 0, 1], [0x0e, 0, 0, 0, 0, 1], GW, REMOTE_POD, 64);
    let (verdict, _) = run(&mut f, "from_host", &p);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let ev = events(&mut f);
    assert!(ev.iter().any(|e| e.observation_point.as_deref() == Some("to-overlay") && e.src_identity == 1));
}

#[test]
fn without_a_tunnel_device_remote_traffic_is_dropped_not_lost_silently() {
    let mut f = fixture();
    let (verdict, _) = run(&mut f, "from_container", &pkt::icmp_echo(MAC_A, LXC_A, POD_A, REMOTE_POD, 64));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(events(&mut f).iter().find(|e| e.kind == "drop").unwrap().reason, Some(160));
}

fn overlay_packet() -> Vec<u8> {
    pkt::icmp_echo([0x0a, 9, 9, 9, 9, 9], [0x0e, 9, 9, 9, 9, 9], REMOTE_POD, POD_B, 63)
}

#[test]
fn from_overlay_drops_unknown_outer_source() {
    let mut f = fixture();
    let mut probe = Probe::load(&f, PROBE_OVERLAY_OBJ, "probe_from_overlay");
    probe.set(Ipv4Addr::new(198, 18, 0, 66), 300);
    let (verdict, _) = probe.run(&overlay_packet());
    assert_eq!(verdict, TC_ACT_SHOT);
    let drop = events(&mut f).into_iter().find(|e| e.kind == "drop").expect("drop event");
    assert_eq!(
        (drop.reason, drop.reason_text.as_deref(), drop.file.as_deref()),
        (Some(172), Some("Unknown sender"), Some("overlay.c"))
    );
}

#[test]
fn from_overlay_drops_invalid_vni() {
    let mut f = fixture();
    let mut probe = Probe::load(&f, PROBE_OVERLAY_OBJ, "probe_from_overlay");
    for vni in [0, 3, 100] {
        probe.set(NODE2, vni);
        let (verdict, _) = probe.run(&overlay_packet());
        assert_eq!(verdict, TC_ACT_SHOT, "VNI {vni}");
    }
    let drops: Vec<_> = events(&mut f).into_iter().filter(|e| e.kind == "drop").collect();
    assert_eq!(drops.len(), 3);
    assert!(
        drops.iter().all(|d| d.reason == Some(171) && d.reason_text.as_deref() == Some("Invalid identity"))
    );
}

#[test]
fn from_overlay_delivers_with_the_identity_from_the_vni() {
    let mut f = fixture();
    let mut probe = Probe::load(&f, PROBE_OVERLAY_OBJ, "probe_from_overlay");
    probe.set(NODE2, 300);
    let (verdict, out) = probe.run(&overlay_packet());
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[0..6], &MAC_B);
    assert_eq!(&out[6..12], &LXC_B);
    let ev = events(&mut f);
    let from = ev.iter().find(|e| e.observation_point.as_deref() == Some("from-overlay")).unwrap();
    assert_eq!(from.src_identity, 300);
    let to = ev.iter().find(|e| e.observation_point.as_deref() == Some("to-endpoint")).unwrap();
    assert_eq!((to.src_identity, to.dst_identity, to.dst_endpoint), (300, 257, 22));
    // A remote host sends as identity 1; here it is the remote node (6).
    probe.set(NODE2, 1);
    let (verdict, _) = probe.run(&overlay_packet());
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let ev = events(&mut f);
    assert!(ev.iter().any(|e| e.observation_point.as_deref() == Some("to-endpoint") && e.src_identity == 6));
}

const NODE1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);

fn with_mode(f: &mut Fixture, mode: u32) {
    let mut c = f.dp.config().unwrap();
    c.mode = mode;
    c.underlay_ifindex = 1;
    c.node_ip4 = ip_to_be(NODE1);
    f.dp.set_config(c).unwrap();
    // This node's own address, as the agent puts it in the endpoint map.
    f.dp.put_endpoint(NODE1, EndpointInfo { flags: ENDPOINT_F_HOST, sec_identity: 1, ..Default::default() })
        .unwrap();
}

#[test]
fn ipip_encap_writes_calicos_outer_header() {
    let mut f = fixture();
    with_mode(&mut f, weft_datapath::maps::MODE_IPIP);
    let inner = pkt::icmp_echo(MAC_A, LXC_A, POD_A, REMOTE_POD, 64);
    let (verdict, out) = run(&mut f, "from_container", &inner);
    assert_eq!(verdict, TC_ACT_REDIRECT, "out of the underlay device via redirect_neigh");
    assert_eq!(out.len(), inner.len() + 20);
    let outer = &out[14..34];
    assert_eq!(outer[0], 0x45);
    assert_eq!(outer[9], 4, "protocol 4: IP-in-IP");
    assert_eq!(&outer[12..16], &NODE1.octets(), "outer source = this node");
    assert_eq!(&outer[16..20], &NODE2.octets(), "outer destination = the pod's node");
    assert_eq!(u16::from_be_bytes([outer[2], outer[3]]) as usize, inner.len() - 14 + 20);
    assert_eq!(pkt::csum(outer), 0, "outer header checksum");
    assert_eq!(&out[34..], &inner[14..], "the inner packet is carried byte for byte");
    let ev = events(&mut f);
    assert!(ev.iter().any(|e| e.observation_point.as_deref() == Some("to-network") && e.src_identity == 256));
}

/// An IP-in-IP packet as node2 would send it to us.
fn ipip_packet(outer_src: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    let l3 = &inner[14..];
    let mut outer = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 4, 0, 0];
    outer[2..4].copy_from_slice(&((l3.len() + 20) as u16).to_be_bytes());
    outer.extend_from_slice(&outer_src.octets());
    outer.extend_from_slice(&NODE1.octets());
    let c = pkt::csum(&outer);
    outer[10..12].copy_from_slice(&c.to_be_bytes());
    let mut p = inner[..14].to_vec();
    p.extend_from_slice(&outer);
    p.extend_from_slice(l3);
    p
}

#[test]
fn ipip_decap_restores_the_inner_packet_byte_for_byte() {
    let mut f = fixture();
    with_mode(&mut f, weft_datapath::maps::MODE_IPIP);
    // For this node itself: handed to the stack untouched.
    let inner = pkt::icmp_echo([0x0e, 2, 2, 2, 2, 2], [0x0e, 1, 1, 1, 1, 1], REMOTE_POD, NODE1, 63);
    let (verdict, out) = run(&mut f, "from_network", &ipip_packet(NODE2, &inner));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, inner, "decapsulated packet = the inner packet");
    // For a local pod: delivered into it, identity from the ipcache.
    let inner = pkt::icmp_echo([0x0e, 2, 2, 2, 2, 2], [0x0e, 1, 1, 1, 1, 1], REMOTE_POD, POD_B, 63);
    let (verdict, out) = run(&mut f, "from_network", &ipip_packet(NODE2, &inner));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out.len(), inner.len());
    assert_eq!(&out[0..6], &MAC_B);
    assert_eq!(&out[14 + 12..], &inner[14 + 12..], "addresses and payload unchanged");
    let ev = events(&mut f);
    let to = ev.iter().find(|e| e.observation_point.as_deref() == Some("to-endpoint")).unwrap();
    assert_eq!(to.src_identity, 300, "the source's identity comes from the ipcache");
    assert!(ev.iter().any(|e| e.observation_point.as_deref() == Some("from-network")));
}

#[test]
fn ipip_from_an_unknown_node_is_dropped() {
    let mut f = fixture();
    with_mode(&mut f, weft_datapath::maps::MODE_IPIP);
    let inner = pkt::icmp_echo([0x0e, 2, 2, 2, 2, 2], [0x0e, 1, 1, 1, 1, 1], REMOTE_POD, POD_B, 63);
    let (verdict, _) = run(&mut f, "from_network", &ipip_packet(Ipv4Addr::new(203, 0, 113, 9), &inner));
    assert_eq!(verdict, TC_ACT_SHOT);
    let d = events(&mut f).into_iter().find(|e| e.kind == "drop").unwrap();
    assert_eq!((d.reason, d.file.as_deref()), (Some(172), Some("netdev.c")));
}

#[test]
fn native_routes_to_the_node_without_encapsulation() {
    let mut f = fixture();
    with_mode(&mut f, weft_datapath::maps::MODE_NATIVE);
    let p = pkt::icmp_echo(MAC_A, LXC_A, POD_A, REMOTE_POD, 64);
    let (verdict, out) = run(&mut f, "from_container", &p);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[14..], &p[14..], "no encapsulation");
    assert!(
        events(&mut f)
            .iter()
            .any(|e| e.message.as_deref() == Some("Routing to node 198.18.0.12 from seclabel 256"))
    );
    // Node traffic on the underlay is left alone.
    let other = pkt::icmp_echo([0x0e, 2, 2, 2, 2, 2], [0x0e, 1, 1, 1, 1, 1], NODE2, NODE1, 64);
    let (verdict, out) = run(&mut f, "from_network", &other);
    assert_eq!((verdict, out), (TC_ACT_OK, other));
}

/// An ICMP echo with `payload` bytes and DF set, as `ping -M do` sends.
fn big_df_echo(payload: usize) -> Vec<u8> {
    let mut p = pkt::icmp_echo(MAC_A, LXC_A, POD_A, REMOTE_POD, 64);
    p.truncate(14 + 20 + 8);
    p.extend(std::iter::repeat_n(0xcd, payload));
    let total = (p.len() - 14) as u16;
    p[16..18].copy_from_slice(&total.to_be_bytes());
    p[20] = 0x40; // DF
    p[24..26].copy_from_slice(&[0, 0]);
    let c = pkt::csum(&p[14..34]);
    p[24..26].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn too_big_with_df_gets_fragmentation_needed_back() {
    let mut f = fixture();
    with_vxlan(&mut f);
    let mut c = f.dp.config().unwrap();
    c.path_mtu = 1450;
    f.dp.set_config(c).unwrap();
    // 1450 bytes fit.
    let (verdict, _) = run(&mut f, "from_container", &big_df_echo(1450 - 28));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let _ = events(&mut f);
    // 1451 do not: the pod gets ICMP 3/4 with the MTU, from its gateway.
    let p = big_df_echo(1451 - 28);
    let (verdict, out) = run(&mut f, "from_container", &p);
    assert_eq!(verdict, TC_ACT_REDIRECT, "the error goes back out of the pod's device");
    assert_eq!(out.len(), 14 + 20 + 8 + 28);
    assert_eq!(&out[0..6], &MAC_A, "to the pod");
    assert_eq!(&out[6..12], &LXC_A, "from its gateway MAC");
    let ip = &out[14..34];
    assert_eq!((ip[9], &ip[12..16], &ip[16..20]), (1, &GW.octets()[..], &POD_A.octets()[..]));
    assert_eq!(pkt::csum(ip), 0);
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 4), "destination unreachable, fragmentation needed");
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1450, "next-hop MTU");
    assert_eq!(&icmp[8..36], &p[14..42], "quotes the offending header and 8 bytes");
    assert_eq!(pkt::csum(icmp), 0, "ICMP checksum");
    let ev = events(&mut f);
    assert_eq!(ev.iter().find(|e| e.kind == "drop").unwrap().reason, Some(136));
}

/// How much of the verifier's budget each program takes (it gives up at
/// 1,000,000 instructions processed per program): a change that takes a
/// program near it fails here, with the numbers, before the program
/// stops loading on a kernel whose verifier explores a little more.
#[test]
fn every_program_verifies_with_room_to_spare() {
    use weft_datapath::loader::{PROGRAMS, STAGES};
    const BUDGET: u32 = 1_000_000;
    let mut f = fixture();
    let names: Vec<&str> = PROGRAMS.iter().copied().chain(STAGES.iter().map(|s| s.1)).collect();
    let counts: Vec<(&str, u32)> = names
        .iter()
        .map(|n| {
            let info = f.dp.program(n).expect("program").info().expect("program info");
            (*n, info.verified_instruction_count().expect("verified_insns (Linux 5.16+)"))
        })
        .collect();
    eprintln!("instructions the verifier processed: {counts:?}");
    for (name, n) in counts {
        assert!(
            n < BUDGET / 2,
            "{name}: the verifier processed {n} of its {BUDGET} instructions; move paths out \
             (a global function, as lb_translate, or a tail call) before it stops loading"
        );
    }
}
