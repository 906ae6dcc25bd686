//! The control plane at scale: one real etcd (a 3-node lab's), the lab's 3
//! real agents, and N simulated nodes — store clients that do what an agent
//! does without a datapath: register `nodes/<name>` under a lease and keep
//! it alive, publish 50 endpoints each, and follow `nodes/` and
//! `endpoints/` into in-memory maps. Measured once with watches (weft) and
//! once with every node re-listing the store each second (the design before
//! the watch): propagation to the real agents' ipcache, etcd's CPU and
//! bytes sent at rest and during churn, and the agents' CPU per event.
//!
//! The simulated nodes share a few connections (one `EtcdStore`, with its
//! one runtime thread, per group of 20 nodes) and one follower thread per
//! group multiplexes the group's watch streams, so 200 nodes cost ~30
//! threads, not 400 (each `weft_store::follow` is a thread of its own).

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};
use weft_datapath::maps::{IpcacheInfo, ip_to_be};
use weft_store::{Change, EtcdStore, Revision, Store, StoreError, WatchError, WatchStream};

/// Endpoints each simulated node publishes.
pub const ENDPOINTS_PER_NODE: usize = 50;
/// Simulated nodes per shared etcd connection (and follower thread).
const NODES_PER_CONN: usize = 20;
/// Pod churn during the churn window: endpoints deleted and re-published.
pub const CHURN_PER_SEC: u64 = 10;
/// How long a simulated node waits between re-listings (as the agent's
/// `WEFT_IPCACHE=poll` does: sleep, then list).
const RELIST: Duration = Duration::from_secs(1);
/// The simulated nodes' lease TTL: the agent's default (`--lease-ttl`),
/// not the lab's short one, so a busy etcd does not expire them.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(30);
const SIM_LEASE_TTL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Design {
    /// Agents and simulated nodes follow the store's watches.
    Watch,
    /// Agents (`WEFT_IPCACHE=poll`) and simulated nodes re-list every second.
    Poll,
}

/// What one window measured; per-minute figures are scaled from `secs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub secs: f64,
    pub etcd_cpu: f64,
    pub etcd_sent_bytes: f64,
    /// The 3 real agents together.
    pub agent_cpu: f64,
    /// The bench process itself (the simulated nodes), for context.
    pub bench_cpu: f64,
    /// Simulated nodes' re-listings (poll design) in the window.
    pub relists: u64,
}

impl Window {
    pub fn per_min(&self, v: f64) -> f64 {
        v * 60.0 / self.secs
    }
}

pub struct Figures {
    /// ms from a simulated node's put to the entry in all 3 agents' ipcache.
    pub propagation: Vec<f64>,
    /// Samples that did not arrive within PROPAGATION_LIMIT.
    pub missed: usize,
    pub rest: Window,
    pub churn: Window,
    /// Endpoint events (deletes + puts) the churn wrote.
    pub churn_events: u64,
}

