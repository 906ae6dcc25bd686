//! Events from the datapath's ring buffer, decoded into what `weft monitor`
//! prints. The numbers mirror `bpf/lib/{events,trace,drop,dbg}.h`.

use crate::{dissect, maps::WeftEvent};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

pub const EVENT_DROP: u8 = 1;
pub const EVENT_DEBUG: u8 = 2;
pub const EVENT_CAPTURE: u8 = 3;
pub const EVENT_TRACE: u8 = 4;
pub const EVENT_POLICY_VERDICT: u8 = 5;
pub const EVENT_TRACE_SOCK: u8 = 6;

/// What a socket LB event saw (`SOCK_EV_*` in bpf/sock.c).
pub const SOCK_EVENTS: [&str; 5] = ["connect", "sendmsg", "recvmsg", "getpeername", "reject"];

/// Match kinds of a policy verdict (`POLICY_MATCH_*`), in Cilium's words.
pub const POLICY_MATCHES: [&str; 5] = ["none", "L3-Only", "L3-L4", "L4-Only", "all"];

/// A policy decision on the first packet of a flow.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyVerdict {
    /// "ingress" or "egress".
    pub direction: String,
    /// "allow" or "deny".
    pub action: String,
    /// L3-Only, L3-L4, L4-Only, all, or none (denied: nothing matched).
    #[serde(rename = "match")]
    pub match_kind: String,
    pub proto: u8,
    /// The agent's id of the rule that decided (0: none).
    pub rule: u32,
    /// A Calico Log rule matched on the way.
    pub log: bool,
}

/// Observation point names, indexed by number (as Cilium's `trace_point`).
pub const OBS_POINTS: [&str; 12] = [
    "to-endpoint",
    "to-proxy",
    "to-host",
    "to-stack",
    "to-overlay",
    "from-endpoint",
    "from-proxy",
    "from-host",
    "from-stack",
    "from-overlay",
    "from-network",
    "to-network",
];

/// `DROP_CT_CREATE_FAILED`: a new flow refused by a full conntrack table.
pub const DROP_CT_CREATE_FAILED: u8 = 155;
/// `DROP_NAT_NO_PORT` / `DROP_NAT_TABLE_FULL`: a flow SNAT could not translate.
pub const DROP_NAT_NO_PORT: u8 = 233;
pub const DROP_NAT_TABLE_FULL: u8 = 234;

/// Text of a drop reason; the numbers are those of `bpf/lib/drop.h`
/// (Cilium's where it has the same reason, weft's own from 230).
pub fn drop_reason_text(reason: u8) -> &'static str {
    match reason {
        130 => "Invalid source mac",
        132 => "Invalid source ip",
        133 => "Policy denied",
        134 => "Invalid packet",
        135 => "CT: Truncated or invalid header",
        136 => "Fragmentation needed",
        139 => "Unsupported L3 protocol",
        140 => "Missed tail call",
        141 => "Error writing to packet",
        147 => "Error retrieving tunnel key",
        155 => "CT: Map insertion failed",
        158 => "Service backend not found",
        160 => "No tunnel/encapsulation endpoint (datapath BUG!)",
        166 => "Unsupported L2 protocol",
        169 => "FIB lookup failed",
        171 => "Invalid identity",
        172 => "Unknown sender",
        175 => "First logical datagram fragment not found",
        196 => "TTL exceeded",
        230 => "No endpoint for device",
        231 => "No local endpoint for decapsulated packet",
        232 => "Pipeline state missing",
        233 => "NAT: no free port towards the destination",
        234 => "NAT: table full",
        235 => "NAT: unsupported protocol",
        236 => "ICMP error about no flow of the pod",
        _ => "Unknown reason",
    }
}

/// Source files that decide drops, by the ids of `WEFT_SOURCE_ID` in
/// `bpf/lib/drop.h` (index = id).
pub const SOURCE_FILES: [&str; 14] = [
    "unknown",
    "lxc.c",
    "host.c",
    "overlay.c",
    "netdev.c",
    "local.h",
    "encap.h",
    "conntrack.h",
    "policy.h",
    "pipeline.h",
    "arp.h",
    "icmp.h",
    "lb.h",
    "nat.h",
];

/// Source file of a drop.
pub fn file_name(id: u8) -> &'static str {
    SOURCE_FILES.get(id as usize).copied().unwrap_or("unknown")
}

