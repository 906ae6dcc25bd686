//! Per-packet cost of weft's programs: BPF_PROG_TEST_RUN with a repeat
//! count on typical packets (the kernel reports the average run time).

use aya::{TestRun, TestRunOptions};
use std::{net::Ipv4Addr, path::PathBuf};
use weft_datapath::{
    Datapath,
    maps::{EndpointInfo, IpcacheInfo, LxcInfo, WeftConfig, ip_to_be},
    pktgen,
};

const A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 5);
const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
const MAC_A: [u8; 6] = [0x0a, 0, 0, 0, 0, 1];
const LXC_A: [u8; 6] = [0x0e, 0, 0, 0, 0, 1];

struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (case, ns per packet) for each typical packet.
pub fn ns_per_packet(repeat: u32) -> Result<Vec<(String, f64)>, String> {
    let pins = Pins(PathBuf::from(format!("/sys/fs/bpf/weft-bench-dp-{}", std::process::id())));
    let mut dp = Datapath::load(&pins.0).map_err(|e| e.to_string())?;
    let e = |e: weft_datapath::Error| e.to_string();
    dp.set_config(WeftConfig { vxlan_ifindex: 1, gw_ip4: ip_to_be(GW), ..Default::default() }).map_err(e)?;
    dp.put_endpoint(
        A,
        EndpointInfo { ifindex: 1, sec_identity: 256, ep_id: 1, flags: 0, mac: MAC_A, node_mac: LXC_A },
    )
    .map_err(e)?;
    dp.put_endpoint(
        B,
        EndpointInfo {
            ifindex: 1,
            sec_identity: 257,
            ep_id: 2,
            flags: 0,
            mac: [0x0a, 0, 0, 0, 0, 2],
            node_mac: [0x0e, 0, 0, 0, 0, 2],
        },
    )
    .map_err(e)?;
    dp.lxc()
        .map_err(e)?
        .insert(1, LxcInfo { ip4: ip_to_be(A), ep_id: 1, pad: 0 }, 0)
        .map_err(|e| e.to_string())?;
    let node = ip_to_be(Ipv4Addr::new(198, 18, 0, 12));
    dp.put_ipcache(REMOTE, 32, IpcacheInfo { sec_identity: 300, tunnel_endpoint: node, flags: 0, pad: 0 })
        .map_err(e)?;
    let cases = [
        ("from-container: to a local pod", pktgen::icmp_echo(MAC_A, LXC_A, A, B, 64)),
        ("from-container: to a remote pod (VXLAN)", pktgen::icmp_echo(MAC_A, LXC_A, A, REMOTE, 64)),
        ("from-container: ARP for the gateway", pktgen::arp_request(MAC_A, A, GW)),
    ];
    let mut out = Vec::new();
    for (name, pkt) in cases {
        let prog = dp.program("from_container").ok_or("from_container missing")?;
        let mut buf = vec![0u8; pkt.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&pkt),
                data_out: Some(&mut buf),
                repeat,
                ..Default::default()
            })
            .map_err(|e| format!("test run: {e}"))?;
        out.push((name.to_string(), r.duration.as_nanos() as f64));
    }
    Ok(out)
}
