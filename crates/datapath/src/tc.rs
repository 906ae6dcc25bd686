//! How weft's programs hang on a device: tcx links (Linux >= 6.6), pinned in
//! bpffs, or on older kernels (Debian 12's 6.1, Ubuntu 22.04's 5.15) the
//! legacy way, a clsact qdisc with a cls_bpf direct-action filter. A legacy
//! filter has no bpffs pin: it lives in the device's qdisc, outlives the
//! agent by itself, and is found again through netlink by its program name
//! at weft's priority.

use std::{
    ffi::CString,
    fmt, io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// What the operator asked for (`weft agent --tc-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcMode {
    /// Node devices with tcx where the kernel has it, pod devices with
    /// legacy tc (see [`TcMode::resolve`]).
    #[default]
    Auto,
    /// tcx on every device.
    Tcx,
    /// Legacy tc on every device.
    Legacy,
}

impl std::str::FromStr for TcMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TcMode::Auto),
            "tcx" => Ok(TcMode::Tcx),
            "legacy" => Ok(TcMode::Legacy),
            _ => Err(format!("unknown tc mode {s:?}: use auto, tcx or legacy")),
        }
    }
}

impl fmt::Display for TcMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcMode::Auto => "auto",
            TcMode::Tcx => "tcx",
            TcMode::Legacy => "legacy",
        })
    }
}

/// An attach mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// bpf_link of type tcx, pinned under `<pin dir>/links/`.
    Tcx,
    /// clsact qdisc + cls_bpf direct-action filter at [`LEGACY_PRIORITY`].
    Legacy,
}

impl Attach {
    pub fn name(self) -> &'static str {
        match self {
            Attach::Tcx => "tcx",
            Attach::Legacy => "legacy",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Attach::Tcx => "tcx links (pinned in bpffs)",
            Attach::Legacy => "legacy tc (clsact qdisc, cls_bpf direct-action filter)",
        }
    }
}

/// The mechanism for each kind of device, once `auto` is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachPlan {
    /// weft_host, weft_vxlan / weft_ipip, the underlay device: attached
    /// once at start.
    pub node: Attach,
    /// Pod (lxc) devices: attached on every ADD.
    pub pods: Attach,
}

impl AttachPlan {
    pub fn uniform(a: Attach) -> AttachPlan {
        AttachPlan { node: a, pods: a }
    }
}

impl fmt::Display for AttachPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.node == self.pods {
            return f.write_str(self.node.describe());
        }
        write!(f, "node devices: {}; pod devices: {}", self.node.describe(), self.pods.describe())
    }
}

impl TcMode {
    /// The mechanisms to use on this kernel, and why (for the agent's log).
    ///
    /// `auto` puts pod devices on legacy tc even where tcx exists: a tcx
    /// attach waits for an RCU grace period while holding RTNL (about 12 ms
    /// here), so every pod's ADD pays it and concurrent ADDs queue behind
    /// each other (at most ~80 pods/s per node); a cls_bpf filter costs
    /// a fraction of a millisecond. Node devices are attached once, so
    /// they get tcx where the kernel has it.
    pub fn resolve(self) -> (AttachPlan, &'static str) {
        match self {
            TcMode::Tcx => (AttachPlan::uniform(Attach::Tcx), "forced by --tc-mode tcx"),
            TcMode::Legacy => (AttachPlan::uniform(Attach::Legacy), "forced by --tc-mode legacy"),
            TcMode::Auto if kernel_has_tcx() => (
                AttachPlan { node: Attach::Tcx, pods: Attach::Legacy },
                "the kernel has tcx; pod devices use legacy tc, which attaches without waiting for an RCU grace period under RTNL",
            ),
            TcMode::Auto => (AttachPlan::uniform(Attach::Legacy), "the kernel has no tcx (Linux < 6.6)"),
        }
    }
}