/// Reads /proc/<pid>/stat: utime + stime in seconds.
fn cpu_secs(pid: u32) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e} (did the process exit?)"))?;
    // The command may hold spaces: fields count from after its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or(format!("{path}: unexpected format"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime 14 and stime 15 (1-based).
    let ticks: f64 = [11, 12].iter().filter_map(|i| f.get(*i)?.parse::<f64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    Ok(ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

/// etcd's `etcd_network_client_grpc_sent_bytes_total` (summed over its
/// label sets), read from `/metrics` on the client URL inside the
/// underlay namespace.
fn etcd_sent_bytes(underlay: &Path, url: &str) -> Result<f64, String> {
    let hostport = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let text = weft_net::netns::run_in(underlay, move || {
        let io = |e: std::io::Error| weft_net::Error(format!("GET http://{hostport}/metrics: {e}"));
        let mut s = std::net::TcpStream::connect(&hostport).map_err(io)?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(io)?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {hostport}\r\n\r\n").map_err(io)?;
        let mut body = String::new();
        s.read_to_string(&mut body).map_err(io)?;
        Ok(body)
    })
    .map_err(|e| e.to_string())?;
    let name = "etcd_network_client_grpc_sent_bytes_total";
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(' ') || r.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    if values.is_empty() {
        return Err(format!("etcd's /metrics at {url} has no {name}"));
    }
    Ok(values.iter().sum())
}

/// The counters a window is the difference of.
struct Counters {
    at: Instant,
    etcd_cpu: f64,
    etcd_sent: f64,
    agent_cpu: f64,
    bench_cpu: f64,
    relists: u64,
}

struct Probe {
    underlay: PathBuf,
    url: String,
    etcd_pid: u32,
    agents: Vec<u32>,
}

impl Probe {
    fn read(&self, stats: &Stats) -> Result<Counters, String> {
        let mut agent_cpu = 0.0;
        for pid in &self.agents {
            agent_cpu += cpu_secs(*pid)?;
        }
        Ok(Counters {
            at: Instant::now(),
            etcd_cpu: cpu_secs(self.etcd_pid)?,
            etcd_sent: etcd_sent_bytes(&self.underlay, &self.url)?,
            agent_cpu,
            bench_cpu: cpu_secs(std::process::id())?,
            relists: stats.relists.load(Ordering::Relaxed),
        })
    }

    fn window(&self, a: &Counters, stats: &Stats) -> Result<Window, String> {
        let b = self.read(stats)?;
        Ok(Window {
            secs: (b.at - a.at).as_secs_f64(),
            etcd_cpu: b.etcd_cpu - a.etcd_cpu,
            etcd_sent_bytes: b.etcd_sent - a.etcd_sent,
            agent_cpu: b.agent_cpu - a.agent_cpu,
            bench_cpu: b.bench_cpu - a.bench_cpu,
            relists: b.relists - a.relists,
        })
    }
}

/// Counters the simulated nodes' threads update.
#[derive(Default)]
struct Stats {
    /// Watch events applied to the simulated nodes' maps.
    events: AtomicU64,
    relists: AtomicU64,
    /// Failed store calls (logged once each as they happen).
    errors: AtomicU64,
    /// Simulated nodes whose maps hold every node and endpoint at least once.
    synced: AtomicUsize,
}

/// A simulated node: its addresses and registration.
#[derive(Clone)]
struct SimNode {
    index: usize,
    name: String,
    record: Vec<u8>,
    lease: u64,
}

impl SimNode {
    fn new(index: usize) -> Self {
        let name = format!("sim{index}");
        // Node addresses outside the lab's underlay /24 (nothing is sent to
        // them: only the ipcache holds them).
        let ip = Ipv4Addr::new(198, 18, 1 + (index / 200) as u8, 10 + (index % 200) as u8);
        let record = serde_json::to_vec(&serde_json::json!({
            "name": name, "ip": ip, "pod_cidr": format!("10.200.{index}.0/24"),
        }))
        .unwrap();
        Self { index, name, record, lease: 0 }
    }

    /// The j-th pod address of this node (10.200.<index>.<j+1>).
    fn pod_ip(&self, j: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.index as u8, (j + 1) as u8)
    }

    fn endpoint(&self, j: usize, identity: u32) -> (String, Vec<u8>) {
        let ip = self.pod_ip(j);
        // The fields the agents read (identity), plus what identifies a pod,
        // so a record has a plausible size (~200 B).
        let v = serde_json::json!({
            "ip": ip,
            "identity": identity,
            "container_id": format!("{:064x}", (self.index as u64) << 32 | j as u64),
            "ifname": "eth0",
            "pod_namespace": "bench",
            "pod_name": format!("{}-{j}", self.name),
            "labels": [format!("k8s:app={}", self.name), "k8s:io.kubernetes.pod.namespace=bench"],
        });
        (format!("endpoints/{}/{ip}", self.name), serde_json::to_vec(&v).unwrap())
    }

    fn register(&mut self, store: &dyn Store, ttl: Duration) -> Result<(), StoreError> {
        self.lease = store.grant_lease(ttl)?;
        store.put_leased(&format!("nodes/{}", self.name), &self.record, self.lease)
    }
}

/// The identity of the simulated nodes' resting endpoints (one per node).
fn identity_of(index: usize) -> u32 {
    50_000 + index as u32
}

/// One prefix followed by one simulated node, watch design: listed once,
/// then watched; re-listed only if etcd compacted the history it needs.
struct Feed {
    prefix: &'static str,
    items: HashMap<String, Vec<u8>>,
    next: Option<Revision>,
    stream: Option<Box<dyn WatchStream>>,
}

impl Feed {
    fn new(prefix: &'static str) -> Self {
        Self { prefix, items: HashMap::new(), next: None, stream: None }
    }

    /// Applies what has arrived (without waiting); the number of events.
    fn pump(&mut self, store: &dyn Store) -> Result<usize, StoreError> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => {
                let from = match self.next {
                    Some(rev) => rev,
                    None => {
                        let (items, rev) = store.list_at(self.prefix)?;
                        self.items = items.into_iter().collect();
                        rev + 1
                    }
                };
                self.next = Some(from);
                self.stream.insert(store.watch(self.prefix, from)?)
            }
        };
        match stream.next(Duration::ZERO) {
            Ok(events) => {
                let n = events.len();
                for e in events {
                    self.next = Some(e.rev + 1);
                    match e.change {
                        Change::Put { key, value } => self.items.insert(key, value),
                        Change::Delete { key } => self.items.remove(&key),
                    };
                }
                Ok(n)
            }
            Err(WatchError::Compacted { .. }) => {
                (self.stream, self.next) = (None, None);
                Ok(0)
            }
            Err(WatchError::Closed(_)) => {
                self.stream = None;
                Ok(0)
            }
        }
    }
}

