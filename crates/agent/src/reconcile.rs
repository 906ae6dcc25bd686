//! On start the agent adopts what the previous one left and finishes what
//! it left half done. The journal says which pods this node has and how far
//! each got: ready ones are adopted (maps only rewritten where they differ,
//! programs swapped atomically in their pinned links), ADDs a crash cut
//! short are undone, DELs are finished. Then everything of weft's that no
//! record owns goes: addresses, link pins, map entries, lxc devices, and in
//! the store this node's stale publications and identity references.
//!
//! The repair loop keeps at it while the agent runs: DELs that owe the
//! store are retried until it answers.

use crate::{
    endpoint::{self, IDENTITY_UNKNOWN},
    journal::Phase,
    names,
    removal::{self, Unfinished},
    state::{Agent, AttachmentKey, EndpointRecord},
};
use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};
use weft_net::{netlink::Netlink, netns};

#[derive(Default, Debug)]
pub struct Report {
    pub adopted: usize,
    pub repaired: usize,
    pub removed: usize,
    /// Removals that wait for the store.
    pub owed: usize,
}

pub fn run(agent: &Agent) -> Result<Report, String> {
    let mut report = Report::default();
    let records = load(agent)?;
    // A reboot ended every pod of the earlier boot, whatever namespace of
    // the same name a runtime may have made since.
    let rebooted = agent.journal.earlier_boot();
    for rec in records {
        match rec.phase {
            Phase::Ready if !rebooted && netns::exists(Path::new(&rec.netns)) => {
                adopt(agent, &rec, &mut report)
            }
            phase => {
                let why = match phase {
                    _ if rebooted => "the machine restarted since it was added",
                    Phase::Adding => "its ADD was cut short",
                    Phase::Deleting => "its DEL was not finished",
                    Phase::Ready => "its network namespace is gone",
                };
                log::info!("endpoint {} ({} {}): {why}; removing it", rec.id, rec.container_id, rec.ip);
                match removal::teardown(agent, rec) {
                    Ok(()) => report.removed += 1,
                    Err(Unfinished::Store(e)) => {
                        log::warn!("the store part of that removal is owed: {e}");
                        report.owed += 1;
                    }
                    Err(Unfinished::Local(e)) => return Err(format!("removing an endpoint: {e}")),
                }
            }
        }
    }
    // Every address is journaled or undone now: the journal alone is the
    // record from here on.
    agent.pods().ipam.retire_legacy_file().map_err(|e| e.to_string())?;
    sweep(agent);
    if let Err(e) = sync_store(agent) {
        log::warn!(
            "bringing this node's records in the store up to date failed ({e}); retrying in the background"
        );
        agent.store_sync_pending.store(true, Ordering::SeqCst);
    }
    log::info!(
        "reconciled: {} endpoints adopted from pinned state, {} repaired, {} removed, {} removals owed to the store",
        report.adopted,
        report.repaired,
        report.removed,
        report.owed
    );
    Ok(report)
}

/// The journal's records, entered in the agent's table and IPAM, plus a
/// record in phase adding for every address an earlier agent's IPAM file
/// holds without one (an ADD of such an agent that died between taking
/// the address and writing its intent).
fn load(agent: &Agent) -> Result<Vec<EndpointRecord>, String> {
    let mut records = agent.journal.load()?;
    if records.is_empty() {
        records = migrate(agent)?;
    }
    let mut inner = agent.pods();
    for rec in &records {
        if !inner.ids.claim(rec.id) {
            return Err(format!(
                "the endpoint journal gives id {} twice (second: {}); fix or move away {}",
                rec.id,
                rec.ip,
                agent.cfg.state_dir.join("endpoints").display()
            ));
        }
        let owner = weft_ipam::Owner {
            container_id: rec.container_id.clone(),
            ifname: rec.ifname.clone(),
            netns: rec.netns.clone(),
        };
        inner
            .ipam
            .reserve(rec.ip, &owner)
            .map_err(|e| format!("endpoint {}: IPAM disagrees: {e}", rec.id))?;
        inner.endpoints.insert(rec.key(), rec.clone());
    }
    let journaled: HashSet<Ipv4Addr> = records.iter().map(|r| r.ip).collect();
    for (ip, owner) in inner.ipam.allocations() {
        if journaled.contains(&ip) {
            continue;
        }
        let Some(id) = inner.ids.take(names::endpoint_id_seed(&owner.container_id, &owner.ifname)) else {
            return Err("no endpoint id left to clean up an interrupted ADD".into());
        };
        let (host_mac, pod_mac) = names::macs(&owner.container_id, &owner.ifname);
        let rec = EndpointRecord {
            id,
            host_ifname: names::host_ifname(&owner.container_id, &owner.ifname),
            container_id: owner.container_id,
            ifname: owner.ifname,
            netns: owner.netns,
            network: String::new(),
            ip,
            host_mac,
            pod_mac,
            mtu: 0,
            identity: IDENTITY_UNKNOWN,
            labels: vec![],
            pod_namespace: None,
            pod_name: None,
            phase: Phase::Adding,
        };
        inner.endpoints.insert(rec.key(), rec.clone());
        records.push(rec);
    }
    Ok(records)
}

