//! Services (the kube-proxy replacement): what a connection to a ClusterIP
//! costs as the number of services grows, and what programming them costs,
//! weft beside the two shapes kube-proxy writes, in one run, interleaved.
//!
//! Every service has 3 backends; only the one the client connects to (the
//! middle one of the list, the average position in kube-proxy's chains,
//! which are ordered by hash) has real ones: three pods answering on 8080
//! behind ClusterIP:80. The others point at addresses in 172.16.0.0/12 that
//! no packet is ever sent to.
//!
//! Subjects, each on a node of its own:
//! - weft, socket LB: a weft lab node (1 node, two client pods and 3
//!   backend pods); the client process joins the node's cgroup, so `connect()` is
//!   translated by bpf/sock.c (checked: sock_connect4's run count grows by
//!   the connections made).
//! - weft, per-packet LB: the same node, the other client pod, its process
//!   outside that cgroup, so from-container translates the packets (bpf/lib/lb.h;
//!   checked: sock_connect4 does not run). The filler services and the
//!   target are written into the node's pinned service maps with
//!   `ServiceMaps::put`, what the agent's services thread writes.
//! - kube-proxy's iptables shape: a routed node (Calico-style pods) whose
//!   nat table holds what kube-proxy's iptables mode writes (KUBE-SERVICES
//!   → KUBE-SVC-* with `statistic --mode random` → KUBE-SEP-* DNAT,
//!   KUBE-MARK-MASQ, KUBE-POSTROUTING), loaded with `iptables-restore`.
//! - kube-proxy's nftables shape: the same node shape with kube-proxy's
//!   nftables mode: a verdict map `ip daddr . meta l4proto . th dport` →
//!   per-service chain → `numgen random mod 3 vmap` → per-endpoint chain
//!   with the DNAT, loaded with `nft -f` in transactions of [`NFT_BATCH`]
//!   services (the same ruleset as one transaction; see there).
//!
//! weft's conntrack is flushed before each of its measurements (`weft bpf
//! ct flush`): it refuses new flows, rather than evicting, once it holds
//! 7/8 of its size until the agent's GC runs, which these rounds of some
//! 10,000 connections a second reach (netfilter's table in the other
//! nodes stays far from its limit).
//!
//! One client process per measurement: connect, 1 byte each way, close (the
//! server first, so the client keeps no TIME_WAIT), in a loop for the
//! measurement's seconds; latency is connect() to the reply byte (p50,
//! p99), the rate is connections per second. Each backend
//! answers with its own number, so the client also proves that the
//! connections spread over the 3 backends.
//!
//! Programming: all services from empty and one EndpointSlice change (one
//! backend of one service replaced), for weft's service maps written
//! directly, `iptables-restore` (the change as kube-proxy's minimal sync
//! writes it: KUBE-SERVICES whole, the changed chains, `--noflush`) and
//! `nft -f` (the change as kube-proxy's nftables mode writes it: the new
//! endpoint chain, the service chain flushed and rewritten, the old one
//! deleted); and weft's agent API (`weft service apply -f`) on a fresh
//! one-node lab, the same number of services in files of [`API_CHUNK`]
//! (a request is at most 1 MiB), applied one after the other.

use crate::{LabGuard, Samples, report, topo};
use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use weft_datapath::{
    lb::{Backend, Frontend, FrontendInfo, ServiceMaps},
    maps::{LbBackend, LbFrontend, LbKey, MAP_LB_BACKENDS, MAP_LB_SERVICES, be_to_ip, ip_to_be},
};

/// Numbers of services of the data-plane measurement.
pub const SCALES: [usize; 4] = [10, 1_000, 10_000, 50_000];
/// Backends per service.
const BACKENDS: usize = 3;
const SVC_PORT: u16 = 80;
const BE_PORT: u16 = 8080;
/// Services per `nft -f` when the data-plane nodes are filled. Every
/// `numgen random mod 3 vmap { }` of kube-proxy's nftables mode is an
/// anonymous set, and on this kernel each new one walks all the table's
/// sets, `sscanf` of each name, to name it `__set%d` (once more per 32,768
/// sets), and again to look it up by name: the load grows as the square
/// of the services however it is split. Binding the set to its rule also
/// walks the transaction so far, so one transaction grows as the square
/// of its own size on top: kube-proxy's full sync (a node's cold start) of
/// 16,000 services took 130 s here, against 34 s in runs of 2,000. Runs of
/// this many leave the same ruleset (as kube-proxy's partial syncs do when
/// services come over time); 50,000 still took 12–16 minutes. The
/// programming measurement keeps one transaction.
pub const NFT_BATCH: usize = 2_000;
/// The weft lab of the data-plane measurement, and the one of the API
/// measurement (made anew for each round).
const LAB: &str = "bsvc";
const API_LAB: &str = "bsvp";
/// The nftables table (kube-proxy's is `kube-proxy`).
const TABLE: &str = "weft-kube-proxy";
/// The pods' addresses of the netfilter nodes are in here (kube-proxy's
/// cluster CIDR: traffic from outside it is marked for masquerade).
const NF_PODS: &str = "10.88.0.0/16";

pub struct Params {
    /// Numbers of services of the data-plane measurement, ascending.
    pub scales: Vec<usize>,
    /// Services programmed from empty (weft's maps, iptables, nftables);
    /// 0: not measured.
    pub program: usize,
    /// Services applied through weft's agent API, in applies of
    /// [`API_CHUNK`] (a request is at most 1 MiB); 0: not measured.
    pub api: usize,
    pub rounds: usize,
    pub secs: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    WeftSock,
    WeftPacket,
    Iptables,
    Nft,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::WeftSock, Kind::WeftPacket, Kind::Iptables, Kind::Nft];

    fn subject(self) -> &'static str {
        match self {
            Kind::WeftSock => "weft, socket LB (client in the node's cgroup)",
            Kind::WeftPacket => "weft, per-packet LB (client outside it)",
            Kind::Iptables => "kube-proxy iptables shape",
            Kind::Nft => "kube-proxy nftables shape",
        }
    }

    fn baseline(self) -> bool {
        self == Kind::Iptables
    }
}

/// 10.96.(1 + i/250).(1 + i%250): up to 50,000 services in the default
/// service range, none of them the `kubernetes` service's 10.96.0.1.
fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, (1 + i / 250) as u8, (1 + i % 250) as u8)
}

/// The ClusterIP the client connects to, whatever the number of services
/// (a client port reused towards another address would meet the backends'
/// TIME_WAIT of the earlier one with other timestamps and sequence
/// numbers, and be answered late).
const TARGET: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The target's rev-NAT id and first backend id in weft's maps (the
/// fillers use `i + 1` and `1 + 3i + j`).
const TARGET_REV_NAT: u16 = u16::MAX;
const TARGET_BACKEND_ID: u32 = 0xf000_0000;

/// A service's ClusterIP: the target's in the middle of the list.
fn svc_ip(n: usize, i: usize) -> Ipv4Addr {
    if i == n / 2 { TARGET } else { vip(i) }
}

/// The filler services' backends: 172.16.0.0/12, never sent a packet.
fn filler(i: usize, j: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + (i * BACKENDS + j) as u32)
}

