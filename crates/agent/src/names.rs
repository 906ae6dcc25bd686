//! Deterministic names and MAC addresses for a pod's devices, derived from
//! the attachment (container id, ifname) so a restarted agent finds them.

/// FNV-1a: stable across Rust versions, unlike std's hasher.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn attachment_hash(container_id: &str, ifname: &str) -> u64 {
    fnv1a(&format!("{container_id}/{ifname}"))
}

/// Host-side device: "lxc" + 12 hex digits (15 chars, the kernel's limit).
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    format!("lxc{:012x}", attachment_hash(container_id, ifname) & 0xffff_ffff_ffff)
}

/// Whether a device name is one `host_ifname` makes.
pub fn is_pod_device(name: &str) -> bool {
    name.len() == 15 && name.starts_with("lxc") && name[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Locally administered unicast MACs: 0e:.. on the host side, 0a:.. in the pod.
pub fn macs(container_id: &str, ifname: &str) -> ([u8; 6], [u8; 6]) {
    let h = attachment_hash(container_id, ifname).to_be_bytes();
    let host = [0x0e, h[3], h[4], h[5], h[6], h[7]];
    let pod = [0x0a, h[3], h[4], h[5], h[6], h[7]];
    (host, pod)
}

/// A first guess for the endpoint id in 1..=4095; the caller probes on.
pub fn endpoint_id_seed(container_id: &str, ifname: &str) -> u16 {
    (attachment_hash(container_id, ifname) % 4095) as u16 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_are_stable() {
        let n = host_ifname("abc", "eth0");
        assert_eq!(n.len(), 15);
        assert!(is_pod_device(&n));
        assert!(!is_pod_device("lxc_health") && !is_pod_device("weft_host"));
        assert_eq!(n, host_ifname("abc", "eth0"));
        assert_ne!(n, host_ifname("abd", "eth0"));
        let (h, p) = macs("abc", "eth0");
        assert_eq!(h[0] & 0x03, 0x02, "locally administered unicast");
        assert_eq!(p[0] & 0x03, 0x02);
        assert_ne!(h, p);
        let id = endpoint_id_seed("abc", "eth0");
        assert!((1..=4095).contains(&id));
    }
}
