//! The node's own devices: the weft_host/weft_net veth pair that carries the
//! pods' gateway address, the route of the pod CIDR to it, from-host on its
//! egress, and the node's addresses in the endpoint map (so from-container
//! knows which destinations are "the host").

use crate::state::Agent;
use std::net::Ipv4Addr;
use weft_datapath::maps::{ENDPOINT_F_HOST, EndpointInfo, WeftConfig, ip_to_be};
use weft_net::{ip, sysctl};

pub const HOST_DEV: &str = "weft_host";
pub const NET_DEV: &str = "weft_net";

pub fn setup(agent: &Agent) -> Result<(), String> {
    let gw = agent.gateway;
    let cidr = agent.cfg.pod_cidr;
    if !ip::link_exists(HOST_DEV) {
        ip::run(&["link", "add", HOST_DEV, "type", "veth", "peer", "name", NET_DEV])
            .map_err(|e| format!("creating {HOST_DEV}: {e}"))?;
    }
    // weft_host holds the gateway as a /32 and never ARPs: pods get their
    // gateway MAC from BPF, and the host reaches pods through from-host,
    // which writes the MACs itself.
    ip::batch(&[
        format!("link set {HOST_DEV} arp off up"),
        format!("link set {NET_DEV} arp off up"),
        format!("addr replace {gw}/32 dev {HOST_DEV}"),
        format!("route replace {cidr} dev {HOST_DEV} scope link src {gw}"),
    ])
    .map_err(|e| format!("configuring {HOST_DEV}: {e}"))?;
    device_sysctls(HOST_DEV)?;
    device_sysctls(NET_DEV)?;

    let mut inner = agent.lock();
    inner.dp.attach_host(HOST_DEV).map_err(|e| format!("datapath: {e}"))?;
    for addr in host_addresses(gw)? {
        inner
            .dp
            .put_endpoint(
                addr,
                EndpointInfo { flags: ENDPOINT_F_HOST, sec_identity: 1, ..Default::default() },
            )
            .map_err(|e| format!("datapath: {e}"))?;
    }
    let mut cfg = inner.dp.config().unwrap_or_default();
    cfg = WeftConfig {
        flags: cfg.flags,
        node_ip4: node_address()?.map(ip_to_be).unwrap_or(0),
        gw_ip4: ip_to_be(gw),
        pad: 0,
    };
    inner.dp.set_config(cfg).map_err(|e| format!("datapath: {e}"))?;
    Ok(())
}

/// rp_filter is off on weft's devices: a pod's packet to the host arrives on
/// its lxc device while the route back to the pod points at weft_host, which
/// strict reverse-path filtering would reject. Forwarding is on so pod
/// traffic leaving the node can be routed. IPv6 is off: pods are IPv4-only.
pub fn device_sysctls(dev: &str) -> Result<(), String> {
    sysctl::set(&format!("net.ipv4.conf.{dev}.rp_filter"), "0").map_err(|e| e.to_string())?;
    sysctl::set(&format!("net.ipv4.conf.{dev}.forwarding"), "1").map_err(|e| e.to_string())?;
    let _ = sysctl::set(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "1");
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

/// The node's underlay address: the first address not on a weft device.
pub fn node_address() -> Result<Option<Ipv4Addr>, String> {
    Ok(ip::ipv4_addresses()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|(dev, _)| !dev.starts_with("weft_") && !dev.starts_with("lxc"))
        .map(|(_, a)| a))
}
