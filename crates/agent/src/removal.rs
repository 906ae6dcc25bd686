//! Taking a pod's attachment down: CNI DEL, an ADD that failed, GC, a
//! restart that finds an interrupted DEL, the repair loop.
//!
//! The order: the journal says "deleting" → the pod's map entries go (its
//! traffic stops: from-container finds no lxc entry and drops, and nothing
//! is delivered to it) → the store forgets the pod (publication, identity
//! reference) → the device goes, its program with it → last the journal
//! entry, the endpoint id and the address. Every step is idempotent, so
//! running it all again after a crash or a store failure is always right,
//! and the address is released only after the cluster forgot the pod.
//!
//! Removing a veth pair costs the kernel about 20 ms (after the device is
//! unregistered, netdev_run_todo waits in rcu_barrier), most of a DEL. So a
//! DEL answers once the pod's traffic has stopped and the store has
//! forgotten it: it puts the device in weft's device group [`DOOMED_GROUP`]
//! and hands it and the address to the `weft-repair` thread, which is woken
//! at once ([`Removals`]) and deletes the whole group in one request (the
//! kernel waits for RCU once for all of them). Until then the journal keeps
//! the record as "deleting" and its address stays reserved; a crash
//! meanwhile is finished on restart like any interrupted DEL.

use crate::journal::Phase;
use crate::{
    endpoint::{IDENTITY_UNKNOWN, journal},
    faults, names,
    state::{Agent, AttachmentKey, EndpointRecord},
    timing::Phases,
};
use std::{
    collections::HashSet,
    sync::{Condvar, Mutex},
    time::Duration,
};
use weft_api::{ApiError, DelRequest, code};
use weft_datapath::{
    Datapath,
    maps::{LxcInfo, ip_to_be},
};
use weft_net::netlink::Netlink;

/// The device group of pod devices whose DEL has answered ("weft" in
/// ASCII; `ip link show group 2003133044` lists them).
pub const DOOMED_GROUP: u32 = 0x7765_6674;

/// Attachments whose DEL has answered and whose device and address the
/// repair thread still has to remove. At most one entry per endpoint, so
/// it is bounded by the node's endpoint ids.
#[derive(Default)]
pub struct Removals {
    handed_over: Mutex<HashSet<AttachmentKey>>,
    wake: Condvar,
}

impl Removals {
    fn hand_over(&self, key: AttachmentKey) {
        self.lock().insert(key);
        self.wake.notify_all();
    }

    fn is_handed_over(&self, key: &AttachmentKey) -> bool {
        self.lock().contains(key)
    }

    fn done(&self, key: &AttachmentKey) {
        self.lock().remove(key);
    }

    /// Removals a DEL handed over that are not finished yet.
    pub fn in_progress(&self) -> usize {
        self.lock().len()
    }

    /// Waits until a removal is handed over or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        let g = self.lock();
        let _ = self.wake.wait_timeout_while(g, timeout, |h| h.is_empty());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<AttachmentKey>> {
        self.handed_over.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a teardown stopped. Local failures are the caller's error; what
/// only the store refused is owed and finished later.
#[derive(Debug)]
pub enum Unfinished {
    Local(String),
    Store(String),
}

impl std::fmt::Display for Unfinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfinished::Local(m) => write!(f, "{m}"),
            Unfinished::Store(m) => write!(f, "the cluster store refused: {m}"),
        }
    }
}

/// Takes an attachment down from whatever phase it reached, all of it
/// before returning (the DEL request hands the slow part over instead).
pub fn teardown(agent: &Agent, mut rec: EndpointRecord) -> Result<(), Unfinished> {
    let stored = stop(agent, &mut rec, &mut Phases::start())?;
    finish(agent, &rec, stored)
}

/// The part before the answer to a DEL: the journal, the maps, the store.
/// Ok(Err) when only the store refused.
fn stop(agent: &Agent, rec: &mut EndpointRecord, t: &mut Phases) -> Result<Result<(), String>, Unfinished> {
    if rec.phase != Phase::Deleting {
        rec.phase = Phase::Deleting;
        journal(agent, rec).map_err(|e| Unfinished::Local(e.to_string()))?;
        crate::ipcache::local_changed(agent);
        crate::policy::local_changed(agent);
    }
    t.mark("journal");
    faults::point("del:after-journal");
    unmap(&mut agent.dp(), rec);
    t.mark("maps");
    faults::point("del:after-datapath");
    let stored = unpublish(agent, rec).map_err(|e| e.to_string());
    t.mark("store");
    if stored.is_ok() {
        faults::point("del:after-store");
    }
    Ok(stored)
}

