//! The policy maps from user space (`bpf/lib/policy.h`): the agent's policy
//! subsystem writes compiled entries here; `weft bpf policy get` reads them.
//! Opened from their pins, like the conntrack maps, so recompiling policy
//! never holds up the agent's datapath lock.

use crate::{loader::pin_dir, maps::*};
use aya::maps::{
    HashMap as BpfHashMap, Map, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

/// An IPv4 prefix: address and length.
pub type Prefix = (Ipv4Addr, u8);

pub struct PolicyMaps {
    dir: PathBuf,
}

fn err(what: impl std::fmt::Display) -> impl FnOnce(MapError) -> crate::Error {
    move |e| crate::Error(format!("{what}: {e}"))
}

/// The part of a policy key after the prefix length, as the LPM trie
/// stores it (the trie's key type wraps data and prefix length itself).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKeyData {
    pub ep_id: u16,
    pub direction: u8,
    pub peer_kind: u8,
    pub peer: u32,
    pub cidr_class: u32,
    pub pad: u8,
    pub proto: u8,
    /// Network byte order.
    pub dport: u16,
}

// SAFETY: repr(C) plain data, no padding (16 bytes, checked by the layout
// test through PolicyKey).
unsafe impl aya::Pod for PolicyKeyData {}

impl PolicyKeyData {
    pub fn of(k: &PolicyKey) -> Self {
        Self {
            ep_id: k.ep_id,
            direction: k.direction,
            peer_kind: k.peer_kind,
            peer: k.peer,
            cidr_class: k.cidr_class,
            pad: 0,
            proto: k.proto,
            dport: k.dport,
        }
    }

    pub fn key(&self, prefixlen: u32) -> PolicyKey {
        PolicyKey {
            prefixlen,
            ep_id: self.ep_id,
            direction: self.direction,
            peer_kind: self.peer_kind,
            peer: self.peer,
            cidr_class: self.cidr_class,
            pad: 0,
            proto: self.proto,
            dport: self.dport,
        }
    }
}

impl PolicyMaps {
    pub fn open(base: &Path) -> Result<Self, crate::Error> {
        let dir = pin_dir(base);
        if !dir.join(MAP_POLICY).exists() {
            return Err(crate::Error(format!(
                "policy map {MAP_POLICY} is not pinned under {}: is the agent running?",
                dir.display()
            )));
        }
        Ok(Self { dir })
    }

    fn map(&self, name: &str) -> Result<Map, crate::Error> {
        let data = MapData::from_pin(self.dir.join(name)).map_err(err(name))?;
        Map::from_map_data(data).map_err(err(name))
    }

    fn policy(&self) -> Result<LpmTrie<MapData, PolicyKeyData, PolicyEntry>, crate::Error> {
        LpmTrie::try_from(self.map(MAP_POLICY)?).map_err(err(MAP_POLICY))
    }

