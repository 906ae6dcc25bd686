//! The topologies compared, each a client and a server namespace. All live
//! in namespaces named weft-bench-*, removed when the topology is dropped.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};
use weft_net::{ip, netns};

pub struct Topo {
    pub name: String,
    /// "same node" or "cross node".
    pub kind: &'static str,
    pub client: String,
    pub server: String,
    pub server_ip: Ipv4Addr,
    /// The BPF programs this topology's agents loaded (weft only).
    pub programs: Vec<u32>,
    /// Where an ingress policy on the server goes (see `crate::policy`).
    pub enforce: Option<Enforce>,
    /// Removes what the topology made when it is dropped.
    _cleanup: Cleanup,
}

/// How a topology enforces an ingress policy on its server.
pub enum Enforce {
    /// iptables in the server's node namespace, on traffic routed out of
    /// the server's host-side device.
    Iptables { node: String, dev: String, client_ip: Ipv4Addr },
    /// weft's agent of the server's node, the server's endpoint.
    Weft { socket: PathBuf, endpoint: u16, client_ip: Ipv4Addr },
}

enum Cleanup {
    Namespaces(Vec<String>),
    Lab(String),
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::Namespaces(v) => {
                for ns in v {
                    let _ = netns::delete(ns);
                }
            }
            Cleanup::Lab(l) => {
                let _ = weft_lab::down(l);
            }
        }
    }
}

pub(crate) fn path(ns: &str) -> String {
    format!("/run/netns/{ns}")
}

/// Runs iproute2 commands (and sysctls) inside a namespace.
pub(crate) fn in_ns(ns: &str, cmds: Vec<String>) -> Result<(), String> {
    netns::run_in(Path::new(&path(ns)), move || ip::batch(&cmds)).map_err(|e| format!("{ns}: {e}"))
}

pub(crate) fn sysctl(ns: &str, key: &'static str, v: &'static str) -> Result<(), String> {
    netns::run_in(Path::new(&path(ns)), move || weft_net::sysctl::set(key, v)).map_err(|e| e.to_string())
}

pub(crate) fn fresh(names: &[&str]) -> Result<Vec<String>, String> {
    let mut v = Vec::new();
    for n in names {
        let ns = format!("weft-bench-{n}");
        let _ = netns::delete(&ns);
        netns::add(&ns).map_err(|e| e.to_string())?;
        in_ns(&ns, vec!["link set lo up".into()])?;
        v.push(ns);
    }
    Ok(v)
}

/// limit: two namespaces joined by one veth pair, nothing in between.
pub fn limit_same() -> Result<Topo, String> {
    let ns = fresh(&["lc", "ls"])?;
    in_ns(
        &ns[0],
        vec![
            format!("link add eth0 type veth peer name eth0 netns {}", path(&ns[1])),
            "addr add 10.99.0.1/24 dev eth0".into(),
            "link set eth0 up".into(),
        ],
    )?;
    in_ns(&ns[1], vec!["addr add 10.99.0.2/24 dev eth0".into(), "link set eth0 up".into()])?;
    Ok(Topo {
        name: "limit (veth)".into(),
        kind: "same node",
        client: path(&ns[0]),
        server: path(&ns[1]),
        server_ip: Ipv4Addr::new(10, 99, 0, 2),
        programs: vec![],
        enforce: None,
        _cleanup: Cleanup::Namespaces(ns),
    })
}

/// A pod namespace on a node namespace, Calico style: /32, default via
/// 169.254.1.1 answered by proxy ARP on the host side, a host route per pod.
pub(crate) fn routed_pod(node: &str, pod: &str, host_dev: &str, addr: Ipv4Addr) -> Result<(), String> {
    in_ns(
        node,
        vec![
            format!(
                "link add {host_dev} address ee:ee:ee:ee:ee:ee type veth peer name eth0 netns {}",
                path(pod)
            ),
            format!("link set {host_dev} up"),
            format!("route add {addr}/32 dev {host_dev} scope link"),
        ],
    )?;
    let key: &'static str = Box::leak(format!("net.ipv4.conf.{host_dev}.proxy_arp").into_boxed_str());
    sysctl(node, key, "1")?;
    in_ns(
        pod,
        vec![
            format!("addr add {addr}/32 dev eth0"),
            "link set eth0 up".into(),
            "route add 169.254.1.1 dev eth0 scope link".into(),
            "route add default via 169.254.1.1 dev eth0".into(),
        ],
    )
}

/// The FORWARD rules of a routed node: netfilter connection tracking
/// active, as kube-proxy leaves it.
fn conntrack_rules(node: &str) -> Result<(), String> {
    iptables(
        node,
        &[
            "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A FORWARD -m conntrack --ctstate NEW -j ACCEPT",
        ],
    )
}