/// The backend an EndpointSlice change puts in place of a service's last.
fn replacement(round: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 31, 255, (round % 250) as u8 + 1)
}

fn n_fmt(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A short stable hash for chain names (kube-proxy hashes with SHA-256 and
/// base32; any 16 characters give the same shape).
fn hash(s: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

/// One service of a ruleset: its index, ClusterIP and backends.
struct Svc {
    i: usize,
    ip: Ipv4Addr,
    backends: Vec<Ipv4Addr>,
}

impl Svc {
    fn filler(i: usize) -> Svc {
        Svc { i, ip: vip(i), backends: (0..BACKENDS).map(|j| filler(i, j)).collect() }
    }
}

/// The services of a scale: `n`, the target (`n / 2`) with `real`.
fn services(n: usize, real: &[Ipv4Addr]) -> impl Iterator<Item = Svc> + '_ {
    (0..n).map(
        move |i| if i == n / 2 { Svc { i, ip: TARGET, backends: real.to_vec() } } else { Svc::filler(i) },
    )
}

fn svc_chain(i: usize) -> String {
    format!("KUBE-SVC-{}", hash(&format!("default/svc{i}:http")))
}

fn sep_chain(i: usize, b: Ipv4Addr) -> String {
    format!("KUBE-SEP-{}", hash(&format!("default/svc{i}:http/{b}")))
}

fn kube_services_rule(n: usize, i: usize) -> String {
    format!(
        "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"default/svc{i}:http cluster IP\" -m tcp --dport {SVC_PORT} -j {}\n",
        svc_ip(n, i),
        svc_chain(i)
    )
}

/// The KUBE-SVC chain's rules and its KUBE-SEP chains' rules.
fn iptables_service_rules(s: &Svc) -> String {
    let (i, n) = (s.i, s.backends.len());
    let mut r = format!(
        "-A {} ! -s {NF_PODS} -d {}/32 -p tcp -m comment --comment \"default/svc{i}:http cluster IP\" -m tcp --dport {SVC_PORT} -j KUBE-MARK-MASQ\n",
        svc_chain(i),
        s.ip
    );
    for (j, b) in s.backends.iter().enumerate() {
        let stat = if j + 1 < n {
            format!(" -m statistic --mode random --probability {:.11}", 1.0 / (n - j) as f64)
        } else {
            String::new()
        };
        r += &format!(
            "-A {} -m comment --comment \"default/svc{i}:http -> {b}:{BE_PORT}\"{stat} -j {}\n",
            svc_chain(i),
            sep_chain(i, *b)
        );
    }
    for b in &s.backends {
        let sep = sep_chain(i, *b);
        r += &format!("-A {sep} -s {b}/32 -m comment --comment \"default/svc{i}:http\" -j KUBE-MARK-MASQ\n");
        r += &format!(
            "-A {sep} -p tcp -m comment --comment \"default/svc{i}:http\" -m tcp -j DNAT --to-destination {b}:{BE_PORT}\n"
        );
    }
    r
}

/// kube-proxy's iptables mode for `n` services: the whole nat table, as
/// its full sync restores it.
fn iptables_full(n: usize, real: &[Ipv4Addr]) -> String {
    let mut r = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         :KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n",
    );
    for s in services(n, real) {
        r += &format!(":{} - [0:0]\n", svc_chain(s.i));
        for b in &s.backends {
            r += &format!(":{} - [0:0]\n", sep_chain(s.i, *b));
        }
    }
    r += "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
          -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
          -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
          -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
          -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
          -A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n\
          -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n";
    for i in 0..n {
        r += &kube_services_rule(n, i);
    }
    for s in services(n, real) {
        r += &iptables_service_rules(&s);
    }
    r + "COMMIT\n"
}

/// The last backend of service `c` replaced by `new`, as kube-proxy's
/// minimal sync writes it (`iptables-restore --noflush`): KUBE-SERVICES
/// whole, the service's chain and the new endpoint's, the old one deleted.
fn iptables_change(n: usize, c: usize, new: Ipv4Addr) -> String {
    let old = Svc::filler(c);
    let mut now = Svc::filler(c);
    now.backends[BACKENDS - 1] = new;
    // Declaring a chain flushes it: the old endpoint's is emptied, then
    // deleted at the end.
    let gone = sep_chain(c, old.backends[BACKENDS - 1]);
    let mut r = format!(
        "*nat\n:KUBE-SERVICES - [0:0]\n:{} - [0:0]\n:{} - [0:0]\n:{gone} - [0:0]\n",
        svc_chain(c),
        sep_chain(c, new)
    );
    for i in 0..n {
        r += &kube_services_rule(n, i);
    }
    // The rules of the service chain and of the new endpoint chain only
    // (the kept endpoints' chains are not rewritten).
    let rules = iptables_service_rules(&now);
    let keep = |l: &&str| {
        l.starts_with(&format!("-A {} ", svc_chain(c)))
            || l.starts_with(&format!("-A {} ", sep_chain(c, new)))
    };
    for l in rules.lines().filter(keep) {
        r += l;
        r.push('\n');
    }
    r += &format!("-X {gone}\nCOMMIT\n");
    r
}

fn nft_service_chain(i: usize) -> String {
    format!("service-{}-default/svc{i}/tcp/http", hash(&format!("default/svc{i}:http")))
}

fn nft_endpoint_chain(i: usize, b: Ipv4Addr) -> String {
    format!("endpoint-{}-default/svc{i}/tcp/http__{b}/{BE_PORT}", hash(&format!("default/svc{i}:http/{b}")))
}

/// The service chain's rules (masquerade mark, then the random pick).
fn nft_service_rules(s: &Svc) -> String {
    let ch = nft_service_chain(s.i);
    let arms: Vec<String> = s
        .backends
        .iter()
        .enumerate()
        .map(|(j, b)| format!("{j} : goto {}", nft_endpoint_chain(s.i, *b)))
        .collect();
    format!(
        "add rule ip {TABLE} {ch} ip daddr {} tcp dport {SVC_PORT} ip saddr != {NF_PODS} jump mark-for-masquerade\n\
         add rule ip {TABLE} {ch} numgen random mod {} vmap {{ {} }}\n",
        s.ip,
        s.backends.len(),
        arms.join(", ")
    )
}

fn nft_endpoint(i: usize, b: Ipv4Addr) -> String {
    let ch = nft_endpoint_chain(i, b);
    format!(
        "add chain ip {TABLE} {ch}\n\
         add rule ip {TABLE} {ch} ip saddr {b} jump mark-for-masquerade\n\
         add rule ip {TABLE} {ch} meta l4proto tcp dnat to {b}:{BE_PORT}\n"
    )
}

/// kube-proxy's nftables mode for `n` services, as one transaction.
fn nft_full(n: usize, real: &[Ipv4Addr]) -> String {
    nft_head() + &nft_services(n, real, 0..n)
}

/// kube-proxy's nftables mode for `n` services as transactions of up to
/// `batch` services each, the table's own chains and map in the first.
fn nft_batches(n: usize, real: &[Ipv4Addr], batch: usize) -> Vec<String> {
    let mut v: Vec<String> =
        (0..n.div_ceil(batch)).map(|k| nft_services(n, real, k * batch..((k + 1) * batch).min(n))).collect();
    match v.first_mut() {
        Some(first) => first.insert_str(0, &nft_head()),
        None => v.push(nft_head()),
    }
    v
}

/// The table with kube-proxy's own chains and the `service-ips` map.
fn nft_head() -> String {
    format!(
        "add table ip {TABLE}\n\
         add chain ip {TABLE} mark-for-masquerade\n\
         add rule ip {TABLE} mark-for-masquerade meta mark set meta mark or 0x4000\n\
         add chain ip {TABLE} masquerading {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         add rule ip {TABLE} masquerading meta mark & 0x4000 == 0 return\n\
         add rule ip {TABLE} masquerading meta mark set meta mark xor 0x4000\n\
         add rule ip {TABLE} masquerading masquerade fully-random\n\
         add chain ip {TABLE} services\n\
         add chain ip {TABLE} nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         add rule ip {TABLE} nat-prerouting jump services\n\
         add chain ip {TABLE} nat-output {{ type nat hook output priority -100; policy accept; }}\n\
         add rule ip {TABLE} nat-output jump services\n\
         add map ip {TABLE} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict; }}\n\
         add rule ip {TABLE} services ip daddr . meta l4proto . th dport vmap @service-ips\n"
    )
}

/// Services `range` of the `n` of a scale: their chains, their rules and
/// their elements of `service-ips`.
fn nft_services(n: usize, real: &[Ipv4Addr], range: std::ops::Range<usize>) -> String {
    let mut r = String::new();
    for s in services(n, real).skip(range.start).take(range.len()) {
        r += &format!("add chain ip {TABLE} {}\n", nft_service_chain(s.i));
        for b in &s.backends {
            r += &nft_endpoint(s.i, *b);
        }
        r += &nft_service_rules(&s);
        r += &format!(
            "add element ip {TABLE} service-ips {{ {} . tcp . {SVC_PORT} : goto {} }}\n",
            s.ip,
            nft_service_chain(s.i)
        );
    }
    r
}

/// The last backend of service `c` replaced by `new`, as kube-proxy's
/// nftables mode writes it: the new endpoint chain, the service chain
/// flushed and rewritten, the old endpoint chain deleted.
fn nft_change(c: usize, new: Ipv4Addr) -> String {
    let old: Vec<Ipv4Addr> = (0..BACKENDS).map(|j| filler(c, j)).collect();
    let mut now = old.clone();
    now[BACKENDS - 1] = new;
    let mut r = nft_endpoint(c, new);
    r += &format!("flush chain ip {TABLE} {}\n", nft_service_chain(c));
    r += &nft_service_rules(&Svc { i: c, ip: vip(c), backends: now });
    r += &format!("delete chain ip {TABLE} {}\n", nft_endpoint_chain(c, old[BACKENDS - 1]));
    r
}

/// Removes the files it names when dropped.
struct TempFiles(Vec<PathBuf>);

impl TempFiles {
    fn write(&mut self, name: &str, text: &str) -> Result<PathBuf, String> {
        let p = std::env::temp_dir().join(format!("weft-bench-svc-{}-{name}", std::process::id()));
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        self.0.push(p.clone());
        Ok(p)
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Runs `prog args` in namespace `ns` (a /run/netns path): how long it
/// took from spawn to exit.
fn timed_in(ns: &str, prog: &str, args: &[&str]) -> Result<Duration, String> {
    let (prog, args) = (prog.to_string(), args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    weft_net::netns::run_in(Path::new(ns), move || {
        let t = Instant::now();
        let out = Command::new(&prog)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| weft_net::Error(format!("{prog}: {e}")))?;
        let took = t.elapsed();
        if out.status.success() {
            Ok(took)
        } else {
            Err(weft_net::Error(format!(
                "{prog} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).chars().take(2000).collect::<String>()
            )))
        }
    })
    .map_err(|e| e.to_string())
}

/// A backend pod's server: accept, read 1 byte, answer with its own
/// number, close. Stopped (its blocked accept woken by shutdown) on drop.
struct Server {
    fd: i32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(ns: &str, ip: Ipv4Addr, number: u8) -> Result<Server, String> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(ns).map_err(|e| format!("{ns}: {e}"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weft-bench-svc".into())
            .spawn(move || {
                // SAFETY: setns on this dedicated thread only.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let _ = tx.send(Err(format!("setns: {}", std::io::Error::last_os_error())));
                    return;
                }
                let l = match TcpListener::bind((ip, BE_PORT)) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(format!("bind {ip}:{BE_PORT}: {e}")));
                        return;
                    }
                };
                let _ = tx.send(Ok(l.as_raw_fd()));
                let mut b = [0u8; 1];
                for c in l.incoming() {
                    if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let Ok(mut c) = c else { continue };
                    if c.read_exact(&mut b).is_ok() {
                        let _ = c.write_all(&[number]);
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        let fd = rx.recv_timeout(Duration::from_secs(5)).map_err(|e| e.to_string())??;
        Ok(Server { fd, stop, thread: Some(thread) })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the listener is open until its thread returns; shutdown
        // wakes its blocked accept.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one client run measured.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct ClientRun {
    connections: u64,
    secs: f64,
    p50_us: f64,
    p99_us: f64,
    /// Connections answered by backend 1, 2, 3.
    per_backend: [u64; BACKENDS],
    /// Attempts that failed (connect timed out after 2 s, or the reply did
    /// not come), with the first error.
    failed: u64,
    first_error: Option<String>,
}

/// The client process (`weft-bench --services-client NETNS CGROUP|- IP
/// SECS`): into the cgroup (when given) and the namespace, then connect,
/// 1 byte each way, close, for SECS seconds; prints a [`ClientRun`].
pub fn client_main(args: &[String]) -> i32 {
    match client(args) {
        Ok(r) => {
            println!("{}", serde_json::to_string(&r).unwrap());
            0
        }
        Err(e) => {
            eprintln!("weft-bench services client: {e}");
            1
        }
    }
}

fn client(args: &[String]) -> Result<ClientRun, String> {
    use std::os::fd::AsRawFd;
    let [ns, cgroup, ip, secs] = args else {
        return Err("usage: --services-client NETNS CGROUP|- IP SECS".into());
    };
    if cgroup != "-" {
        weft_net::cgroup::join(Path::new(cgroup)).map_err(|e| format!("joining {cgroup}: {e}"))?;
    }
    let f = std::fs::File::open(ns).map_err(|e| format!("{ns}: {e}"))?;
    // SAFETY: this process has one thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{ip}: {e}"))?;
    let secs: f64 = secs.parse().map_err(|e| format!("{secs}: {e}"))?;
    let to = SocketAddr::from((ip, SVC_PORT));
    let mut lat = Vec::new();
    let mut per_backend = [0u64; BACKENDS];
    let start = Instant::now();
    let mut b = [1u8; 1];
    let (mut failed, mut first_error) = (0u64, None);
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        let mut once = || -> Result<TcpStream, String> {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
            s.write_all(&[1]).map_err(|e| format!("write: {e}"))?;
            s.read_exact(&mut b).map_err(|e| format!("read: {e}"))?;
            Ok(s)
        };
        let mut s = match once() {
            Ok(s) => s,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(format!("{e} (after {} connections)", lat.len()));
                if failed > 20 {
                    return Err(format!(
                        "{failed} connections to {to} failed, the first: {}",
                        first_error.unwrap()
                    ));
                }
                continue;
            }
        };
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        // The server closes first, so TIME_WAIT stays on its side: the
        // client's ports towards the one ClusterIP would otherwise run
        // out after some 28,000 connections a minute.
        let mut rest = [0u8; 1];
        let _ = s.read(&mut rest);
        if let Some(c) = per_backend.get_mut(usize::from(b[0]).wrapping_sub(1)) {
            *c += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if lat.is_empty() {
        return Err(format!("no connection completed, {failed} failed: {}", first_error.unwrap_or_default()));
    }
    Ok(ClientRun {
        connections: lat.len() as u64,
        secs,
        p50_us: report::percentile(&lat, 0.5),
        p99_us: report::percentile(&lat, 0.99),
        per_backend,
        failed,
        first_error,
    })
}

/// Runs the client process for `secs` seconds.
fn run_client(ns: &str, cgroup: Option<&Path>, ip: Ipv4Addr, secs: u64) -> Result<ClientRun, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let cg = cgroup.map(|c| c.display().to_string()).unwrap_or_else(|| "-".into());
    let out = Command::new(exe)
        .args(["--services-client", ns, &cg, &ip.to_string(), &secs.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("client: {e}"))?;
    if !out.status.success() {
        return Err(format!("client in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("client output: {e}"))
}

/// A node with kube-proxy's rules: a node namespace, a routed client pod
/// and 3 routed backend pods (Calico style, as `topo::routed_same`).
struct NfNode {
    kind: Kind,
    node: String,
    client: String,
    backends: Vec<(String, Ipv4Addr)>,
    /// Services loaded now.
    loaded: usize,
    _servers: Vec<Server>,
    /// Last field: the namespaces go after the servers stopped.
    _ns: Namespaces,
}

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = weft_net::netns::delete(ns);
        }
    }
}

impl NfNode {
    fn new(kind: Kind) -> Result<NfNode, String> {
        let (tag, net) = if kind == Kind::Iptables { ("svi", 1u8) } else { ("svn", 2u8) };
        let names: Vec<String> =
            [tag.to_string(), format!("{tag}c"), format!("{tag}b1"), format!("{tag}b2"), format!("{tag}b3")]
                .into();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let ns = Namespaces(topo::fresh(&refs)?);
        let node = ns.0[0].clone();
        topo::sysctl(&node, "net.ipv4.ip_forward", "1")?;
        topo::in_ns(&node, vec!["route add 169.254.1.1/32 dev lo".into()])?;
        let client_ip = Ipv4Addr::new(10, 88, net, 2);
        topo::routed_pod(&node, &ns.0[1], "svcc", client_ip)?;
        proxy_delay_0(&node, "svcc")?;
        let mut backends = Vec::new();
        let mut servers = Vec::new();
        for j in 0..BACKENDS {
            let ip = Ipv4Addr::new(10, 88, net, 3 + j as u8);
            topo::routed_pod(&node, &ns.0[2 + j], &format!("svcb{}", j + 1), ip)?;
            proxy_delay_0(&node, &format!("svcb{}", j + 1))?;
            let pod = topo::path(&ns.0[2 + j]);
            servers.push(Server::start(&pod, ip, j as u8 + 1)?);
            backends.push((pod, ip));
        }
        Ok(NfNode {
            kind,
            node: topo::path(&node),
            client: topo::path(&ns.0[1]),
            backends,
            loaded: 0,
            _servers: servers,
            _ns: ns,
        })
    }

    fn real(&self) -> Vec<Ipv4Addr> {
        self.backends.iter().map(|b| b.1).collect()
    }

    /// Empties the rules (not timed).
    fn reset(&mut self, files: &mut TempFiles) -> Result<(), String> {
        match self.kind {
            Kind::Iptables => {
                let f = files.write("ipt-empty", "*nat\nCOMMIT\n")?;
                timed_in(&self.node, "iptables-restore", &[f.to_str().unwrap()])?;
            }
            _ => {
                let f =
                    files.write("nft-empty", &format!("add table ip {TABLE}\ndelete table ip {TABLE}\n"))?;
                timed_in(&self.node, "nft", &["-f", f.to_str().unwrap()])?;
            }
        }
        self.loaded = 0;
        Ok(())
    }

    /// Loads `n` services into empty rules: how long the load took.
    fn load(&mut self, n: usize, files: &mut TempFiles) -> Result<Duration, String> {
        let took = match self.kind {
            Kind::Iptables => {
                let f = files.write("ipt-full", &iptables_full(n, &self.real()))?;
                timed_in(&self.node, "iptables-restore", &[f.to_str().unwrap()])?
            }
            _ => {
                let f = files.write("nft-full", &nft_full(n, &self.real()))?;
                timed_in(&self.node, "nft", &["-f", f.to_str().unwrap()])?
            }
        };
        self.loaded = n;
        Ok(took)
    }

    /// Loads `n` services into empty rules the way the data-plane
    /// measurement does: iptables in one restore, nftables in transactions
    /// of [`NFT_BATCH`] services. How long it took, in how many runs.
    fn fill(&mut self, n: usize, files: &mut TempFiles) -> Result<(Duration, usize), String> {
        if self.kind == Kind::Iptables {
            return Ok((self.load(n, files)?, 1));
        }
        let batches = nft_batches(n, &self.real(), NFT_BATCH);
        let mut took = Duration::ZERO;
        for b in &batches {
            let f = files.write("nft-batch", b)?;
            took += timed_in(&self.node, "nft", &["-f", f.to_str().unwrap()])?;
        }
        self.loaded = n;
        Ok((took, batches.len()))
    }

    /// One backend of service 0 replaced: how long the update took.
    fn change(&mut self, round: usize, files: &mut TempFiles) -> Result<Duration, String> {
        let new = replacement(round);
        match self.kind {
            Kind::Iptables => {
                let f = files.write("ipt-change", &iptables_change(self.loaded, 0, new))?;
                timed_in(&self.node, "iptables-restore", &["--noflush", f.to_str().unwrap()])
            }
            _ => {
                let f = files.write("nft-change", &nft_change(0, new))?;
                timed_in(&self.node, "nft", &["-f", f.to_str().unwrap()])
            }
        }
    }
}

/// Proxy ARP answers at once, as Calico sets it on its host-side devices
/// (by default the kernel delays each answer by up to 0.8 s).
fn proxy_delay_0(node: &str, dev: &str) -> Result<(), String> {
    let key: &'static str = Box::leak(format!("net.ipv4.neigh.{dev}.proxy_delay").into_boxed_str());
    topo::sysctl(node, key, "0")
}

/// The weft lab node of the data-plane measurement.
struct WeftNode {
    maps: ServiceMaps,
    /// The socket-LB client's pod and the per-packet client's: one pod
    /// for both would have the two paths meet the other's leftover state
    /// on reused ports (see the report's notes).
    sock_client: String,
    packet_client: String,
    cgroup: PathBuf,
    backends: Vec<Ipv4Addr>,
    /// sock_connect4 of this lab's agent.
    connect4: Vec<u32>,
    /// The agent's API socket.
    socket: PathBuf,
    /// Services the maps can hold (3 backends each).
    capacity: usize,
    loaded: usize,
    _servers: Vec<Server>,
    _lab: LabGuard,
}

fn sock_connect4_ids() -> Vec<u32> {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|p| p.name_as_str() == Some("sock_connect4"))
        .map(|p| p.id())
        .collect()
}

fn run_count(ids: &[u32]) -> u64 {
    aya::programs::loaded_programs().flatten().filter(|p| ids.contains(&p.id())).map(|p| p.run_count()).sum()
}

/// How many services of `BACKENDS` backends the service maps under `dir`
/// hold: a slot per backend plus the frontend's own in weft_lb_services,
/// a backend entry each in weft_lb_backends.
fn capacity(bpffs: &Path) -> Result<usize, String> {
    let dir = weft_datapath::loader::pin_dir(bpffs);
    let max = |name: &str| -> Result<usize, String> {
        aya::maps::MapInfo::from_pin(dir.join(name))
            .map(|i| i.max_entries() as usize)
            .map_err(|e| format!("{name}: {e}"))
    };
    Ok((max(MAP_LB_SERVICES)? / (1 + BACKENDS)).min(max(MAP_LB_BACKENDS)? / BACKENDS))
}

impl WeftNode {
    fn new() -> Result<WeftNode, String> {
        let _ = weft_lab::down(LAB);
        let before = sock_connect4_ids();
        let opts = weft_lab::Options::new(LAB, 1, 2 + BACKENDS)?;
        let l = weft_lab::up(&opts)?;
        let guard = LabGuard(LAB);
        let connect4: Vec<u32> = sock_connect4_ids().into_iter().filter(|id| !before.contains(id)).collect();
        if connect4.is_empty() {
            return Err("the lab's agent attached no sock_connect4".into());
        }
        let node = l.node("node1").ok_or("the lab has no node1")?;
        let cgroup = weft_lab::layout::node_cgroup(LAB, "node1").ok_or("no cgroup2: no socket LB")?;
        let mut backends = Vec::new();
        let mut servers = Vec::new();
        for j in 0..BACKENDS {
            let pod = weft_lab::layout::pod_name(1, j + 3);
            let ip = l.pod(&pod).ok_or("no backend pod")?.ip;
            servers.push(Server::start(&l.netns_of(&pod).unwrap(), ip, j as u8 + 1)?);
            backends.push(ip);
        }
        Ok(WeftNode {
            maps: ServiceMaps::open(&node.bpffs).map_err(|e| e.to_string())?,
            sock_client: l.netns_of("pod1-1").ok_or("no client pod")?,
            packet_client: l.netns_of("pod1-2").ok_or("no client pod")?,
            cgroup,
            backends,
            connect4,
            socket: node.socket.clone(),
            capacity: capacity(&node.bpffs)?,
            loaded: 0,
            _servers: servers,
            _lab: guard,
        })
    }

    /// Writes services 0..n (the target with the real backends; any
    /// earlier target becomes a filler again): how long it took.
    fn load(&mut self, n: usize) -> Result<Duration, String> {
        let t = Instant::now();
        put_services(&self.maps, n, &self.backends)?;
        self.loaded = n;
        Ok(t.elapsed())
    }
}

fn put_services(maps: &ServiceMaps, n: usize, real: &[Ipv4Addr]) -> Result<(), String> {
    for s in services(n, real) {
        put_one(maps, &s)?;
    }
    Ok(())
}

fn put_one(maps: &ServiceMaps, s: &Svc) -> Result<(), String> {
    let target = s.ip == TARGET;
    let fe = Frontend { address: s.ip, port: SVC_PORT, proto: 6 };
    let id = |j: usize| if target { TARGET_BACKEND_ID + j as u32 } else { 1 + (s.i * BACKENDS + j) as u32 };
    let backends: Vec<Backend> = s
        .backends
        .iter()
        .enumerate()
        .map(|(j, b)| Backend { id: id(j), address: *b, port: BE_PORT, proto: 6 })
        .collect();
    let rev_nat_id = if target { TARGET_REV_NAT } else { s.i as u16 + 1 };
    let info = FrontendInfo { rev_nat_id, ..Default::default() };
    maps.put(fe, info, &backends).map_err(|e| format!("service {} of {}: {e}", s.i + 1, s.ip))
}

/// Everything of the data-plane measurement.
struct Bed {
    weft: WeftNode,
    nf: Vec<NfNode>,
    files: TempFiles,
}

impl Bed {
    fn up() -> Result<Bed, String> {
        println!("# services: building the nodes");
        Ok(Bed {
            weft: WeftNode::new()?,
            nf: vec![NfNode::new(Kind::Iptables)?, NfNode::new(Kind::Nft)?],
            files: TempFiles(Vec::new()),
        })
    }

    /// The most services subject `k` is measured with.
    fn max(&self, k: Kind) -> usize {
        match k {
            Kind::WeftSock | Kind::WeftPacket => self.weft.capacity,
            _ => usize::MAX,
        }
    }

    /// Brings every subject that can hold `n` services to `n`: notes for
    /// the report on how the nftables shape was loaded.
    fn fill(&mut self, n: usize) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        if self.weft.loaded != n && n <= self.weft.capacity {
            let took = self.weft.load(n)?;
            println!("# services: weft maps: {} services written in {:.2} s", n_fmt(n), took.as_secs_f64());
        }
        for node in &mut self.nf {
            if node.loaded == n {
                continue;
            }
            node.reset(&mut self.files)?;
            let (took, runs) = node.fill(n, &mut self.files)?;
            println!(
                "# services: {}: {} services loaded in {:.2} s ({runs} runs)",
                node.kind.subject(),
                n_fmt(n),
                took.as_secs_f64()
            );
            if runs > 1 {
                notes.push(format!(
                    "{} ClusterIPs: the {} was loaded in {runs} `nft -f` runs of up to {} services, {:.0} s in all.",
                    n_fmt(n),
                    node.kind.subject(),
                    n_fmt(NFT_BATCH),
                    took.as_secs_f64()
                ));
            }
        }
        Ok(notes)
    }

    /// One client run against subject `k` at `n` services, checked.
    fn measure(&self, k: Kind, secs: u64) -> Result<ClientRun, String> {
        let target = TARGET;
        let (ns, cgroup) = match k {
            Kind::WeftSock => (self.weft.sock_client.clone(), Some(self.weft.cgroup.clone())),
            Kind::WeftPacket => (self.weft.packet_client.clone(), None),
            _ => (self.nf.iter().find(|x| x.kind == k).unwrap().client.clone(), None),
        };
        if matches!(k, Kind::WeftSock | Kind::WeftPacket) {
            // weft refuses new flows once its conntrack holds 7/8 of its
            // size until the agent's GC has run: each measurement starts
            // with an empty table (see the report's note).
            weft_api::Client::new(&self.weft.socket)
                .call(&weft_api::Request::BpfCtFlush)
                .map_err(|e| format!("conntrack flush: {e}"))?;
        }
        let c0 = run_count(&self.weft.connect4);
        let r = run_client(&ns, cgroup.as_deref(), target, secs)?;
        let connects = run_count(&self.weft.connect4) - c0;
        let socket_lb = connects >= r.connections;
        match k {
            Kind::WeftSock if !socket_lb => {
                return Err(format!(
                    "socket LB: sock_connect4 ran {connects} times for {} connections",
                    r.connections
                ));
            }
            Kind::WeftPacket if connects > 0 => {
                return Err(format!(
                    "per-packet LB: sock_connect4 ran {connects} times (client in its cgroup?)"
                ));
            }
            _ => {}
        }
        let used = r.per_backend.iter().filter(|c| **c > 0).count();
        if r.connections >= 100 && used < BACKENDS {
            return Err(format!("{}: connections reached {:?} of the backends", k.subject(), r.per_backend));
        }
        Ok(r)
    }
}

fn data_group(n: usize) -> String {
    format!("services — {} ClusterIPs, 3 backends each", n_fmt(n))
}

const LAT_P50: &str = "connect + 1 B request/response latency, p50";
const LAT_P99: &str = "connect + 1 B request/response latency, p99";
const RATE: &str = "TCP connections (connect, 1 B each way, close)";

/// The data-plane rounds at `n` services, subjects interleaved.
fn data_plane(
    bed: &mut Bed,
    n: usize,
    p: &Params,
    s: &mut Samples,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    for note in bed.fill(n)? {
        println!("# services: {note}");
        notes.push(note);
    }
    let mut kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|k| n <= bed.max(*k)).collect();
    for k in Kind::ALL.iter().filter(|k| !kinds.contains(k)) {
        let why = format!(
            "weft's service maps hold {} services of 3 backends (weft_lb_services has a slot per backend \
             plus one per frontend, sized by the agent's --lb-max)",
            n_fmt(bed.weft.capacity)
        );
        let note = format!("{} ClusterIPs: {} not measured: {why}.", n_fmt(n), k.subject());
        println!("# services: {note}");
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    let g = data_group(n);
    for round in 0..p.rounds {
        println!("# services: {} services, round {}/{}", n_fmt(n), round + 1, p.rounds);
        crate::control::quiesce();
        for k in &kinds {
            let r = bed.measure(*k, p.secs)?;
            println!(
                "# services: {}: {} connections, backends {:?}",
                k.subject(),
                r.connections,
                r.per_backend
            );
            if r.failed > 0 {
                let note = format!(
                    "{} ClusterIPs, {}: {} of {} connections failed ({}).",
                    n_fmt(n),
                    k.subject(),
                    r.failed,
                    r.connections + r.failed,
                    r.first_error.as_deref().unwrap_or("")
                );
                println!("# services: {note}");
                notes.push(note);
            }
            let (sub, base) = (k.subject(), k.baseline());
            s.add(&g, LAT_P50, "µs", false, sub, base, r.p50_us);
            s.add(&g, LAT_P99, "µs", false, sub, base, r.p99_us);
            s.add(&g, RATE, "conn/s", true, sub, base, r.connections as f64 / r.secs);
        }
        kinds.rotate_left(1);
    }
    Ok(())
}

const WEFT_MAPS: &str = "weft: service maps written directly (ServiceMaps::put)";

/// All `p.program` services from empty and one EndpointSlice change, for
/// weft's maps (a fresh datapath's maps each round), iptables and nftables
/// (each in one transaction, as kube-proxy's full sync writes it; on the
/// data-plane nodes, which hold `p.program` services after it).
fn programming(bed: &mut Bed, p: &Params, s: &mut Samples) -> Result<(), String> {
    let n = p.program;
    let g = format!("services — programming {} services, 3 backends each", n_fmt(n));
    let all = "all services, from empty";
    let change = "one EndpointSlice change (one backend of one service replaced)";
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut order = vec![Kind::WeftSock, Kind::Iptables, Kind::Nft];
    // At most 2 rounds: nft -f of 10,000 services alone takes ~30 s.
    let rounds = p.rounds.min(2);
    for round in 0..rounds {
        println!("# services: programming {} services, round {}/{rounds}", n_fmt(n), round + 1);
        crate::control::quiesce();
        for k in &order {
            match k {
                Kind::WeftSock => {
                    let pins =
                        Pins(PathBuf::from(format!("/sys/fs/bpf/weft-bench-svc-{}", std::process::id())));
                    let _ = std::fs::remove_dir_all(&pins.0);
                    let _dp = weft_datapath::Datapath::load(&pins.0).map_err(|e| e.to_string())?;
                    let maps = ServiceMaps::open(&pins.0).map_err(|e| e.to_string())?;
                    if n > capacity(&pins.0)? {
                        println!("# services: weft's maps cannot hold {} services: not programmed", n_fmt(n));
                        continue;
                    }
                    let t = Instant::now();
                    put_services(&maps, n, &bed.weft.backends)?;
                    s.add(&g, all, "ms", false, WEFT_MAPS, false, ms(t.elapsed()));
                    let mut svc = Svc::filler(0);
                    svc.backends[BACKENDS - 1] = replacement(round);
                    let t = Instant::now();
                    put_one(&maps, &svc)?;
                    s.add(&g, change, "ms", false, WEFT_MAPS, false, ms(t.elapsed()));
                }
                _ => {
                    let files = &mut bed.files;
                    let node = bed.nf.iter_mut().find(|x| x.kind == *k).unwrap();
                    node.reset(files)?;
                    let took = node.load(n, files)?;
                    let sub = if *k == Kind::Iptables {
                        "kube-proxy iptables shape: iptables-restore"
                    } else {
                        "kube-proxy nftables shape: nft -f"
                    };
                    s.add(&g, all, "ms", false, sub, k.baseline(), ms(took));
                    let took = node.change(round, files)?;
                    s.add(&g, change, "ms", false, sub, k.baseline(), ms(took));
                }
            }
        }
        order.rotate_left(1);
    }
    Ok(())
}

struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Services and EndpointSlices of `range`, as one JSON list.
fn api_documents(range: std::ops::Range<usize>, last: Option<Ipv4Addr>) -> String {
    let docs: Vec<serde_json::Value> = range
        .flat_map(|i| {
            let mut backends: Vec<Ipv4Addr> = (0..BACKENDS).map(|j| filler(i, j)).collect();
            if let Some(b) = last {
                backends[BACKENDS - 1] = b;
            }
            let name = format!("svc{i}");
            let svc = serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"clusterIP": vip(i).to_string(), "ports": [{"name": "http", "port": SVC_PORT, "targetPort": BE_PORT}]},
            });
            let slice = serde_json::json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{name}-1"), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": BE_PORT, "protocol": "TCP"}],
                "endpoints": backends.iter().map(|b| serde_json::json!({"addresses": [b.to_string()], "nodeName": "node1"})).collect::<Vec<_>>(),
            });
            if last.is_some() { vec![slice] } else { vec![svc, slice] }
        })
        .collect();
    serde_json::to_string(&docs).unwrap()
}

