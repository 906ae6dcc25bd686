//! Crafted packets for BPF_PROG_TEST_RUN: tests and the benchmark feed them to the real programs.

use std::net::Ipv4Addr;

pub fn csum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { (c[0] as u16) << 8 };
        sum += w as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn arp_request(src_mac: [u8; 6], sip: Ipv4Addr, tip: Ipv4Addr) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&[0xff; 6]);
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&[0x08, 0x06]);
    p.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&sip.octets());
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&tip.octets());
    p
}

/// Ethernet + IPv4 + ICMP echo request with `payload` bytes of data.
pub fn icmp_echo(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(&[0xab; 32]);
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = 20 + icmp.len();
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, ttl, 1, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut p = Vec::new();
    p.extend_from_slice(&dst_mac);
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&[0x08, 0x00]);
    p.extend_from_slice(&ip);
    p.extend_from_slice(&icmp);
    p
}

/// An IPv4 packet in an Ethernet frame around `l4` (protocol `proto`).
fn ipv4_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    l4: &[u8],
) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut p = Vec::new();
    p.extend_from_slice(&dst_mac);
    p.extend_from_slice(&src_mac);
    p.extend_from_slice(&[0x08, 0x00]);
    p.extend_from_slice(&ip);
    p.extend_from_slice(l4);
    p
}

/// The L4 checksum over the IPv4 pseudo header and `l4`.
fn l4_csum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> u16 {
    let mut buf = Vec::with_capacity(12 + l4.len());
    buf.extend_from_slice(&src.octets());
    buf.extend_from_slice(&dst.octets());
    buf.extend_from_slice(&[0, proto]);
    buf.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    buf.extend_from_slice(l4);
    csum(&buf)
}

/// TCP flags for [`tcp`].
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Ethernet + IPv4 + a bare TCP header with `flags`.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let c = l4_csum(src, dst, 6, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(src_mac, dst_mac, src, dst, 6, &t)
}

/// Ethernet + IPv4 + UDP with `payload` bytes of data.
pub fn udp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload: usize,
) -> Vec<u8> {
    let mut u = vec![0u8; 8 + payload];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    let c = l4_csum(src, dst, 17, &u);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(src_mac, dst_mac, src, dst, 17, &u)
}

/// An ICMP error (`type`/`code`) from `src` to `dst` quoting the first 28
/// bytes of `about` (an Ethernet frame: its IPv4 header and 8 bytes more).
pub fn icmp_error(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: u8,
    code: u8,
    about: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![kind, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&about[14..14 + 28]);
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(src_mac, dst_mac, src, dst, 1, &icmp)
}

/// One fragment of a datagram: `offset` in 8-byte units, `more` for the
/// MF flag, `body` what follows the IPv4 header (the L4 header only in the
/// first fragment).
#[allow(clippy::too_many_arguments)]
pub fn ipv4_fragment(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    id: u16,
    offset: u16,
    more: bool,
    body: &[u8],
) -> Vec<u8> {
    let mut p = ipv4_frame(src_mac, dst_mac, src, dst, proto, body);
    let ip = &mut p[14..34];
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    let flags = offset & 0x1fff | if more { 0x2000 } else { 0 };
    ip[6..8].copy_from_slice(&flags.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = csum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    p
}
