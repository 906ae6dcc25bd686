//! Helpers for the end-to-end tests: a lab that is torn down even when the
//! test panics, commands inside its namespaces, the CNI plugin exec'd as a
//! runtime does, and `weft monitor` in the background.

use serde_json::Value;
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use weft_api::{AgentStatus, Client, EndpointView, Request};
use weft_lab::{Lab, cni};

/// target/<profile>/ — where `cargo build --bins` put weft and weft-cni.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

pub fn weft_bin() -> PathBuf {
    let p = bin_dir().join("weft");
    assert!(p.exists(), "{} missing: run `cargo build --bins` first (`make test` does)", p.display());
    p
}

pub fn cni_bin() -> PathBuf {
    let p = bin_dir().join("weft-cni");
    assert!(p.exists(), "{} missing: run `cargo build --bins` first (`make test` does)", p.display());
    p
}

/// A unique lab name (a-z0-9, <= 12 chars) for one test.
pub fn lab_name(tag: &str) -> String {
    format!("{}{}", &tag[..tag.len().min(6)], std::process::id() % 100000)
}

/// A running lab, removed on drop (also when the test panics).
pub struct TestLab {
    pub lab: Lab,
}

impl TestLab {
    pub fn up(tag: &str, nodes: usize, pods: usize) -> TestLab {
        Self::up_with(tag, nodes, pods, |_| {})
    }

    /// A lab from a lab file's text (nodes, namespaces, pods, servers).
    pub fn from_file(tag: &str, text: &str, tune: impl FnOnce(&mut weft_lab::Options)) -> TestLab {
        let name = lab_name(tag);
        let _ = weft_lab::down(&name);
        let file = weft_lab::file::LabFile::parse(text).unwrap_or_else(|e| panic!("lab file: {e}"));
        let mut opts = weft_lab::Options::from_file(&name, file).unwrap();
        opts.weft_bin = weft_bin();
        opts.cni_bin = cni_bin();
        tune(&mut opts);
        let lab = weft_lab::up(&opts).unwrap_or_else(|e| panic!("lab up: {e}"));
        TestLab { lab }
    }

    /// A lab with options changed by `tune` (mode, store, MTU...).
    pub fn up_with(
        tag: &str,
        nodes: usize,
        pods: usize,
        tune: impl FnOnce(&mut weft_lab::Options),
    ) -> TestLab {
        let name = lab_name(tag);
        let _ = weft_lab::down(&name);
        let mut opts = weft_lab::Options::new(&name, nodes, pods).unwrap();
        opts.weft_bin = weft_bin();
        opts.cni_bin = cni_bin();
        tune(&mut opts);
        let lab = weft_lab::up(&opts).unwrap_or_else(|e| panic!("lab up: {e}"));
        TestLab { lab }
    }