/// A simulated node's view: what its maps hold.
struct View {
    nodes: Feed,
    endpoints: Feed,
    synced: bool,
}

impl View {
    /// Counts the node once its maps first hold everything published.
    fn check_synced(&mut self, want_nodes: usize, want_endpoints: usize, stats: &Stats) {
        if !self.synced
            && self.nodes.items.len() >= want_nodes
            && self.endpoints.items.len() >= want_endpoints
        {
            self.synced = true;
            stats.synced.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The simulated nodes' threads; dropping it stops and joins them.
struct Sims {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Sims {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sleeps up to `d`, in short steps so a stop is noticed; false if stopped.
fn nap(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    while let Some(left) = end.checked_duration_since(Instant::now()).filter(|l| !l.is_zero()) {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    !stop.load(Ordering::Relaxed)
}

fn count_error(stats: &Stats, what: &str, e: &StoreError) {
    if stats.errors.fetch_add(1, Ordering::Relaxed) < 20 {
        eprintln!("scale: simulated node {what}: {e}");
    }
}

/// Keeps the leases of one group alive (every ttl/3), registering a node
/// again when its lease was lost.
fn keeper(
    store: Arc<EtcdStore>,
    mut nodes: Vec<SimNode>,
    ttl: Duration,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
) {
    while nap(&stop, ttl / 3) {
        for n in &mut nodes {
            match store.keep_alive(n.lease) {
                Ok(true) => {}
                Ok(false) => {
                    if let Err(e) = n.register(store.as_ref(), ttl) {
                        count_error(&stats, "re-registration", &e);
                    }
                }
                Err(e) => count_error(&stats, "lease keep-alive", &e),
            }
        }
    }
}

/// Follows the store for one group of simulated nodes: each node has its
/// own watch streams (watch design) or its own re-listings (poll design).
#[allow(clippy::too_many_arguments)]
fn follower(
    store: Arc<EtcdStore>,
    names: Vec<String>,
    design: Design,
    want: (usize, usize),
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
) {
    let mut views: Vec<View> = names
        .iter()
        .map(|_| View { nodes: Feed::new("nodes/"), endpoints: Feed::new("endpoints/"), synced: false })
        .collect();
    // Poll design: node k of the group lists first at k/len of a second.
    let start = Instant::now();
    let mut due: Vec<Instant> =
        (0..views.len()).map(|k| start + RELIST.mul_f64(k as f64 / views.len() as f64)).collect();
    while !stop.load(Ordering::Relaxed) {
        match design {
            Design::Watch => {
                let mut got = 0;
                for v in &mut views {
                    for f in [&mut v.nodes, &mut v.endpoints] {
                        match f.pump(store.as_ref()) {
                            Ok(n) => got += n,
                            Err(e) => count_error(&stats, "watch", &e),
                        }
                    }
                    v.check_synced(want.0, want.1, &stats);
                }
                stats.events.fetch_add(got as u64, Ordering::Relaxed);
                if got == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Design::Poll => {
                let (k, when) = due.iter().copied().enumerate().min_by_key(|(_, d)| *d).unwrap();
                if let Some(wait) = when.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait.min(Duration::from_millis(50)));
                    continue;
                }
                let v = &mut views[k];
                for f in [&mut v.nodes, &mut v.endpoints] {
                    match store.list(f.prefix) {
                        Ok(items) => f.items = items.into_iter().collect(),
                        Err(e) => count_error(&stats, "re-listing", &e),
                    }
                }
                stats.relists.fetch_add(1, Ordering::Relaxed);
                v.check_synced(want.0, want.1, &stats);
                due[k] = Instant::now() + RELIST;
            }
        }
    }
}

/// The pinned ipcache maps of the lab's agents, read directly: a lookup
/// is a syscall, where the API's list would serialize every entry (10,000+)
/// on each poll and load the agents being measured.
struct Ipcaches(Vec<aya::maps::LpmTrie<aya::maps::MapData, u32, IpcacheInfo>>);

impl Ipcaches {
    fn open(lab: &weft_lab::layout::Lab) -> Result<Self, String> {
        let mut maps = Vec::new();
        for n in &lab.nodes {
            let pin = weft_datapath::loader::pin_dir(&n.bpffs).join(weft_datapath::maps::MAP_IPCACHE);
            let data = aya::maps::MapData::from_pin(&pin).map_err(|e| format!("{}: {e}", pin.display()))?;
            let map = aya::maps::Map::from_map_data(data).map_err(|e| format!("{}: {e}", pin.display()))?;
            maps.push(aya::maps::LpmTrie::try_from(map).map_err(|e| format!("{}: {e}", pin.display()))?);
        }
        Ok(Self(maps))
    }

    /// Whether agent `i` holds `ip`/32 with this identity (the trie answers
    /// the longest match, e.g. the node's /24, so the identity tells).
    fn has(&self, i: usize, ip: Ipv4Addr, identity: u32) -> bool {
        let key = aya::maps::lpm_trie::Key::new(32, ip_to_be(ip));
        self.0[i].get(&key, 0).is_ok_and(|v| v.sec_identity == identity)
    }

    /// Waits (polling every ms) until every agent holds the entry; the time
    /// from `t0` to the slowest.
    fn wait_all(&self, ip: Ipv4Addr, identity: u32, t0: Instant, limit: Duration) -> Result<f64, String> {
        let mut pending: Vec<usize> = (0..self.0.len()).collect();
        while !pending.is_empty() {
            pending.retain(|i| !self.has(*i, ip, identity));
            if t0.elapsed() > limit {
                return Err(format!(
                    "{ip} (identity {identity}) did not reach the ipcache of {} agent(s) within {} s",
                    pending.len(),
                    limit.as_secs()
                ));
            }
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    }
}

/// A cheap pseudo-random gap, so samples do not lock onto a poll period.
fn jitter(k: usize) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let x = (k as u64 ^ nanos).wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    Duration::from_millis(20 + (x >> 33) % 80)
}

pub struct Params {
    pub nodes: usize,
    pub samples: usize,
    pub window: Duration,
}

/// One design, start to end: a 3-node VXLAN lab with its agents, the
/// simulated nodes, then the windows. Everything is taken down on return.
pub fn measure(tag: &str, design: Design, p: &Params) -> Result<Figures, String> {
    if p.nodes == 0 || p.nodes > 250 {
        return Err(format!("--scale-nodes {}: 1..=250 (each node has a /24 of 10.200.0.0/16)", p.nodes));
    }
    let _ = weft_lab::down(tag);
    let mut opts = weft_lab::Options::new(tag, 3, 0)?;
    opts.mode = Some("vxlan".into());
    if design == Design::Poll {
        opts.agent_env = vec![("WEFT_IPCACHE".into(), "poll".into())];
    }
    let lab = weft_lab::up(&opts)?;
    let _down = Down(tag.to_string());
    let url = lab.etcd_url.clone().ok_or("the lab has no etcd")?;
    let probe = Probe {
        underlay: PathBuf::from(format!("/run/netns/{}", weft_lab::layout::underlay_ns(tag))),
        url: url.clone(),
        etcd_pid: lab.etcd_pid.ok_or("the lab's etcd pid is unknown")?,
        agents: lab.nodes.iter().map(|n| n.pid).collect(),
    };
    let stores = connect(&probe.underlay, &url, p.nodes.div_ceil(NODES_PER_CONN))?;
    let ttl = SIM_LEASE_TTL;
    let store_of = |i: usize| stores[i / NODES_PER_CONN].clone();

    println!(
        "# scale: registering {} simulated nodes and {} endpoints",
        p.nodes,
        p.nodes * ENDPOINTS_PER_NODE
    );
    let mut sims: Vec<SimNode> = (0..p.nodes).map(SimNode::new).collect();
    for s in &mut sims {
        let store = store_of(s.index);
        s.register(store.as_ref(), ttl).map_err(|e| format!("registering {}: {e}", s.name))?;
        // One transaction per node (etcd allows 128 operations in one).
        let ops: Vec<weft_store::Op> = (0..ENDPOINTS_PER_NODE)
            .map(|j| {
                let (k, v) = s.endpoint(j, identity_of(s.index));
                weft_store::Op::Put(k, v)
            })
            .collect();
        store.txn(&[], &ops).map_err(|e| format!("publishing {}'s endpoints: {e}", s.name))?;
    }

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Sims { stop: stop.clone(), threads: Vec::new() };
    let want = (p.nodes + lab.nodes.len(), p.nodes * ENDPOINTS_PER_NODE);
    for (g, group) in sims.chunks(NODES_PER_CONN).enumerate() {
        let (store, stop2, stats2) = (stores[g].clone(), stop.clone(), stats.clone());
        let nodes = group.to_vec();
        threads
            .threads
            .push(spawn(format!("scale-keep{g}"), move || keeper(store, nodes, ttl, stop2, stats2))?);
        let (store, stop2, stats2) = (stores[g].clone(), stop.clone(), stats.clone());
        let names = group.iter().map(|s| s.name.clone()).collect();
        threads.threads.push(spawn(format!("scale-follow{g}"), move || {
            follower(store, names, design, want, stop2, stats2)
        })?);
    }

    // Ready: every simulated node has seen everything, and every agent
    // holds every simulated endpoint.
    let maps = Ipcaches::open(&lab)?;
    let t = Instant::now();
    wait_until(Duration::from_secs(180), "the simulated nodes to list everything", || {
        stats.synced.load(Ordering::Relaxed) >= p.nodes
    })?;
    wait_until(Duration::from_secs(180), "the agents' ipcache to hold every simulated endpoint", || {
        sims.iter().all(|s| {
            (0..ENDPOINTS_PER_NODE)
                .all(|j| (0..maps.0.len()).all(|i| maps.has(i, s.pod_ip(j), identity_of(s.index))))
        })
    })?;
    println!("# scale: ready after {:.1} s; settling", t.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(3));

    println!("# scale: at rest for {} s", p.window.as_secs());
    let c = probe.read(&stats)?;
    std::thread::sleep(p.window);
    let rest = probe.window(&c, &stats)?;

    println!("# scale: propagation, {} samples", p.samples);
    let (mut propagation, mut missed) = (Vec::new(), 0);
    for k in 0..p.samples {
        let s = &sims[(k * 7) % sims.len()];
        // New addresses above the resting ones, one identity per sample.
        let j = ENDPOINTS_PER_NODE + 100 + k / sims.len();
        let identity = 70_000 + k as u32;
        let (key, value) = s.endpoint(j, identity);
        let store = store_of(s.index);
        let t0 = Instant::now();
        store.put(&key, &value).map_err(|e| format!("publishing {key}: {e}"))?;
        match maps.wait_all(s.pod_ip(j), identity, t0, PROPAGATION_LIMIT) {
            Ok(ms) => propagation.push(ms),
            Err(e) => {
                eprintln!("scale: propagation sample {k}: {e}");
                missed += 1;
            }
        }
        store.delete(&key).map_err(|e| format!("deleting {key}: {e}"))?;
        std::thread::sleep(jitter(k));
    }

    if propagation.is_empty() {
        return Err(format!("no propagation sample arrived within {} s", PROPAGATION_LIMIT.as_secs()));
    }
    println!("# scale: churn, {CHURN_PER_SEC} pods/s for {} s", p.window.as_secs());
    let c = probe.read(&stats)?;
    let churn_events = churn(&sims, &store_of, p.window)?;
    let churn = probe.window(&c, &stats)?;
    println!(
        "# scale: churn wrote {churn_events} endpoint events ({:.1} pods/s); simulated nodes applied {} watch events, re-listed {} times, {} store errors",
        churn_events as f64 / 2.0 / churn.secs,
        stats.events.load(Ordering::Relaxed),
        stats.relists.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed)
    );
    drop(threads);
    drop(maps);
    Ok(Figures { propagation, missed, rest, churn, churn_events })
}

/// Deletes and re-publishes endpoints at CHURN_PER_SEC for `window`; the
/// number of endpoint events written.
fn churn(
    sims: &[SimNode],
    store_of: &dyn Fn(usize) -> Arc<EtcdStore>,
    window: Duration,
) -> Result<u64, String> {
    let start = Instant::now();
    let period = Duration::from_secs(1) / CHURN_PER_SEC as u32;
    let mut events = 0;
    let mut k = 0usize;
    while start.elapsed() < window {
        let s = &sims[(k * 7) % sims.len()];
        let j = (k / sims.len()) % ENDPOINTS_PER_NODE;
        let (key, value) = s.endpoint(j, identity_of(s.index));
        let store = store_of(s.index);
        store.delete(&key).map_err(|e| format!("churn: deleting {key}: {e}"))?;
        store.put(&key, &value).map_err(|e| format!("churn: publishing {key}: {e}"))?;
        events += 2;
        k += 1;
        // On schedule, not "after each": a slow write is caught up.
        if let Some(wait) = (start + period * k as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(events)
}

/// `n` store clients, made on a thread in the underlay namespace (each
/// connects from the namespace of the thread that created it).
fn connect(underlay: &Path, url: &str, n: usize) -> Result<Vec<Arc<EtcdStore>>, String> {
    let url = url.to_string();
    let stores = weft_net::netns::run_in(underlay, move || {
        (0..n)
            .map(|_| {
                EtcdStore::new(std::slice::from_ref(&url), "/weft/", None)
                    .map_err(|e| weft_net::Error(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(|e| e.to_string())?;
    Ok(stores.into_iter().map(Arc::new).collect())
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|e| format!("starting thread {name}: {e}"))
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let t = Instant::now();
    while !ok() {
        if t.elapsed() > limit {
            return Err(format!("timed out after {} s waiting for {what}", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Takes the lab down when dropped (also on an error).
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = weft_lab::down(&self.0);
    }
}
