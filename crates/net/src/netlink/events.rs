//! Link and address events: a NETLINK_ROUTE socket subscribed to multicast
//! groups, in the namespace of the thread that opened it.

use super::split;
use crate::{Error, Result};
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::{
    io,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

/// Devices appearing, changing and vanishing.
pub const RTNLGRP_LINK: u32 = 1;
/// IPv4 addresses added and removed.
pub const RTNLGRP_IPV4_IFADDR: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A device appeared or changed (RTM_NEWLINK).
    LinkNew { index: u32, name: String },
    /// A device vanished (RTM_DELLINK).
    LinkDel { index: u32, name: String },
    /// An IPv4 address was added (RTM_NEWADDR).
    AddrNew { index: u32, ip: Ipv4Addr, prefix_len: u8 },
    /// An IPv4 address was removed (RTM_DELADDR).
    AddrDel { index: u32, ip: Ipv4Addr, prefix_len: u8 },
    /// The socket's buffer overflowed (ENOBUFS): events were lost, and
    /// whoever keeps state from them must read it all again.
    Overrun,
}

/// A subscription to rtnetlink multicast groups.
pub struct Events {
    pub(super) sock: Socket,
    buf: Vec<u8>,
}

impl Events {
    /// Subscribes to `groups` (RTNLGRP_*) in the calling thread's
    /// namespace. [`Events::wait`] returns at the latest after `tick`, so
    /// the reading thread can notice it should stop.
    pub fn subscribe(groups: &[u32], tick: Duration) -> Result<Self> {
        let fail = |e: io::Error| Error(format!("subscribing to netlink events: {e}"));
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(fail)?;
        sock.bind(&SocketAddr::new(0, 0)).map_err(fail)?;
        for g in groups {
            sock.add_membership(*g).map_err(fail)?;
        }
        // Room for bursts (a namespace torn down deletes many devices).
        sock.set_rx_buf_sz(1 << 20).map_err(fail)?;
        super::set_recv_timeout(&sock, tick).map_err(fail)?;
        Ok(Self { sock, buf: Vec::with_capacity(super::RECV_BUF) })
    }

    /// The events of the next datagram; none when `tick` passed without
    /// one; [`Event::Overrun`] when the kernel dropped some.
    pub fn wait(&mut self) -> Result<Vec<Event>> {
        self.buf.clear();
        self.buf.reserve(super::RECV_BUF);
        match self.sock.recv_from(&mut self.buf, 0) {
            Ok((_, from)) if from.port_number() != 0 => return Ok(Vec::new()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(vec![Event::Overrun]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Ok(Vec::new());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Vec::new()),
            Err(e) => return Err(Error(format!("reading netlink events: {e}"))),
        }
        let messages = split(&self.buf).map_err(|e| Error(format!("decoding netlink events: {e}")))?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m.payload {
                NetlinkPayload::InnerMessage(inner) => event(inner),
                NetlinkPayload::Overrun(_) => Some(Event::Overrun),
                _ => None,
            })
            .collect())
    }
}

fn event(m: RouteNetlinkMessage) -> Option<Event> {
    match m {
        RouteNetlinkMessage::NewLink(l) => {
            Some(Event::LinkNew { index: l.header.index, name: link_name(&l) })
        }
        RouteNetlinkMessage::DelLink(l) => {
            Some(Event::LinkDel { index: l.header.index, name: link_name(&l) })
        }
        RouteNetlinkMessage::NewAddress(a) => {
            address(&a).map(|(index, ip, prefix_len)| Event::AddrNew { index, ip, prefix_len })
        }
        RouteNetlinkMessage::DelAddress(a) => {
            address(&a).map(|(index, ip, prefix_len)| Event::AddrDel { index, ip, prefix_len })
        }
        _ => None,
    }
}

fn link_name(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn address(a: &AddressMessage) -> Option<(u32, Ipv4Addr, u8)> {
    if a.header.family != AddressFamily::Inet {
        return None;
    }
    let ip = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    })?;
    Some((a.header.index, ip, a.header.prefix_len))
}
