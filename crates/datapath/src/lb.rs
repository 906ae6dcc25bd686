//! The service maps from user space (`bpf/lib/lb.h`): a frontend and its
//! backend slots are written so a reader never sees a slot count larger
//! than the slots present — backends first, then slots, then the
//! frontend's count; shrinking writes the count before removing slots.

use crate::{Error, loader::pin_dir, maps::*};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

/// A frontend: address, port, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub address: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
}

impl Frontend {
    fn key(&self, slot: u16) -> LbKey {
        LbKey {
            address: ip_to_be(self.address),
            port: self.port.to_be(),
            slot,
            proto: self.proto,
            pad: [0; 3],
        }
    }
}

/// What slot 0 says besides the count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontendInfo {
    pub rev_nat_id: u16,
    pub flags: u8,
    pub affinity_timeout: u32,
}

/// A backend by its stable id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    pub id: u32,
    pub address: Ipv4Addr,
    pub port: u16,
    pub proto: u8,
}

pub struct ServiceMaps {
    dir: PathBuf,
}

fn err(what: impl std::fmt::Display) -> impl FnOnce(MapError) -> Error {
    move |e| Error(format!("{what}: {e}"))
}

impl ServiceMaps {
    pub fn open(base: &Path) -> Result<Self, Error> {
        let dir = pin_dir(base);
        if !dir.join(MAP_LB_SERVICES).exists() {
            return Err(Error(format!(
                "{MAP_LB_SERVICES} is not pinned under {}: is the agent running?",
                dir.display()
            )));
        }
        Ok(Self { dir })
    }

    fn map(&self, name: &str) -> Result<Map, Error> {
        let data = MapData::from_pin(self.dir.join(name)).map_err(err(name))?;
        Map::from_map_data(data).map_err(err(name))
    }

    fn services(&self) -> Result<BpfHashMap<MapData, LbKey, LbFrontend>, Error> {
        BpfHashMap::try_from(self.map(MAP_LB_SERVICES)?).map_err(err(MAP_LB_SERVICES))
    }

    /// Writes (or rewrites) a frontend with these backends.
    pub fn put(&self, fe: Frontend, info: FrontendInfo, backends: &[Backend]) -> Result<(), Error> {
        if backends.len() > u16::MAX as usize {
            return Err(Error(format!("{} backends; a frontend holds at most {}", backends.len(), u16::MAX)));
        }
        let mut be_map: BpfHashMap<MapData, u32, LbBackend> =
            BpfHashMap::try_from(self.map(MAP_LB_BACKENDS)?).map_err(err(MAP_LB_BACKENDS))?;
        for b in backends {
            let v =
                LbBackend { address: ip_to_be(b.address), port: b.port.to_be(), proto: b.proto, flags: 0 };
            be_map.insert(b.id, v, 0).map_err(err(format!("writing {MAP_LB_BACKENDS} (is it full?)")))?;
        }
        let mut svc = self.services()?;
        let old = match svc.get(&fe.key(0), 0) {
            Ok(v) => v.count,
            Err(MapError::KeyNotFound) => 0,
            Err(e) => return Err(Error(format!("{MAP_LB_SERVICES}: {e}"))),
        };
        for (i, b) in backends.iter().enumerate() {
            let slot = LbFrontend { backend_id: b.id, ..Default::default() };
            svc.insert(fe.key(i as u16 + 1), slot, 0)
                .map_err(err(format!("writing {MAP_LB_SERVICES} (is it full?)")))?;
        }
        let head = LbFrontend {
            backend_id: 0,
            count: backends.len() as u16,
            rev_nat_id: info.rev_nat_id,
            affinity_timeout: info.affinity_timeout,
            flags: info.flags,
            pad: [0; 3],
        };
        svc.insert(fe.key(0), head, 0).map_err(err(format!("writing {MAP_LB_SERVICES} (is it full?)")))?;
        for slot in backends.len() as u16 + 1..=old {
            let _ = svc.remove(&fe.key(slot));
        }
        let mut rev: BpfHashMap<MapData, u16, LbRevnat> =
            BpfHashMap::try_from(self.map(MAP_LB_REVNAT)?).map_err(err(MAP_LB_REVNAT))?;
        let v = LbRevnat { address: ip_to_be(fe.address), port: fe.port.to_be(), pad: 0 };
        rev.insert(info.rev_nat_id, v, 0).map_err(err(MAP_LB_REVNAT))?;
        Ok(())
    }

