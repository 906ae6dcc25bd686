//! The local API between a node's agent and its clients (the CNI plugin and
//! the `weft` CLI): one JSON request per line on a unix socket, answered by
//! one JSON response line, or by a stream of lines for `monitor`.
//!
//! Kept free of heavy dependencies so the CNI binary stays small.

pub mod validate;

use serde::{Deserialize, Serialize};
use std::{
    fmt,
    io::{BufRead, BufReader, Write},
    net::Ipv4Addr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

/// Where an agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/weft/agent.sock";

/// Error codes the agent returns. Values below 100 are the CNI spec's
/// well-known codes and pass through the plugin unchanged.
pub mod code {
    pub const INVALID_ENV: u32 = 4;
    pub const INVALID_CONFIG: u32 = 7;
    /// The CNI spec's "try again later" (the store is unreachable, or an
    /// earlier DEL of the attachment still owes it).
    pub const TRY_AGAIN: u32 = 11;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INTERNAL: u32 = 100;
    pub const IPAM_EXHAUSTED: u32 = 101;
    pub const NETNS_NOT_FOUND: u32 = 102;
    pub const DATAPATH: u32 = 103;
    pub const CONFLICT: u32 = 104;
    pub const BAD_REQUEST: u32 = 105;
    pub const NOT_READY: u32 = 106;
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Add(AddRequest),
    Del(DelRequest),
    Check(CheckRequest),
    /// CNI STATUS: can the node serve ADD?
    Status,
    Gc(GcRequest),
    EndpointList,
    BpfEndpointList,
    IdentityList,
    NodeList,
    BpfIpcacheList,
    /// Every conntrack entry (`weft bpf ct list`).
    BpfCtList,
    /// Removes every conntrack entry (`weft bpf ct flush`).
    BpfCtFlush,
    /// Every translated flow of the SNAT table (`weft bpf nat list`).
    BpfNatList,
    /// Stores policies (and Calico tiers), all or none (`weft policy apply`).
    PolicyApply(PolicyApply),
    PolicyList,
    PolicyGet(PolicyName),
    PolicyDelete(PolicyName),
    /// Which identities each selector of the stored policies matches.
    PolicySelectors,
    /// Sets or removes namespace labels (`weft namespace label`).
    NamespaceLabel(NamespaceLabel),
    NamespaceList,
    /// One endpoint's policy map entries, readable (`weft bpf policy get`).
    BpfPolicyGet(BpfPolicyGet),
    /// The service maps: frontends and their backends (`weft bpf lb list`).
    BpfLbList,
    /// Stores Services and EndpointSlices (`weft service apply`).
    ServiceApply(PolicyApply),
    ServiceList,
    ServiceDelete(ServiceName),
    AgentStatus,
    /// Changes the labels of a pod (they decide its identity); running
    /// endpoints of the pod take the new identity on every node.
    PodLabels(PodLabels),
    /// Sets a pod's named container ports (policies may name them).
    PodPorts(PodPorts),
    /// Streams `weft_datapath::events::MonitorEvent` JSON lines until the
    /// client goes away.
    Monitor(MonitorRequest),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AddRequest {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub network: String,
    #[serde(default)]
    pub pod_namespace: Option<String>,
    #[serde(default)]
    pub pod_name: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AddResult {
    pub endpoint_id: u16,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub host_ifname: String,
    pub host_mac: String,
    pub ifname: String,
    pub pod_mac: String,
    pub netns: String,
    pub mtu: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DelRequest {
    pub container_id: String,
    pub ifname: String,
    #[serde(default)]
    pub netns: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CheckRequest {
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    /// The address the runtime's cached result says the container has.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GcRequest {
    pub network: String,
    pub valid: Vec<Attachment>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GcResult {
    pub released: Vec<Attachment>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PodLabels {
    pub namespace: String,
    pub name: String,
    /// Set (added or overwritten), like `kubectl label`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Removed (`key-` on the command line).
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A pod's named container ports, as its spec lists them; a policy port
/// given by name resolves to these on the destination pod.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PodPorts {
    pub namespace: String,
    pub name: String,
    pub ports: Vec<ContainerPort>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerPort {
    pub name: String,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    pub port: u16,
}

/// How views name an IP protocol: "TCP", "UDP", "ICMP", "SCTP", or its
/// number.
pub fn proto_name(p: u8) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        1 => "ICMP".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

impl ContainerPort {
    /// The protocol's number, or None for an unknown protocol.
    pub fn proto_number(&self) -> Option<u8> {
        match self.protocol.as_str() {
            "TCP" => Some(6),
            "UDP" => Some(17),
            "SCTP" => Some(132),
            _ => None,
        }
    }
}

/// The pod's labels after the change, and how many of its endpoints on
/// the answering node took a new identity.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PodLabelsResult {
    pub labels: std::collections::BTreeMap<String, String>,
    pub relabelled: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MonitorRequest {
    /// Also stream debug and capture events (monitor -v).
    #[serde(default)]
    pub debug: bool,
}

/// One endpoint, as `weft endpoint list` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EndpointView {
    pub id: u16,
    pub identity: u32,
    pub labels: Vec<String>,
    pub ipv4: Ipv4Addr,
    pub mac: String,
    pub ifname: String,
    pub container_id: String,
    pub netns: String,
    pub state: String,
    /// Policy enforcement: "Enabled", "Disabled", or the reason the
    /// endpoint keeps its last good policy.
    #[serde(default)]
    pub policy_ingress: String,
    #[serde(default)]
    pub policy_egress: String,
}

/// Documents to store: Kubernetes NetworkPolicy, Calico NetworkPolicy,
/// GlobalNetworkPolicy and Tier objects, as JSON (the CLI reads YAML).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyApply {
    pub documents: Vec<serde_json::Value>,
}

/// What `weft policy apply` did, one line per document.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyApplyResult {
    pub results: Vec<String>,
}

/// A policy by name; `kind` (k8s, calico, global, tier) may be left out
/// when the name is unambiguous in the namespace.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PolicyName {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyView {
    /// k8s, calico, global or tier.
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub tier: String,
    pub order: Option<f64>,
    /// Ingress, Egress.
    pub types: Vec<String>,
    /// Local endpoints it applies to.
    pub endpoints: usize,
    /// Why it cannot be enforced (then the endpoints it applies to keep
    /// their last good policy).
    pub refused: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SelectorView {
    /// "<policy>: <where>" the selector is written.
    pub used_by: String,
    pub selector: String,
    pub identities: Vec<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NamespaceLabel {
    pub name: String,
    /// `k=v` sets, `k-` removes.
    pub labels: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NamespaceView {
    pub name: String,
    /// The id the datapath knows the namespace by on this node.
    pub id: u16,
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BpfPolicyGet {
    pub endpoint: u16,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceApplyResult {
    pub results: Vec<String>,
}

/// A Service (or, with kind "endpointslice", a slice) by name.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceName {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    /// ClusterIP or NodePort.
    pub kind: String,
    pub cluster_ip: String,
    /// "10.96.1.1:80/Tcp -> 10.244.1.3:8080,10.244.2.4:8080".
    pub frontends: Vec<String>,
}

/// One service frontend as the datapath holds it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LbView {
    /// "10.96.0.10:80/TCP".
    pub frontend: String,
    pub rev_nat_id: u16,
    /// nodeport, affinity, local, snat.
    pub flags: Vec<String>,
    /// "10.244.1.3:8080 (id 4)".
    pub backends: Vec<String>,
}

/// One policy map entry of an endpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyEntryView {
    pub direction: String,
    /// "identity 257", "namespace prod (3)", "any".
    pub peer: String,
    /// The CIDR the peer address must be in (its longest policy CIDR).
    pub cidr: Option<String>,
    /// "TCP", "UDP", "ANY", ...
    pub proto: String,
    /// "80", "8000-8191", "ANY".
    pub ports: String,
    pub action: String,
    pub log: bool,
    /// The rule that decided.
    pub rule: String,
}

/// One endpoint's entries and whether each direction enforces.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BpfPolicyView {
    pub endpoint: u16,
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
    pub entries: Vec<PolicyEntryView>,
}

/// One entry of the datapath's endpoint map (`weft bpf endpoint list`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BpfEndpointView {
    pub ip: Ipv4Addr,
    pub id: u16,
    pub identity: u32,
    pub ifindex: u32,
    pub mac: String,
    pub node_mac: String,
    pub host: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IdentityView {
    pub id: u32,
    pub labels: Vec<String>,
    pub reserved: bool,
    pub endpoints: usize,
}

/// A node of the cluster (`weft node list`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: String,
    /// This node (the one answering).
    pub local: bool,
}

/// One entry of the datapath's ipcache (`weft bpf ipcache list`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IpcacheView {
    pub prefix: String,
    pub identity: u32,
    pub tunnel_endpoint: Ipv4Addr,
    pub node: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AgentStatus {
    pub node: String,
    pub node_ip: Ipv4Addr,
    /// "single node" or the cluster's mode.
    pub mode: String,
    pub pod_mtu: u32,
    pub pod_cidr: String,
    pub gateway: Ipv4Addr,
    pub datapath_attached: bool,
    /// How programs hang on node devices and on pod devices: "tcx" or
    /// "legacy" (tc clsact + cls_bpf).
    #[serde(default)]
    pub attach_node: String,
    #[serde(default)]
    pub attach_pods: String,
    pub adopted_pins: bool,
    pub pin_dir: String,
    pub maps: Vec<MapStatus>,
    pub endpoints: usize,
    pub ipam_allocated: usize,
    pub ipam_capacity: usize,
    pub store: String,
    pub monitors: usize,
    /// Pods removed from the node whose removal the store still owes
    /// (their addresses stay reserved until it is done).
    #[serde(default)]
    pub owed_removals: usize,
    /// Pods whose DEL has answered and whose device and address are being
    /// removed in the background (milliseconds each).
    #[serde(default)]
    pub removals_in_progress: usize,
    /// Packets dropped since the maps were created, per reason text.
    #[serde(default)]
    pub drops: Vec<(String, u64)>,
    /// Things an operator should act on (a full conntrack table, ...).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One conntrack entry (`weft bpf ct list`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CtView {
    /// "egress" (seen leaving a local endpoint) or "ingress".
    pub scope: String,
    /// "TCP", "UDP", "ICMP", "SCTP" or the protocol number.
    pub proto: String,
    pub src: String,
    pub dst: String,
    /// "syn-sent" (TCP not answered yet), "established", "closing", or
    /// "active" (not TCP).
    pub state: String,
    /// Seconds until the entry expires without further packets.
    pub expires_in: i64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// The local endpoint, and the identity of the other side.
    pub endpoint: u16,
    pub peer_identity: u32,
    pub flags: Vec<String>,
}

/// One flow of the SNAT table (`weft bpf nat list`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NatView {
    /// "masquerade" (a pod's flow leaving the cluster) or "nodeport" (a
    /// NodePort flow sent on to another node's backend).
    pub kind: String,
    pub proto: String,
    /// The flow as it left the pod (or the client), before translation.
    pub src: String,
    pub dst: String,
    /// The node address and port it leaves as.
    pub translated: String,
    pub state: String,
    pub expires_in: i64,
    /// The service a NodePort flow's replies answer as (0: none).
    pub rev_nat_id: u16,
    /// Whether the reply entry is in place (it always should be).
    pub reply_entry: bool,
}

/// What `weft bpf ct flush` removed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CtFlushResult {
    pub deleted: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MapStatus {
    pub name: String,
    pub entries: usize,
    pub max_entries: u32,
}

/// The error object the agent returns; the plugin turns it into the CNI
/// error object, the CLI prints it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ApiError {
    pub code: u32,
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl ApiError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), details: details.into() }
    }

    /// The request itself is wrong (`code::BAD_REQUEST`).
    pub fn bad_request(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(code::BAD_REQUEST, msg, details)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{} (code {})", self.msg, self.code)
        } else {
            write!(f, "{}: {} (code {})", self.msg, self.details, self.code)
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(serde_json::Value),
    Error(ApiError),
}