/// The part after: the device (and its program), then, if the store has
/// forgotten the pod, the journal entry, the id and the address.
fn finish(agent: &Agent, rec: &EndpointRecord, stored: Result<(), String>) -> Result<(), Unfinished> {
    delete_device(&rec.host_ifname).map_err(Unfinished::Local)?;
    // Deleting the device took a legacy filter with it; a tcx link's pin
    // is left to remove.
    agent.dp().detach(&rec.host_ifname);
    faults::point("del:after-device");
    stored.map_err(Unfinished::Store)?;
    forget(agent, rec).map_err(Unfinished::Local)?;
    faults::point("del:after-forget");
    Ok(())
}

/// The store's side: the publication and the identity reference.
fn unpublish(agent: &Agent, rec: &EndpointRecord) -> Result<(), weft_store::StoreError> {
    agent.store.delete(&agent.endpoint_key(rec.ip))?;
    let holder = agent.identity_holder(rec.ip);
    match rec.identity {
        0 => Ok(()),
        IDENTITY_UNKNOWN => {
            let prefix = format!("{}/", agent.cfg.node_name);
            for (id, h) in agent.identities.refs_of(&prefix)? {
                if h == holder {
                    agent.identities.release(id, &holder)?;
                }
            }
            Ok(())
        }
        id => agent.identities.release(id, &holder),
    }
}

/// Last: the journal entry, then the address and the id. The address
/// stays taken until its journal entry (a file named after it) is gone, so
/// an ADD that gets it next writes a journal entry of its own.
fn forget(agent: &Agent, rec: &EndpointRecord) -> Result<(), String> {
    agent.journal.remove(rec.ip)?;
    let mut inner = agent.pods();
    if inner.endpoints.get(&rec.key()).is_some_and(|r| r.ip == rec.ip) {
        inner.endpoints.remove(&rec.key());
    }
    inner.ids.free(rec.id);
    inner.ipam.release(&rec.container_id, &rec.ifname).map(|_| ()).map_err(|e| e.to_string())?;
    agent.removals.done(&rec.key());
    Ok(())
}

/// Deletes a pod's host device (and so its pair); a missing one is fine.
fn delete_device(name: &str) -> Result<(), String> {
    Netlink::open().and_then(|mut nl| nl.link_delete(name)).map_err(|e| e.to_string())
}

/// DEL is idempotent: an unknown attachment, a vanished netns or a removal
/// already under way is success. It answers once the pod's traffic has
/// stopped and the store has forgotten it; the device and the address
/// follow in the background. When the store refuses, the pod is removed
/// from this node all the same, the DEL succeeds, and the store's part is
/// owed (its address stays reserved until then).
pub fn del(agent: &Agent, req: DelRequest) -> Result<(), ApiError> {
    let bad = |e: weft_api::validate::Invalid| {
        ApiError::new(code::INVALID_ENV, "invalid DEL request", e.to_string())
    };
    weft_api::validate::container_id(&req.container_id).map_err(bad)?;
    weft_api::validate::ifname(&req.ifname).map_err(bad)?;
    let mut t = Phases::start();
    let key = (req.container_id.clone(), req.ifname.clone());
    let _one_at_a_time = agent.attachments.lock(&key);
    t.mark("wait");
    let rec = agent.pods().endpoints.get(&key).cloned();
    let Some(mut rec) = rec else {
        // Nothing known; a device of this name can only be ours to remove.
        return delete_device(&names::host_ifname(&req.container_id, &req.ifname))
            .map_err(|e| ApiError::new(code::DATAPATH, "deleting the pod's device failed", e));
    };
    if agent.removals.is_handed_over(&key) {
        return Ok(());
    }
    let (id, ip) = (rec.id, rec.ip);
    let local = |e: Unfinished| ApiError::new(code::DATAPATH, "deleting the pod failed", e.to_string());
    match stop(agent, &mut rec, &mut t).map_err(local)? {
        Ok(()) => {
            if let Err(e) =
                Netlink::open().and_then(|mut nl| nl.link_set_group(&rec.host_ifname, DOOMED_GROUP))
            {
                log::warn!("{e}; it is deleted on its own");
            }
            agent.removals.hand_over(key);
            log::info!(
                "endpoint {id} deleted: {} {ip} (its device and address go in the background) in {t}",
                req.container_id
            );
            Ok(())
        }
        Err(e) => {
            match finish(agent, &rec, Err(e)) {
                Err(Unfinished::Store(e)) => log::warn!(
                    "endpoint {id} ({ip}) is removed from this node, but the cluster store refused its removal ({e}); {ip} stays reserved and the removal is retried until the store answers"
                ),
                Err(e) => return Err(local(e)),
                Ok(()) => {}
            }
            Ok(())
        }
    }
}

