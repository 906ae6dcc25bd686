//! The SNAT table (`weft_nat`, `bpf/lib/nat.h`) from user space: listing
//! its flows for `weft bpf nat list`, and the garbage-collection pass the
//! agent runs next to conntrack's. Opened from its pin, like
//! [`crate::conntrack`], so a pass never holds the agent's datapath lock.

use crate::{conntrack::GcPass, loader::pin_dir, maps::*};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError, MapInfo};
use std::path::{Path, PathBuf};

pub struct Nat {
    dir: PathBuf,
}

/// One translated flow: the tuple it left with, and the node address and
/// port it left as (from its NAT_OUT entry), with its NAT_IN entry's
/// reverse-NAT id (a NodePort's) when it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatFlow {
    pub out: NatKey,
    pub to: NatEntry,
    /// Whether the reply entry is there (it always should be).
    pub has_reply_entry: bool,
    pub rev_nat_id: u16,
}

fn err(what: impl std::fmt::Display) -> impl FnOnce(MapError) -> crate::Error {
    move |e| crate::Error(format!("{what}: {e}"))
}

/// The NAT_IN key of the flow whose NAT_OUT entry is (`out`, `e`).
pub fn reply_key(out: &NatKey, e: &NatEntry) -> NatKey {
    let icmp = out.proto == 1;
    NatKey {
        saddr: out.daddr,
        daddr: e.addr,
        sport: if icmp { e.port } else { out.dport },
        dport: e.port,
        proto: out.proto,
        dir: NAT_IN,
        pad: 0,
    }
}

impl Nat {
    /// The table pinned under `base` (by a loaded datapath).
    pub fn open(base: &Path) -> Result<Self, crate::Error> {
        let dir = pin_dir(base);
        if !dir.join(MAP_NAT).exists() {
            return Err(crate::Error(format!(
                "NAT map {MAP_NAT} is not pinned under {}: is the agent running?",
                dir.display()
            )));
        }
        Ok(Self { dir })
    }

    fn map(&self) -> Result<BpfHashMap<MapData, NatKey, NatEntry>, crate::Error> {
        let data = MapData::from_pin(self.dir.join(MAP_NAT)).map_err(err(MAP_NAT))?;
        let map = Map::from_map_data(data).map_err(err(MAP_NAT))?;
        BpfHashMap::try_from(map).map_err(err(MAP_NAT))
    }

    /// The table's size as the kernel has it.
    pub fn capacity(&self) -> Result<u32, crate::Error> {
        let info = MapInfo::from_pin(self.dir.join(MAP_NAT)).map_err(err(MAP_NAT))?;
        Ok(info.max_entries())
    }

    /// Every entry, both directions.
    pub fn entries(&self) -> Result<Vec<(NatKey, NatEntry)>, crate::Error> {
        let mut out = Vec::new();
        for item in self.map()?.iter() {
            match item {
                Ok(kv) => out.push(kv),
                // Deleted between listing its key and reading it.
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(crate::Error(format!("{MAP_NAT}: {e}"))),
            }
        }
        Ok(out)
    }

    /// The translated flows, one per NAT_OUT entry, sorted.
    pub fn flows(&self) -> Result<Vec<NatFlow>, crate::Error> {
        let entries = self.entries()?;
        let replies: std::collections::HashMap<NatKey, NatEntry> =
            entries.iter().filter(|(k, _)| k.dir == NAT_IN).cloned().collect();
        let mut flows: Vec<NatFlow> = entries
            .iter()
            .filter(|(k, _)| k.dir == NAT_OUT)
            .map(|(k, e)| {
                let back = replies.get(&reply_key(k, e));
                NatFlow {
                    out: *k,
                    to: *e,
                    has_reply_entry: back.is_some(),
                    rev_nat_id: back.map(|b| b.rev_nat_id).unwrap_or(e.rev_nat_id),
                }
            })
            .collect();
        flows.sort_by_key(|f| (f.out.saddr, f.out.sport, f.out.daddr, f.out.dport, f.out.proto));
        Ok(flows)
    }

    /// One garbage-collection pass: removes the entries that expired
    /// before `now` ([`crate::conntrack::now`]). A flow the datapath gives
    /// a port again in the meantime puts back what this pass removed
    /// (`nat_restore_in`).
    pub fn gc(&self, now: u32) -> Result<GcPass, crate::Error> {
        let mut map = self.map()?;
        // Keys first, deletes after: deleting while walking restarts the
        // kernel's iteration.
        let mut doomed = Vec::new();
        let mut scanned = 0u64;
        for item in map.iter() {
            match item {
                Ok((k, v)) => {
                    scanned += 1;
                    if (v.expires.wrapping_sub(now) as i32) < 0 {
                        doomed.push(k);
                    }
                }
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(crate::Error(format!("{MAP_NAT}: {e}"))),
            }
        }
        let mut deleted = 0u64;
        for k in &doomed {
            // Read again just before: an entry the datapath renewed since
            // the walk stays.
            match map.get(k, 0) {
                Ok(v) if (v.expires.wrapping_sub(now) as i32) >= 0 => continue,
                Ok(_) => {}
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(crate::Error(format!("{MAP_NAT}: {e}"))),
            }
            match map.remove(k) {
                Ok(()) => deleted += 1,
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(crate::Error(format!("{MAP_NAT}: {e}"))),
            }
        }
        Ok(GcPass { scanned, deleted, live: scanned - deleted, capacity: self.capacity()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_key_mirrors_the_datapath() {
        // 10.244.1.2:40000 -> 203.0.113.1:80/tcp left as 198.18.0.11:61000.
        let out = NatKey {
            saddr: u32::from_ne_bytes([10, 244, 1, 2]),
            daddr: u32::from_ne_bytes([203, 0, 113, 1]),
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            dir: NAT_OUT,
            pad: 0,
        };
        let e = NatEntry {
            addr: u32::from_ne_bytes([198, 18, 0, 11]),
            port: 61000u16.to_be(),
            ..Default::default()
        };
        let r = reply_key(&out, &e);
        assert_eq!(
            (r.saddr, r.daddr, r.sport, r.dport, r.dir),
            (out.daddr, e.addr, out.dport, e.port, NAT_IN)
        );
        // An echo reply carries the new id in both "ports".
        let ping = NatKey { proto: 1, sport: 7u16.to_be(), dport: 7u16.to_be(), ..out };
        let r = reply_key(&ping, &e);
        assert_eq!((r.sport, r.dport), (e.port, e.port));
    }
}
