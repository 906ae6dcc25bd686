//! What an agent needs to know about its node and its cluster.

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};
pub use weft_datapath::TcMode;
use weft_ipam::Cidr;

/// Where desired state lives.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreConfig {
    /// Embedded, file based, one node (the default without a cluster).
    Local,
    /// A real etcd (v3), shared by every node of the cluster; `tls` when
    /// it speaks https (`--etcd-ca/--etcd-cert/--etcd-key`).
    Etcd { urls: String, tls: Option<weft_store::TlsFiles> },
}

impl StoreConfig {
    /// The etcd store from the agent's flags, refusing combinations that
    /// cannot work (a certificate without its key, TLS files with http).
    pub fn etcd(
        urls: &str,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<StoreConfig, String> {
        let https = urls.split(',').any(|u| u.trim().starts_with("https://"));
        let tls = match (ca, cert, key) {
            (None, None, None) => None,
            (Some(ca), cert, key) => {
                if cert.is_some() != key.is_some() {
                    return Err("--etcd-cert and --etcd-key go together: give both or neither".into());
                }
                Some(weft_store::TlsFiles { ca, cert, key })
            }
            (None, _, _) => {
                return Err(
                    "--etcd-cert/--etcd-key need --etcd-ca (the CA that signed etcd's certificate)".into()
                );
            }
        };
        match (&tls, https) {
            (Some(_), false) => Err(format!("--etcd-ca is given but the etcd URLs are not https: {urls}")),
            (None, true) => {
                Err(format!("etcd at {urls} speaks https: give --etcd-ca (and --etcd-cert/--etcd-key)"))
            }
            _ => Ok(StoreConfig::Etcd { urls: urls.to_string(), tls }),
        }
    }
}

/// How pod traffic crosses nodes (a cluster setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Vxlan,
    Ipip,
    Native,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Vxlan => "vxlan",
            Mode::Ipip => "ipip",
            Mode::Native => "native",
        }
    }

    /// The number the datapath knows it by (MODE_* in bpf/lib/maps.h).
    pub fn datapath(self) -> u32 {
        match self {
            Mode::Vxlan => weft_datapath::maps::MODE_VXLAN,
            Mode::Ipip => weft_datapath::maps::MODE_IPIP,
            Mode::Native => weft_datapath::maps::MODE_NATIVE,
        }
    }

    /// Bytes of encapsulation the pod MTU leaves room for.
    pub fn overhead(self) -> u32 {
        match self {
            Mode::Vxlan => 50,
            Mode::Ipip => 20,
            Mode::Native => 0,
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "vxlan" => Ok(Mode::Vxlan),
            "ipip" => Ok(Mode::Ipip),
            "native" => Ok(Mode::Native),
            _ => Err(format!("unknown mode {s:?}: use vxlan, ipip or native")),
        }
    }
}

/// What pods see as their gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayStyle {
    /// The first address of the node's pod CIDR, answered with each pod's
    /// own lxc MAC (Cilium).
    Weft,
    /// 169.254.1.1 with MAC ee:ee:ee:ee:ee:ee on every pod (Calico).
    LinkLocal,
}

pub const LINK_LOCAL_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const LINK_LOCAL_MAC: [u8; 6] = [0xee; 6];