/// What can go wrong talking to the agent.
#[derive(Debug)]
pub enum ClientError {
    /// No agent answers on the socket (not running, wrong path).
    Unreachable { socket: PathBuf, cause: String },
    /// The agent answered with an error.
    Api(ApiError),
    /// The agent answered something we cannot read.
    Protocol(String),
    /// The connection ended before the answer (the agent died or was
    /// restarted mid-request): what was asked may be half done, and the
    /// agent finishes or undoes it when it comes back.
    Interrupted(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { socket, cause } => write!(
                f,
                "the weft agent is not reachable at {} ({cause}); start it with `weft agent` or check its socket path",
                socket.display()
            ),
            ClientError::Api(e) => write!(f, "{e}"),
            ClientError::Protocol(m) => write!(f, "unexpected answer from the agent: {m}"),
            ClientError::Interrupted(m) => write!(f, "the agent did not answer: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A synchronous client; one connection per call.
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Self { socket: socket.as_ref().to_path_buf(), timeout: Duration::from_secs(120) }
    }

    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    fn connect(&self, req: &Request) -> Result<UnixStream, ClientError> {
        let unreachable = |e: std::io::Error| ClientError::Unreachable {
            socket: self.socket.clone(),
            cause: e.to_string(),
        };
        let mut s = UnixStream::connect(&self.socket).map_err(unreachable)?;
        s.set_read_timeout(Some(self.timeout)).map_err(unreachable)?;
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        s.write_all(&line).map_err(unreachable)?;
        Ok(s)
    }

    /// Sends one request and waits for its answer.
    pub fn call(&self, req: &Request) -> Result<serde_json::Value, ClientError> {
        let s = self.connect(req)?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| ClientError::Interrupted(format!("reading the answer: {e}")))?;
        if line.is_empty() {
            return Err(ClientError::Interrupted("the agent closed the connection without answering".into()));
        }
        match serde_json::from_str::<Response>(&line) {
            Ok(Response::Ok(v)) => Ok(v),
            Ok(Response::Error(e)) => Err(ClientError::Api(e)),
            Err(e) => Err(ClientError::Protocol(format!("{e}: {line}"))),
        }
    }

    /// Sends one request and decodes the answer into `T`.
    pub fn call_as<T: serde::de::DeserializeOwned>(&self, req: &Request) -> Result<T, ClientError> {
        let v = self.call(req)?;
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Opens a stream (monitor): returns a reader of JSON lines.
    pub fn stream(&self, req: &Request) -> Result<BufReader<UnixStream>, ClientError> {
        let s = self.connect(req)?;
        s.set_read_timeout(None).ok();
        Ok(BufReader::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_op() {
        let r = Request::Del(DelRequest { container_id: "c1".into(), ifname: "eth0".into(), netns: None });
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains("\"op\":\"del\""), "{s}");
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert_eq!(serde_json::to_string(&Request::Status).unwrap(), "{\"op\":\"status\"}");
    }

    #[test]
    fn unreachable_agent_is_reported_with_the_socket() {
        let e = Client::new("/nonexistent/weft.sock").call(&Request::Status).unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }));
        assert!(e.to_string().contains("/nonexistent/weft.sock"));
    }
}
