//! On start the agent adopts what the previous one left: endpoints from the
//! store, addresses from IPAM, maps and links from bpffs. Nothing is flushed;
//! entries are only rewritten where they differ, and only what no longer
//! has a pod behind it (its netns is gone) is removed.

use crate::{
    endpoint,
    state::{Agent, EndpointRecord},
};
use std::{collections::HashSet, path::Path};
use weft_ipam::Owner;
use weft_net::{ip, netns};

#[derive(Default, Debug)]
pub struct Report {
    pub adopted: usize,
    pub repaired: usize,
    pub removed: usize,
}

pub fn run(agent: &Agent) -> Result<Report, String> {
    let records: Vec<EndpointRecord> = weft_store::list_json(agent.store.as_ref(), &agent.endpoints_prefix())
        .map_err(|e| format!("reading endpoints from the store: {e}"))?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let mut report = Report::default();
    let mut inner = agent.lock();
    for rec in records {
        let key = (rec.container_id.clone(), rec.ifname.clone());
        inner.ids_in_use.insert(rec.id);
        inner.endpoints.insert(key, rec.clone());
        if !netns::exists(Path::new(&rec.netns)) {
            log::info!(
                "endpoint {} ({}): netns {} is gone, releasing {}",
                rec.id,
                rec.container_id,
                rec.netns,
                rec.ip
            );
            endpoint::forget(agent, &mut inner, &rec);
            let _ = ip::link_delete(&rec.host_ifname);
            report.removed += 1;
            continue;
        }
        let owner = Owner {
            container_id: rec.container_id.clone(),
            ifname: rec.ifname.clone(),
            netns: rec.netns.clone(),
        };
        if let Err(e) = inner.ipam.reserve(rec.ip, &owner) {
            log::warn!("endpoint {}: IPAM disagrees about {}: {e}", rec.id, rec.ip);
        }
        let Some(ifindex) = weft_net::ifindex(&rec.host_ifname) else {
            log::warn!(
                "endpoint {}: device {} is missing; the pod has no network until re-added",
                rec.id,
                rec.host_ifname
            );
            continue;
        };
        let current = inner
            .dp
            .endpoints()
            .ok()
            .and_then(|m| m.get(&weft_datapath::maps::EndpointKey::new(rec.ip), 0).ok());
        let attached = inner.dp.is_attached(&rec.host_ifname, weft_datapath::Hook::Ingress);
        if current == Some(rec.bpf_value(ifindex)) && attached {
            // Swap the program in the pinned link (atomic) so the restarted
            // agent's datapath is the one running; maps stay untouched.
            if let Err(e) = inner.dp.attach_lxc(&rec.host_ifname) {
                log::warn!("endpoint {}: {e}", rec.id);
            }
            report.adopted += 1;
        } else {
            if let Err(e) = endpoint::program_datapath(&mut inner, &rec, ifindex) {
                log::warn!("endpoint {}: {e}", rec.id);
            }
            report.repaired += 1;
        }
    }
    // Addresses held by ADDs that never completed.
    let known: HashSet<_> = inner.endpoints.keys().cloned().collect();
    for (ip_addr, owner) in inner.ipam.allocations() {
        if !known.contains(&(owner.container_id.clone(), owner.ifname.clone())) {
            log::info!("releasing {ip_addr}: held by an ADD that did not complete ({})", owner.container_id);
            let _ = inner.ipam.release(&owner.container_id, &owner.ifname);
            report.removed += 1;
        }
    }
    // Links pinned for pod devices no endpoint owns (node devices stay).
    let owned: HashSet<String> = inner.endpoints.values().map(|r| r.host_ifname.clone()).collect();
    for dev in inner.dp.attached_devices() {
        if dev.starts_with("lxc") && !owned.contains(&dev) {
            inner.dp.detach(&dev);
        }
    }
    // Map entries no endpoint owns (host entries stay).
    let ips: HashSet<_> = inner.endpoints.values().map(|r| r.ip).collect();
    if let Ok(list) = inner.dp.list_endpoints() {
        for (addr, v) in list {
            if v.flags & weft_datapath::maps::ENDPOINT_F_HOST == 0 && !ips.contains(&addr) {
                inner.dp.del_endpoint(addr);
            }
        }
    }
    log::info!(
        "reconciled: {} endpoints adopted from pinned state, {} repaired, {} removed",
        report.adopted,
        report.repaired,
        report.removed
    );
    Ok(report)
}
