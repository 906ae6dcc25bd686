//! SNAT from the agent's side (`bpf/lib/nat.h` does the translating):
//! whether pods' traffic leaving the cluster is masqueraded, which source
//! ports SNAT may give out, the table's size, its garbage collection (with
//! conntrack's, crates/agent/src/conntrack.rs) and `weft bpf nat list`.
//!
//! The port range must stay clear of the node port range (a reply to a
//! NodePort and a reply to a translated flow would be the same packet) and
//! of the node's own ephemeral ports (`net.ipv4.ip_local_port_range`: the
//! node's own connections use those from the same address). The agent
//! refuses to start with a range that overlaps either, rather than have
//! replies go to the wrong flow now and then.

use crate::state::Agent;
use weft_api::{ApiError, NatView, code};
use weft_datapath::{
    conntrack::now,
    maps::{CFG_F_MASQUERADE, CT_F_RX_CLOSING, CT_F_SEEN_REPLY, CT_F_TX_CLOSING, WeftConfig, be_to_ip},
    nat::{Nat, NatFlow},
};

/// Source ports SNAT gives out, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// Below the node port range (30000-32767) and Linux's default ephemeral
/// range (32768-60999): the node's own connections never come from these
/// ports, and a node service listening on one of them is not disturbed (a
/// reply is matched on the remote address and port too). 28,976 ports per
/// destination (61000-65535, the other free stretch, has 4,536).
pub const DEFAULT_PORTS: PortRange = PortRange { first: 1024, last: 29999 };

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("port range {s:?}: write FIRST-LAST, e.g. 61000-65535 (1024 <= FIRST <= LAST)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first < 1024 || first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl PortRange {
    pub fn overlaps(&self, first: u16, last: u16) -> bool {
        self.first <= last && first <= self.last
    }
}

/// `--masquerade`, `--snat-ports`, `--nat-max`.
#[derive(Clone, Debug, PartialEq)]
pub struct NatConfig {
    /// Pods' traffic to addresses outside the cluster leaves as the node.
    pub masquerade: bool,
    pub ports: PortRange,
    /// Entries of the table (two per flow) when it is created.
    pub max: Option<u32>,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig { masquerade: true, ports: DEFAULT_PORTS, max: None }
    }
}

/// The node's ephemeral port range (of the namespace the agent runs in).
fn local_port_range() -> Option<(u16, u16)> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut w = s.split_whitespace().map(|v| v.parse::<u16>().ok());
    Some((w.next()??, w.next()??))
}

/// Refuses a port range the node's own traffic or NodePorts could use.
pub fn check_ports(ports: PortRange, nodeports: (u16, u16), local: Option<(u16, u16)>) -> Result<(), String> {
    if ports.overlaps(nodeports.0, nodeports.1) {
        return Err(format!(
            "--snat-ports {ports} overlaps the node port range {}-{}: a reply to a NodePort and to a \
             translated flow could not be told apart; pick ports outside it (default {DEFAULT_PORTS})",
            nodeports.0, nodeports.1
        ));
    }
    if let Some((a, b)) = local
        && ports.overlaps(a, b)
    {
        return Err(format!(
            "--snat-ports {ports} overlaps the node's ephemeral ports {a}-{b} (net.ipv4.ip_local_port_range): \
             replies to the node's own connections could reach pods; pick ports outside it or narrow \
             ip_local_port_range"
        ));
    }
    Ok(())
}

/// The NAT part of the datapath's configuration.
pub fn datapath_config(agent: &Agent, flags: u32) -> Result<WeftConfig, String> {
    let c = &agent.cfg.nat;
    let nodeports = weft_service::NodePortRange::default();
    check_ports(c.ports, (nodeports.first(), nodeports.last()), local_port_range())?;
    let flags = if c.masquerade { flags | CFG_F_MASQUERADE } else { flags & !CFG_F_MASQUERADE };
    Ok(WeftConfig {
        flags,
        snat_port_min: c.ports.first,
        snat_port_max: c.ports.last,
        ..WeftConfig::default()
    })
}

/// One GC pass over the table (the conntrack GC thread runs it).
pub fn gc(nat: &Nat) -> Result<weft_datapath::conntrack::GcPass, String> {
    nat.gc(now()).map_err(|e| e.to_string())
}

fn api_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(code::DATAPATH, "reading the NAT map failed", e.to_string())
}

/// A translated flow as `weft bpf nat list` shows it.
pub fn view(f: &NatFlow, now: u32) -> NatView {
    let port = |p: u16| u16::from_be(p);
    let state = if f.out.proto != 6 {
        "active"
    } else if f.to.flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING) != 0 {
        "closing"
    } else if f.to.flags & CT_F_SEEN_REPLY != 0 {
        "established"
    } else {
        "syn-sent"
    };
    NatView {
        kind: if f.rev_nat_id != 0 { "nodeport" } else { "masquerade" }.into(),
        proto: weft_api::proto_name(f.out.proto),
        src: format!("{}:{}", be_to_ip(f.out.saddr), port(f.out.sport)),
        dst: format!("{}:{}", be_to_ip(f.out.daddr), port(f.out.dport)),
        translated: format!("{}:{}", be_to_ip(f.to.addr), port(f.to.port)),
        state: state.into(),
        expires_in: f.to.expires as i64 - now as i64,
        rev_nat_id: f.rev_nat_id,
        reply_entry: f.has_reply_entry,
    }
}

/// `weft bpf nat list`: every translated flow.
pub fn list(agent: &Agent) -> Result<Vec<NatView>, ApiError> {
    let nat = Nat::open(&agent.cfg.bpffs).map_err(api_err)?;
    let t = now();
    Ok(nat.flows().map_err(api_err)?.iter().map(|f| view(f, t)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse_and_refuse_what_the_node_uses() {
        assert_eq!("1024-29999".parse::<PortRange>(), Ok(DEFAULT_PORTS));
        for bad in ["", "61000", "65535-61000", "80-90", "1-x"] {
            let e = bad.parse::<PortRange>().unwrap_err();
            assert!(e.contains("FIRST-LAST"), "{bad}: {e}");
        }
        let nodeports = (30000, 32767);
        assert!(check_ports(DEFAULT_PORTS, nodeports, Some((32768, 60999))).is_ok());
        let e = check_ports("32000-33000".parse().unwrap(), nodeports, None).unwrap_err();
        assert!(e.contains("node port range 30000-32767"), "{e}");
        let e = check_ports("40000-41000".parse().unwrap(), nodeports, Some((32768, 60999))).unwrap_err();
        assert!(e.contains("ephemeral ports 32768-60999"), "{e}");
    }
}
