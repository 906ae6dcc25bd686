//! The conntrack maps from user space: listing, flushing, and the garbage
//! collection pass the agent runs (`crates/agent/src/conntrack.rs` decides
//! when). Opened from their pins, not through [`crate::Datapath`], so a GC
//! pass over a large table never holds up the agent's datapath lock.

use crate::{loader::pin_dir, maps::*};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, MapError, MapInfo};
use std::path::{Path, PathBuf};

/// One conntrack map: TCP or everything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Tcp,
    Any,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Tcp, Table::Any];

    pub fn map_name(self) -> &'static str {
        match self {
            Table::Tcp => MAP_CT_TCP,
            Table::Any => MAP_CT_ANY,
        }
    }

    fn count_slots(self) -> (u32, u32) {
        match self {
            Table::Tcp => (CT_COUNT_TCP_CREATED, CT_COUNT_TCP_BASE),
            Table::Any => (CT_COUNT_ANY_CREATED, CT_COUNT_ANY_BASE),
        }
    }
}

/// What one GC pass over one table did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcPass {
    pub scanned: u64,
    pub deleted: u64,
    /// Entries left after the pass.
    pub live: u64,
    /// The map's size.
    pub capacity: u32,
}

pub struct Conntrack {
    dir: PathBuf,
}

fn err(what: impl std::fmt::Display) -> impl FnOnce(MapError) -> crate::Error {
    move |e| crate::Error(format!("{what}: {e}"))
}

/// CLOCK_MONOTONIC in whole seconds: the clock of `ct_entry.expires`
/// (bpf_ktime_get_ns()).
pub fn now() -> u32 {
    // SAFETY: clock_gettime fills the timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u32
}

impl Conntrack {
    /// The conntrack maps pinned under `base` (by a loaded datapath).
    pub fn open(base: &Path) -> Result<Self, crate::Error> {
        let dir = pin_dir(base);
        for t in Table::ALL {
            if !dir.join(t.map_name()).exists() {
                return Err(crate::Error(format!(
                    "conntrack map {} is not pinned under {}: is the agent running?",
                    t.map_name(),
                    dir.display()
                )));
            }
        }
        Ok(Self { dir })
    }

    fn map(&self, name: &str) -> Result<Map, crate::Error> {
        let data = MapData::from_pin(self.dir.join(name)).map_err(err(name))?;
        Map::from_map_data(data).map_err(err(name))
    }

    fn table(&self, t: Table) -> Result<BpfHashMap<MapData, CtKey, CtEntry>, crate::Error> {
        BpfHashMap::try_from(self.map(t.map_name())?).map_err(err(t.map_name()))
    }

    fn counts(&self) -> Result<Array<MapData, u64>, crate::Error> {
        Array::try_from(self.map(MAP_CT_COUNT)?).map_err(err(MAP_CT_COUNT))
    }

    /// The size of a table as the kernel has it (a map pinned by an earlier
    /// agent keeps the size it was created with).
    pub fn capacity(&self, t: Table) -> Result<u32, crate::Error> {
        let info = MapInfo::from_pin(self.dir.join(t.map_name())).map_err(err(t.map_name()))?;
        Ok(info.max_entries())
    }

    /// Every entry of both tables.
    pub fn entries(&self) -> Result<Vec<(CtKey, CtEntry)>, crate::Error> {
        let mut out = Vec::new();
        for t in Table::ALL {
            let map = self.table(t)?;
            for item in map.iter() {
                match item {
                    Ok(kv) => out.push(kv),
                    // Deleted between listing its key and reading it.
                    Err(MapError::KeyNotFound) => continue,
                    Err(e) => return Err(crate::Error(format!("{}: {e}", t.map_name()))),
                }
            }
        }
        Ok(out)
    }

    /// Flows the datapath counts as live in a table (what admission uses).
    pub fn live(&self, t: Table) -> Result<u64, crate::Error> {
        let counts = self.counts()?;
        let (created, base) = t.count_slots();
        let c = counts.get(&created, 0).map_err(err(MAP_CT_COUNT))?;
        let b = counts.get(&base, 0).map_err(err(MAP_CT_COUNT))?;
        Ok(c.saturating_sub(b))
    }

    /// Deletes the entries `pred` picks from one table, then tells the
    /// datapath how many are left.
    fn sweep(
        &self,
        t: Table,
        mut pred: impl FnMut(&CtKey, &CtEntry) -> bool,
    ) -> Result<GcPass, crate::Error> {
        let mut map = self.table(t)?;
        let mut counts = self.counts()?;
        let (created_slot, base_slot) = t.count_slots();
        let created = counts.get(&created_slot, 0).map_err(err(MAP_CT_COUNT))?;
        // Keys first, deletes after: deleting while walking restarts the
        // kernel's iteration.
        let mut doomed = Vec::new();
        let mut scanned = 0u64;
        for item in map.iter() {
            match item {
                Ok((k, v)) => {
                    scanned += 1;
                    if pred(&k, &v) {
                        doomed.push(k);
                    }
                }
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(crate::Error(format!("{}: {e}", t.map_name()))),
            }
        }
        let mut deleted = 0u64;
        for k in &doomed {
            match map.remove(k) {
                Ok(()) => deleted += 1,
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(crate::Error(format!("{}: {e}", t.map_name()))),
            }
        }
        let live = scanned - deleted;
        // Entries created during the pass are counted twice until the next
        // one: admission errs on the safe side for a moment.
        counts.set(base_slot, created.saturating_sub(live), 0).map_err(err(MAP_CT_COUNT))?;
        Ok(GcPass { scanned, deleted, live, capacity: self.capacity(t)? })
    }

    /// One garbage-collection pass: removes the entries that expired
    /// before `now` (see [`now`]).
    pub fn gc(&self, t: Table, now: u32) -> Result<GcPass, crate::Error> {
        self.sweep(t, |_, e| (e.expires.wrapping_sub(now) as i32) < 0)
    }

    /// Removes every entry (`weft bpf ct flush`): flows start over as new.
    pub fn flush(&self) -> Result<u64, crate::Error> {
        let mut n = 0;
        for t in Table::ALL {
            n += self.sweep(t, |_, _| true)?.deleted;
        }
        Ok(n)
    }
}
