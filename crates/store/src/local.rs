//! The local backend: embedded and file based, one file per key, for a
//! single node without a cluster store.

use crate::{Store, StoreError};
use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
};

pub struct LocalStore {
    dir: PathBuf,
    /// Serializes writers in this process so `create` is atomic.
    write: Mutex<()>,
    _lock: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// Keys map to paths below the store directory; only plain segments pass.
fn check_key(key: &str) -> Result<(), StoreError> {
    let bad = |why| Err(StoreError::InvalidKey { key: key.to_string(), why });
    if key.is_empty() {
        return bad("empty");
    }
    for seg in key.split('/') {
        if seg.is_empty() {
            return bad("empty path segment");
        }
        if seg == "." || seg == ".." || seg.starts_with('.') {
            return bad("segments may not start with '.'");
        }
        if !seg.chars().all(|c| c.is_ascii_graphic() && c != '\\') {
            return bad("only printable ASCII without '\\' is allowed");
        }
    }
    Ok(())
}

impl LocalStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(".lock");
        let lock = weft_ipam::lock::exclusive(&lock_path)
            .map_err(io(&lock_path))?
            .ok_or_else(|| StoreError::Locked { dir: dir.to_path_buf() })?;
        Ok(Self { dir: dir.to_path_buf(), write: Mutex::new(()), _lock: lock })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.dir.join(key))
    }

    fn write_file(&self, path: &Path, value: &[u8]) -> Result<(), StoreError> {
        let dir = path.parent().expect("keys live below the store directory");
        fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = dir.join(format!(".{}.tmp", path.file_name().unwrap().to_string_lossy()));
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(value).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))
    }

    fn walk(&self, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::Io { path: dir.to_path_buf(), source: e }),
        };
        for e in rd {
            let e = e.map_err(io(dir))?;
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                self.walk(&p, out)?;
            } else {
                let key = p.strip_prefix(&self.dir).unwrap().to_string_lossy().into_owned();
                out.push((key, fs::read(&p).map_err(io(&p))?));
            }
        }
        Ok(())
    }
}

impl Store for LocalStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let p = self.path(key)?;
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { path: p, source: e }),
        }
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let p = self.path(key)?;
        let _g = self.write.lock().unwrap_or_else(|e| e.into_inner());
        self.write_file(&p, value)
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let p = self.path(key)?;
        let _g = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if p.exists() {
            return Ok(false);
        }
        self.write_file(&p, value).map(|_| true)
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let p = self.path(key)?;
        let _g = self.write.lock().unwrap_or_else(|e| e.into_inner());
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::Io { path: p, source: e }),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        // Walk from the deepest directory the prefix names completely.
        let base = match prefix.rfind('/') {
            Some(i) => {
                check_key(&prefix[..i])?;
                self.dir.join(&prefix[..i])
            }
            None => self.dir.clone(),
        };
        self.walk(&base, &mut out)?;
        out.retain(|(k, _)| k.starts_with(prefix));
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn describe(&self) -> String {
        format!("local:{}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn put_get_list_delete_create() {
        let d = dir("kv");
        let s = LocalStore::open(&d).unwrap();
        s.put("endpoints/n1/c1/eth0", b"1").unwrap();
        s.put("endpoints/n1/c2/eth0", b"2").unwrap();
        s.put("endpoints/n2/c3/eth0", b"3").unwrap();
        assert_eq!(s.get("endpoints/n1/c1/eth0").unwrap().unwrap(), b"1");
        assert_eq!(s.get("endpoints/n1/none").unwrap(), None);
        let l = s.list("endpoints/n1/").unwrap();
        assert_eq!(
            l.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["endpoints/n1/c1/eth0", "endpoints/n1/c2/eth0"]
        );
        assert_eq!(s.list("endpoints/").unwrap().len(), 3);
        assert_eq!(s.list("nothing/").unwrap().len(), 0);
        assert!(!s.create("endpoints/n1/c1/eth0", b"x").unwrap());
        assert!(s.create("identities/id/256", b"x").unwrap());
        assert!(s.delete("endpoints/n1/c1/eth0").unwrap());
        assert!(!s.delete("endpoints/n1/c1/eth0").unwrap());
        drop(s);
        let s = LocalStore::open(&d).unwrap();
        assert_eq!(s.list("endpoints/").unwrap().len(), 2, "persisted across reopen");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_keys_and_second_open_are_refused() {
        let d = dir("bad");
        let s = LocalStore::open(&d).unwrap();
        for k in ["", "a//b", "../etc", "a/.hidden", "a b"] {
            assert!(matches!(s.put(k, b"x"), Err(StoreError::InvalidKey { .. })), "{k:?}");
        }
        assert!(matches!(LocalStore::open(&d), Err(StoreError::Locked { .. })));
        fs::remove_dir_all(&d).unwrap();
    }
}
