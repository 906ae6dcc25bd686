//! How fast the cluster follows a change: from the start of a CNI ADD on
//! node1 until the pod's entry is in the ipcache of node2 and node3, and
//! from `weft pod label` on node1 until the new identity is in every
//! node's ipcache. Measured with the agents following the store's watch
//! (weft) and, beside it, with the agents re-listing the store every second
//! (`WEFT_IPCACHE=poll`, the design before the watch) for the ratio.

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};
use weft_api::{Client, IpcacheView, Request};
use weft_lab::cni;

pub struct Figures {
    /// ms from ADD start to the entry on the slowest other node, per pod.
    pub add: Vec<f64>,
    /// ms from `pod label` to the new identity on the slowest node.
    pub relabel: Vec<f64>,
}

fn ipcache(c: &Client) -> Vec<IpcacheView> {
    c.call_as(&Request::BpfIpcacheList).unwrap_or_default()
}

/// Polls the other nodes' ipcache (every ms) until `ok` holds for each;
/// the time of the slowest, from `t0`.
fn wait_all(
    clients: &[Client],
    t0: Instant,
    ok: impl Fn(&[IpcacheView]) -> bool + Sync,
) -> Result<f64, String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .map(|c| {
                let ok = &ok;
                s.spawn(move || {
                    while t0.elapsed() < Duration::from_secs(30) {
                        if ok(&ipcache(c)) {
                            return Some(t0.elapsed());
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    None
                })
            })
            .collect();
        let mut worst = Duration::ZERO;
        for h in handles {
            worst = worst.max(h.join().unwrap().ok_or("an entry did not arrive within 30 s")?);
        }
        Ok(worst.as_secs_f64() * 1e3)
    })
}

/// A 3-node VXLAN lab; `env` goes to the agents.
pub fn measure(tag: &str, pods: usize, relabels: usize, env: &[(&str, &str)]) -> Result<Figures, String> {
    let _ = weft_lab::down(tag);
    let mut opts = weft_lab::Options::new(tag, 3, 0)?;
    opts.mode = Some("vxlan".into());
    opts.agent_env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let lab = weft_lab::up(&opts)?;
    let _guard = Down(tag.to_string());
    let node1 = lab.node("node1").ok_or("no node1")?;
    let others: Vec<Client> =
        ["node2", "node3"].iter().map(|n| Client::new(&lab.node(n).unwrap().socket)).collect();
    let pod_ns = crate::control::Pods::new(&format!("{tag}-"), pods)?;
    let config = weft_lab::cni::plugin_config(&node1.socket, "1.0.0");
    let node_ns = format!("/run/netns/{}", node1.netns);
    let mut add = Vec::new();
    let mut ips = Vec::new();
    for (i, ns) in pod_ns.0.iter().enumerate() {
        let t0 = Instant::now();
        let ip = cni_add(&opts.cni_bin, &node_ns, &config, &format!("{tag}-c{i}"), &format!("pp{i}"), ns)?;
        add.push(wait_all(&others, t0, |l| l.iter().any(|e| e.prefix == format!("{ip}/32")))?);
        ips.push((format!("pp{i}"), ip));
    }
    let c1 = Client::new(&node1.socket);
    let all: Vec<Client> =
        ["node1", "node2", "node3"].iter().map(|n| Client::new(&lab.node(n).unwrap().socket)).collect();
    let mut relabel = Vec::new();
    for (round, (name, ip)) in ips.iter().take(relabels).enumerate() {
        let before =
            ipcache(&all[1]).into_iter().find(|e| e.prefix == format!("{ip}/32")).map(|e| e.identity);
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("round".to_string(), round.to_string());
        let t0 = Instant::now();
        c1.call(&Request::PodLabels(weft_api::PodLabels {
            namespace: "bench".into(),
            name: name.clone(),
            labels,
            remove: vec![],
        }))
        .map_err(|e| e.to_string())?;
        relabel.push(wait_all(&all, t0, |l| {
            l.iter().any(|e| e.prefix == format!("{ip}/32") && Some(e.identity) != before)
        })?);
    }
    for (i, ns) in pod_ns.0.iter().enumerate() {
        let _ = cni_del(&opts.cni_bin, &node_ns, &config, &format!("{tag}-c{i}"), ns);
    }
    Ok(Figures { add, relabel })
}

fn invoke(
    bin: &Path,
    node_ns: &str,
    config: &serde_json::Value,
    command: &'static str,
    container: &str,
    name: &str,
    netns: &str,
) -> Result<String, String> {
    let (bin, config, container, netns) =
        (bin.to_path_buf(), config.clone(), container.to_string(), netns.to_string());
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={name}");
    weft_net::netns::run_in(Path::new(node_ns), move || {
        let out = cni::exec(&cni::Invocation {
            plugin: &bin,
            command,
            container_id: &container,
            netns: &format!("/run/netns/{netns}"),
            ifname: "eth0",
            args: &args,
            config: &config,
        })
        .map_err(|e| weft_net::Error(e.to_string()))?;
        if !out.success {
            return Err(weft_net::Error(format!("{command} {container}: {} {}", out.stdout, out.stderr)));
        }
        Ok(out.stdout)
    })
    .map_err(|e| e.to_string())
}

fn cni_add(
    bin: &Path,
    node_ns: &str,
    config: &serde_json::Value,
    container: &str,
    name: &str,
    netns: &str,
) -> Result<Ipv4Addr, String> {
    let out = invoke(bin, node_ns, config, "ADD", container, name, netns)?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("ADD result: {e}"))?;
    let addr = v["ips"][0]["address"].as_str().ok_or("ADD result without an address")?;
    addr.split('/').next().unwrap_or_default().parse().map_err(|e| format!("ADD address {addr}: {e}"))
}

fn cni_del(
    bin: &Path,
    node_ns: &str,
    config: &serde_json::Value,
    container: &str,
    netns: &str,
) -> Result<(), String> {
    invoke(bin, node_ns, config, "DEL", container, "x", netns).map(|_| ())
}

/// Takes the lab down when dropped (also on an error).
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = weft_lab::down(&self.0);
    }
}
