//! The etcd backend: etcd's v3 gRPC API through the `etcd-client` crate.
//!
//! The [`Store`] trait is synchronous (the agent calls it from plain
//! threads), so the backend owns a small tokio runtime (one worker thread,
//! named `weft-etcd`) and every call is a task on it that the caller waits
//! for on a std channel. Callers therefore never block *inside* the runtime,
//! and the connections are made by the runtime's thread: in the network
//! namespace of the thread that called [`EtcdStore::new`].
//!
//! `create` is a transaction on create_revision == 0, so two agents racing
//! for one key never both win; leases carry node liveness. Every request
//! has a deadline and the connections send HTTP/2 pings, so a stopped or
//! dead etcd is an `Unavailable` error within seconds, never a hang.

mod watch;

use crate::{Cmp, Listing, Op, Revision, Store, StoreError, WatchStream};
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
};
use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The deadline of one request (what the HTTP gateway client used).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings while a request or watch is open. etcd closes connections
/// that ping more often than its --grpc-keepalive-min-time (5 s) with
/// "too_many_pings", hence 6 s; a peer that does not answer a ping within
/// the timeout is dead, which ends a watch on a stopped etcd in ~9 s.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(6);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// TLS material for https:// members: etcd's certificate must verify
/// against `ca`; `cert` and `key` (PEM) are this client's identity, for an
/// etcd started with --client-cert-auth.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

pub struct EtcdStore {
    /// The members as given, e.g. "http://198.18.0.2:2379".
    urls: Vec<String>,
    /// One client per member, in the order of `urls`; each connects lazily
    /// and reconnects by itself.
    members: Vec<Client>,
    /// The member that answered last: requests start there.
    preferred: AtomicUsize,
    /// Every key lives under this prefix (e.g. "/weft/"), so a shared etcd
    /// can hold other things.
    prefix: String,
    /// TLS without a client certificate: a refused handshake is then most
    /// likely etcd asking for one, which its error does not say.
    anonymous_tls: bool,
    rt: tokio::runtime::Runtime,
}

/// Why one request to one member failed.
enum Failure {
    /// The member could not be reached: the request was not processed, the
    /// next member may take it.
    Unreachable(String),
    /// No answer in time or an error answer: the request may have been
    /// applied, so it is not sent again.
    Failed(String),
}

impl EtcdStore {
    /// `urls`: the members, "http://HOST:PORT" or "https://HOST:PORT" (the
    /// latter need `tls`). Reads the TLS files now; connects on first use.
    pub fn new(urls: &[String], prefix: &str, tls: Option<&TlsFiles>) -> Result<Self, StoreError> {
        let urls: Vec<String> = urls
            .iter()
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        let invalid =
            |cause: String| StoreError::Unavailable { backend: format!("etcd {}", urls.join(",")), cause };
        if urls.is_empty() {
            return Err(invalid(
                "no etcd URL given; give etcd as http://HOST:PORT or https://HOST:PORT".into(),
            ));
        }
        for u in &urls {
            if u.starts_with("https://") {
                if tls.is_none() {
                    return Err(invalid(format!(
                        "{u} is https: give the CA that signed etcd's certificate (and this client's certificate and key if etcd asks for one)"
                    )));
                }
            } else if u.starts_with("http://") {
                if tls.is_some() {
                    return Err(invalid(format!("TLS files were given but {u} is plain http: use https://")));
                }
            } else {
                return Err(invalid(format!("{u}: an etcd URL is http://HOST:PORT or https://HOST:PORT")));
            }
        }
        let tls_cfg = tls.map(tls_config).transpose().map_err(invalid)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weft-etcd")
            .enable_all()
            .build()
            .map_err(|e| invalid(format!("cannot start the etcd client's runtime: {e}")))?;
        let mut endpoints = Vec::new();
        for u in &urls {
            endpoints.push(endpoint(u, tls_cfg.clone()).map_err(invalid)?);
        }
        // Channels spawn their connection task into the current runtime.
        let members = wait(&rt, async move {
            let mut members = Vec::new();
            for ep in endpoints {
                let channel = etcd_client::Channel::Tonic(ep.connect_lazy());
                members.push(Client::from_channel(channel, None).await?);
            }
            Ok(members)
        })
        .map_err(|f| invalid(f.text()))?;
        let anonymous_tls = tls.is_some_and(|t| t.cert.is_none());
        Ok(Self {
            urls,
            members,
            preferred: AtomicUsize::new(0),
            prefix: prefix.to_string(),
            anonymous_tls,
            rt,
        })
    }

    /// Fails with a clear error unless etcd answers.
    pub fn check(&self) -> Result<(), StoreError> {
        self.get("health-probe").map(|_| ())
    }

