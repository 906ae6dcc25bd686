//! Watches and followers against a real etcd: order, resumption after etcd
//! restarts, re-listing after compaction, a stopped etcd.

mod common;

use common::{ADMIN_URL, Etcd, URL, converge, wait_down};
use std::{
    collections::BTreeMap,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};
use weft_store::{Change, EtcdStore, Event, Op, Store, Update, WatchError, follow};

fn put(key: &str, value: &[u8]) -> Change {
    Change::Put { key: key.into(), value: value.to_vec() }
}

#[test]
fn watch_delivers_every_write_in_order_with_increasing_revisions() {
    let etcd = Etcd::start("watch");
    let s = etcd.store();
    s.put("nodes/a", b"1").unwrap();
    let (items, rev) = s.list_at("nodes/").unwrap();
    assert_eq!(items, vec![("nodes/a".to_string(), b"1".to_vec())]);
    // Written between the listing and the watch: still delivered.
    s.put("nodes/b", b"2").unwrap();
    let mut w = s.watch("nodes/", rev + 1).unwrap();
    s.put("other/x", b"not watched").unwrap();
    s.put("nodesX", b"not under nodes/").unwrap();
    s.txn(&[], &[Op::Put("nodes/c".into(), b"3".to_vec()), Op::Delete("nodes/a".into())]).unwrap();
    s.delete("nodes/b").unwrap();
    let mut events: Vec<Event> = Vec::new();
    let start = Instant::now();
    while events.len() < 4 {
        assert!(start.elapsed() < Duration::from_secs(5), "only {events:?}");
        events.extend(w.next(Duration::from_secs(1)).unwrap());
    }
    let changes: Vec<&Change> = events.iter().map(|e| &e.change).collect();
    assert_eq!(
        changes,
        [
            &put("nodes/b", b"2"),
            &put("nodes/c", b"3"),
            &Change::Delete { key: "nodes/a".into() },
            &Change::Delete { key: "nodes/b".into() }
        ]
    );
    let revs: Vec<i64> = events.iter().map(|e| e.rev).collect();
    assert_eq!(revs, [rev + 1, rev + 4, rev + 4, rev + 5], "one revision per write, shared within a txn");
    assert_eq!(w.next(Duration::from_millis(100)).unwrap(), vec![], "nothing more");
}

/// A follower on URL and a writer on ADMIN_URL; etcd is restarted with only
/// ADMIN_URL in between, so the follower misses what `meanwhile` writes.
fn across_an_outage(tag: &str, meanwhile: impl FnOnce(&EtcdStore)) -> Outcome {
    let mut etcd = Etcd::start(tag);
    let admin: Arc<dyn Store> = Arc::new(etcd.etcd_store(ADMIN_URL, None));
    admin.put("nodes/n0", b"0").unwrap();
    let f = follow(etcd.store(), "nodes/", tag);
    let mut items = BTreeMap::new();
    let first = converge(&f, admin.as_ref(), "nodes/", &mut items);
    assert!(matches!(&first[..], [Update::Reset { .. }]), "{first:?}");
    admin.put("nodes/n1", b"1").unwrap();
    converge(&f, admin.as_ref(), "nodes/", &mut items);
    let seen_before = admin.list_at("").unwrap().1;

    etcd.kill();
    let (reason, _) = wait_down(&f, Duration::from_secs(10));
    assert!(reason.contains(URL), "the reason names the member: {reason}");
    etcd.launch(&[ADMIN_URL]);
    etcd.wait_ready(ADMIN_URL, None);
    let admin = Arc::new(etcd.etcd_store(ADMIN_URL, None));
    meanwhile(&admin);
    etcd.kill();
    etcd.launch(&[URL, ADMIN_URL]);
    etcd.wait_ready(ADMIN_URL, None);
    let after = converge(&f, admin.as_ref(), "nodes/", &mut items);
    let admin: Arc<dyn Store> = admin;
    // Nothing more comes: no duplicates trailing behind.
    assert_eq!(f.recv_timeout(Duration::from_millis(300)), None);
    Outcome { after, items, admin, seen_before, _etcd: etcd }
}

struct Outcome {
    /// The updates after the follower reported Down.
    after: Vec<Update>,
    /// The consumer's copy at the end.
    items: BTreeMap<String, Vec<u8>>,
    admin: Arc<dyn Store>,
    /// The store revision before the outage.
    seen_before: i64,
    _etcd: Etcd,
}