/// Agents before the journal kept their pods only in the store, under
/// `endpoints/<node>/<container>/<ifname>`: such records become ready
/// journal entries (and are published anew under the address), so an
/// upgrade keeps every running pod.
fn migrate(agent: &Agent) -> Result<Vec<EndpointRecord>, String> {
    let old: Vec<(String, EndpointRecord)> =
        weft_store::list_json(agent.store.as_ref(), &agent.endpoints_prefix())
            .map_err(|e| format!("reading endpoints of an earlier agent from the store: {e}"))?
            .into_iter()
            .filter(|(k, _)| k.split('/').count() == 4)
            .collect();
    let mut out = Vec::new();
    for (key, mut rec) in old {
        rec.phase = Phase::Ready;
        // Earlier agents kept no identity references: take this pod's.
        rec.identity = agent
            .identities
            .acquire(&rec.labels, &agent.identity_holder(rec.ip))
            .map_err(|e| format!("taking the identity of {} over: {e}", rec.ip))?;
        agent.journal.write(&rec)?;
        agent.store.delete(&key).map_err(|e| e.to_string())?;
        log::info!("endpoint {} ({}): taken over from an earlier agent's store record", rec.id, rec.ip);
        out.push(rec);
    }
    Ok(out)
}

/// A ready pod: its maps, link and identity as they should be.
fn adopt(agent: &Agent, rec: &EndpointRecord, report: &mut Report) {
    let mut dp = agent.dp();
    let Some(ifindex) = weft_net::ifindex(&rec.host_ifname) else {
        log::warn!(
            "endpoint {}: device {} is missing; the pod has no network until it is re-added",
            rec.id,
            rec.host_ifname
        );
        return;
    };
    let current =
        dp.endpoints().ok().and_then(|m| m.get(&weft_datapath::maps::EndpointKey::new(rec.ip), 0).ok());
    let attached = dp.is_attached(&rec.host_ifname, weft_datapath::Hook::Ingress);
    if current == Some(rec.bpf_value(ifindex)) && attached {
        // Swap the program in the pinned link (atomic) so the restarted
        // agent's datapath is the one running; maps stay untouched.
        if let Err(e) = dp.attach_lxc(&rec.host_ifname) {
            log::warn!("endpoint {}: {e}", rec.id);
        }
        report.adopted += 1;
    } else {
        if let Err(e) = endpoint::program_datapath(&mut dp, rec, ifindex) {
            log::warn!("endpoint {}: {e}", rec.id);
        }
        report.repaired += 1;
    }
}

/// What weft made and no record owns: link pins, endpoint and lxc map
/// entries, and lxc devices (one without its program would pass any
/// packet a pod sends — spoofed sources included).
fn sweep(agent: &Agent) {
    let pods = agent.pods();
    let mut dp = agent.dp();
    let owned: HashSet<String> = pods.endpoints.values().map(|r| r.host_ifname.clone()).collect();
    for dev in dp.attached_devices() {
        if names::is_pod_device(&dev) && !owned.contains(&dev) {
            dp.detach(&dev);
        }
    }
    let nl = Netlink::open().and_then(|mut nl| Ok((nl.links()?, nl)));
    match nl {
        Ok((links, mut nl)) => {
            for dev in links.into_iter().map(|l| l.name) {
                if names::is_pod_device(&dev) && !owned.contains(&dev) {
                    log::info!("removing {dev}: a pod device no endpoint owns");
                    if let Err(e) = nl.link_delete(&dev) {
                        log::warn!("{e}");
                    }
                }
            }
        }
        Err(e) => log::warn!("looking for pod devices no endpoint owns: {e}"),
    }
    let ips: HashSet<_> = pods.endpoints.values().map(|r| r.ip).collect();
    if let Ok(list) = dp.list_endpoints() {
        for (addr, v) in list {
            if v.flags & weft_datapath::maps::ENDPOINT_F_HOST == 0 && !ips.contains(&addr) {
                dp.del_endpoint(addr);
            }
        }
    }
    let ifindexes: HashSet<u32> = owned.iter().filter_map(|d| weft_net::ifindex(d)).collect();
    if let Ok(mut lxc) = dp.lxc() {
        let stale: Vec<u32> = lxc.keys().filter_map(|k| k.ok()).filter(|k| !ifindexes.contains(k)).collect();
        for k in stale {
            let _ = lxc.remove(&k);
        }
    }
}

