//! Following a prefix of the store: a thread that lists it, then watches it,
//! and feeds a consumer the state and every change in order. It replaces
//! polling `list` with one listing and a stream of changes.
//!
//! After a lost connection it watches again from the revision after the
//! last one it saw (no change twice, none missed); when the store no longer
//! has that history (etcd compacted it) it lists again and starts over with
//! a [`Update::Reset`].

use crate::{Change, Revision, Store, WatchError, WatchStream};
use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Updates the follower may be ahead of its consumer before it waits.
const CHANNEL: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often the thread looks whether its Follower was dropped.
const POLL: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// Everything under the prefix at `rev` (keys without the store's
    /// prefix): replace what you have. Sent first and after every re-list.
    Reset {
        items: BTreeMap<String, Vec<u8>>,
        rev: Revision,
    },
    Put {
        key: String,
        value: Vec<u8>,
        rev: Revision,
    },
    Delete {
        key: String,
        rev: Revision,
    },
    /// The store cannot be reached (once per outage); what you have may be
    /// stale. Later updates continue where the last one left off.
    Down(String),
}

impl Update {
    /// Applies the update to a consumer's copy of the prefix.
    pub fn apply(&self, items: &mut BTreeMap<String, Vec<u8>>) {
        match self {
            Update::Reset { items: all, .. } => *items = all.clone(),
            Update::Put { key, value, .. } => {
                items.insert(key.clone(), value.clone());
            }
            Update::Delete { key, .. } => {
                items.remove(key);
            }
            Update::Down(_) => {}
        }
    }

    /// The revision the update brings the consumer to (None for Down).
    pub fn rev(&self) -> Option<Revision> {
        match self {
            Update::Reset { rev, .. } | Update::Put { rev, .. } | Update::Delete { rev, .. } => Some(*rev),
            Update::Down(_) => None,
        }
    }
}

/// The consumer's end; dropping it stops the thread.
pub struct Follower {
    rx: Option<Receiver<Update>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Follower {
    /// The next update; None once the thread has ended.
    pub fn recv(&self) -> Option<Update> {
        self.rx.as_ref()?.recv().ok()
    }

    /// The next update within `timeout`; None on timeout or when ended.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Update> {
        self.rx.as_ref()?.recv_timeout(timeout).ok()
    }

