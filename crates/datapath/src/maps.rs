//! Rust mirrors of the keys and values in `bpf/lib/maps.h` and
//! `bpf/lib/events.h`. The C header is the source of truth; the test in
//! `tests/layout.rs` compares these layouts with the BTF of the compiled
//! objects, so a change on one side without the other fails the build's tests.

use std::net::Ipv4Addr;

/// Must equal `WEFT_ABI_VERSION` in `bpf/lib/common.h` (checked by a test).
/// Part of every pin path, so an agent never adopts maps of another layout.
pub const ABI_VERSION: u32 = 5;

/// Names of the pinned maps, as in the C sources.
pub const MAP_ENDPOINTS: &str = "weft_endpoints";
pub const MAP_LXC: &str = "weft_lxc";
pub const MAP_CONFIG: &str = "weft_config";
pub const MAP_EVENTS: &str = "weft_events";
pub const MAP_IPCACHE: &str = "weft_ipcache";
pub const MAP_CALLS: &str = "weft_calls";
pub const MAP_STATE: &str = "weft_state";
pub const MAP_DROPS: &str = "weft_drops";
pub const MAP_CT_TCP: &str = "weft_ct_tcp";
pub const MAP_CT_ANY: &str = "weft_ct_any";
pub const MAP_CT_COUNT: &str = "weft_ct_count";
pub const MAP_FRAGS: &str = "weft_frags";

pub const MAP_POLICY: &str = "weft_policy";
pub const MAP_POLICY_EP: &str = "weft_policy_ep";
pub const MAP_IDENTITY: &str = "weft_identity";
pub const MAP_POLICY_CIDR: &str = "weft_policy_cidr";
pub const MAP_LB_SERVICES: &str = "weft_lb_services";
pub const MAP_LB_BACKENDS: &str = "weft_lb_backends";
pub const MAP_LB_REVNAT: &str = "weft_lb_revnat";
pub const MAP_LB_SOCK_REVNAT: &str = "weft_lb_sock_revnat";
pub const MAP_LB_AFFINITY: &str = "weft_lb_affinity";
pub const MAP_NAT: &str = "weft_nat";
pub const MAP_LB_MAGLEV: &str = "weft_lb_maglev";
/// Per-CPU scratch where lib/lb.h builds a CT_SERVICE entry (off the stack).
pub const MAP_LB_SCRATCH: &str = "weft_lb_scratch";

/// `LB_F_*`: flags of a service frontend (`bpf/lib/lb.h`).
pub const LB_F_NODEPORT: u8 = 0x1;
pub const LB_F_AFFINITY: u8 = 0x2;
pub const LB_F_LOCAL: u8 = 0x4;
pub const LB_F_SNAT: u8 = 0x8;
pub const LB_F_MAGLEV: u8 = 0x10;

/// `LB_MAGLEV_SIZE`: slots of a frontend's Maglev table (a prime).
pub const LB_MAGLEV_SIZE: usize = 1021;

/// Every map the datapath pins (the layout test checks that the C headers
/// declare exactly these).
pub const ALL_MAPS: [&str; 24] = [
    MAP_ENDPOINTS,
    MAP_LXC,
    MAP_CONFIG,
    MAP_EVENTS,
    MAP_IPCACHE,
    MAP_CALLS,
    MAP_STATE,
    MAP_DROPS,
    MAP_CT_TCP,
    MAP_CT_ANY,
    MAP_CT_COUNT,
    MAP_FRAGS,
    MAP_POLICY,
    MAP_POLICY_EP,
    MAP_IDENTITY,
    MAP_POLICY_CIDR,
    MAP_LB_SERVICES,
    MAP_LB_BACKENDS,
    MAP_LB_REVNAT,
    MAP_LB_SOCK_REVNAT,
    MAP_LB_AFFINITY,
    MAP_NAT,
    MAP_LB_MAGLEV,
    MAP_LB_SCRATCH,
];