/// Adds iptables rules inside a namespace, in order.
fn iptables(ns: &str, rules: &[&'static str]) -> Result<(), String> {
    let rules = rules.to_vec();
    netns::run_in(Path::new(&path(ns)), move || {
        for rule in rules {
            let st = std::process::Command::new("iptables")
                .args(rule.split(' '))
                .status()
                .map_err(|e| weft_net::Error(format!("iptables: {e}")))?;
            if !st.success() {
                return Err(weft_net::Error(format!("iptables {rule} failed")));
            }
        }
        Ok(())
    })
    .map_err(|e| e.to_string())
}

/// routed: what Calico's iptables dataplane does on one node, with netfilter
/// connection tracking active as kube-proxy leaves it.
pub fn routed_same() -> Result<Topo, String> {
    let ns = fresh(&["rn", "rc", "rs"])?;
    sysctl(&ns[0], "net.ipv4.ip_forward", "1")?;
    // Proxy ARP answers only for targets the node routes elsewhere; a Calico
    // node has a default route, this one gets a route for the gateway.
    in_ns(&ns[0], vec!["route add 169.254.1.1/32 dev lo".into()])?;
    routed_pod(&ns[0], &ns[1], "cali1", Ipv4Addr::new(10, 98, 0, 2))?;
    routed_pod(&ns[0], &ns[2], "cali2", Ipv4Addr::new(10, 98, 0, 3))?;
    conntrack_rules(&ns[0])?;
    Ok(Topo {
        name: "routed (Calico-style, conntrack)".into(),
        kind: "same node",
        client: path(&ns[1]),
        server: path(&ns[2]),
        server_ip: Ipv4Addr::new(10, 98, 0, 3),
        programs: vec![],
        enforce: Some(Enforce::Iptables {
            node: ns[0].clone(),
            dev: "cali2".into(),
            client_ip: Ipv4Addr::new(10, 98, 0, 2),
        }),
        _cleanup: Cleanup::Namespaces(ns),
    })
}

/// routed across nodes: Calico without encapsulation (BGP-routed pod
/// blocks): two node namespaces on one link, a route to the other node's
/// pod block, routed pods on each, netfilter conntrack on both.
pub fn routed_cross() -> Result<Topo, String> {
    let ns = fresh(&["rxn1", "rxn2", "rxc", "rxs"])?;
    // Removes the namespaces also when a step below fails.
    let cleanup = Cleanup::Namespaces(ns.clone());
    in_ns(
        &ns[0],
        vec![
            format!("link add eth0 type veth peer name eth0 netns {}", path(&ns[1])),
            "addr add 10.93.0.1/24 dev eth0".into(),
            "link set eth0 up".into(),
        ],
    )?;
    in_ns(&ns[1], vec!["addr add 10.93.0.2/24 dev eth0".into(), "link set eth0 up".into()])?;
    for (n, node) in [(1u8, &ns[0]), (2u8, &ns[1])] {
        let other = 3 - n;
        sysctl(node, "net.ipv4.ip_forward", "1")?;
        in_ns(
            node,
            vec![
                "route add 169.254.1.1/32 dev lo".into(),
                format!("route add 10.92.{other}.0/24 via 10.93.0.{other}"),
            ],
        )?;
        conntrack_rules(node)?;
    }
    routed_pod(&ns[0], &ns[2], "cali1", Ipv4Addr::new(10, 92, 1, 2))?;
    routed_pod(&ns[1], &ns[3], "cali2", Ipv4Addr::new(10, 92, 2, 2))?;
    Ok(Topo {
        name: "routed (Calico-style, conntrack)".into(),
        kind: "cross node",
        client: path(&ns[2]),
        server: path(&ns[3]),
        server_ip: Ipv4Addr::new(10, 92, 2, 2),
        programs: vec![],
        enforce: Some(Enforce::Iptables {
            node: ns[1].clone(),
            dev: "cali2".into(),
            client_ip: Ipv4Addr::new(10, 92, 1, 2),
        }),
        _cleanup: cleanup,
    })
}

/// bridge: the reference `bridge` CNI plugin's shape: pods on a Linux bridge
/// that holds their gateway.
pub fn bridge_same() -> Result<Topo, String> {
    let ns = fresh(&["bn", "bc", "bs"])?;
    in_ns(
        &ns[0],
        vec![
            "link add cni0 type bridge".into(),
            "addr add 10.97.0.1/24 dev cni0".into(),
            "link set cni0 up".into(),
        ],
    )?;
    for (i, pod) in [(2, &ns[1]), (3, &ns[2])] {
        in_ns(
            &ns[0],
            vec![
                format!("link add veth{i} type veth peer name eth0 netns {}", path(pod)),
                format!("link set veth{i} master cni0 up"),
            ],
        )?;
        in_ns(
            pod,
            vec![
                format!("addr add 10.97.0.{i}/24 dev eth0"),
                "link set eth0 up".into(),
                "route add default via 10.97.0.1".into(),
            ],
        )?;
    }
    Ok(Topo {
        name: "bridge (CNI bridge plugin shape)".into(),
        kind: "same node",
        client: path(&ns[1]),
        server: path(&ns[2]),
        server_ip: Ipv4Addr::new(10, 97, 0, 3),
        programs: vec![],
        enforce: None,
        _cleanup: Cleanup::Namespaces(ns),
    })
}

/// limit across nodes: two veth hops with plain routing in between.
pub fn limit_cross() -> Result<Topo, String> {
    let ns = fresh(&["xc", "xr", "xs"])?;
    sysctl(&ns[1], "net.ipv4.ip_forward", "1")?;
    in_ns(
        &ns[1],
        vec![
            format!("link add eth1 type veth peer name eth0 netns {}", path(&ns[0])),
            format!("link add eth2 type veth peer name eth0 netns {}", path(&ns[2])),
            "addr add 10.96.1.1/24 dev eth1".into(),
            "addr add 10.96.2.1/24 dev eth2".into(),
            "link set eth1 up".into(),
            "link set eth2 up".into(),
        ],
    )?;
    for (i, n) in [(1, &ns[0]), (2, &ns[2])] {
        in_ns(
            n,
            vec![
                format!("addr add 10.96.{i}.2/24 dev eth0"),
                "link set eth0 up".into(),
                format!("route add default via 10.96.{i}.1"),
            ],
        )?;
    }
    Ok(Topo {
        name: "limit (2 veth hops, routed)".into(),
        kind: "cross node",
        client: path(&ns[0]),
        server: path(&ns[2]),
        server_ip: Ipv4Addr::new(10, 96, 2, 2),
        programs: vec![],
        enforce: None,
        _cleanup: Cleanup::Namespaces(ns),
    })
}

/// Kernel VXLAN the flannel way: per node a cni0 bridge with the pods, a
/// flannel.1 VXLAN device, and per remote node a route, a neighbour and an
/// FDB entry.
pub fn flannel_cross() -> Result<Topo, String> {
    let ns = fresh(&["fn1", "fn2", "fp1", "fp2"])?;
    in_ns(
        &ns[0],
        vec![
            format!("link add eth0 type veth peer name eth0 netns {}", path(&ns[1])),
            "addr add 10.95.0.1/24 dev eth0".into(),
            "link set eth0 up".into(),
        ],
    )?;
    in_ns(&ns[1], vec!["addr add 10.95.0.2/24 dev eth0".into(), "link set eth0 up".into()])?;
    let mac = |n: usize| format!("02:fa:00:00:00:0{n}");
    for n in 1..=2usize {
        let (node, pod, other) = (&ns[n - 1], &ns[n + 1], 3 - n);
        sysctl(node, "net.ipv4.ip_forward", "1")?;
        in_ns(
            node,
            vec![
                "link add cni0 type bridge".into(),
                format!("addr add 10.94.{n}.1/24 dev cni0"),
                "link set cni0 mtu 1450 up".into(),
                format!("link add veth0 mtu 1450 type veth peer name eth0 netns {}", path(pod)),
                "link set veth0 master cni0 up".into(),
                format!(
                    "link add flannel.1 address {} type vxlan id 1 dstport 8472 local 10.95.0.{n} dev eth0 nolearning",
                    mac(n)
                ),
                format!("addr add 10.94.{n}.0/32 dev flannel.1"),
                "link set flannel.1 mtu 1450 up".into(),
                format!("route add 10.94.{other}.0/24 via 10.94.{other}.0 dev flannel.1 onlink"),
                format!("neigh add 10.94.{other}.0 lladdr {} dev flannel.1 nud permanent", mac(other)),
            ],
        )?;
        let fdb = format!("fdb append {} dev flannel.1 dst 10.95.0.{other}", mac(other));
        netns::run_in(Path::new(&path(node)), move || {
            let st = std::process::Command::new("bridge")
                .args(fdb.split(' '))
                .status()
                .map_err(|e| weft_net::Error(format!("bridge: {e}")))?;
            if st.success() { Ok(()) } else { Err(weft_net::Error(format!("bridge {fdb} failed"))) }
        })
        .map_err(|e| e.to_string())?;
        in_ns(
            pod,
            vec![
                format!("addr add 10.94.{n}.2/24 dev eth0"),
                "link set eth0 mtu 1450 up".into(),
                format!("route add default via 10.94.{n}.1"),
            ],
        )?;
    }
    Ok(Topo {
        name: "kernel VXLAN (flannel-style)".into(),
        kind: "cross node",
        client: path(&ns[2]),
        server: path(&ns[3]),
        server_ip: Ipv4Addr::new(10, 94, 2, 2),
        programs: vec![],
        enforce: None,
        _cleanup: Cleanup::Namespaces(ns),
    })
}

/// weft itself: a lab with the release binaries.
pub fn weft(lab: &str, nodes: usize, mode: Option<&str>) -> Result<Topo, String> {
    let pods = if nodes == 1 { 2 } else { 1 };
    let (client, server) = if nodes == 1 { ("pod1-1", "pod1-2") } else { ("pod1-1", "pod2-1") };
    weft_pods(lab, nodes, pods, mode, client, server)
}

/// weft with two pods per node, the client labelled app=client and the
/// server app=web (the lab labels odd pods web), so a policy selects the
/// server alone.
pub fn weft_policy(lab: &str, nodes: usize, mode: Option<&str>) -> Result<Topo, String> {
    let server = if nodes == 1 { "pod1-1" } else { "pod2-1" };
    weft_pods(lab, nodes, 2, mode, "pod1-2", server)
}

fn weft_pods(
    lab: &str,
    nodes: usize,
    pods: usize,
    mode: Option<&str>,
    client: &str,
    server: &str,
) -> Result<Topo, String> {
    let _ = weft_lab::down(lab);
    let mut opts = weft_lab::Options::new(lab, nodes, pods)?;
    opts.mode = mode.map(str::to_string);
    let before = crate::tools::weft_program_ids();
    let l = weft_lab::up(&opts)?;
    let cleanup = Cleanup::Lab(lab.to_string());
    let programs = crate::tools::weft_program_ids().into_iter().filter(|id| !before.contains(id)).collect();
    // Give the ipcache a moment to learn the remote pod.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (c, s) = (l.pod(client).ok_or("no client pod")?, l.pod(server).ok_or("no server pod")?);
    let socket = l.node(&s.node).ok_or("no server node")?.socket.clone();
    Ok(Topo {
        name: match mode {
            Some(m) => format!("weft {m}"),
            None => "weft".into(),
        },
        kind: if nodes == 1 { "same node" } else { "cross node" },
        client: l.netns_of(client).unwrap(),
        server: l.netns_of(server).unwrap(),
        server_ip: s.ip,
        programs,
        enforce: Some(Enforce::Weft { socket, endpoint: s.endpoint_id, client_ip: c.ip }),
        _cleanup: cleanup,
    })
}

/// How a pod's traffic to a host outside the cluster comes back.
pub enum Egress {
    /// No NAT: the internet host routes the pod pool back to the node (the
    /// limit: what any NAT costs on top).
    Routed,
    /// weft does not masquerade; the node's netfilter does
    /// (`-j MASQUERADE`, as Calico's natOutgoing and most CNIs do).
    Iptables,
    /// weft's SNAT in BPF (bpf/lib/nat.h).
    Weft,
}

/// A pod of a one-node weft lab as the client, the lab's internet host
/// (203.0.113.1, in the lab's underlay namespace) as the server.
pub fn weft_to_internet(lab: &str, egress: Egress) -> Result<Topo, String> {
    let _ = weft_lab::down(lab);
    let mut opts = weft_lab::Options::new(lab, 1, 1)?;
    if !matches!(egress, Egress::Weft) {
        opts.agent_env.push(("WEFT_MASQUERADE".into(), "false".into()));
    }
    let before = crate::tools::weft_program_ids();
    let l = weft_lab::up(&opts)?;
    let cleanup = Cleanup::Lab(lab.to_string());
    let programs = crate::tools::weft_program_ids().into_iter().filter(|id| !before.contains(id)).collect();
    let node = l.node("node1").ok_or("no node1")?;
    // Without weft's SNAT the node's stack forwards the pod's packets.
    sysctl(&node.netns, "net.ipv4.ip_forward", "1")?;
    let name = match egress {
        Egress::Routed => {
            let via = format!("route add 10.244.0.0/16 via {}", node.underlay_ip);
            in_ns(&weft_lab::layout::underlay_ns(lab), vec![via])?;
            "limit (weft, routed back, no NAT)"
        }
        Egress::Iptables => {
            iptables(&node.netns, &["-t nat -A POSTROUTING -s 10.244.0.0/16 -o eth0 -j MASQUERADE"])?;
            "iptables MASQUERADE"
        }
        Egress::Weft => "weft masquerade (BPF)",
    };
    Ok(Topo {
        name: name.into(),
        kind: "pod to the internet host",
        client: l.netns_of("pod1-1").ok_or("no pod1-1")?,
        server: l.netns_of("net").ok_or("no underlay")?,
        server_ip: weft_lab::layout::INTERNET_IP.parse().unwrap(),
        programs,
        enforce: None,
        _cleanup: cleanup,
    })
}
