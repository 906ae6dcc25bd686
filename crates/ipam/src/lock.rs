//! An exclusive lock file: held while the process lives, so two agents can
//! never share one node's state.

use std::{fs::File, fs::OpenOptions, io, os::fd::AsRawFd, path::Path};

/// Opens (creating) `path` and takes an exclusive, non-blocking flock.
/// `Ok(None)` when another process holds it.
pub fn exclusive(path: &Path) -> io::Result<Option<File>> {
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(None);
    }
    Ok(Some(f))
}
