//! BPF_PROG_TEST_RUN tests of the pipeline's conntrack (bpf/lib/conntrack.h)
//! and of how drops are reported: crafted packets through the real
//! programs, checking verdicts, the conntrack entries they leave, the
//! trace states and the drop events' reasons and source lines.

mod fixture;

use fixture::*;
use weft_datapath::{
    conntrack::{Conntrack, Table, now},
    maps::*,
};

const SPORT: u16 = 40000;

/// The one entry of a flow at a scope, if any.
fn entry(f: &Fixture, key: CtKey) -> Option<CtEntry> {
    let ct = Conntrack::open(&f.base).unwrap();
    ct.entries().unwrap().into_iter().find(|(k, _)| *k == key).map(|(_, e)| e)
}

fn key(
    src: std::net::Ipv4Addr,
    sport: u16,
    dst: std::net::Ipv4Addr,
    dport: u16,
    proto: u8,
    scope: u8,
) -> CtKey {
    CtKey {
        saddr: ip_to_be(src),
        daddr: ip_to_be(dst),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        scope,
        pad: 0,
    }
}

/// The line of `needle` in a bpf/ source, 1-based: drop events must point
/// at the line that decided.
fn line_of(src: &str, needle: &str) -> u16 {
    let hits: Vec<_> = src.lines().enumerate().filter(|(_, l)| l.contains(needle)).collect();
    assert_eq!(hits.len(), 1, "{needle:?} must occur once");
    hits[0].0 as u16 + 1
}

/// Makes the test device B's (the lxc map says who sends from it).
fn send_as_b(f: &mut Fixture) {
    f.dp.lxc().unwrap().insert(TEST_IFINDEX, LxcInfo { ip4: ip_to_be(POD_B), ep_id: 22, pad: 0 }, 0).unwrap();
}

fn states(ev: &[weft_datapath::events::MonitorEvent]) -> Vec<(String, String)> {
    ev.iter()
        .filter(|e| e.kind == "trace")
        .map(|e| (e.observation_point.clone().unwrap_or_default(), e.state.clone()))
        .collect()
}

#[test]
fn a_new_flow_is_tracked_at_both_ends_and_its_reply_passes_on_the_entries() {
    let mut f = fixture();
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, SPORT, POD_B, 80, pkt::TCP_SYN);
    let (verdict, _) = run(&mut f, "from_container", &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let ev = events(&mut f);
    assert_eq!(
        states(&ev),
        vec![("from-endpoint".into(), "new".into()), ("to-endpoint".into(), "new".into())]
    );
    let msgs: Vec<_> = ev.iter().filter_map(|e| e.message.clone()).collect();
    assert!(
        msgs.contains(&"Conntrack lookup 1/2: src=10.244.1.2:40000 dst=10.244.1.3:80".to_string()),
        "{msgs:?}"
    );
    assert!(msgs.contains(&"Conntrack lookup 2/2: nexthdr=6 flags=0".to_string()), "{msgs:?}");
    assert!(msgs.contains(&"Conntrack lookup 2/2: nexthdr=6 flags=1".to_string()), "{msgs:?}");
    assert!(msgs.contains(&"CT verdict: New, revnat=0".to_string()), "{msgs:?}");
    assert!(
        msgs.contains(&"Conntrack create: proxy-port=0 revnat=0 src-identity=256 lb=0.0.0.0".to_string())
    );

    let out = entry(&f, key(POD_A, SPORT, POD_B, 80, 6, CT_EGRESS)).expect("A's egress entry");
    assert_eq!((out.ep_id, out.peer_id, out.tx_packets, out.rx_packets), (11, 257, 1, 0));
    assert_eq!(out.flags & CT_F_SEEN_REPLY, 0);
    let left = out.expires.wrapping_sub(now());
    assert!((55..=61).contains(&left), "an unanswered SYN lives ~60 s, not {left}");
    let inn = entry(&f, key(POD_A, SPORT, POD_B, 80, 6, CT_INGRESS)).expect("B's ingress entry");
    assert_eq!((inn.ep_id, inn.peer_id), (22, 256));

    // B answers: a reply at B's egress and at A's ingress, on the entries.
    send_as_b(&mut f);
    let synack = pkt::tcp(MAC_B, LXC_B, POD_B, 80, POD_A, SPORT, pkt::TCP_SYN | pkt::TCP_ACK);
    let (verdict, out_pkt) = run(&mut f, "from_container", &synack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out_pkt[0..6], &MAC_A, "delivered to A");
    let ev = events(&mut f);
    assert_eq!(
        states(&ev),
        vec![("from-endpoint".into(), "reply".into()), ("to-endpoint".into(), "reply".into())]
    );
    assert!(ev.iter().all(|e| e.message.as_deref().is_none_or(|m| !m.starts_with("Conntrack create"))));
    let out = entry(&f, key(POD_A, SPORT, POD_B, 80, 6, CT_EGRESS)).unwrap();
    assert_eq!((out.tx_packets, out.rx_packets), (1, 1));
    assert_ne!(out.flags & CT_F_SEEN_REPLY, 0);
    let left = out.expires.wrapping_sub(now());
    assert!(left > 21000, "an answered TCP flow is established for ~6 h, not {left} s");
    assert_eq!(Conntrack::open(&f.base).unwrap().entries().unwrap().len(), 2, "no entries for the reply");

    // FIN: closing, short lifetime.
    let fin = pkt::tcp(MAC_B, LXC_B, POD_B, 80, POD_A, SPORT, pkt::TCP_FIN | pkt::TCP_ACK);
    run(&mut f, "from_container", &fin);
    let out = entry(&f, key(POD_A, SPORT, POD_B, 80, 6, CT_EGRESS)).unwrap();
    assert_ne!(out.flags & CT_F_RX_CLOSING, 0);
    assert!(out.expires.wrapping_sub(now()) <= 10);
}

