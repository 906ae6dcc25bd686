//! IPv4 routes of the main table.

use super::Netlink;
use crate::{Error, Result};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType},
};
use std::{collections::HashMap, fmt, net::Ipv4Addr};

/// The protocol iproute2 gives routes it adds (RTPROT_BOOT).
pub const ROUTE_PROTO_BOOT: u8 = 3;

/// How far a route's destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteScope {
    /// Anywhere (routes via a gateway).
    #[default]
    Universe,
    /// Directly on the device's link (no gateway).
    Link,
    /// This host.
    Host,
    Other(u8),
}

impl RouteScope {
    fn to_kernel(self) -> netlink_packet_route::route::RouteScope {
        use netlink_packet_route::route::RouteScope as K;
        match self {
            Self::Universe => K::Universe,
            Self::Link => K::Link,
            Self::Host => K::Host,
            Self::Other(n) => K::from(n),
        }
    }

    fn from_kernel(s: netlink_packet_route::route::RouteScope) -> Self {
        use netlink_packet_route::route::RouteScope as K;
        match s {
            K::Universe => Self::Universe,
            K::Link => Self::Link,
            K::Host => Self::Host,
            other => Self::Other(u8::from(other)),
        }
    }
}

/// An IPv4 route: `dst/dst_len [via gateway] [dev dev] [scope] [proto]
/// [src]`, in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub dst_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dev: Option<String>,
    pub scope: RouteScope,
    pub proto: u8,
    pub src: Option<Ipv4Addr>,
}

impl Route {
    /// DST/LEN, universe scope, iproute2's protocol.
    pub fn to(dst: Ipv4Addr, dst_len: u8) -> Self {
        Self {
            dst,
            dst_len,
            gateway: None,
            dev: None,
            scope: RouteScope::Universe,
            proto: ROUTE_PROTO_BOOT,
            src: None,
        }
    }

    /// `ADDR dev DEV scope link`: a host reachable on the device's link.
    pub fn on_link(addr: Ipv4Addr, dev: &str) -> Self {
        Self::to(addr, 32).dev(dev).scope(RouteScope::Link)
    }

    /// `default via GW dev DEV`.
    pub fn default_via(gw: Ipv4Addr, dev: &str) -> Self {
        Self::to(Ipv4Addr::UNSPECIFIED, 0).via(gw).dev(dev)
    }

    pub fn via(mut self, gw: Ipv4Addr) -> Self {
        self.gateway = Some(gw);
        self
    }

    pub fn dev(mut self, dev: &str) -> Self {
        self.dev = Some(dev.into());
        self
    }

    pub fn scope(mut self, scope: RouteScope) -> Self {
        self.scope = scope;
        self
    }

    pub fn proto(mut self, proto: u8) -> Self {
        self.proto = proto;
        self
    }

    pub fn src(mut self, src: Ipv4Addr) -> Self {
        self.src = Some(src);
        self
    }

    /// Whether `other` is this route (same destination, gateway, device
    /// and scope; protocol and source as asked when they were given).
    pub fn matches(&self, other: &Route) -> bool {
        self.dst == other.dst
            && self.dst_len == other.dst_len
            && self.gateway == other.gateway
            && (self.dev.is_none() || self.dev == other.dev)
            && self.scope == other.scope
            && (self.src.is_none() || self.src == other.src)
    }
}

/// As iproute2 shows it: "default via 10.244.0.1 dev eth0",
/// "10.244.1.0/24 via 198.18.0.3 dev eth0 proto 201".
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.dst_len, self.dst) {
            (0, Ipv4Addr::UNSPECIFIED) => f.write_str("default")?,
            (32, a) => write!(f, "{a}")?,
            (len, a) => write!(f, "{a}/{len}")?,
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        match self.scope {
            RouteScope::Universe => {}
            RouteScope::Link => f.write_str(" scope link")?,
            RouteScope::Host => f.write_str(" scope host")?,
            RouteScope::Other(n) => write!(f, " scope {n}")?,
        }
        if self.proto != ROUTE_PROTO_BOOT {
            write!(f, " proto {}", self.proto)?;
        }
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        Ok(())
    }
}