    /// Waits until `f` holds (polling), or panics with `what`.
    pub fn eventually(&self, timeout: Duration, what: &str, f: impl Fn() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node's ipcache as (prefix, identity, tunnel endpoint).
    pub fn ipcache(&self, node: &str) -> Vec<weft_api::IpcacheView> {
        self.client(node).call_as(&Request::BpfIpcacheList).unwrap()
    }

    /// Starts tcpdump in a namespace; `finish` returns what it printed.
    pub fn tcpdump(&self, target: &str, args: &[&str]) -> Tcpdump {
        let child = Command::new(weft_bin())
            .args(["lab", "exec", self.name(), target, "--", "tcpdump", "-lnn"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // tcpdump prints "listening on ..." once its filter is in place.
        std::thread::sleep(Duration::from_millis(800));
        Tcpdump { child }
    }

    pub fn name(&self) -> &str {
        &self.lab.name
    }

    pub fn client(&self, node: &str) -> Client {
        Client::new(&self.lab.node(node).unwrap().socket)
    }

    pub fn pod_ip(&self, pod: &str) -> String {
        self.lab.pod(pod).unwrap().ip.to_string()
    }

    pub fn endpoints(&self, node: &str) -> Vec<EndpointView> {
        self.client(node).call_as(&Request::EndpointList).unwrap()
    }

    pub fn status(&self, node: &str) -> AgentStatus {
        self.client(node).call_as(&Request::AgentStatus).unwrap()
    }

    pub fn endpoint_id(&self, pod: &str) -> u16 {
        let p = self.lab.pod(pod).unwrap();
        self.endpoints(&p.node).into_iter().find(|e| e.container_id == p.container_id).unwrap().id
    }

    /// Runs a command in a pod or node namespace (through `weft lab exec`).
    pub fn exec(&self, target: &str, cmd: &[&str]) -> Output {
        Command::new(weft_bin()).args(["lab", "exec", self.name(), target, "--"]).args(cmd).output().unwrap()
    }

    /// Starts a command in a pod or node namespace (through `weft lab exec`,
    /// so in the node's cgroup) with its stdin and stdout piped to us.
    pub fn spawn(&self, target: &str, cmd: &[&str]) -> Child {
        Command::new(weft_bin())
            .args(["lab", "exec", self.name(), target, "--"])
            .args(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Like exec, but panics with the output unless the command succeeds.
    pub fn ok(&self, target: &str, cmd: &[&str]) -> String {
        let out = self.exec(target, cmd);
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "`{}` in {target} failed:\n{text}", cmd.join(" "));
        text
    }

    /// `weft ARGS` against a node's agent.
    pub fn weft(&self, node: &str, args: &[&str]) -> Output {
        Command::new(weft_bin())
            .env("WEFT_SOCKET", &self.lab.node(node).unwrap().socket)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn netns_path(&self, target: &str) -> String {
        self.lab.netns_of(target).unwrap()
    }

    /// Runs the CNI plugin from the node's namespace, as a runtime does.
    pub fn cni(
        &self,
        node: &str,
        command: &str,
        container_id: &str,
        netns: &str,
        version: &str,
    ) -> cni::Outcome {
        let n = self.lab.node(node).unwrap();
        let config = cni::plugin_config(&n.socket, version);
        self.cni_with(node, command, container_id, netns, &config)
    }

    pub fn cni_with(
        &self,
        node: &str,
        command: &str,
        container_id: &str,
        netns: &str,
        config: &Value,
    ) -> cni::Outcome {
        let n = self.lab.node(node).unwrap();
        let (plugin, command, cid, netns, config) =
            (cni_bin(), command.to_string(), container_id.to_string(), netns.to_string(), config.clone());
        weft_net::netns::run_in(Path::new(&format!("/run/netns/{}", n.netns)), move || {
            cni::exec(&cni::Invocation {
                plugin: &plugin,
                command: &command,
                container_id: &cid,
                netns: &netns,
                ifname: "eth0",
                args: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=extra",
                config: &config,
            })
            .map_err(|e| weft_net::Error(e.to_string()))
        })
        .unwrap()
    }

    /// Starts `weft monitor -j ARGS` against a node's agent.
    pub fn monitor(&self, node: &str, args: &[&str]) -> MonitorCapture {
        let mut child = Command::new(weft_bin())
            .env("WEFT_SOCKET", &self.lab.node(node).unwrap().socket)
            .args(["monitor", "-j"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        // Wait until the agent has switched tracing on for us.
        let start = Instant::now();
        while self.status(node).monitors == 0 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        MonitorCapture { child, lines }
    }
}

impl TestLab {
    /// Kills a node's agent and starts it again with extra environment
    /// (e.g. `WEFT_CRASH_AT`); returns the new pid.
    pub fn restart_agent_env(&mut self, node: &str, env: &[(&str, &str)]) -> u32 {
        let pid = weft_lab::lifecycle::restart_agent_with_env(&self.lab, node, env)
            .unwrap_or_else(|e| panic!("restarting the agent of {node}: {e}"));
        self.lab.nodes.iter_mut().find(|n| n.name == node).unwrap().pid = pid;
        pid
    }

    /// Waits until the node's agent process is gone (it killed itself at a
    /// crash point).
    pub fn wait_agent_dead(&self, node: &str) {
        let pid = self.lab.node(node).unwrap().pid;
        self.eventually(Duration::from_secs(10), "the agent to die", || weft_lab::lifecycle::is_gone(pid));
    }

    /// Every address the node holds has exactly one record, device (with
    /// its program), map entry, journal entry, publication and identity
    /// reference — and there is nothing else. Panics with what differs.
    /// Waits (up to 5 s) until the devices and addresses DELs left to the
    /// agent's background are removed: a DEL answers before that.
    pub fn settled(&self, node: &str) {
        self.eventually(Duration::from_secs(5), "DELs' background removals to finish", || {
            self.status(node).removals_in_progress == 0
        });
    }

    /// Waits for `settled` first.
    pub fn assert_consistent(&self, node: &str) {
        use std::collections::{BTreeMap, BTreeSet};
        let n = self.lab.node(node).unwrap();
        self.settled(node);
        let eps = self.endpoints(node);
        let not_ready: Vec<_> = eps.iter().filter(|e| e.state != "ready").collect();
        assert!(not_ready.is_empty(), "{node}: endpoints not ready: {not_ready:?}");
        let ips: BTreeSet<String> = eps.iter().map(|e| e.ipv4.to_string()).collect();
        assert_eq!(ips.len(), eps.len(), "{node}: one address per endpoint: {eps:?}");
        let devs: BTreeSet<String> = eps.iter().map(|e| e.ifname.clone()).collect();

        // IPAM is rebuilt from the journal; no state file of its own.
        assert!(!n.state_dir.join("ipam.json").exists(), "{node}: a retired IPAM state file");

        let journal: BTreeSet<String> = std::fs::read_dir(n.state_dir.join("endpoints"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".json").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(journal, ips, "{node}: one journal entry per endpoint");

        let links: Value = serde_json::from_str(&self.ok(node, &["ip", "-j", "link", "show"])).unwrap();
        let lxc: BTreeSet<String> = links
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["ifname"].as_str())
            .filter(|n| n.starts_with("lxc"))
            .map(str::to_string)
            .collect();
        assert_eq!(lxc, devs, "{node}: one lxc device per endpoint, none without one");

        // from-container on every pod device and only those, attached the
        // way the agent says it attaches pod devices (and not the other way).
        let pins: BTreeSet<String> =
            std::fs::read_dir(weft_datapath::loader::pin_dir(&n.bpffs).join("links"))
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| {
                            e.file_name().to_string_lossy().strip_suffix("_ingress").map(str::to_string)
                        })
                        .filter(|d| d.starts_with("lxc"))
                        .collect()
                })
                .unwrap_or_default();
        let all_lxc: Vec<String> = lxc.iter().cloned().collect();
        let filters: BTreeSet<String> =
            weft_net::netns::run_in(Path::new(&self.netns_path(node)), move || {
                Ok(all_lxc
                    .into_iter()
                    .filter(|d| {
                        weft_datapath::loader::legacy_filters(d, weft_datapath::Hook::Ingress)
                            .iter()
                            .any(|f| f.name == weft_datapath::loader::PROG_FROM_CONTAINER)
                    })
                    .collect())
            })
            .unwrap();
        let (by, other, other_name) = match self.status(node).attach_pods.as_str() {
            "tcx" => (&pins, &filters, "tc filter"),
            "legacy" => (&filters, &pins, "tcx link"),
            m => panic!("{node}: unknown pod attach mode {m:?}"),
        };
        assert_eq!(*by, devs, "{node}: from-container attached to every pod device, and only those");
        assert!(other.is_empty(), "{node}: pod devices with a stray {other_name}: {other:?}");

        let bpf: Vec<weft_api::BpfEndpointView> =
            self.client(node).call_as(&Request::BpfEndpointList).unwrap();
        let in_map: BTreeMap<String, u16> =
            bpf.iter().filter(|b| !b.host).map(|b| (b.ip.to_string(), b.id)).collect();
        let want: BTreeMap<String, u16> = eps.iter().map(|e| (e.ipv4.to_string(), e.id)).collect();
        assert_eq!(in_map, want, "{node}: weft_endpoints holds exactly the endpoints");
        let st = self.status(node);
        let lxc_entries = st.maps.iter().find(|m| m.name == "weft_lxc").unwrap().entries;
        assert_eq!(lxc_entries, eps.len(), "{node}: one weft_lxc entry per endpoint");
        assert_eq!(st.ipam_allocated, eps.len(), "{node}: IPAM count");

        // The local store: publications and identity references.
        let store = n.state_dir.join("store");
        if self.lab.store == "local" {
            let published: BTreeSet<String> = std::fs::read_dir(store.join("endpoints").join(node))
                .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            assert_eq!(published, ips, "{node}: one store record per endpoint");
            let mut refs = BTreeSet::new();
            if let Ok(ids) = std::fs::read_dir(store.join("identities").join("refs")) {
                for id in ids.flatten() {
                    for ip in std::fs::read_dir(id.path().join(node)).into_iter().flatten().flatten() {
                        refs.insert(format!(
                            "{}/{}",
                            id.file_name().to_string_lossy(),
                            ip.file_name().to_string_lossy()
                        ));
                    }
                }
            }
            let want: BTreeSet<String> = eps.iter().map(|e| format!("{}/{}", e.identity, e.ipv4)).collect();
            assert_eq!(refs, want, "{node}: one identity reference per endpoint");
            let idents: Vec<weft_api::IdentityView> =
                self.client(node).call_as(&Request::IdentityList).unwrap();
            let unused: Vec<_> = idents.iter().filter(|i| !i.reserved && i.endpoints == 0).collect();
            assert!(unused.is_empty(), "{node}: identities nobody uses: {unused:?}");
        }
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if let Err(e) = weft_lab::down(&self.lab.name) {
            eprintln!("lab down {}: {e}", self.lab.name);
        }
    }
}

pub struct Tcpdump {
    child: Child,
}

impl Tcpdump {
    /// Stops tcpdump (if still running) and returns its output lines.
    pub fn finish(mut self, wait: Duration) -> String {
        let start = Instant::now();
        while start.elapsed() < wait {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: SIGINT to our own child so it flushes its output.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let out = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct MonitorCapture {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl MonitorCapture {
    /// Waits until `pred` matches an event (or the timeout passes).
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(v) = self.lines.lock().unwrap().iter().find(|v| pred(v)) {
                return Some(v.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn events(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for MonitorCapture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway network namespace, deleted on drop.
pub struct TempNetns {
    pub name: String,
}

impl TempNetns {
    pub fn new(name: &str) -> Self {
        let _ = weft_net::netns::delete(name);
        weft_net::netns::add(name).unwrap();
        TempNetns { name: name.to_string() }
    }
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        let _ = weft_net::netns::delete(&self.name);
    }
}

/// Runs `f` on a thread inside a namespace while the caller goes on.
pub fn spawn_in_ns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = std::fs::File::open(netns).unwrap();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this dedicated thread only.
        assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        f()
    })
}

/// The foundation checks, shared by the one-node tests (foundation.rs) and
/// the labs that run them under other settings (legacy_tc.rs).
pub mod checks {
    use super::TestLab;
    use std::time::Duration;

    const T: Duration = Duration::from_secs(5);

    /// `count` pings from a pod or node to an address, all answered.
    pub fn ping(lab: &TestLab, from: &str, to: &str, count: u32) {
        let n = count.to_string();
        let out = lab.ok(from, &["ping", "-c", &n, "-i", "0.2", "-W", "2", to]);
        assert!(out.contains(&format!("{count} received")), "{from} -> {to}: {out}");
    }

    /// The node reaches the pod, the pod reaches the node's underlay
    /// address and its gateway.
    pub fn node_and_pod_reach_each_other(lab: &TestLab, node: &str, pod: &str) {
        ping(lab, node, &lab.pod_ip(pod), 2);
        let node_ip = lab.lab.node(node).unwrap().underlay_ip.to_string();
        ping(lab, pod, &node_ip, 2);
        let gw = lab.status(node).gateway.to_string();
        ping(lab, pod, &gw, 2);
    }

    /// A pod sending from an address the node never assigned is dropped
    /// (reason 132, decided in lxc.c), `weft monitor` shows it, and the
    /// pod's real address still works.
    pub fn spoofed_source_dropped(lab: &TestLab, node: &str, pod: &str, victim: &str) {
        let b = lab.pod_ip(victim);
        let mon = lab.monitor(node, &["-t", "drop"]);
        let own: std::net::Ipv4Addr = lab.pod_ip(pod).parse().unwrap();
        let o = own.octets();
        let fake = format!("{}.{}.{}.250", o[0], o[1], o[2]);
        lab.ok(pod, &["ip", "addr", "add", &format!("{fake}/32"), "dev", "eth0"]);
        let out = lab.exec(pod, &["ping", "-c", "2", "-W", "1", "-I", &fake, &b]);
        assert!(!out.status.success(), "a spoofed ping must not be answered");
        let drop = mon
            .wait_for(T, |v| v["type"] == "drop" && v["reason"] == 132)
            .expect("a drop event with reason 132");
        assert_eq!(drop["reasonText"], "Invalid source ip");
        assert_eq!(drop["file"], "lxc.c");
        assert!(drop["summary"].as_str().unwrap().contains(&format!("{fake} -> ")), "{drop}");
        assert_eq!(drop["source"], lab.endpoint_id(pod));
        lab.ok(pod, &["ip", "addr", "del", &format!("{fake}/32"), "dev", "eth0"]);
        ping(lab, pod, &b, 1);
    }
}
