//! Rust mirrors of the keys and values in `bpf/lib/maps.h` and
//! `bpf/lib/events.h`. The C header is the source of truth; the test in
//! `tests/layout.rs` compares these layouts with the BTF of the compiled
//! objects, so a change on one side without the other fails the build's tests.

use std::net::Ipv4Addr;

/// Must equal `WEFT_ABI_VERSION` in `bpf/lib/common.h` (checked by a test).
/// Part of every pin path, so an agent never adopts maps of another layout.
pub const ABI_VERSION: u32 = 3;

/// Names of the pinned maps, as in the C sources.
pub const MAP_ENDPOINTS: &str = "weft_endpoints";
pub const MAP_LXC: &str = "weft_lxc";
pub const MAP_CONFIG: &str = "weft_config";
pub const MAP_EVENTS: &str = "weft_events";
pub const MAP_IPCACHE: &str = "weft_ipcache";

/// `IPCACHE_F_NODE`: the prefix is a node's own address.
pub const IPCACHE_F_NODE: u16 = 0x1;

/// `MODE_*`: how pod traffic crosses nodes.
pub const MODE_VXLAN: u32 = 0;
pub const MODE_IPIP: u32 = 1;
pub const MODE_NATIVE: u32 = 2;

/// `ENDPOINT_F_HOST`: the entry is one of the node's own addresses.
pub const ENDPOINT_F_HOST: u16 = 0x1;

/// `CFG_F_TRACE` / `CFG_F_DEBUG`.
pub const CFG_F_TRACE: u32 = 0x1;
pub const CFG_F_DEBUG: u32 = 0x2;

/// Captured packet bytes per event (`EVENT_CAP_LEN`).
pub const EVENT_CAP_LEN: usize = 128;

/// An IPv4 address as the datapath stores it: network byte order in a u32.
pub fn ip_to_be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The inverse of [`ip_to_be`].
pub fn be_to_ip(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(v.to_ne_bytes())
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub ip4: u32,
}

impl EndpointKey {
    pub fn new(ip: Ipv4Addr) -> Self {
        Self { ip4: ip_to_be(ip) }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    pub ifindex: u32,
    pub sec_identity: u32,
    pub ep_id: u16,
    pub flags: u16,
    pub mac: [u8; 6],
    pub node_mac: [u8; 6],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LxcInfo {
    pub ip4: u32,
    pub ep_id: u16,
    pub pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeftConfig {
    pub flags: u32,
    pub node_ip4: u32,
    pub gw_ip4: u32,
    pub mode: u32,
    pub vxlan_ifindex: u32,
    pub underlay_ifindex: u32,
    pub path_mtu: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpcacheKey {
    pub prefixlen: u32,
    pub ip4: u32,
}

impl IpcacheKey {
    pub fn new(ip: Ipv4Addr, prefixlen: u8) -> Self {
        Self { prefixlen: prefixlen as u32, ip4: ip_to_be(ip) }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpcacheInfo {
    pub sec_identity: u32,
    pub tunnel_endpoint: u32,
    pub flags: u16,
    pub pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WeftEvent {
    pub kind: u8,
    pub subtype: u8,
    pub source: u16,
    pub hash: u32,
    pub ifindex: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub dst_ep: u16,
    pub reason: u8,
    pub file: u8,
    pub line: u16,
    pub cap_len: u16,
    pub orig_len: u32,
    pub arg1: u32,
    pub arg2: u32,
    pub arg3: u32,
    pub orig_ip: u32,
    pub ktime: u64,
    pub data: [u8; EVENT_CAP_LEN],
}

impl WeftEvent {
    /// Reads a record as the ring buffer hands it over.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked, the type is plain old data, and
        // read_unaligned copes with any alignment of the ring buffer slot.
        Some(unsafe { std::ptr::read_unaligned(b.as_ptr() as *const Self) })
    }

    pub fn captured(&self) -> &[u8] {
        &self.data[..(self.cap_len as usize).min(EVENT_CAP_LEN)]
    }
}

// SAFETY: all of these are #[repr(C)] plain old data without padding holes
// that the kernel would interpret (the layout test checks sizes and offsets).
unsafe impl aya::Pod for EndpointKey {}
unsafe impl aya::Pod for EndpointInfo {}
unsafe impl aya::Pod for LxcInfo {}
unsafe impl aya::Pod for WeftConfig {}
unsafe impl aya::Pod for IpcacheKey {}
unsafe impl aya::Pod for IpcacheInfo {}
