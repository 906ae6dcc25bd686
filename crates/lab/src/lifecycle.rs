//! Bringing a lab up and tearing it down.

use crate::{
    cni,
    layout::{self, Lab, LabNode, LabPod},
};
use std::{
    net::Ipv4Addr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use weft_api::{Client, PodLabels, Request};
use weft_net::{ip, netns};

#[derive(Clone, Debug)]
pub struct Options {
    pub name: String,
    pub nodes: usize,
    pub pods_per_node: usize,
    pub mtu: u32,
    /// The `weft` binary (runs the agents).
    pub weft_bin: PathBuf,
    /// The `weft-cni` binary.
    pub cni_bin: PathBuf,
}

impl Options {
    /// Binaries next to the running one (target/debug or an install dir).
    pub fn new(name: &str, nodes: usize, pods_per_node: usize) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let dir = exe.parent().unwrap().to_path_buf();
        let find = |var: &str, bin: &str| -> PathBuf {
            std::env::var(var).map(PathBuf::from).unwrap_or_else(|_| {
                // Test binaries live in target/<profile>/deps.
                [dir.join(bin), dir.join("..").join(bin)]
                    .into_iter()
                    .find(|p| p.exists())
                    .unwrap_or_else(|| dir.join(bin))
            })
        };
        Ok(Self {
            name: name.to_string(),
            nodes,
            pods_per_node,
            mtu: 1500,
            weft_bin: find("WEFT_BIN", "weft"),
            cni_bin: find("WEFT_CNI_BIN", "weft-cni"),
        })
    }
}

fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> weft_net::Result<T> + Send + 'static,
) -> Result<T, String> {
    netns::run_in(Path::new(&format!("/run/netns/{ns}")), f).map_err(|e| e.to_string())
}

/// Brings a lab up. On any failure everything created so far is removed.
pub fn up(opts: &Options) -> Result<Lab, String> {
    layout::validate_name(&opts.name)?;
    if opts.nodes == 0 || opts.nodes > 200 {
        return Err("--nodes must be 1..=200".into());
    }
    for bin in [&opts.weft_bin, &opts.cni_bin] {
        if !bin.exists() {
            return Err(format!("{} not found: build it first (cargo build --bins)", bin.display()));
        }
    }
    if layout::dir(&opts.name).join("lab.json").exists()
        || !netns::list(&layout::prefix(&opts.name)).is_empty()
    {
        return Err(format!(
            "lab {0} exists already (or left leftovers): run `weft lab down {0}` first",
            opts.name
        ));
    }
    let mut lab = Lab { name: opts.name.clone(), mtu: opts.mtu, nodes: vec![], pods: vec![] };
    match build(opts, &mut lab) {
        Ok(()) => Ok(lab),
        Err(e) => {
            let _ = down(&opts.name);
            Err(e)
        }
    }
}

fn build(opts: &Options, lab: &mut Lab) -> Result<(), String> {
    std::fs::create_dir_all(layout::dir(&lab.name)).map_err(|e| e.to_string())?;
    build_underlay(&lab.name)?;
    for i in 1..=opts.nodes {
        let node = build_node(opts, &lab.name, i)?;
        lab.nodes.push(node);
        lab.save()?;
    }
    for i in 1..=opts.nodes {
        for j in 1..=opts.pods_per_node {
            let pod = add_pod(opts, lab, i, j)?;
            lab.pods.push(pod);
            lab.save()?;
        }
    }
    Ok(())
}

/// One namespace with a bridge: the wire every node's eth0 plugs into.
fn build_underlay(lab: &str) -> Result<(), String> {
    let ns = layout::underlay_ns(lab);
    netns::add(&ns).map_err(|e| e.to_string())?;
    in_ns(&ns, || {
        ip::batch(&["link set lo up".into(), "link add br0 type bridge".into(), "link set br0 up".into()])
    })
}

