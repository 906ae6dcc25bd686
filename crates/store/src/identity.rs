//! Security identities: one number per distinct label set (Cilium's model).
//! Numbers below 256 are reserved; allocated ones are claimed with the
//! store's put-if-absent, so two allocators sharing a store (two agents on
//! one etcd, later) never hand out one number twice.

use crate::{Cmp, Op, Store, StoreError, get_json};
use std::{collections::BTreeMap, sync::Arc};

pub const IDENTITY_HOST: u32 = 1;
pub const IDENTITY_WORLD: u32 = 2;
pub const IDENTITY_HEALTH: u32 = 4;
pub const IDENTITY_REMOTE_NODE: u32 = 6;
pub const FIRST_ALLOCATED: u32 = 256;
pub const MAX_IDENTITY: u32 = 65535;

pub fn reserved() -> Vec<(u32, Vec<String>)> {
    vec![
        (IDENTITY_HOST, vec!["reserved:host".into()]),
        (IDENTITY_WORLD, vec!["reserved:world".into()]),
        (IDENTITY_HEALTH, vec!["reserved:health".into()]),
        (IDENTITY_REMOTE_NODE, vec!["reserved:remote-node".into()]),
    ]
}

/// Sorted and deduplicated: equal sets compare equal however they came.
pub fn normalize(labels: &[String]) -> Vec<String> {
    let mut v = labels.to_vec();
    v.sort();
    v.dedup();
    v
}

/// The security-relevant labels of a pod: its namespace and its own labels.
pub fn pod_labels(namespace: &str, extra: &BTreeMap<String, String>) -> Vec<String> {
    let mut v = vec![format!("k8s:io.kubernetes.pod.namespace={namespace}")];
    v.extend(extra.iter().map(|(k, val)| format!("k8s:{k}={val}")));
    normalize(&v)
}

pub fn pod_labels_key(namespace: &str, name: &str) -> String {
    format!("pods/{namespace}/{name}/labels")
}

