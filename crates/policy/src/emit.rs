//! The entries of one (peer, class) group of a cascade level: given the
//! verdict the group should give on each cell and what the later levels
//! already give there, the fewest-ish entries that make the cascade right,
//! with LPM's longest-match in mind.
//!
//! Within a group a lookup takes the longest matching L4 entry: a port
//! prefix of the protocol, else the protocol entry, else the wildcard. So
//! a wildcard (needed as soon as "every other protocol" must change) also
//! covers the named protocols' cells, and the pieces that differ from it
//! must be emitted; a protocol entry likewise covers its ports.

use crate::{cells::Cells, l4::L4, l4::port_prefixes};

/// Verdicts are indices into the compile's verdict table.
pub(crate) type V = u32;

/// The entries of one group, and what the group's lookup gives per cell
/// (`None`: no entry covers it, the lookup falls through).
pub(crate) fn emit(cells: &Cells, want: &[V], below: &[Option<V>]) -> (Vec<(L4, V)>, Vec<Option<V>>) {
    let other = cells.other();
    let mut entries = Vec::new();
    let mut cover: Vec<Option<V>> = vec![None; cells.len()];
    let wild = (below[other] != Some(want[other])).then_some(want[other]);
    if let Some(w) = wild {
        entries.push((L4::Any, w));
        cover[other] = Some(w);
    }
    for (i, &proto) in cells.protos().iter().enumerate() {
        let range = cells.proto_cells(i);
        // Without a protocol entry, the group gives the wildcard or falls
        // through; with one of verdict v, it gives v.
        let base: Vec<Option<V>> = range.clone().map(|c| wild.or(below[c])).collect();
        let (ports, n) = runs(cells, i, want, &base);
        let mut best = (None, ports, n);
        let mut values: Vec<V> = want[range.clone()].to_vec();
        values.sort_unstable();
        values.dedup();
        for v in values {
            let (ports, n) = runs(cells, i, want, &vec![Some(v); range.len()]);
            if 1 + n < best.2 + usize::from(best.0.is_some()) {
                best = (Some(v), ports, n);
            }
        }
        let (proto_v, ports, _) = best;
        for c in range.clone() {
            cover[c] = proto_v.or(wild);
        }
        if let Some(v) = proto_v {
            entries.push((L4::Proto(proto), v));
        }
        for (first, last, v) in ports {
            let (lo, _) = cells.span(i, first);
            let (_, hi) = cells.span(i, last);
            entries.extend(
                port_prefixes(lo, hi)
                    .into_iter()
                    .map(|(port, prefix_len)| (L4::Port { proto, port, prefix_len }, v)),
            );
            cover[first..=last].iter_mut().for_each(|x| *x = Some(v));
        }
    }
    (entries, cover)
}

/// The port ranges (first cell, last cell, verdict) of protocol `i` to
/// emit so that the group gives `want` where `base` does not already.
/// Each run of cells with the same wanted verdict that has a cell to fix is
/// covered either whole or just where it must be, whichever takes fewer
/// prefixes (covering a cell that is already right with its right verdict
/// is harmless). Also gives the number of prefixes they take.
fn runs(cells: &Cells, i: usize, want: &[V], base: &[Option<V>]) -> (Vec<(usize, usize, V)>, usize) {
    let range = cells.proto_cells(i);
    let start = range.start;
    let prefixes = |a: usize, b: usize| port_prefixes(cells.span(i, a).0, cells.span(i, b).1).len();
    let (mut out, mut total) = (Vec::new(), 0);
    let mut a = range.start;
    while a < range.end {
        let v = want[a];
        let mut b = a;
        while b + 1 < range.end && want[b + 1] == v {
            b += 1;
        }
        // The stretches of the run that need fixing.
        let mut need = Vec::new();
        let mut c = a;
        while c <= b {
            if base[c - start] != Some(v) {
                let s = c;
                while c < b && base[c + 1 - start] != Some(v) {
                    c += 1;
                }
                need.push((s, c, v));
            }
            c += 1;
        }
        if !need.is_empty() {
            let exact: usize = need.iter().map(|&(s, e, _)| prefixes(s, e)).sum();
            let whole = prefixes(a, b);
            if whole < exact {
                out.push((a, b, v));
                total += whole;
            } else {
                out.extend(need);
                total += exact;
            }
        }
        a = b + 1;
    }
    (out, total)
}

/// The cascade of several levels: per cell, the first that gives a verdict.
pub(crate) fn first_of(levels: &[&[Option<V>]]) -> Vec<Option<V>> {
    let n = levels.first().map_or(0, |l| l.len());
    (0..n).map(|c| levels.iter().find_map(|l| l[c])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::{Cuts, cut_range};

    /// TCP cut at 80 (cells 0-79, 80, 81-65535), UDP whole, other.
    fn cells() -> Cells {
        let mut cuts = Cuts::new();
        cut_range(&mut cuts, 6, 80, 80);
        cut_range(&mut cuts, 17, 0, 65535);
        Cells::new(&cuts)
    }

    #[test]
    fn nothing_when_the_levels_below_agree() {
        let c = cells();
        let want = vec![1; c.len()];
        let (entries, cover) = emit(&c, &want, &vec![Some(1); c.len()]);
        assert!(entries.is_empty());
        assert_eq!(cover, vec![None; c.len()]);
    }

    #[test]
    fn a_wildcard_brings_the_protocol_pieces_that_differ_from_it() {
        let c = cells();
        // Want: deny (0) everywhere but TCP 80 (1); below: nothing.
        let mut want = vec![0; c.len()];
        want[1] = 1;
        let (entries, cover) = emit(&c, &want, &vec![None; c.len()]);
        assert_eq!(entries, vec![(L4::Any, 0), (L4::Port { proto: 6, port: 80, prefix_len: 16 }, 1)]);
        assert_eq!(cover, want.iter().map(|v| Some(*v)).collect::<Vec<_>>());
    }

    #[test]
    fn without_a_wildcard_only_the_differing_ports() {
        let c = cells();
        // Below already denies everything; want TCP 80 allowed.
        let mut want = vec![0; c.len()];
        want[1] = 1;
        let (entries, cover) = emit(&c, &want, &vec![Some(0); c.len()]);
        assert_eq!(entries, vec![(L4::Port { proto: 6, port: 80, prefix_len: 16 }, 1)]);
        assert_eq!(cover[1], Some(1));
        assert_eq!(cover[0], None);
    }

    #[test]
    fn a_protocol_entry_when_it_saves_prefixes() {
        let c = cells();
        // Want all of TCP but port 80 allowed; below denies all.
        let mut want = vec![0; c.len()];
        want[0] = 1;
        want[2] = 1;
        let (entries, _) = emit(&c, &want, &vec![Some(0); c.len()]);
        // Proto(6) allow + port 80 deny beats the 7 + 16 prefixes of
        // 0-79 and 81-65535.
        assert_eq!(entries, vec![(L4::Proto(6), 1), (L4::Port { proto: 6, port: 80, prefix_len: 16 }, 0)]);
    }

    #[test]
    fn cascade_takes_the_first_level_with_a_verdict() {
        let a = [None, Some(1), None];
        let b = [Some(2), Some(3), None];
        assert_eq!(first_of(&[&a, &b]), vec![Some(2), Some(1), None]);
    }
}
