//! Control-plane figures: CNI ADD/DEL latency (weft and, side by side, the
//! reference bridge plugin with host-local IPAM), pods per second with 8
//! concurrent ADDs, agent memory idle and with many endpoints, and agent
//! start-to-ready time.

use crate::tools::cpu_times;
use serde_json::{Value, json};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};
use weft_lab::cni;

pub struct Plugin {
    pub name: &'static str,
    pub binary: PathBuf,
    /// Namespace the runtime (and so the plugin) runs in.
    pub node_ns: String,
    pub config: Value,
    /// weft's agent socket: DELs answer before the devices are gone, so
    /// the next phase waits until the agent has finished them (see
    /// [`settle`]).
    pub agent: Option<PathBuf>,
}

fn exec(p: &Plugin, command: &str, container: &str, netns: &str) -> Result<Duration, String> {
    let (bin, node, conf) = (p.binary.clone(), p.node_ns.clone(), p.config.clone());
    let (command, container, netns) = (command.to_string(), container.to_string(), netns.to_string());
    weft_net::netns::run_in(Path::new(&node), move || {
        let start = Instant::now();
        let out = cni::exec(&cni::Invocation {
            plugin: &bin,
            command: &command,
            container_id: &container,
            netns: &netns,
            ifname: "eth0",
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench",
            config: &conf,
        })
        .map_err(|e| weft_net::Error(e.to_string()))?;
        if !out.success {
            return Err(weft_net::Error(format!("{command} {container}: {} {}", out.stdout, out.stderr)));
        }
        Ok(start.elapsed())
    })
    .map_err(|e| e.to_string())
}

/// Pod namespaces weft-bench-p<tag><i>, removed on drop.
pub struct Pods(pub Vec<String>);

impl Pods {
    pub fn new(tag: &str, n: usize) -> Result<Pods, String> {
        let mut v = Vec::new();
        for i in 0..n {
            let ns = format!("weft-bench-p{tag}{i}");
            let _ = weft_net::netns::delete(&ns);
            weft_net::netns::add(&ns).map_err(|e| e.to_string())?;
            v.push(ns);
        }
        Ok(Pods(v))
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = weft_net::netns::delete(ns);
        }
    }
}

/// Sequential ADDs then DELs: per-operation latencies in ms.
pub fn latencies(p: &Plugin, pods: &Pods) -> Result<(Vec<f64>, Vec<f64>), String> {
    quiesce();
    let mut adds = Vec::new();
    for ns in &pods.0 {
        adds.push(exec(p, "ADD", ns, &format!("/run/netns/{ns}"))?.as_secs_f64() * 1e3);
    }
    let mut dels = Vec::new();
    for ns in &pods.0 {
        dels.push(exec(p, "DEL", ns, &format!("/run/netns/{ns}"))?.as_secs_f64() * 1e3);
    }
    settle(p)?;
    Ok((adds, dels))
}

/// Waits until weft's agent has removed the devices and addresses of the
/// pods DEL answered for, so that work is not charged to (or hidden in)
/// the next measurement. The reference plugins finish within DEL.
pub fn settle(p: &Plugin) -> Result<(), String> {
    let Some(socket) = &p.agent else { return Ok(()) };
    let client = weft_api::Client::new(socket);
    let start = Instant::now();
    loop {
        let st: weft_api::AgentStatus =
            client.call_as(&weft_api::Request::AgentStatus).map_err(|e| e.to_string())?;
        if st.removals_in_progress == 0 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "{}: {} removals still in progress after 30 s",
                p.name, st.removals_in_progress
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (at most 10 s) until the machine is nearly idle: the kernel
/// tears namespaces and devices of the previous measurement down in the
/// background, and that work must not be charged to the next subject.
pub fn quiesce() {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let (b0, t0) = cpu_times();
        std::thread::sleep(Duration::from_millis(200));
        let (b1, t1) = cpu_times();
        if b1 - b0 <= 0.1 * (t1 - t0) {
            return;
        }
    }
}

/// What a run of concurrent ADDs cost: pods per second, and the machine's
/// CPU per pod (every process and the kernel) in ms.
pub struct Rate {
    pub pods_per_sec: f64,
    pub cpu_ms_per_pod: f64,
    /// Share of all cores busy during the run.
    pub busy: f64,
}

/// ADDs `pods` with 8 concurrent workers. `keep` leaves them in place (to
/// measure the agent with many endpoints).
pub fn rate(p: Arc<Plugin>, pods: &Pods, keep: bool) -> Result<Rate, String> {
    quiesce();
    let queue = Arc::new(std::sync::Mutex::new(pods.0.clone()));
    let (busy0, total0) = cpu_times();
    let start = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (q, p) = (queue.clone(), p.clone());
            std::thread::spawn(move || -> Result<(), String> {
                loop {
                    let Some(ns) = q.lock().unwrap().pop() else { return Ok(()) };
                    exec(&p, "ADD", &ns, &format!("/run/netns/{ns}"))?;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "worker panicked")??;
    }
    let secs = start.elapsed().as_secs_f64();
    let (busy1, total1) = cpu_times();
    let rate = Rate {
        pods_per_sec: pods.0.len() as f64 / secs,
        cpu_ms_per_pod: (busy1 - busy0) * 1e3 / pods.0.len() as f64,
        busy: (busy1 - busy0) / (total1 - total0).max(f64::EPSILON),
    };
    if !keep {
        del_all(&p, pods)?;
        settle(&p)?;
    }
    Ok(rate)
}

pub fn del_all(p: &Plugin, pods: &Pods) -> Result<(), String> {
    for ns in &pods.0 {
        exec(p, "DEL", ns, &format!("/run/netns/{ns}"))?;
    }
    Ok(())
}

/// Resident memory of a process, in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The reference bridge plugin with host-local IPAM, in its own node
/// namespace; host-local keeps its state in `state`.
pub fn bridge_plugin(node_ns: &str, state: &Path) -> Plugin {
    Plugin {
        name: "bridge + host-local (reference plugins)",
        binary: PathBuf::from("/usr/lib/cni/bridge"),
        node_ns: format!("/run/netns/{node_ns}"),
        agent: None,
        config: json!({
            "cniVersion": "1.0.0",
            "name": "bench",
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.251.0.0/20" }]], "dataDir": state },
        }),
    }
}
