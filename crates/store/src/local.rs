//! The local backend: embedded and file based, one file per key, for a
//! single node without a cluster store.
//!
//! Revisions and watches are in-process (one process owns the directory):
//! a counter bumped by every write, the last [`HISTORY`] events for watches
//! that start a little in the past, and a bounded queue per watch.

use crate::{Change, Cmp, Event, Listing, Op, Revision, Store, StoreError, WatchError, WatchStream};
use std::{
    collections::VecDeque,
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, Weak},
    time::Duration,
};

/// Events kept for watches that start before the current revision (a
/// follower lists, then watches from the listing's revision + 1).
const HISTORY: usize = 4096;
/// Events a watch may have queued before it is closed for falling behind.
const QUEUE_LIMIT: usize = 1024;

pub struct LocalStore {
    dir: PathBuf,
    /// Serializes writers in this process so `create` is atomic, and orders
    /// the revisions the same way. Held only for renames and deletes: the
    /// values are written and synced before it is taken (see [`Staged`]).
    write: Mutex<Journal>,
    /// Names the temp files of writes in flight.
    staged: std::sync::atomic::AtomicU64,
    _lock: File,
}

/// A value written and synced to a temp file in the store's top directory,
/// outside the writers' lock (so concurrent writers sync side by side, and
/// the disk batches them), waiting to be renamed into place under it. A
/// crash leaves only a `.wN.tmp` file, which the next open sweeps.
struct Staged {
    tmp: PathBuf,
    placed: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// The revision counter, recent history and watchers.
struct Journal {
    rev: Revision,
    history: VecDeque<Event>,
    /// The newest revision with events gone from `history` (0: none).
    dropped_through: Revision,
    watchers: Vec<Weak<Watcher>>,
    queue_limit: usize,
    history_limit: usize,
}

struct Watcher {
    prefix: String,
    state: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Event>,
    /// Set once the watch has ended; handed out after the queued events.
    end: Option<WatchError>,
}

struct LocalWatch(Arc<Watcher>);

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// Keys map to paths below the store directory; only plain segments pass.
fn check_key(key: &str) -> Result<(), StoreError> {
    let bad = |why| Err(StoreError::InvalidKey { key: key.to_string(), why });
    if key.is_empty() {
        return bad("empty");
    }
    for seg in key.split('/') {
        if seg.is_empty() {
            return bad("empty path segment");
        }
        if seg == "." || seg == ".." || seg.starts_with('.') {
            return bad("segments may not start with '.'");
        }
        if !seg.chars().all(|c| c.is_ascii_graphic() && c != '\\') {
            return bad("only printable ASCII without '\\' is allowed");
        }
    }
    Ok(())
}

impl LocalStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(".lock");
        let lock = weft_ipam::lock::exclusive(&lock_path)
            .map_err(io(&lock_path))?
            .ok_or_else(|| StoreError::Locked { dir: dir.to_path_buf() })?;
        Self::sweep(dir, true)?;
        let journal = Journal {
            rev: 1,
            history: VecDeque::new(),
            dropped_through: 0,
            watchers: Vec::new(),
            queue_limit: QUEUE_LIMIT,
            history_limit: HISTORY,
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            write: Mutex::new(journal),
            staged: Default::default(),
            _lock: lock,
        })
    }

    /// Changes how many events a watch may lag behind before it is closed
    /// (default [`QUEUE_LIMIT`]) and how many past events are kept for
    /// watches that start in the past (default [`HISTORY`]).
    pub fn with_watch_limits(self, queue: usize, history: usize) -> Self {
        let mut j = self.journal();
        j.queue_limit = queue.max(1);
        j.history_limit = history.max(1);
        drop(j);
        self
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.dir.join(key))
    }

    /// Writes and syncs `value` to a temp file (outside the writers' lock).
    fn stage(&self, value: &[u8]) -> Result<Staged, StoreError> {
        let n = self.staged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let staged = Staged { tmp: self.dir.join(format!(".w{n}.tmp")), placed: false };
        let mut f = File::create(&staged.tmp).map_err(io(&staged.tmp))?;
        f.write_all(value).and_then(|()| f.sync_all()).map_err(io(&staged.tmp))?;
        Ok(staged)
    }

    /// Puts a staged value in place (under the writers' lock).
    fn place(&self, mut staged: Staged, path: &Path) -> Result<(), StoreError> {
        let dir = path.parent().expect("keys live below the store directory");
        fs::create_dir_all(dir).map_err(io(dir))?;
        fs::rename(&staged.tmp, path).map_err(io(path))?;
        staged.placed = true;
        Ok(())
    }

    /// Deletes a key's file and the directories it leaves empty, so the
    /// store does not grow one directory per container ever seen.
    fn remove(&self, key: &str) -> Result<bool, StoreError> {
        let p = self.path(key)?;
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::Io { path: p, source: e }),
        }
        let mut dir = p.parent();
        while let Some(d) = dir {
            // Fails (and stops) at the first directory that is not empty.
            if d == self.dir || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(true)
    }

    /// Removes what a crash in the middle of a write leaves: `.NAME.tmp`
    /// files, and directories with nothing in them.
    fn sweep(dir: &Path, top: bool) -> Result<bool, StoreError> {
        let mut empty = true;
        for e in fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let (p, name) = (e.path(), e.file_name().to_string_lossy().into_owned());
            if name.starts_with('.') && name.ends_with(".tmp") {
                fs::remove_file(&p).map_err(io(&p))?;
            } else if e.file_type().map_err(io(&p))?.is_dir() {
                if Self::sweep(&p, false)? {
                    fs::remove_dir(&p).map_err(io(&p))?;
                } else {
                    empty = false;
                }
            } else if !(top && name == ".lock") {
                empty = false;
            }
        }
        Ok(empty)
    }

    fn walk(&self, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::Io { path: dir.to_path_buf(), source: e }),
        };
        for e in rd {
            let e = e.map_err(io(dir))?;
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                self.walk(&p, out)?;
            } else {
                let key = p.strip_prefix(&self.dir).unwrap().to_string_lossy().into_owned();
                out.push((key, fs::read(&p).map_err(io(&p))?));
            }
        }
        Ok(())
    }
}

