//! The node's own devices: the weft_host/weft_net veth pair that carries the
//! pods' gateway address, the routes of the pod CIDRs to it, from-host on
//! its egress, the overlay device in VXLAN mode, and the node's addresses in
//! the endpoint map (so from-container knows which destinations are "the
//! host").

use crate::{config::Mode, state::Agent};
use std::net::Ipv4Addr;
use weft_datapath::maps::{ENDPOINT_F_HOST, EndpointInfo, WeftConfig, ip_to_be};
use weft_ipam::Cidr;
use weft_net::{
    netlink::{Netlink, Route, RouteScope, Veth},
    sysctl,
};

pub const HOST_DEV: &str = "weft_host";
pub const NET_DEV: &str = "weft_net";
pub const VXLAN_DEV: &str = "weft_vxlan";
/// The UDP port of weft's VXLAN (Cilium's, not IANA's 4789).
pub const VXLAN_PORT: u16 = 8472;

pub fn setup(agent: &Agent) -> Result<(), String> {
    let gw = agent.gateway;
    let mut nl = Netlink::open().map_err(|e| e.to_string())?;
    host_devices(agent, &mut nl).map_err(|e| format!("configuring {HOST_DEV}: {e}"))?;
    device_sysctls(HOST_DEV)?;
    device_sysctls(NET_DEV)?;
    let vxlan_ifindex =
        if agent.cluster && agent.mode == Mode::Vxlan { setup_vxlan(agent, &mut nl)? } else { 0 };
    let underlay_ifindex = nl.link_index(&agent.underlay_dev).map_err(|e| e.to_string())?.unwrap_or(0);
    let host_addresses = host_addresses(&mut nl, gw)?;
    let path_mtu = path_mtu(agent, &mut nl)?;

    let mut dp = agent.dp();
    dp.attach_host(HOST_DEV).map_err(|e| format!("datapath: {e}"))?;
    if vxlan_ifindex != 0 {
        dp.attach_overlay(VXLAN_DEV).map_err(|e| format!("datapath: {e}"))?;
    }
    // IP-in-IP and native packets arrive on the underlay device itself,
    // and so do connections to NodePorts, in every mode.
    dp.attach_netdev(&agent.underlay_dev).map_err(|e| format!("datapath: {e}"))?;
    for addr in host_addresses {
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
        path_mtu,
        // Services' node port range (crates/service): from-network looks
        // up NodePorts only there.
        nodeport_min: weft_service::NodePortRange::default().first(),
        nodeport_max: weft_service::NodePortRange::default().last(),
        ..crate::conntrack::datapath_config(agent)?
    };
    let nat = crate::nat::datapath_config(agent, cfg.flags)?;
    let cfg = WeftConfig {
        flags: nat.flags,
        snat_port_min: nat.snat_port_min,
        snat_port_max: nat.snat_port_max,
        ..cfg
    };
    dp.set_config(cfg).map_err(|e| format!("datapath: {e}"))?;
    Ok(())
}

/// weft_host holds the gateway as a /32 and never ARPs: pods get their
/// gateway MAC from BPF, and the host reaches pods through from-host, which
/// writes the MACs itself. In a cluster the whole pod pool goes there too:
/// from-host sends what is not local towards its node.
fn host_devices(agent: &Agent, nl: &mut Netlink) -> weft_net::Result<()> {
    let gw = agent.gateway;
    if !nl.link_exists(HOST_DEV)? {
        nl.veth_create(&Veth { name: HOST_DEV, peer: NET_DEV, ..Default::default() })?;
    }
    nl.link_up_noarp(HOST_DEV)?;
    nl.link_up_noarp(NET_DEV)?;
    nl.address_replace(HOST_DEV, gw, 32)?;
    let via_host = |c: Cidr| Route::to(c.addr, c.prefix).dev(HOST_DEV).scope(RouteScope::Link).src(gw);
    nl.route_replace(&via_host(agent.pod_cidr))?;
    if agent.cluster {
        nl.route_replace(&via_host(agent.cfg.cluster_pool))?;
    }
    // ClusterIPs too: what socket LB did not translate (a process outside
    // its cgroup) from-host translates per packet.
    let services = weft_service::ClusterIpRange::default().cidr();
    nl.route_replace(&via_host(Cidr { addr: services.addr(), prefix: services.prefix_len() }))?;
    // The link-local gateway is a host address too, so pods can reach it.
    let pod_gw = agent.pod_gateway();
    if pod_gw != gw {
        nl.address_replace(HOST_DEV, pod_gw, 32)?;
    }
    Ok(())
}