    /// Writes a frontend's Maglev table (backend ids, [`LB_MAGLEV_SIZE`]
    /// slots; crates/service computes it), by its reverse-NAT id. Written
    /// before the frontend's LB_F_MAGLEV flag: a reader never finds the
    /// flag without its table.
    pub fn put_maglev(&self, rev_nat_id: u16, table: &[u32]) -> Result<(), Error> {
        let backend_ids: [u32; LB_MAGLEV_SIZE] = table
            .try_into()
            .map_err(|_| Error(format!("a Maglev table has {LB_MAGLEV_SIZE} slots, not {}", table.len())))?;
        let mut m: BpfHashMap<MapData, u16, LbMaglev> =
            BpfHashMap::try_from(self.map(MAP_LB_MAGLEV)?).map_err(err(MAP_LB_MAGLEV))?;
        m.insert(rev_nat_id, LbMaglev { backend_ids }, 0)
            .map_err(err(format!("writing {MAP_LB_MAGLEV} (is it full?)")))
    }

    /// Removes a frontend's Maglev table (after its frontend is gone, or
    /// its flag cleared).
    pub fn delete_maglev(&self, rev_nat_id: u16) -> Result<(), Error> {
        let mut m: BpfHashMap<MapData, u16, LbMaglev> =
            BpfHashMap::try_from(self.map(MAP_LB_MAGLEV)?).map_err(err(MAP_LB_MAGLEV))?;
        match m.remove(&rev_nat_id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(Error(format!("{MAP_LB_MAGLEV}: {e}"))),
        }
    }

    /// Whether socket LB connected the socket `cookie` to `backend`
    /// (a UDP translation it remembers for recvmsg).
    pub fn sock_translated(&self, cookie: u64, backend: Ipv4Addr, port: u16) -> Result<bool, Error> {
        let m: BpfHashMap<MapData, SockRevnatKey, LbRevnat> =
            BpfHashMap::try_from(self.map(MAP_LB_SOCK_REVNAT)?).map_err(err(MAP_LB_SOCK_REVNAT))?;
        let k = SockRevnatKey { cookie, address: ip_to_be(backend), port: port.to_be(), pad: 0 };
        match m.get(&k, 0) {
            Ok(_) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(Error(format!("{MAP_LB_SOCK_REVNAT}: {e}"))),
        }
    }

    /// Removes a frontend and its slots (backends stay: others may use them).
    pub fn delete(&self, fe: Frontend) -> Result<(), Error> {
        let mut svc = self.services()?;
        let count = match svc.get(&fe.key(0), 0) {
            Ok(v) => v,
            Err(MapError::KeyNotFound) => return Ok(()),
            Err(e) => return Err(Error(format!("{MAP_LB_SERVICES}: {e}"))),
        };
        let _ = svc.remove(&fe.key(0));
        for slot in 1..=count.count {
            let _ = svc.remove(&fe.key(slot));
        }
        if count.flags & LB_F_MAGLEV != 0 {
            self.delete_maglev(count.rev_nat_id)?;
        }
        Ok(())
    }

    /// Forgets a backend no frontend uses any more.
    pub fn delete_backend(&self, id: u32) -> Result<(), Error> {
        let mut m: BpfHashMap<MapData, u32, LbBackend> =
            BpfHashMap::try_from(self.map(MAP_LB_BACKENDS)?).map_err(err(MAP_LB_BACKENDS))?;
        match m.remove(&id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(Error(format!("{MAP_LB_BACKENDS}: {e}"))),
        }
    }

    /// Every frontend with its info and backends (in slot order), sorted.
    pub fn list(&self) -> Result<Vec<(Frontend, FrontendInfo, Vec<Backend>)>, Error> {
        let svc = self.services()?;
        let be_map: BpfHashMap<MapData, u32, LbBackend> =
            BpfHashMap::try_from(self.map(MAP_LB_BACKENDS)?).map_err(err(MAP_LB_BACKENDS))?;
        let mut heads = Vec::new();
        let mut slots: std::collections::BTreeMap<(LbKey, u16), u32> = Default::default();
        for item in svc.iter() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(Error(format!("{MAP_LB_SERVICES}: {e}"))),
            };
            if k.slot == 0 {
                heads.push((k, v));
            } else {
                slots.insert((LbKey { slot: 0, ..k }, k.slot), v.backend_id);
            }
        }
        let mut out = Vec::new();
        for (k, v) in heads {
            let fe = Frontend { address: be_to_ip(k.address), port: u16::from_be(k.port), proto: k.proto };
            let info = FrontendInfo {
                rev_nat_id: v.rev_nat_id,
                flags: v.flags,
                affinity_timeout: v.affinity_timeout,
            };
            let mut backends = Vec::new();
            for slot in 1..=v.count {
                let Some(id) = slots.get(&(k, slot)) else { continue };
                if let Ok(b) = be_map.get(id, 0) {
                    backends.push(Backend {
                        id: *id,
                        address: be_to_ip(b.address),
                        port: u16::from_be(b.port),
                        proto: b.proto,
                    });
                }
            }
            out.push((fe, info, backends));
        }
        out.sort_by_key(|(fe, _, _)| *fe);
        Ok(out)
    }
}