pub fn stored_pod_labels(
    store: &dyn Store,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, String>, StoreError> {
    Ok(get_json(store, &pod_labels_key(namespace, name))?.unwrap_or_default())
}

/// A label set as one store key segment: hex of the joined labels, so any
/// label text is a valid key.
fn labels_key(labels: &[String]) -> String {
    let joined = labels.join(";");
    format!("identities/labels/{}", joined.bytes().map(|b| format!("{b:02x}")).collect::<String>())
}

fn id_key(id: u32) -> String {
    format!("identities/id/{id}")
}

fn refs_prefix(id: u32) -> String {
    format!("identities/refs/{id}/")
}

/// One holder's reference to an identity: `identities/refs/<id>/<holder>`.
/// A holder is "<node>/<pod address>": each address has one owner.
fn ref_key(id: u32, holder: &str) -> String {
    format!("{}{holder}", refs_prefix(id))
}

/// How often an allocation retries when it loses a race with a release
/// of the same identity (each retry sees the new state).
const ATTEMPTS: usize = 16;

/// Identities are reference counted in the store: a holder (a pod
/// address on a node) has a key under `identities/refs/<id>/`, taken in
/// the same transaction that checks the identity still exists, and an
/// identity is deleted only in a transaction that checks no reference is
/// left. So a release racing an allocation on another node can never
/// delete a number someone is about to use, and what a crash leaves
/// behind (an identity without references) is found by [`collect`].
pub struct IdentityAllocator {
    store: Arc<dyn Store>,
}

impl IdentityAllocator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The identity of `labels`, referenced by `holder` (idempotent).
    pub fn acquire(&self, labels: &[String], holder: &str) -> Result<u32, StoreError> {
        let labels = normalize(labels);
        let lkey = labels_key(&labels);
        let value = serde_json::to_vec(&labels).expect("labels serialize");
        for _ in 0..ATTEMPTS {
            if let Some(id) = get_json::<u32>(self.store.as_ref(), &lkey)? {
                let held = Cmp::ValueIs(id_key(id), value.clone());
                if self.store.txn(&[held], &[Op::Put(ref_key(id, holder), Vec::new())])? {
                    return Ok(id);
                }
                // The number was released (or a crash left the label key
                // behind): drop the stale mapping and allocate anew.
                let stale =
                    [Cmp::ValueIs(lkey.clone(), id.to_string().into_bytes()), Cmp::Absent(id_key(id))];
                self.store.txn(&stale, &[Op::Delete(lkey.clone())])?;
                continue;
            }
            let id = self.lowest_free()?;
            // Ordered so a crash part-way (local backend) leaves an
            // identity without references, which `collect` removes.
            let ops = [
                Op::Put(id_key(id), value.clone()),
                Op::Put(lkey.clone(), id.to_string().into_bytes()),
                Op::Put(ref_key(id, holder), Vec::new()),
            ];
            if self.store.txn(&[Cmp::Absent(id_key(id)), Cmp::Absent(lkey.clone())], &ops)? {
                return Ok(id);
            }
        }
        Err(StoreError::Unavailable {
            backend: self.store.describe(),
            cause: format!("allocating an identity for {labels:?} lost {ATTEMPTS} races in a row"),
        })
    }

    fn lowest_free(&self) -> Result<u32, StoreError> {
        let used: std::collections::BTreeSet<u32> = self
            .store
            .list("identities/id/")?
            .iter()
            .filter_map(|(k, _)| k.rsplit('/').next()?.parse().ok())
            .collect();
        (FIRST_ALLOCATED..=MAX_IDENTITY).find(|id| !used.contains(id)).ok_or_else(|| StoreError::Unavailable {
            backend: self.store.describe(),
            cause: format!(
                "all identities {FIRST_ALLOCATED}..={MAX_IDENTITY} are in use; remove pods with unused label sets"
            ),
        })
    }

    pub fn lookup(&self, id: u32) -> Result<Option<Vec<String>>, StoreError> {
        if let Some((_, l)) = reserved().into_iter().find(|(r, _)| *r == id) {
            return Ok(Some(l));
        }
        get_json(self.store.as_ref(), &id_key(id))
    }

    /// Drops `holder`'s reference; the identity goes with its last one.
    pub fn release(&self, id: u32, holder: &str) -> Result<(), StoreError> {
        if id < FIRST_ALLOCATED {
            return Ok(());
        }
        self.store.delete(&ref_key(id, holder))?;
        self.free_if_unreferenced(id).map(|_| ())
    }

    /// Deletes the identity if (atomically) nothing references it.
    fn free_if_unreferenced(&self, id: u32) -> Result<bool, StoreError> {
        let Some(value) = self.store.get(&id_key(id))? else { return Ok(false) };
        let labels: Vec<String> = serde_json::from_slice(&value)
            .map_err(|e| StoreError::Decode { key: id_key(id), error: e.to_string() })?;
        let lkey = labels_key(&labels);
        let mut ops = vec![Op::Delete(id_key(id))];
        if get_json::<u32>(self.store.as_ref(), &lkey)? == Some(id) {
            ops.push(Op::Delete(lkey));
        }
        self.store.txn(&[Cmp::PrefixEmpty(refs_prefix(id)), Cmp::ValueIs(id_key(id), value)], &ops)
    }

    /// Removes identities nothing references (left by a crash between an
    /// allocation and its use); returns their numbers.
    pub fn collect(&self) -> Result<Vec<u32>, StoreError> {
        let mut freed = Vec::new();
        let referenced: std::collections::BTreeSet<u32> = self
            .store
            .list("identities/refs/")?
            .iter()
            .filter_map(|(k, _)| k.split('/').nth(2)?.parse().ok())
            .collect();
        for (id, _) in self.list()? {
            if id >= FIRST_ALLOCATED && !referenced.contains(&id) && self.free_if_unreferenced(id)? {
                freed.push(id);
            }
        }
        Ok(freed)
    }

    /// References held by holders whose name starts with `holder_prefix`
    /// ("<node>/"): (identity, holder).
    pub fn refs_of(&self, holder_prefix: &str) -> Result<Vec<(u32, String)>, StoreError> {
        Ok(self
            .store
            .list("identities/refs/")?
            .into_iter()
            .filter_map(|(k, _)| {
                let rest = k.strip_prefix("identities/refs/")?;
                let (id, holder) = rest.split_once('/')?;
                Some((id.parse().ok()?, holder.to_string()))
            })
            .filter(|(_, h)| h.starts_with(holder_prefix))
            .collect())
    }

    pub fn list(&self) -> Result<Vec<(u32, Vec<String>)>, StoreError> {
        let mut out = reserved();
        for (k, v) in self.store.list("identities/id/")? {
            let id: u32 = k.rsplit('/').next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let labels: Vec<String> = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Decode { key: k.clone(), error: e.to_string() })?;
            out.push((id, labels));
        }
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;

    fn store(tag: &str) -> (Arc<dyn Store>, std::path::PathBuf) {
        let d = std::env::temp_dir().join(format!("weft-ident-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        (Arc::new(LocalStore::open(&d).unwrap()), d)
    }

    fn l(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn equal_sets_share_an_id_and_others_differ() {
        let (s, d) = store("eq");
        let a = IdentityAllocator::new(s);
        let x = a.acquire(&l(&["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"]), "n/1").unwrap();
        let y = a
            .acquire(&l(&["k8s:io.kubernetes.pod.namespace=default", "k8s:app=web", "k8s:app=web"]), "n/2")
            .unwrap();
        let z = a.acquire(&l(&["k8s:app=db"]), "n/3").unwrap();
        assert_eq!(x, 256);
        assert_eq!(x, y);
        assert_eq!(z, 257);
        assert_eq!(a.lookup(z).unwrap().unwrap(), l(&["k8s:app=db"]));
        assert_eq!(a.lookup(1).unwrap().unwrap(), l(&["reserved:host"]));
        let ids: Vec<u32> = a.list().unwrap().iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, vec![1, 2, 4, 6, 256, 257]);
        a.release(256, "n/1").unwrap();
        assert!(a.lookup(256).unwrap().is_some(), "n/2 still holds 256");
        a.release(256, "n/2").unwrap();
        assert!(a.lookup(256).unwrap().is_none(), "the last reference frees it");
        a.release(1, "n/1").unwrap();
        assert_eq!(a.acquire(&l(&["k8s:app=new"]), "n/4").unwrap(), 256, "released numbers are reused");
        assert_eq!(a.lookup(1).unwrap().unwrap(), l(&["reserved:host"]));
        assert_eq!(a.refs_of("n/").unwrap(), vec![(256, "n/4".to_string()), (257, "n/3".to_string())]);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn identities_without_references_are_collected_and_stale_label_keys_healed() {
        let (s, d) = store("orphan");
        let a = IdentityAllocator::new(s.clone());
        let web = l(&["k8s:app=web"]);
        let id = a.acquire(&web, "n/1").unwrap();
        // A crash after the allocation, before its holder was recorded:
        // the reference is gone (its holder's cleanup dropped it).
        s.delete(&ref_key(id, "n/1")).unwrap();
        let kept = a.acquire(&l(&["k8s:app=db"]), "n/2").unwrap();
        assert_eq!(a.collect().unwrap(), vec![id]);
        assert!(a.lookup(id).unwrap().is_none());
        assert!(a.lookup(kept).unwrap().is_some(), "referenced identities stay");
        // A crash that left only the label key behind (local backend).
        s.put(&labels_key(&web), b"300").unwrap();
        let again = a.acquire(&web, "n/3").unwrap();
        assert_eq!(a.lookup(again).unwrap().unwrap(), web);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_release_racing_acquires_never_frees_a_used_number() {
        let (s, d) = store("relrace");
        for round in 0..30 {
            let labels = vec![format!("k8s:round={round}")];
            let a = IdentityAllocator::new(s.clone());
            let first = a.acquire(&labels, "n1/a").unwrap();
            let b = IdentityAllocator::new(s.clone());
            let l2 = labels.clone();
            let h = std::thread::spawn(move || b.acquire(&l2, "n2/b").unwrap());
            a.release(first, "n1/a").unwrap();
            let second = h.join().unwrap();
            // Whoever won, n2's number exists and maps to its labels.
            assert_eq!(a.lookup(second).unwrap(), Some(labels.clone()), "round {round}");
            a.release(second, "n2/b").unwrap();
            assert!(a.lookup(second).unwrap().is_none());
        }
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn pod_labels_include_namespace() {
        let mut m = BTreeMap::new();
        m.insert("app".to_string(), "web".to_string());
        assert_eq!(pod_labels("prod", &m), l(&["k8s:app=web", "k8s:io.kubernetes.pod.namespace=prod"]));
    }

    #[test]
    fn concurrent_allocators_never_collide() {
        let (s, d) = store("race");
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let a = IdentityAllocator::new(s.clone());
                std::thread::spawn(move || {
                    (0..20)
                        .map(|i| {
                            (
                                i,
                                a.acquire(&[format!("k8s:set={}", (i + t) % 20)], &format!("n{t}/{i}"))
                                    .unwrap(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut by_set: BTreeMap<u32, u32> = BTreeMap::new();
        for (t, h) in hs.into_iter().enumerate() {
            for (i, id) in h.join().unwrap() {
                let set = (i + t as u32) % 20;
                assert_eq!(*by_set.entry(set).or_insert(id), id, "one set, one id");
            }
        }
        let ids: std::collections::HashSet<_> = by_set.values().collect();
        assert_eq!(ids.len(), 20, "one id, one set");
        std::fs::remove_dir_all(d).unwrap();
    }
}
