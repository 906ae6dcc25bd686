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
use weft_api::{AgentStatus, Client, PodLabels, Request};
use weft_net::{ip, netns};

#[derive(Clone, Debug)]
pub struct Options {
    pub name: String,
    pub nodes: usize,
    pub pods_per_node: usize,
    /// Pod MTU (None: the agents' default for the mode).
    pub mtu: Option<u32>,
    /// "local" or "etcd"; default: etcd when there is more than one node.
    pub store: Option<String>,
    /// vxlan, ipip or native (None: the cluster default, vxlan).
    pub mode: Option<String>,
    pub lease_ttl: u64,
    /// Gateway style: weft or link-local.
    pub gateway: Option<String>,
    /// One node without a cluster store: its pod CIDR (default 10.244.1.0/24).
    pub pod_cidr: Option<String>,
    /// The `weft` binary (runs the agents).
    pub weft_bin: PathBuf,
    /// The `weft-cni` binary.
    pub cni_bin: PathBuf,
    /// Extra environment for the agents (tests: `WEFT_CRASH_AT`).
    pub agent_env: Vec<(String, String)>,
    /// etcd speaks https with client certificates; the lab makes the PKI.
    pub etcd_tls: bool,
    /// A lab file: its nodes, namespaces and pods replace the counts.
    pub file: Option<crate::file::LabFile>,
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
            mtu: None,
            store: None,
            mode: None,
            lease_ttl: 5,
            gateway: None,
            pod_cidr: None,
            weft_bin: find("WEFT_BIN", "weft"),
            cni_bin: find("WEFT_CNI_BIN", "weft-cni"),
            agent_env: Vec::new(),
            etcd_tls: false,
            file: None,
        })
    }

    /// Options for the cluster a lab file describes.
    pub fn from_file(name: &str, file: crate::file::LabFile) -> Result<Self, String> {
        let mut o = Self::new(name, file.nodes, 0)?;
        o.mode = file.mode.clone();
        o.store = file.store.clone();
        o.file = Some(file);
        Ok(o)
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
    let store = opts.store.clone().unwrap_or_else(|| if opts.nodes > 1 { "etcd" } else { "local" }.into());
    if store != "local" && store != "etcd" {
        return Err(format!("unknown store {store:?}: use local or etcd"));
    }
    if store == "local" && opts.nodes > 1 {
        return Err("several nodes need a cluster store: use --store etcd".into());
    }
    if store == "local" && opts.etcd_tls {
        return Err("--etcd-tls needs the etcd store (--store etcd, or more than one node)".into());
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
    let mut lab = Lab {
        name: opts.name.clone(),
        mtu: opts.mtu,
        store,
        mode: opts.mode.clone(),
        etcd_url: None,
        etcd_pid: None,
        etcd_tls: opts.etcd_tls,
        lease_ttl: opts.lease_ttl,
        gateway: opts.gateway.clone(),
        nodes: vec![],
        pods: vec![],
    };
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
    if lab.store == "etcd" {
        if lab.etcd_tls {
            let ip = layout::ETCD_IP.parse().expect("the etcd address is an IP");
            crate::pki::create(&layout::pki_dir(&lab.name), &lab.name, &[ip])?;
        }
        lab.etcd_url = Some(etcd_url(lab));
        lab.etcd_pid = Some(start_etcd(lab)?);
    }
    lab.save()?;
    for i in 1..=opts.nodes {
        let node = build_node(opts, lab, i)?;
        lab.nodes.push(node);
        lab.save()?;
    }
    if let Some(file) = &opts.file {
        return build_from_file(opts, lab, file);
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

/// Namespaces (labels through node 1's agent: the store is the cluster's)
/// and the file's pods, with their ports and servers.
fn build_from_file(opts: &Options, lab: &mut Lab, file: &crate::file::LabFile) -> Result<(), String> {
    let first = Client::new(&lab.nodes[0].socket);
    for (ns, spec) in &file.namespaces {
        let labels = spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        first
            .call(&Request::NamespaceLabel(weft_api::NamespaceLabel { name: ns.clone(), labels }))
            .map_err(|e| format!("labelling namespace {ns}: {e}"))?;
    }
    for spec in &file.pods {
        let pod = add_file_pod(opts, lab, spec)?;
        lab.pods.push(pod);
        lab.save()?;
    }
    Ok(())
}

/// A pod of a lab file: labels and ports in the store, CNI ADD, servers.
fn add_file_pod(opts: &Options, lab: &Lab, spec: &crate::file::PodSpec) -> Result<LabPod, String> {
    let node = &lab.nodes[spec.node - 1];
    let ns = format!("{}pod-{}", layout::prefix(&lab.name), spec.lab_name());
    netns::add(&ns).map_err(|e| e.to_string())?;
    in_ns(&ns, || ip::run(&["link", "set", "lo", "up"]))?;
    let client = Client::new(&node.socket);
    client
        .call(&Request::PodLabels(PodLabels {
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            remove: vec![],
        }))
        .map_err(|e| format!("labelling pod {}: {e}", spec.lab_name()))?;
    client
        .call(&Request::PodPorts(weft_api::PodPorts {
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            ports: spec.ports.clone(),
        }))
        .map_err(|e| format!("ports of pod {}: {e}", spec.lab_name()))?;
    let args = format!("K8S_POD_NAMESPACE={};K8S_POD_NAME={}", spec.namespace, spec.name);
    let pod = cni_add(opts, node, &ns, &spec.lab_name(), &args)?;
    if !spec.serve.is_empty() {
        start_servers(opts, lab, &ns, &spec.serve)?;
    }
    Ok(pod)
}

/// `weft lab serve` in the pod's namespace; returns once it listens. Its
/// command line names the lab's run directory, so `down` kills it.
fn start_servers(opts: &Options, lab: &Lab, ns: &str, serve: &[String]) -> Result<(), String> {
    let mut cmd = Command::new(&opts.weft_bin);
    cmd.args(["lab", "serve", "--lab-dir"])
        .arg(format!("{}/", layout::dir(&lab.name).display()))
        .args(serve)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    let mut child =
        in_ns(ns, move || cmd.spawn().map_err(|e| weft_net::Error(format!("weft lab serve: {e}"))))?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .map_err(|e| format!("weft lab serve: {e}"))?;
    if line.trim() != "ready" {
        let _ = child.kill();
        return Err(format!("weft lab serve in {ns} did not start ({})", line.trim()));
    }
    Ok(())
}

/// Adds one more node (its agent, no pods) to a running lab.
pub fn add_node(lab: &mut Lab) -> Result<LabNode, String> {
    if lab.store != "etcd" {
        return Err("only a lab on etcd can grow".into());
    }
    let mut opts = Options::new(&lab.name, lab.nodes.len() + 1, 0)?;
    opts.mtu = lab.mtu;
    let node = build_node(&opts, lab, lab.nodes.len() + 1)?;
    lab.nodes.push(node.clone());
    lab.save()?;
    Ok(node)
}

/// One namespace with a bridge: the wire every node's eth0 plugs into. The
/// bridge itself holds the etcd address and the lab's "internet" host
/// (layout::INTERNET_IP), which every node routes to through this
/// namespace. Its MAC is fixed: a bridge without
/// one takes the lowest MAC of its ports, which changes as nodes plug in
/// and would leave the nodes' ARP entries for etcd pointing nowhere.
fn build_underlay(lab: &str) -> Result<(), String> {
    let ns = layout::underlay_ns(lab);
    netns::add(&ns).map_err(|e| e.to_string())?;
    in_ns(&ns, || {
        ip::batch(&[
            "link set lo up".into(),
            "link add br0 address 02:00:c6:12:00:02 type bridge".into(),
            "link set br0 up".into(),
            format!("addr add {}/24 dev br0", layout::ETCD_IP),
            // A host outside the cluster (the kernel may lack dummy
            // devices: the bridge holds it too): it knows no route to
            // pods, so only masqueraded traffic gets answers.
            format!("addr add {}/24 dev br0", layout::INTERNET_IP),
        ])
    })
}

/// The lab's etcd client URL: https when it speaks TLS.
pub fn etcd_url(lab: &Lab) -> String {
    let scheme = if lab.etcd_tls { "https" } else { "http" };
    format!("{scheme}://{}:2379", layout::ETCD_IP)
}

/// Starts (or restarts) the lab's etcd in the underlay namespace, its data
/// in the lab's run directory, and waits until it answers. With TLS it
/// serves https only and accepts only clients with a certificate of the
/// lab's CA.
pub fn start_etcd(lab: &Lab) -> Result<u32, String> {
    let dir = layout::dir(&lab.name);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))
        .map_err(|e| e.to_string())?;
    let url = etcd_url(lab);
    let mut cmd = Command::new("etcd");
    cmd.arg("--name")
        .arg(format!("weft-{}", lab.name))
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &format!("http://{}:2380", layout::ETCD_IP)])
        .args(lab.pki().map(|p| p.etcd_args()).unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    detach(&mut cmd);
    let child = in_ns(&layout::underlay_ns(&lab.name), move || {
        cmd.spawn().map_err(|e| weft_net::Error(format!("starting etcd (apt-get install etcd-server): {e}")))
    })?;
    let pid = child.id();
    let start = Instant::now();
    loop {
        let u = url.clone();
        let tls = lab.pki().map(|p| p.client_files());
        let ok = in_ns(&layout::underlay_ns(&lab.name), move || {
            let s = weft_store::EtcdStore::new(&[u], "/weft/", tls.as_ref())
                .map_err(|e| weft_net::Error(e.to_string()))?;
            Ok(s.check().is_ok())
        })?;
        if ok {
            return Ok(pid);
        }
        if start.elapsed() > Duration::from_secs(30) || is_gone(pid) {
            return Err(format!("etcd did not come up; see {}", dir.join("etcd.log").display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills the lab's etcd and starts it again on the same data.
pub fn restart_etcd(lab: &Lab) -> Result<u32, String> {
    if let Some(pid) = lab.etcd_pid {
        kill_and_wait(pid);
    }
    let pid = start_etcd(lab)?;
    let mut updated = lab.clone();
    updated.etcd_pid = Some(pid);
    updated.save()?;
    Ok(pid)
}

fn build_node(opts: &Options, lab: &Lab, i: usize) -> Result<LabNode, String> {
    let name = layout::node_name(i);
    let ns = format!("{}{}", layout::prefix(&lab.name), name);
    let underlay_ip = Ipv4Addr::new(198, 18, 0, 10 + i as u8);
    netns::add(&ns).map_err(|e| e.to_string())?;
    let port = format!("n{i}");
    let node_ns_path = format!("/run/netns/{ns}");
    in_ns(&layout::underlay_ns(&lab.name), {
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
            // The "internet" behind the underlay (masquerade's far end).
            format!("route add {} via {} dev eth0", layout::INTERNET_NET, layout::ETCD_IP),
        ])
    })?;
    let dir = layout::dir(&lab.name).join(&name);
    let cni_dir = dir.join("cni");
    std::fs::create_dir_all(&cni_dir).map_err(|e| e.to_string())?;
    let socket = dir.join("agent.sock");
    // One node without a store picks its CIDR; a cluster hands them out.
    let pod_cidr = match (&opts.pod_cidr, lab.store.as_str()) {
        (Some(c), "local") => c.clone(),
        (None, "local") => format!("10.244.{i}.0/24"),
        _ => String::new(),
    };
    std::fs::write(
        cni_dir.join("10-weft.conflist"),
        serde_json::to_vec_pretty(&cni::conflist(&socket)).unwrap(),
    )
    .map_err(|e| e.to_string())?;
    let mut node = LabNode {
        name,
        netns: ns,
        underlay_ip,
        pod_cidr,
        socket,
        state_dir: dir,
        bpffs: layout::bpffs(&lab.name).join(layout::node_name(i)),
        cni_dir,
        pid: 0,
    };
    let (pid, status) = start_agent(opts, lab, &node)?;
    node.pid = pid;
    node.pod_cidr = status.pod_cidr;
    Ok(node)
}

fn detach(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe; the child must not die with us.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// Starts `weft agent` inside the node's namespace, detached from us, logging
/// to <state dir>/agent.log, and waits until it answers.
pub fn start_agent(opts: &Options, lab: &Lab, node: &LabNode) -> Result<(u32, AgentStatus), String> {
    let log = node.state_dir.join("agent.log");
    let logf = std::fs::OpenOptions::new().create(true).append(true).open(&log).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&opts.weft_bin);
    cmd.args(["agent", "--node", &node.name, "--lab", &lab.name, "--store", &lab.store])
        .arg("--socket")
        .arg(&node.socket)
        .arg("--state-dir")
        .arg(&node.state_dir)
        .arg("--bpffs")
        .arg(&node.bpffs)
        .args(["--lease-ttl", &lab.lease_ttl.to_string()])
        .envs(opts.agent_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(logf.try_clone().map_err(|e| e.to_string())?)
        .stderr(logf);
    if !node.pod_cidr.is_empty() && lab.store == "local" {
        cmd.args(["--pod-cidr", &node.pod_cidr]);
    }
    if let Some(url) = &lab.etcd_url {
        cmd.args(["--etcd", url]);
    }
    if let Some(pki) = lab.pki() {
        cmd.arg("--etcd-ca").arg(&pki.ca);
        cmd.arg("--etcd-cert").arg(&pki.client_cert);
        cmd.arg("--etcd-key").arg(&pki.client_key);
    }
    if let Some(m) = &lab.mode {
        cmd.args(["--mode", m]);
    }
    if let Some(g) = &lab.gateway {
        cmd.args(["--gateway", g]);
    }
    if let Some(m) = lab.mtu {
        cmd.args(["--mtu", &m.to_string()]);
    }
    match layout::node_cgroup(&lab.name, &node.name) {
        Some(cg) => {
            std::fs::create_dir_all(&cg).map_err(|e| format!("creating cgroup {}: {e}", cg.display()))?;
            cmd.arg("--cgroup-root").arg(cg);
        }
        None => {
            cmd.args(["--cgroup-root", "none"]);
        }
    }
    detach(&mut cmd);
    let child =
        in_ns(&node.netns, move || cmd.spawn().map_err(|e| weft_net::Error(format!("starting agent: {e}"))))?;
    let pid = child.id();
    let client = Client::new(&node.socket).with_timeout(Duration::from_secs(5));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(40) {
        if let Ok(st) = client.call_as::<AgentStatus>(&Request::AgentStatus) {
            return Ok((pid, st));
        }
        if is_gone(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let tail = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect();
    Err(format!(
        "agent of {} did not come up; its log ({}) ends with:\n{}",
        node.name,
        log.display(),
        tail.join("\n")
    ))
}

/// Kills a node's agent (if it runs) and starts a new one with the same
/// configuration. Returns the new pid.
pub fn restart_agent(lab: &Lab, node: &str) -> Result<u32, String> {
    restart_agent_with_env(lab, node, &[])
}

/// `restart_agent` with extra environment for the new agent.
pub fn restart_agent_with_env(lab: &Lab, node: &str, env: &[(&str, &str)]) -> Result<u32, String> {
    let n = lab.node(node).ok_or_else(|| format!("lab {} has no node {node}", lab.name))?;
    kill_and_wait(n.pid);
    let mut opts = Options::new(&lab.name, lab.nodes.len(), 0)?;
    opts.agent_env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let (pid, _) = start_agent(&opts, lab, n)?;
    let mut updated = lab.clone();
    if let Some(m) = updated.nodes.iter_mut().find(|m| m.name == node) {
        m.pid = pid;
    }
    updated.save()?;
    Ok(pid)
}

/// SIGKILL, then wait until the process is gone (or a zombie).
pub fn kill_and_wait(pid: u32) {
    if is_gone(pid) {
        return;
    }
    // SAFETY: plain kill(2) of a process this lab started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let start = Instant::now();
    while !is_gone(pid) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the process has exited (gone, or a zombie nobody reaped yet).
pub fn is_gone(pid: u32) -> bool {
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
        .call(&Request::PodLabels(PodLabels {
            namespace: "default".into(),
            name: name.clone(),
            labels,
            remove: vec![],
        }))
        .map_err(|e| e.to_string())?;
    let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}");
    cni_add(opts, node, &ns, &name, &args)
}

/// CNI ADD of a pod whose namespace `ns` exists, run from its node as a
/// runtime would; the container id is the namespace's name.
fn cni_add(opts: &Options, node: &LabNode, ns: &str, name: &str, args: &str) -> Result<LabPod, String> {
    let container_id = ns.to_string();
    let netns_path = format!("/run/netns/{ns}");
    let config = cni::plugin_config(&node.socket, "1.0.0");
    let plugin = opts.cni_bin.clone();
    let (cid, nsp, args) = (container_id.clone(), netns_path.clone(), args.to_string());
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
    Ok(LabPod {
        name: name.to_string(),
        node: node.name.clone(),
        netns: ns.to_string(),
        container_id,
        ip,
        endpoint_id,
    })
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
/// file, e.g. after a crash): agents, etcd, namespaces, pins, run directory.
pub fn down(name: &str) -> Result<Vec<String>, String> {
    layout::validate_name(name)?;
    let mut removed = Vec::new();
    for pid in lab_processes(name) {
        kill_and_wait(pid);
        removed.push(format!("process {pid}"));
    }
    let mut nss = netns::list(&layout::prefix(name));
    nss.sort_by_key(|n| !n.contains("-pod")); // pods first
    for ns in nss {
        netns::delete(&ns).map_err(|e| e.to_string())?;
        removed.push(format!("netns {ns}"));
    }
    if let Some(cg) = layout::cgroup_dir(name).filter(|d| d.exists()) {
        remove_cgroups(&cg);
        removed.push(cg.display().to_string());
    }
    for dir in [layout::bpffs(name), layout::dir(name)] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
            removed.push(dir.display().to_string());
        }
    }
    Ok(removed)
}

/// Removes the lab's cgroups, moving any process still in one (a `weft
/// lab exec` command) to the cgroup2 root first.
fn remove_cgroups(dir: &Path) {
    let root = weft_net::cgroup::cgroup2_root();
    let nodes: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    for cg in nodes.iter().chain(std::iter::once(&dir.to_path_buf())) {
        if let (Some(root), Ok(procs)) = (&root, std::fs::read_to_string(cg.join("cgroup.procs"))) {
            for pid in procs.lines() {
                let _ = std::fs::write(root.join("cgroup.procs"), pid);
            }
        }
        if let Err(e) = std::fs::remove_dir(cg) {
            eprintln!("weft lab: removing cgroup {}: {e}", cg.display());
        }
    }
}

/// Processes of the lab: agents and etcd, whose command lines name the
/// lab's bpffs or run directory.
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
