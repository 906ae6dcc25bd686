//! Conntrack from the agent's side: how big the tables are, when the
//! garbage collector runs, and what `weft status` and `weft bpf ct` see.
//!
//! The datapath creates entries and keeps them fresh; only this thread
//! deletes expired ones. Its interval adapts to what each pass finds, as
//! Cilium's grew to after years of "CT map full" reports: a pass that frees
//! a large share of the table halves the interval, one that frees little
//! stretches it, and a table close to its limit is swept at the shortest
//! interval. The maps are pinned and never flushed by the agent: flows
//! outlive agent restarts.

use crate::{config::AgentConfig, state::Agent};
use serde::{Deserialize, Serialize};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use weft_api::{ApiError, CtFlushResult, CtView, code};
use weft_datapath::{
    conntrack::{Conntrack, GcPass, Table, now},
    loader::LoadOptions,
    maps::{
        CT_EGRESS, CT_F_RX_CLOSING, CT_F_SEEN_REPLY, CT_F_TX_CLOSING, CT_SERVICE, CtEntry, CtKey, WeftConfig,
        be_to_ip,
    },
    nat::Nat,
};

/// Bounds of the GC interval, and where it starts.
pub const GC_MIN: Duration = Duration::from_secs(10);
pub const GC_MAX: Duration = Duration::from_secs(300);
pub const GC_START: Duration = Duration::from_secs(60);

/// How the datapath is loaded: attach mode and conntrack sizes.
pub fn load_options(cfg: &AgentConfig) -> LoadOptions {
    let defaults = LoadOptions::default();
    LoadOptions {
        tc_mode: cfg.tc_mode,
        ct_tcp_max: cfg.conntrack.tcp_max.unwrap_or(defaults.ct_tcp_max),
        ct_any_max: cfg.conntrack.any_max.unwrap_or(defaults.ct_any_max),
        nat_max: cfg.nat.max.unwrap_or(defaults.nat_max),
        lb_max: cfg.lb_max.unwrap_or(defaults.lb_max),
    }
}

/// Flows admitted into a table of `capacity` entries: an eighth is kept
/// free so the LRU never has to evict an established flow to make room.
pub fn admission_limit(capacity: u32) -> u32 {
    capacity - capacity / 8
}

/// The conntrack part of the datapath's configuration: admission limits
/// from the maps' real sizes, lifetimes from the flags.
pub fn datapath_config(agent: &Agent) -> Result<WeftConfig, String> {
    let ct = Conntrack::open(&agent.cfg.bpffs).map_err(|e| e.to_string())?;
    let c = &agent.cfg.conntrack;
    Ok(WeftConfig {
        ct_tcp_limit: admission_limit(ct.capacity(Table::Tcp).map_err(|e| e.to_string())?),
        ct_any_limit: admission_limit(ct.capacity(Table::Any).map_err(|e| e.to_string())?),
        ct_lifetime_tcp: c.lifetime_tcp,
        ct_lifetime_syn: c.lifetime_syn,
        ct_lifetime_close: c.lifetime_close,
        ct_lifetime_any: c.lifetime_any,
        ..WeftConfig::default()
    })
}

/// The next interval after a pass that deleted `deleted` of `capacity`
/// entries and left `live`.
pub fn next_interval(current: Duration, deleted: u64, live: u64, capacity: u64) -> Duration {
    let capacity = capacity.max(1);
    let next = if live * 10 >= admission_limit(capacity as u32) as u64 * 9 {
        GC_MIN
    } else if deleted * 4 >= capacity {
        current / 2
    } else if deleted * 20 < capacity {
        current * 3 / 2
    } else {
        current
    };
    next.clamp(GC_MIN, GC_MAX)
}

/// What the last pass found, for `weft status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CtStatus {
    pub tcp_live: u64,
    pub tcp_limit: u64,
    pub any_live: u64,
    pub any_limit: u64,
    pub last_deleted: u64,
    pub passes: u64,
    pub interval_secs: u64,
    /// SNAT table entries (two per flow) and its size (crates/agent/src/nat.rs).
    #[serde(default)]
    pub nat_live: u64,
    #[serde(default)]
    pub nat_capacity: u64,
}

