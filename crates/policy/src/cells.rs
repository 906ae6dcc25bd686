//! The (protocol, destination port) space of one endpoint and direction,
//! cut into cells on which every rule is constant: each protocol some rule
//! names is split at the boundaries of the port ranges rules use for it,
//! and one last cell stands for every other protocol (no rule tells those
//! apart). The compiler evaluates rules once per cell instead of once per
//! (protocol, port) point, with sets of cells as bitsets.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Range,
};

/// Where cells start, per protocol: ports in 1..=65535 (0 always starts
/// the first cell).
pub(crate) type Cuts = BTreeMap<u8, BTreeSet<u32>>;

/// Makes `lo..=hi` of `proto` a union of cells.
pub(crate) fn cut_range(cuts: &mut Cuts, proto: u8, lo: u16, hi: u16) {
    let set = cuts.entry(proto).or_default();
    if lo > 0 {
        set.insert(u32::from(lo));
    }
    if hi < u16::MAX {
        set.insert(u32::from(hi) + 1);
    }
}

/// Makes `proto` a protocol of its own (not part of "every other").
pub(crate) fn cut_proto(cuts: &mut Cuts, proto: u8) {
    cuts.entry(proto).or_default();
}

#[derive(Debug, Clone)]
pub(crate) struct Cells {
    protos: Vec<u8>,
    /// Per protocol, the first port of each of its cells (ascending, from 0).
    starts: Vec<Vec<u16>>,
    /// Per protocol, the index of its first cell.
    base: Vec<usize>,
    len: usize,
}

impl Cells {
    pub(crate) fn new(cuts: &Cuts) -> Cells {
        let (mut protos, mut starts, mut base, mut next) = (vec![], vec![], vec![], 0);
        for (proto, set) in cuts {
            let s: Vec<u16> = std::iter::once(0)
                .chain(set.iter().filter(|&&c| (1..=65535).contains(&c)).map(|&c| c as u16))
                .collect();
            protos.push(*proto);
            base.push(next);
            next += s.len();
            starts.push(s);
        }
        Cells { protos, starts, base, len: next + 1 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The cell of every protocol no rule names.
    pub(crate) fn other(&self) -> usize {
        self.len - 1
    }

    pub(crate) fn protos(&self) -> &[u8] {
        &self.protos
    }

    /// The cells of the `i`-th protocol.
    pub(crate) fn proto_cells(&self, i: usize) -> Range<usize> {
        self.base[i]..self.base[i] + self.starts[i].len()
    }

    /// The first and last port of cell `cell` of the `i`-th protocol.
    pub(crate) fn span(&self, i: usize, cell: usize) -> (u16, u16) {
        let k = cell - self.base[i];
        let s = &self.starts[i];
        (s[k], s.get(k + 1).map_or(u16::MAX, |next| next - 1))
    }

    fn proto_index(&self, proto: u8) -> Option<usize> {
        self.protos.binary_search(&proto).ok()
    }

    /// Adds the cells of `proto` that hold ports `lo..=hi` (which must have
    /// been cut; a protocol without cells adds nothing).
    pub(crate) fn add_ports(&self, bits: &mut Bits, proto: u8, lo: u16, hi: u16) {
        let Some(i) = self.proto_index(proto) else { return };
        let s = &self.starts[i];
        let first = s.partition_point(|&p| p < lo);
        let last = s.partition_point(|&p| p <= hi) - 1;
        debug_assert_eq!(s.get(first), Some(&lo), "port {lo} of protocol {proto} starts no cell");
        bits.set_range(self.base[i] + first..self.base[i] + last + 1);
    }

    /// The cell holding a point (for tests).
    #[cfg(test)]
    pub(crate) fn cell_of(&self, proto: u8, port: u16) -> usize {
        match self.proto_index(proto) {
            Some(i) => self.base[i] + self.starts[i].partition_point(|&p| p <= port) - 1,
            None => self.other(),
        }
    }
}

/// A set of cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bits {
    words: Vec<u64>,
}

impl Bits {
    pub(crate) fn zeros(len: usize) -> Bits {
        Bits { words: vec![0; len.div_ceil(64)] }
    }

    pub(crate) fn ones(len: usize) -> Bits {
        let mut b = Bits::zeros(len);
        b.set_range(0..len);
        b
    }

    pub(crate) fn get(&self, i: usize) -> bool {
        self.words[i / 64] >> (i % 64) & 1 == 1
    }

    pub(crate) fn set_range(&mut self, r: Range<usize>) {
        for i in r {
            self.words[i / 64] |= 1 << (i % 64);
        }
    }

    pub(crate) fn and(&mut self, o: &Bits) {
        self.words.iter_mut().zip(&o.words).for_each(|(a, b)| *a &= b);
    }

    pub(crate) fn or(&mut self, o: &Bits) {
        self.words.iter_mut().zip(&o.words).for_each(|(a, b)| *a |= b);
    }

    pub(crate) fn and_not(&mut self, o: &Bits) {
        self.words.iter_mut().zip(&o.words).for_each(|(a, b)| *a &= !b);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let bit = w.trailing_zeros() as usize;
                    w &= w - 1;
                    i * 64 + bit
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_follow_the_cuts() {
        let mut cuts = Cuts::new();
        cut_range(&mut cuts, 6, 80, 80);
        cut_range(&mut cuts, 6, 0, 65535);
        cut_range(&mut cuts, 17, 53, 65535);
        cut_proto(&mut cuts, 1);
        let cells = Cells::new(&cuts);
        // ICMP: one cell; TCP: 0-79, 80, 81-65535; UDP: 0-52, 53-65535; other.
        assert_eq!(cells.len(), 1 + 3 + 2 + 1);
        assert_eq!(cells.protos(), &[1, 6, 17]);
        assert_eq!(cells.proto_cells(1), 1..4);
        assert_eq!(cells.span(1, 2), (80, 80));
        assert_eq!(cells.span(1, 3), (81, 65535));
        assert_eq!(cells.cell_of(6, 79), 1);
        assert_eq!(cells.cell_of(47, 80), cells.other());
        let mut bits = Bits::zeros(cells.len());
        cells.add_ports(&mut bits, 6, 80, 65535);
        cells.add_ports(&mut bits, 17, 0, 65535);
        assert_eq!(bits.iter().collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    }

    #[test]
    fn bit_operations() {
        let mut a = Bits::zeros(130);
        a.set_range(60..70);
        a.set_range(129..130);
        let mut b = Bits::ones(130);
        b.and_not(&a);
        assert!(!b.get(65) && b.get(59) && !b.get(129));
        b.or(&a);
        assert_eq!(b, Bits::ones(130));
        b.and(&a);
        assert_eq!(b.iter().count(), 11);
        assert!(Bits::zeros(3).is_empty() && !a.is_empty());
    }
}
