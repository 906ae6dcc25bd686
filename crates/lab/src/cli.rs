//! `weft lab up|exec|status|down`.

use crate::{Lab, layout, lifecycle};
use clap::Subcommand;
use std::{path::Path, process::ExitCode};
use weft_api::{AgentStatus, Client, Request};

#[derive(Subcommand)]
pub enum LabCmd {
    /// Create a lab: an underlay, N nodes each with an agent, M pods per node.
    Up {
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        #[arg(long = "pods-per-node", default_value_t = 2)]
        pods_per_node: usize,
        /// Pod MTU (default: the underlay's minus the encapsulation).
        #[arg(long)]
        mtu: Option<u32>,
        /// local or etcd (default: etcd when there is more than one node).
        #[arg(long)]
        store: Option<String>,
        /// Cross-node mode: vxlan, ipip or native.
        #[arg(long)]
        mode: Option<String>,
        /// Seconds a node may go without renewing its registration.
        #[arg(long, default_value_t = 5)]
        lease_ttl: u64,
        /// Pods' gateway: weft or link-local (169.254.1.1, ee:ee:ee:ee:ee:ee).
        #[arg(long)]
        gateway: Option<String>,
        /// etcd speaks https and requires client certificates: the lab makes
        /// a CA, etcd's certificate and the agents' (under its run directory).
        #[arg(long)]
        etcd_tls: bool,
        /// A lab file (YAML or JSON): nodes, mode, namespaces with labels,
        /// pods with labels, named ports and servers. Replaces --nodes and
        /// --pods-per-node; its pods are named <namespace>-<name>.
        #[arg(short = 'f', long = "file")]
        file: Option<std::path::PathBuf>,
    },
    /// Echo servers for a lab pod (started by `up -f`): tcp/PORT, udp/PORT.
    #[command(hide = true)]
    Serve {
        /// The lab's run directory (marks the process as the lab's).
        #[arg(long)]
        lab_dir: String,
        serve: Vec<String>,
    },
    /// Run a command inside a pod or node of the lab (WEFT_SOCKET points at
    /// that node's agent, so `weft ...` views work there).
    Exec {
        lab: String,
        /// A pod (pod1-1), a node (node1) or `net` (the underlay).
        target: String,
        #[arg(trailing_var_arg = true, required = true)]
        cmd: Vec<String>,
    },
    /// Kill a node's agent and start it again (the datapath keeps running).
    Restart { lab: String, node: String },
    /// Kill the lab's etcd and start it again on the same data.
    RestartEtcd { lab: String },
    /// Nodes, agents and pods of a lab.
    Status { lab: String },
    /// Remove everything the lab created (also after a crash).
    Down { lab: String },
}