/// Whether the kernel knows tcx: BPF_PROG_QUERY for the tcx ingress attach
/// type on loopback answers (with zero programs) on Linux >= 6.6 and fails
/// with EINVAL before. Nothing is attached, so the probe has no side effect.
pub fn kernel_has_tcx() -> bool {
    match aya::programs::SchedClassifier::query_tcx("lo", aya::programs::TcAttachType::Ingress) {
        Ok(_) => true,
        Err(e) => {
            log::debug!("tcx probe: {e}");
            false
        }
    }
}

/// The priority of weft's legacy filters (lower runs first; a pod device
/// carries only weft's, a shared device may carry others after it).
pub const LEGACY_PRIORITY: u16 = 1;
/// The handle of weft's legacy filter at that priority.
pub const LEGACY_HANDLE: u32 = 1;

/// parent of the clsact ingress / egress hooks (TC_H_CLSACT:TC_H_MIN_*).
pub const PARENT_INGRESS: u32 = 0xffff_fff2;
pub const PARENT_EGRESS: u32 = 0xffff_fff3;

/// One cls_bpf filter as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfFilter {
    pub priority: u16,
    pub handle: u32,
    /// The program name given at attach (TCA_BPF_NAME).
    pub name: String,
    /// The kernel's id of the program (TCA_BPF_ID).
    pub prog_id: Option<u32>,
    /// Whether the filter is direct-action (TCA_BPF_FLAGS).
    pub direct_action: bool,
}

// rtnetlink numbers (linux/rtnetlink.h, linux/pkt_cls.h).
const RTM_NEWTFILTER: u16 = 44;
const RTM_GETTFILTER: u16 = 46;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_ID: u16 = 11;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDR: usize = 16;
const TCMSG: usize = 20;

/// The cls_bpf filters on a device's clsact hook (`parent` is
/// [`PARENT_INGRESS`] or [`PARENT_EGRESS`]), in the calling thread's
/// namespace. A device without a clsact qdisc has none.
pub fn bpf_filters(ifindex: u32, parent: u32) -> io::Result<Vec<BpfFilter>> {
    let sock = open_route_socket()?;
    let mut req = Vec::with_capacity(NLMSG_HDR + TCMSG);
    req.extend_from_slice(&((NLMSG_HDR + TCMSG) as u32).to_ne_bytes());
    req.extend_from_slice(&RTM_GETTFILTER.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    req.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes()); // handle
    req.extend_from_slice(&parent.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes()); // info
    // SAFETY: send(2) from a buffer we own, of its length.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: recv(2) into a buffer we own, of its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if parse_messages(&buf[..n as usize], &mut out)? {
            return Ok(out);
        }
    }
}

