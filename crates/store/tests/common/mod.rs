//! etcd for the tests: Debian's etcd-server in a network namespace of the
//! test's own. Stores are created inside the namespace (their runtime thread
//! connects from there) and can then be used from any thread.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};
use weft_store::{EtcdStore, Store, StoreError, TlsFiles};

/// Where the stores under test connect.
pub const URL: &str = "http://127.0.0.1:2379";
/// A second client port for the test itself: etcd can be restarted with
/// only this one, so followers on [`URL`] stay cut off while the test writes.
pub const ADMIN_URL: &str = "http://127.0.0.1:2381";

pub fn urls(u: &str) -> Vec<String> {
    vec![u.to_string()]
}

/// etcd in a throwaway namespace; the namespace, process and data go on drop.
pub struct Etcd {
    pub ns: String,
    child: Option<Child>,
    pub dir: PathBuf,
    /// Arguments besides the data dir and client URLs (TLS).
    extra: Vec<String>,
}

impl Etcd {
    /// Plain http on [`URL`] and [`ADMIN_URL`].
    pub fn start(tag: &str) -> Etcd {
        let mut e = Etcd::prepare(tag, Vec::new());
        e.launch(&[URL, ADMIN_URL]);
        e.wait_ready(ADMIN_URL, None);
        e
    }

    /// A namespace and data directory, no etcd yet.
    pub fn prepare(tag: &str, extra: Vec<String>) -> Etcd {
        let ns = format!("weft-st-{tag}-{}", std::process::id());
        let _ = weft_net::netns::delete(&ns);
        weft_net::netns::add(&ns).unwrap();
        let e = Etcd { dir: std::env::temp_dir().join(&ns), ns, child: None, extra };
        weft_net::netns::run_in(&e.ns_path(), || weft_net::ip::run(&["link", "set", "lo", "up"])).unwrap();
        let _ = std::fs::remove_dir_all(&e.dir);
        std::fs::create_dir_all(&e.dir).unwrap();
        e
    }

    fn ns_path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.ns))
    }

    /// Starts etcd serving clients on `client_urls` (same data directory
    /// every time).
    pub fn launch(&mut self, client_urls: &[&str]) {
        assert!(self.child.is_none(), "etcd runs already");
        let (data, listen, extra) = (self.dir.join("data"), client_urls.join(","), self.extra.clone());
        let log = std::fs::File::create(self.dir.join("etcd.log")).unwrap();
        let child = weft_net::netns::run_in(&self.ns_path(), move || {
            Command::new("etcd")
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &listen, "--advertise-client-urls", &listen])
                .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
                .args(&extra)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| weft_net::Error(format!("etcd (apt-get install etcd-server): {e}")))
        })
        .unwrap();
        self.child = Some(child);
    }

    pub fn wait_ready(&self, url: &str, tls: Option<&TlsFiles>) {
        let s = self.etcd_store(url, tls);
        let start = Instant::now();
        while let Err(e) = s.check() {
            assert!(start.elapsed() < Duration::from_secs(20), "etcd did not come up: {e}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills etcd (SIGKILL: a crash, not a clean stop).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("etcd runs").id()
    }

    /// A client made inside the namespace.
    pub fn etcd_store(&self, url: &str, tls: Option<&TlsFiles>) -> EtcdStore {
        self.try_store(url, tls).unwrap()
    }

    pub fn try_store(&self, url: &str, tls: Option<&TlsFiles>) -> Result<EtcdStore, StoreError> {
        let (u, tls) = (url.to_string(), tls.cloned());
        weft_net::netns::run_in(&self.ns_path(), move || {
            Ok(EtcdStore::new(&urls(&u), "/weft-test/", tls.as_ref()).map_err(|e| e.to_string()))
        })
        .unwrap()
        .map_err(|cause| StoreError::Unavailable { backend: "etcd".into(), cause })
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::new(self.etcd_store(URL, None))
    }

    /// Runs `f` with a store client inside the namespace.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(Arc<dyn Store>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let s = self.store();
        weft_net::netns::run_in(&self.ns_path(), move || Ok(f(s).map_err(|e| e.to_string())))
            .unwrap()
            .map_err(|e| StoreError::Unavailable { backend: "etcd".into(), cause: e })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = weft_net::netns::delete(&self.ns);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Applies the follower's updates to `items` until they equal a fresh
/// listing of `prefix`, at its revision; the updates applied.
pub fn converge(
    f: &weft_store::Follower,
    s: &dyn Store,
    prefix: &str,
    items: &mut std::collections::BTreeMap<String, Vec<u8>>,
) -> Vec<weft_store::Update> {
    let (want, rev) = s.list_at(prefix).unwrap();
    let want: std::collections::BTreeMap<_, _> = want.into_iter().collect();
    let mut seen: Vec<weft_store::Update> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let caught_up =
        |seen: &[weft_store::Update]| seen.iter().rev().find_map(|u| u.rev()).is_some_and(|r| r >= rev);
    while *items != want || !caught_up(&seen) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("the follower did not catch up with rev {rev} within 15 s: {seen:?}"));
        if let Some(u) = f.recv_timeout(left) {
            u.apply(items);
            seen.push(u);
        }
    }
    seen
}

/// Waits for the follower to report the store down; the updates before.
pub fn wait_down(f: &weft_store::Follower, within: Duration) -> (String, Vec<weft_store::Update>) {
    let deadline = Instant::now() + within;
    let mut before = Vec::new();
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no Down within {within:?}; got {before:?}"));
        match f.recv_timeout(left) {
            Some(weft_store::Update::Down(reason)) => return (reason, before),
            Some(u) => before.push(u),
            None => {}
        }
    }
}