/// Policy directions, peer kinds, actions and flags (`bpf/lib/policy.h`).
pub const POLICY_INGRESS: u8 = 0;
pub const POLICY_EGRESS: u8 = 1;
pub const PEER_ANY: u8 = 0;
pub const PEER_NAMESPACE: u8 = 1;
pub const PEER_IDENTITY: u8 = 2;
pub const POLICY_ALLOW: u8 = 1;
pub const POLICY_DENY: u8 = 2;
pub const POLICY_F_LOG: u8 = 0x1;
/// Key bits every policy entry matches in full; then protocol and port.
pub const POLICY_STATIC_BITS: u32 = 104;
pub const POLICY_FULL_BITS: u32 = 128;

/// Tail-call slots of `weft_calls` (`CALL_*` in `bpf/lib/pipeline.h`).
pub const CALL_IPV4_FROM_LXC: u32 = 0;
pub const CALL_IPV4_TO_ENDPOINT: u32 = 1;

/// Conntrack scopes (`CT_EGRESS` / `CT_INGRESS` in `bpf/lib/conntrack.h`).
pub const CT_EGRESS: u8 = 0;
pub const CT_INGRESS: u8 = 1;
/// A client's flow to a service address: the backend it was given.
pub const CT_SERVICE: u8 = 2;

/// What a conntrack lookup found; the state of trace events (0: untracked).
pub const CT_NEW: u8 = 1;
pub const CT_ESTABLISHED: u8 = 2;
pub const CT_REPLY: u8 = 3;
pub const CT_RELATED: u8 = 4;

/// `CT_F_*`: flags of a conntrack entry.
pub const CT_F_SEEN_REPLY: u16 = 0x1;
pub const CT_F_TX_CLOSING: u16 = 0x2;
pub const CT_F_RX_CLOSING: u16 = 0x4;

/// Default lifetimes in seconds (`CT_LIFETIME_*`).
pub const CT_LIFETIME_TCP: u32 = 21600;
pub const CT_LIFETIME_SYN: u32 = 60;
pub const CT_LIFETIME_CLOSE: u32 = 10;
pub const CT_LIFETIME_ANY: u32 = 60;

/// Slots of `weft_ct_count` (`CT_COUNT_*`).
pub const CT_COUNT_TCP_CREATED: u32 = 0;
pub const CT_COUNT_TCP_BASE: u32 = 1;
pub const CT_COUNT_ANY_CREATED: u32 = 2;
pub const CT_COUNT_ANY_BASE: u32 = 3;

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
/// `CFG_F_MASQUERADE`: pods' traffic leaving the cluster leaves as the node.
pub const CFG_F_MASQUERADE: u32 = 0x4;
/// `CFG_F_HOST_BACKENDS`: a NodePort of this node has the node's host (a
/// hostNetwork pod) as a backend: to-network looks up the host's replies.
pub const CFG_F_HOST_BACKENDS: u32 = 0x8;

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
    pub ct_tcp_limit: u32,
    pub ct_any_limit: u32,
    pub ct_lifetime_tcp: u32,
    pub ct_lifetime_syn: u32,
    pub ct_lifetime_close: u32,
    pub ct_lifetime_any: u32,
    pub nodeport_min: u16,
    pub nodeport_max: u16,
    pub snat_port_min: u16,
    pub snat_port_max: u16,
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

/// Key of `weft_ct_tcp` / `weft_ct_any`: a flow as first seen, and where.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    /// Network byte order, like the addresses.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub scope: u8,
    pub pad: u16,
}

/// Value of the conntrack maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// CLOCK_MONOTONIC seconds.
    pub expires: u32,
    pub created: u32,
    pub peer_id: u32,
    pub ep_id: u16,
    pub flags: u16,
    pub rev_nat_id: u16,
    pub backend_slot: u16,
    pub backend_id: u32,
}

/// `NAT_OUT` / `NAT_IN`: the two entries of a translated flow (`bpf/lib/nat.h`).
pub const NAT_OUT: u8 = 0;
pub const NAT_IN: u8 = 1;

/// Key of `weft_nat`: a flow's tuple as it leaves (NAT_OUT) or as its
/// reply arrives (NAT_IN). Addresses and ports in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
    pub pad: u16,
}

