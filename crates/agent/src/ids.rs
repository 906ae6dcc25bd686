//! Endpoint ids: 16 bits in the datapath's maps and events. A node holds at
//! most [`MAX_ENDPOINTS`] pods, so a pod CIDR with more addresses is refused
//! at start; running out is an error at once, never a search without end.

use std::collections::BTreeSet;

/// Endpoints a node can hold: ids are 1..=65535, and weft_endpoints
/// (65536 entries) keeps room for the node's own addresses.
pub const MAX_ENDPOINTS: usize = 65536 - 256;

/// The free ids, so taking one is a lookup, not a search.
#[derive(Debug)]
pub struct EndpointIds {
    free: BTreeSet<u16>,
    limit: u16,
}

impl Default for EndpointIds {
    fn default() -> Self {
        Self::with_limit(u16::MAX)
    }
}

impl EndpointIds {
    pub fn with_limit(limit: u16) -> Self {
        let limit = limit.max(1);
        Self { free: (1..=limit).collect(), limit }
    }

    /// The first free id at or after `seed` (wrapping), or None when all
    /// are taken. Seeds come from the attachment so ids are stable.
    pub fn take(&mut self, seed: u16) -> Option<u16> {
        let id = *self.free.range(seed.clamp(1, self.limit)..).next().or_else(|| self.free.first())?;
        self.free.remove(&id);
        Some(id)
    }

    /// Marks an id found in persisted state; false if it was taken.
    pub fn claim(&mut self, id: u16) -> bool {
        self.free.remove(&id)
    }

    pub fn free(&mut self, id: u16) {
        if (1..=self.limit).contains(&id) {
            self.free.insert(id);
        }
    }

    pub fn in_use(&self) -> usize {
        self.limit as usize - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_is_an_immediate_none() {
        let mut ids = EndpointIds::with_limit(4095);
        for i in 0..4095u32 {
            assert!(ids.take((i * 7 % 4095) as u16 + 1).is_some(), "id {i}");
        }
        let start = std::time::Instant::now();
        assert_eq!(ids.take(17), None, "the 4,096th id does not exist");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        ids.free(33);
        assert_eq!(ids.take(4000), Some(33), "probing wraps around to the freed id");
    }

    #[test]
    fn the_full_space_holds_every_address_of_the_largest_cidr() {
        let mut ids = EndpointIds::default();
        for _ in 0..MAX_ENDPOINTS {
            assert!(ids.take(1).is_some());
        }
        assert_eq!(ids.in_use(), MAX_ENDPOINTS);
        assert!(!ids.claim(1), "1 is taken");
    }
}
