//! The node's endpoint journal: one file per pod address under
//! `<state dir>/endpoints/<ip>.json`, written (temp file, fsync, rename,
//! fsync of the directory) before the step it announces. It is this node's
//! own memory of its pods, independent of the cluster store, so a restart
//! finishes or undoes every ADD and DEL a crash interrupted, and a DEL that
//! could not reach the store is remembered until it can.

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
}

fn err(path: &Path, e: std::io::Error) -> String {
    format!("endpoint journal {}: {e}", path.display())
}

impl Journal {
    /// Opens (creating) the journal; temp files of a write a crash cut
    /// short are removed (the rename never happened: nothing was promised).
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        let dir = state_dir.join("endpoints");
        fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        for e in fs::read_dir(&dir).map_err(|e| err(&dir, e))?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                fs::remove_file(e.path()).map_err(|x| err(&e.path(), x))?;
            }
        }
        Ok(Self { dir })
    }

    fn path(&self, ip: Ipv4Addr) -> PathBuf {
        self.dir.join(format!("{ip}.json"))
    }

    pub fn write(&self, rec: &EndpointRecord) -> Result<(), String> {
        let path = self.path(rec.ip);
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(rec).expect("record serializes");
        let mut f = File::create(&tmp).map_err(|e| err(&tmp, e))?;
        f.write_all(&data).and_then(|_| f.sync_all()).map_err(|e| err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
        self.sync_dir()
    }

    pub fn remove(&self, ip: Ipv4Addr) -> Result<(), String> {
        let path = self.path(ip);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(&path, e)),
        }
    }

    fn sync_dir(&self) -> Result<(), String> {
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| err(&self.dir, e))
    }

    /// Every record; a file that cannot be read is an error naming it (the
    /// agent will not guess what a pod has).
    pub fn load(&self) -> Result<Vec<EndpointRecord>, String> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(|e| err(&self.dir, e))? {
            let p = e.map_err(|e| err(&self.dir, e))?.path();
            if p.extension().is_some_and(|x| x == "json") {
                let b = fs::read(&p).map_err(|e| err(&p, e))?;
                let rec: EndpointRecord = serde_json::from_slice(&b).map_err(|e| {
                    format!("endpoint journal {} is corrupt ({e}); fix or move it away", p.display())
                })?;
                out.push(rec);
            }
        }
        out.sort_by_key(|r| r.ip);
        Ok(out)
    }
}