#[test]
fn pings_are_tracked_by_their_id_in_the_other_table_and_replies_match() {
    let mut f = fixture();
    let echo = pkt::icmp_echo(MAC_A, LXC_A, POD_A, POD_B, 64);
    assert_eq!(run(&mut f, "from_container", &echo).0, TC_ACT_REDIRECT);
    // The echo id (0x1234) stands in both ports.
    let k = key(POD_A, 0x1234, POD_B, 0x1234, 1, CT_EGRESS);
    assert!(entry(&f, k).is_some(), "{:?}", Conntrack::open(&f.base).unwrap().entries().unwrap());
    let ct = Conntrack::open(&f.base).unwrap();
    assert_eq!(ct.live(Table::Any).unwrap(), 2);
    assert_eq!(ct.live(Table::Tcp).unwrap(), 0);
    events(&mut f);

    send_as_b(&mut f);
    let mut reply = pkt::icmp_echo(MAC_B, LXC_B, POD_B, POD_A, 64);
    reply[34] = 0; // echo reply; the checksum does not matter to the datapath
    assert_eq!(run(&mut f, "from_container", &reply).0, TC_ACT_REDIRECT);
    let ev = events(&mut f);
    assert_eq!(
        states(&ev),
        vec![("from-endpoint".into(), "reply".into()), ("to-endpoint".into(), "reply".into())]
    );
}

#[test]
fn an_icmp_error_about_a_tracked_flow_is_related() {
    let mut f = fixture();
    let dgram = pkt::udp(MAC_A, LXC_A, POD_A, SPORT, POD_B, 53, 10);
    assert_eq!(run(&mut f, "from_container", &dgram).0, TC_ACT_REDIRECT);
    events(&mut f);
    send_as_b(&mut f);
    let unreachable = pkt::icmp_error(MAC_B, LXC_B, POD_B, POD_A, 3, 3, &dgram);
    assert_eq!(run(&mut f, "from_container", &unreachable).0, TC_ACT_REDIRECT);
    let ev = events(&mut f);
    assert_eq!(
        states(&ev),
        vec![("from-endpoint".into(), "related".into()), ("to-endpoint".into(), "related".into())]
    );
    assert_eq!(Conntrack::open(&f.base).unwrap().entries().unwrap().len(), 2, "errors create no entries");
}

