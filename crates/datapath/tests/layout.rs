//! The C structs in bpf/lib/*.h and their Rust mirrors in maps.rs must agree
//! byte for byte: sizes and member offsets are read from the BTF of the
//! compiled object (via bpftool) and compared with the Rust layout.

use serde_json::Value;
use std::{
    collections::HashMap,
    mem::{offset_of, size_of},
    process::Command,
};
use weft_datapath::{loader::LAYOUT_OBJ, maps::*};

/// name -> (size, member -> byte offset)
fn btf_structs() -> HashMap<String, (u64, HashMap<String, u64>)> {
    let path = std::env::temp_dir().join(format!("weft-layout-{}.o", std::process::id()));
    std::fs::write(&path, LAYOUT_OBJ).unwrap();
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file"])
        .arg(&path)
        .arg("-j")
        .output()
        .expect("bpftool is needed for the layout test (apt-get install bpftool)");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "bpftool failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut structs = HashMap::new();
    for t in v["types"].as_array().unwrap() {
        if t["kind"] == "STRUCT" {
            let members = t["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m["name"].as_str().unwrap().to_string(), m["bits_offset"].as_u64().unwrap() / 8))
                .collect();
            structs.insert(t["name"].as_str().unwrap().to_string(), (t["size"].as_u64().unwrap(), members));
        }
    }
    structs
}

macro_rules! check {
    ($structs:expr, $c:literal, $rust:ty, { $($cf:literal => $rf:ident),* $(,)? }) => {{
        let (size, members) = $structs.get($c).unwrap_or_else(|| panic!("struct {} not in BTF", $c));
        assert_eq!(*size as usize, size_of::<$rust>(), "size of {} vs {}", $c, stringify!($rust));
        let mut seen = 0;
        $(
            assert_eq!(members[$cf] as usize, offset_of!($rust, $rf), "offset of {}.{}", $c, $cf);
            seen += 1;
        )*
        assert_eq!(seen, members.len(), "{} has members the Rust mirror does not list", $c);
    }};
}

#[test]
fn c_and_rust_layouts_agree() {
    let s = btf_structs();
    check!(s, "endpoint_key", EndpointKey, { "ip4" => ip4 });
    check!(s, "endpoint_info", EndpointInfo, {
        "ifindex" => ifindex, "sec_identity" => sec_identity, "ep_id" => ep_id,
        "flags" => flags, "mac" => mac, "node_mac" => node_mac,
    });
    check!(s, "lxc_info", LxcInfo, { "ip4" => ip4, "ep_id" => ep_id, "pad" => pad });
    check!(s, "weft_config", WeftConfig, {
        "flags" => flags, "node_ip4" => node_ip4, "gw_ip4" => gw_ip4, "mode" => mode,
        "vxlan_ifindex" => vxlan_ifindex, "underlay_ifindex" => underlay_ifindex, "path_mtu" => path_mtu,
        "ct_tcp_limit" => ct_tcp_limit, "ct_any_limit" => ct_any_limit, "ct_lifetime_tcp" => ct_lifetime_tcp,
        "ct_lifetime_syn" => ct_lifetime_syn, "ct_lifetime_close" => ct_lifetime_close,
        "ct_lifetime_any" => ct_lifetime_any, "nodeport_min" => nodeport_min, "nodeport_max" => nodeport_max,
        "snat_port_min" => snat_port_min, "snat_port_max" => snat_port_max,
    });
    check!(s, "nat_key", NatKey, {
        "saddr" => saddr, "daddr" => daddr, "sport" => sport, "dport" => dport, "proto" => proto,
        "dir" => dir, "pad" => pad,
    });
    check!(s, "nat_entry", NatEntry, {
        "addr" => addr, "port" => port, "rev_nat_id" => rev_nat_id, "created" => created,
        "expires" => expires, "flags" => flags, "pad" => pad,
    });
    check!(s, "ct_key", CtKey, {
        "saddr" => saddr, "daddr" => daddr, "sport" => sport, "dport" => dport, "proto" => proto,
        "scope" => scope, "pad" => pad,
    });
    check!(s, "ct_entry", CtEntry, {
        "tx_packets" => tx_packets, "tx_bytes" => tx_bytes, "rx_packets" => rx_packets, "rx_bytes" => rx_bytes,
        "expires" => expires, "created" => created, "peer_id" => peer_id, "ep_id" => ep_id, "flags" => flags,
        "rev_nat_id" => rev_nat_id, "backend_slot" => backend_slot, "backend_id" => backend_id,
    });
    check!(s, "policy_key", PolicyKey, {
        "prefixlen" => prefixlen, "ep_id" => ep_id, "direction" => direction, "peer_kind" => peer_kind,
        "peer" => peer, "cidr_class" => cidr_class, "pad" => pad, "proto" => proto, "dport" => dport,
    });
    check!(s, "policy_entry", PolicyEntry, {
        "action" => action, "flags" => flags, "prefixlen" => prefixlen, "rule" => rule,
    });
    check!(s, "policy_endpoint", PolicyEndpoint, {
        "ingress" => ingress, "egress" => egress, "pad" => pad, "revision" => revision,
    });
    check!(s, "identity_info", IdentityInfo, { "namespace_id" => namespace_id, "pad" => pad });
    check!(s, "policy_cidr_key", PolicyCidrKey, { "prefixlen" => prefixlen, "ip4" => ip4 });
    check!(s, "lb_key", LbKey, {
        "address" => address, "port" => port, "slot" => slot, "proto" => proto, "pad" => pad,
    });
    check!(s, "lb_frontend", LbFrontend, {
        "backend_id" => backend_id, "count" => count, "rev_nat_id" => rev_nat_id,
        "affinity_timeout" => affinity_timeout, "flags" => flags, "pad" => pad,
    });
    check!(s, "lb_backend", LbBackend, { "address" => address, "port" => port, "proto" => proto, "flags" => flags });
    check!(s, "lb_revnat", LbRevnat, { "address" => address, "port" => port, "pad" => pad });
    check!(s, "lb_affinity_key", LbAffinityKey, { "client" => client, "rev_nat_id" => rev_nat_id, "pad" => pad });
    check!(s, "lb_affinity", LbAffinity, { "backend_id" => backend_id, "last_used" => last_used });
    check!(s, "lb_maglev", LbMaglev, { "backend_ids" => backend_ids });
    check!(s, "sock_revnat_key", SockRevnatKey, { "cookie" => cookie, "address" => address, "port" => port, "pad" => pad });
    check!(s, "pipeline_state", PipelineState, {
        "src_id" => src_id, "dst_id" => dst_id, "src_ep" => src_ep, "dst_ep" => dst_ep, "hook" => hook,
        "ct_state" => ct_state, "rev_nat_id" => rev_nat_id,
    });
    check!(s, "ipcache_key", IpcacheKey, { "prefixlen" => prefixlen, "ip4" => ip4 });
    check!(s, "ipcache_info", IpcacheInfo, {
        "sec_identity" => sec_identity, "tunnel_endpoint" => tunnel_endpoint, "flags" => flags, "pad" => pad,
    });
    check!(s, "weft_event", WeftEvent, {
        "type" => kind, "subtype" => subtype, "source" => source, "hash" => hash,
        "ifindex" => ifindex, "src_identity" => src_identity, "dst_identity" => dst_identity,
        "dst_ep" => dst_ep, "reason" => reason, "file" => file, "line" => line,
        "cap_len" => cap_len, "orig_len" => orig_len, "arg1" => arg1, "arg2" => arg2,
        "arg3" => arg3, "orig_ip" => orig_ip, "ktime" => ktime, "data" => data,
    });
}

#[test]
fn abi_version_matches_the_c_header() {
    let header = include_str!("../../../bpf/lib/common.h");
    let line = header.lines().find(|l| l.starts_with("#define WEFT_ABI_VERSION")).unwrap();
    let v: u32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(v, ABI_VERSION, "bump maps::ABI_VERSION together with WEFT_ABI_VERSION");
}

#[test]
fn constants_match_the_c_headers() {
    let maps_h = include_str!("../../../bpf/lib/maps.h");
    let events_h = include_str!("../../../bpf/lib/events.h");
    let def = |src: &str, name: &str| -> u64 {
        let l = src.lines().find(|l| l.starts_with(&format!("#define {name} "))).unwrap();
        let v = l.split_whitespace().nth(2).unwrap();
        if let Some(h) = v.strip_prefix("0x") {
            u64::from_str_radix(h, 16).unwrap()
        } else {
            v.parse().unwrap()
        }
    };
    assert_eq!(def(maps_h, "ENDPOINT_F_HOST"), ENDPOINT_F_HOST as u64);
    assert_eq!(def(maps_h, "CFG_F_TRACE"), CFG_F_TRACE as u64);
    assert_eq!(def(maps_h, "CFG_F_DEBUG"), CFG_F_DEBUG as u64);
    assert_eq!(def(maps_h, "CFG_F_MASQUERADE"), CFG_F_MASQUERADE as u64);
    assert_eq!(def(maps_h, "CFG_F_HOST_BACKENDS"), CFG_F_HOST_BACKENDS as u64);
    let nat_h = include_str!("../../../bpf/lib/nat.h");
    assert_eq!(def(nat_h, "NAT_OUT"), NAT_OUT as u64);
    assert_eq!(def(nat_h, "NAT_IN"), NAT_IN as u64);
    assert_eq!(def(maps_h, "IPCACHE_F_NODE"), IPCACHE_F_NODE as u64);
    assert_eq!(def(maps_h, "MODE_VXLAN"), MODE_VXLAN as u64);
    assert_eq!(def(maps_h, "MODE_IPIP"), MODE_IPIP as u64);
    assert_eq!(def(maps_h, "MODE_NATIVE"), MODE_NATIVE as u64);
    assert_eq!(def(events_h, "EVENT_CAP_LEN"), EVENT_CAP_LEN as u64);

    let pipeline_h = include_str!("../../../bpf/lib/pipeline.h");
    assert_eq!(def(pipeline_h, "CALL_IPV4_FROM_LXC"), CALL_IPV4_FROM_LXC as u64);
    assert_eq!(def(pipeline_h, "CALL_IPV4_TO_ENDPOINT"), CALL_IPV4_TO_ENDPOINT as u64);
    for (slot, _) in weft_datapath::loader::STAGES {
        assert!((slot as u64) < def(pipeline_h, "CALL_MAX"));
    }

    let policy_h = include_str!("../../../bpf/lib/policy.h");
    for (name, value) in [
        ("POLICY_INGRESS", POLICY_INGRESS as u64),
        ("POLICY_EGRESS", POLICY_EGRESS as u64),
        ("PEER_ANY", PEER_ANY as u64),
        ("PEER_NAMESPACE", PEER_NAMESPACE as u64),
        ("PEER_IDENTITY", PEER_IDENTITY as u64),
        ("POLICY_ALLOW", POLICY_ALLOW as u64),
        ("POLICY_DENY", POLICY_DENY as u64),
        ("POLICY_F_LOG", POLICY_F_LOG as u64),
        ("POLICY_STATIC_BITS", POLICY_STATIC_BITS as u64),
        ("POLICY_FULL_BITS", POLICY_FULL_BITS as u64),
    ] {
        assert_eq!(def(policy_h, name), value, "{name}");
    }
    // The static bits are exactly the key's bytes from ep_id to pad.
    assert_eq!(
        POLICY_STATIC_BITS as usize,
        8 * (std::mem::offset_of!(PolicyKey, proto) - std::mem::offset_of!(PolicyKey, ep_id))
    );
    assert_eq!(POLICY_FULL_BITS as usize, 8 * (size_of::<PolicyKey>() - 4));

    let lb_h = include_str!("../../../bpf/lib/lb.h");
    for (name, value) in [
        ("LB_F_NODEPORT", LB_F_NODEPORT as u64),
        ("LB_F_AFFINITY", LB_F_AFFINITY as u64),
        ("LB_F_LOCAL", LB_F_LOCAL as u64),
        ("LB_F_SNAT", LB_F_SNAT as u64),
        ("LB_F_MAGLEV", LB_F_MAGLEV as u64),
        ("LB_MAGLEV_SIZE", LB_MAGLEV_SIZE as u64),
    ] {
        assert_eq!(def(lb_h, name), value, "{name}");
    }

    let ct_h = include_str!("../../../bpf/lib/conntrack.h");
    for (name, value) in [
        ("CT_EGRESS", CT_EGRESS as u64),
        ("CT_INGRESS", CT_INGRESS as u64),
        ("CT_SERVICE", CT_SERVICE as u64),
        ("CT_NEW", CT_NEW as u64),
        ("CT_ESTABLISHED", CT_ESTABLISHED as u64),
        ("CT_REPLY", CT_REPLY as u64),
        ("CT_RELATED", CT_RELATED as u64),
        ("CT_F_SEEN_REPLY", CT_F_SEEN_REPLY as u64),
        ("CT_F_TX_CLOSING", CT_F_TX_CLOSING as u64),
        ("CT_F_RX_CLOSING", CT_F_RX_CLOSING as u64),
        ("CT_LIFETIME_TCP", CT_LIFETIME_TCP as u64),
        ("CT_LIFETIME_SYN", CT_LIFETIME_SYN as u64),
        ("CT_LIFETIME_CLOSE", CT_LIFETIME_CLOSE as u64),
        ("CT_LIFETIME_ANY", CT_LIFETIME_ANY as u64),
        ("CT_COUNT_TCP_CREATED", CT_COUNT_TCP_CREATED as u64),
        ("CT_COUNT_TCP_BASE", CT_COUNT_TCP_BASE as u64),
        ("CT_COUNT_ANY_CREATED", CT_COUNT_ANY_CREATED as u64),
        ("CT_COUNT_ANY_BASE", CT_COUNT_ANY_BASE as u64),
    ] {
        assert_eq!(def(ct_h, name), value, "{name}");
    }
}

/// Every drop reason the C side defines has a text, every source file id
/// names the file the C side gives it, and no weft-own reason sits in the
/// range Cilium uses.
#[test]
fn drop_reasons_and_source_files_match_the_c_header() {
    use weft_datapath::events::{SOURCE_FILES, drop_reason_text};
    let drop_h = include_str!("../../../bpf/lib/drop.h");
    let mut reasons = 0;
    for l in drop_h.lines().filter(|l| l.starts_with("#define DROP_")) {
        let mut w = l.split_whitespace();
        let (name, value) = (w.nth(1).unwrap(), w.next().unwrap());
        let Ok(n) = value.parse::<u8>() else { continue };
        reasons += 1;
        assert_ne!(drop_reason_text(n), "Unknown reason", "{name} ({n}) has no text in events.rs");
        if l.contains("/* weft:") {
            assert!(n >= 230, "{name}: weft's own reasons start at 230, above Cilium's");
        }
    }
    assert!(reasons >= 20, "only {reasons} reasons parsed from drop.h");
    let mut ids = 0;
    for l in drop_h.lines().filter(|l| l.contains("!__builtin_strcmp(name, ")) {
        let file = l.split('"').nth(1).unwrap();
        let id: usize =
            l.split('?').nth(1).unwrap().trim().trim_end_matches(['\\', ':', ' ']).parse().unwrap();
        assert_eq!(SOURCE_FILES[id], file, "source id {id}");
        ids += 1;
    }
    assert_eq!(ids + 1, SOURCE_FILES.len(), "SOURCE_FILES and WEFT_SOURCE_ID differ in length");
}

/// The event numbers the agent decodes: event types, observation points,
/// debug message codes and policy match kinds, as the C headers define them.
#[test]
fn event_numbers_match_the_c_headers() {
    use weft_datapath::events::{self, OBS_POINTS, POLICY_MATCHES, debug_text};
    let defines = |src: &str, prefix: &str| -> Vec<(String, u64)> {
        src.lines()
            .filter(|l| l.starts_with(&format!("#define {prefix}")))
            .filter_map(|l| {
                let mut w = l.split_whitespace().skip(1);
                let name = w.next()?.to_string();
                let v = w.next()?.parse().ok()?;
                Some((name, v))
            })
            .collect()
    };
    let events_h = include_str!("../../../bpf/lib/events.h");
    let types: std::collections::HashMap<String, u64> = defines(events_h, "EVENT_").into_iter().collect();
    assert_eq!(types["EVENT_DROP"], events::EVENT_DROP as u64);
    assert_eq!(types["EVENT_DEBUG"], events::EVENT_DEBUG as u64);
    assert_eq!(types["EVENT_CAPTURE"], events::EVENT_CAPTURE as u64);
    assert_eq!(types["EVENT_TRACE"], events::EVENT_TRACE as u64);
    assert_eq!(types["EVENT_POLICY_VERDICT"], events::EVENT_POLICY_VERDICT as u64);
    assert_eq!(types["EVENT_TRACE_SOCK"], events::EVENT_TRACE_SOCK as u64);
    let sock_c = include_str!("../../../bpf/sock.c");
    let sock_events = defines(sock_c, "SOCK_EV_");
    assert_eq!(sock_events.len(), events::SOCK_EVENTS.len());
    for (name, v) in sock_events {
        let word = name.trim_start_matches("SOCK_EV_").to_lowercase();
        assert_eq!(events::SOCK_EVENTS[v as usize], word, "{name}");
    }

    let trace_h = include_str!("../../../bpf/lib/trace.h");
    let points = defines(trace_h, "TRACE_TO_").into_iter().chain(defines(trace_h, "TRACE_FROM_"));
    let mut n = 0;
    for (name, v) in points {
        let text = name.trim_start_matches("TRACE_").to_lowercase().replace('_', "-");
        assert_eq!(OBS_POINTS[v as usize], text, "{name}");
        n += 1;
    }
    assert_eq!(n, OBS_POINTS.len());

    let dbg_h = include_str!("../../../bpf/lib/dbg.h");
    let codes = defines(dbg_h, "DBG_");
    assert!(codes.len() >= 15);
    for (name, v) in codes {
        assert!(!debug_text(v as u8, 0, 0, 0).starts_with("Unknown message"), "{name} ({v}) has no text");
    }

    let policy_h = include_str!("../../../bpf/lib/policy.h");
    let matches = defines(policy_h, "POLICY_MATCH_");
    assert_eq!(matches.len(), POLICY_MATCHES.len());
    for (name, v) in matches {
        let want = match name.as_str() {
            "POLICY_MATCH_NONE" => "none",
            "POLICY_MATCH_L3" => "L3-Only",
            "POLICY_MATCH_L3_L4" => "L3-L4",
            "POLICY_MATCH_L4" => "L4-Only",
            "POLICY_MATCH_ALL" => "all",
            other => panic!("{other} is new: give it a text in events.rs"),
        };
        assert_eq!(POLICY_MATCHES[v as usize], want, "{name}");
    }
}

/// The maps the C headers declare are the ones user space knows by name
/// (tests/conntrack.rs checks a loaded datapath pins every one).
#[test]
fn every_map_declared_in_c_has_its_name_in_rust() {
    let headers = [
        include_str!("../../../bpf/lib/maps.h"),
        include_str!("../../../bpf/lib/events.h"),
        include_str!("../../../bpf/lib/drop.h"),
        include_str!("../../../bpf/lib/pipeline.h"),
        include_str!("../../../bpf/lib/conntrack.h"),
        include_str!("../../../bpf/lib/policy.h"),
        include_str!("../../../bpf/lib/lb.h"),
        include_str!("../../../bpf/lib/nat.h"),
    ];
    let mut declared: Vec<&str> = headers
        .iter()
        .flat_map(|h| h.lines())
        .filter_map(|l| l.strip_prefix("} ")?.strip_suffix(" SEC(\".maps\");"))
        .collect();
    declared.sort();
    let mut known = ALL_MAPS.to_vec();
    known.sort();
    assert_eq!(declared, known);
}
