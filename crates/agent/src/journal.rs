//! The node's endpoint journal: one file per pod address under
//! `<state dir>/endpoints/<ip>.json`, written (temp file, rename) before
//! the step it announces. It is this node's own memory of its pods,
//! independent of the cluster store, so a restart finishes or undoes every
//! ADD and DEL a crash interrupted, and a DEL that could not reach the
//! store is remembered until it can. IPAM is rebuilt from it on start.
//!
//! No fsync per record. A crash of the agent loses nothing that reached
//! the page cache, and the rename makes each record appear whole or not
//! at all. What fsync would add is surviving a crash of the machine — but
//! that ends every pod with it (namespaces, devices and pinned maps live
//! in memory), so the records of an earlier boot only say what to clean
//! up. The journal notes the boot it was written in (`boot_id`, synced
//! once per start); after a reboot every record is stale, and one that a
//! power loss left torn is dropped with a warning instead of stopping the
//! agent (the store's side of it goes with this node's unowned records).

use crate::state::EndpointRecord;
use serde::{Deserialize, Serialize};
use std::{
    fs::{self, File},
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

/// How far an attachment got.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Intent: the address and identity are taken, devices may exist.
    /// A restart undoes it (the runtime was never told it worked).
    Adding,
    /// Done and reported.
    #[default]
    Ready,
    /// Being taken down; what is left is owed (e.g. the store was down).
    Deleting,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Adding => "adding",
            Phase::Ready => "ready",
            Phase::Deleting => "deleting",
        }
    }
}

pub struct Journal {
    dir: PathBuf,
    /// The records were written before the machine last booted.
    earlier_boot: bool,
}

fn err(path: &Path, e: std::io::Error) -> String {
    format!("endpoint journal {}: {e}", path.display())
}

/// The kernel's id of this boot (a new one at every boot).
fn boot_id() -> Result<String, String> {
    let p = "/proc/sys/kernel/random/boot_id";
    fs::read_to_string(p).map(|s| s.trim().to_string()).map_err(|e| format!("{p}: {e}"))
}

