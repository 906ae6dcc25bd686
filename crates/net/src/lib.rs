//! Network plumbing for the agent and the lab: switching network namespaces
//! (only ever on a dedicated thread), netlink, iproute2 and sysctls.
//!
//! The agent configures devices, addresses and routes through [`netlink`],
//! from its own process: no exec per pod. [`ip`] (iproute2) stays for the
//! lab, which builds test topologies with it.

pub mod cgroup;
pub mod ip;
pub mod netlink;
pub mod netns;
pub mod sockdiag;
pub mod sysctl;

/// A named network namespace for a test, `weft-t-<pid>-<tag>`, deleted
/// when dropped (also when the test panics).
#[cfg(test)]
pub(crate) mod testns {
    use std::path::PathBuf;

    pub struct TestNs {
        pub name: String,
    }

    impl TestNs {
        pub fn new(tag: &str) -> Self {
            let name = format!("weft-t-{}-{tag}", std::process::id());
            crate::netns::delete(&name).unwrap();
            crate::netns::add(&name).unwrap();
            Self { name }
        }

        pub fn path(&self) -> PathBuf {
            PathBuf::from("/run/netns").join(&self.name)
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = crate::netns::delete(&self.name);
        }
    }
}

use std::fmt;

#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// The kernel has IPv6 (it can be built or booted without).
pub fn has_ipv6() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| std::path::Path::new("/proc/sys/net/ipv6").exists())
}

/// Index of a device in the calling thread's namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Name of a device in the calling thread's namespace.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer is IF_NAMESIZE long as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    Some(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

/// Names of every device in the calling thread's namespace (netlink, via
/// if_nameindex(3): sysfs would show the mount namespace's devices).
pub fn link_names() -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry,
    // freed with if_freenameindex.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 {
            out.push(std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned());
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// Formats a MAC address as aa:bb:cc:dd:ee:ff.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Parses aa:bb:cc:dd:ee:ff.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<_> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        mac[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m = [0x0e, 0xab, 0, 1, 2, 0xff];
        assert_eq!(mac_string(&m), "0e:ab:00:01:02:ff");
        assert_eq!(parse_mac("0e:ab:00:01:02:ff"), Some(m));
        assert_eq!(parse_mac("0e:ab"), None);
    }

    #[test]
    fn loopback_has_index_one() {
        assert_eq!(ifindex("lo"), Some(1));
        assert_eq!(ifname(1).as_deref(), Some("lo"));
        assert_eq!(ifindex("weft-no-such-dev"), None);
        assert!(link_names().iter().any(|n| n == "lo"));
    }
}