pub fn run(cmd: LabCmd) -> ExitCode {
    let r = match cmd {
        LabCmd::Serve { lab_dir: _, serve } => {
            let serves: Result<Vec<_>, String> = serve.iter().map(|s| crate::file::Serve::parse(s)).collect();
            let r = serves.and_then(|s| {
                // Listening on every port happens in run() before it blocks;
                // "ready" tells the lab the ports are bound.
                crate::serve::run_announcing(&s)
            });
            return match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weft lab serve: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        LabCmd::Up { name, nodes, pods_per_node, mtu, store, mode, lease_ttl, gateway, etcd_tls, file } => {
            let opts = match file {
                Some(path) => std::fs::read_to_string(&path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))
                    .and_then(|t| {
                        crate::file::LabFile::parse(&t).map_err(|e| format!("{}: {e}", path.display()))
                    })
                    .and_then(|f| lifecycle::Options::from_file(&name, f)),
                None => lifecycle::Options::new(&name, nodes, pods_per_node),
            };
            opts.and_then(|mut o| {
                if o.file.is_none() {
                    o.mode = mode;
                    o.store = store;
                } else {
                    o.mode = mode.or(o.mode);
                    o.store = store.or(o.store);
                }
                o.mtu = mtu;
                o.lease_ttl = lease_ttl;
                o.gateway = gateway;
                o.etcd_tls = etcd_tls;
                up(&o)
            })
        }
        LabCmd::Exec { lab, target, cmd } => return exec(&lab, &target, &cmd),
        LabCmd::Status { lab } => status(&lab),
        LabCmd::Restart { lab, node } => Lab::load(&lab)
            .and_then(|l| lifecycle::restart_agent(&l, &node))
            .map(|pid| println!("agent of {node} restarted (pid {pid})")),
        LabCmd::RestartEtcd { lab } => Lab::load(&lab)
            .and_then(|l| lifecycle::restart_etcd(&l))
            .map(|pid| println!("etcd of {lab} restarted (pid {pid})")),
        LabCmd::Down { lab } => lifecycle::down(&lab).map(|removed| {
            println!("lab {lab} is down ({} objects removed)", removed.len());
        }),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft lab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn up(opts: &lifecycle::Options) -> Result<(), String> {
    let lab = lifecycle::up(opts)?;
    println!(
        "lab {} is up: {} node(s), {} pod(s), store {}{}",
        lab.name,
        lab.nodes.len(),
        lab.pods.len(),
        lab.store,
        lab.etcd_url.as_deref().map(|u| format!(" ({u})")).unwrap_or_default()
    );
    print_lab(&lab);
    Ok(())
}

fn print_lab(lab: &Lab) {
    for n in &lab.nodes {
        let st = Client::new(&n.socket)
            .with_timeout(std::time::Duration::from_secs(3))
            .call_as::<AgentStatus>(&Request::AgentStatus);
        let agent = match st {
            Ok(s) => format!("agent pid {} ready, {} endpoint(s)", n.pid, s.endpoints),
            Err(e) => format!("agent DOWN ({e})"),
        };
        println!("  {:<8} {:<15} pods {:<15} {agent}", n.name, n.underlay_ip, n.pod_cidr);
        for p in lab.pods.iter().filter(|p| p.node == n.name) {
            println!("    {:<10} {:<15} endpoint {}", p.name, p.ip, p.endpoint_id);
        }
    }
}

fn status(name: &str) -> Result<(), String> {
    let lab = Lab::load(name)?;
    println!("lab {}", lab.name);
    print_lab(&lab);
    Ok(())
}

fn exec(lab: &str, target: &str, cmd: &[String]) -> ExitCode {
    let state = Lab::load(lab).ok();
    let ns = state
        .as_ref()
        .and_then(|l| l.netns_of(target))
        .unwrap_or_else(|| format!("/run/netns/{}{target}", layout::prefix(lab)));
    let socket = state.as_ref().and_then(|l| {
        let node = l.pod(target).map(|p| p.node.clone()).unwrap_or_else(|| target.to_string());
        l.node(&node).map(|n| n.socket.clone())
    });
    // Into the node's cgroup: that node's socket load balancing applies.
    let node =
        state.as_ref().map(|l| l.pod(target).map(|p| p.node.clone()).unwrap_or_else(|| target.to_string()));
    if let Some(cg) = node.and_then(|n| layout::node_cgroup(lab, &n)).filter(|c| c.exists()) {
        let _ = weft_net::cgroup::join(&cg);
    }
    let mut command = std::process::Command::new(&cmd[0]);
    command.args(&cmd[1..]);
    if let Some(s) = socket {
        command.env("WEFT_SOCKET", s);
    }
    // Become the command (signals reach it, its exit code is ours).
    if let Err(e) = weft_net::netns::enter_for_exec(Path::new(&ns)) {
        eprintln!("weft lab exec: {e}");
        return ExitCode::FAILURE;
    }
    let e = std::os::unix::process::CommandExt::exec(&mut command);
    eprintln!("weft lab exec: cannot run {:?}: {e}", cmd[0]);
    ExitCode::FAILURE
}
