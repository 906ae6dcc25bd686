//! Network namespaces. A thread that calls setns(2) stays in that namespace,
//! so namespace switching happens only on a short-lived dedicated thread that
//! ends with the work; no other thread (and no thread pool) is ever moved.

use crate::{Error, Result};
use std::{fs::File, os::fd::AsRawFd, path::Path};

/// Runs `f` on a fresh thread inside the network namespace at `path`
/// (/run/netns/NAME, /proc/PID/ns/net, ...). Processes spawned by `f`
/// inherit that namespace.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let ns = File::open(path)
        .map_err(|e| Error(format!("network namespace {} cannot be opened: {e}", path.display())))?;
    let shown = path.display().to_string();
    std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd, for this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(Error(format!(
                "entering network namespace {shown}: {}",
                std::io::Error::last_os_error()
            )));
        }
        f()
    })
    .join()
    .map_err(|_| Error("namespace worker thread panicked".into()))?
}

/// Moves the calling thread into the namespace at `path`. Only for a
/// process about to exec another program (`weft lab exec`): everywhere else
/// use [`run_in`], which keeps the switch on a thread of its own.
pub fn enter_for_exec(path: &Path) -> Result<()> {
    let ns = File::open(path)
        .map_err(|e| Error(format!("network namespace {} cannot be opened: {e}", path.display())))?;
    // SAFETY: setns on a valid namespace fd.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error(format!(
            "entering network namespace {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Whether `path` is a network namespace (a bind mount or /proc entry).
pub fn exists(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e736673;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs into an owned zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC }
}

/// Creates a named namespace (/run/netns/NAME) with iproute2.
pub fn add(name: &str) -> Result<()> {
    crate::ip::run(&["netns", "add", name])
}

/// Deletes a named namespace; missing is not an error.
pub fn delete(name: &str) -> Result<()> {
    if !Path::new("/run/netns").join(name).exists() {
        return Ok(());
    }
    crate::ip::run(&["netns", "delete", name])
}

/// Names under /run/netns starting with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_is_a_clear_error() {
        let e = run_in(Path::new("/run/netns/weft-does-not-exist"), || Ok(())).unwrap_err();
        assert!(e.0.contains("/run/netns/weft-does-not-exist"), "{e}");
        assert!(!exists(Path::new("/run/netns/weft-does-not-exist")));
        assert!(exists(Path::new("/proc/self/ns/net")));
    }
}