fn build_node(opts: &Options, lab: &str, i: usize) -> Result<LabNode, String> {
    let name = layout::node_name(i);
    let ns = format!("{}{}", layout::prefix(lab), name);
    let underlay_ip = Ipv4Addr::new(198, 18, 0, 10 + i as u8);
    netns::add(&ns).map_err(|e| e.to_string())?;
    let port = format!("n{i}");
    let node_ns_path = format!("/run/netns/{ns}");
    in_ns(&layout::underlay_ns(lab), {
        let port = port.clone();
        move || {
            ip::batch(&[
                format!("link add {port} type veth peer name eth0 netns {node_ns_path}"),
                format!("link set {port} master br0 up"),
            ])
        }
    })?;
    in_ns(&ns, move || {
        ip::batch(&[
            "link set lo up".into(),
            "link set eth0 up".into(),
            format!("addr add {underlay_ip}/24 dev eth0"),
        ])
    })?;
    let dir = layout::dir(lab).join(&name);
    let cni_dir = dir.join("cni");
    std::fs::create_dir_all(&cni_dir).map_err(|e| e.to_string())?;
    let socket = dir.join("agent.sock");
    let bpffs = layout::bpffs(lab).join(&name);
    let pod_cidr = format!("10.244.{i}.0/24");
    std::fs::write(
        cni_dir.join("10-weft.conflist"),
        serde_json::to_vec_pretty(&cni::conflist(&socket)).unwrap(),
    )
    .map_err(|e| e.to_string())?;
    let pid = start_agent(opts, lab, &ns, &name, &pod_cidr, &socket, &dir, &bpffs)?;
    Ok(LabNode { name, netns: ns, underlay_ip, pod_cidr, socket, state_dir: dir, bpffs, cni_dir, pid })
}

/// Starts `weft agent` inside the node's namespace, detached from us, logging
/// to <state dir>/agent.log, and waits until it answers.
#[allow(clippy::too_many_arguments)]
pub fn start_agent(
    opts: &Options,
    lab: &str,
    ns: &str,
    node: &str,
    pod_cidr: &str,
    socket: &Path,
    dir: &Path,
    bpffs: &Path,
) -> Result<u32, String> {
    let log = dir.join("agent.log");
    let logf = std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&opts.weft_bin);
    cmd.args(["agent", "--node", node, "--pod-cidr", pod_cidr, "--lab", lab])
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(dir)
        .arg("--bpffs")
        .arg(bpffs)
        .args(["--mtu", &opts.mtu.to_string()])
        .stdin(Stdio::null())
        .stdout(logf.try_clone().map_err(|e| e.to_string())?)
        .stderr(logf);
    // SAFETY: setsid is async-signal-safe; the agent must not die with us.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = in_ns(ns, move || cmd.spawn().map_err(|e| weft_net::Error(format!("starting agent: {e}"))))?;
    let pid = child.id();
    let client = Client::new(socket).with_timeout(Duration::from_secs(5));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if client.call(&Request::AgentStatus).is_ok() {
            return Ok(pid);
        }
        if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let tail = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect();
    Err(format!(
        "agent of {node} did not come up; its log ({}) ends with:\n{}",
        log.display(),
        tail.join("\n")
    ))
}