impl CtStatus {
    /// A warning when a table is (nearly) full: new flows are then refused.
    pub fn warning(&self, refused: u64) -> Option<String> {
        let near = |live: u64, limit: u64| limit > 0 && live * 10 >= limit * 9;
        if refused > 0 || near(self.tcp_live, self.tcp_limit) || near(self.any_live, self.any_limit) {
            return Some(format!(
                "conntrack is full or nearly: TCP {}/{}, other {}/{} flows; {refused} new flows refused \
                 (\"CT: Map insertion failed\"). Raise --ct-tcp-max/--ct-any-max or shorten the lifetimes.",
                self.tcp_live, self.tcp_limit, self.any_live, self.any_limit
            ));
        }
        None
    }

    /// A warning when the SNAT table is nearly full or refused flows
    /// (`refused`: drops "NAT: table full" and "NAT: no free port").
    pub fn nat_warning(&self, refused: u64) -> Option<String> {
        let near = self.nat_capacity > 0 && self.nat_live * 10 >= self.nat_capacity * 9;
        (refused > 0 || near).then(|| {
            format!(
                "SNAT: {}/{} table entries (two per flow); {refused} flows refused (no free port or table \
                 full). Raise --nat-max, widen --snat-ports, or shorten the conntrack lifetimes.",
                self.nat_live, self.nat_capacity
            )
        })
    }
}

#[derive(Default)]
pub struct CtState {
    status: Mutex<CtStatus>,
}