    /// Drops etcd's history before `rev` (etcd's compaction): watches from
    /// an older revision then fail with [`crate::WatchError::Compacted`].
    pub fn compact(&self, rev: Revision) -> Result<(), StoreError> {
        self.call(move |mut c| async move {
            c.compact(rev, Some(CompactionOptions::new().with_physical())).await.map(|_| ())
        })
    }

    fn unavailable(&self, mut cause: String) -> StoreError {
        if self.anonymous_tls && cause.contains("transport error") {
            cause.push_str(" (this client has no certificate: if etcd runs with --client-cert-auth, give one and its key)");
        }
        StoreError::Unavailable { backend: format!("etcd {}", self.urls.join(",")), cause }
    }

    /// Runs one request, starting at the preferred member and moving on to
    /// the next while members are unreachable.
    fn call<T, F, Fut>(&self, request: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let n = self.members.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut causes = Vec::new();
        for i in 0..n {
            let m = (first + i) % n;
            match wait(&self.rt, request(self.members[m].clone())) {
                Ok(v) => {
                    self.preferred.store(m, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(Failure::Unreachable(cause)) => causes.push(format!("{}: {cause}", self.urls[m])),
                Err(Failure::Failed(cause)) => {
                    // The next request tries another member first.
                    self.preferred.store(m + 1, Ordering::Relaxed);
                    return Err(self.unavailable(format!("{}: {cause}", self.urls[m])));
                }
            }
        }
        Err(self.unavailable(causes.join("; ")))
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A key as etcd returned it, without the store's prefix.
    fn strip(&self, key: &[u8]) -> String {
        strip(&self.prefix, key)
    }

    fn put_inner(&self, key: &str, value: &[u8], lease: u64) -> Result<(), StoreError> {
        let (key, value) = (self.full(key), value.to_vec());
        self.call(move |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease as i64));
                c.put(key, value, opts).await.map(|_| ())
            }
        })
    }

    /// Every key under `prefix` at one revision, read in pages of
    /// `PAGE` keys (one answer must stay under gRPC's 4 MiB message limit;
    /// 10,000 endpoint records are more than that), each page at the first
    /// page's revision so the listing is one consistent snapshot.
    fn range(&self, prefix: &str) -> Result<(Listing, Revision), StoreError> {
        const PAGE: i64 = 1000;
        let full = self.full(prefix);
        let mut end = full.clone().into_bytes();
        // The range end of a prefix: the prefix with its last byte + 1
        // (keys are '/'-separated text, never ending in 0xff).
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let (mut out, mut rev, mut from) = (Vec::new(), 0, full.clone().into_bytes());
        loop {
            let (start, range_end) = (from.clone(), end.clone());
            let (kvs, page_rev, more) = self.call(move |mut c| {
                let (start, range_end) = (start.clone(), range_end.clone());
                async move {
                    let mut opts = GetOptions::new().with_range(range_end).with_limit(PAGE);
                    if rev != 0 {
                        opts = opts.with_revision(rev);
                    }
                    let r = c.get(start, Some(opts)).await?;
                    let page_rev = r.header().map(|h| h.revision()).unwrap_or(0);
                    let kvs: Vec<_> =
                        r.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec())).collect();
                    Ok((kvs, page_rev, r.more()))
                }
            })?;
            if rev == 0 {
                rev = page_rev;
            }
            if let Some((k, _)) = kvs.last() {
                from = k.clone();
                from.push(0);
            }
            out.extend(kvs.into_iter().map(|(k, v)| (self.strip(&k), v)));
            if !more {
                break;
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((out, rev))
    }
}

fn strip(prefix: &str, key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    key.strip_prefix(prefix).unwrap_or(&key).to_string()
}

/// Runs `fut` on the runtime with the request deadline and waits for it on
/// this (non-runtime) thread.
fn wait<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
) -> Result<T, Failure> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(tokio::time::timeout(REQUEST_TIMEOUT, fut).await);
    });
    match rx.recv() {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err(classify(&e)),
        Ok(Err(_elapsed)) => Err(Failure::Failed(format!(
            "no answer within {} s (is etcd stopped, overloaded or unreachable?)",
            REQUEST_TIMEOUT.as_secs()
        ))),
        Err(_) => Err(Failure::Failed("the etcd client's runtime has stopped".into())),
    }
}

fn classify(e: &etcd_client::Error) -> Failure {
    let text = describe(e);
    match e {
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unavailable => {
            Failure::Unreachable(text)
        }
        etcd_client::Error::TransportError(_) => Failure::Unreachable(text),
        _ => Failure::Failed(text),
    }
}