/// Text of a trace's connection state (`CT_*`, 0: untracked).
pub fn ct_state_text(state: u8) -> &'static str {
    match state {
        0 => "untracked",
        1 => "new",
        2 => "established",
        3 => "reply",
        4 => "related",
        _ => "unknown",
    }
}

/// A socket LB event as words: what happened, service and backend.
fn sock_text(e: &WeftEvent) -> String {
    let kind = SOCK_EVENTS.get(e.subtype as usize).copied().unwrap_or("unknown");
    let proto = proto_name(e.arg3);
    let (svc_port, be_port) = (e.arg2 >> 16, e.arg2 & 0xffff);
    match e.subtype {
        0 | 1 => format!(
            "{kind} {}:{svc_port}/{proto} -> {}:{be_port} (service to backend)",
            ip(e.orig_ip),
            ip(e.arg1)
        ),
        2 | 3 => format!(
            "{kind} {}:{be_port}/{proto} -> {}:{svc_port} (backend read as the service)",
            ip(e.arg1),
            ip(e.orig_ip)
        ),
        _ => format!("{kind} {}:{svc_port}/{proto}: the service has no backend", ip(e.orig_ip)),
    }
}

/// An IP protocol number as the monitor prints it.
fn proto_name(p: u32) -> String {
    match p {
        1 => "icmp".to_string(),
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        132 => "sctp".to_string(),
        n => n.to_string(),
    }
}

fn ip(v: u32) -> Ipv4Addr {
    crate::maps::be_to_ip(v)
}

/// Text of a debug message (`DBG_*` in `bpf/lib/dbg.h`).
pub fn debug_text(code: u8, a1: u32, a2: u32, a3: u32) -> String {
    match code {
        1 => format!("Successfully mapped addr={} to identity={a2}", ip(a1)),
        2 => format!("Failed to map addr={} to identity", ip(a1)),
        3 => format!("Attempting local delivery for container id {a3} from seclabel {a2} (ifindex {a1})"),
        4 => format!("ARP reply for {} sent (ifindex {a2})", ip(a1)),
        5 => format!("Destination {} is the host: to stack", ip(a1)),
        6 => format!("Destination {} is not local: to stack", ip(a1)),
        7 => {
            let node = u32::from(ip(a1));
            format!("Encapsulating to node {node} ({node:#x}) from seclabel {a2}")
        }
        8 => format!("Decapsulated from node {} with seclabel {a2}", ip(a1)),
        9 => format!("Routing to node {} from seclabel {a2}", ip(a1)),
        10 => format!("Packet does not fit the path MTU {a1}: fragmentation needed"),
        11 => format!("Conntrack lookup 1/2: src={}:{} dst={}:{}", ip(a1), a3 >> 16, ip(a2), a3 & 0xffff),
        12 => format!("Conntrack lookup 2/2: nexthdr={a1} flags={a2}"),
        13 => {
            let verdict = match a1 {
                1 => "New",
                2 => "Established",
                3 => "Reply",
                4 => "Related",
                _ => "Untracked",
            };
            format!("CT verdict: {verdict}, revnat=0")
        }
        14 => format!("Conntrack create: proxy-port=0 revnat=0 src-identity={a1} lb=0.0.0.0"),
        15 => format!("CT entry found lifetime={a1}, revnat=0"),
        16 => format!("Service lookup {}:{}/{}: {a3} backend slots", ip(a1), a2 >> 16, proto_name(a2 & 0xff)),
        17 => format!("Service backend {}:{a2} chosen", ip(a1)),
        18 => format!("Reverse NAT to the service {}:{a2} (revnat {a3})", ip(a1)),
        19 => format!("SNAT {}:{} -> {}:{}", ip(a1), a3 >> 16, ip(a2), a3 & 0xffff),
        20 => format!("Reverse SNAT {}:{} -> {}:{}", ip(a1), a3 >> 16, ip(a2), a3 & 0xffff),
        _ => format!("Unknown message {code} args {a1:#x} {a2:#x} {a3:#x}"),
    }
}

/// One decoded event, as sent from the agent to `weft monitor` (and printed
/// as-is by `weft monitor -j`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MonitorEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "observationPoint", skip_serializing_if = "Option::is_none")]
    pub observation_point: Option<String>,
    /// Endpoint the event is about (0: the host).
    pub source: u16,
    #[serde(rename = "dstID")]
    pub dst_endpoint: u16,
    pub flow: u32,
    pub ifindex: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(rename = "srcLabel")]
    pub src_identity: u32,
    #[serde(rename = "dstLabel")]
    pub dst_identity: u32,
    pub state: String,
    #[serde(rename = "origIP")]
    pub orig_ip: Ipv4Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<u8>,
    #[serde(rename = "reasonText", skip_serializing_if = "Option::is_none")]
    pub reason_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub policy: Option<PolicyVerdict>,
    pub bytes: u32,
    pub summary: String,
    /// Captured packet head, hex encoded (for --pcap and --hex).
    pub data: String,
    pub ktime: u64,
}

