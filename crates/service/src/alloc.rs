//! Choosing cluster IPs and node ports, purely: the caller says what is in
//! use and gets an answer; it keeps the used sets (in the store) itself.
//!
//! Deterministic: dynamic allocation takes the **lowest free** value of the
//! upper band of the range, then (when that is full) the lowest free value
//! of the lower band. The lower band is Kubernetes' "static subrange"
//! (KEP-3070 for ClusterIPs, KEP-3668 for NodePorts): values users are
//! likely to ask for by hand (DNS at `.10`) stay free of dynamic
//! allocations as long as possible. Kubernetes picks at random inside the
//! band; weft picks the lowest, so the same used set always gives the
//! same answer (and a test or a lab gives the same addresses every time).
//!
//! In a ClusterIP range the network and broadcast addresses are never
//! allocated, and the first host address (`10.96.0.1`) is kept for the
//! `kubernetes` service: dynamic allocation never returns it, and only a
//! request naming it explicitly gets it.

use crate::service::{ClusterIp, Service, ServiceType};
use std::{collections::BTreeSet, fmt, net::Ipv4Addr, str::FromStr};

/// An IPv4 network, with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// Refused if the prefix is longer than 32 or host bits are set.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, String> {
        if prefix_len > 32 {
            return Err(format!("prefix length /{prefix_len} is longer than 32"));
        }
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix_len));
        if network != addr {
            return Err(format!(
                "{addr}/{prefix_len} has host bits set; the network is {network}/{prefix_len}"
            ));
        }
        Ok(Ipv4Cidr { addr, prefix_len })
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.addr)
    }

    /// The last address (the broadcast address of the network).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix_len))
    }
}

fn mask(prefix_len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0)
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) =
            s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR: it has no /prefix-length"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{s:?} is not a CIDR: bad IPv4 address"))?;
        let len: u8 = len.parse().map_err(|_| format!("{s:?} is not a CIDR: bad prefix length"))?;
        Ipv4Cidr::new(addr, len)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why a value could not be had. Every variant names the pool (`the
/// service ClusterIP range 10.96.0.0/16`, `the NodePort range
/// 30000-32767`), so a log line says which setting to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// Nothing is free.
    Exhausted { pool: String },
    /// The requested value is not in the pool.
    OutOfRange { pool: String, value: String },
    /// The requested value is taken.
    InUse { pool: String, value: String },
    /// The requested value is never handed out (network, broadcast).
    Reserved { pool: String, value: String, why: &'static str },
    /// The pool itself cannot be used.
    BadPool { pool: String, reason: String },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::Exhausted { pool } => write!(f, "{pool} is exhausted: every value is in use"),
            AllocError::OutOfRange { pool, value } => write!(f, "{value} is outside {pool}"),
            AllocError::InUse { pool, value } => write!(f, "{value} is already in use in {pool}"),
            AllocError::Reserved { pool, value, why } => write!(f, "{value} is reserved in {pool}: {why}"),
            AllocError::BadPool { pool, reason } => write!(f, "{pool} cannot be used: {reason}"),
        }
    }
}

impl std::error::Error for AllocError {}

/// The lowest value of `from..=to` not in `used` (sorted, ascending).
fn lowest_free(from: u32, to: u32, used: impl Iterator<Item = u32>) -> Option<u32> {
    let mut candidate = from;
    for u in used {
        if candidate > to {
            return None;
        }
        if u == candidate {
            candidate += 1;
        } else if u > candidate {
            break;
        }
    }
    (candidate <= to).then_some(candidate)
}

/// Kubernetes' static-subrange size: `size / step` clamped to `min..=max`,
/// none at all for ranges smaller than `min`.
fn static_band(size: u32, min: u32, max: u32, step: u32) -> u32 {
    if size < min { 0 } else { (size / step).clamp(min, max) }
}

/// The range cluster IPs are taken from (`--service-cluster-ip-range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterIpRange {
    cidr: Ipv4Cidr,
}

/// Kubernetes' default service range (kubeadm's).
pub const DEFAULT_SERVICE_CIDR: Ipv4Cidr = Ipv4Cidr { addr: Ipv4Addr::new(10, 96, 0, 0), prefix_len: 16 };

impl Default for ClusterIpRange {
    fn default() -> Self {
        ClusterIpRange { cidr: DEFAULT_SERVICE_CIDR }
    }
}