impl Netlink {
    /// Adds a route; "File exists" when the destination has one already.
    pub fn route_add(&mut self, r: &Route) -> Result<()> {
        self.route_change(r, NLM_F_CREATE | NLM_F_EXCL, "adding")
    }

    /// Adds a route or replaces the one the destination has.
    pub fn route_replace(&mut self, r: &Route) -> Result<()> {
        self.route_change(r, NLM_F_CREATE | NLM_F_REPLACE, "replacing")
    }

    /// Deletes a route; one that is not there is success. Gateway, device
    /// and protocol narrow the match when given; any scope matches.
    pub fn route_delete(&mut self, r: &Route) -> Result<()> {
        let what = format!("deleting route {r}");
        let mut m = self.route_message(r, &what)?;
        // What iproute2 sends for `route del`: any scope, any type.
        m.header.scope = netlink_packet_route::route::RouteScope::NoWhere;
        m.header.kind = RouteType::Unspec;
        match self.ack(RouteNetlinkMessage::DelRoute(m), 0) {
            Err(e) if e.is(libc::ESRCH) => Ok(()),
            res => res.map_err(|e| self.error(&what, e)),
        }
    }

    fn route_change(&mut self, r: &Route, flags: u16, verb: &str) -> Result<()> {
        let what = format!("{verb} route {r}");
        let m = self.route_message(r, &what)?;
        self.ack(RouteNetlinkMessage::NewRoute(m), flags).map_err(|e| self.error(&what, e))
    }

    fn route_message(&mut self, r: &Route, what: &str) -> Result<RouteMessage> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = r.dst_len;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::from(r.proto);
        m.header.scope = r.scope.to_kernel();
        m.header.kind = RouteType::Unicast;
        if r.dst_len > 0 {
            m.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(r.dst)));
        }
        if let Some(gw) = r.gateway {
            m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        if let Some(dev) = &r.dev {
            let index = self.require_index(dev).map_err(|e| Error(format!("{what}: {e}")))?;
            m.attributes.push(RouteAttribute::Oif(index));
        }
        if let Some(src) = r.src {
            m.attributes.push(RouteAttribute::PrefSource(RouteAddress::Inet(src)));
        }
        Ok(m)
    }

    /// Every IPv4 unicast route of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let answers =
            self.dump(RouteNetlinkMessage::GetRoute(req)).map_err(|e| self.error("listing routes", e))?;
        let names: HashMap<u32, String> = self.links()?.into_iter().map(|l| (l.index, l.name)).collect();
        Ok(answers
            .iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewRoute(m) => parse(m, &names),
                _ => None,
            })
            .collect())
    }

    /// The routes of the main table that carry protocol `proto`.
    pub fn routes_by_proto(&mut self, proto: u8) -> Result<Vec<Route>> {
        Ok(self.routes()?.into_iter().filter(|r| r.proto == proto).collect())
    }

    /// The routes of the main table through device `dev`.
    pub fn routes_via(&mut self, dev: &str) -> Result<Vec<Route>> {
        Ok(self.routes()?.into_iter().filter(|r| r.dev.as_deref() == Some(dev)).collect())
    }
}

fn parse(m: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    let h = &m.header;
    if h.address_family != AddressFamily::Inet || h.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut r = Route::to(Ipv4Addr::UNSPECIFIED, h.destination_prefix_length);
    r.scope = RouteScope::from_kernel(h.scope);
    r.proto = u8::from(h.protocol);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => r.dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => r.gateway = Some(*ip),
            RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => r.src = Some(*ip),
            RouteAttribute::Oif(i) => r.dev = Some(names.get(i).cloned().unwrap_or_else(|| format!("if{i}"))),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    (table == u32::from(RouteHeader::RT_TABLE_MAIN)).then_some(r)
}
