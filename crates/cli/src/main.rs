//! `weft`: the agent (`weft agent`), the operator's views of a node
//! (`status`, `endpoint list`, `identity list`, `bpf endpoint list`,
//! `monitor`) and the lab cluster (`weft lab ...`).

mod monitor;
mod pcap;
mod table;
mod views;

use clap::{Args, Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(name = "weft", version, about = "weft: an eBPF pod network")]
struct Cli {
    /// The node agent's socket.
    #[arg(long, global = true, env = "WEFT_SOCKET", default_value = weft_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the node agent (one per node).
    Agent(AgentArgs),
    /// Show the agent, datapath, maps and store of this node.
    Status(Output),
    /// Endpoints (pods) on this node.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Security identities.
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// The datapath's maps as the kernel holds them.
    #[command(subcommand)]
    Bpf(BpfCmd),
    /// Labels of pods (kept in the store; they decide the identity).
    #[command(subcommand)]
    Pod(PodCmd),
    /// Stream datapath events (trace, drop, debug, capture).
    Monitor(monitor::MonitorArgs),
    /// A whole cluster on this machine, in network namespaces.
    #[command(subcommand)]
    Lab(weft_lab::cli::LabCmd),
}

#[derive(Args)]
struct AgentArgs {
    /// This node's name.
    #[arg(long, default_value = "node1")]
    node: String,
    /// This node's pod CIDR; the first address is the pods' gateway.
    #[arg(long, default_value = "10.244.1.0/24")]
    pod_cidr: weft_ipam::Cidr,
    /// Directory for IPAM state and the local store.
    #[arg(long, default_value = "/var/lib/weft")]
    state_dir: PathBuf,
    /// bpffs directory for this node's pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/weft")]
    bpffs: PathBuf,
    /// Pod MTU unless the network config sets one.
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// Lab this agent belongs to (only used to find it again).
    #[arg(long)]
    lab: Option<String>,
}

#[derive(Args, Clone, Copy)]
pub struct Output {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
enum EndpointCmd {
    /// List endpoints: id, identity, labels, IPv4, MAC, device, state.
    List(Output),
}

#[derive(Subcommand)]
enum IdentityCmd {
    /// List identities and their labels.
    List(Output),
}

#[derive(Subcommand)]
enum BpfCmd {
    /// The endpoint map: IP -> endpoint id, ifindex, pod MAC, node MAC.
    #[command(subcommand)]
    Endpoint(BpfEndpointCmd),
}

#[derive(Subcommand)]
enum BpfEndpointCmd {
    List(Output),
}

#[derive(Subcommand)]
enum PodCmd {
    /// Set the labels of a pod (NAMESPACE/NAME k=v ...); takes effect at its next ADD.
    Label { pod: String, labels: Vec<String> },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = weft_api::Client::new(&cli.socket);
    let r = match cli.cmd {
        Cmd::Agent(a) => weft_agent::run(weft_agent::AgentConfig {
            node_name: a.node,
            pod_cidr: a.pod_cidr,
            socket: cli.socket.clone(),
            state_dir: a.state_dir,
            bpffs: a.bpffs,
            mtu: a.mtu,
        }),
        Cmd::Status(o) => views::status(&client, o.format),
        Cmd::Endpoint(EndpointCmd::List(o)) => views::endpoints(&client, o.format),
        Cmd::Identity(IdentityCmd::List(o)) => views::identities(&client, o.format),
        Cmd::Bpf(BpfCmd::Endpoint(BpfEndpointCmd::List(o))) => views::bpf_endpoints(&client, o.format),
        Cmd::Pod(PodCmd::Label { pod, labels }) => views::label_pod(&client, &pod, &labels),
        Cmd::Monitor(m) => monitor::run(&client, m),
        Cmd::Lab(l) => return weft_lab::cli::run(l),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {e}");
            ExitCode::FAILURE
        }
    }
}
