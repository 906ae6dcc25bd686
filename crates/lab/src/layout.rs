//! Names, paths and the persisted description of a lab.

use serde::{Deserialize, Serialize};
use std::{net::Ipv4Addr, path::PathBuf};

pub const RUN_DIR: &str = "/run/weft/lab";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabNode {
    pub name: String,
    pub netns: String,
    pub underlay_ip: Ipv4Addr,
    pub pod_cidr: String,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub cni_dir: PathBuf,
    pub pid: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabPod {
    pub name: String,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub ip: Ipv4Addr,
    pub endpoint_id: u16,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lab {
    pub name: String,
    /// Pod MTU given to the agents (None: each agent's default).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// "local" (one node) or "etcd".
    pub store: String,
    /// Cross-node mode given to the agents.
    #[serde(default)]
    pub mode: Option<String>,
    /// The lab's etcd (in the underlay namespace), when store is etcd.
    #[serde(default)]
    pub etcd_url: Option<String>,
    #[serde(default)]
    pub etcd_pid: Option<u32>,
    /// etcd speaks https and checks client certificates (`--etcd-tls`);
    /// the PKI is under [`pki_dir`].
    #[serde(default)]
    pub etcd_tls: bool,
    /// Seconds a node may go without renewing its registration.
    pub lease_ttl: u64,
    /// The pods' gateway style given to the agents (weft or link-local).
    #[serde(default)]
    pub gateway: Option<String>,
    pub nodes: Vec<LabNode>,
    pub pods: Vec<LabPod>,
}

/// Lab names become part of namespace and device names: keep them short
/// and free of '-' so one lab's prefix never matches another's.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 12
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Err(format!(
            "lab name {name:?} must be 1-12 characters of a-z and 0-9 (it becomes part of namespace names)"
        ));
    }
    Ok(())
}

pub fn prefix(lab: &str) -> String {
    format!("weft-{lab}-")
}

pub fn dir(lab: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(lab)
}

/// The lab's etcd CA, server and client certificates (`--etcd-tls`).
pub fn pki_dir(lab: &str) -> PathBuf {
    dir(lab).join("pki")
}

/// The lab's cgroups (cgroup2): one per node, where `weft lab exec`
/// puts commands, so each node's socket load balancing sees its own pods'
/// sockets only. None without cgroup2.
pub fn cgroup_dir(lab: &str) -> Option<PathBuf> {
    weft_net::cgroup::cgroup2_root().map(|r| r.join(format!("weft-{lab}")))
}

pub fn node_cgroup(lab: &str, node: &str) -> Option<PathBuf> {
    cgroup_dir(lab).map(|d| d.join(node))
}

pub fn bpffs(lab: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/weft-{lab}"))
}

/// The lab's etcd listens here, inside the underlay namespace.
pub const ETCD_IP: &str = "198.18.0.2";

/// A host outside the cluster, in the underlay namespace (`weft lab exec
/// LAB net -- ...` runs there): masquerade's far end.
pub const INTERNET_IP: &str = "203.0.113.1";
pub const INTERNET_NET: &str = "203.0.113.0/24";

pub fn underlay_ns(lab: &str) -> String {
    format!("weft-{lab}-net")
}

pub fn node_name(i: usize) -> String {
    format!("node{i}")
}

pub fn pod_name(node: usize, j: usize) -> String {
    format!("pod{node}-{j}")
}

impl Lab {
    pub fn state_file(&self) -> PathBuf {
        dir(&self.name).join("lab.json")
    }

    pub fn load(name: &str) -> Result<Lab, String> {
        let path = dir(name).join("lab.json");
        let b =
            std::fs::read(&path).map_err(|e| format!("lab {name} is not up ({}: {e})", path.display()))?;
        serde_json::from_slice(&b).map_err(|e| format!("{} is corrupt: {e}", path.display()))
    }

    pub fn save(&self) -> Result<(), String> {
        let path = self.state_file();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap()).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
    }

    /// The PKI when etcd speaks TLS.
    pub fn pki(&self) -> Option<crate::pki::Pki> {
        self.etcd_tls.then(|| crate::pki::Pki::at(&pki_dir(&self.name)))
    }

    pub fn node(&self, name: &str) -> Option<&LabNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn pod(&self, name: &str) -> Option<&LabPod> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// The namespace path of a pod or node, by name.
    pub fn netns_of(&self, name: &str) -> Option<String> {
        self.pod(name)
            .map(|p| p.netns.clone())
            .or_else(|| self.node(name).map(|n| n.netns.clone()))
            .or_else(|| (name == "net").then(|| underlay_ns(&self.name)))
            .map(|ns| format!("/run/netns/{ns}"))
    }
}
