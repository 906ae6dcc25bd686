//! Link and address events of the node's namespace (rtnetlink multicast).
//!
//! - A ready pod's lxc device that vanishes (deleted by hand, or its pod's
//!   namespace torn down without a DEL) is noticed at once: a warning names
//!   the pod, and the endpoint's map entries go, so nothing in the datapath
//!   points at a dead ifindex. CHECK then reports the missing device; DEL
//!   cleans up as usual.
//! - The node's own address leaving its underlay device is a warning saying
//!   what changed and what to do: other nodes still reach this one there.
//! - A socket overflow (ENOBUFS) loses events: it is logged and everything
//!   is looked at again.

use crate::{journal::Phase, names, state::Agent};
use std::{net::Ipv4Addr, sync::Arc, time::Duration};
use weft_net::netlink::{Event, Events, Netlink, RTNLGRP_IPV4_IFADDR, RTNLGRP_LINK};

/// Starts the watcher. Called on a thread in the node's namespace, so the
/// socket (made here, before the thread starts) listens there.
pub fn start(agent: Arc<Agent>) -> Result<(), String> {
    let events = Events::subscribe(&[RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR], Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let mut node_ip_present = node_ip_state(&agent).unwrap_or(true);
    std::thread::Builder::new()
        .name("weft-linkwatch".into())
        .spawn(move || {
            let mut events = events;
            loop {
                match events.wait() {
                    Ok(batch) => {
                        for ev in batch {
                            handle(&agent, &ev, &mut node_ip_present);
                        }
                    }
                    Err(e) => {
                        log::warn!("link events: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
        .map_err(|e| format!("starting the link watcher: {e}"))?;
    Ok(())
}

fn handle(agent: &Agent, ev: &Event, node_ip_present: &mut bool) {
    match ev {
        Event::LinkDel { name, .. } if names::is_pod_device(name) => pod_device_gone(agent, name),
        Event::LinkDel { name, .. } if *name == agent.underlay_dev => {
            log::warn!(
                "the underlay device {name} (with the node's address {}) was deleted: pods cannot reach other nodes; recreate it with that address and restart the agent",
                agent.node_ip
            );
            *node_ip_present = false;
        }
        Event::AddrNew { .. } | Event::AddrDel { .. } => node_address(agent, node_ip_present),
        Event::Overrun => {
            log::warn!("link events overflowed the socket (some were lost): looking at every device again");
            rescan(agent, node_ip_present);
        }
        _ => {}
    }
}

/// A pod device vanished: if a ready endpoint owned it (and it is really
/// gone, not made again meanwhile), its map entries go.
fn pod_device_gone(agent: &Agent, dev: &str) {
    let key = agent.pods().endpoints.values().find(|r| r.host_ifname == dev).map(|r| r.key());
    let Some(key) = key else { return };
    // An ADD or DEL of this attachment finishes first; then look again.
    let _one_at_a_time = agent.attachments.lock(&key);
    let rec = agent.pods().endpoints.get(&key).filter(|r| r.phase == Phase::Ready).cloned();
    let Some(rec) = rec else { return };
    if Netlink::open().and_then(|mut nl| nl.link_exists(dev)).unwrap_or(true) {
        return;
    }
    let pod = match (&rec.pod_namespace, &rec.pod_name) {
        (Some(ns), Some(name)) => format!("pod {ns}/{name} (container {}", rec.container_id),
        _ => format!("container {} (no pod name", rec.container_id),
    };
    log::warn!(
        "{pod}, endpoint {}, {}) lost its host device {dev}: removed from the datapath; the pod has no network until the runtime deletes and re-adds it",
        rec.id,
        rec.ip
    );
    crate::removal::unprogram(&mut agent.dp(), &rec);
}

/// Whether the node's address is still on the underlay device.
fn node_ip_state(agent: &Agent) -> Result<bool, String> {
    let mut nl = Netlink::open().map_err(|e| e.to_string())?;
    let addrs = nl.addresses_of(&agent.underlay_dev).map_err(|e| e.to_string())?;
    Ok(addrs.iter().any(|a| a.ip == agent.node_ip))
}

/// Warns once when the node's address leaves the underlay device, and
/// once when it is back.
fn node_address(agent: &Agent, present: &mut bool) {
    let now = match node_ip_state(agent) {
        Ok(p) => p,
        Err(e) => return log::warn!("reading the node's addresses: {e}"),
    };
    if now == *present {
        return;
    }
    *present = now;
    let (ip, dev) = (agent.node_ip, &agent.underlay_dev);
    if now {
        log::info!("the node's address {ip} is back on {dev}");
        return;
    }
    let others: Vec<Ipv4Addr> = Netlink::open()
        .and_then(|mut nl| nl.addresses_of(dev))
        .map(|v| v.into_iter().map(|a| a.ip).collect())
        .unwrap_or_default();
    let has = if others.is_empty() {
        "no IPv4 address now".to_string()
    } else {
        format!("now {}", others.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "))
    };
    log::warn!(
        "the node's address {ip} was removed from {dev} ({dev} has {has}): other nodes still send this node's pod traffic to {ip}; put {ip} back on {dev}, or restart the agent (with --node-ip) so the cluster learns the new address"
    );
}

/// After lost events: every ready pod's device, and the node's address.
fn rescan(agent: &Agent, node_ip_present: &mut bool) {
    let ready: Vec<String> = agent
        .pods()
        .endpoints
        .values()
        .filter(|r| r.phase == Phase::Ready)
        .map(|r| r.host_ifname.clone())
        .collect();
    let present: std::collections::HashSet<String> = match Netlink::open().and_then(|mut nl| nl.links()) {
        Ok(links) => links.into_iter().map(|l| l.name).collect(),
        Err(e) => return log::warn!("rescanning devices: {e}"),
    };
    for dev in ready.iter().filter(|d| !present.contains(*d)) {
        pod_device_gone(agent, dev);
    }
    node_address(agent, node_ip_present);
}