impl CtState {
    pub fn status(&self) -> CtStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn pass(ct: &Conntrack, nat: &Nat) -> Result<(GcPass, GcPass, GcPass), String> {
    let t = now();
    let tcp = ct.gc(Table::Tcp, t).map_err(|e| e.to_string())?;
    let any = ct.gc(Table::Any, t).map_err(|e| e.to_string())?;
    let nat = crate::nat::gc(nat)?;
    Ok((tcp, any, nat))
}

/// Starts the GC thread (one pass right away: entries that expired while
/// no agent ran go first).
pub fn start_gc(agent: Arc<Agent>) -> Result<(), String> {
    let ct = Conntrack::open(&agent.cfg.bpffs).map_err(|e| e.to_string())?;
    let nat = Nat::open(&agent.cfg.bpffs).map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("weft-ct-gc".into())
        .spawn(move || {
            let mut interval = GC_START;
            loop {
                let started = Instant::now();
                match pass(&ct, &nat) {
                    Ok((tcp, any, snat)) => {
                        let deleted = tcp.deleted + any.deleted + snat.deleted;
                        let worst = [
                            (tcp.deleted, tcp.live, tcp.capacity),
                            (any.deleted, any.live, any.capacity),
                            (snat.deleted, snat.live, snat.capacity),
                        ]
                        .into_iter()
                        .map(|(d, l, c)| next_interval(interval, d, l, c as u64))
                        .min()
                        .unwrap_or(interval);
                        interval = worst;
                        log::debug!(
                            "conntrack gc: {deleted} expired of {} in {:?}; next in {interval:?}",
                            tcp.scanned + any.scanned,
                            started.elapsed()
                        );
                        let mut s = agent.ct.status.lock().unwrap_or_else(|p| p.into_inner());
                        *s = CtStatus {
                            tcp_live: tcp.live,
                            tcp_limit: admission_limit(tcp.capacity) as u64,
                            any_live: any.live,
                            any_limit: admission_limit(any.capacity) as u64,
                            last_deleted: deleted,
                            passes: s.passes + 1,
                            interval_secs: interval.as_secs(),
                            nat_live: snat.live,
                            nat_capacity: snat.capacity as u64,
                        };
                    }
                    Err(e) => log::warn!("conntrack gc: {e}"),
                }
                std::thread::sleep(interval);
            }
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn api_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(code::DATAPATH, "reading the conntrack maps failed", e.to_string())
}

/// An entry as `weft bpf ct list` shows it.
pub fn view(k: &CtKey, e: &CtEntry, now: u32) -> CtView {
    let proto = weft_api::proto_name(k.proto);
    let state = if k.proto != 6 {
        "active"
    } else if e.flags & (CT_F_TX_CLOSING | CT_F_RX_CLOSING) != 0 {
        "closing"
    } else if e.flags & CT_F_SEEN_REPLY != 0 {
        "established"
    } else {
        "syn-sent"
    };
    let mut flags = Vec::new();
    for (bit, name) in
        [(CT_F_SEEN_REPLY, "seen-reply"), (CT_F_TX_CLOSING, "tx-closing"), (CT_F_RX_CLOSING, "rx-closing")]
    {
        if e.flags & bit != 0 {
            flags.push(name.to_string());
        }
    }
    let port = |p: u16| u16::from_be(p);
    CtView {
        scope: match k.scope {
            CT_EGRESS => "egress",
            CT_SERVICE => "service",
            _ => "ingress",
        }
        .into(),
        proto,
        src: format!("{}:{}", be_to_ip(k.saddr), port(k.sport)),
        dst: format!("{}:{}", be_to_ip(k.daddr), port(k.dport)),
        state: state.into(),
        expires_in: e.expires as i64 - now as i64,
        tx_packets: e.tx_packets,
        tx_bytes: e.tx_bytes,
        rx_packets: e.rx_packets,
        rx_bytes: e.rx_bytes,
        endpoint: e.ep_id,
        peer_identity: e.peer_id,
        flags,
    }
}

/// `weft bpf ct list`: every entry, sorted by endpoint and tuple.
pub fn list(agent: &Agent) -> Result<Vec<CtView>, ApiError> {
    let ct = Conntrack::open(&agent.cfg.bpffs).map_err(api_err)?;
    let mut entries = ct.entries().map_err(api_err)?;
    entries.sort_by_key(|(k, e)| (e.ep_id, *k));
    let t = now();
    Ok(entries.iter().map(|(k, e)| view(k, e, t)).collect())
}

/// `weft bpf ct flush`: every flow starts over (and meets policy again).
pub fn flush(agent: &Agent) -> Result<CtFlushResult, ApiError> {
    let ct = Conntrack::open(&agent.cfg.bpffs).map_err(api_err)?;
    let deleted = ct.flush().map_err(api_err)?;
    log::info!("conntrack flushed on request: {deleted} entries");
    Ok(CtFlushResult { deleted })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_shrinks_when_passes_free_much_and_grows_when_they_free_little() {
        let cap = 100_000;
        let s = Duration::from_secs;
        assert_eq!(next_interval(s(60), 30_000, 1_000, cap), s(30), "a quarter freed: twice as often");
        assert_eq!(next_interval(s(60), 100, 1_000, cap), s(90), "little freed: less often");
        assert_eq!(next_interval(s(60), 10_000, 1_000, cap), s(60), "in between: as before");
        assert_eq!(next_interval(s(12), 50_000, 1_000, cap), GC_MIN, "never below the minimum");
        assert_eq!(next_interval(s(250), 0, 0, cap), GC_MAX, "never above the maximum");
        assert_eq!(next_interval(s(200), 0, 80_000, cap), GC_MIN, "a table near its limit: at once");
    }

    #[test]
    fn admission_keeps_an_eighth_free_and_status_warns_near_the_limit() {
        assert_eq!(admission_limit(65536), 57344);
        let mut st =
            CtStatus { tcp_live: 10, tcp_limit: 100, any_live: 0, any_limit: 100, ..Default::default() };
        assert_eq!(st.warning(0), None);
        assert!(st.warning(3).unwrap().contains("3 new flows refused"));
        st.tcp_live = 95;
        assert!(st.warning(0).unwrap().contains("TCP 95/100"));
    }
}
