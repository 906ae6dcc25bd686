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
    run_in_file(ns, path.display().to_string(), f)
}

/// [`run_in`] for a namespace file already open.
fn run_in_file<T, F>(ns: File, shown: String, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
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
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs into an owned zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC }
}

const NSFS_MAGIC: i64 = 0x6e736673;
/// ioctl_ns(2): the CLONE_NEW* type of a namespace file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

fn ns_type_name(t: libc::c_int) -> String {
    match t {
        libc::CLONE_NEWNET => "network".into(),
        libc::CLONE_NEWNS => "mount".into(),
        libc::CLONE_NEWUTS => "uts".into(),
        libc::CLONE_NEWIPC => "ipc".into(),
        libc::CLONE_NEWPID => "pid".into(),
        libc::CLONE_NEWUSER => "user".into(),
        libc::CLONE_NEWCGROUP => "cgroup".into(),
        0x80 => "time".into(),
        other => format!("type {other:#x}"),
    }
}

/// (st_dev, st_ino): what identifies a namespace.
fn ns_id(f: &File) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// Checks that `path` (CNI_NETNS of an ADD) is a pod's network namespace,
/// before anything is made in it. Refused, with the reason:
/// - a path that cannot be opened, or is not a namespace file (not on nsfs);
/// - a namespace of another kind ("X is a mount namespace, not a network
///   namespace"), e.g. /proc/self/ns/mnt;
/// - the caller's own network namespace ("X is the node's own network
///   namespace": the agent runs in the node's) or the machine's root one
///   (that of PID 1), compared by namespace inode;
/// - a namespace that already has a non-loopback IPv4 address ("X already
///   has IPv4 address A on DEV: it is not a fresh pod namespace ..."), such
///   as a lab's underlay namespace.
///
/// The address check enters the namespace on one short-lived thread. Only
/// for a new attachment: an ADD repeated for an attachment that exists, a
/// CHECK or a DEL find weft's own address there and must not call this.
pub fn check_pod_netns(path: &Path) -> std::result::Result<(), String> {
    check_pod_netns_against(
        path,
        &[("/proc/self/ns/net", "the node's own"), ("/proc/1/ns/net", "the machine's root")],
    )
}

/// [`check_pod_netns`] with the namespaces a pod's may not be, as
/// (path, description); a reference that cannot be read is skipped.
fn check_pod_netns_against(path: &Path, refused: &[(&str, &str)]) -> std::result::Result<(), String> {
    let shown = path.display();
    let ns = File::open(path).map_err(|e| format!("{shown} cannot be opened: {e}"))?;
    // SAFETY: fstatfs on an open fd into an owned zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(ns.as_raw_fd(), &mut st) } != 0 {
        return Err(format!("{shown}: statfs: {}", std::io::Error::last_os_error()));
    }
    if st.f_type as i64 != NSFS_MAGIC {
        return Err(format!(
            "{shown} is not a namespace file (not on nsfs): give a /run/netns/NAME bind mount or /proc/PID/ns/net"
        ));
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and returns the type.
    let t = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_NSTYPE as _) };
    if t < 0 {
        return Err(format!("{shown}: NS_GET_NSTYPE: {}", std::io::Error::last_os_error()));
    }
    if t != libc::CLONE_NEWNET {
        return Err(format!("{shown} is a {} namespace, not a network namespace", ns_type_name(t)));
    }
    let id = ns_id(&ns).map_err(|e| format!("{shown}: stat: {e}"))?;
    for (other, what) in refused {
        if File::open(other).and_then(|f| ns_id(&f)).is_ok_and(|o| o == id) {
            return Err(format!(
                "{shown} is {what} network namespace ({other}), not a pod's: give the pod's own namespace"
            ));
        }
    }
    let found = run_in_file(ns, shown.to_string(), || ipv4_address().map_err(Error))
        .map_err(|e| format!("{shown}: looking for addresses: {e}"))?;
    match found {
        Some((dev, a)) => Err(format!(
            "{shown} already has IPv4 address {a} on {dev}: it is not a fresh pod namespace (the lab's underlay or another host?)"
        )),
        None => Ok(()),
    }
}