/// Value of `weft_nat`: the address and port the flow leaves as (NAT_OUT)
/// or came from (NAT_IN).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatEntry {
    pub addr: u32,
    pub port: u16,
    pub rev_nat_id: u16,
    pub created: u32,
    /// CLOCK_MONOTONIC seconds.
    pub expires: u32,
    pub flags: u16,
    pub pad: u16,
}

/// Key of `weft_policy` (an LPM trie): see `bpf/lib/policy.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub prefixlen: u32,
    pub ep_id: u16,
    pub direction: u8,
    pub peer_kind: u8,
    pub peer: u32,
    pub cidr_class: u32,
    pub pad: u8,
    pub proto: u8,
    /// Network byte order.
    pub dport: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyEntry {
    pub action: u8,
    pub flags: u8,
    /// The key's prefix length (a lookup does not tell which one hit).
    pub prefixlen: u16,
    pub rule: u32,
}

/// Value of `weft_policy_ep`: which directions of an endpoint enforce.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyEndpoint {
    pub ingress: u8,
    pub egress: u8,
    pub pad: u16,
    pub revision: u32,
}

/// Value of `weft_identity`: an identity's namespace (0: not a pod).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityInfo {
    pub namespace_id: u16,
    pub pad: u16,
}

/// Key of `weft_policy_cidr` (LPM trie), value: the CIDR class.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyCidrKey {
    pub prefixlen: u32,
    pub ip4: u32,
}

/// Key of `weft_lb_services`: a frontend, and which of its slots.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbKey {
    pub address: u32,
    /// Network byte order.
    pub port: u16,
    pub slot: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// Value of `weft_lb_services`: the frontend (slot 0) or one backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbFrontend {
    pub backend_id: u32,
    pub count: u16,
    pub rev_nat_id: u16,
    pub affinity_timeout: u32,
    pub flags: u8,
    pub pad: [u8; 3],
}

/// Value of `weft_lb_backends`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbBackend {
    pub address: u32,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub flags: u8,
}

/// Value of `weft_lb_revnat` and `weft_lb_sock_revnat`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbRevnat {
    pub address: u32,
    pub port: u16,
    pub pad: u16,
}

/// Key of `weft_lb_affinity`: a client and a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbAffinityKey {
    pub client: u32,
    pub rev_nat_id: u16,
    pub pad: u16,
}

/// Value of `weft_lb_affinity`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbAffinity {
    pub backend_id: u32,
    pub last_used: u32,
}

/// Value of `weft_lb_maglev`: a frontend's Maglev table of backend ids.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbMaglev {
    pub backend_ids: [u32; LB_MAGLEV_SIZE],
}

/// Key of `weft_lb_sock_revnat`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRevnatKey {
    pub cookie: u64,
    pub address: u32,
    pub port: u16,
    pub pad: u16,
}

/// The per-CPU record stages hand on (`struct pipeline_state`); never read
/// by the agent, mirrored so the layout test covers it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PipelineState {
    pub src_id: u32,
    pub dst_id: u32,
    pub src_ep: u16,
    pub dst_ep: u16,
    pub hook: u8,
    pub ct_state: u8,
    pub rev_nat_id: u16,
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
unsafe impl aya::Pod for CtKey {}
unsafe impl aya::Pod for CtEntry {}
unsafe impl aya::Pod for NatKey {}
unsafe impl aya::Pod for NatEntry {}
unsafe impl aya::Pod for PolicyKey {}
unsafe impl aya::Pod for PolicyEntry {}
unsafe impl aya::Pod for PolicyEndpoint {}
unsafe impl aya::Pod for IdentityInfo {}
unsafe impl aya::Pod for PolicyCidrKey {}
unsafe impl aya::Pod for LbKey {}
unsafe impl aya::Pod for LbFrontend {}
unsafe impl aya::Pod for LbBackend {}
unsafe impl aya::Pod for LbRevnat {}
unsafe impl aya::Pod for SockRevnatKey {}
unsafe impl aya::Pod for LbAffinityKey {}
unsafe impl aya::Pod for LbAffinity {}
unsafe impl aya::Pod for LbMaglev {}
