//! The node's own devices: the weft_host/weft_net veth pair that carries the
//! pods' gateway address, the routes of the pod CIDRs to it, from-host on
//! its egress, the overlay device in VXLAN mode, and the node's addresses in
//! the endpoint map (so from-container knows which destinations are "the
//! host").

use crate::{config::Mode, state::Agent};
use std::net::Ipv4Addr;
use weft_datapath::maps::{ENDPOINT_F_HOST, EndpointInfo, WeftConfig, ip_to_be};
use weft_net::{ip, sysctl};

pub const HOST_DEV: &str = "weft_host";
pub const NET_DEV: &str = "weft_net";
pub const VXLAN_DEV: &str = "weft_vxlan";
/// The UDP port of weft's VXLAN (Cilium's, not IANA's 4789).
pub const VXLAN_PORT: u16 = 8472;

pub fn setup(agent: &Agent) -> Result<(), String> {
    let gw = agent.gateway;
    let cidr = agent.pod_cidr;
    if !ip::link_exists(HOST_DEV) {
        ip::run(&["link", "add", HOST_DEV, "type", "veth", "peer", "name", NET_DEV])
            .map_err(|e| format!("creating {HOST_DEV}: {e}"))?;
    }
    // weft_host holds the gateway as a /32 and never ARPs: pods get their
    // gateway MAC from BPF, and the host reaches pods through from-host,
    // which writes the MACs itself. In a cluster the whole pod pool goes
    // there too: from-host sends what is not local towards its node.
    let mut cmds = vec![
        format!("link set {HOST_DEV} arp off up"),
        format!("link set {NET_DEV} arp off up"),
        format!("addr replace {gw}/32 dev {HOST_DEV}"),
        format!("route replace {cidr} dev {HOST_DEV} scope link src {gw}"),
    ];
    if agent.cluster {
        cmds.push(format!("route replace {} dev {HOST_DEV} scope link src {gw}", agent.cfg.cluster_pool));
    }
    // The link-local gateway is a host address too, so pods can reach it.
    let pod_gw = agent.pod_gateway();
    if pod_gw != gw {
        cmds.push(format!("addr replace {pod_gw}/32 dev {HOST_DEV}"));
    }
    ip::batch(&cmds).map_err(|e| format!("configuring {HOST_DEV}: {e}"))?;
    device_sysctls(HOST_DEV)?;
    device_sysctls(NET_DEV)?;
    let vxlan_ifindex = if agent.cluster && agent.mode == Mode::Vxlan { setup_vxlan(agent)? } else { 0 };
    let underlay_ifindex = weft_net::ifindex(&agent.underlay_dev).unwrap_or(0);

    let mut dp = agent.dp();
    dp.attach_host(HOST_DEV).map_err(|e| format!("datapath: {e}"))?;
    if vxlan_ifindex != 0 {
        dp.attach_overlay(VXLAN_DEV).map_err(|e| format!("datapath: {e}"))?;
    }
    // IP-in-IP and native packets arrive on the underlay device itself.
    if agent.cluster && agent.mode != Mode::Vxlan {
        dp.attach_netdev(&agent.underlay_dev).map_err(|e| format!("datapath: {e}"))?;
    }
    for addr in host_addresses(gw)? {
        dp.put_endpoint(addr, EndpointInfo { flags: ENDPOINT_F_HOST, sec_identity: 1, ..Default::default() })
            .map_err(|e| format!("datapath: {e}"))?;
    }
    let flags = dp.config().map(|c| c.flags).unwrap_or(0);
    let cfg = WeftConfig {
        flags,
        node_ip4: ip_to_be(agent.node_ip),
        gw_ip4: ip_to_be(gw),
        mode: agent.mode.datapath(),
        vxlan_ifindex,
        underlay_ifindex,
        path_mtu: path_mtu(agent),
        pad: 0,
    };
    dp.set_config(cfg).map_err(|e| format!("datapath: {e}"))?;
    Ok(())
}

/// The largest IPv4 packet a pod may send to another node: the underlay's
/// MTU minus the encapsulation. Larger ones with DF set get "fragmentation
/// needed" back from the datapath. 0 (no check) on a single node.
fn path_mtu(agent: &Agent) -> u32 {
    if !agent.cluster {
        return 0;
    }
    weft_net::ip::link_mtu(&agent.underlay_dev).unwrap_or(1500) - agent.mode.overhead()
}

/// weft_vxlan: an external (collect_md) VXLAN device. It has no fixed
/// remote: the datapath sets destination and VNI per packet.
fn setup_vxlan(agent: &Agent) -> Result<u32, String> {
    let mtu = (agent.pod_mtu).to_string();
    if !ip::link_exists(VXLAN_DEV) {
        ip::run(&[
            "link",
            "add",
            VXLAN_DEV,
            "mtu",
            &mtu,
            "type",
            "vxlan",
            "external",
            "dstport",
            &VXLAN_PORT.to_string(),
        ])
        .map_err(|e| format!("creating {VXLAN_DEV}: {e}"))?;
    }
    ip::batch(&[format!("link set {VXLAN_DEV} mtu {mtu} up")])
        .map_err(|e| format!("configuring {VXLAN_DEV}: {e}"))?;
    device_sysctls(VXLAN_DEV)?;
    weft_net::ifindex(VXLAN_DEV).ok_or_else(|| format!("{VXLAN_DEV} vanished"))
}

/// rp_filter is off on weft's devices: a pod's packet to the host arrives on
/// its lxc device (or decapsulated on weft_vxlan) while the route back to
/// the pod points at weft_host, which strict reverse-path filtering would
/// reject. Forwarding is on so pod traffic leaving the node can be routed.
/// IPv6 is off: pods are IPv4-only.
pub fn device_sysctls(dev: &str) -> Result<(), String> {
    sysctl::set_conf("ipv4", dev, "rp_filter", "0").map_err(|e| e.to_string())?;
    sysctl::set_conf("ipv4", dev, "forwarding", "1").map_err(|e| e.to_string())?;
    if std::path::Path::new("/proc/sys/net/ipv6").exists() {
        sysctl::set_conf("ipv6", dev, "disable_ipv6", "1").map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Every IPv4 address of the node (the gateway included).
fn host_addresses(gw: Ipv4Addr) -> Result<Vec<Ipv4Addr>, String> {
    let mut v: Vec<Ipv4Addr> =
        ip::ipv4_addresses().map_err(|e| e.to_string())?.into_iter().map(|(_, a)| a).collect();
    if !v.contains(&gw) {
        v.push(gw);
    }
    Ok(v)
}

/// The underlay device and address: the given address, or the first one
/// not on a weft device.
pub fn underlay(wanted: Option<Ipv4Addr>) -> Result<(String, Ipv4Addr), String> {
    let addrs = ip::ipv4_addresses().map_err(|e| e.to_string())?;
    let found = match wanted {
        Some(w) => addrs.into_iter().find(|(_, a)| *a == w),
        None => addrs.into_iter().find(|(dev, _)| !dev.starts_with("weft_") && !dev.starts_with("lxc")),
    };
    found.ok_or_else(|| match wanted {
        Some(w) => format!("--node-ip {w} is not an address of this node"),
        None => {
            "this node has no IPv4 address to reach other nodes with; give it one or pass --node-ip".into()
        }
    })
}
