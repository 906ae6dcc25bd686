//! sysctls under /proc/sys. The files under /proc/sys/net belong to the
//! network namespace of the thread that opens them, so these act on the
//! calling thread's namespace.

use crate::{Error, Result};

fn path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Sets e.g. `net.ipv4.conf.weft_host.rp_filter` to `0`. Device names with a
/// dot are not supported (weft names its devices without dots).
pub fn set(key: &str, value: &str) -> Result<()> {
    std::fs::write(path(key), value).map_err(|e| Error(format!("sysctl {key}={value}: {e}")))
}

pub fn get(key: &str) -> Result<String> {
    std::fs::read_to_string(path(key))
        .map(|s| s.trim().to_string())
        .map_err(|e| Error(format!("sysctl {key}: {e}")))
}
