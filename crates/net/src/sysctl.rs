//! sysctls under /proc/sys. The files under /proc/sys/net belong to the
//! network namespace of the thread that opens them, so these act on the
//! calling thread's namespace.

use crate::{Error, Result};
use std::path::PathBuf;

fn path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Sets a sysctl by its dotted key, e.g. `net.ipv4.ip_forward` to `1`.
/// Every dot is a path separator, so keys that hold a device name (which
/// may itself hold a dot) must go through [`set_conf`].
pub fn set(key: &str, value: &str) -> Result<()> {
    std::fs::write(path(key), value).map_err(|e| Error(format!("sysctl {key}={value}: {e}")))
}

/// Reads a sysctl by its dotted key (see [`set`]), trimmed.
pub fn get(key: &str) -> Result<String> {
    std::fs::read_to_string(path(key))
        .map(|s| s.trim().to_string())
        .map_err(|e| Error(format!("sysctl {key}: {e}")))
}

/// The file of a per-device sysctl, /proc/sys/net/FAMILY/conf/DEV/KEY, with
/// the device name as one path component (a dot in it stays a dot). DEV may
/// also be `all` or `default`. Refuses a family other than ipv4/ipv6 and a
/// device or key that is empty, "." or "..", or holds '/' or NUL.
pub fn conf_path(family: &str, dev: &str, key: &str) -> Result<PathBuf> {
    if family != "ipv4" && family != "ipv6" {
        return Err(Error(format!("sysctl family {family:?} is neither ipv4 nor ipv6")));
    }
    for (what, v) in [("device", dev), ("key", key)] {
        if v.is_empty() || v == "." || v == ".." || v.contains(['/', '\0']) {
            return Err(Error(format!("sysctl {what} name {v:?} cannot be a path component")));
        }
    }
    Ok(PathBuf::from("/proc/sys/net").join(family).join("conf").join(dev).join(key))
}

/// Sets net.FAMILY.conf.DEV.KEY (FAMILY is "ipv4" or "ipv6") for any valid
/// device name, e.g. `set_conf("ipv6", "e.1", "disable_ipv6", "1")`.
pub fn set_conf(family: &str, dev: &str, key: &str, value: &str) -> Result<()> {
    let p = conf_path(family, dev, key)?;
    std::fs::write(&p, value).map_err(|e| Error(format!("sysctl {}={value}: {e}", p.display())))
}

/// Reads net.FAMILY.conf.DEV.KEY (see [`set_conf`]), trimmed.
pub fn get_conf(family: &str, dev: &str, key: &str) -> Result<String> {
    let p = conf_path(family, dev, key)?;
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error(format!("sysctl {}: {e}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn conf_paths_keep_the_device_name_whole() {
        assert_eq!(
            conf_path("ipv6", "e.1", "disable_ipv6").unwrap(),
            Path::new("/proc/sys/net/ipv6/conf/e.1/disable_ipv6")
        );
        assert_eq!(
            conf_path("ipv4", "weft_host", "rp_filter").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/weft_host/rp_filter")
        );
        assert_eq!(
            conf_path("ipv4", "all", "forwarding").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/all/forwarding")
        );
        assert!(conf_path("ipv5", "eth0", "x").is_err());
        assert!(conf_path("ipv4", "a/b", "x").is_err());
        assert!(conf_path("ipv4", "..", "x").is_err());
        assert!(conf_path("ipv4", "", "x").is_err());
        assert!(conf_path("ipv4", "eth0", "../x").is_err());
        // What the dotted form made of it.
        assert_eq!(path("net.ipv6.conf.e.1.disable_ipv6"), "/proc/sys/net/ipv6/conf/e/1/disable_ipv6");
    }

    #[test]
    fn set_conf_on_a_device_with_a_dot() {
        let ns = crate::testns::TestNs::new("sysctl");
        crate::netns::run_in(&ns.path(), || {
            crate::ip::run(&["link", "add", "e.1", "type", "veth", "peer", "name", "e.2"])?;
            for v in ["1", "0", "1"] {
                set_conf("ipv6", "e.1", "disable_ipv6", v)?;
                assert_eq!(get_conf("ipv6", "e.1", "disable_ipv6")?, v);
            }
            // Only e.1 changed.
            assert_eq!(get_conf("ipv6", "e.2", "disable_ipv6")?, "0");
            set_conf("ipv4", "e.1", "rp_filter", "0")?;
            assert_eq!(get_conf("ipv4", "e.1", "rp_filter")?, "0");
            let e = set_conf("ipv6", "weft-nodev", "disable_ipv6", "1").unwrap_err();
            assert!(e.0.contains("/proc/sys/net/ipv6/conf/weft-nodev/disable_ipv6"), "{e}");
            Ok(())
        })
        .unwrap();
    }
}