/// The largest IPv4 packet a pod may send to another node: the underlay's
/// MTU minus the encapsulation. Larger ones with DF set get "fragmentation
/// needed" back from the datapath. 0 (no check) on a single node.
fn path_mtu(agent: &Agent, nl: &mut Netlink) -> Result<u32, String> {
    if !agent.cluster {
        return Ok(0);
    }
    let mtu = nl.link_mtu(&agent.underlay_dev).map_err(|e| e.to_string())?.unwrap_or(1500);
    Ok(mtu - agent.mode.overhead())
}

/// weft_vxlan: an external (collect_md) VXLAN device. It has no fixed
/// remote: the datapath sets destination and VNI per packet.
fn setup_vxlan(agent: &Agent, nl: &mut Netlink) -> Result<u32, String> {
    let mtu = agent.pod_mtu;
    if !nl.link_exists(VXLAN_DEV).map_err(|e| e.to_string())? {
        nl.vxlan_external_create(VXLAN_DEV, mtu, VXLAN_PORT).map_err(|e| e.to_string())?;
    }
    nl.set_mtu(VXLAN_DEV, mtu).map_err(|e| e.to_string())?;
    nl.link_up(VXLAN_DEV).map_err(|e| e.to_string())?;
    device_sysctls(VXLAN_DEV)?;
    nl.require_index(VXLAN_DEV).map_err(|e| e.to_string())
}

/// rp_filter is off on weft's devices: a pod's packet to the host arrives on
/// its lxc device (or decapsulated on weft_vxlan) while the route back to
/// the pod points at weft_host, which strict reverse-path filtering would
/// reject. Forwarding is on so pod traffic leaving the node can be routed.
/// IPv6 is off: pods are IPv4-only.
pub fn device_sysctls(dev: &str) -> Result<(), String> {
    sysctl::set_conf("ipv4", dev, "rp_filter", "0").map_err(|e| e.to_string())?;
    sysctl::set_conf("ipv4", dev, "forwarding", "1").map_err(|e| e.to_string())?;
    if weft_net::has_ipv6() {
        sysctl::set_conf("ipv6", dev, "disable_ipv6", "1").map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The node's IPv4 addresses but loopback ones: (device, address).
fn ipv4_addresses(nl: &mut Netlink) -> Result<Vec<(String, Ipv4Addr)>, String> {
    let all = nl.addresses().map_err(|e| e.to_string())?;
    Ok(all.into_iter().filter(|a| !a.ip.is_loopback()).map(|a| (a.dev, a.ip)).collect())
}

/// Every IPv4 address of the node (the gateway included).
fn host_addresses(nl: &mut Netlink, gw: Ipv4Addr) -> Result<Vec<Ipv4Addr>, String> {
    let mut v: Vec<Ipv4Addr> = ipv4_addresses(nl)?.into_iter().map(|(_, a)| a).collect();
    if !v.contains(&gw) {
        v.push(gw);
    }
    Ok(v)
}

/// The underlay device and address: the given address, or the first one
/// not on a weft device.
pub fn underlay(wanted: Option<Ipv4Addr>) -> Result<(String, Ipv4Addr), String> {
    let addrs = ipv4_addresses(&mut Netlink::open().map_err(|e| e.to_string())?)?;
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