/// This node's side of the store matches its journal: ready pods are
/// published, nothing else of this node is, and no identity reference is
/// held for an address IPAM does not hold. Then identities nothing
/// references anywhere are collected.
pub fn sync_store(agent: &Agent) -> Result<(), String> {
    let store = agent.store.as_ref();
    let published = store.list(&agent.endpoints_prefix()).map_err(|e| e.to_string())?;
    let (ready, known): (Vec<EndpointRecord>, HashSet<Ipv4Addr>) = {
        let inner = agent.pods();
        (
            inner.endpoints.values().filter(|r| r.phase == Phase::Ready).cloned().collect(),
            inner.endpoints.values().map(|r| r.ip).collect(),
        )
    };
    for rec in &ready {
        let key = agent.endpoint_key(rec.ip);
        let want = serde_json::to_vec(rec).expect("record serializes");
        if !published.iter().any(|(k, v)| *k == key && *v == want) {
            store.put(&key, &want).map_err(|e| e.to_string())?;
        }
    }
    for (key, value) in published {
        let ip = key.rsplit('/').next().and_then(|s| s.parse::<Ipv4Addr>().ok());
        if ip.is_none_or(|ip| !known.contains(&ip)) {
            // Only if unchanged: a new ADD may be publishing the address.
            store
                .txn(&[weft_store::Cmp::ValueIs(key.clone(), value)], &[weft_store::Op::Delete(key)])
                .map_err(|e| e.to_string())?;
        }
    }
    {
        // Under the lock: an ADD takes its address before its reference.
        let inner = agent.pods();
        let held: HashSet<Ipv4Addr> = inner.ipam.allocations().into_iter().map(|(a, _)| a).collect();
        for (id, holder) in
            agent.identities.refs_of(&format!("{}/", agent.cfg.node_name)).map_err(|e| e.to_string())?
        {
            let ip = holder.rsplit('/').next().and_then(|s| s.parse::<Ipv4Addr>().ok());
            if ip.is_none_or(|ip| !held.contains(&ip)) {
                log::info!("dropping identity {id}'s reference by {holder}: no pod holds that address");
                agent.identities.release(id, &holder).map_err(|e| e.to_string())?;
            }
        }
    }
    drop_superseded_refs(agent)?;
    let freed = agent.identities.collect().map_err(|e| e.to_string())?;
    if !freed.is_empty() {
        log::info!("collected identities nothing references: {freed:?}");
    }
    Ok(())
}

/// A ready pod references exactly its journaled identity; a relabel cut
/// short leaves the old one referenced too. Checked under the pod's
/// attachment lock, so a relabel in progress (new reference taken, journal
/// not yet written) is never cut.
fn drop_superseded_refs(agent: &Agent) -> Result<(), String> {
    let by_ip: HashMap<Ipv4Addr, (AttachmentKey, u32)> = agent
        .pods()
        .endpoints
        .values()
        .filter(|r| r.phase == Phase::Ready && r.identity != IDENTITY_UNKNOWN)
        .map(|r| (r.ip, (r.key(), r.identity)))
        .collect();
    for (id, holder) in
        agent.identities.refs_of(&format!("{}/", agent.cfg.node_name)).map_err(|e| e.to_string())?
    {
        let ip = holder.rsplit('/').next().and_then(|s| s.parse::<Ipv4Addr>().ok());
        let Some((key, has)) = ip.and_then(|ip| by_ip.get(&ip)) else { continue };
        if *has == id {
            continue;
        }
        let _one_at_a_time = agent.attachments.lock(key);
        let still =
            agent.pods().endpoints.get(key).is_some_and(|r| r.phase == Phase::Ready && r.identity != id);
        if still {
            log::info!("dropping identity {id}'s reference by {holder}: the pod now has another identity");
            agent.identities.release(id, &holder).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Finishes, as soon as a DEL hands one over, the removal of a pod's device
/// and address (see `removal`); retries, once a second, DELs that owe the
/// store and store work that failed at start. A failure is logged when it
/// changes or once a minute.
pub fn start_repair(agent: Arc<Agent>) {
    std::thread::Builder::new()
        .name("weft-repair".into())
        .spawn(move || {
            let mut last: Option<(String, Instant)> = None;
            loop {
                agent.removals.wait(Duration::from_secs(1));
                if let Err(e) = repair_once(&agent) {
                    let quiet =
                        last.as_ref().is_some_and(|(m, t)| *m == e && t.elapsed() < Duration::from_secs(60));
                    if !quiet {
                        log::warn!("repair: {e}");
                        last = Some((e, Instant::now()));
                    }
                } else if last.take().is_some() {
                    log::info!("repair: everything owed is done");
                }
            }
        })
        .expect("spawn repair loop");
}

pub fn repair_once(agent: &Agent) -> Result<(), String> {
    let removed = removal::finish_owed(agent);
    if agent.store_sync_pending.load(Ordering::SeqCst) {
        sync_store(agent)?;
        agent.store_sync_pending.store(false, Ordering::SeqCst);
    }
    removed
}