impl MonitorEvent {
    pub fn decode(e: &WeftEvent) -> Self {
        let kind = match e.kind {
            EVENT_DROP => "drop",
            EVENT_DEBUG => "debug",
            EVENT_CAPTURE => "capture",
            EVENT_TRACE => "trace",
            EVENT_POLICY_VERDICT => "policy-verdict",
            EVENT_TRACE_SOCK => "trace-sock",
            _ => "unknown",
        };
        let mut ev = MonitorEvent {
            kind: kind.into(),
            observation_point: None,
            source: e.source,
            dst_endpoint: e.dst_ep,
            flow: e.hash,
            ifindex: e.ifindex,
            ifname: None,
            src_identity: e.src_identity,
            dst_identity: e.dst_identity,
            state: ct_state_text(e.reason).into(),
            orig_ip: ip(e.orig_ip),
            reason: None,
            reason_text: None,
            file: None,
            line: None,
            message: None,
            policy: None,
            bytes: e.orig_len,
            summary: dissect::summary(e.captured()),
            data: hex(e.captured()),
            ktime: e.ktime,
        };
        match e.kind {
            EVENT_TRACE => {
                ev.observation_point = OBS_POINTS.get(e.subtype as usize).map(|s| s.to_string());
            }
            EVENT_DROP => {
                ev.reason = Some(e.subtype);
                ev.reason_text = Some(drop_reason_text(e.subtype).into());
                ev.file = Some(file_name(e.file).into());
                ev.line = Some(e.line);
            }
            EVENT_DEBUG => {
                ev.message = Some(debug_text(e.subtype, e.arg1, e.arg2, e.arg3));
            }
            EVENT_TRACE_SOCK => {
                ev.message = Some(sock_text(e));
            }
            EVENT_POLICY_VERDICT => {
                ev.policy = Some(PolicyVerdict {
                    direction: if (e.arg1 >> 8) & 0xff == 0 { "ingress" } else { "egress" }.into(),
                    action: if e.arg1 & 0xff == 1 { "allow" } else { "deny" }.into(),
                    match_kind: POLICY_MATCHES.get(e.subtype as usize).unwrap_or(&"none").to_string(),
                    proto: e.arg2 as u8,
                    rule: e.arg3,
                    log: (e.arg1 >> 16) & 1 != 0,
                });
            }
            _ => {}
        }
        ev
    }

    /// The captured bytes, decoded back from hex.
    pub fn packet(&self) -> Vec<u8> {
        (0..self.data.len() / 2)
            .filter_map(|i| u8::from_str_radix(&self.data[2 * i..2 * i + 2], 16).ok())
            .collect()
    }

    fn ifname_or_index(&self) -> String {
        self.ifname.clone().unwrap_or_else(|| self.ifindex.to_string())
    }

    /// The event as one line, in the form of `cilium monitor`.
    pub fn line(&self) -> String {
        match self.kind.as_str() {
            "trace" => {
                let point = self.observation_point.as_deref().unwrap_or("unknown");
                let prefix = trace_prefix(point, self.dst_endpoint, self.source);
                format!(
                    "{prefix} flow {:#x} , identity {}->{} state {} ifindex {} orig-ip {}: {}",
                    self.flow,
                    self.src_identity,
                    self.dst_identity,
                    self.state,
                    self.ifname_or_index(),
                    self.orig_ip,
                    self.summary
                )
            }
            "drop" => format!(
                "xx drop ({}) flow {:#x} to endpoint {}, ifindex {}, file {}:{}, identity {}->{}: {}",
                self.reason_text.as_deref().unwrap_or("?"),
                self.flow,
                self.dst_endpoint,
                self.ifindex,
                self.file.as_deref().unwrap_or("?"),
                self.line.unwrap_or(0),
                self.src_identity,
                self.dst_identity,
                self.summary
            ),
            "debug" => format!(
                "CPU 00: MARK {:#x} FROM {} DEBUG: {}",
                self.flow,
                self.source,
                self.message.as_deref().unwrap_or("")
            ),
            "capture" => format!("-> {}: {}", self.ifname_or_index(), self.summary),
            "trace-sock" => {
                format!("[sock] cookie {:#x} {}", self.flow, self.message.as_deref().unwrap_or(""))
            }
            "policy-verdict" => {
                let p = self.policy.as_ref();
                format!(
                    "Policy verdict log: flow {:#x} local EP ID {}, remote ID {}, proto {}, {}, action {}, match {}, {}",
                    self.flow,
                    self.source,
                    self.src_identity,
                    p.map_or(0, |p| p.proto),
                    p.map_or("?", |p| p.direction.as_str()),
                    p.map_or("?", |p| p.action.as_str()),
                    p.map_or("?", |p| p.match_kind.as_str()),
                    self.summary
                )
            }
            other => format!("{other} event from {}", self.source),
        }
    }