#[test]
fn a_full_table_refuses_new_flows_and_keeps_the_established_ones() {
    let mut f = fixture();
    let mut c = f.dp.config().unwrap();
    c.ct_tcp_limit = 2; // one same-node flow: A's egress and B's ingress entry
    f.dp.set_config(c).unwrap();
    let syn = pkt::tcp(MAC_A, LXC_A, POD_A, SPORT, POD_B, 80, pkt::TCP_SYN);
    assert_eq!(run(&mut f, "from_container", &syn).0, TC_ACT_REDIRECT);
    events(&mut f);

    let other = pkt::tcp(MAC_A, LXC_A, POD_A, SPORT + 1, POD_B, 80, pkt::TCP_SYN);
    assert_eq!(run(&mut f, "from_container", &other).0, TC_ACT_SHOT, "a new flow beyond the limit");
    let ev = events(&mut f);
    let drop = ev.iter().find(|e| e.kind == "drop").expect("a drop event");
    assert_eq!(drop.reason_text.as_deref(), Some("CT: Map insertion failed"));
    assert_eq!(drop.file.as_deref(), Some("conntrack.h"));
    let ct_h = include_str!("../../../bpf/lib/conntrack.h");
    assert_eq!(drop.line, Some(line_of(ct_h, "n_created = ct_admit(p->key.proto);") + 2));
    assert!(entry(&f, key(POD_A, SPORT + 1, POD_B, 80, 6, CT_EGRESS)).is_none());

    let ack = pkt::tcp(MAC_A, LXC_A, POD_A, SPORT, POD_B, 80, pkt::TCP_ACK);
    assert_eq!(run(&mut f, "from_container", &ack).0, TC_ACT_REDIRECT, "the established flow goes on");
    assert_eq!(entry(&f, key(POD_A, SPORT, POD_B, 80, 6, CT_EGRESS)).unwrap().tx_packets, 2);
    let drops = f.dp.drop_counts().unwrap();
    assert_eq!(drops, vec![(155, 1)], "counted once, per reason");

    // A GC pass that frees nothing keeps refusing; a flush frees the table.
    let ct = Conntrack::open(&f.base).unwrap();
    let pass = ct.gc(Table::Tcp, now()).unwrap();
    assert_eq!((pass.scanned, pass.deleted, pass.live), (2, 0, 2));
    assert_eq!(run(&mut f, "from_container", &other).0, TC_ACT_SHOT);
    assert_eq!(ct.flush().unwrap(), 2);
    assert_eq!(ct.live(Table::Tcp).unwrap(), 0);
    assert_eq!(run(&mut f, "from_container", &other).0, TC_ACT_REDIRECT);
}

#[test]
fn gc_removes_only_expired_entries_and_corrects_the_count() {
    let mut f = fixture();
    for sport in [1000, 1001, 1002] {
        let syn = pkt::tcp(MAC_A, LXC_A, POD_A, sport, POD_B, 80, pkt::TCP_SYN);
        assert_eq!(run(&mut f, "from_container", &syn).0, TC_ACT_REDIRECT);
    }
    let ct = Conntrack::open(&f.base).unwrap();
    assert_eq!(ct.live(Table::Tcp).unwrap(), 6);
    // Nothing has expired yet; 61 s from now every unanswered SYN has.
    assert_eq!(ct.gc(Table::Tcp, now()).unwrap().deleted, 0);
    let pass = ct.gc(Table::Tcp, now() + 61).unwrap();
    assert_eq!((pass.scanned, pass.deleted, pass.live), (6, 6, 0));
    assert_eq!(ct.live(Table::Tcp).unwrap(), 0);
    assert!(pass.capacity >= 1 << 16);
}