/// Kills a node's agent (if it runs) and starts a new one with the same
/// configuration. Returns the new pid.
pub fn restart_agent(lab: &Lab, node: &str) -> Result<u32, String> {
    let n = lab.node(node).ok_or_else(|| format!("lab {} has no node {node}", lab.name))?;
    if Path::new(&format!("/proc/{}", n.pid)).exists() && !is_zombie(n.pid) {
        // SAFETY: plain kill(2) of the agent this lab started.
        unsafe { libc::kill(n.pid as i32, libc::SIGKILL) };
        let start = Instant::now();
        while Path::new(&format!("/proc/{}", n.pid)).exists()
            && !is_zombie(n.pid)
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut opts = Options::new(&lab.name, lab.nodes.len(), 0)?;
    opts.mtu = lab.mtu;
    let pid =
        start_agent(&opts, &lab.name, &n.netns, &n.name, &n.pod_cidr, &n.socket, &n.state_dir, &n.bpffs)?;
    let mut updated = lab.clone();
    if let Some(m) = updated.nodes.iter_mut().find(|m| m.name == node) {
        m.pid = pid;
    }
    updated.save()?;
    Ok(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(true)
}

/// A pod: a namespace, labels in the store, and a CNI ADD run from the node.
pub fn add_pod(opts: &Options, lab: &Lab, i: usize, j: usize) -> Result<LabPod, String> {
    let node = &lab.nodes[i - 1];
    let name = layout::pod_name(i, j);
    let ns = format!("{}{}", layout::prefix(&lab.name), name);
    netns::add(&ns).map_err(|e| e.to_string())?;
    in_ns(&ns, || ip::run(&["link", "set", "lo", "up"]))?;
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("app".to_string(), if j % 2 == 1 { "web" } else { "client" }.to_string());
    Client::new(&node.socket)
        .call(&Request::PodLabels(PodLabels { namespace: "default".into(), name: name.clone(), labels }))
        .map_err(|e| e.to_string())?;
    let container_id = ns.clone();
    let netns_path = format!("/run/netns/{ns}");
    let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}");
    let config = cni::plugin_config(&node.socket, "1.0.0");
    let plugin = opts.cni_bin.clone();
    let (cid, nsp) = (container_id.clone(), netns_path.clone());
    let out = in_ns(&node.netns, move || {
        cni::exec(&cni::Invocation {
            plugin: &plugin,
            command: "ADD",
            container_id: &cid,
            netns: &nsp,
            ifname: "eth0",
            args: &args,
            config: &config,
        })
        .map_err(|e| weft_net::Error(format!("exec weft-cni: {e}")))
    })?;
    let result = out
        .json()
        .filter(|_| out.success)
        .ok_or_else(|| format!("CNI ADD of {name} failed: {} {}", out.stdout.trim(), out.stderr.trim()))?;
    let ip = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("CNI ADD of {name} returned no address: {}", out.stdout))?;
    let endpoint_id = endpoint_id_of(&node.socket, &container_id);
    Ok(LabPod { name, node: node.name.clone(), netns: ns, container_id, ip, endpoint_id })
}

fn endpoint_id_of(socket: &Path, container_id: &str) -> u16 {
    Client::new(socket)
        .call_as::<Vec<weft_api::EndpointView>>(&Request::EndpointList)
        .ok()
        .and_then(|eps| eps.into_iter().find(|e| e.container_id == container_id))
        .map(|e| e.id)
        .unwrap_or(0)
}

/// Removes everything a lab created, found by name (works without its state
/// file, e.g. after a crash): agents, namespaces, pins, run directory.
pub fn down(name: &str) -> Result<Vec<String>, String> {
    layout::validate_name(name)?;
    let mut removed = Vec::new();
    for pid in lab_processes(name) {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        removed.push(format!("process {pid}"));
    }
    // Give the kernel a moment to reap before namespaces go.
    std::thread::sleep(Duration::from_millis(100));
    let mut nss = netns::list(&layout::prefix(name));
    nss.sort_by_key(|n| !n.contains("-pod")); // pods first
    for ns in nss {
        netns::delete(&ns).map_err(|e| e.to_string())?;
        removed.push(format!("netns {ns}"));
    }
    for dir in [layout::bpffs(name), layout::dir(name)] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
            removed.push(dir.display().to_string());
        }
    }
    Ok(removed)
}

/// Processes of the lab: agents (and anything else) whose command line names
/// the lab's bpffs or run directory.
pub fn lab_processes(name: &str) -> Vec<u32> {
    let marks = [format!("{}/", layout::bpffs(name).display()), format!("{}/", layout::dir(name).display())];
    let me = std::process::id();
    let mut pids = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            if pid == me {
                continue;
            }
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline);
            if marks.iter().any(|m| cmdline.contains(m.as_str())) {
                pids.push(pid);
            }
        }
    }
    pids
}