/// The first non-loopback IPv4 address of the calling thread's namespace,
/// with its device (getifaddrs: a netlink socket of this thread's namespace).
fn ipv4_address() -> std::result::Result<Option<(String, std::net::Ipv4Addr)>, String> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(format!("getifaddrs: {}", std::io::Error::last_os_error()));
    }
    let mut found = None;
    let mut p = head;
    while !p.is_null() {
        // SAFETY: p is a node of the list getifaddrs returned.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr; sa_family says which kind.
        if unsafe { (*ifa.ifa_addr).sa_family } as libc::c_int != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let a = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        if a.is_loopback() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated device name.
        let dev = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
        found = Some((dev, a));
        break;
    }
    // SAFETY: frees the list getifaddrs made, once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
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

    #[test]
    fn the_nodes_own_namespace_is_refused() {
        let e = check_pod_netns(Path::new("/proc/self/ns/net")).unwrap_err();
        assert!(e.contains("/proc/self/ns/net is the node's own network namespace"), "{e}");
        // Same namespace under another name.
        let own = format!("/proc/{}/ns/net", std::process::id());
        let e = check_pod_netns(Path::new(&own)).unwrap_err();
        assert!(e.contains("node's own network namespace"), "{e}");
    }

    #[test]
    fn a_refused_namespace_is_recognised_under_any_path() {
        // As /proc/1/ns/net is checked (it may be unreadable here, and then
        // it is skipped): by inode, whatever path names it.
        let ns = crate::testns::TestNs::new("root");
        let reference = ns.path().display().to_string();
        let e =
            check_pod_netns_against(&ns.path(), &[(reference.as_str(), "the machine's root")]).unwrap_err();
        assert_eq!(
            e,
            format!(
                "{0} is the machine's root network namespace ({0}), not a pod's: give the pod's own namespace",
                ns.path().display()
            )
        );
        let unreadable = [("/proc/weft-no-such/ns/net", "x")];
        assert_eq!(check_pod_netns_against(&ns.path(), &unreadable), Ok(()));
    }

    #[test]
    fn other_kinds_of_namespace_and_files_are_refused() {
        let e = check_pod_netns(Path::new("/proc/self/ns/mnt")).unwrap_err();
        assert_eq!(e, "/proc/self/ns/mnt is a mount namespace, not a network namespace");
        let e = check_pod_netns(Path::new("/proc/self/ns/uts")).unwrap_err();
        assert!(e.contains("is a uts namespace"), "{e}");
        let e = check_pod_netns(Path::new("/etc/hostname")).unwrap_err();
        assert!(e.contains("not a namespace file (not on nsfs)"), "{e}");
        let e = check_pod_netns(Path::new("/run/netns/weft-does-not-exist")).unwrap_err();
        assert!(e.contains("/run/netns/weft-does-not-exist cannot be opened"), "{e}");
    }

    #[test]
    fn a_fresh_namespace_is_accepted() {
        let ns = crate::testns::TestNs::new("fresh");
        assert_eq!(check_pod_netns(&ns.path()), Ok(()));
        // Loopback addresses do not count.
        crate::ip::run(&["-n", &ns.name, "link", "set", "lo", "up"]).unwrap();
        assert_eq!(check_pod_netns(&ns.path()), Ok(()));
    }

    #[test]
    fn a_namespace_with_an_address_is_refused() {
        let ns = crate::testns::TestNs::new("addr");
        let n = ns.name.as_str();
        crate::ip::run(&["-n", n, "link", "add", "br0", "type", "veth", "peer", "name", "br0p"]).unwrap();
        crate::ip::run(&["-n", n, "addr", "add", "198.18.0.2/24", "dev", "br0"]).unwrap();
        let e = check_pod_netns(&ns.path()).unwrap_err();
        assert_eq!(
            e,
            format!(
                "{} already has IPv4 address 198.18.0.2 on br0: it is not a fresh pod namespace (the lab's underlay or another host?)",
                ns.path().display()
            )
        );
    }
}
