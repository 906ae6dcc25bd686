//! The load generators: iperf3 (throughput), sockperf (request/response
//! latency) and a TCP connect/request/response/close loop (connection
//! rate), each run inside a topology's namespaces.

use crate::topo::Topo;
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn spawn_in(ns: &str, cmd: &mut Command) -> Result<Child, String> {
    let mut owned = std::mem::replace(cmd, Command::new("true"));
    weft_net::netns::run_in(Path::new(ns), move || {
        owned
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| weft_net::Error(e.to_string()))
    })
    .map_err(|e| e.to_string())
}

/// Kills a background server on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Busy and total CPU time of the whole machine so far (all cores), in
/// seconds (/proc/stat).
pub fn cpu_times() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...
    let total: f64 = v.iter().sum();
    let busy: f64 = v.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| x).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (busy / hz, total / hz)
}

/// Busy CPU time of the whole machine so far, in seconds.
pub fn cpu_busy_secs() -> f64 {
    cpu_times().0
}

/// IDs of the weft programs loaded right now.
pub fn weft_program_ids() -> Vec<u32> {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|p| {
            p.name_as_str()
                .is_some_and(|n| ["from_container", "from_host", "from_overlay", "from_network"].contains(&n))
        })
        .map(|p| p.id())
        .collect()
}

/// Run time and run count per program name over the programs `ids` (one
/// topology's agents; needs BPF statistics switched on, see `main`).
pub type BpfCounters = std::collections::BTreeMap<String, (u64, u64)>;

pub fn bpf_counters(ids: &[u32]) -> BpfCounters {
    let mut m = std::collections::BTreeMap::new();
    for p in aya::programs::loaded_programs().flatten() {
        let Some(name) = p.name_as_str() else { continue };
        if ids.contains(&p.id()) {
            let e = m.entry(name.to_string()).or_insert((0u64, 0u64));
            e.0 += p.run_time().as_nanos() as u64;
            e.1 += p.run_count();
        }
    }
    m
}

/// TCP throughput in Gbit/s with `streams` parallel streams.
pub fn iperf3(t: &Topo, streams: u32, secs: u64) -> Result<f64, String> {
    let _srv = Server(spawn_in(&t.server, Command::new("iperf3").args(["-s", "-1", "-p", "5201"]))?);
    std::thread::sleep(Duration::from_millis(300));
    let out = spawn_in(
        &t.client,
        Command::new("iperf3")
            .args(["-c", &t.server_ip.to_string(), "-p", "5201", "-J", "-t", &secs.to_string()])
            .args(["-P", &streams.to_string()]),
    )?
    .wait_with_output()
    .map_err(|e| e.to_string())?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3 output: {e}"))?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| format!("iperf3 failed: {}", String::from_utf8_lossy(&out.stdout)))
}

pub struct Latency {
    pub avg: f64,
    pub p50: f64,
    pub p99: f64,
}

/// TCP ping-pong latency (µs) with sockperf.
pub fn sockperf(t: &Topo, secs: u64) -> Result<Latency, String> {
    let ip = t.server_ip.to_string();
    let _srv = Server(spawn_in(
        &t.server,
        Command::new("sockperf").args(["sr", "--tcp", "-i", &ip, "-p", "11111"]),
    )?);
    std::thread::sleep(Duration::from_millis(300));
    let out = spawn_in(
        &t.client,
        Command::new("sockperf").args(["pp", "--tcp", "-i", &ip, "-p", "11111", "-t", &secs.to_string()]),
    )?
    .wait_with_output()
    .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let find = |key: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.contains(key))?;
        let rest = &line[line.find(key)? + key.len()..];
        rest.trim_start_matches(['=', ' '])
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()?
            .parse()
            .ok()
    };
    match (find("avg-latency="), find("percentile 50.000 ="), find("percentile 99.000 =")) {
        (Some(avg), Some(p50), Some(p99)) => Ok(Latency { avg, p50, p99 }),
        _ => Err(format!("sockperf output not understood: {text}")),
    }
}

/// Short TCP connections per second: connect, 1 byte each way, close (like
/// netperf TCP_CRR), one client.
pub fn crr(t: &Topo, secs: u64) -> Result<f64, String> {
    let ip = t.server_ip;
    let ready = std::sync::Arc::new(std::sync::Barrier::new(2));
    let r2 = ready.clone();
    let server_ns = std::fs::File::open(&t.server).map_err(|e| e.to_string())?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let srv = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this dedicated thread only.
        unsafe { libc::setns(server_ns.as_raw_fd(), libc::CLONE_NEWNET) };
        let l = TcpListener::bind((ip, 7300)).unwrap();
        l.set_nonblocking(true).unwrap();
        r2.wait();
        let mut b = [0u8; 1];
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    if s.read_exact(&mut b).is_ok() {
                        let _ = s.write_all(&b);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_micros(50)),
            }
        }
    });
    ready.wait();
    let n = weft_net::netns::run_in(Path::new(&t.client), move || {
        let start = Instant::now();
        let mut n = 0u64;
        let mut b = [1u8; 1];
        while start.elapsed() < Duration::from_secs(secs) {
            let mut s = TcpStream::connect((ip, 7300)).map_err(|e| weft_net::Error(e.to_string()))?;
            s.write_all(&b).map_err(|e| weft_net::Error(e.to_string()))?;
            s.read_exact(&mut b).map_err(|e| weft_net::Error(e.to_string()))?;
            n += 1;
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = srv.join();
    n.map_err(|e| e.to_string())
}