fn open_route_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses one datagram of the dump into `out`; true once the dump is done.
fn parse_messages(mut b: &[u8], out: &mut Vec<BpfFilter>) -> io::Result<bool> {
    while b.len() >= NLMSG_HDR {
        let len = u32_at(b, 0) as usize;
        if len < NLMSG_HDR || len > b.len() {
            return Err(io::Error::other(format!("netlink: truncated message ({len} of {} bytes)", b.len())));
        }
        let (msg, rest) = b.split_at(len);
        b = &rest[rest.len().min((4 - len % 4) % 4)..];
        match u16_at(msg, 4) {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = if msg.len() >= NLMSG_HDR + 4 { u32_at(msg, NLMSG_HDR) as i32 } else { 0 };
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                return Ok(true);
            }
            RTM_NEWTFILTER if msg.len() >= NLMSG_HDR + TCMSG => {
                if let Some(f) = parse_filter(&msg[NLMSG_HDR..]) {
                    out.push(f);
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// One RTM_NEWTFILTER payload (tcmsg + attributes). The dump also reports
/// each priority's classifier itself (no options): those are skipped.
fn parse_filter(p: &[u8]) -> Option<BpfFilter> {
    let handle = u32_at(p, 8);
    let priority = (u32_at(p, 16) >> 16) as u16;
    let mut kind = None;
    let mut opts = None;
    for (ty, data) in attrs(&p[TCMSG..]) {
        match ty {
            TCA_KIND => kind = Some(cstr(data)),
            TCA_OPTIONS => opts = Some(data),
            _ => {}
        }
    }
    if kind.as_deref() != Some("bpf") {
        return None;
    }
    let mut f = BpfFilter { priority, handle, name: String::new(), prog_id: None, direct_action: false };
    for (ty, data) in attrs(opts?) {
        match ty {
            TCA_BPF_NAME => f.name = cstr(data),
            TCA_BPF_ID if data.len() >= 4 => f.prog_id = Some(u32_at(data, 0)),
            TCA_BPF_FLAGS if data.len() >= 4 => {
                f.direct_action = u32_at(data, 0) & TCA_BPF_FLAG_ACT_DIRECT != 0
            }
            _ => {}
        }
    }
    Some(f)
}

/// Netlink attributes as (type, payload); stops at the first malformed one.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16_at(b, 0) as usize;
        if len < 4 || len > b.len() {
            return None;
        }
        let item = (u16_at(b, 2) & NLA_TYPE_MASK, &b[4..len]);
        let next = (len + 3) & !3;
        b = &b[next.min(b.len())..];
        Some(item)
    })
}

fn cstr(data: &[u8]) -> String {
    let end = data.iter().position(|&c| c == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// Index of a device in the calling thread's namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Every device of the calling thread's namespace as (index, name).
pub fn devices() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array ended by a zero entry, freed
    // with if_freenameindex.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 {
            out.push(((*p).if_index, std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned()));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(data);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn filter_msg(prio: u16, handle: u32, name: Option<&str>) -> Vec<u8> {
        let mut payload = vec![0u8; TCMSG];
        payload[8..12].copy_from_slice(&handle.to_ne_bytes());
        payload[16..20].copy_from_slice(&(((prio as u32) << 16) | 0x0300).to_ne_bytes());
        payload.extend(attr(TCA_KIND, b"bpf\0"));
        if let Some(n) = name {
            let mut o = attr(TCA_BPF_NAME, format!("{n}\0").as_bytes());
            o.extend(attr(TCA_BPF_FLAGS, &1u32.to_ne_bytes()));
            o.extend(attr(TCA_BPF_ID, &77u32.to_ne_bytes()));
            payload.extend(attr(TCA_OPTIONS | 0x8000, &o));
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&RTM_NEWTFILTER.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend(payload);
        m
    }

    #[test]
    fn dump_messages_yield_named_filters_and_skip_classifier_heads() {
        let mut dgram = filter_msg(1, 0, None);
        dgram.extend(filter_msg(1, 1, Some("from_container")));
        dgram.extend(filter_msg(49152, 2, Some("other")));
        let mut out = Vec::new();
        assert!(!parse_messages(&dgram, &mut out).unwrap());
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            out[0],
            BpfFilter {
                priority: 1,
                handle: 1,
                name: "from_container".into(),
                prog_id: Some(77),
                direct_action: true
            }
        );
        assert_eq!((out[1].priority, out[1].name.as_str()), (49152, "other"));
        let mut done = Vec::new();
        done.extend_from_slice(&(NLMSG_HDR as u32).to_ne_bytes());
        done.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        done.extend_from_slice(&[0; 10]);
        assert!(parse_messages(&done, &mut out).unwrap());
    }

    #[test]
    fn tc_mode_parses_and_names_the_choices_on_error() {
        assert_eq!("legacy".parse::<TcMode>().unwrap(), TcMode::Legacy);
        assert_eq!("tcx".parse::<TcMode>().unwrap(), TcMode::Tcx);
        assert_eq!("auto".parse::<TcMode>().unwrap(), TcMode::Auto);
        let e = "clsact".parse::<TcMode>().unwrap_err();
        assert!(e.contains("auto, tcx or legacy"), "{e}");
    }
}