impl Store for LocalStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let p = self.path(key)?;
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { path: p, source: e }),
        }
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let p = self.path(key)?;
        let staged = self.stage(value)?;
        let mut journal = self.journal();
        self.place(staged, &p)?;
        journal.record(vec![Change::Put { key: key.to_string(), value: value.to_vec() }]);
        Ok(())
    }

    fn txn(&self, cmps: &[Cmp], ops: &[Op]) -> Result<bool, StoreError> {
        // Values are staged first; a transaction whose conditions fail
        // drops them.
        let mut staged = ops
            .iter()
            .filter_map(|op| match op {
                Op::Put(k, v) => Some(self.path(k).and_then(|_| self.stage(v))),
                Op::Delete(_) => None,
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let mut journal = self.journal();
        for c in cmps {
            let holds = match c {
                Cmp::Absent(k) => !self.path(k)?.exists(),
                Cmp::PrefixEmpty(p) => self.list(p)?.is_empty(),
                Cmp::ValueIs(k, v) => self.get(k)?.as_deref() == Some(v.as_slice()),
            };
            if !holds {
                return Ok(false);
            }
        }
        // Not atomic across a crash: callers order their ops so that a
        // prefix of them is a state they can collect (see identity.rs).
        // Like etcd, the writes of one transaction share one revision.
        let mut changes = Vec::new();
        let result = ops.iter().try_for_each(|op| {
            match op {
                Op::Put(k, v) => {
                    self.place(staged.next().expect("one staged value per put"), &self.path(k)?)?;
                    changes.push(Change::Put { key: k.clone(), value: v.clone() });
                }
                Op::Delete(k) => {
                    if self.remove(k)? {
                        changes.push(Change::Delete { key: k.clone() });
                    }
                }
            }
            Ok(())
        });
        // What was written before a failure is told to the watchers too.
        journal.record(changes);
        result.map(|()| true)
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut journal = self.journal();
        let removed = self.remove(key)?;
        if removed {
            journal.record(vec![Change::Delete { key: key.to_string() }]);
        }
        Ok(removed)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        // Walk from the deepest directory the prefix names completely.
        let base = match prefix.rfind('/') {
            Some(i) => {
                check_key(&prefix[..i])?;
                self.dir.join(&prefix[..i])
            }
            None => self.dir.clone(),
        };
        self.walk(&base, &mut out)?;
        out.retain(|(k, _)| k.starts_with(prefix));
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn list_at(&self, prefix: &str) -> Result<(Listing, Revision), StoreError> {
        // Under the write lock, so the listing is exactly the state at `rev`.
        let journal = self.journal();
        Ok((self.list(prefix)?, journal.rev))
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Box<dyn WatchStream>, StoreError> {
        Ok(Box::new(self.journal().subscribe(prefix, from)))
    }

    fn describe(&self) -> String {
        format!("local:{}", self.dir.display())
    }
}

impl Journal {
    /// Gives the changes the next revision and hands them to the watchers.
    fn record(&mut self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.rev += 1;
        let events: Vec<Event> = changes.into_iter().map(|change| Event { rev: self.rev, change }).collect();
        self.history.extend(events.iter().cloned());
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.dropped_through = e.rev;
            }
        }
        let limit = self.queue_limit;
        self.watchers.retain(|w| w.upgrade().is_some_and(|w| w.deliver(&events, limit)));
    }

    fn subscribe(&mut self, prefix: &str, from: Revision) -> LocalWatch {
        // Revision 0 (or less) means "from now on", as in etcd.
        let from = if from <= 0 { self.rev + 1 } else { from };
        let watcher = Arc::new(Watcher {
            prefix: prefix.to_string(),
            state: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        if from <= self.dropped_through {
            watcher.close(WatchError::Compacted { compact_revision: self.dropped_through + 1 });
            return LocalWatch(watcher);
        }
        let backlog: Vec<Event> = self.history.iter().filter(|e| e.rev >= from).cloned().collect();
        if watcher.deliver(&backlog, self.queue_limit.max(backlog.len())) {
            self.watchers.push(Arc::downgrade(&watcher));
        }
        LocalWatch(watcher)
    }
}

impl Watcher {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the events under the prefix; false once the watch has ended.
    fn deliver(&self, events: &[Event], limit: usize) -> bool {
        let mine: Vec<&Event> = events.iter().filter(|e| e.change.key().starts_with(&self.prefix)).collect();
        let mut q = self.queue();
        if q.end.is_some() {
            return false;
        }
        if mine.is_empty() {
            return true;
        }
        if q.events.len() + mine.len() > limit {
            q.end = Some(WatchError::Closed(format!(
                "the consumer fell behind by more than {limit} events; watch again from the last revision seen + 1"
            )));
            self.ready.notify_all();
            return false;
        }
        q.events.extend(mine.into_iter().cloned());
        self.ready.notify_all();
        true
    }

    fn close(&self, end: WatchError) {
        self.queue().end = Some(end);
        self.ready.notify_all();
    }
}

impl WatchStream for LocalWatch {
    fn next(&mut self, timeout: Duration) -> Result<Vec<Event>, WatchError> {
        let w = &self.0;
        let q = w.queue();
        let (mut q, _) = w
            .ready
            .wait_timeout_while(q, timeout, |q| q.events.is_empty() && q.end.is_none())
            .unwrap_or_else(|e| e.into_inner());
        if !q.events.is_empty() {
            return Ok(q.events.drain(..).collect());
        }
        match &q.end {
            Some(end) => Err(end.clone()),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    /// Values are synced outside the writers' lock; the order of the
    /// renames is still the order of the revisions, so the last event a
    /// watcher sees for a key is what the key holds.
    #[test]
    fn concurrent_writes_keep_revision_order_and_leave_no_temp_files() {
        let d = dir("conc");
        let s = Arc::new(LocalStore::open(&d).unwrap());
        let (listing, rev) = s.list_at("k/").unwrap();
        assert!(listing.is_empty());
        let mut w = s.watch("k/", rev + 1).unwrap();
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        s.put("k/same", format!("{t}-{i}").as_bytes()).unwrap();
                        s.put(&format!("k/own{t}"), b"x").unwrap();
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        let mut last = None;
        let mut events = 0;
        while events < 400 {
            for e in w.next(Duration::from_secs(5)).unwrap() {
                events += 1;
                if let Change::Put { key, value } = e.change
                    && key == "k/same"
                {
                    last = Some(value);
                }
            }
        }
        assert_eq!(last, s.get("k/same").unwrap());
        // A transaction whose condition fails writes nothing.
        let ok = s.txn(&[Cmp::Absent("k/same".into())], &[Op::Put("k/new".into(), b"1".to_vec())]).unwrap();
        assert!(!ok);
        assert_eq!(s.get("k/new").unwrap(), None);
        let temps: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(temps.is_empty(), "{temps:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn put_get_list_delete_create() {
        let d = dir("kv");
        let s = LocalStore::open(&d).unwrap();
        s.put("endpoints/n1/c1/eth0", b"1").unwrap();
        s.put("endpoints/n1/c2/eth0", b"2").unwrap();
        s.put("endpoints/n2/c3/eth0", b"3").unwrap();
        assert_eq!(s.get("endpoints/n1/c1/eth0").unwrap().unwrap(), b"1");
        assert_eq!(s.get("endpoints/n1/none").unwrap(), None);
        let l = s.list("endpoints/n1/").unwrap();
        assert_eq!(
            l.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["endpoints/n1/c1/eth0", "endpoints/n1/c2/eth0"]
        );
        assert_eq!(s.list("endpoints/").unwrap().len(), 3);
        assert_eq!(s.list("nothing/").unwrap().len(), 0);
        assert!(!s.create("endpoints/n1/c1/eth0", b"x").unwrap());
        assert!(s.create("identities/id/256", b"x").unwrap());
        assert!(s.delete("endpoints/n1/c1/eth0").unwrap());
        assert!(!s.delete("endpoints/n1/c1/eth0").unwrap());
        drop(s);
        let s = LocalStore::open(&d).unwrap();
        assert_eq!(s.list("endpoints/").unwrap().len(), 2, "persisted across reopen");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn deletes_leave_no_empty_directories_and_open_sweeps_crash_leftovers() {
        let d = dir("sweep");
        let s = LocalStore::open(&d).unwrap();
        for i in 0..20 {
            s.put(&format!("endpoints/n1/c{i}/eth0"), b"x").unwrap();
            s.delete(&format!("endpoints/n1/c{i}/eth0")).unwrap();
        }
        s.put("keep/me", b"1").unwrap();
        drop(s);
        let names: Vec<_> = fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "only .lock and keep/ are left: {names:?}");
        // A write killed between create and rename leaves a temp file.
        fs::create_dir_all(d.join("a/b")).unwrap();
        fs::write(d.join("a/b/.k.tmp"), b"half").unwrap();
        fs::write(d.join("keep/.me.tmp"), b"half").unwrap();
        let s = LocalStore::open(&d).unwrap();
        assert!(!d.join("a").exists(), "temp file and its empty directories are gone");
        assert!(!d.join("keep/.me.tmp").exists());
        assert_eq!(s.get("keep/me").unwrap().unwrap(), b"1");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn txn_checks_every_condition_before_writing() {
        let d = dir("txn");
        let s = LocalStore::open(&d).unwrap();
        s.put("a/x", b"1").unwrap();
        let put = |k: &str| Op::Put(k.into(), b"v".to_vec());
        assert!(!s.txn(&[Cmp::Absent("a/x".into())], &[put("b/1")]).unwrap());
        assert!(!s.txn(&[Cmp::PrefixEmpty("a/".into())], &[put("b/1")]).unwrap());
        assert!(!s.txn(&[Cmp::ValueIs("a/x".into(), b"2".to_vec())], &[put("b/1")]).unwrap());
        assert_eq!(s.get("b/1").unwrap(), None, "a failed txn writes nothing");
        assert!(
            s.txn(
                &[Cmp::ValueIs("a/x".into(), b"1".to_vec()), Cmp::PrefixEmpty("c/".into())],
                &[put("b/1"), Op::Delete("a/x".into())]
            )
            .unwrap()
        );
        assert_eq!(s.get("b/1").unwrap().unwrap(), b"v");
        assert_eq!(s.get("a/x").unwrap(), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_keys_and_second_open_are_refused() {
        let d = dir("bad");
        let s = LocalStore::open(&d).unwrap();
        for k in ["", "a//b", "../etc", "a/.hidden", "a b"] {
            assert!(matches!(s.put(k, b"x"), Err(StoreError::InvalidKey { .. })), "{k:?}");
        }
        assert!(matches!(LocalStore::open(&d), Err(StoreError::Locked { .. })));
        fs::remove_dir_all(&d).unwrap();
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;
    use crate::WatchError;

    fn open(tag: &str) -> (LocalStore, PathBuf) {
        let d = std::env::temp_dir().join(format!("weft-store-w{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        (LocalStore::open(&d).unwrap(), d)
    }

    fn put(key: &str, value: &[u8]) -> Change {
        Change::Put { key: key.into(), value: value.to_vec() }
    }

    /// Every event until `n` have arrived (or a second passed).
    fn take(w: &mut dyn WatchStream, n: usize) -> Vec<Event> {
        let mut out = Vec::new();
        while out.len() < n {
            let batch = w.next(Duration::from_secs(1)).unwrap();
            assert!(!batch.is_empty(), "only {} of {n} events came: {out:?}", out.len());
            out.extend(batch);
        }
        out
    }

    #[test]
    fn watch_sees_every_write_after_the_listing_in_order() {
        let (s, d) = open("order");
        s.put("nodes/a", b"1").unwrap();
        let (items, rev) = s.list_at("nodes/").unwrap();
        assert_eq!(items.len(), 1);
        // Written between the listing and the watch: still seen.
        s.put("nodes/b", b"2").unwrap();
        let mut w = s.watch("nodes/", rev + 1).unwrap();
        s.put("other/x", b"not watched").unwrap();
        assert!(!s.delete("nodes/none").unwrap(), "deleting nothing is no event");
        s.txn(&[], &[Op::Put("nodes/c".into(), b"3".to_vec()), Op::Delete("nodes/a".into())]).unwrap();
        let ev = take(w.as_mut(), 3);
        let changes: Vec<&Change> = ev.iter().map(|e| &e.change).collect();
        assert_eq!(
            changes,
            [&put("nodes/b", b"2"), &put("nodes/c", b"3"), &Change::Delete { key: "nodes/a".into() }]
        );
        assert_eq!(ev[0].rev, rev + 1);
        assert_eq!(ev[1].rev, ev[2].rev, "one transaction, one revision");
        assert_eq!(ev[1].rev, rev + 3, "the write to other/ took a revision");
        assert_eq!(s.list_at("nodes/").unwrap().1, ev[2].rev);
        assert_eq!(
            w.next(Duration::from_millis(10)).unwrap(),
            vec![],
            "nothing more: empty batch on timeout"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_watch_that_falls_behind_is_closed_and_old_history_is_compacted() {
        let (s, d) = open("behind");
        let s = s.with_watch_limits(10, 20);
        let (_, rev) = s.list_at("").unwrap();
        let mut w = s.watch("k/", rev + 1).unwrap();
        for i in 0..11 {
            s.put(&format!("k/{i}"), b"x").unwrap();
        }
        assert_eq!(w.next(Duration::ZERO).unwrap().len(), 10, "what was queued is handed out");
        match w.next(Duration::ZERO) {
            Err(WatchError::Closed(reason)) => {
                assert!(reason.contains("fell behind by more than 10"), "{reason}")
            }
            other => panic!("expected a closed watch, got {other:?}"),
        }
        // Resuming from the last revision seen + 1 gets the rest.
        let mut w = s.watch("k/", rev + 11).unwrap();
        assert_eq!(w.next(Duration::ZERO).unwrap(), vec![Event { rev: rev + 11, change: put("k/10", b"x") }]);
        for i in 0..20 {
            s.put("k/many", format!("{i}").as_bytes()).unwrap();
        }
        match s.watch("k/", rev + 1).unwrap().next(Duration::ZERO) {
            Err(WatchError::Compacted { compact_revision }) => assert!(compact_revision > rev + 1),
            other => panic!("expected compacted, got {other:?}"),
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