/// CPU seconds a process has used.
fn cpu_secs(pid: u32) -> f64 {
    cpu_secs_of(&format!("/proc/{pid}/stat"))
}

/// CPU seconds in a `stat` file of /proc (a process's or a thread's).
fn cpu_secs_of(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<f64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // Fields after the name: state ppid ... utime (14th overall) stime.
    let (u, s) = (f.get(10).copied().unwrap_or(0.0), f.get(11).copied().unwrap_or(0.0));
    // SAFETY: sysconf has no preconditions.
    (u + s) / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Services per `weft service apply -f` file: a request is at most 1 MiB
/// (`crates/agent/src/server.rs`, MAX_REQUEST; the CLI reads at most that
/// much of a file), about 1,700 Services with their EndpointSlices; 1,000
/// of these take some 420 KiB.
pub const API_CHUNK: usize = 1_000;
/// The largest file the API measurement writes (the 1 MiB request less
/// room for the request's own framing).
const API_MAX_FILE: usize = 1_000_000;

/// A frontend's backends in the kernel maps, read the way the datapath
/// does (head slot, then each slot's backend): `None` while its head is
/// missing. One lookup per slot, not a listing of the whole map.
struct MapReader {
    services: aya::maps::HashMap<aya::maps::MapData, LbKey, LbFrontend>,
    backends: aya::maps::HashMap<aya::maps::MapData, u32, LbBackend>,
}

impl MapReader {
    fn open(bpffs: &Path) -> Result<MapReader, String> {
        let dir = weft_datapath::loader::pin_dir(bpffs);
        let open = |name: &str| -> Result<aya::maps::Map, String> {
            let data = aya::maps::MapData::from_pin(dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
            aya::maps::Map::from_map_data(data).map_err(|e| format!("{name}: {e}"))
        };
        Ok(MapReader {
            services: aya::maps::HashMap::try_from(open(MAP_LB_SERVICES)?).map_err(|e| e.to_string())?,
            backends: aya::maps::HashMap::try_from(open(MAP_LB_BACKENDS)?).map_err(|e| e.to_string())?,
        })
    }

    fn key(ip: Ipv4Addr, slot: u16) -> LbKey {
        LbKey { address: ip_to_be(ip), port: SVC_PORT.to_be(), slot, proto: 6, pad: [0; 3] }
    }

    /// How many backends `ip:80/tcp`'s head slot counts (0: no head).
    fn count(&self, ip: Ipv4Addr) -> u16 {
        self.services.get(&Self::key(ip, 0), 0).map(|v| v.count).unwrap_or(0)
    }

    /// The backends' addresses of `ip:80/tcp`, in slot order.
    fn backends(&self, ip: Ipv4Addr) -> Vec<Ipv4Addr> {
        (1..=self.count(ip))
            .filter_map(|slot| self.services.get(&Self::key(ip, slot), 0).ok())
            .filter_map(|v| self.backends.get(&v.backend_id, 0).ok())
            .map(|b| be_to_ip(b.address))
            .collect()
    }
}

/// CPU seconds of each of a process's threads, by thread name, most first.
fn thread_cpu(pid: u32) -> Vec<(String, f64)> {
    let mut by_name: std::collections::BTreeMap<String, f64> = Default::default();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_string();
        let tid: u32 = t.file_name().to_string_lossy().parse().unwrap_or(0);
        *by_name.entry(name).or_default() += cpu_secs_of(&format!("/proc/{pid}/task/{tid}/stat"));
    }
    let mut v: Vec<_> = by_name.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// `weft service apply -f` of `p.api` Services and their EndpointSlices
/// on a fresh one-node lab, in files of [`API_CHUNK`] applied one after
/// the other (each apply starts when the one before has returned, without
/// waiting for the maps), until every frontend is in the kernel maps; then
/// one EndpointSlice change until its new backend is. Each apply's time
/// and the moment its Services are all in the maps are printed, the first
/// and the last apply's also recorded: an agent whose work per Service
/// grew with the Services it holds would show here.
fn agent_api(p: &Params, s: &mut Samples) -> Result<(), String> {
    let n = p.api;
    let chunks: Vec<std::ops::Range<usize>> =
        (0..n).step_by(API_CHUNK).map(|a| a..(a + API_CHUNK).min(n)).collect();
    let g = format!(
        "services — weft agent API, {} Services + EndpointSlices ({} applies of up to {})",
        n_fmt(n),
        chunks.len(),
        n_fmt(API_CHUNK)
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut files = TempFiles(Vec::new());
    let mut paths = Vec::new();
    for (k, r) in chunks.iter().enumerate() {
        let text = api_documents(r.clone(), None);
        if text.len() > API_MAX_FILE {
            return Err(format!("apply file {} is {} bytes: more than a request may be", k + 1, text.len()));
        }
        paths.push(files.write(&format!("api-{k}.json"), &text)?);
    }
    for round in 0..p.rounds {
        println!(
            "# services: agent API, {} services in {} applies, round {}/{}",
            n_fmt(n),
            chunks.len(),
            round + 1,
            p.rounds
        );
        let _ = weft_lab::down(API_LAB);
        let opts = weft_lab::Options::new(API_LAB, 1, 0)?;
        let l = weft_lab::up(&opts)?;
        let _guard = LabGuard(API_LAB);
        let node = l.node("node1").ok_or("no node1")?;
        let reader = MapReader::open(&node.bpffs)?;
        crate::control::quiesce();
        let cli = |file: &Path| -> Result<(), String> {
            let out = Command::new(&opts.weft_bin)
                .args(["--socket", &node.socket.display().to_string(), "service", "apply", "-f"])
                .arg(file)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .map_err(|e| format!("weft service apply: {e}"))?;
            if !out.status.success() {
                return Err(format!("weft service apply: {}", String::from_utf8_lossy(&out.stderr)));
            }
            Ok(())
        };
        let cpu0 = cpu_secs(node.pid);
        let t = Instant::now();
        // When the Services of apply k (and of every one before it) were
        // all in the maps, measured from `t` by a thread that looks them
        // up one by one while the applies run.
        let done = std::sync::Mutex::new(vec![None::<Duration>; chunks.len()]);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut applies: Vec<(Duration, Duration)> = Vec::new();
        let applied = std::thread::scope(|sc| -> Result<(), String> {
            let watcher = sc.spawn(|| -> Result<(), String> {
                let mut next = 0;
                for (k, r) in chunks.iter().enumerate() {
                    while next < r.end {
                        if reader.count(vip(next)) as usize == BACKENDS {
                            next += 1;
                            continue;
                        }
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return Ok(());
                        }
                        if t.elapsed() > Duration::from_secs(900) {
                            return Err(format!("{next} of {n} services in the maps after 900 s"));
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    done.lock().unwrap()[k] = Some(t.elapsed());
                }
                Ok(())
            });
            let mut run = || -> Result<(), String> {
                for path in &paths {
                    let a = t.elapsed();
                    cli(path)?;
                    applies.push((a, t.elapsed()));
                }
                Ok(())
            };
            let r = run();
            if r.is_err() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let w = watcher.join().map_err(|_| "the map watcher panicked".to_string())?;
            r.and(w)
        });
        applied?;
        let done: Vec<Duration> = done.into_inner().unwrap().into_iter().map(Option::unwrap).collect();
        let programmed = *done.last().ok_or("no Services")?;
        let returned = applies.last().ok_or("no applies")?.1;
        std::thread::sleep(Duration::from_millis(200));
        let cpu = cpu_secs(node.pid) - cpu0;
        let threads: Vec<String> =
            thread_cpu(node.pid).iter().take(6).map(|(t, c)| format!("{t} {c:.1} s")).collect();
        println!("# services: agent API: the agent's threads' CPU: {}", threads.join(", "));
        for (k, ((a, b), d)) in applies.iter().zip(&done).enumerate() {
            println!(
                "# services: agent API apply {}/{} ({} Services): returned after {:.2} s, its Services in the maps {:.2} s after it started ({:.1} s from the first)",
                k + 1,
                chunks.len(),
                chunks[k].len(),
                (*b - *a).as_secs_f64(),
                d.saturating_sub(*a).as_secs_f64(),
                d.as_secs_f64()
            );
        }
        let last = applies.len() - 1;
        let picks: &[(usize, &str)] =
            if last == 0 { &[(0, "first")] } else { &[(0, "first"), (last, "last")] };
        for &(k, what) in picks {
            let (a, b) = applies[k];
            s.add(
                &g,
                &format!("{what} apply ({} Services), until it returns", n_fmt(chunks[k].len())),
                "ms",
                false,
                "weft",
                false,
                ms(b - a),
            );
            s.add(
                &g,
                &format!("{what} apply, until its Services are in the kernel maps"),
                "ms",
                false,
                "weft",
                false,
                ms(done[k].saturating_sub(a)),
            );
        }
        s.add(&g, "all applies, until the last returns", "ms", false, "weft", false, ms(returned));
        s.add(
            &g,
            "all applies, until every frontend is in the kernel maps",
            "ms",
            false,
            "weft",
            false,
            ms(programmed),
        );
        s.add(&g, "agent CPU seconds for it", "s", false, "weft", false, cpu);
        // One slice changed: service 0's last backend replaced.
        let new = replacement(round);
        let one = files.write("api-change.json", &api_documents(0..1, Some(new)))?;
        let t = Instant::now();
        cli(&one)?;
        while !reader.backends(vip(0)).contains(&new) {
            if t.elapsed() > Duration::from_secs(60) {
                return Err("the changed EndpointSlice is not in the maps after 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let what = "one EndpointSlice change, until its new backend is in the kernel maps";
        s.add(&g, what, "ms", false, "weft", false, ms(t.elapsed()));
    }
    Ok(())
}

/// The whole section: data plane at each scale (programming in between,
/// when its number of services comes up), then the agent API; a
/// `p.program` or `p.api` of 0 leaves that part out. Returns notes for the
/// report.
pub fn run(p: &Params, s: &mut Samples) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    let mut bed = Bed::up()?;
    let mut programmed = p.program == 0;
    for &n in &p.scales {
        if !programmed && n >= p.program {
            programming(&mut bed, p, s)?;
            programmed = true;
        }
        data_plane(&mut bed, n, p, s, &mut notes)?;
    }
    if !programmed {
        programming(&mut bed, p, s)?;
    }
    drop(bed);
    if p.api > 0 {
        agent_api(p, s)?;
    }
    Ok(notes)
}

/// Medians by number of services: one row per subject, one column per
/// number, for the latency and the rate (the report's own tables have one
/// number of services each).
pub fn summary(series: &[report::Series]) -> String {
    let prefix = "services — ";
    let suffix = " ClusterIPs, 3 backends each";
    let mut scales: Vec<(usize, String)> = series
        .iter()
        .filter_map(|x| {
            let n = x.group.strip_prefix(prefix)?.strip_suffix(suffix)?;
            Some((n.replace(',', "").parse().ok()?, x.group.clone()))
        })
        .collect();
    scales.sort();
    scales.dedup();
    if scales.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    for (metric, unit) in [(LAT_P50, "µs"), (LAT_P99, "µs"), (RATE, "conn/s")] {
        out += &format!("\n**services — {metric}, by number of ClusterIPs** ({unit}, medians)\n\n| |");
        for (n, _) in &scales {
            out += &format!(" {} |", n_fmt(*n));
        }
        out += " largest ÷ smallest |\n|---|";
        out += &"---:|".repeat(scales.len() + 1);
        out += "\n";
        for k in Kind::ALL {
            let vals: Vec<Option<f64>> = scales
                .iter()
                .map(|(_, g)| {
                    series
                        .iter()
                        .find(|x| &x.group == g && x.metric == metric && x.subject == k.subject())
                        .map(|x| report::median(&x.samples))
                })
                .collect();
            let got: Vec<f64> = vals.iter().flatten().copied().collect();
            if got.is_empty() {
                continue;
            }
            out += &format!("| {} |", k.subject());
            for v in &vals {
                out += &match v {
                    Some(v) => format!(" {} |", report::fmt(*v)),
                    None => " — |".into(),
                };
            }
            let growth =
                if got.len() > 1 { format!("{:.2}", got[got.len() - 1] / got[0]) } else { "—".into() };
            out += &format!(" {growth} |\n");
        }
    }
    out
}

/// The figure the services section adds to the chart.
pub const PANEL: (&str, &str) = ("services — 10,000 ClusterIPs, 3 backends each", LAT_P50);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_rulesets() {
        assert_eq!(vip(0), Ipv4Addr::new(10, 96, 1, 1));
        assert_eq!(vip(49_999), Ipv4Addr::new(10, 96, 200, 250));
        assert_eq!(filler(1, 2), Ipv4Addr::new(172, 16, 0, 5));
        assert_eq!(n_fmt(50_000), "50,000");
        assert_eq!(n_fmt(10), "10");
        let real = [Ipv4Addr::new(10, 88, 1, 3), Ipv4Addr::new(10, 88, 1, 4), Ipv4Addr::new(10, 88, 1, 5)];
        let ipt = iptables_full(10, &real);
        assert_eq!(ipt.lines().filter(|l| l.starts_with("-A KUBE-SERVICES")).count(), 10);
        assert!(ipt.contains("--to-destination 10.88.1.4:8080"), "the target has the real backends");
        assert_eq!(ipt.matches("--probability 0.33333333333").count(), 10);
        let ch = iptables_change(10, 0, replacement(0));
        assert!(ch.contains(&format!("-X {}", sep_chain(0, filler(0, 2)))));
        assert!(ch.contains("--to-destination 172.31.255.1:8080"));
        assert!(
            !ch.contains(&format!("-A {} ", sep_chain(0, filler(0, 0)))),
            "kept endpoints are not rewritten"
        );
        let nft = nft_full(10, &real);
        assert_eq!(nft.matches("add element").count(), 10);
        assert!(nft.contains("numgen random mod 3 vmap"));
        assert!(nft_change(0, replacement(0)).contains("delete chain ip weft-kube-proxy endpoint-"));
        // The batches are the one transaction, cut at service boundaries.
        let batches = nft_batches(10, &real, 4);
        assert_eq!(batches.len(), 3);
        assert_eq!(batches.concat(), nft);
        assert!(batches[1].starts_with("add chain ip weft-kube-proxy service-"));
        assert_eq!(batches[2].matches("add element").count(), 2);
        assert_eq!(nft_batches(0, &real, 4), vec![nft_head()]);
        let docs: serde_json::Value = serde_json::from_str(&api_documents(0..2, None)).unwrap();
        assert_eq!(docs.as_array().unwrap().len(), 4);
        // The API's largest file (the last services have the longest
        // names and addresses) fits a request.
        assert!(api_documents(49_000..49_000 + API_CHUNK, None).len() < API_MAX_FILE);
    }
}
