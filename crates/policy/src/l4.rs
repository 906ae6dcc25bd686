//! The layer-4 part of a policy map key, and the split of a port range
//! into the aligned prefixes an LPM trie can hold.

/// What a map entry matches of a packet's protocol and destination port.
///
/// In the LPM key these are the last 24 bits (proto 8, dport 16): `Any`
/// stops the prefix before the protocol, `Proto` covers the protocol only,
/// `Port` the protocol and `prefix_len` bits of the port. `Port` with
/// `prefix_len` 0 is the same LPM key as `Proto`; the compiler only ever
/// emits `Proto` for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4 {
    /// Every protocol, every port.
    Any,
    /// One protocol, every port.
    Proto(u8),
    /// One protocol, the ports whose first `prefix_len` bits (of 16) equal
    /// `port`'s; the bits of `port` past the prefix are 0.
    Port { proto: u8, port: u16, prefix_len: u8 },
}

impl L4 {
    /// Whether a packet's protocol and destination port fall in this.
    pub fn matches(&self, proto: u8, dport: u16) -> bool {
        match *self {
            L4::Any => true,
            L4::Proto(p) => p == proto,
            L4::Port { proto: p, port, prefix_len } => p == proto && dport & port_mask(prefix_len) == port,
        }
    }

    /// How many bits of the 24-bit (proto, dport) suffix the LPM key
    /// matches; the longest matching entry wins a lookup.
    pub fn prefix_bits(&self) -> u32 {
        match *self {
            L4::Any => 0,
            L4::Proto(_) => 8,
            L4::Port { prefix_len, .. } => 8 + u32::from(prefix_len),
        }
    }
}

/// The mask of the first `prefix_len` bits of a port (0 to 16).
pub fn port_mask(prefix_len: u8) -> u16 {
    u16::MAX.checked_shl(16 - u32::from(prefix_len)).unwrap_or(0)
}

/// Splits `lo..=hi` into the fewest aligned prefixes `(port, prefix_len)`,
/// in ascending order: each covers `2^(16 - prefix_len)` ports starting at
/// `port`, and together they cover exactly the range. `0..=65535` is one
/// prefix of length 0; a single port one of length 16; the worst case
/// (`1..=65534`) takes 30.
///
/// # Panics
/// If `lo > hi`.
pub fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    assert!(lo <= hi, "port range {lo}..={hi} is reversed");
    let mut out = Vec::new();
    let (mut start, end) = (u32::from(lo), u32::from(hi) + 1);
    while start < end {
        // The largest block aligned at `start` (a power of two dividing
        // it), shrunk until it fits in what is left of the range.
        let mut size = if start == 0 { 1 << 16 } else { 1u32 << start.trailing_zeros() };
        while start + size > end {
            size >>= 1;
        }
        let prefix_len = 16 - size.trailing_zeros();
        out.push((start as u16, prefix_len as u8));
        start += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks coverage port by port, and alignment.
    fn check(lo: u16, hi: u16) -> Vec<(u16, u8)> {
        let prefixes = port_prefixes(lo, hi);
        for &(port, len) in &prefixes {
            assert_eq!(port & !port_mask(len), 0, "{lo}..={hi}: {port}/{len} has bits past its prefix");
        }
        for p in 0..=u16::MAX {
            let hits = prefixes
                .iter()
                .filter(|&&(port, len)| L4::Port { proto: 6, port, prefix_len: len }.matches(6, p))
                .count();
            assert_eq!(
                hits,
                usize::from((lo..=hi).contains(&p)),
                "{lo}..={hi}: port {p} covered {hits} times"
            );
        }
        prefixes
    }

    #[test]
    fn whole_range_is_one_prefix() {
        assert_eq!(check(0, 65535), vec![(0, 0)]);
    }

    #[test]
    fn single_ports() {
        for p in [0, 1, 80, 443, 32768, 65535] {
            assert_eq!(check(p, p), vec![(p, 16)]);
        }
    }

    #[test]
    fn odd_boundaries() {
        assert_eq!(check(80, 81), vec![(80, 15)]);
        assert_eq!(check(81, 82), vec![(81, 16), (82, 16)]);
        assert_eq!(check(1024, 2047), vec![(1024, 6)]);
        assert_eq!(check(1, 65535).len(), 16);
        assert_eq!(check(0, 65534).len(), 16);
        assert_eq!(check(1, 65534).len(), 30);
        assert_eq!(check(32768, 65535), vec![(32768, 1)]);
        assert_eq!(check(8000, 8080), vec![(8000, 10), (8064, 12), (8080, 16)]);
        check(30000, 32767);
        check(65534, 65535);
    }

    #[test]
    fn greedy_is_minimal_on_small_ranges() {
        // The fewest aligned blocks for lo..=hi, by dynamic programming
        // over the end position, for every range within 0..64.
        for lo in 0u16..64 {
            for hi in lo..64 {
                let mut best = vec![usize::MAX; 65];
                best[usize::from(lo)] = 0;
                for s in usize::from(lo)..=usize::from(hi) {
                    if best[s] == usize::MAX {
                        continue;
                    }
                    let mut size = 1;
                    while s % size == 0 && s + size <= usize::from(hi) + 1 {
                        best[s + size] = best[s + size].min(best[s] + 1);
                        size *= 2;
                    }
                }
                assert_eq!(port_prefixes(lo, hi).len(), best[usize::from(hi) + 1], "{lo}..={hi}");
            }
        }
    }

    #[test]
    fn l4_matching_and_specificity() {
        assert!(L4::Any.matches(1, 0));
        assert!(L4::Proto(17).matches(17, 53) && !L4::Proto(17).matches(6, 53));
        let p = L4::Port { proto: 6, port: 80, prefix_len: 15 };
        assert!(p.matches(6, 80) && p.matches(6, 81) && !p.matches(6, 82) && !p.matches(17, 80));
        assert!(L4::Port { proto: 6, port: 0, prefix_len: 0 }.matches(6, 65535));
        assert_eq!((L4::Any.prefix_bits(), L4::Proto(6).prefix_bits(), p.prefix_bits()), (0, 8, 23));
    }

    #[test]
    #[should_panic(expected = "reversed")]
    fn reversed_range_panics() {
        port_prefixes(2, 1);
    }
}