impl ClusterIpRange {
    /// A /12 at most (as the API server limits it) and a /30 at least
    /// (two usable addresses, one of them kept for `kubernetes`).
    pub fn new(cidr: Ipv4Cidr) -> Result<Self, AllocError> {
        let pool = || format!("the service ClusterIP range {cidr}");
        match cidr.prefix_len {
            0..12 => Err(AllocError::BadPool { pool: pool(), reason: "larger than a /12".into() }),
            31.. => Err(AllocError::BadPool { pool: pool(), reason: "smaller than a /30".into() }),
            _ => Ok(ClusterIpRange { cidr }),
        }
    }

    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    /// The address kept for the `kubernetes` service (the first host).
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.addr) + 1)
    }

    fn pool(&self) -> String {
        format!("the service ClusterIP range {}", self.cidr)
    }

    /// The lowest free address of the dynamic band, else of the static
    /// band; never the network, broadcast or `kubernetes` address.
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr, AllocError> {
        // Usable: network + 1 ..= broadcast - 1, the first kept aside.
        let first = u32::from(self.cidr.addr) + 1;
        let last = u32::from(self.cidr.last()) - 1;
        let band = static_band(last - first + 1, 16, 256, 16);
        let pick = |from: u32, to: u32| {
            if from > to {
                return None;
            }
            let taken = used.range(Ipv4Addr::from(from)..=Ipv4Addr::from(to)).map(|ip| u32::from(*ip));
            lowest_free(from, to, taken)
        };
        let not_kubernetes = first + 1;
        let dynamic = pick((first + band).max(not_kubernetes), last);
        let fallback = || if band > 1 { pick(not_kubernetes, first + band - 1) } else { None };
        dynamic
            .or_else(fallback)
            .map(Ipv4Addr::from)
            .ok_or_else(|| AllocError::Exhausted { pool: self.pool() })
    }

    /// Checks a requested address: inside the range, not the network or
    /// broadcast address, not in `used`. The `kubernetes` address may be
    /// requested (that is how the `kubernetes` service gets it).
    pub fn claim(&self, ip: Ipv4Addr, used: &BTreeSet<Ipv4Addr>) -> Result<(), AllocError> {
        let value = ip.to_string();
        if !self.cidr.contains(ip) {
            return Err(AllocError::OutOfRange { pool: self.pool(), value });
        }
        if ip == self.cidr.addr {
            return Err(AllocError::Reserved { pool: self.pool(), value, why: "it is the network address" });
        }
        if ip == self.cidr.last() {
            return Err(AllocError::Reserved {
                pool: self.pool(),
                value,
                why: "it is the broadcast address",
            });
        }
        if used.contains(&ip) {
            return Err(AllocError::InUse { pool: self.pool(), value });
        }
        Ok(())
    }
}

/// The range node ports are taken from (`--service-node-port-range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePortRange {
    first: u16,
    last: u16,
}

impl Default for NodePortRange {
    /// 30000–32767, Kubernetes' default.
    fn default() -> Self {
        NodePortRange { first: 30000, last: 32767 }
    }
}

impl NodePortRange {
    pub fn new(first: u16, last: u16) -> Result<Self, AllocError> {
        if first == 0 || first > last {
            let pool = format!("the NodePort range {first}-{last}");
            return Err(AllocError::BadPool {
                pool,
                reason: "it must be a non-empty range of ports from 1".into(),
            });
        }
        Ok(NodePortRange { first, last })
    }

    pub fn first(&self) -> u16 {
        self.first
    }

    pub fn last(&self) -> u16 {
        self.last
    }

    fn pool(&self) -> String {
        format!("the NodePort range {}-{}", self.first, self.last)
    }

    /// The lowest free port of the dynamic band, else of the static band.
    pub fn allocate(&self, used: &BTreeSet<u16>) -> Result<u16, AllocError> {
        let (first, last) = (u32::from(self.first), u32::from(self.last));
        let band = static_band(last - first + 1, 16, 128, 32);
        let pick = |from: u32, to: u32| {
            if from > to {
                return None;
            }
            let (a, b) = (u16::try_from(from).ok()?, u16::try_from(to).ok()?);
            lowest_free(from, to, used.range(a..=b).map(|p| u32::from(*p)))
        };
        let dynamic = pick(first + band, last);
        let fallback = || if band == 0 { None } else { pick(first, first + band - 1) };
        dynamic
            .or_else(fallback)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| AllocError::Exhausted { pool: self.pool() })
    }

    /// Checks a requested port: in the range, not in `used`.
    pub fn claim(&self, port: u16, used: &BTreeSet<u16>) -> Result<(), AllocError> {
        let value = port.to_string();
        if !(self.first..=self.last).contains(&port) {
            return Err(AllocError::OutOfRange { pool: self.pool(), value });
        }
        if used.contains(&port) {
            return Err(AllocError::InUse { pool: self.pool(), value });
        }
        Ok(())
    }
}

/// An allocation that failed for one field of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignError {
    /// `spec.clusterIP`, `spec.ports[1].nodePort`.
    pub field: String,
    pub error: AllocError,
}

