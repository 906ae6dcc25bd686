//! Devices: veth pairs (one end possibly born in another namespace), the
//! external VXLAN device, up/down, ARP, MTU, delete, and what a device is.

use super::{Failure, Netlink};
use crate::{Error, Result, mac_string};
use netlink_packet_core::{DefaultNla, Emitable, NLA_F_NESTED, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{
        AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, InfoVxlan,
        LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    },
};
use std::{fs::File, os::fd::AsRawFd, path::Path};

/// A device as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    pub up: bool,
    pub noarp: bool,
    /// "veth", "vxlan", ... (None for devices without IFLA_INFO_KIND).
    pub kind: Option<String>,
}

/// A veth pair to create: `name` here, `peer` here or in the namespace at
/// `peer_netns`. MACs the kernel picks when None.
#[derive(Debug, Clone, Default)]
pub struct Veth<'a> {
    pub name: &'a str,
    pub mac: Option<[u8; 6]>,
    pub peer: &'a str,
    pub peer_mac: Option<[u8; 6]>,
    pub peer_netns: Option<&'a Path>,
    /// Both ends; the kernel's default (1500) when None.
    pub mtu: Option<u32>,
}

impl Veth<'_> {
    fn describe(&self) -> String {
        match self.peer_netns {
            Some(ns) => format!("creating veth {} (peer {} in {})", self.name, self.peer, ns.display()),
            None => format!("creating veth {} (peer {})", self.name, self.peer),
        }
    }
}

/// One end's name, MAC and MTU.
fn end_attributes(name: &str, mac: Option<[u8; 6]>, mtu: Option<u32>) -> Vec<LinkAttribute> {
    let mut attrs = vec![LinkAttribute::IfName(name.into())];
    if let Some(mtu) = mtu {
        attrs.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = mac {
        attrs.push(LinkAttribute::Address(mac.to_vec()));
    }
    attrs
}

fn link_info(kind: InfoKind, data: InfoData) -> LinkAttribute {
    LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind), LinkInfo::Data(data)])
}

/// A device's IPv4 setting (`net.ipv4.conf.DEV.*`) that netlink sets:
/// the kernel's IPV4_DEVCONF_* numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Ipv4Conf {
    Forwarding = 1,
    RpFilter = 8,
}

/// How a device comes up (see [`Netlink::link_up_with`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct UpWith<'a> {
    /// `net.ipv4.conf.DEV.*` settings.
    pub ipv4: &'a [(Ipv4Conf, u32)],
    /// No IPv6 address of its own (IFLA_INET6_ADDR_GEN_MODE none): no
    /// link-local address, so the kernel sends no neighbour or router
    /// discovery on it. Takes effect when the link's carrier comes later
    /// than this request (its peer is down); otherwise use
    /// [`Netlink::no_ipv6_link_local`] before.
    pub no_ipv6_link_local: bool,
}

/// IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF { setting: value, … } },
/// AF_INET6 { IFLA_INET6_ADDR_GEN_MODE } }. The crate's own request form
/// of the IPv4 part leaves out zeros, so that part is built here.
fn af_spec(up: &UpWith) -> LinkAttribute {
    const IFLA_INET_CONF: u16 = 1;
    let mut spec = Vec::new();
    if !up.ipv4.is_empty() {
        let mut nested = Vec::new();
        for (k, v) in up.ipv4 {
            let nla = DefaultNla::new(*k as u16, v.to_ne_bytes().to_vec());
            let mut buf = vec![0; nla.buffer_len()];
            nla.emit(&mut buf);
            nested.extend(buf);
        }
        let conf = DefaultNla::new(IFLA_INET_CONF | NLA_F_NESTED, nested);
        spec.push(AfSpecUnspec::Inet(vec![AfSpecInet::Other(conf)]));
    }
    if up.no_ipv6_link_local && crate::has_ipv6() {
        spec.push(AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)]));
    }
    LinkAttribute::AfSpecUnspec(spec)
}

/// A message that names a device (the kernel looks it up by IFLA_IFNAME).
fn by_name(name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.into()));
    m
}

impl Netlink {
    /// Creates a veth pair in one request: names, MACs and MTU of both ends,
    /// the peer born directly in its namespace (IFLA_NET_NS_FD). Fails with
    /// "File exists" when either name is taken.
    pub fn veth_create(&mut self, v: &Veth) -> Result<()> {
        let what = v.describe();
        let mut peer = LinkMessage::default();
        peer.attributes = end_attributes(v.peer, v.peer_mac, v.mtu);
        // The file stays open until the kernel has answered.
        let ns_file = match v.peer_netns {
            Some(path) => {
                Some(File::open(path).map_err(|e| Error(format!("{what}: opening the namespace: {e}")))?)
            }
            None => None,
        };
        if let Some(f) = &ns_file {
            peer.attributes.push(LinkAttribute::NetNsFd(f.as_raw_fd()));
        }
        let mut m = LinkMessage::default();
        m.attributes = end_attributes(v.name, v.mac, v.mtu);
        m.attributes.push(link_info(InfoKind::Veth, InfoData::Veth(InfoVeth::Peer(peer))));
        self.ack(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL).map_err(|e| self.error(&what, e))
    }

    /// Creates an external (collect_md) VXLAN device: no VNI or remote of
    /// its own (the datapath sets them per packet), no learning, the given
    /// UDP port: what `ip link add NAME mtu MTU type vxlan external dstport
    /// PORT` asks for.
    pub fn vxlan_external_create(&mut self, name: &str, mtu: u32, port: u16) -> Result<()> {
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        let data = vec![InfoVxlan::CollectMetadata(true), InfoVxlan::Learning(false), InfoVxlan::Port(port)];
        m.attributes.push(link_info(InfoKind::Vxlan, InfoData::Vxlan(data)));
        self.ack(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|e| self.error(&format!("creating vxlan {name} (external, dstport {port})"), e))
    }

