//! A tcx link made from a program's file descriptor alone (BPF_LINK_CREATE
//! and BPF_OBJ_PIN), so attaching to a new pod device needs no `&mut` on
//! the loaded objects: the kernel waits for an RCU grace period inside
//! every first attach (milliseconds), and concurrent ADDs wait for theirs
//! side by side instead of one after another under the datapath's lock.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// `union bpf_attr` as BPF_LINK_CREATE reads it for tcx (the tail of the
/// union is zero: no relative program, no expected revision).
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
    _rest: [u64; 4],
}

/// `union bpf_attr` as BPF_OBJ_PIN reads it.
#[repr(C)]
#[derive(Default)]
struct ObjPin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
    _rest: [u64; 4],
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a zero-padded bpf_attr layout of the given size that
    // lives across the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// Attaches `prog` to the device's ingress (or egress) with a new tcx link.
pub fn link_create(prog: BorrowedFd<'_>, ifindex: u32, ingress: bool) -> io::Result<OwnedFd> {
    let mut attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: if ingress { BPF_TCX_INGRESS } else { BPF_TCX_EGRESS },
        ..Default::default()
    };
    let fd = sys_bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: BPF_LINK_CREATE returned a new file descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Pins a link (or any bpf object) at `path` in bpffs.
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pin path has a NUL byte"))?;
    let mut attr =
        ObjPin { pathname: c.as_ptr() as u64, bpf_fd: fd.as_raw_fd() as u32, ..Default::default() };
    sys_bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// What attaching from-container to a new pod device needs, taken out of
/// the datapath so the attach runs without its lock.
pub struct LxcAttacher {
    pub(crate) prog: aya::programs::ProgramFd,
    pub(crate) links: PathBuf,
}

impl LxcAttacher {
    /// Attaches to a device that has no link of ours yet and pins the link
    /// where the datapath looks for it. `Ok(false)`: a pin exists already
    /// (the datapath's own attach, which swaps programs, must do it).
    pub fn attach_new(&self, ifname: &str) -> Result<bool, crate::Error> {
        let pin_path = self.links.join(format!("{ifname}_ingress"));
        if pin_path.exists() {
            return Ok(false);
        }
        let ifindex = crate::tc::ifindex(ifname)
            .ok_or_else(|| crate::Error(format!("attaching from-container to {ifname}: no such device")))?;
        let link = link_create(std::os::fd::AsFd::as_fd(&self.prog), ifindex, true)
            .map_err(|e| crate::Error(format!("attaching from-container to {ifname} ingress (tcx): {e}")))?;
        pin(std::os::fd::AsFd::as_fd(&link), &pin_path)
            .map_err(|e| crate::Error(format!("pinning link {}: {e}", pin_path.display())))?;
        Ok(true)
    }
}
