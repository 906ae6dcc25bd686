//! A running pod's labels change (`weft pod label NS/NAME k=v`): its
//! identity follows. The new identity is referenced before the journal says
//! so, and the old one released after every map and the store carry the new
//! one, so an identity in use is never collected. A crash in between leaves
//! an extra reference, which `reconcile::sync_store` drops (the journal
//! names the identity the pod holds).

use crate::{endpoint, journal::Phase, state::Agent};
use std::collections::BTreeMap;
use weft_api::{ApiError, code};
use weft_store::identity;

/// Labels as `weft pod label` gives them: `k=v` sets, `k-` removes.
#[derive(Debug, PartialEq)]
pub enum Edit {
    Set(String, String),
    Remove(String),
}

pub fn parse_edit(s: &str) -> Result<Edit, String> {
    if let Some((k, v)) = s.split_once('=') {
        return Ok(Edit::Set(k.into(), v.into()));
    }
    match s.strip_suffix('-') {
        Some(k) if !k.is_empty() => Ok(Edit::Remove(k.into())),
        _ => Err(format!("label must be key=value (set) or key- (remove), got {s:?}")),
    }
}

/// Applies edits to the stored labels of a pod, atomically against other
/// writers (compare-and-swap on the stored value); returns the new labels.
pub fn edit_stored(
    store: &dyn weft_store::Store,
    ns: &str,
    name: &str,
    set: &BTreeMap<String, String>,
    remove: &[String],
) -> Result<BTreeMap<String, String>, weft_store::StoreError> {
    use weft_store::{Cmp, Op};
    let key = identity::pod_labels_key(ns, name);
    loop {
        let old = store.get(&key)?;
        let mut labels: BTreeMap<String, String> = match &old {
            Some(b) => serde_json::from_slice(b)
                .map_err(|e| weft_store::StoreError::Decode { key: key.clone(), error: e.to_string() })?,
            None => BTreeMap::new(),
        };
        labels.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        remove.iter().for_each(|k| {
            labels.remove(k);
        });
        let cmp = match old {
            Some(b) => Cmp::ValueIs(key.clone(), b),
            None => Cmp::Absent(key.clone()),
        };
        let value = serde_json::to_vec(&labels).expect("labels serialize");
        if store.txn(&[cmp], &[Op::Put(key.clone(), value)])? {
            return Ok(labels);
        }
    }
}

/// Every ready endpoint of pod `ns/name` on this node takes the identity of
/// `labels`. Returns how many changed.
pub fn apply(
    agent: &Agent,
    ns: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<usize, ApiError> {
    let keys: Vec<_> = agent
        .pods()
        .endpoints
        .values()
        .filter(|r| {
            r.pod_namespace.as_deref().unwrap_or("default") == ns && r.pod_name.as_deref() == Some(name)
        })
        .map(|r| r.key())
        .collect();
    let wanted = identity::pod_labels(ns, labels);
    let mut changed = 0;
    for key in keys {
        let _one_at_a_time = agent.attachments.lock(&key);
        let Some(rec) = agent.pods().endpoints.get(&key).filter(|r| r.phase == Phase::Ready).cloned() else {
            continue;
        };
        if identity::normalize(&rec.labels) == identity::normalize(&wanted) {
            continue;
        }
        relabel_one(agent, rec, wanted.clone())?;
        changed += 1;
    }
    Ok(changed)
}

fn relabel_one(
    agent: &Agent,
    mut rec: crate::state::EndpointRecord,
    labels: Vec<String>,
) -> Result<(), ApiError> {
    let holder = agent.identity_holder(rec.ip);
    let old = rec.identity;
    let new = agent
        .identities
        .acquire(&labels, &holder)
        .map_err(endpoint::store_err("allocating the pod's new identity failed"))?;
    rec.labels = labels;
    rec.identity = new;
    endpoint::journal(agent, &rec)?;
    if let Some(ifindex) = weft_net::ifindex(&rec.host_ifname) {
        agent.dp().put_endpoint(rec.ip, rec.bpf_value(ifindex)).map_err(|e| {
            ApiError::new(code::DATAPATH, "updating the pod's endpoint map entry failed", e.to_string())
        })?;
    }
    crate::ipcache::local_changed(agent);
    crate::policy::local_changed(agent);
    log::info!("endpoint {} ({}) relabelled: identity {old} -> {new} {:?}", rec.id, rec.ip, rec.labels);
    // The store follows; what it refuses now the repair loop finishes.
    let published = weft_store::put_json(agent.store.as_ref(), &agent.endpoint_key(rec.ip), &rec)
        .and_then(|_| if old != new { agent.identities.release(old, &holder) } else { Ok(()) });
    if let Err(e) = published {
        log::warn!("endpoint {}: the store did not take the new identity yet ({e}); retrying", rec.id);
        agent.store_sync_pending.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_parse_like_kubectl_label() {
        assert_eq!(parse_edit("app=web").unwrap(), Edit::Set("app".into(), "web".into()));
        assert_eq!(parse_edit("app=").unwrap(), Edit::Set("app".into(), "".into()));
        assert_eq!(parse_edit("app-").unwrap(), Edit::Remove("app".into()));
        assert!(parse_edit("app").is_err());
        assert!(parse_edit("-").is_err());
    }

    #[test]
    fn stored_labels_are_merged_and_removed() {
        let dir = std::env::temp_dir().join(format!("weft-relabel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = weft_store::LocalStore::open(&dir).unwrap();
        let set = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let l = edit_stored(&store, "ns", "p", &set(&[("app", "web"), ("tier", "fe")]), &[]).unwrap();
        assert_eq!(l, set(&[("app", "web"), ("tier", "fe")]));
        let l = edit_stored(&store, "ns", "p", &set(&[("app", "db")]), &["tier".into()]).unwrap();
        assert_eq!(l, set(&[("app", "db")]));
        assert_eq!(identity::stored_pod_labels(&store, "ns", "p").unwrap(), l);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
