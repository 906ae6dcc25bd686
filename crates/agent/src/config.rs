//! What an agent needs to know about its node.

use std::path::PathBuf;
use weft_ipam::Cidr;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Name of this node in the cluster.
    pub node_name: String,
    /// The node's pod CIDR; its first address is the pods' gateway.
    pub pod_cidr: Cidr,
    /// Where the local API listens.
    pub socket: PathBuf,
    /// IPAM state and the local store live here.
    pub state_dir: PathBuf,
    /// bpffs directory for this node's pins (maps and links go under v<ABI>/).
    pub bpffs: PathBuf,
    /// Pod MTU unless the network config says otherwise.
    pub mtu: u32,
}

impl AgentConfig {
    pub fn ipam_file(&self) -> PathBuf {
        self.state_dir.join("ipam.json")
    }
    pub fn store_dir(&self) -> PathBuf {
        self.state_dir.join("store")
    }
}
