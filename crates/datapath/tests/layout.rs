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
        "pad" => pad,
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
    assert_eq!(def(maps_h, "IPCACHE_F_NODE"), IPCACHE_F_NODE as u64);
    assert_eq!(def(maps_h, "MODE_VXLAN"), MODE_VXLAN as u64);
    assert_eq!(def(maps_h, "MODE_IPIP"), MODE_IPIP as u64);
    assert_eq!(def(maps_h, "MODE_NATIVE"), MODE_NATIVE as u64);
    assert_eq!(def(events_h, "EVENT_CAP_LEN"), EVENT_CAP_LEN as u64);
}
