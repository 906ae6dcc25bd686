//! An exclusive lock file: held while the process lives, so two agents can
//! never share one node's state.

use std::{
    fs::File,
    fs::OpenOptions,
    io,
    os::fd::AsRawFd,
    path::Path,
    time::{Duration, Instant},
};

/// How long a lock held by another process is waited for: an agent killed
/// a moment ago releases it only once its last thread has exited.
const WAIT: Duration = Duration::from_secs(5);

/// Opens (creating) `path` and takes an exclusive flock, waiting up to a
/// few seconds for a predecessor that is still exiting. `Ok(None)` when
/// another process keeps holding it.
pub fn exclusive(path: &Path) -> io::Result<Option<File>> {
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    let start = Instant::now();
    // SAFETY: flock on an fd we own.
    while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        if start.elapsed() > WAIT {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(f))
}
