//! Small stable ids for things the datapath keys maps by: backends
//! (`u32`) and frontends (`u16` rev-NAT ids).
//!
//! An id stays the same as long as its key is held, so a change to one
//! backend never rewrites another backend's map entry. A released id is
//! not handed out again at once: allocation is next-fit from a cursor
//! that only moves forward (wrapping at the end), so an id freed a moment
//! ago is the last to be reused. That matters because conntrack entries
//! still name the old id for a while; if it were reused immediately, a
//! reply of an old flow could be reverse-translated to the new owner.

use std::{collections::BTreeMap, fmt};

/// Ids in `first..=last`, each held by one key.
#[derive(Debug, Clone)]
pub struct Ids<K: Ord + Clone> {
    first: u32,
    last: u32,
    /// Where the next search starts.
    cursor: u32,
    by_key: BTreeMap<K, u32>,
    by_id: BTreeMap<u32, K>,
}

/// Every id of the range is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdsExhausted {
    pub first: u32,
    pub last: u32,
}

impl fmt::Display for IdsExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all ids {}..={} are in use", self.first, self.last)
    }
}

impl std::error::Error for IdsExhausted {}

impl<K: Ord + Clone> Ids<K> {
    /// Ids `first..=last`. Id 0 is best kept out of the range: the
    /// datapath reads 0 as "none".
    ///
    /// # Panics
    /// If `first > last`.
    pub fn new(first: u32, last: u32) -> Self {
        assert!(first <= last, "empty id range {first}..={last}");
        Ids { first, last, cursor: first, by_key: BTreeMap::new(), by_id: BTreeMap::new() }
    }

    /// The id held by `key`, if any.
    pub fn get(&self, key: &K) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// The key holding `id`, if any.
    pub fn key(&self, id: u32) -> Option<&K> {
        self.by_id.get(&id)
    }

    /// The id of `key`: the one it holds, else a new one.
    pub fn assign(&mut self, key: &K) -> Result<u32, IdsExhausted> {
        if let Some(id) = self.get(key) {
            return Ok(id);
        }
        let id = self.free_from(self.cursor).ok_or_else(|| self.exhausted())?;
        self.by_key.insert(key.clone(), id);
        self.by_id.insert(id, key.clone());
        self.cursor = if id == self.last { self.first } else { id + 1 };
        Ok(id)
    }

    /// Gives back `key`'s id; returns it.
    pub fn release(&mut self, key: &K) -> Option<u32> {
        let id = self.by_key.remove(key)?;
        self.by_id.remove(&id);
        Some(id)
    }

    /// The range, `(first, last)`.
    pub fn range(&self) -> (u32, u32) {
        (self.first, self.last)
    }

    /// The error for this range being full.
    pub fn exhausted(&self) -> IdsExhausted {
        IdsExhausted { first: self.first, last: self.last }
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// How many ids are still free.
    pub fn available(&self) -> usize {
        (self.last - self.first) as usize + 1 - self.by_key.len()
    }

    /// Every (key, id) held, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, u32)> {
        self.by_key.iter().map(|(k, id)| (k, *id))
    }

    /// The first free id at or after `start`, wrapping around once.
    fn free_from(&self, start: u32) -> Option<u32> {
        let gap = |from: u32, to: u32| {
            let mut candidate = from;
            for &held in self.by_id.range(from..=to).map(|(id, _)| id) {
                if held != candidate {
                    break;
                }
                candidate = candidate.checked_add(1)?;
            }
            (candidate <= to).then_some(candidate)
        };
        gap(start, self.last).or_else(|| if start > self.first { gap(self.first, start - 1) } else { None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_not_reused_at_once() {
        let mut ids: Ids<&str> = Ids::new(1, 4);
        assert_eq!((ids.assign(&"a"), ids.assign(&"b"), ids.assign(&"c")), (Ok(1), Ok(2), Ok(3)));
        assert_eq!(ids.assign(&"a"), Ok(1), "a key keeps its id");
        assert_eq!(ids.release(&"b"), Some(2));
        assert_eq!(ids.release(&"b"), None);
        // 2 is free, but the cursor is at 4: a new key gets 4, then wraps to 2.
        assert_eq!(ids.assign(&"d"), Ok(4));
        assert_eq!(ids.assign(&"e"), Ok(2));
        assert_eq!(ids.available(), 0);
        assert_eq!(ids.assign(&"f"), Err(IdsExhausted { first: 1, last: 4 }));
        assert_eq!(ids.assign(&"f").unwrap_err().to_string(), "all ids 1..=4 are in use");
        assert_eq!((ids.get(&"c"), ids.key(3)), (Some(3), Some(&"c")));
        assert_eq!(ids.len(), 4);
        ids.release(&"a");
        assert_eq!(ids.assign(&"f"), Ok(1));
        let held: Vec<_> = ids.iter().collect();
        assert_eq!(held, [(&"c", 3), (&"d", 4), (&"e", 2), (&"f", 1)]);
    }

    #[test]
    fn full_u32_range_does_not_overflow() {
        let mut ids: Ids<u8> = Ids::new(u32::MAX - 1, u32::MAX);
        assert_eq!(ids.assign(&1), Ok(u32::MAX - 1));
        assert_eq!(ids.assign(&2), Ok(u32::MAX));
        assert!(ids.assign(&3).is_err());
        ids.release(&1);
        assert_eq!(ids.assign(&3), Ok(u32::MAX - 1));
    }
}