#[test]
fn a_follower_resumes_after_an_etcd_restart_with_every_write_exactly_once() {
    let Outcome { after, items, admin, seen_before, _etcd } = across_an_outage("resume", |s| {
        s.put("nodes/n2", b"2").unwrap();
        s.put("nodes/n1", b"1'").unwrap();
        s.put("other/x", b"not followed").unwrap();
        s.delete("nodes/n0").unwrap();
        s.txn(&[], &[Op::Put("nodes/n3".into(), b"3".to_vec()), Op::Delete("nodes/n2".into())]).unwrap();
    });
    let got: Vec<(String, Option<Vec<u8>>)> = after
        .iter()
        .map(|u| match u {
            Update::Put { key, value, .. } => (key.clone(), Some(value.clone())),
            Update::Delete { key, .. } => (key.clone(), None),
            other => panic!("only the missed writes, no Reset or Down: {other:?} in {after:?}"),
        })
        .collect();
    let want: Vec<(String, Option<Vec<u8>>)> = vec![
        ("nodes/n2".into(), Some(b"2".to_vec())),
        ("nodes/n1".into(), Some(b"1'".to_vec())),
        ("nodes/n0".into(), None),
        ("nodes/n3".into(), Some(b"3".to_vec())),
        ("nodes/n2".into(), None),
    ];
    assert_eq!(got, want, "every write made meanwhile, once, in order");
    let revs: Vec<i64> = after.iter().filter_map(Update::rev).collect();
    assert!(revs[0] > seen_before && revs.windows(2).all(|w| w[0] <= w[1]), "{revs:?} after {seen_before}");
    let fresh: BTreeMap<_, _> = admin.list("nodes/").unwrap().into_iter().collect();
    assert_eq!(items, fresh);
}

#[test]
fn a_follower_relists_when_its_revision_was_compacted_while_it_was_cut_off() {
    let Outcome { after, items, admin, _etcd, .. } = across_an_outage("compact", |s| {
        s.put("nodes/n2", b"2").unwrap();
        s.delete("nodes/n0").unwrap();
        s.put("nodes/n2", b"2'").unwrap();
        let (_, rev) = s.list_at("").unwrap();
        s.compact(rev).unwrap();
        // The store itself tells a watch from before the compaction so.
        match s.watch("nodes/", rev - 1).unwrap().next(Duration::from_secs(5)) {
            Err(WatchError::Compacted { compact_revision }) => assert_eq!(compact_revision, rev),
            other => panic!("expected Compacted, got {other:?}"),
        }
    });
    assert!(matches!(&after[..], [Update::Reset { .. }]), "one Reset, nothing else: {after:?}");
    let fresh: BTreeMap<_, _> = admin.list("nodes/").unwrap().into_iter().collect();
    assert_eq!(items, fresh);
    assert_eq!(items.get("nodes/n2").map(Vec::as_slice), Some(&b"2'"[..]));
}

/// SIGCONTs etcd again when the test ends, also on failure.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        assert!(Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap().success());
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

#[test]
fn a_stopped_etcd_is_an_error_within_seconds_and_the_follower_goes_down_and_resumes() {
    let etcd = Etcd::start("sigstop");
    let s = etcd.store();
    s.put("nodes/a", b"1").unwrap();
    let f = follow(s.clone(), "nodes/", "sigstop");
    let mut items = BTreeMap::new();
    converge(&f, s.as_ref(), "nodes/", &mut items);

    let stopped = Stopped::new(etcd.pid());
    let start = Instant::now();
    let e = s.get("nodes/a").unwrap_err().to_string();
    assert!(start.elapsed() < Duration::from_secs(7), "took {:?}", start.elapsed());
    assert!(e.contains("unavailable") && e.contains("no answer within 5 s"), "{e}");
    // The watch notices through HTTP/2 keepalive (6 s + 3 s).
    let (reason, before) = wait_down(&f, Duration::from_secs(15));
    assert!(before.is_empty(), "{before:?}");
    assert!(start.elapsed() < Duration::from_secs(15), "down after {:?}: {reason}", start.elapsed());

    drop(stopped);
    s.put("nodes/b", b"2").unwrap();
    let after = converge(&f, s.as_ref(), "nodes/", &mut items);
    assert!(after.iter().all(|u| matches!(u, Update::Put { .. })), "resumed, not re-listed: {after:?}");
}
