//! End to end: SNAT on a 2-node lab. Pods reach a host outside the
//! cluster (the lab's 203.0.113.1, which knows no route to pods) as their
//! node — TCP, UDP and ping — and a deliberately small port range runs out
//! with a counted drop and a warning, not a silent stall. A client outside
//! the cluster reaches a NodePort whose backend is on the other node: the
//! backend sees the receiving node, the client the node port; in VXLAN,
//! IP-in-IP and native routing.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, UdpSocket},
    time::Duration,
};
use weft_e2e::{TestLab, spawn_in_ns};

const INTERNET: &str = weft_lab::layout::INTERNET_IP;

/// What `target` (a pod, a node, or "net") read from `addr:port` over TCP.
fn fetch(lab: &TestLab, target: &str, addr: &str, port: u16) -> String {
    let script = format!("exec 3<>/dev/tcp/{addr}/{port} && timeout 2 head -n 1 <&3");
    let out = lab.exec(target, &["bash", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// A TCP server on `ip:port` in `target`'s namespace handing each
/// connection to `serve` on a thread of its own; returns once it listens.
fn serve_tcp(lab: &TestLab, target: &str, ip: Ipv4Addr, port: u16, serve: fn(std::net::TcpStream)) {
    let (ready, listening) = std::sync::mpsc::channel();
    spawn_in_ns(&lab.netns_path(target), move || {
        let l = TcpListener::bind((ip, port)).unwrap();
        ready.send(()).unwrap();
        for c in l.incoming().flatten() {
            std::thread::spawn(move || serve(c));
        }
    });
    listening.recv_timeout(Duration::from_secs(5)).unwrap();
}

/// A TCP server writing each client the address it came from, then
/// holding the connection until the client closes it.
fn serve_peer(lab: &TestLab, target: &str, ip: Ipv4Addr, port: u16) {
    serve_tcp(lab, target, ip, port, |mut c| {
        let peer = c.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let _ = c.write_all(format!("{peer}\n").as_bytes());
        let _ = c.read(&mut [0u8; 16]);
    });
}

/// A UDP server on the internet host answering each datagram with its
/// sender's address.
fn serve_udp_peer(lab: &TestLab, port: u16) {
    let (ready, listening) = std::sync::mpsc::channel();
    spawn_in_ns(&lab.netns_path("net"), move || {
        let s = UdpSocket::bind((INTERNET, port)).unwrap();
        ready.send(()).unwrap();
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("{from}\n").as_bytes(), from);
        }
    });
    listening.recv_timeout(Duration::from_secs(5)).unwrap();
}

fn apply_yaml(lab: &TestLab, node: &str, yaml: &str) -> String {
    let path = std::env::temp_dir().join(format!("weft-nat-{}-{}.yaml", lab.name(), std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    let out = lab.weft(node, &["service", "apply", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A NodePort service (externalTrafficPolicy Cluster) whose one backend is
/// `backend` on `node`.
fn nodeport(lab: &TestLab, backend: &str, node: &str) {
    nodeport_to(lab, backend, node, 8080)
}

/// The same with the backend's port `target`.
fn nodeport_to(lab: &TestLab, backend: &str, node: &str, target: u16) {
    let out = apply_yaml(
        lab,
        "node1",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: np}}\nspec:\n  type: NodePort\n  \
             ports: [{{port: 80, targetPort: {target}, nodePort: 30080}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: np-1, labels: {{kubernetes.io/service-name: np}}}}\n\
             addressType: IPv4\nports: [{{port: {target}, protocol: TCP}}]\nendpoints: [{{addresses: [{backend}], nodeName: {node}}}]\n"
        ),
    );
    assert!(out.contains("Service default/np stored"), "{out}");
    for n in ["node1", "node2"] {
        let ip = lab.lab.node(n).unwrap().underlay_ip.to_string();
        lab.eventually(Duration::from_secs(5), "the NodePort frontend with its backend", || {
            let lb = String::from_utf8_lossy(&lab.weft(n, &["bpf", "lb", "list"]).stdout).to_string();
            lb.contains(&format!("{ip}:30080/TCP")) && lb.contains(&format!("{backend}:{target}"))
        });
    }
}

/// The NodePort on each node, from the lab's outside: through node1 the
/// backend (on node2) sees node1's address and a port of the agents' SNAT
/// range `ports`; through node2 it sees the client's own.
fn nodeport_reaches_the_other_nodes_backend(lab: &TestLab, ports: std::ops::RangeInclusive<u16>) {
    let backend: Ipv4Addr = lab.pod_ip("pod2-1").parse().unwrap();
    serve_peer(lab, "pod2-1", backend, 8080);
    nodeport(lab, &backend.to_string(), "node2");
    let node1 = lab.lab.node("node1").unwrap().underlay_ip.to_string();
    let node2 = lab.lab.node("node2").unwrap().underlay_ip.to_string();
    let via1 = fetch(lab, "net", &node1, 30080);
    let port = via1.trim().strip_prefix(&format!("{node1}:")).and_then(|p| p.parse::<u16>().ok());
    assert!(
        port.is_some_and(|p| ports.contains(&p)),
        "the backend sees node1, a port of the SNAT range: {via1}"
    );
    let via2 = fetch(lab, "net", &node2, 30080);
    assert!(via2.starts_with(weft_lab::layout::ETCD_IP), "a local backend sees the client itself: {via2}");
    // From a pod, any node's address on the NodePort: translated at
    // connect() (bpf/sock.c), the connection goes straight to the backend,
    // which sees the pod.
    let pod = lab.pod_ip("pod1-1");
    for node in [&node1, &node2] {
        let got = fetch(lab, "pod1-1", node, 30080);
        assert!(got.starts_with(&format!("{pod}:")), "{node}:30080 from a pod: {got}");
    }
    // The same per packet: a process outside the node's cgroup (this
    // test's own thread in the pod's namespace) reaches node2's NodePort;
    // the answer comes from node2, or its TCP would refuse it.
    let to: std::net::SocketAddr = format!("{node2}:30080").parse().unwrap();
    let got = spawn_in_ns(&lab.netns_path("pod1-1"), move || {
        let mut c =
            std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3)).map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut line = [0u8; 64];
        let n = c.read(&mut line).map_err(|e| e.to_string())?;
        Ok::<_, String>((String::from_utf8_lossy(&line[..n]).to_string(), c.peer_addr().unwrap()))
    })
    .join()
    .unwrap();
    let (seen, peer) = got.expect("node2's NodePort per packet");
    assert!(seen.starts_with(&format!("{pod}:")) && peer == to, "per packet: {seen} from {peer}");
    let nat = String::from_utf8_lossy(&lab.weft("node1", &["bpf", "nat", "list"]).stdout).to_string();
    assert!(nat.contains("nodeport") && nat.contains(&format!("{backend}:8080")), "{nat}");
}

/// A client outside the cluster behind a narrower link: its own namespace
/// (`weft-<lab>-far`, 203.0.113.77) wired to the lab's underlay namespace,
/// which routes to it with a locked MTU of 1000, so the client advertises
/// a full-size MSS and a full-size packet towards it gets "fragmentation
/// needed" from the underlay namespace, as from a router on the way.
/// Removed on drop (with its link), also when the test fails.
struct FarClient {
    ns: String,
}

const FAR_CLIENT: &str = "203.0.113.77";

impl FarClient {
    fn new(lab: &TestLab) -> FarClient {
        let ns = format!("weft-{}-far", lab.name());
        let underlay = lab.netns_path("net").rsplit('/').next().unwrap().to_string();
        let far = FarClient { ns: ns.clone() };
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        };
        ip(&["netns", "add", &ns]);
        ip(&[
            "link",
            "add",
            "weft-far0",
            "netns",
            &underlay,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ]);
        for cmd in [
            "link set weft-far0 up",
            "addr add 192.0.2.1/30 dev weft-far0",
            &format!("route add {FAR_CLIENT}/32 via 192.0.2.2 mtu lock 1000"),
        ] {
            ip(&["-n", &underlay].iter().copied().chain(cmd.split(' ')).collect::<Vec<_>>());
        }
        for cmd in [
            "link set lo up",
            "link set eth0 up",
            "addr add 192.0.2.2/30 dev eth0",
            &format!("addr add {FAR_CLIENT}/32 dev eth0"),
            &format!("route add default via 192.0.2.1 src {FAR_CLIENT}"),
        ] {
            ip(&["-n", &ns].iter().copied().chain(cmd.split(' ')).collect::<Vec<_>>());
        }
        ip(&["netns", "exec", &underlay, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        far
    }

    /// How many bytes a TCP connection to `addr:port` reads until the
    /// server closes it (or 15 s pass).
    fn read_all(&self, addr: &str, port: u16) -> usize {
        let target: std::net::SocketAddr = format!("{addr}:{port}").parse().unwrap();
        spawn_in_ns(&format!("/run/netns/{}", self.ns), move || {
            let mut c = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let mut got = 0;
            let mut buf = [0u8; 65536];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got += n;
            }
            got
        })
        .join()
        .unwrap()
    }
}

impl Drop for FarClient {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// How many bytes `serve_bulk` sends each client.
const BULK: usize = 300_000;

/// A TCP server sending each client BULK bytes, then closing.
fn serve_bulk(lab: &TestLab, target: &str, ip: Ipv4Addr, port: u16) {
    serve_tcp(lab, target, ip, port, |mut c| {
        let _ = c.write_all(&vec![b'x'; BULK]);
    });
}

/// The backend's replies do not fit the client's path: the router's
/// "fragmentation needed" about the reply (node:nodePort -> client) must
/// reach the backend about its own packet, or the transfer stalls (the
/// node's stack has no socket for it). Through node1 the backend is local;
/// through node2 the flow is SNATed to it, and the error follows it
/// through the tunnel.
fn nodeport_replies_too_big_for_the_clients_path_arrive_whole(lab: &TestLab) {
    let backend: Ipv4Addr = lab.pod_ip("pod1-1").parse().unwrap();
    serve_bulk(lab, "pod1-1", backend, 8090);
    nodeport_to(lab, &backend.to_string(), "node1", 8090);
    let far = FarClient::new(lab);
    for node in ["node1", "node2"] {
        let ip = lab.lab.node(node).unwrap().underlay_ip.to_string();
        assert_eq!(far.read_all(&ip, 30080), BULK, "all of the reply through {node}");
    }
}

/// A NodePort whose backend is node1's host itself (a hostNetwork pod, as
/// an EndpointSlice names it: the node's address): from outside through
/// node1 (up to its stack, the reply from the node port again: to-network)
/// and through node2 (SNATed on to node1's host).
fn nodeport_served_by_the_host(lab: &TestLab) {
    let node1: Ipv4Addr = lab.lab.node("node1").unwrap().underlay_ip;
    serve_peer(lab, "node1", node1, 8091);
    nodeport_to(lab, &node1.to_string(), "node1", 8091);
    let via1 = fetch(lab, "net", &node1.to_string(), 30080);
    assert!(via1.starts_with(weft_lab::layout::ETCD_IP), "the host serves, seeing the client: {via1}");
    let node2 = lab.lab.node("node2").unwrap().underlay_ip.to_string();
    let via2 = fetch(lab, "net", &node2, 30080);
    assert!(via2.starts_with(&node2), "through node2, the host sees node2: {via2}");
}

#[test]
fn pods_reach_the_outside_as_their_node_and_a_small_port_range_runs_out_with_a_counted_drop() {
    let lab = TestLab::up_with("nat", 2, 1, |o| {
        o.store = Some("etcd".into());
        o.agent_env.push(("WEFT_SNAT_PORTS".into(), "61000-61003".into()));
    });
    let internet: Ipv4Addr = INTERNET.parse().unwrap();
    serve_peer(&lab, "net", internet, 8080);
    serve_udp_peer(&lab, 5353);
    let node1 = lab.lab.node("node1").unwrap().underlay_ip.to_string();

    // TCP: the host sees node1's address and a port of the range.
    let got = fetch(&lab, "pod1-1", INTERNET, 8080);
    assert!(got.starts_with(&format!("{node1}:6100")), "seen as the node: {got}");
    // UDP, and ping.
    let udp = lab.ok(
        "pod1-1",
        &[
            "bash",
            "-c",
            &format!("exec 3<>/dev/udp/{INTERNET}/5353 && echo hi >&3 && timeout 2 head -n 1 <&3"),
        ],
    );
    assert!(udp.starts_with(&format!("{node1}:6100")), "UDP seen as the node: {udp}");
    lab.ok("pod1-1", &["ping", "-c", "2", "-i", "0.2", "-W", "2", INTERNET]);
    let nat =
        String::from_utf8_lossy(&lab.weft("node1", &["bpf", "nat", "list", "-o", "json"]).stdout).to_string();
    let flows: serde_json::Value = serde_json::from_str(&nat).unwrap();
    let pod = lab.pod_ip("pod1-1");
    for proto in ["TCP", "UDP", "ICMP"] {
        assert!(
            flows.as_array().unwrap().iter().any(|f| f["proto"] == proto
                && f["kind"] == "masquerade"
                && f["src"].as_str().unwrap().starts_with(&pod)
                && f["reply_entry"] == true),
            "{proto} flow in {nat}"
        );
    }

    nodeport_reaches_the_other_nodes_backend(&lab, 61000..=61003);
    nodeport_replies_too_big_for_the_clients_path_arrive_whole(&lab);
    nodeport_served_by_the_host(&lab);

    // Four ports towards one host and port (a port no earlier flow used):
    // four connections hold them, the fifth is dropped (counted, and
    // `weft status` says why), never sent with the pod's address.
    serve_peer(&lab, "net", internet, 8081);
    let script = format!(
        "for fd in 3 4 5 6; do eval \"exec $fd<>/dev/tcp/{INTERNET}/8081\" || exit 1; done; echo four; \
         if timeout 3 bash -c 'exec 9<>/dev/tcp/{INTERNET}/8081'; then echo fifth-connected; else echo fifth-refused; fi"
    );
    let out = lab.ok("pod1-1", &["bash", "-c", &script]);
    assert!(out.contains("four") && out.contains("fifth-refused"), "{out}");
    let status = lab.status("node1");
    let no_port = status.drops.iter().find(|(r, _)| r.contains("no free port")).map_or(0, |d| d.1);
    assert!(no_port >= 1, "counted: {:?}", status.drops);
    assert!(
        status.warnings.iter().any(|w| w.contains("SNAT") && w.contains("--snat-ports")),
        "{:?}",
        status.warnings
    );
}

#[test]
fn a_nodeport_reaches_the_other_nodes_backend_in_ipip_and_native_routing() {
    for mode in ["ipip", "native"] {
        let lab = TestLab::up_with(&format!("np{mode}"), 2, 1, |o| {
            o.store = Some("etcd".into());
            o.mode = Some(mode.into());
        });
        // The agents' default range.
        nodeport_reaches_the_other_nodes_backend(&lab, 1024..=29999);
    }
}
