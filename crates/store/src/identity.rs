//! Security identities: one number per distinct label set (Cilium's model).
//! Numbers below 256 are reserved; allocated ones are claimed with the
//! store's put-if-absent, so two allocators sharing a store (two agents on
//! one etcd, later) never hand out one number twice.

use crate::{Store, StoreError, get_json};
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

pub struct IdentityAllocator {
    store: Arc<dyn Store>,
}

impl IdentityAllocator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub fn allocate(&self, labels: &[String]) -> Result<u32, StoreError> {
        let labels = normalize(labels);
        let lkey = labels_key(&labels);
        if let Some(id) = get_json::<u32>(self.store.as_ref(), &lkey)? {
            return Ok(id);
        }
        let value = serde_json::to_vec(&labels).expect("labels serialize");
        for id in FIRST_ALLOCATED..=MAX_IDENTITY {
            if !self.store.create(&id_key(id), &value)? {
                continue;
            }
            if self.store.create(&lkey, id.to_string().as_bytes())? {
                return Ok(id);
            }
            // Someone else allocated this label set meanwhile: use theirs.
            self.store.delete(&id_key(id))?;
            if let Some(id) = get_json::<u32>(self.store.as_ref(), &lkey)? {
                return Ok(id);
            }
        }
        Err(StoreError::Unavailable {
            backend: self.store.describe(),
            cause: format!("all identities {FIRST_ALLOCATED}..={MAX_IDENTITY} are in use"),
        })
    }

    pub fn lookup(&self, id: u32) -> Result<Option<Vec<String>>, StoreError> {
        if let Some((_, l)) = reserved().into_iter().find(|(r, _)| *r == id) {
            return Ok(Some(l));
        }
        get_json(self.store.as_ref(), &id_key(id))
    }

    pub fn release(&self, id: u32) -> Result<(), StoreError> {
        if id < FIRST_ALLOCATED {
            return Ok(());
        }
        if let Some(labels) = get_json::<Vec<String>>(self.store.as_ref(), &id_key(id))? {
            let lkey = labels_key(&labels);
            if get_json::<u32>(self.store.as_ref(), &lkey)? == Some(id) {
                self.store.delete(&lkey)?;
            }
        }
        self.store.delete(&id_key(id))?;
        Ok(())
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
        let x = a.allocate(&l(&["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"])).unwrap();
        let y = a
            .allocate(&l(&["k8s:io.kubernetes.pod.namespace=default", "k8s:app=web", "k8s:app=web"]))
            .unwrap();
        let z = a.allocate(&l(&["k8s:app=db"])).unwrap();
        assert_eq!(x, 256);
        assert_eq!(x, y);
        assert_eq!(z, 257);
        assert_eq!(a.lookup(z).unwrap().unwrap(), l(&["k8s:app=db"]));
        assert_eq!(a.lookup(1).unwrap().unwrap(), l(&["reserved:host"]));
        let ids: Vec<u32> = a.list().unwrap().iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, vec![1, 2, 4, 6, 256, 257]);
        a.release(256).unwrap();
        a.release(1).unwrap();
        assert_eq!(a.allocate(&l(&["k8s:app=new"])).unwrap(), 256, "released numbers are reused");
        assert_eq!(a.lookup(1).unwrap().unwrap(), l(&["reserved:host"]));
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
                        .map(|i| (i, a.allocate(&[format!("k8s:set={}", (i + t) % 20)]).unwrap()))
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