    /// Whether the event concerns endpoint `ep` (as source or destination).
    pub fn related_to(&self, ep: u16) -> bool {
        self.source == ep || self.dst_endpoint == ep
    }
}

fn trace_prefix(point: &str, dst_ep: u16, source: u16) -> String {
    match point {
        "to-endpoint" => format!("-> endpoint {dst_ep}"),
        "from-endpoint" => format!("<- endpoint {source}"),
        "to-host" => "-> host".into(),
        "from-host" => "<- host".into(),
        "to-stack" => "-> stack".into(),
        "from-stack" => "<- stack".into(),
        "to-overlay" => "-> overlay".into(),
        "from-overlay" => "<- overlay".into(),
        "to-network" => "-> network".into(),
        "from-network" => "<- network".into(),
        other => other.to_string(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: u8, subtype: u8) -> WeftEvent {
        WeftEvent {
            kind,
            subtype,
            source: 7,
            hash: 0xabc,
            ifindex: 3,
            src_identity: 256,
            dst_identity: 257,
            dst_ep: 9,
            reason: 0,
            file: 1,
            line: 42,
            cap_len: 0,
            orig_len: 98,
            arg1: u32::from_ne_bytes([10, 0, 0, 1]),
            arg2: 300,
            arg3: 9,
            orig_ip: 0,
            ktime: 1,
            data: [0; 128],
        }
    }

    #[test]
    fn drop_line_names_reason_and_place() {
        let ev = MonitorEvent::decode(&raw(EVENT_DROP, 132));
        let line = ev.line();
        assert!(line.starts_with("xx drop (Invalid source ip) flow 0xabc"), "{line}");
        assert!(line.contains("file lxc.c:42"), "{line}");
        assert!(line.contains("identity 256->257"), "{line}");
    }

    #[test]
    fn trace_prefixes_follow_cilium() {
        let ev = MonitorEvent::decode(&raw(EVENT_TRACE, 0));
        assert!(ev.line().starts_with("-> endpoint 9 flow 0xabc , identity 256->257"));
        let ev = MonitorEvent::decode(&raw(EVENT_TRACE, 5));
        assert!(ev.line().starts_with("<- endpoint 7 "));
        assert!(ev.related_to(7) && ev.related_to(9) && !ev.related_to(8));
    }

    #[test]
    fn policy_verdicts_read_like_ciliums() {
        let mut e = raw(EVENT_POLICY_VERDICT, 1);
        e.arg1 = 1; // allow, ingress
        e.arg2 = 6;
        e.arg3 = 7;
        let ev = MonitorEvent::decode(&e);
        assert!(
            ev.line().starts_with(
                "Policy verdict log: flow 0xabc local EP ID 7, remote ID 256, proto 6, ingress, action allow, match L3-Only"
            ),
            "{}",
            ev.line()
        );
        e.arg1 = 2 | 1 << 8;
        e.subtype = 0;
        let p = MonitorEvent::decode(&e).policy.unwrap();
        assert_eq!(
            (p.direction.as_str(), p.action.as_str(), p.match_kind.as_str()),
            ("egress", "deny", "none")
        );
    }

    #[test]
    fn debug_text_maps_identity() {
        let ev = MonitorEvent::decode(&raw(EVENT_DEBUG, 1));
        assert_eq!(ev.message.as_deref(), Some("Successfully mapped addr=10.0.0.1 to identity=300"));
    }

    #[test]
    fn hex_round_trips() {
        let mut e = raw(EVENT_TRACE, 0);
        e.cap_len = 3;
        e.data[..3].copy_from_slice(&[1, 0xab, 0xff]);
        assert_eq!(MonitorEvent::decode(&e).packet(), vec![1, 0xab, 0xff]);
    }
}