/// The error with its causes (tonic keeps the interesting part, e.g.
/// "connection refused" or the certificate problem, in the source chain).
fn describe(e: &etcd_client::Error) -> String {
    // etcd_client::Error hides its inner error's causes: start from that.
    let (mut out, mut source) = match e {
        etcd_client::Error::GRpcStatus(s) => {
            (format!("{:?}: {}", s.code(), s.message()), std::error::Error::source(s))
        }
        etcd_client::Error::TransportError(t) => (e.to_string(), std::error::Error::source(t)),
        other => (other.to_string(), None),
    };
    while let Some(s) = source {
        let t = s.to_string();
        if !out.contains(&t) {
            out = format!("{out}: {t}");
        }
        source = s.source();
    }
    if out.contains("invalid peer certificate") {
        out = format!(
            "etcd's server certificate does not verify against the given CA ({out}); give the CA that signed it, and check that its names include the address in the URL"
        );
    }
    out
}

impl Failure {
    fn text(self) -> String {
        match self {
            Failure::Unreachable(t) | Failure::Failed(t) => t,
        }
    }
}

fn endpoint(url: &str, tls: Option<ClientTlsConfig>) -> Result<Endpoint, String> {
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("{url}: not a valid URL: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        // Pings without an open stream count as abuse in etcd's eyes.
        .keep_alive_while_idle(false)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        ep = ep.tls_config(tls).map_err(|e| format!("{url}: TLS setup failed: {e}"))?;
    }
    Ok(ep)
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the etcd {what} {}: {e}", path.display()))
}

fn tls_config(files: &TlsFiles) -> Result<ClientTlsConfig, String> {
    let ca = read("CA certificate", &files.ca)?;
    if !String::from_utf8_lossy(&ca).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("the etcd CA file {} holds no PEM certificate", files.ca.display()));
    }
    let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            cfg =
                cfg.identity(Identity::from_pem(read("client certificate", cert)?, read("client key", key)?));
        }
        (None, None) => {}
        _ => return Err("give both the client certificate and its key, or neither".into()),
    }
    Ok(cfg)
}

fn compare(full: impl Fn(&str) -> String, c: &Cmp) -> Compare {
    match c {
        Cmp::Absent(k) => Compare::create_revision(full(k), CompareOp::Equal, 0),
        // Over a range, etcd requires the comparison to hold for every key
        // in it; an empty range compares as one absent key.
        Cmp::PrefixEmpty(p) => Compare::create_revision(full(p), CompareOp::Equal, 0).with_prefix(),
        Cmp::ValueIs(k, v) => Compare::value(full(k), CompareOp::Equal, v.clone()),
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.full(key);
        self.call(move |mut c| {
            let key = key.clone();
            async move { Ok(c.get(key, None).await?.kvs().first().map(|kv| kv.value().to_vec())) }
        })
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put_inner(key, value, 0)
    }

    fn txn(&self, cmps: &[Cmp], ops: &[Op]) -> Result<bool, StoreError> {
        let compares: Vec<Compare> = cmps.iter().map(|c| compare(|k| self.full(k), c)).collect();
        let writes: Vec<TxnOp> = ops
            .iter()
            .map(|op| match op {
                Op::Put(k, v) => TxnOp::put(self.full(k), v.clone(), None),
                Op::Delete(k) => TxnOp::delete(self.full(k), None),
            })
            .collect();
        self.call(move |mut c| {
            let txn = Txn::new().when(compares.clone()).and_then(writes.clone());
            async move { Ok(c.txn(txn).await?.succeeded()) }
        })
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = self.full(key);
        self.call(move |mut c| {
            let key = key.clone();
            async move { Ok(c.delete(key, None::<DeleteOptions>).await?.deleted() > 0) }
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.range(prefix).map(|(items, _)| items)
    }

    fn list_at(&self, prefix: &str) -> Result<(Listing, Revision), StoreError> {
        self.range(prefix)
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<Box<dyn WatchStream>, StoreError> {
        watch::start(self, prefix, from)
    }

    fn grant_lease(&self, ttl: Duration) -> Result<u64, StoreError> {
        let ttl = ttl.as_secs().max(1) as i64;
        let id = self.call(move |mut c| async move { Ok(c.lease_grant(ttl, None).await?.id()) })?;
        match id {
            id if id > 0 => Ok(id as u64),
            id => Err(self.unavailable(format!("lease grant answered lease {id}"))),
        }
    }

    fn keep_alive(&self, lease: u64) -> Result<bool, StoreError> {
        self.call(move |mut c| async move {
            // etcd-client sends one keep-alive and reads its answer; a TTL of
            // 0 there (the lease is gone) is its LeaseKeepAliveError.
            match c.lease_keep_alive(lease as i64).await {
                Ok(_) => Ok(true),
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    fn put_leased(&self, key: &str, value: &[u8], lease: u64) -> Result<(), StoreError> {
        self.put_inner(key, value, lease)
    }

    fn describe(&self) -> String {
        format!("etcd:{}", self.urls.join(","))
    }
}
