//! IPv4 addresses.

use super::Netlink;
use crate::Result;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
};
use std::net::{IpAddr, Ipv4Addr};

/// An IPv4 address of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    /// The device's name (looked up in the same namespace).
    pub dev: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} on {}", self.ip, self.prefix_len, self.dev)
    }
}

fn message(index: u32, ip: Ipv4Addr, prefix_len: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = prefix_len;
    m.header.index = index;
    // As iproute2: IFA_LOCAL is the address, IFA_ADDRESS the peer (the
    // same on a broadcast device).
    m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
    m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
    m
}

impl Netlink {
    /// Adds IP/PREFIX to a device; "File exists" when it has it already.
    pub fn address_add(&mut self, dev: &str, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
        self.address_change(dev, ip, prefix_len, NLM_F_CREATE | NLM_F_EXCL, "adding")
    }

    /// Adds IP/PREFIX to a device, or keeps it if it is there.
    pub fn address_replace(&mut self, dev: &str, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
        self.address_change(dev, ip, prefix_len, NLM_F_CREATE | NLM_F_REPLACE, "setting")
    }

    /// Removes IP/PREFIX from a device.
    pub fn address_delete(&mut self, dev: &str, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
        let what = format!("removing address {ip}/{prefix_len} from {dev}");
        let index = self.require_index(dev).map_err(|e| crate::Error(format!("{what}: {e}")))?;
        self.ack(RouteNetlinkMessage::DelAddress(message(index, ip, prefix_len)), 0)
            .map_err(|e| self.error(&what, e))
    }

    fn address_change(&mut self, dev: &str, ip: Ipv4Addr, len: u8, flags: u16, verb: &str) -> Result<()> {
        let what = format!("{verb} address {ip}/{len} on {dev}");
        let index = self.require_index(dev).map_err(|e| crate::Error(format!("{what}: {e}")))?;
        self.ack(RouteNetlinkMessage::NewAddress(message(index, ip, len)), flags)
            .map_err(|e| self.error(&what, e))
    }

    /// Every IPv4 address of the namespace, loopback ones included.
    pub fn addresses(&mut self) -> Result<Vec<Address>> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
        let answers = self
            .dump(RouteNetlinkMessage::GetAddress(req))
            .map_err(|e| self.error("listing addresses", e))?;
        let names: std::collections::HashMap<u32, String> =
            self.links()?.into_iter().map(|l| (l.index, l.name)).collect();
        Ok(answers
            .iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewAddress(m) => parse(m, &names),
                _ => None,
            })
            .collect())
    }

    /// The IPv4 addresses of one device.
    pub fn addresses_of(&mut self, dev: &str) -> Result<Vec<Address>> {
        Ok(self.addresses()?.into_iter().filter(|a| a.dev == dev).collect())
    }
}

fn parse(m: &AddressMessage, names: &std::collections::HashMap<u32, String>) -> Option<Address> {
    if m.header.family != AddressFamily::Inet {
        return None;
    }
    // IFA_LOCAL is the device's own address; IFA_ADDRESS alone on devices
    // without one (it is the peer on point-to-point links).
    let mut local = None;
    let mut address = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => local = Some(*ip),
            AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
            _ => {}
        }
    }
    Some(Address {
        index: m.header.index,
        dev: names.get(&m.header.index).cloned().unwrap_or_else(|| format!("if{}", m.header.index)),
        ip: local.or(address)?,
        prefix_len: m.header.prefix_len,
    })
}
