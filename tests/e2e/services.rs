//! End to end: socket load balancing on a lab node. A ClusterIP written
//! into the node's service maps, a real client in a pod (`weft lab exec`
//! puts it in the node's cgroup) connecting to it, and the backend pod
//! answering; across an agent restart too. Then services through the API
//! (`weft service apply`) on two nodes: hairpin, the host, ping, session
//! affinity, endpoint changes, established connections across restarts.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::{Child, ChildStdin},
    sync::mpsc,
    time::{Duration, Instant},
};
use weft_api::{LbView, Request};
use weft_datapath::lb::{Backend, Frontend, FrontendInfo, ServiceMaps};
use weft_e2e::{TestLab, spawn_in_ns};

/// A client in `pod` connecting to `addr:port`: what it read.
fn fetch(lab: &TestLab, pod: &str, addr: &str, port: u16) -> String {
    let script = format!("exec 3<>/dev/tcp/{addr}/{port} && timeout 2 head -c 64 <&3");
    let out = lab.exec(pod, &["bash", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// A TCP server in `pod` on port 8080 that writes `text` (or, when None,
/// its own address) to every connection; returns the pod's address once
/// it listens.
fn serve(lab: &TestLab, pod: &str, text: Option<&'static str>) -> Ipv4Addr {
    let ip: Ipv4Addr = lab.pod_ip(pod).parse().unwrap();
    let (ready, listening) = std::sync::mpsc::channel();
    spawn_in_ns(&lab.netns_path(pod), move || {
        let l = TcpListener::bind((ip, 8080)).unwrap();
        ready.send(()).unwrap();
        for c in l.incoming().flatten() {
            let mut c = c;
            let own = ip.to_string();
            let _ = c.write_all(text.unwrap_or(&own).as_bytes());
        }
    });
    listening.recv_timeout(Duration::from_secs(5)).unwrap();
    ip
}

#[test]
fn a_pod_reaches_a_cluster_ip_translated_at_connect_and_after_an_agent_restart() {
    let mut lab = TestLab::up("svc", 1, 2);
    let backend = serve(&lab, "pod1-2", Some("hello from the backend"));
    let node = lab.lab.node("node1").unwrap().clone();
    let maps = ServiceMaps::open(&node.bpffs).expect("the agent pinned the service maps");
    let fe = Frontend { address: Ipv4Addr::new(10, 96, 0, 10), port: 80, proto: 6 };
    let be = Backend { id: 1, address: backend, port: 8080, proto: 6 };
    maps.put(fe, FrontendInfo { rev_nat_id: 1, ..Default::default() }, &[be]).unwrap();

    let lb = String::from_utf8_lossy(&lab.weft("node1", &["bpf", "lb", "list"]).stdout).to_string();
    assert!(lb.contains("10.96.0.10:80/TCP") && lb.contains(&format!("{backend}:8080 (id 1)")), "{lb}");

    let mon = lab.monitor("node1", &["-t", "trace-sock"]);
    let got = fetch(&lab, "pod1-1", "10.96.0.10", 80);
    assert!(got.contains("hello from the backend"), "{got}");
    let ev = mon
        .wait_for(Duration::from_secs(3), |v| v["type"] == "trace-sock")
        .expect("a trace-sock event for the translation");
    let want = format!("connect 10.96.0.10:80/tcp -> {backend}:8080 (service to backend)");
    assert_eq!(ev["message"].as_str(), Some(want.as_str()), "{ev}");
    assert_eq!(ev["origIP"], "10.96.0.10");
    drop(mon);
    // No service there: nothing answers (the pod network has no 10.96/16).
    let none = fetch(&lab, "pod1-1", "10.96.0.99", 80);
    assert!(!none.contains("hello"), "{none}");

    // The links are pinned: the agent's death and restart change nothing.
    weft_lab::lifecycle::kill_and_wait(node.pid);
    assert!(fetch(&lab, "pod1-1", "10.96.0.10", 80).contains("hello from the backend"), "without an agent");
    let pid = weft_lab::lifecycle::restart_agent(&lab.lab, "node1").unwrap();
    lab.lab.nodes[0].pid = pid;
    assert!(fetch(&lab, "pod1-1", "10.96.0.10", 80).contains("hello from the backend"), "after the restart");
    let links = std::fs::read_dir(weft_datapath::sock::links_dir(&node.bpffs))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("sock_"))
        .count();
    assert_eq!(links, 4, "one pinned link per socket program, not two after a restart");
    let cg = weft_lab::layout::cgroup_dir(lab.name()).unwrap();
    drop(lab);
    assert!(!cg.exists(), "lab down removes the lab's cgroups");
}

/// A client outside the node's cgroup (a thread of this test in the pod's
/// namespace) is not translated at connect(): the per-packet path does it,
/// to a backend on the other node, and the reply comes back from the
/// service's address.
#[test]
fn the_per_packet_path_reaches_a_backend_on_another_node_and_replies_from_the_service() {
    let lab = TestLab::up("svcpp", 2, 1);
    let backend = serve(&lab, "pod2-1", Some("from node2"));
    let maps = ServiceMaps::open(&lab.lab.node("node1").unwrap().bpffs).unwrap();
    let fe = Frontend { address: Ipv4Addr::new(10, 96, 0, 20), port: 80, proto: 6 };
    let be = Backend { id: 1, address: backend, port: 8080, proto: 6 };
    maps.put(fe, FrontendInfo { rev_nat_id: 1, ..Default::default() }, &[be]).unwrap();
    lab.eventually(Duration::from_secs(5), "node1 knows pod2-1", || {
        lab.ipcache("node1").iter().any(|e| e.prefix == format!("{backend}/32"))
    });
    let (text, peer) = spawn_in_ns(&lab.netns_path("pod1-1"), || {
        let vip = std::net::SocketAddr::from(([10, 96, 0, 20], 80));
        let mut s = std::net::TcpStream::connect_timeout(&vip, Duration::from_secs(2)).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        (text, s.peer_addr().unwrap())
    })
    .join()
    .unwrap();
    assert_eq!(text, "from node2");
    assert_eq!(peer, std::net::SocketAddr::from(([10, 96, 0, 20], 80)));
    // No backend: "port unreachable" from the service, refused at once.
    let empty = Frontend { address: Ipv4Addr::new(10, 96, 0, 21), port: 80, proto: 6 };
    maps.put(empty, FrontendInfo { rev_nat_id: 2, ..Default::default() }, &[]).unwrap();
    let (kind, took) = spawn_in_ns(&lab.netns_path("pod1-1"), || {
        let t = std::time::Instant::now();
        let e = std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([10, 96, 0, 21], 80)),
            Duration::from_secs(3),
        )
        .err()
        .map(|e| e.kind());
        (e, t.elapsed())
    })
    .join()
    .unwrap();
    assert_eq!(kind, Some(std::io::ErrorKind::ConnectionRefused), "after {took:?}");
    assert!(took < Duration::from_secs(1), "refused at once, not after {took:?}");
    let ct = String::from_utf8_lossy(&lab.weft("node1", &["bpf", "ct", "list"]).stdout).to_string();
    assert!(ct.contains("service") && ct.contains("10.96.0.20:80"), "{ct}");

    // A 2000-byte UDP datagram (two fragments each way) through a ClusterIP.
    let (ready, listening) = std::sync::mpsc::channel();
    spawn_in_ns(&lab.netns_path("pod2-1"), move || {
        let s = std::net::UdpSocket::bind((backend, 5353)).unwrap();
        ready.send(()).unwrap();
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    listening.recv_timeout(Duration::from_secs(5)).unwrap();
    let dns = Frontend { address: Ipv4Addr::new(10, 96, 0, 22), port: 53, proto: 17 };
    let udp_be = Backend { id: 2, address: backend, port: 5353, proto: 17 };
    maps.put(dns, FrontendInfo { rev_nat_id: 3, ..Default::default() }, &[udp_be]).unwrap();
    let (n, from, same) = spawn_in_ns(&lab.netns_path("pod1-1"), || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let data: Vec<u8> = (0..2000).map(|i| (i % 251) as u8).collect();
        s.send_to(&data, std::net::SocketAddr::from(([10, 96, 0, 22], 53))).unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        (n, from, buf[..n] == data[..])
    })
    .join()
    .unwrap();
    assert_eq!((n, same), (2000, true), "the datagram comes back whole");
    assert_eq!(from, std::net::SocketAddr::from(([10, 96, 0, 22], 53)), "from the service");
}

fn apply_yaml(lab: &TestLab, node: &str, yaml: &str) -> String {
    let path = std::env::temp_dir().join(format!("weft-svc-{}-{}.yaml", lab.name(), std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    let out = lab.weft(node, &["service", "apply", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Services through the API: a Service gets a ClusterIP from the store,
/// its EndpointSlice's pods on both nodes become its backends on every
/// node, both are reached; without endpoints it refuses at once; deleted,
/// it is gone from the maps.
#[test]
fn a_service_applied_through_the_api_spreads_over_pods_on_both_nodes() {
    let lab = TestLab::up("svcapi", 2, 2);
    let backends = [serve(&lab, "pod1-2", None).to_string(), serve(&lab, "pod2-2", None).to_string()];
    let out = apply_yaml(
        &lab,
        "node1",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  ports: [{{port: 80, targetPort: 8080}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nports: [{{port: 8080, protocol: TCP}}]\nendpoints:\n\
             - {{addresses: [{}], nodeName: node1}}\n- {{addresses: [{}], nodeName: node2}}\n",
            backends[0], backends[1]
        ),
    );
    assert!(out.contains("Service default/web stored (ClusterIP 10.96.1.1)"), "{out}");
    for node in ["node1", "node2"] {
        lab.eventually(Duration::from_secs(5), "both backends in the maps", || {
            let lb = String::from_utf8_lossy(&lab.weft(node, &["bpf", "lb", "list"]).stdout).to_string();
            backends.iter().all(|b| lb.contains(&format!("{b}:8080")))
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(fetch(&lab, "pod1-1", "10.96.1.1", 80).trim().to_string());
    }
    let want: std::collections::BTreeSet<String> = backends.iter().cloned().collect();
    assert_eq!(seen, want, "connections spread over both backends");
    let list = String::from_utf8_lossy(&lab.weft("node1", &["service", "list"]).stdout).to_string();
    assert!(list.contains("10.96.1.1") && list.contains("web"), "{list}");

    // No endpoints left: refused at once, not a timeout.
    let out = lab.weft("node1", &["service", "delete", "web-1", "--kind", "endpointslice"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    lab.eventually(Duration::from_secs(5), "the frontend has no backend", || {
        String::from_utf8_lossy(&lab.weft("node1", &["bpf", "lb", "list"]).stdout)
            .contains("<none: rejected>")
    });
    let t = std::time::Instant::now();
    let refused = fetch(&lab, "pod1-1", "10.96.1.1", 80);
    assert!(
        !refused.contains("10.244") && t.elapsed() < Duration::from_secs(1),
        "{refused} after {:?}",
        t.elapsed()
    );

    let out = lab.weft("node1", &["service", "delete", "web"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    lab.eventually(Duration::from_secs(5), "the frontend is gone", || {
        !String::from_utf8_lossy(&lab.weft("node2", &["bpf", "lb", "list"]).stdout).contains("10.96.1.1")
    });
}

/// A NodePort from outside the cluster: a client on the underlay (the
/// lab's etcd namespace) connects to the node's address and port; a
/// backend on that node answers, and the reply leaves as the node.
#[test]
fn a_nodeport_from_outside_the_cluster_reaches_a_backend_on_the_node() {
    let lab = TestLab::up_with("svcnp", 1, 2, |o| o.store = Some("etcd".into()));
    let backend = serve(&lab, "pod1-2", Some("hello from the nodeport backend"));
    let out = apply_yaml(
        &lab,
        "node1",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: np}}\nspec:\n  type: NodePort\n  \
             ports: [{{port: 80, targetPort: 8080, nodePort: 30080}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: np-1, labels: {{kubernetes.io/service-name: np}}}}\n\
             addressType: IPv4\nports: [{{port: 8080, protocol: TCP}}]\nendpoints: [{{addresses: [{backend}], nodeName: node1}}]\n"
        ),
    );
    assert!(out.contains("Service default/np stored"), "{out}");
    let node_ip = lab.lab.node("node1").unwrap().underlay_ip.to_string();
    lab.eventually(Duration::from_secs(5), "the NodePort frontend", || {
        String::from_utf8_lossy(&lab.weft("node1", &["bpf", "lb", "list"]).stdout)
            .contains(&format!("{node_ip}:30080/TCP"))
    });
    let got = fetch(&lab, "net", &node_ip, 30080);
    assert!(got.contains("hello from the nodeport backend"), "{got}");
}

/// externalTrafficPolicy Local: the backend sees the client's own address,
/// and when the node's only endpoint is terminating (not ready, still
/// serving) it still serves rather than the NodePort going dark (the
/// upstream test Cilium fails, issue #37613).
#[test]
fn a_local_nodeport_keeps_the_client_address_and_falls_back_to_a_terminating_endpoint() {
    let lab = TestLab::up_with("svcloc", 1, 2, |o| o.store = Some("etcd".into()));
    let backend: Ipv4Addr = lab.pod_ip("pod1-2").parse().unwrap();
    let (ready, listening) = std::sync::mpsc::channel();
    spawn_in_ns(&lab.netns_path("pod1-2"), move || {
        let l = TcpListener::bind((backend, 8080)).unwrap();
        ready.send(()).unwrap();
        for c in l.incoming().flatten() {
            let mut c = c;
            let peer = c.peer_addr().map(|p| p.ip().to_string()).unwrap_or_default();
            let _ = c.write_all(format!("you are {peer}").as_bytes());
        }
    });
    listening.recv_timeout(Duration::from_secs(5)).unwrap();
    apply_yaml(
        &lab,
        "node1",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: loc}}\nspec:\n  type: NodePort\n  externalTrafficPolicy: Local\n  \
             ports: [{{port: 80, targetPort: 8080, nodePort: 30081}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: loc-1, labels: {{kubernetes.io/service-name: loc}}}}\n\
             addressType: IPv4\nports: [{{port: 8080, protocol: TCP}}]\n\
             endpoints: [{{addresses: [{backend}], nodeName: node1, conditions: {{ready: false, serving: true, terminating: true}}}}]\n"
        ),
    );
    let node_ip = lab.lab.node("node1").unwrap().underlay_ip.to_string();
    lab.eventually(Duration::from_secs(5), "the NodePort has the terminating backend", || {
        let lb = String::from_utf8_lossy(&lab.weft("node1", &["bpf", "lb", "list"]).stdout).to_string();
        lb.contains(&format!("{node_ip}:30081/TCP")) && lb.contains(&format!("{backend}:8080"))
    });
    let got = fetch(&lab, "net", &node_ip, 30081);
    assert!(
        got.contains(&format!("you are {}", weft_lab::layout::ETCD_IP)),
        "the client's own address: {got}"
    );
}

// ---- Services through the API: helpers for the tests below. ----

/// A Service named `name` (`spec`: its spec's lines, indented) and its
/// EndpointSlice (see `slice_yaml`).
fn service_yaml(name: &str, spec: &str, ports: &str, endpoints: &[(Ipv4Addr, &str)]) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n{spec}---\n{}",
        slice_yaml(name, ports, endpoints)
    )
}

/// The EndpointSlice `<service>-1`: `ports` (a YAML list) on one endpoint
/// per (address, node), all ready.
fn slice_yaml(service: &str, ports: &str, endpoints: &[(Ipv4Addr, &str)]) -> String {
    let eps: Vec<String> =
        endpoints.iter().map(|(ip, node)| format!("{{addresses: [{ip}], nodeName: {node}}}")).collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {service}-1, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nports: {ports}\nendpoints: [{}]\n",
        eps.join(", ")
    )
}

const TCP_8080: &str = "[{port: 8080, protocol: TCP}]";
const HTTP: &str = "  ports: [{port: 80, targetPort: 8080}]\n";

/// Applies a Service (and slice) through `weft service apply`: the
/// ClusterIP the store gave it.
fn apply_service(lab: &TestLab, yaml: &str) -> Ipv4Addr {
    let out = apply_yaml(lab, "node1", yaml);
    out.split("(ClusterIP ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no ClusterIP in: {out}"))
}

/// The backend addresses a node's maps hold for `frontend` ("10.96.1.1:80/TCP").
fn lb_backends(lab: &TestLab, node: &str, frontend: &str) -> Option<BTreeSet<String>> {
    let list: Vec<LbView> = lab.client(node).call_as(&Request::BpfLbList).ok()?;
    let fe = list.into_iter().find(|l| l.frontend == frontend)?;
    Some(fe.backends.iter().filter_map(|b| b.split(':').next()).map(str::to_string).collect())
}

fn addrs(ips: &[Ipv4Addr]) -> BTreeSet<String> {
    ips.iter().map(|i| i.to_string()).collect()
}

/// Waits until every node's maps send `frontend` to exactly `backends`.
fn wait_backends(lab: &TestLab, frontend: &str, backends: &[Ipv4Addr]) {
    let want = addrs(backends);
    for node in lab.lab.nodes.iter().map(|n| n.name.clone()) {
        lab.eventually(Duration::from_secs(5), &format!("{node}: {frontend} -> {want:?}"), || {
            lb_backends(lab, &node, frontend).as_ref() == Some(&want)
        });
    }
}

fn cli(lab: &TestLab, node: &str, args: &[&str]) -> String {
    let out = lab.weft(node, args);
    assert!(out.status.success(), "weft {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A long-lived bash in a pod or node (`weft lab exec`: in the node's
/// cgroup, so socket LB applies) that answers each line it reads with one
/// line; no bash start per connection, so hundreds of connections fit in
/// a second.
struct LineClient {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl LineClient {
    fn new(lab: &TestLab, target: &str, script: &str) -> LineClient {
        let mut child = lab.spawn(target, &["bash", "-c", script]);
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        LineClient { child, stdin, lines }
    }

    /// A new connection to `addr:port` per line: what the server wrote
    /// (empty when the connection failed).
    fn connector(lab: &TestLab, target: &str, addr: Ipv4Addr, port: u16) -> LineClient {
        let script =
            format!("while read -r _; do x=; read -r -t 2 x </dev/tcp/{addr}/{port}; echo \"$x\"; done");
        Self::new(lab, target, &script)
    }

    fn ask(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.lines.recv_timeout(Duration::from_secs(3)).unwrap_or_else(|_| "<no answer>".into())
    }

    fn batch(&mut self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.ask("")).collect()
    }
}

impl Drop for LineClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` connections to `addr:port` from a thread of this test in
/// `target`'s namespace — outside the node's cgroup, so only the
/// per-packet path can translate: what each read, or its error.
fn pp_fetch(lab: &TestLab, target: &str, addr: Ipv4Addr, port: u16, n: usize) -> Vec<String> {
    spawn_in_ns(&lab.netns_path(target), move || {
        (0..n)
            .map(|_| {
                let one = || -> std::io::Result<String> {
                    let to = SocketAddr::from((addr, port));
                    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(1))?;
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    let mut text = String::new();
                    s.read_to_string(&mut text)?;
                    Ok(text)
                };
                one().unwrap_or_else(|e| format!("error: {e}"))
            })
            .collect()
    })
    .join()
    .unwrap()
}

/// A UDP server in `pod` on port 5353 answering every datagram with its
/// own address; returns that address once it listens.
fn serve_udp(lab: &TestLab, pod: &str) -> Ipv4Addr {
    let ip: Ipv4Addr = lab.pod_ip(pod).parse().unwrap();
    let s = spawn_in_ns(&lab.netns_path(pod), move || UdpSocket::bind((ip, 5353)).unwrap()).join().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((_, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(ip.to_string().as_bytes(), from);
        }
    });
    ip
}

/// A TCP server in `pod` on port 8080 answering each line of a connection
/// with "<its address> <the line>", for as long as the connection lasts.
fn serve_echo(lab: &TestLab, pod: &str) -> Ipv4Addr {
    let ip: Ipv4Addr = lab.pod_ip(pod).parse().unwrap();
    let l = spawn_in_ns(&lab.netns_path(pod), move || TcpListener::bind((ip, 8080)).unwrap()).join().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                for line in BufReader::new(c).lines().map_while(Result::ok) {
                    if writeln!(w, "{ip} {line}").is_err() {
                        return;
                    }
                }
            });
        }
    });
    ip
}

/// A pod is the only backend of its own service and reaches itself
/// through it at connect() (hairpin); the host, in the node's cgroup,
/// reaches a ClusterIP's backends on both nodes; a ClusterIP answers TCP
/// on both paths but not ping.
#[test]
fn a_cluster_ip_serves_its_own_backend_and_the_host_and_is_not_pinged() {
    let lab = TestLab::up("svcown", 2, 2);
    let me = serve(&lab, "pod1-1", None);
    let own = apply_service(&lab, &service_yaml("own", HTTP, TCP_8080, &[(me, "node1")]));
    let backends = [serve(&lab, "pod1-2", None), serve(&lab, "pod2-2", None)];
    let web = apply_service(
        &lab,
        &service_yaml("web", HTTP, TCP_8080, &[(backends[0], "node1"), (backends[1], "node2")]),
    );
    wait_backends(&lab, &format!("{own}:80/TCP"), &[me]);
    wait_backends(&lab, &format!("{web}:80/TCP"), &backends);

    // Hairpin at connect(): the pod's own service sends it to itself.
    let got = fetch(&lab, "pod1-1", &own.to_string(), 80);
    assert_eq!(got.trim(), me.to_string(), "pod1-1 through its own service {own}");

    // The host: a process in the node's namespace and cgroup.
    for node in ["node1", "node2"] {
        let mut host = LineClient::connector(&lab, node, web, 80);
        let seen: BTreeSet<String> = host.batch(30).into_iter().collect();
        assert_eq!(seen, addrs(&backends), "{node}: the host's connections to {web} reach both backends");
    }

    // ICMP echo to a ClusterIP: no answer, while TCP to it works on both paths.
    let out = lab.exec("pod1-1", &["ping", "-c", "3", "-i", "0.2", "-W", "1", &web.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains(" 0 received"), "ping {web} answered: {text}");
    let tcp = fetch(&lab, "pod1-1", &web.to_string(), 80);
    assert!(addrs(&backends).contains(tcp.trim()), "at connect(): {tcp}");
    let pp = pp_fetch(&lab, "pod1-1", web, 80, 1).remove(0);
    assert!(addrs(&backends).contains(&pp), "per packet: {pp}");
}

/// Hairpin per packet: a socket outside the node's cgroup connects to the
/// pod's own service; the first packet leaves the pod for the ClusterIP
/// and comes back to the pod itself, from the hairpin address
/// (169.254.42.1: the pod's own address would be a martian), and the
/// answer, sent there through the gateway, reaches the client from the
/// service.
#[test]
fn a_pod_reaches_itself_through_its_own_service_per_packet() {
    let lab = TestLab::up("svchp", 2, 1);
    let me = serve(&lab, "pod1-1", None);
    let own = apply_service(&lab, &service_yaml("own", HTTP, TCP_8080, &[(me, "node1")]));
    wait_backends(&lab, &format!("{own}:80/TCP"), &[me]);
    let got = pp_fetch(&lab, "pod1-1", own, 80, 3);
    assert!(got.iter().all(|g| *g == me.to_string()), "pod1-1 through its own service {own}: {got:?}");
}

/// The host outside the node's cgroup (this test's thread in the node's
/// namespace): the agent routes the ClusterIP range to weft_host, where
/// from-host translates per packet; backends on both nodes answer as the
/// service.
#[test]
fn the_host_reaches_a_cluster_ip_per_packet() {
    let lab = TestLab::up("svchost", 2, 2);
    let backends = [serve(&lab, "pod1-2", None), serve(&lab, "pod2-2", None)];
    let web = apply_service(
        &lab,
        &service_yaml("web", HTTP, TCP_8080, &[(backends[0], "node1"), (backends[1], "node2")]),
    );
    wait_backends(&lab, &format!("{web}:80/TCP"), &backends);
    let got = pp_fetch(&lab, "node1", web, 80, 10);
    assert!(got.iter().all(|g| addrs(&backends).contains(g)), "node1 -> {web}: {got:?}");
}

/// ClientIP session affinity: every client (a pod at connect(), keyed by
/// its namespace; a pod per packet, keyed by its address) stays on one of
/// three backends; once it was idle past timeoutSeconds its next
/// connection picks again. With 4 clients and 3 expiries each, a picker
/// that never forgets repeats its backend 12 times, where a fresh pick
/// does so with probability 3^-12.
#[test]
fn client_ip_affinity_holds_a_client_to_one_backend_until_its_timeout() {
    let lab = TestLab::up("svcaff", 2, 3);
    let backends = [serve(&lab, "pod1-2", None), serve(&lab, "pod1-3", None), serve(&lab, "pod2-2", None)];
    let spec = format!(
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: 2}}}}\n{HTTP}"
    );
    let ip = apply_service(
        &lab,
        &service_yaml(
            "sticky",
            &spec,
            TCP_8080,
            &[(backends[0], "node1"), (backends[1], "node1"), (backends[2], "node2")],
        ),
    );
    let fe = format!("{ip}:80/TCP");
    wait_backends(&lab, &fe, &backends);
    let list: Vec<LbView> = lab.client("node1").call_as(&Request::BpfLbList).unwrap();
    let flags = &list.iter().find(|l| l.frontend == fe).unwrap().flags;
    assert!(flags.iter().any(|f| f == "affinity"), "{flags:?}");

    let mut sock =
        [LineClient::connector(&lab, "pod1-1", ip, 80), LineClient::connector(&lab, "pod2-1", ip, 80)];
    let mut picks: Vec<Vec<String>> = vec![vec![]; 4];
    for round in 0..4 {
        if round > 0 {
            // Only idleness expires an affinity (a connection renews it):
            // past 2 s, counted in whole seconds, is 3 s.
            std::thread::sleep(Duration::from_millis(3200));
        }
        let n = if round == 0 { 10 } else { 5 };
        let mut got = vec![sock[0].batch(n), sock[1].batch(n)];
        got.push(pp_fetch(&lab, "pod1-1", ip, 80, n));
        got.push(pp_fetch(&lab, "pod2-1", ip, 80, n));
        for (client, g) in got.into_iter().enumerate() {
            assert!(addrs(&backends).contains(&g[0]), "client {client}, round {round}: {g:?}");
            assert!(g.iter().all(|b| *b == g[0]), "client {client}, round {round}: not one backend: {g:?}");
            picks[client].push(g[0].clone());
        }
    }
    let changes: usize = picks.iter().map(|p| p.windows(2).filter(|w| w[0] != w[1]).count()).sum();
    assert!(changes > 0, "no client ever changed backend after its affinity expired: {picks:?}");
    eprintln!("backends per client and round: {picks:?} ({changes} changes)");
}

/// An EndpointSlice change reaches new connections within a second, on
/// both nodes and both paths: a removed backend gets none, an added one
/// gets some. And a UDP client on a fixed source port (per packet: its
/// flow's backend is remembered in conntrack) whose backend leaves the
/// service gets its answers from the other backend within a second, still
/// from the service.
#[test]
fn endpoint_changes_reach_new_connections_and_udp_flows_within_a_second() {
    let lab = TestLab::up("svcchg", 2, 3);
    let (a, b, c, d) = (
        serve(&lab, "pod1-2", None),
        serve(&lab, "pod2-2", None),
        serve(&lab, "pod1-3", None),
        serve(&lab, "pod2-3", None),
    );
    let ip = apply_service(
        &lab,
        &service_yaml("web", HTTP, TCP_8080, &[(a, "node1"), (b, "node2"), (c, "node1")]),
    );
    wait_backends(&lab, &format!("{ip}:80/TCP"), &[a, b, c]);
    // pod1-1 at connect() (node1's maps), pod2-1 per packet (node2's).
    let mut sock = LineClient::connector(&lab, "pod1-1", ip, 80);
    let batch = |sock: &mut LineClient| {
        let mut got = sock.batch(20);
        got.extend(pp_fetch(&lab, "pod2-1", ip, 80, 20));
        got
    };
    let seen: BTreeSet<String> = batch(&mut sock).into_iter().chain(batch(&mut sock)).collect();
    assert_eq!(seen, addrs(&[a, b, c]), "before any change");

    apply_yaml(&lab, "node1", &slice_yaml("web", TCP_8080, &[(a, "node1"), (b, "node2")]));
    let t = Instant::now();
    let gone = c.to_string();
    let mut last = vec![];
    while last.is_empty() || last.contains(&gone) {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{gone} still served after {:?}: {last:?}",
            t.elapsed()
        );
        last = batch(&mut sock);
    }
    eprintln!("removal effective after {:?}", t.elapsed());
    let after: BTreeSet<String> = batch(&mut sock).into_iter().chain(batch(&mut sock)).collect();
    assert_eq!(after, addrs(&[a, b]), "after {gone} left");

    apply_yaml(&lab, "node1", &slice_yaml("web", TCP_8080, &[(a, "node1"), (b, "node2"), (d, "node2")]));
    let t = Instant::now();
    let new = d.to_string();
    loop {
        let s = sock.batch(20);
        let p = pp_fetch(&lab, "pod2-1", ip, 80, 20);
        if s.contains(&new) && p.contains(&new) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{new} not reached after {:?}: {s:?} {p:?}",
            t.elapsed()
        );
    }
    eprintln!("addition effective after {:?}", t.elapsed());
    let after: BTreeSet<String> = batch(&mut sock).into_iter().chain(batch(&mut sock)).collect();
    assert_eq!(after, addrs(&[a, b, d]), "after {new} joined");

    // UDP: a flow on a fixed port whose backend leaves.
    let (ua, ub) = (serve_udp(&lab, "pod1-2"), serve_udp(&lab, "pod2-2"));
    let ports = "[{port: 5353, protocol: UDP}]";
    let spec = "  ports: [{port: 53, targetPort: 5353, protocol: UDP}]\n";
    let dns = apply_service(&lab, &service_yaml("dns", spec, ports, &[(ua, "node1"), (ub, "node2")]));
    wait_backends(&lab, &format!("{dns}:53/UDP"), &[ua, ub]);
    let me: Ipv4Addr = lab.pod_ip("pod1-1").parse().unwrap();
    let udp =
        spawn_in_ns(&lab.netns_path("pod1-1"), move || UdpSocket::bind((me, 40053)).unwrap()).join().unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let svc = SocketAddr::from((dns, 53));
    let ask = || {
        udp.send_to(b"who", svc).unwrap();
        let mut buf = [0u8; 64];
        match udp.recv_from(&mut buf) {
            Ok((n, from)) => (String::from_utf8_lossy(&buf[..n]).into_owned(), Some(from)),
            Err(e) => (format!("error: {e}"), None),
        }
    };
    let (first, from) = ask();
    assert_eq!(from, Some(svc), "the answer comes from the service: {first}");
    let ((gone, _), (stays, stays_on)) =
        if first == ua.to_string() { ((ua, "node1"), (ub, "node2")) } else { ((ub, "node2"), (ua, "node1")) };
    assert_eq!(first, gone.to_string());
    for _ in 0..10 {
        assert_eq!(ask().0, first, "the flow keeps its backend");
    }
    let flow = format!("{me}:40053 -> {dns}:53");
    let ct = cli(&lab, "node1", &["bpf", "ct", "list"]);
    assert!(
        ct.lines().any(|l| l.contains("service") && l.contains(&flow)),
        "a service entry for {flow}:\n{ct}"
    );

    apply_yaml(&lab, "node1", &slice_yaml("dns", ports, &[(stays, stays_on)]));
    let t = Instant::now();
    loop {
        let (got, from) = ask();
        if got == stays.to_string() {
            assert_eq!(from, Some(svc));
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(1), "still {got} after {:?}", t.elapsed());
    }
    eprintln!("the flow moved after {:?}", t.elapsed());
    for _ in 0..5 {
        assert_eq!(ask(), (stays.to_string(), Some(svc)), "the flow stays on {stays}");
    }
}

/// Established connections through a ClusterIP — one translated at
/// connect(), one per packet — live through SIGKILL and restart of each
/// node's agent; the restarted agent holds and serves the same services.
#[test]
fn established_connections_through_a_cluster_ip_survive_an_agent_kill_and_restart() {
    let mut lab = TestLab::up("svcrst", 2, 2);
    let backends = [serve_echo(&lab, "pod1-2"), serve_echo(&lab, "pod2-2")];
    let ip = apply_service(
        &lab,
        &service_yaml("echo", HTTP, TCP_8080, &[(backends[0], "node1"), (backends[1], "node2")]),
    );
    wait_backends(&lab, &format!("{ip}:80/TCP"), &backends);
    let lb_before = ["node1", "node2"].map(|n| cli(&lab, n, &["bpf", "lb", "list"]));
    let svc_before = ["node1", "node2"].map(|n| cli(&lab, n, &["service", "list"]));
    assert!(lb_before[0].contains(&format!("{ip}:80/TCP")), "{}", lb_before[0]);

    // At connect(): a shell in pod1-1 holding one connection.
    let script = format!(
        "exec 3<>/dev/tcp/{ip}/80 || exit 1; while read -r l; do echo \"$l\" >&3; x=; read -r -t 2 x <&3; echo \"$x\"; done"
    );
    let mut sock = LineClient::new(&lab, "pod1-1", &script);
    // Per packet: this test's socket, made in pod1-1's namespace.
    let mut pp = spawn_in_ns(&lab.netns_path("pod1-1"), move || {
        TcpStream::connect_timeout(&SocketAddr::from((ip, 80)), Duration::from_secs(2)).unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(pp.peer_addr().unwrap(), SocketAddr::from((ip, 80)));
    pp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut pp_lines = BufReader::new(pp.try_clone().unwrap());
    let mut pp_ask = |line: &str| {
        writeln!(pp, "{line}").unwrap();
        let mut got = String::new();
        let _ = pp_lines.read_line(&mut got);
        got.trim_end().to_string()
    };
    let s0 = sock.ask("hello");
    let p0 = pp_ask("hello");
    let (sb, pb) = (s0.split(' ').next().unwrap().to_string(), p0.split(' ').next().unwrap().to_string());
    assert!(addrs(&backends).contains(&sb) && s0.ends_with(" hello"), "{s0}");
    assert!(addrs(&backends).contains(&pb) && p0.ends_with(" hello"), "{p0}");

    // New connections from both nodes: a shell connecting once per line
    // (at connect()), and this test's sockets (per packet).
    let new_conn = format!(
        "while read -r l; do exec 3<>/dev/tcp/{ip}/80; echo \"$l\" >&3; x=; read -r -t 2 x <&3; exec 3<&-; echo \"$x\"; done"
    );
    let mut fresh = ["pod1-1", "pod2-1"].map(|pod| LineClient::new(&lab, pod, &new_conn));
    let pp_new = |lab: &TestLab, pod: &str| {
        let s = spawn_in_ns(&lab.netns_path(pod), move || {
            TcpStream::connect_timeout(&SocketAddr::from((ip, 80)), Duration::from_secs(2))
        })
        .join()
        .unwrap();
        let mut s = match s {
            Ok(s) => s,
            Err(e) => return format!("error: {e}"),
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        writeln!(s, "new").unwrap();
        let mut got = String::new();
        let _ = BufReader::new(s).read_line(&mut got);
        got.trim_end().to_string()
    };
    let served = |got: &str| backends.iter().any(|b| got == format!("{b} new"));
    for node in ["node1", "node2"] {
        weft_lab::lifecycle::kill_and_wait(lab.lab.node(node).unwrap().pid);
        assert_eq!(sock.ask("alone"), format!("{sb} alone"), "{node}'s agent dead: at connect()");
        assert_eq!(pp_ask("alone"), format!("{pb} alone"), "{node}'s agent dead: per packet");
        lab.restart_agent_env(node, &[]);
        assert_eq!(sock.ask("back"), format!("{sb} back"), "{node}'s agent restarted: at connect()");
        assert_eq!(pp_ask("back"), format!("{pb} back"), "{node}'s agent restarted: per packet");
        for (i, pod) in ["pod1-1", "pod2-1"].into_iter().enumerate() {
            let got = fresh[i].ask("new");
            assert!(served(&got), "{node}'s agent restarted: a new connection from {pod}: {got}");
            let got = pp_new(&lab, pod);
            assert!(served(&got), "{node}'s agent restarted: a new per-packet connection from {pod}: {got}");
        }
    }
    for (i, node) in ["node1", "node2"].into_iter().enumerate() {
        lab.eventually(Duration::from_secs(5), &format!("{node}: the same services"), || {
            cli(&lab, node, &["service", "list"]) == svc_before[i]
        });
        assert_eq!(cli(&lab, node, &["bpf", "lb", "list"]), lb_before[i], "{node}: the same frontends");
    }
}

/// A UDP socket that socket LB connected to a backend (a client in the
/// node's cgroup: `connect()` picked the backend): when that backend
/// leaves the service, the agent ends the socket (sock_diag destroy) within
/// a second, and the client's new socket reaches the backend that stays.
/// Without that, the connected socket would keep talking to the departed
/// pod, which still answers.
#[test]
fn a_udp_socket_connected_to_a_departed_backend_is_ended_and_the_client_reconnects() {
    let lab = TestLab::up("svcudp", 2, 2);
    let (ua, ub) = (serve_udp(&lab, "pod1-2"), serve_udp(&lab, "pod2-2"));
    let ports = "[{port: 5353, protocol: UDP}]";
    let spec = "  ports: [{port: 53, targetPort: 5353, protocol: UDP}]\n";
    let dns = apply_service(&lab, &service_yaml("dns", spec, ports, &[(ua, "node1"), (ub, "node2")]));
    wait_backends(&lab, &format!("{dns}:53/UDP"), &[ua, ub]);
    let script = format!(
        "import socket, time\n\
         def conn():\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('{dns}', 53)); s.settimeout(0.2); return s\n\
         s = conn()\n\
         end = time.time() + 30\n\
         while time.time() < end:\n    \
             try:\n        s.send(b'who'); print('reply', s.recv(64).decode(), flush=True)\n    \
             except socket.timeout:\n        print('timeout', flush=True)\n    \
             except OSError as e:\n        print('ended', e.errno, flush=True); s = conn()\n    \
             time.sleep(0.05)\n"
    );
    let mut child = lab.spawn("pod1-1", &["python3", "-u", "-c", &script]);
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let next =
        || lines.recv_timeout(Duration::from_secs(5)).expect("the client prints a line at least every 0.3 s");
    let first = loop {
        let l = next();
        if let Some(r) = l.strip_prefix("reply ") {
            break r.to_string();
        }
    };
    let (gone, stays, stays_on) = if first == ua.to_string() { (ua, ub, "node2") } else { (ub, ua, "node1") };
    assert_eq!(first, gone.to_string());
    apply_yaml(&lab, "node1", &slice_yaml("dns", ports, &[(stays, stays_on)]));
    let t = Instant::now();
    let mut ended = false;
    loop {
        let l = next();
        ended |= l.starts_with("ended");
        if l == format!("reply {stays}") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "still {l} after {:?}", t.elapsed());
    }
    eprintln!("the connected socket was ended and its client reconnected after {:?}", t.elapsed());
    assert!(ended, "the client's socket was ended, not silently redirected");
    let _ = child.kill();
    let _ = child.wait();
}
