//! A watch on etcd: a task on the store's runtime reads the gRPC stream and
//! hands each response's events to the consumer's thread through a bounded
//! std channel.

use super::{EtcdStore, describe, strip};
use crate::{Change, Event, Revision, StoreError, WatchError, WatchStream};
use etcd_client::{EventType, WatchOptions};
use std::{
    sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    time::Duration,
};

/// Batches (one per etcd response) a consumer may lag behind before its
/// watch is closed; it then resumes from the last revision it saw.
const QUEUE: usize = 256;

type Batch = Result<Vec<Event>, WatchError>;

struct EtcdWatch {
    rx: Receiver<Batch>,
    task: tokio::task::AbortHandle,
    ended: Option<WatchError>,
}

pub(super) fn start(
    store: &EtcdStore,
    prefix: &str,
    from: Revision,
) -> Result<Box<dyn WatchStream>, StoreError> {
    let full = store.full(prefix);
    // etcd-client waits for etcd's "created" answer, so a watch that could
    // not be set up is an error here, not a stream that stays silent.
    let (watcher, stream) = store.call(move |mut c| {
        let full = full.clone();
        async move { c.watch(full, Some(WatchOptions::new().with_prefix().with_start_revision(from))).await }
    })?;
    let (tx, rx) = sync_channel(QUEUE);
    let prefix = store.prefix.clone();
    let task = store.rt.spawn(async move {
        // The watcher holds the request side: dropping it ends the watch.
        let _watcher = watcher;
        let end = forward(stream, &prefix, &tx).await;
        if let Some(end) = end {
            let _ = tx.try_send(Err(end));
        }
    });
    Ok(Box::new(EtcdWatch { rx, task: task.abort_handle(), ended: None }))
}

/// Forwards responses until the watch ends; the reason, or None when the
/// consumer went away.
async fn forward(
    mut stream: etcd_client::WatchStream,
    prefix: &str,
    tx: &SyncSender<Batch>,
) -> Option<WatchError> {
    loop {
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => return Some(WatchError::Closed("etcd ended the watch stream".into())),
            Err(e) => return Some(WatchError::Closed(describe(&e))),
        };
        if resp.compact_revision() != 0 {
            return Some(WatchError::Compacted { compact_revision: resp.compact_revision() });
        }
        if resp.canceled() {
            return Some(WatchError::Closed(format!("etcd canceled the watch: {}", resp.cancel_reason())));
        }
        let events: Vec<Event> = resp.events().iter().filter_map(|e| event(prefix, e)).collect();
        if events.is_empty() {
            continue;
        }
        match tx.try_send(Ok(events)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Some(WatchError::Closed(format!(
                    "the consumer fell behind by more than {QUEUE} batches of events"
                )));
            }
            Err(TrySendError::Disconnected(_)) => return None,
        }
    }
}

fn event(prefix: &str, e: &etcd_client::Event) -> Option<Event> {
    let kv = e.kv()?;
    let key = strip(prefix, kv.key());
    let change = match e.event_type() {
        EventType::Put => Change::Put { key, value: kv.value().to_vec() },
        EventType::Delete => Change::Delete { key },
    };
    Some(Event { rev: kv.mod_revision(), change })
}

impl WatchStream for EtcdWatch {
    fn next(&mut self, timeout: Duration) -> Result<Vec<Event>, WatchError> {
        if let Some(e) = &self.ended {
            return Err(e.clone());
        }
        let r = match self.rx.recv_timeout(timeout) {
            Ok(batch) => batch,
            Err(RecvTimeoutError::Timeout) => return Ok(Vec::new()),
            // The task ended with a full queue and could not say why.
            Err(RecvTimeoutError::Disconnected) => Err(WatchError::Closed("the watch task ended".into())),
        };
        if let Err(e) = &r {
            self.ended = Some(e.clone());
        }
        r
    }
}

impl Drop for EtcdWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
