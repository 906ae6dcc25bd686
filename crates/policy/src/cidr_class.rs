//! CIDR classes: the datapath looks up a peer address in an LPM map of
//! every CIDR that policies reference and gets the id of the longest one
//! containing it (0 if none). Two CIDRs are always either nested or
//! disjoint, so that one id tells membership in every referenced CIDR: the
//! address is in `N` exactly when `N` contains the class's CIDR.
//!
//! Ids are stable: a CIDR keeps its id for as long as some policy
//! references it, and ids are never reused (a new CIDR gets a fresh one),
//! so a map entry compiled before an update can never start matching
//! another network. `u32` ids last for billions of policy updates.

use crate::Ipv4Cidr;
use std::{collections::BTreeMap, net::Ipv4Addr};

/// The class of an address in no referenced CIDR.
pub const NO_CLASS: u32 = 0;

/// CIDR → class id, reference-counted by the policies that use a CIDR.
#[derive(Debug, Clone, Default)]
pub struct ClassTable {
    by_cidr: BTreeMap<Ipv4Cidr, (u32, usize)>,
    by_id: BTreeMap<u32, Ipv4Cidr>,
    next: u32,
}

impl ClassTable {
    pub fn new() -> ClassTable {
        ClassTable { next: 1, ..ClassTable::default() }
    }

    /// Takes a reference to `cidr`, allocating its id on first use.
    pub fn acquire(&mut self, cidr: Ipv4Cidr) -> u32 {
        if let Some((id, refs)) = self.by_cidr.get_mut(&cidr) {
            *refs += 1;
            return *id;
        }
        let id = self.next;
        self.next += 1;
        self.by_cidr.insert(cidr, (id, 1));
        self.by_id.insert(id, cidr);
        id
    }

    /// Drops a reference; the CIDR leaves the table with its last one.
    pub fn release(&mut self, cidr: Ipv4Cidr) {
        if let Some((id, refs)) = self.by_cidr.get_mut(&cidr) {
            *refs -= 1;
            if *refs == 0 {
                let id = *id;
                self.by_cidr.remove(&cidr);
                self.by_id.remove(&id);
            }
        }
    }

    /// The current table, for the agent to mirror into the datapath's
    /// LPM map, ordered by CIDR.
    pub fn classes(&self) -> Vec<(Ipv4Cidr, u32)> {
        self.by_cidr.iter().map(|(cidr, (id, _))| (*cidr, *id)).collect()
    }

    pub fn id_of(&self, cidr: &Ipv4Cidr) -> Option<u32> {
        self.by_cidr.get(cidr).map(|(id, _)| *id)
    }

    pub fn cidr_of(&self, id: u32) -> Option<Ipv4Cidr> {
        self.by_id.get(&id).copied()
    }

    /// What the datapath's LPM lookup gives for an address: the id of the
    /// longest CIDR containing it, or [`NO_CLASS`].
    pub fn classify(&self, addr: Ipv4Addr) -> u32 {
        (0..=32u8)
            .rev()
            .find_map(|len| {
                let net = Ipv4Cidr::new(Ipv4Addr::from(u32::from(addr) & mask(len)), len).ok()?;
                self.id_of(&net)
            })
            .unwrap_or(NO_CLASS)
    }

    /// An address whose class is `id` ([`NO_CLASS`] included), if there is
    /// one: a class whose CIDR is entirely covered by longer ones has none.
    /// For tests and tooling that want to try every class.
    pub fn sample(&self, id: u32) -> Option<Ipv4Addr> {
        let (lo, hi) = match id {
            NO_CLASS => (0u64, 1u64 << 32),
            _ => {
                let cidr = self.cidr_of(id)?;
                let lo = u64::from(u32::from(cidr.addr()));
                (lo, lo + (1u64 << (32 - cidr.prefix_len())))
            }
        };
        // The CIDRs strictly inside (or, for NO_CLASS, all of them), as
        // address intervals in order; the first gap is the answer.
        let mut inner: Vec<(u64, u64)> = self
            .by_cidr
            .keys()
            .filter(|c| Some(**c) != self.cidr_of(id))
            .map(|c| {
                let s = u64::from(u32::from(c.addr()));
                (s, s + (1u64 << (32 - c.prefix_len())))
            })
            .filter(|&(s, e)| s >= lo && e <= hi)
            .collect();
        inner.sort_unstable();
        let mut at = lo;
        for (s, e) in inner {
            if s > at {
                break;
            }
            at = at.max(e);
        }
        (at < hi).then(|| Ipv4Addr::from(at as u32))
    }
}

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn ids_are_stable_and_never_reused() {
        let mut t = ClassTable::new();
        let a = t.acquire(cidr("10.0.0.0/8"));
        let b = t.acquire(cidr("10.1.0.0/16"));
        assert_eq!(t.acquire(cidr("10.0.0.0/8")), a);
        t.release(cidr("10.0.0.0/8"));
        assert_eq!(t.id_of(&cidr("10.0.0.0/8")), Some(a), "one reference is left");
        t.release(cidr("10.0.0.0/8"));
        assert_eq!(t.id_of(&cidr("10.0.0.0/8")), None);
        let c = t.acquire(cidr("192.168.0.0/16"));
        assert!(c != a && c != b);
        assert_eq!(t.acquire(cidr("10.0.0.0/8")), c + 1, "a returning CIDR gets a fresh id");
        assert_eq!(t.id_of(&cidr("10.1.0.0/16")), Some(b));
        assert_eq!(t.classes().len(), 3);
    }

    #[test]
    fn classify_takes_the_longest() {
        let mut t = ClassTable::new();
        let wide = t.acquire(cidr("10.0.0.0/8"));
        let narrow = t.acquire(cidr("10.1.0.0/16"));
        let all = t.acquire(cidr("0.0.0.0/0"));
        assert_eq!(t.classify(Ipv4Addr::new(10, 1, 2, 3)), narrow);
        assert_eq!(t.classify(Ipv4Addr::new(10, 2, 2, 3)), wide);
        assert_eq!(t.classify(Ipv4Addr::new(11, 0, 0, 1)), all);
        t.release(cidr("0.0.0.0/0"));
        assert_eq!(t.classify(Ipv4Addr::new(11, 0, 0, 1)), NO_CLASS);
    }

    #[test]
    fn samples_fall_in_their_class() {
        let mut t = ClassTable::new();
        for c in ["10.0.0.0/8", "10.0.0.0/16", "10.1.0.0/16", "0.0.0.0/1", "1.2.3.4/32", "10.2.0.0/24"] {
            t.acquire(cidr(c));
        }
        for (_, id) in t.classes().into_iter().chain([(cidr("0.0.0.0/0"), NO_CLASS)]) {
            let addr = t.sample(id).expect("reachable");
            assert_eq!(t.classify(addr), id, "{addr}");
        }
        // A /31 split into its two /32s has no address of its own.
        t.acquire(cidr("9.9.9.8/32"));
        t.acquire(cidr("9.9.9.9/32"));
        let covered = t.acquire(cidr("9.9.9.8/31"));
        assert_eq!(t.sample(covered), None);
    }
}