    /// An update if one is waiting.
    pub fn try_recv(&self) -> Option<Update> {
        self.rx.as_ref()?.try_recv().ok()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblocks a thread waiting to send.
        drop(self.rx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts following `prefix`; `name` is for the logs (e.g. "nodes").
pub fn follow(store: Arc<dyn Store>, prefix: &str, name: &str) -> Follower {
    let (tx, rx) = sync_channel(CHANNEL);
    let stop = Arc::new(AtomicBool::new(false));
    let run = Run { store, prefix: prefix.to_string(), name: name.to_string(), tx, stop: stop.clone() };
    let thread = std::thread::Builder::new()
        .name(format!("weft-follow-{name}"))
        .spawn(move || run.run())
        .expect("spawning a thread");
    Follower { rx: Some(rx), stop, thread: Some(thread) }
}

struct Run {
    store: Arc<dyn Store>,
    prefix: String,
    name: String,
    tx: SyncSender<Update>,
    stop: Arc<AtomicBool>,
}

/// Why the thread stops: its Follower is gone.
struct Stopped;

/// Where to go on from.
enum Next {
    /// Watch from this revision (the last one seen + 1).
    From(Revision),
    /// List, because there is no revision yet or its history is gone.
    List { compacted: Option<Revision> },
}

impl Run {
    fn run(self) {
        let _ = self.follow();
    }

    fn follow(&self) -> Result<(), Stopped> {
        let mut next = Next::List { compacted: None };
        let mut backoff = BACKOFF_MIN;
        let mut down = false;
        // Why the last watch ended, until the next one runs.
        let mut interrupted: Option<String> = None;
        loop {
            self.check_stop()?;
            let from = match next {
                Next::From(rev) => rev,
                Next::List { compacted } => match self.store.list_at(&self.prefix) {
                    Ok((items, rev)) => {
                        match compacted {
                            None => log::info!(
                                "follow {}: started at rev {rev} ({} keys under {:?})",
                                self.name,
                                items.len(),
                                self.prefix
                            ),
                            Some(c) => log::warn!(
                                "follow {}: re-listed after compaction at rev {rev} (the store's history starts at {c})",
                                self.name
                            ),
                        }
                        self.send(Update::Reset { items: items.into_iter().collect(), rev })?;
                        next = Next::From(rev + 1);
                        rev + 1
                    }
                    Err(e) => {
                        self.down(&mut down, &mut backoff, e.to_string())?;
                        continue;
                    }
                },
            };
            let mut stream = match self.store.watch(&self.prefix, from) {
                Ok(s) => s,
                Err(e) => {
                    self.down(&mut down, &mut backoff, e.to_string())?;
                    continue;
                }
            };
            if let Some(why) = interrupted.take() {
                log::info!("follow {}: resumed at rev {from} (the watch had ended: {why})", self.name);
            }
            down = false;
            let started = Instant::now();
            match self.drain(stream.as_mut(), &mut next)? {
                WatchError::Compacted { compact_revision } => {
                    next = Next::List { compacted: Some(compact_revision) };
                }
                WatchError::Closed(reason) => {
                    // Watch again at once (a lost connection shows up as a
                    // failed watch, and then as Down); but do not spin on a
                    // watch that keeps closing right away.
                    log::debug!("follow {}: watch closed ({reason})", self.name);
                    interrupted = Some(reason);
                    if started.elapsed() < Duration::from_secs(1) {
                        self.pause(backoff)?;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    } else {
                        backoff = BACKOFF_MIN;
                    }
                }
            }
        }
    }

    /// Passes the watch's events on until it ends; how it ended.
    fn drain(&self, stream: &mut dyn WatchStream, next: &mut Next) -> Result<WatchError, Stopped> {
        loop {
            self.check_stop()?;
            match stream.next(POLL) {
                Ok(events) => {
                    for e in events {
                        *next = Next::From(e.rev + 1);
                        self.send(match e.change {
                            Change::Put { key, value } => Update::Put { key, value, rev: e.rev },
                            Change::Delete { key } => Update::Delete { key, rev: e.rev },
                        })?;
                    }
                }
                Err(end) => return Ok(end),
            }
        }
    }

    /// Tells the consumer once per outage, then waits before the next try.
    fn down(&self, down: &mut bool, backoff: &mut Duration, reason: String) -> Result<(), Stopped> {
        if !*down {
            log::warn!(
                "follow {}: down ({reason}); retrying every {BACKOFF_MIN:?}..{BACKOFF_MAX:?}",
                self.name
            );
            self.send(Update::Down(reason))?;
            *down = true;
        } else {
            log::debug!("follow {}: still down ({reason})", self.name);
        }
        self.pause(*backoff)?;
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        Ok(())
    }

    fn send(&self, u: Update) -> Result<(), Stopped> {
        self.tx.send(u).map_err(|_| Stopped)
    }

    fn check_stop(&self) -> Result<(), Stopped> {
        if self.stop.load(Ordering::Relaxed) { Err(Stopped) } else { Ok(()) }
    }

    /// Sleeps, waking early when the Follower is dropped.
    fn pause(&self, d: Duration) -> Result<(), Stopped> {
        let end = Instant::now() + d;
        while let Some(left) = end.checked_duration_since(Instant::now()).filter(|l| !l.is_zero()) {
            self.check_stop()?;
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        self.check_stop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LocalStore, Op};

    /// Applies updates until the copy equals a fresh listing at the same
    /// revision; the updates seen.
    fn converge(f: &Follower, s: &dyn Store, items: &mut BTreeMap<String, Vec<u8>>) -> Vec<Update> {
        let (want, rev) = s.list_at("nodes/").unwrap();
        let want: BTreeMap<_, _> = want.into_iter().collect();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while *items != want || seen.last().and_then(Update::rev).is_some_and(|r| r < rev) || seen.is_empty()
        {
            let left =
                deadline.checked_duration_since(Instant::now()).expect("the follower caught up within 5 s");
            let Some(u) = f.recv_timeout(left) else { continue };
            u.apply(items);
            seen.push(u);
        }
        seen
    }

    #[test]
    fn a_consumer_of_a_local_store_follower_ends_equal_to_a_fresh_list() {
        let d = std::env::temp_dir().join(format!("weft-store-follow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let s: Arc<dyn Store> = Arc::new(LocalStore::open(&d).unwrap());
        s.put("nodes/a", b"1").unwrap();
        s.put("other/x", b"-").unwrap();
        let f = follow(s.clone(), "nodes/", "test");
        let mut items = BTreeMap::new();
        let first = converge(&f, s.as_ref(), &mut items);
        assert!(matches!(&first[..], [Update::Reset { items, .. }] if items.len() == 1), "{first:?}");

        s.put("nodes/b", b"2").unwrap();
        s.put("nodes/a", b"1'").unwrap();
        s.delete("nodes/b").unwrap();
        s.put("other/y", b"not followed").unwrap();
        s.txn(&[], &[Op::Put("nodes/c".into(), b"3".to_vec()), Op::Delete("nodes/a".into())]).unwrap();
        let seen = converge(&f, s.as_ref(), &mut items);
        assert_eq!(seen.len(), 5, "one update per write under nodes/, no Reset: {seen:?}");
        let revs: Vec<_> = seen.iter().filter_map(Update::rev).collect();
        assert!(revs.windows(2).all(|w| w[0] <= w[1]), "in order: {revs:?}");
        assert_eq!(items.keys().collect::<Vec<_>>(), ["nodes/c"]);

        let start = Instant::now();
        drop(f);
        assert!(start.elapsed() < Duration::from_secs(1), "dropping the follower stops its thread promptly");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
