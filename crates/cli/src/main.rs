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
    /// Nodes of the cluster.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Security identities.
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// The datapath's maps as the kernel holds them.
    #[command(subcommand)]
    Bpf(BpfCmd),
    /// Labels of pods (kept in the store; they decide the identity).
    #[command(subcommand)]
    Pod(PodCmd),
    /// Network policies: Kubernetes NetworkPolicy, Calico NetworkPolicy,
    /// GlobalNetworkPolicy and Tier objects, kept in the cluster store.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Namespaces and their labels (namespaceSelector matches these).
    #[command(subcommand)]
    Namespace(NamespaceCmd),
    /// Services and EndpointSlices (ClusterIP, NodePort), kept in the store.
    #[command(subcommand)]
    Service(ServiceCmd),
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
    /// This node's pod CIDR (the first address is the pods' gateway).
    /// Required without a cluster store; with one, a block of the cluster
    /// pool is claimed unless given.
    #[arg(long)]
    pod_cidr: Option<weft_ipam::Cidr>,
    /// The cluster's pod pool, split into per-node blocks.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_pool: weft_ipam::Cidr,
    /// Prefix length of a node's block of the pool.
    #[arg(long, default_value_t = 24)]
    block_prefix: u8,
    /// Where desired state lives: local (one node) or etcd (a cluster).
    #[arg(long, default_value = "local")]
    store: String,
    /// etcd client URLs (http(s)://HOST:PORT, comma separated).
    #[arg(long, env = "WEFT_ETCD", default_value = "http://127.0.0.1:2379")]
    etcd: String,
    /// The CA (PEM) that signed etcd's certificate; needed for https URLs.
    #[arg(long, env = "WEFT_ETCD_CA")]
    etcd_ca: Option<PathBuf>,
    /// This agent's client certificate (PEM) for an etcd that checks
    /// clients (--client-cert-auth); with --etcd-key.
    #[arg(long, env = "WEFT_ETCD_CERT")]
    etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert (PEM).
    #[arg(long, env = "WEFT_ETCD_KEY")]
    etcd_key: Option<PathBuf>,
    /// Cross-node mode, a cluster setting: vxlan, ipip or native.
    #[arg(long)]
    mode: Option<weft_agent::config::Mode>,
    /// This node's underlay address (default: its first non-weft address).
    #[arg(long)]
    node_ip: Option<std::net::Ipv4Addr>,
    /// Seconds a node may go without renewing its registration.
    #[arg(long, default_value_t = 10)]
    lease_ttl: u64,
    /// The pods' gateway: weft (first address of the pod CIDR, each pod's
    /// own lxc MAC) or link-local (169.254.1.1, ee:ee:ee:ee:ee:ee).
    #[arg(long, default_value = "weft")]
    gateway: weft_agent::config::GatewayStyle,
    /// Directory for the endpoint journal, the IPAM lock and the local store.
    #[arg(long, default_value = "/var/lib/weft")]
    state_dir: PathBuf,
    /// bpffs directory for this node's pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/weft")]
    bpffs: PathBuf,
    /// Pod MTU unless the network config sets one (default: the underlay's
    /// minus the encapsulation overhead).
    #[arg(long)]
    mtu: Option<u32>,
    /// A group (name or number) whose members may use the agent's socket
    /// besides root: the socket is then mode 0660 and owned by that group
    /// (default: root only, mode 0600).
    #[arg(long, value_parser = weft_agent::server::parse_group)]
    api_group: Option<u32>,
    /// How programs hang on devices: auto (tcx where the kernel has it,
    /// Linux >= 6.6, else legacy), tcx, or legacy (clsact qdisc + cls_bpf
    /// direct-action filter, for older kernels).
    #[arg(long, env = "WEFT_TC_MODE", default_value = "auto")]
    tc_mode: weft_agent::config::TcMode,
    /// Entries of the TCP conntrack table (default: 0.25 % of memory,
    /// two thirds of it for TCP). Applies when the maps are created.
    #[arg(long, env = "WEFT_CT_TCP_MAX")]
    ct_tcp_max: Option<u32>,
    /// Entries of the conntrack table for everything but TCP.
    #[arg(long, env = "WEFT_CT_ANY_MAX")]
    ct_any_max: Option<u32>,
    /// Seconds an established TCP flow lives without packets.
    #[arg(long, default_value_t = 21600)]
    ct_lifetime_tcp: u32,
    /// Seconds a TCP flow lives until it is answered.
    #[arg(long, default_value_t = 60)]
    ct_lifetime_syn: u32,
    /// Seconds a TCP flow lives after FIN or RST.
    #[arg(long, default_value_t = 10)]
    ct_lifetime_close: u32,
    /// Seconds a non-TCP flow lives without packets.
    #[arg(long, default_value_t = 60)]
    ct_lifetime_any: u32,
    /// Policy map entries one endpoint may use; an endpoint whose policy
    /// needs more keeps its last good policy (and says so).
    #[arg(long, env = "WEFT_POLICY_MAX_ENTRIES", default_value_t = 16384)]
    policy_max_entries: usize,
    /// The cgroup whose processes get socket load balancing (services
    /// translated at connect): default the cgroup2 root; "none" turns it off.
    #[arg(long, env = "WEFT_CGROUP_ROOT")]
    cgroup_root: Option<PathBuf>,
    /// Pods' traffic to addresses outside the cluster leaves as the node
    /// (SNAT in BPF); --masquerade=false sends it with the pod's address.
    #[arg(long, env = "WEFT_MASQUERADE", default_value_t = true, action = clap::ArgAction::Set)]
    masquerade: bool,
    /// Source ports SNAT gives out (masquerade, NodePorts to other nodes'
    /// backends); must avoid the node port range and the node's
    /// ip_local_port_range.
    #[arg(long, env = "WEFT_SNAT_PORTS", default_value = "1024-29999")]
    snat_ports: weft_agent::nat::PortRange,
    /// Entries of the NAT table, two per translated flow (default 131072).
    /// Applies when the map is created.
    #[arg(long, env = "WEFT_NAT_MAX")]
    nat_max: Option<u32>,
    /// How the per-packet path picks a service backend for a new flow:
    /// random, or maglev (consistent hashing: the same backend on every
    /// node, few flows moved when backends change).
    #[arg(long, env = "WEFT_LB_ALGORITHM", default_value = "random")]
    lb_algorithm: weft_agent::config::LbAlgorithm,
    /// Entries of the service maps: one per frontend plus one per backend
    /// of each (default 262144: 50,000 services of three backends).
    /// Applies when the maps are created.
    #[arg(long, env = "WEFT_LB_MAX")]
    lb_max: Option<u32>,
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