/// For the repair thread: finishes the removals DELs handed over, then
/// retries the ones the store owes.
pub fn finish_owed(agent: &Agent) -> Result<(), String> {
    finish_deleting(agent, true)
}

/// Finishes now the removals DELs handed over: for an ADD whose pod
/// interface name is still taken in its namespace by a pod the runtime
/// deleted a moment ago (a runtime may DEL and ADD again in one netns).
pub fn finish_handed_over(agent: &Agent) -> Result<(), String> {
    finish_deleting(agent, false)
}

/// Each under its attachment's lock, re-read there (an ADD of the same
/// attachment may have finished it meanwhile). Returns the first failure
/// after trying them all.
fn finish_deleting(agent: &Agent, with_owed: bool) -> Result<(), String> {
    let owed: Vec<EndpointRecord> =
        agent.pods().endpoints.values().filter(|r| r.phase == Phase::Deleting).cloned().collect();
    let (handed, mut owed): (Vec<_>, Vec<_>) =
        owed.into_iter().partition(|r| agent.removals.is_handed_over(&r.key()));
    if !with_owed {
        owed.clear();
    }
    let mut first_err = None;
    if !handed.is_empty()
        && let Err(e) = Netlink::open().and_then(|mut nl| nl.group_delete(DOOMED_GROUP))
    {
        // Each is then deleted by name.
        first_err = Some(e.to_string());
    }
    for (rec, handed) in handed.into_iter().map(|r| (r, true)).chain(owed.into_iter().map(|r| (r, false))) {
        let key = rec.key();
        let _one_at_a_time = agent.attachments.lock(&key);
        let Some(rec) = agent.pods().endpoints.get(&key).filter(|r| r.phase == Phase::Deleting).cloned()
        else {
            agent.removals.done(&key);
            continue;
        };
        let (id, ip) = (rec.id, rec.ip);
        let r = if handed && agent.removals.is_handed_over(&key) {
            finish(agent, &rec, Ok(()))
        } else {
            teardown(agent, rec).inspect(|()| {
                log::info!("endpoint {id} ({ip}): the owed removal is done; {ip} is free again")
            })
        };
        if let Err(e) = r {
            // Not handed over any more: from now on it is retried whole.
            agent.removals.done(&key);
            first_err.get_or_insert(format!("removing endpoint {id} ({ip}): {e}"));
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Deleting records nobody is finishing right now: what the store owes.
pub fn owed(agent: &Agent) -> usize {
    let pods = agent.pods();
    pods.endpoints
        .values()
        .filter(|r| r.phase == Phase::Deleting && !agent.removals.is_handed_over(&r.key()))
        .count()
}

/// Removes the attachment's program and map entries (only entries that are
/// still its own).
pub(crate) fn unprogram(dp: &mut Datapath, rec: &EndpointRecord) {
    dp.detach(&rec.host_ifname);
    unmap(dp, rec);
}

/// Removes the attachment's lxc and endpoint map entries (only entries
/// that are still its own). Its program stays on the device and drops
/// whatever the pod still sends.
fn unmap(dp: &mut Datapath, rec: &EndpointRecord) {
    let ours = |v: &LxcInfo| v.ep_id == rec.id && v.ip4 == ip_to_be(rec.ip);
    if let Ok(mut lxc) = dp.lxc() {
        let keys: Vec<u32> = match weft_net::ifindex(&rec.host_ifname) {
            Some(i) => vec![i],
            None => lxc.keys().filter_map(|k| k.ok()).collect(),
        };
        for k in keys {
            if lxc.get(&k, 0).is_ok_and(|v| ours(&v)) {
                let _ = lxc.remove(&k);
            }
        }
    }
    let key = weft_datapath::maps::EndpointKey::new(rec.ip);
    if let Ok(Some(info)) = dp.endpoints().map(|m| m.get(&key, 0).ok())
        && info.ep_id == rec.id
        && info.flags & weft_datapath::maps::ENDPOINT_F_HOST == 0
    {
        dp.del_endpoint(rec.ip);
    }
}