#[test]
fn drop_events_name_the_header_line_that_decided() {
    let mut f = fixture();
    let mut p = pkt::icmp_echo(MAC_A, LXC_A, POD_A, POD_B, 1);
    p[14 + 10] = 0; // checksum is recomputed incrementally; its value does not matter
    assert_eq!(run(&mut f, "from_container", &p).0, TC_ACT_SHOT);
    let ev = events(&mut f);
    let drop = ev.iter().find(|e| e.kind == "drop").expect("a drop event");
    assert_eq!(drop.reason_text.as_deref(), Some("TTL exceeded"));
    assert_eq!(drop.file.as_deref(), Some("local.h"));
    let local_h = include_str!("../../../bpf/lib/local.h");
    assert_eq!(drop.line, Some(line_of(local_h, "return DROP(DROP_TTL_EXCEEDED);")));
    assert_eq!((drop.source, drop.dst_endpoint, drop.src_identity, drop.dst_identity), (11, 22, 256, 257));
}

#[test]
fn an_empty_stage_slot_is_a_missed_tail_call_drop_not_a_silent_pass() {
    let mut f = fixture();
    let pin = weft_datapath::loader::pin_dir(&f.base).join(MAP_CALLS);
    let data = aya::maps::MapData::from_pin(&pin).unwrap();
    let mut calls: aya::maps::ProgramArray<_> =
        aya::maps::ProgramArray::try_from(aya::maps::Map::from_map_data(data).unwrap()).unwrap();
    calls.clear_index(&CALL_IPV4_FROM_LXC).unwrap();
    let echo = pkt::icmp_echo(MAC_A, LXC_A, POD_A, POD_B, 64);
    assert_eq!(run(&mut f, "from_container", &echo).0, TC_ACT_SHOT);
    let ev = events(&mut f);
    let drop = ev.iter().find(|e| e.kind == "drop").expect("a drop event");
    assert_eq!(drop.reason_text.as_deref(), Some("Missed tail call"));
    assert_eq!(drop.file.as_deref(), Some("lxc.c"));
}

#[test]
fn every_map_is_pinned_so_it_outlives_the_agent() {
    let f = fixture();
    let dir = weft_datapath::loader::pin_dir(&f.base);
    for name in ALL_MAPS {
        assert!(dir.join(name).exists(), "{name} is not pinned in {}", dir.display());
    }
}

#[test]
fn later_fragments_take_the_first_ones_ports_and_orphans_are_dropped() {
    let mut f = fixture();
    // A 2000-byte UDP datagram to port 53 in two fragments.
    let mut first_body = vec![0u8; 1480];
    first_body[0..2].copy_from_slice(&SPORT.to_be_bytes());
    first_body[2..4].copy_from_slice(&53u16.to_be_bytes());
    first_body[4..6].copy_from_slice(&2008u16.to_be_bytes());
    let first = pkt::ipv4_fragment(MAC_A, LXC_A, POD_A, POD_B, 17, 0x4242, 0, true, &first_body);
    let second = pkt::ipv4_fragment(MAC_A, LXC_A, POD_A, POD_B, 17, 0x4242, 185, false, &[7u8; 528]);
    assert_eq!(run(&mut f, "from_container", &first).0, TC_ACT_REDIRECT);
    assert!(entry(&f, key(POD_A, SPORT, POD_B, 53, 17, CT_EGRESS)).is_some());
    events(&mut f);
    assert_eq!(run(&mut f, "from_container", &second).0, TC_ACT_REDIRECT);
    let ev = events(&mut f);
    assert_eq!(
        states(&ev),
        vec![("from-endpoint".into(), "established".into()), ("to-endpoint".into(), "established".into())],
        "the later fragment is the same flow"
    );
    assert_eq!(entry(&f, key(POD_A, SPORT, POD_B, 53, 17, CT_EGRESS)).unwrap().tx_packets, 2);

    let orphan = pkt::ipv4_fragment(MAC_A, LXC_A, POD_A, POD_B, 17, 0x9999, 185, false, &[7u8; 100]);
    assert_eq!(run(&mut f, "from_container", &orphan).0, TC_ACT_SHOT);
    let ev = events(&mut f);
    let drop = ev.iter().find(|e| e.kind == "drop").expect("a drop event");
    assert_eq!(drop.reason_text.as_deref(), Some("First logical datagram fragment not found"));
    assert_eq!(drop.file.as_deref(), Some("conntrack.h"));
}