    /// Deletes a device; one that does not exist (or vanished meanwhile:
    /// a veth goes with its peer's namespace) is success. Deleting one end
    /// of a veth deletes both.
    pub fn link_delete(&mut self, name: &str) -> Result<()> {
        match self.ack(RouteNetlinkMessage::DelLink(by_name(name)), 0) {
            Err(e) if e.is(libc::ENODEV) => Ok(()),
            r => r.map_err(|e| self.error(&format!("deleting {name}"), e)),
        }
    }

    /// Puts a device in a device group (`ip link set NAME group N`), so a
    /// whole group can go in one request. Ok(false) when the device does
    /// not exist.
    pub fn link_set_group(&mut self, name: &str, group: u32) -> Result<bool> {
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::Group(group));
        match self.ack(RouteNetlinkMessage::SetLink(m), 0) {
            Ok(()) => Ok(true),
            Err(e) if e.is(libc::ENODEV) => Ok(false),
            Err(e) => Err(self.error(&format!("putting {name} in device group {group}"), e)),
        }
    }

    /// Deletes every device of a group in one request (`ip link del group
    /// N`): the kernel unregisters them together and waits for RCU once,
    /// not once per device. An empty group is success.
    pub fn group_delete(&mut self, group: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::Group(group));
        match self.ack(RouteNetlinkMessage::DelLink(m), 0) {
            Err(e) if e.is(libc::ENODEV) => Ok(()),
            r => r.map_err(|e| self.error(&format!("deleting device group {group}"), e)),
        }
    }

    /// The device called `name`, None when there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        match self.get(RouteNetlinkMessage::GetLink(by_name(name))) {
            Ok(Some(RouteNetlinkMessage::NewLink(m))) => Ok(Some(parse_link(&m))),
            Ok(_) => Ok(None),
            Err(e) if e.is(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.error(&format!("reading device {name}"), e)),
        }
    }

    /// Every device of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let answers = self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .map_err(|e| self.error("listing devices", e))?;
        Ok(answers
            .iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewLink(m) => Some(parse_link(m)),
                _ => None,
            })
            .collect())
    }

    pub fn link_exists(&mut self, name: &str) -> Result<bool> {
        Ok(self.link(name)?.is_some())
    }

    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name)?.map(|l| l.index))
    }

    pub fn link_mtu(&mut self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name)?.map(|l| l.mtu))
    }

    /// The index of a device that must exist ("no device NAME [in NS]").
    pub fn require_index(&mut self, name: &str) -> Result<u32> {
        match self.link_index(name)? {
            Some(i) => Ok(i),
            None => Err(self.error(&format!("no device {name}"), missing())),
        }
    }

    /// Sets a device up.
    pub fn link_up(&mut self, name: &str) -> Result<()> {
        self.set_flags(name, LinkFlags::Up, LinkFlags::Up, "setting {} up")
    }

    /// Sets a device up, with its settings in the same request: no write
    /// to /proc/sys (an IPv4 or IPv6 sysctl of a device spins on the RTNL
    /// lock while other requests hold it, where netlink waits for it).
    pub fn link_up_with(&mut self, name: &str, up: &UpWith) -> Result<()> {
        let mut m = by_name(name);
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        m.attributes.push(af_spec(up));
        self.ack(RouteNetlinkMessage::SetLink(m), 0)
            .map_err(|e| self.error(&format!("setting {name} up with {up:?}"), e))
    }

    /// Gives a device that is down no IPv6 link-local address (see
    /// [`UpWith::no_ipv6_link_local`]).
    pub fn no_ipv6_link_local(&mut self, name: &str) -> Result<()> {
        let mut m = by_name(name);
        m.attributes.push(af_spec(&UpWith { no_ipv6_link_local: true, ..Default::default() }));
        self.ack(RouteNetlinkMessage::SetLink(m), 0)
            .map_err(|e| self.error(&format!("turning IPv6 address generation off on {name}"), e))
    }

    /// Sets a device up with ARP off (`ip link set NAME arp off up`).
    pub fn link_up_noarp(&mut self, name: &str) -> Result<()> {
        let both = LinkFlags::Up | LinkFlags::Noarp;
        self.set_flags(name, both, both, "setting {} up with ARP off")
    }

    /// Sets the MTU of a device.
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<()> {
        let mut m = by_name(name);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.ack(RouteNetlinkMessage::SetLink(m), 0)
            .map_err(|e| self.error(&format!("setting mtu {mtu} on {name}"), e))
    }

    /// Changes the flags in `mask` to their value in `flags`.
    fn set_flags(&mut self, name: &str, flags: LinkFlags, mask: LinkFlags, what: &str) -> Result<()> {
        let mut m = by_name(name);
        m.header.flags = flags;
        m.header.change_mask = mask;
        self.ack(RouteNetlinkMessage::SetLink(m), 0).map_err(|e| self.error(&what.replace("{}", name), e))
    }
}

/// ENODEV, for a device looked up and not found.
fn missing() -> Failure {
    Failure::from(std::io::Error::from_raw_os_error(libc::ENODEV))
}

fn parse_link(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        mac: None,
        up: m.header.flags.contains(LinkFlags::Up),
        noarp: m.header.flags.contains(LinkFlags::Noarp),
        kind: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Address(mac) if mac.len() == 6 => {
                link.mac = Some([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]);
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (index {}, mtu {}", self.name, self.index, self.mtu)?;
        if let Some(mac) = &self.mac {
            write!(f, ", {}", mac_string(mac))?;
        }
        f.write_str(if self.up { ", up)" } else { ", down)" })
    }
}