impl std::str::FromStr for GatewayStyle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "weft" => Ok(GatewayStyle::Weft),
            "link-local" => Ok(GatewayStyle::LinkLocal),
            _ => Err(format!("unknown gateway style {s:?}: use weft or link-local")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Name of this node in the cluster.
    pub node_name: String,
    /// The node's pod CIDR; without one, a block is claimed from the pool.
    pub pod_cidr: Option<Cidr>,
    /// The cluster's pod pool, split into per-node blocks.
    pub cluster_pool: Cidr,
    /// Prefix length of a node's block.
    pub block_prefix: u8,
    /// Where the local API listens.
    pub socket: PathBuf,
    /// The endpoint journal, the IPAM lock and the local store live here.
    pub state_dir: PathBuf,
    /// bpffs directory for this node's pins (maps and links go under v<ABI>/).
    pub bpffs: PathBuf,
    /// Pod MTU; default: the underlay's minus the mode's overhead.
    pub mtu: Option<u32>,
    pub store: StoreConfig,
    /// Cross-node mode; the first node writes it into the cluster config.
    pub mode: Option<Mode>,
    /// This node's underlay address; default: the first non-weft address.
    pub node_ip: Option<Ipv4Addr>,
    /// A node that has not renewed its registration for this long is gone.
    pub lease_ttl: Duration,
    pub gateway_style: GatewayStyle,
    /// Besides root, members of this group (gid) may use the local API: the
    /// socket is then mode 0660 and owned by it (without one: 0600).
    pub api_group: Option<u32>,
    /// How programs hang on devices (`--tc-mode`, env `WEFT_TC_MODE`):
    /// auto (tcx where the kernel has it, Linux >= 6.6; legacy clsact +
    /// cls_bpf otherwise), or forced tcx / legacy.
    pub tc_mode: TcMode,
    pub conntrack: CtConfig,
    /// Policy map entries one endpoint may use; beyond, it keeps its last
    /// good policy (`--policy-max-entries`).
    pub policy_max_entries: usize,
    /// The cgroup socket load balancing attaches to (None: no socket LB).
    pub cgroup_root: Option<PathBuf>,
    /// Masquerade, SNAT ports and table size (crates/agent/src/nat.rs).
    pub nat: crate::nat::NatConfig,
    /// How the per-packet path picks a service's backend for a new flow.
    pub lb_algorithm: LbAlgorithm,
    /// Entries of the service maps when they are created (`--lb-max`).
    pub lb_max: Option<u32>,
}

/// `--lb-algorithm`: random (the default), or Maglev consistent hashing,
/// so every node picks the same backend for a flow and a backend change
/// moves little more than its own flows (socket LB stays random: at
/// connect() the flow's source port is not known yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LbAlgorithm {
    #[default]
    Random,
    Maglev,
}

impl std::str::FromStr for LbAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(LbAlgorithm::Random),
            "maglev" => Ok(LbAlgorithm::Maglev),
            _ => Err(format!("unknown load-balancing algorithm {s:?}: use random or maglev")),
        }
    }
}

/// Conntrack sizes and lifetimes (`--ct-*`). Sizes apply when the maps
/// are created (a restart adopts the pinned maps as they are).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CtConfig {
    /// Entries of the TCP table; default: from the machine's memory.
    pub tcp_max: Option<u32>,
    /// Entries of the table for everything else; default: from memory.
    pub any_max: Option<u32>,
    /// Lifetimes in seconds; 0 keeps the datapath's default (Cilium's:
    /// established TCP 21600, SYN 60, closing 10, non-TCP 60).
    pub lifetime_tcp: u32,
    pub lifetime_syn: u32,
    pub lifetime_close: u32,
    pub lifetime_any: u32,
}

impl AgentConfig {
    /// Where IPAM's lock lives (and where agents before the journal kept
    /// its state, adopted once).
    pub fn ipam_file(&self) -> PathBuf {
        self.state_dir.join("ipam.json")
    }
    pub fn store_dir(&self) -> PathBuf {
        self.state_dir.join("store")
    }
}

#[cfg(test)]
mod tests {
    use super::StoreConfig;

    #[test]
    fn etcd_flags_that_cannot_work_are_refused() {
        let p = |s: &str| Some(std::path::PathBuf::from(s));
        assert_eq!(
            StoreConfig::etcd("http://e:2379", None, None, None).unwrap(),
            StoreConfig::Etcd { urls: "http://e:2379".into(), tls: None }
        );
        let ok = StoreConfig::etcd("https://e:2379", p("ca"), p("c"), p("k")).unwrap();
        let StoreConfig::Etcd { tls: Some(t), .. } = ok else { panic!("{ok:?}") };
        assert_eq!((t.ca, t.cert, t.key), ("ca".into(), p("c"), p("k")));
        let e = StoreConfig::etcd("https://e:2379", p("ca"), p("c"), None).unwrap_err();
        assert!(e.contains("give both"), "{e}");
        let e = StoreConfig::etcd("https://e:2379", None, p("c"), p("k")).unwrap_err();
        assert!(e.contains("need --etcd-ca"), "{e}");
        let e = StoreConfig::etcd("http://e:2379", p("ca"), None, None).unwrap_err();
        assert!(e.contains("not https"), "{e}");
        let e = StoreConfig::etcd("https://e:2379", None, None, None).unwrap_err();
        assert!(e.contains("give --etcd-ca"), "{e}");
    }
}
