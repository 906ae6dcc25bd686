//! One-line summaries of captured packet heads, in the style of
//! `cilium monitor`: "10.0.0.1:4000 -> 10.0.0.2:80 tcp SYN",
//! "10.0.0.1 -> 10.0.0.2 EchoRequest", "aa:.. -> bb:.. ARP".

use std::net::Ipv4Addr;

pub fn mac(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

pub fn summary(p: &[u8]) -> String {
    if p.len() < 14 {
        return format!("{} bytes", p.len());
    }
    let ethertype = u16::from_be_bytes([p[12], p[13]]);
    let l3 = &p[14..];
    match ethertype {
        0x0806 => arp(p, l3),
        0x0800 => ipv4(l3).unwrap_or_else(|| "truncated IPv4".into()),
        0x86dd => format!("{} -> {} IPv6", mac(&p[6..12]), mac(&p[0..6])),
        t => format!("{} -> {} ethertype {t:#06x}", mac(&p[6..12]), mac(&p[0..6])),
    }
}

fn arp(p: &[u8], a: &[u8]) -> String {
    let base = format!("{} -> {} ARP", mac(&p[6..12]), mac(&p[0..6]));
    if a.len() < 28 {
        return base;
    }
    let op = u16::from_be_bytes([a[6], a[7]]);
    let sip = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
    let tip = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
    match op {
        1 => format!("{base} who-has {tip} tell {sip}"),
        2 => format!("{base} {sip} is-at {}", mac(&a[8..14])),
        _ => base,
    }
}

fn ipv4(l3: &[u8]) -> Option<String> {
    if l3.len() < 20 {
        return None;
    }
    let ihl = ((l3[0] & 0x0f) as usize) * 4;
    let proto = l3[9];
    let src = Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15]);
    let dst = Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19]);
    let l4 = l3.get(ihl..).unwrap_or(&[]);
    let ports = |l4: &[u8]| -> Option<(u16, u16)> {
        (l4.len() >= 4).then(|| (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]])))
    };
    Some(match proto {
        1 => {
            let kind = match l4.first() {
                Some(0) => "EchoReply".to_string(),
                Some(8) => "EchoRequest".to_string(),
                Some(3) => "DestinationUnreachable".to_string(),
                Some(11) => "TimeExceeded".to_string(),
                Some(t) => format!("ICMP type {t}"),
                None => "ICMP".to_string(),
            };
            format!("{src} -> {dst} {kind}")
        }
        6 => match ports(l4) {
            Some((sp, dp)) => {
                let flags = l4.get(13).copied().unwrap_or(0);
                format!("{src}:{sp} -> {dst}:{dp} tcp{}", tcp_flags(flags))
            }
            None => format!("{src} -> {dst} tcp"),
        },
        4 => match ipv4(l4) {
            Some(inner) => format!("{src} -> {dst} IPIP: {inner}"),
            None => format!("{src} -> {dst} IPIP"),
        },
        17 => match ports(l4) {
            Some((sp, dp)) => format!("{src}:{sp} -> {dst}:{dp} udp"),
            None => format!("{src} -> {dst} udp"),
        },
        p => format!("{src} -> {dst} proto {p}"),
    })
}

fn tcp_flags(f: u8) -> String {
    let names = [(0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH")];
    let set: Vec<&str> = names.iter().filter(|(b, _)| f & b != 0).map(|(_, n)| *n).collect();
    if set.is_empty() { String::new() } else { format!(" {}", set.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_and_tcp_summaries() {
        let mut p = vec![0u8; 14 + 20 + 20];
        p[12] = 0x08;
        p[14] = 0x45;
        p[14 + 9] = 1;
        p[14 + 12..14 + 16].copy_from_slice(&[10, 244, 1, 2]);
        p[14 + 16..14 + 20].copy_from_slice(&[10, 244, 1, 3]);
        p[34] = 8;
        assert_eq!(summary(&p), "10.244.1.2 -> 10.244.1.3 EchoRequest");
        p[14 + 9] = 6;
        p[34..36].copy_from_slice(&40000u16.to_be_bytes());
        p[36..38].copy_from_slice(&80u16.to_be_bytes());
        p[34 + 13] = 0x12;
        assert_eq!(summary(&p), "10.244.1.2:40000 -> 10.244.1.3:80 tcp SYN, ACK");
    }
}