impl fmt::Display for AssignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.error)
    }
}

impl std::error::Error for AssignError {}

/// Gives a new (validated) service what the API server would: a cluster
/// IP unless headless or written, and a node port for each port of a
/// NodePort service that has none. Written values are claimed (checked).
/// Ports of one service with the same `port` number (53/TCP and 53/UDP)
/// share one node port, as Kubernetes does. On success the used sets hold
/// the new values; on error nothing is changed.
pub fn assign(
    service: &mut Service,
    ips: &ClusterIpRange,
    used_ips: &mut BTreeSet<Ipv4Addr>,
    node_ports: &NodePortRange,
    used_ports: &mut BTreeSet<u16>,
) -> Result<(), AssignError> {
    let mut spec = service.spec.clone();
    let mut new_ips = used_ips.clone();
    let mut new_ports = used_ports.clone();
    let at = |field: String| move |error| AssignError { field, error };
    match spec.cluster_ip() {
        ClusterIp::Headless => {}
        ClusterIp::Addr(ip) => ips.claim(ip, &new_ips).map_err(at("spec.clusterIP".into()))?,
        ClusterIp::Unassigned => {
            spec.cluster_ip = ClusterIp::Addr(ips.allocate(&new_ips).map_err(at("spec.clusterIP".into()))?)
        }
    }
    if let ClusterIp::Addr(ip) = spec.cluster_ip() {
        new_ips.insert(ip);
    }
    if spec.type_ == ServiceType::NodePort {
        // Written node ports first, so an allocation cannot take one.
        let mut mine: Vec<(i32, u16)> = Vec::new();
        for (i, port) in spec.ports.iter().enumerate() {
            if let Some(n) = port.node_port() {
                if !mine.iter().any(|&(p, m)| p == port.port && m == n) {
                    node_ports.claim(n, &new_ports).map_err(at(format!("spec.ports[{i}].nodePort")))?;
                }
                new_ports.insert(n);
                mine.push((port.port, n));
            }
        }
        for (i, port) in spec.ports.iter_mut().enumerate() {
            if port.node_port().is_some() {
                continue;
            }
            let n = match mine.iter().find(|&&(p, _)| p == port.port) {
                Some(&(_, n)) => n,
                None => node_ports.allocate(&new_ports).map_err(at(format!("spec.ports[{i}].nodePort")))?,
            };
            new_ports.insert(n);
            mine.push((port.port, n));
            port.node_port = Some(i32::from(n));
        }
    }
    service.spec = spec;
    *used_ips = new_ips;
    *used_ports = new_ports;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().expect("cidr")
    }

    #[test]
    fn cidrs() {
        assert_eq!(cidr("10.96.0.0/16"), DEFAULT_SERVICE_CIDR);
        assert_eq!(cidr("10.96.0.0/16").last(), ip("10.96.255.255"));
        assert!("10.96.0.1/16".parse::<Ipv4Cidr>().unwrap_err().contains("host bits"));
        assert!("10.96.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.96.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!(ClusterIpRange::new(cidr("10.0.0.0/8")).is_err());
        assert!(ClusterIpRange::new(cidr("10.0.0.0/31")).is_err());
    }

    #[test]
    fn cluster_ips_lowest_free_in_the_dynamic_band() {
        let r = ClusterIpRange::default();
        let mut used = BTreeSet::new();
        // A /16 has 65534 usable addresses; the static band is 256 of them.
        assert_eq!(r.allocate(&used), Ok(ip("10.96.1.1")));
        used.insert(ip("10.96.1.1"));
        used.insert(ip("10.96.1.3"));
        assert_eq!(r.allocate(&used), Ok(ip("10.96.1.2")));
        used.insert(ip("10.96.1.2"));
        assert_eq!(r.allocate(&used), Ok(ip("10.96.1.4")));
        // Deterministic: the same used set, the same answer.
        assert_eq!(r.allocate(&used), r.allocate(&used.clone()));
    }

    #[test]
    fn cluster_ip_exhaustion_and_reservations() {
        let r = ClusterIpRange::new(cidr("10.96.0.0/28")).expect("range");
        // 14 usable; fewer than 16, so no static band; .1 is kept.
        let mut used = BTreeSet::new();
        let mut got = Vec::new();
        while let Ok(a) = r.allocate(&used) {
            used.insert(a);
            got.push(a);
        }
        assert_eq!(got.len(), 13);
        assert_eq!((got[0], got[12]), (ip("10.96.0.2"), ip("10.96.0.14")));
        assert!(!got.contains(&ip("10.96.0.1")) && !got.contains(&ip("10.96.0.15")));
        let e = r.allocate(&used).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the service ClusterIP range 10.96.0.0/28 is exhausted: every value is in use"
        );
        // The kubernetes address can still be claimed by name.
        assert_eq!(r.claim(r.kubernetes_ip(), &used), Ok(()));
        let e = r.claim(ip("10.96.0.5"), &used).unwrap_err();
        assert_eq!(e.to_string(), "10.96.0.5 is already in use in the service ClusterIP range 10.96.0.0/28");
        let e = r.claim(ip("10.97.0.5"), &used).unwrap_err();
        assert!(matches!(e, AllocError::OutOfRange { .. }), "{e}");
        assert!(r.claim(ip("10.96.0.0"), &used).unwrap_err().to_string().contains("network address"));
        assert!(r.claim(ip("10.96.0.15"), &used).unwrap_err().to_string().contains("broadcast address"));
    }

    #[test]
    fn static_band_is_used_last() {
        let r = ClusterIpRange::new(cidr("10.96.0.0/24")).expect("range");
        // 254 usable, band = 16 (254/16 = 15, raised to 16): .1..=.16.
        let mut used: BTreeSet<Ipv4Addr> = (17..=254).map(|i| Ipv4Addr::new(10, 96, 0, i)).collect();
        assert_eq!(r.allocate(&used), Ok(ip("10.96.0.2")));
        used.extend((2..=16).map(|i| Ipv4Addr::new(10, 96, 0, i)));
        assert!(matches!(r.allocate(&used), Err(AllocError::Exhausted { .. })));
    }

    #[test]
    fn node_ports() {
        let r = NodePortRange::default();
        let mut used = BTreeSet::new();
        // 2768 ports, static band 2768/32 = 86: 30000..=30085.
        assert_eq!(r.allocate(&used), Ok(30086));
        used.insert(30086);
        assert_eq!(r.allocate(&used), Ok(30087));
        assert_eq!(r.claim(30000, &used), Ok(()));
        assert_eq!(
            r.claim(30086, &used).unwrap_err().to_string(),
            "30086 is already in use in the NodePort range 30000-32767"
        );
        assert_eq!(
            r.claim(8080, &used).unwrap_err().to_string(),
            "8080 is outside the NodePort range 30000-32767"
        );
        let small = NodePortRange::new(31000, 31002).expect("range");
        let mut used = BTreeSet::new();
        for expect in [31000, 31001, 31002] {
            assert_eq!(small.allocate(&used), Ok(expect));
            used.insert(expect);
        }
        assert_eq!(
            small.allocate(&used).unwrap_err().to_string(),
            "the NodePort range 31000-31002 is exhausted: every value is in use"
        );
        assert!(NodePortRange::new(5, 4).is_err());
        // Upper band full: fall back to the lowest static port.
        let used: BTreeSet<u16> = (30086..=32767).collect();
        assert_eq!(NodePortRange::default().allocate(&used), Ok(30000));
    }

    fn service(spec: serde_json::Value) -> Service {
        Service::from_json(
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"}, "spec": spec}),
        )
        .expect("service")
    }

    #[test]
    fn assign_fills_a_service() {
        let mut s = service(json!({"type": "NodePort", "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53},
            {"name": "metrics", "port": 9153, "nodePort": 30090}]}));
        let (mut ips, mut ports) = (BTreeSet::new(), BTreeSet::new());
        let (ipr, npr) = (ClusterIpRange::default(), NodePortRange::default());
        assign(&mut s, &ipr, &mut ips, &npr, &mut ports).expect("assigns");
        assert_eq!(s.spec.cluster_ip(), ClusterIp::Addr(ip("10.96.1.1")));
        let nps: Vec<_> = s.spec.ports.iter().map(|p| p.node_port()).collect();
        assert_eq!(nps, [Some(30086), Some(30086), Some(30090)]);
        assert_eq!(ports, BTreeSet::from([30086, 30090]));
        // A second service asking for a taken port: refused, nothing changed.
        let mut t = service(json!({"type": "NodePort", "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "nodePort": 30090}]}));
        let e = assign(&mut t, &ipr, &mut ips, &npr, &mut ports).unwrap_err();
        assert_eq!(e.field, "spec.ports[0].nodePort");
        assert_eq!(ips.len(), 1);
        assert_eq!(t.spec.cluster_ip(), ClusterIp::Addr(ip("10.96.0.10")));
        let mut u = service(json!({"clusterIP": "10.96.1.1", "ports": [{"port": 80}]}));
        let e = assign(&mut u, &ipr, &mut ips, &npr, &mut ports).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.clusterIP: 10.96.1.1 is already in use in the service ClusterIP range 10.96.0.0/16"
        );
        let mut h = service(json!({"clusterIP": "None"}));
        assign(&mut h, &ipr, &mut ips, &npr, &mut ports).expect("headless needs nothing");
        assert!(h.spec.is_headless());
    }
}