impl Journal {
    /// Opens (creating) the journal; temp files of a write a crash cut
    /// short are removed (the rename never happened: nothing was promised).
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        Self::open_at_boot(state_dir, &boot_id()?)
    }

    fn open_at_boot(state_dir: &Path, boot: &str) -> Result<Self, String> {
        let dir = state_dir.join("endpoints");
        fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        for e in fs::read_dir(&dir).map_err(|e| err(&dir, e))?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                fs::remove_file(e.path()).map_err(|x| err(&e.path(), x))?;
            }
        }
        let mark = dir.join("boot_id");
        // No mark: a new journal, or one of an agent that synced every
        // record (nothing in it can be torn).
        let earlier_boot = match fs::read_to_string(&mark) {
            Ok(b) => b.trim() != boot,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(err(&mark, e)),
        };
        let j = Self { dir, earlier_boot };
        if earlier_boot || !mark.exists() {
            j.replace_synced(&mark, boot.as_bytes())?;
        }
        Ok(j)
    }

    /// The machine restarted since the records were written: every pod
    /// they name is gone.
    pub fn earlier_boot(&self) -> bool {
        self.earlier_boot
    }

    fn path(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(format!("{ip}.json"))
    }

    pub fn write(&self, rec: &EndpointRecord) -> Result<(), String> {
        let path = self.path(rec.ip);
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(rec).expect("record serializes");
        fs::write(&tmp, &data).map_err(|e| err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| err(&path, e))
    }

    /// Temp file, fsync, rename, fsync of the directory.
    fn replace_synced(&self, path: &Path, data: &[u8]) -> Result<(), String> {
        let tmp = path.with_extension("tmp");
        let mut f = File::create(&tmp).map_err(|e| err(&tmp, e))?;
        f.write_all(data).and_then(|_| f.sync_all()).map_err(|e| err(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| err(path, e))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| err(&self.dir, e))
    }

    pub fn remove(&self, ip: Ipv4Addr) -> Result<(), String> {
        let path = self.path(ip);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(&path, e)),
            _ => Ok(()),
        }
    }

    /// Every record. A file that cannot be read is an error naming it (the
    /// agent will not guess what a pod has) — unless it is from an earlier
    /// boot, where a power loss can leave it torn and its pod is gone.
    pub fn load(&self) -> Result<Vec<EndpointRecord>, String> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(|e| err(&self.dir, e))? {
            let p = e.map_err(|e| err(&self.dir, e))?.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let parsed = fs::read(&p)
                .map_err(|e| err(&p, e))
                .and_then(|b| serde_json::from_slice::<EndpointRecord>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(rec) => out.push(rec),
                Err(e) if self.earlier_boot => {
                    log::warn!(
                        "endpoint journal {} from before the machine restarted is unreadable ({e}); its pod is gone with the restart, dropping it",
                        p.display()
                    );
                    fs::remove_file(&p).map_err(|e| err(&p, e))?;
                }
                Err(e) => {
                    return Err(format!(
                        "endpoint journal {} is corrupt ({e}); fix or move it away",
                        p.display()
                    ));
                }
            }
        }
        out.sort_by_key(|r| r.ip);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ip: [u8; 4]) -> EndpointRecord {
        serde_json::from_value(serde_json::json!({
            "id": 7, "container_id": "c1", "ifname": "eth0", "netns": "/run/netns/x",
            "network": "weft", "ip": Ipv4Addr::from(ip), "host_ifname": "lxc1",
            "host_mac": [0, 1, 2, 3, 4, 5], "pod_mac": [0, 1, 2, 3, 4, 6], "mtu": 1500,
            "identity": 300, "labels": [], "phase": "adding"
        }))
        .unwrap()
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-journal-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn records_round_trip_and_a_torn_one_of_this_boot_stops_the_agent() {
        let d = dir("same");
        let j = Journal::open_at_boot(&d, "boot-a").unwrap();
        assert!(!j.earlier_boot());
        j.write(&rec([10, 0, 0, 2])).unwrap();
        j.write(&rec([10, 0, 0, 3])).unwrap();
        j.remove(Ipv4Addr::new(10, 0, 0, 3)).unwrap();
        j.remove(Ipv4Addr::new(10, 0, 0, 3)).unwrap();
        let j = Journal::open_at_boot(&d, "boot-a").unwrap();
        assert!(!j.earlier_boot(), "an agent restart is not a reboot");
        let got: Vec<Ipv4Addr> = j.load().unwrap().iter().map(|r| r.ip).collect();
        assert_eq!(got, [Ipv4Addr::new(10, 0, 0, 2)]);
        fs::write(d.join("endpoints/10.0.0.9.json"), b"").unwrap();
        let e = j.load().unwrap_err();
        assert!(e.contains("10.0.0.9.json is corrupt"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn after_a_reboot_torn_records_are_dropped_and_readable_ones_kept_for_cleanup() {
        let d = dir("reboot");
        let j = Journal::open_at_boot(&d, "boot-a").unwrap();
        j.write(&rec([10, 0, 0, 2])).unwrap();
        fs::write(d.join("endpoints/10.0.0.9.json"), b"").unwrap();
        fs::write(d.join("endpoints/10.0.0.4.json.tmp"), b"{").unwrap();
        let j = Journal::open_at_boot(&d, "boot-b").unwrap();
        assert!(j.earlier_boot());
        let got: Vec<Ipv4Addr> = j.load().unwrap().iter().map(|r| r.ip).collect();
        assert_eq!(got, [Ipv4Addr::new(10, 0, 0, 2)]);
        assert!(!d.join("endpoints/10.0.0.9.json").exists());
        assert!(!d.join("endpoints/10.0.0.4.json.tmp").exists());
        assert!(!Journal::open_at_boot(&d, "boot-b").unwrap().earlier_boot(), "the new boot is noted");
        fs::remove_dir_all(&d).unwrap();
    }
}