    /// Every entry of the policy map.
    pub fn entries(&self) -> Result<Vec<(PolicyKey, PolicyEntry)>, crate::Error> {
        let m = self.policy()?;
        let mut out = Vec::new();
        for item in m.iter() {
            match item {
                Ok((k, v)) => out.push((k.data().key(k.prefix_len()), v)),
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(crate::Error(format!("{MAP_POLICY}: {e}"))),
            }
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    /// Writes entries; stops at the first failure (a full map), naming it.
    pub fn put(&self, entries: &[(PolicyKey, PolicyEntry)]) -> Result<(), crate::Error> {
        let mut m = self.policy()?;
        for (k, v) in entries {
            m.insert(&Key::new(k.prefixlen, PolicyKeyData::of(k)), *v, 0)
                .map_err(err(format!("writing {MAP_POLICY} (is it full?)")))?;
        }
        Ok(())
    }

    pub fn delete(&self, keys: &[PolicyKey]) -> Result<(), crate::Error> {
        let mut m = self.policy()?;
        for k in keys {
            match m.remove(&Key::new(k.prefixlen, PolicyKeyData::of(k))) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(crate::Error(format!("{MAP_POLICY}: {e}"))),
            }
        }
        Ok(())
    }

    fn endpoints(&self) -> Result<BpfHashMap<MapData, u16, PolicyEndpoint>, crate::Error> {
        BpfHashMap::try_from(self.map(MAP_POLICY_EP)?).map_err(err(MAP_POLICY_EP))
    }

    /// Which directions an endpoint enforces (None: neither).
    pub fn set_endpoint(&self, ep: u16, e: Option<PolicyEndpoint>) -> Result<(), crate::Error> {
        let mut m = self.endpoints()?;
        match e {
            Some(v) => m.insert(ep, v, 0).map_err(err(MAP_POLICY_EP)),
            None => match m.remove(&ep) {
                Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(crate::Error(format!("{MAP_POLICY_EP}: {e}"))),
            },
        }
    }

    pub fn endpoint(&self, ep: u16) -> Result<Option<PolicyEndpoint>, crate::Error> {
        match self.endpoints()?.get(&ep, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(crate::Error(format!("{MAP_POLICY_EP}: {e}"))),
        }
    }

    /// An identity's namespace id (None: forget the identity).
    pub fn set_identity(&self, id: u32, namespace_id: Option<u16>) -> Result<(), crate::Error> {
        let mut m: BpfHashMap<MapData, u32, IdentityInfo> =
            BpfHashMap::try_from(self.map(MAP_IDENTITY)?).map_err(err(MAP_IDENTITY))?;
        match namespace_id {
            Some(ns) => m.insert(id, IdentityInfo { namespace_id: ns, pad: 0 }, 0).map_err(err(MAP_IDENTITY)),
            None => match m.remove(&id) {
                Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(crate::Error(format!("{MAP_IDENTITY}: {e}"))),
            },
        }
    }

    /// The CIDR class of a policy CIDR (None: the CIDR is no longer used).
    pub fn set_cidr_class(&self, addr: Ipv4Addr, prefix: u8, class: Option<u32>) -> Result<(), crate::Error> {
        let mut m: LpmTrie<MapData, u32, u32> =
            LpmTrie::try_from(self.map(MAP_POLICY_CIDR)?).map_err(err(MAP_POLICY_CIDR))?;
        let key = Key::new(prefix as u32, ip_to_be(addr));
        match class {
            Some(c) => m.insert(&key, c, 0).map_err(err(MAP_POLICY_CIDR)),
            None => match m.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(crate::Error(format!("{MAP_POLICY_CIDR}: {e}"))),
            },
        }
    }

    /// Every endpoint's enforcement (what an agent finds after a restart).
    pub fn endpoints_list(&self) -> Result<Vec<(u16, PolicyEndpoint)>, crate::Error> {
        collect(self.endpoints()?.iter(), MAP_POLICY_EP)
    }

    /// Every identity's namespace id.
    pub fn identities_list(&self) -> Result<Vec<(u32, u16)>, crate::Error> {
        let m: BpfHashMap<MapData, u32, IdentityInfo> =
            BpfHashMap::try_from(self.map(MAP_IDENTITY)?).map_err(err(MAP_IDENTITY))?;
        Ok(collect(m.iter(), MAP_IDENTITY)?.into_iter().map(|(k, v)| (k, v.namespace_id)).collect())
    }

    /// Every CIDR class as ((address, prefix length), class).
    pub fn classes_list(&self) -> Result<Vec<(Prefix, u32)>, crate::Error> {
        let m: LpmTrie<MapData, u32, u32> =
            LpmTrie::try_from(self.map(MAP_POLICY_CIDR)?).map_err(err(MAP_POLICY_CIDR))?;
        Ok(collect(m.iter(), MAP_POLICY_CIDR)?
            .into_iter()
            .map(|(k, v)| ((be_to_ip(k.data()), k.prefix_len() as u8), v))
            .collect())
    }
}

fn collect<K, V>(
    it: impl Iterator<Item = Result<(K, V), MapError>>,
    name: &str,
) -> Result<Vec<(K, V)>, crate::Error> {
    let mut out = Vec::new();
    for item in it {
        match item {
            Ok(kv) => out.push(kv),
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(crate::Error(format!("{name}: {e}"))),
        }
    }
    Ok(out)
}
