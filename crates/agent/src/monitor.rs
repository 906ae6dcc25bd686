//! Fan-out of datapath events to `weft monitor` clients. One reader thread
//! drains the ring buffer; each client gets a bounded queue so a slow client
//! loses events (and is told so) instead of stalling the others. Traces and
//! debug events are switched on in the datapath only while someone listens.

use crate::state::Agent;
use aya::maps::{MapData, RingBuf};
use std::{
    collections::HashMap,
    os::fd::AsRawFd,
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
};
use weft_datapath::{
    events::MonitorEvent,
    maps::{CFG_F_DEBUG, CFG_F_TRACE, WeftEvent},
};

const QUEUE: usize = 8192;

struct Sub {
    debug: bool,
    tx: SyncSender<Arc<str>>,
    lost: u64,
}

#[derive(Default)]
pub struct Monitor {
    subs: Mutex<HashMap<u64, Sub>>,
    next: Mutex<u64>,
    /// Clients for which the datapath is already emitting (what `weft
    /// status` reports, so a script can wait until its monitor is live).
    live: std::sync::atomic::AtomicUsize,
}

impl Monitor {
    pub fn subscribe(&self, debug: bool) -> (u64, Receiver<Arc<str>>) {
        let (tx, rx) = sync_channel(QUEUE);
        let mut next = self.next.lock().unwrap();
        *next += 1;
        self.subs.lock().unwrap().insert(*next, Sub { debug, tx, lost: 0 });
        (*next, rx)
    }

    pub fn unsubscribe(&self, id: u64) {
        self.subs.lock().unwrap().remove(&id);
    }

    pub fn count(&self) -> usize {
        self.live.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn set_live(&self, up: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        if up {
            self.live.fetch_add(1, SeqCst);
        } else {
            self.live.fetch_sub(1, SeqCst);
        }
    }

    pub fn datapath_flags(&self) -> u32 {
        let subs = self.subs.lock().unwrap();
        let mut f = 0;
        if !subs.is_empty() {
            f |= CFG_F_TRACE;
        }
        if subs.values().any(|s| s.debug) {
            f |= CFG_F_DEBUG;
        }
        f
    }

    fn publish(&self, ev: &MonitorEvent) {
        let mut subs = self.subs.lock().unwrap();
        if subs.is_empty() {
            return;
        }
        let verbose = matches!(ev.kind.as_str(), "debug" | "capture");
        let line: Arc<str> = match serde_json::to_string(ev) {
            Ok(s) => s.into(),
            Err(_) => return,
        };
        subs.retain(|_, s| {
            if verbose && !s.debug {
                return true;
            }
            match s.tx.try_send(line.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    s.lost += 1;
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }
}

/// Starts the thread that drains the ring buffer for the agent's lifetime.
pub fn start_reader(agent: Arc<Agent>, mut rb: RingBuf<MapData>) {
    std::thread::Builder::new()
        .name("weft-events".into())
        .spawn(move || {
            let mut names: HashMap<u32, String> = HashMap::new();
            loop {
                let mut pfd = libc::pollfd { fd: rb.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 500) };
                while let Some(item) = rb.next() {
                    let Some(raw) = WeftEvent::from_bytes(&item) else { continue };
                    let mut ev = MonitorEvent::decode(&raw);
                    if ev.ifindex != 0 {
                        let name = names
                            .entry(ev.ifindex)
                            .or_insert_with(|| weft_net::ifname(ev.ifindex).unwrap_or_default());
                        if !name.is_empty() {
                            ev.ifname = Some(name.clone());
                        }
                    }
                    agent.monitor.publish(&ev);
                }
                // Device names change as pods come and go.
                if names.len() > 4096 {
                    names.clear();
                }
            }
        })
        .expect("spawn event reader");
}
