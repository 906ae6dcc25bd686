//! Operations on one attachment (container id, ifname) run one at a time:
//! a DEL that arrives while its ADD is in flight waits for it, so every
//! outcome is one of "added" or "deleted", never a mix. Different
//! attachments never wait for each other here.

use crate::state::AttachmentKey;
use std::{
    collections::HashSet,
    sync::{Condvar, Mutex},
};

#[derive(Default)]
pub struct AttachmentLocks {
    busy: Mutex<HashSet<AttachmentKey>>,
    freed: Condvar,
}

pub struct Held<'a> {
    locks: &'a AttachmentLocks,
    key: AttachmentKey,
}

impl AttachmentLocks {
    pub fn lock(&self, key: &AttachmentKey) -> Held<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while busy.contains(key) {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        busy.insert(key.clone());
        Held { locks: self, key: key.clone() }
    }

    /// Attachments with an operation in flight (for `weft status`).
    pub fn busy(&self) -> usize {
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut busy = self.locks.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.remove(&self.key);
        self.locks.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    #[test]
    fn one_attachment_one_operation_at_a_time() {
        let locks = Arc::new(AttachmentLocks::default());
        let inside: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let (locks, inside) = (locks.clone(), inside.clone());
                std::thread::spawn(move || {
                    let key = ("c".to_string(), if i % 2 == 0 { "eth0" } else { "eth1" }.to_string());
                    for _ in 0..50 {
                        let _g = locks.lock(&key);
                        assert_eq!(inside[i % 2].fetch_add(1, Ordering::SeqCst), 0, "one per key");
                        std::thread::yield_now();
                        inside[i % 2].fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(locks.busy(), 0);
    }
}