/// `apply -f FILE`: a YAML or JSON file of objects (many documents,
/// arrays, Lists); every one is checked first, and one bad object changes
/// nothing.
#[derive(Args)]
struct ApplyArgs {
    /// The file ("-": standard input).
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    #[command(flatten)]
    output: Output,
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
enum NodeCmd {
    /// List nodes: name, underlay address, pod CIDR.
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
    /// The ipcache: prefix -> identity, tunnel endpoint.
    #[command(subcommand)]
    Ipcache(BpfIpcacheCmd),
    /// Conntrack: every tracked flow, its state, lifetime and counters.
    #[command(subcommand)]
    Ct(BpfCtCmd),
    /// Policy: the entries an endpoint's traffic is decided by.
    #[command(subcommand)]
    Policy(BpfPolicyCmd),
    /// Services: frontends (ClusterIP:port/proto) and their backends.
    #[command(subcommand)]
    Lb(BpfLbCmd),
    /// SNAT: flows leaving as the node (masquerade, NodePorts to other
    /// nodes' backends) and the address and port each got.
    #[command(subcommand)]
    Nat(BpfNatCmd),
}

#[derive(Subcommand)]
enum BpfNatCmd {
    /// List translated flows: original tuple, what it left as, state, seconds left.
    List(Output),
}

#[derive(Subcommand)]
enum BpfLbCmd {
    /// List frontends, their reverse-NAT id, flags and backends.
    List(Output),
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Store the policies and tiers of a YAML or JSON file (many
    /// documents, Lists): every one is checked first; one bad document
    /// changes nothing.
    Apply(ApplyArgs),
    /// List policies and tiers: kind, namespace, tier, order, local endpoints.
    List(Output),
    /// Print one stored policy as JSON.
    Get(PolicyNameArgs),
    /// Remove one policy.
    Delete(PolicyNameArgs),
    /// Every selector of the stored policies and the identities it matches.
    Selectors(Output),
}

#[derive(Args)]
struct PolicyNameArgs {
    name: String,
    /// The policy's namespace (default: default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// k8s, calico, global or tier (needed only when the name is ambiguous).
    #[arg(long)]
    kind: Option<String>,
}

impl PolicyNameArgs {
    fn request(&self) -> weft_api::PolicyName {
        weft_api::PolicyName {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// Store the Services and EndpointSlices of a YAML or JSON file; a
    /// Service gets its ClusterIP (10.96.0.0/16) and NodePorts
    /// (30000-32767) allocated unless it names them. As for policies,
    /// one bad document changes nothing.
    Apply(ApplyArgs),
    /// Services, their ClusterIP and frontends with the backends this node uses.
    List(Output),
    /// Remove a Service (releasing its address and ports) or, with
    /// --kind endpointslice, a slice.
    Delete {
        name: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(long)]
        kind: Option<String>,
    },
}

#[derive(Subcommand)]
enum NamespaceCmd {
    /// Set (k=v) or remove (k-) labels of a namespace.
    Label { namespace: String, labels: Vec<String> },
    /// List namespaces this node knows, their ids and labels.
    List(Output),
}

#[derive(Subcommand)]
enum BpfPolicyCmd {
    /// The policy map entries of one endpoint, readable.
    Get {
        endpoint: u16,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum BpfCtCmd {
    /// List flows: scope, protocol, tuple, state, seconds left, packets/bytes.
    List(Output),
    /// Remove every entry: flows start over as new (and meet policy again).
    Flush(Output),
}

#[derive(Subcommand)]
enum BpfIpcacheCmd {
    List(Output),
}

#[derive(Subcommand)]
enum BpfEndpointCmd {
    List(Output),
}

#[derive(Subcommand)]
enum PodCmd {
    /// Change the labels of a pod (NAMESPACE/NAME k=v k2- ...): k=v sets, k- removes.
    /// Running endpoints of the pod take the new identity on every node.
    Label { pod: String, labels: Vec<String> },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = weft_api::Client::new(&cli.socket);
    let r = match cli.cmd {
        Cmd::Agent(a) => agent(a, &cli.socket),
        Cmd::Status(o) => views::status(&client, o.format),
        Cmd::Endpoint(EndpointCmd::List(o)) => views::endpoints(&client, o.format),
        Cmd::Identity(IdentityCmd::List(o)) => views::identities(&client, o.format),
        Cmd::Node(NodeCmd::List(o)) => views::nodes(&client, o.format),
        Cmd::Bpf(BpfCmd::Ipcache(BpfIpcacheCmd::List(o))) => views::ipcache(&client, o.format),
        Cmd::Bpf(BpfCmd::Endpoint(BpfEndpointCmd::List(o))) => views::bpf_endpoints(&client, o.format),
        Cmd::Bpf(BpfCmd::Ct(BpfCtCmd::List(o))) => views::ct_list(&client, o.format),
        Cmd::Bpf(BpfCmd::Lb(BpfLbCmd::List(o))) => views::lb_list(&client, o.format),
        Cmd::Bpf(BpfCmd::Nat(BpfNatCmd::List(o))) => views::nat_list(&client, o.format),
        Cmd::Bpf(BpfCmd::Policy(BpfPolicyCmd::Get { endpoint, output })) => {
            views::bpf_policy(&client, endpoint, output.format)
        }
        Cmd::Policy(PolicyCmd::Apply(a)) => {
            views::apply(&client, &a.file, a.output.format, weft_api::Request::PolicyApply)
        }
        Cmd::Policy(PolicyCmd::List(o)) => views::policy_list(&client, o.format),
        Cmd::Policy(PolicyCmd::Get(n)) => views::policy_get(&client, n.request()),
        Cmd::Policy(PolicyCmd::Delete(n)) => views::policy_delete(&client, n.request()),
        Cmd::Policy(PolicyCmd::Selectors(o)) => views::policy_selectors(&client, o.format),
        Cmd::Namespace(NamespaceCmd::Label { namespace, labels }) => {
            views::namespace_label(&client, namespace, labels)
        }
        Cmd::Namespace(NamespaceCmd::List(o)) => views::namespace_list(&client, o.format),
        Cmd::Service(ServiceCmd::Apply(a)) => {
            views::apply(&client, &a.file, a.output.format, weft_api::Request::ServiceApply)
        }
        Cmd::Service(ServiceCmd::List(o)) => views::service_list(&client, o.format),
        Cmd::Service(ServiceCmd::Delete { name, namespace, kind }) => {
            views::service_delete(&client, weft_api::ServiceName { kind, namespace, name })
        }
        Cmd::Bpf(BpfCmd::Ct(BpfCtCmd::Flush(o))) => views::ct_flush(&client, o.format),
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

fn agent(a: AgentArgs, socket: &std::path::Path) -> Result<(), String> {
    let store = match a.store.as_str() {
        "local" => weft_agent::config::StoreConfig::Local,
        "etcd" => weft_agent::config::StoreConfig::etcd(&a.etcd, a.etcd_ca, a.etcd_cert, a.etcd_key)?,
        other => return Err(format!("unknown store {other:?}: use local or etcd")),
    };
    let _ = a.lab;
    weft_agent::run(weft_agent::AgentConfig {
        node_name: a.node,
        pod_cidr: a.pod_cidr,
        cluster_pool: a.cluster_pool,
        block_prefix: a.block_prefix,
        socket: socket.to_path_buf(),
        state_dir: a.state_dir,
        bpffs: a.bpffs,
        mtu: a.mtu,
        store,
        mode: a.mode,
        node_ip: a.node_ip,
        lease_ttl: std::time::Duration::from_secs(a.lease_ttl.max(2)),
        gateway_style: a.gateway,
        api_group: a.api_group,
        tc_mode: a.tc_mode,
        conntrack: weft_agent::config::CtConfig {
            tcp_max: a.ct_tcp_max,
            any_max: a.ct_any_max,
            lifetime_tcp: a.ct_lifetime_tcp,
            lifetime_syn: a.ct_lifetime_syn,
            lifetime_close: a.ct_lifetime_close,
            lifetime_any: a.ct_lifetime_any,
        },
        policy_max_entries: a.policy_max_entries,
        cgroup_root: match a.cgroup_root {
            Some(p) if p.as_os_str() == "none" => None,
            Some(p) => Some(p),
            None => weft_net::cgroup::cgroup2_root(),
        },
        nat: weft_agent::nat::NatConfig { masquerade: a.masquerade, ports: a.snat_ports, max: a.nat_max },
        lb_algorithm: a.lb_algorithm,
        lb_max: a.lb_max,
    })
}
