//! Several nodes on etcd, VXLAN between them: pods talk across nodes, the
//! VNI carries the sender's identity, nodes come and go with their lease,
//! and etcd can restart under the running cluster.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    time::Duration,
};
use weft_e2e::{TestLab, spawn_in_ns};

const T: Duration = Duration::from_secs(10);

fn ping(lab: &TestLab, from: &str, to: &str) -> bool {
    lab.exec(from, &["ping", "-c", "1", "-W", "2", to]).status.success()
}

/// 1 MiB each way over TCP, written in 1400-byte chunks (full-size segments
/// at the pod MTU).
fn tcp_echo(lab: &TestLab, client: &str, server: &str) {
    let dst = lab.pod_ip(server);
    let listen = dst.clone();
    let srv = spawn_in_ns(&lab.netns_path(server), move || {
        let l = TcpListener::bind((listen.as_str(), 7100)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    std::thread::sleep(Duration::from_millis(200));
    let cli = spawn_in_ns(&lab.netns_path(client), move || {
        let mut s = TcpStream::connect((dst.as_str(), 7100)).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let data: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
        for chunk in data.chunks(1400) {
            s.write_all(chunk).unwrap();
        }
        let mut back = vec![0u8; 1 << 20];
        s.read_exact(&mut back).unwrap();
        back == data
    });
    assert!(cli.join().unwrap(), "TCP {client} -> {server}: the echoed data differs");
    srv.join().unwrap();
}

fn udp_echo(lab: &TestLab, client: &str, server: &str) {
    let dst = lab.pod_ip(server);
    let listen = dst.clone();
    let srv = spawn_in_ns(&lab.netns_path(server), move || {
        let s = UdpSocket::bind((listen.as_str(), 7200)).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut buf = [0u8; 2048];
        let (n, peer) = s.recv_from(&mut buf).unwrap();
        s.send_to(&buf[..n], peer).unwrap();
    });
    std::thread::sleep(Duration::from_millis(200));
    let cli = spawn_in_ns(&lab.netns_path(client), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let msg = vec![0x5a; 1400];
        s.send_to(&msg, (dst.as_str(), 7200)).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = s.recv_from(&mut buf).unwrap();
        buf[..n] == msg[..]
    });
    assert!(cli.join().unwrap(), "UDP {client} -> {server}");
    srv.join().unwrap();
}

/// Everything a mode must carry, and what it looks like on the wire.
fn pods_and_nodes_talk_across_nodes(mode: &str) {
    let lab = TestLab::up_with(mode, 3, 2, |o| o.mode = Some(mode.into()));
    lab.eventually(T, "every node knows every pod", || {
        lab.lab.nodes.iter().all(|n| lab.ipcache(&n.name).len() >= 6 + 3 + 2)
    });
    let mtu = match mode {
        "vxlan" => 1450,
        "ipip" => 1480,
        _ => 1500,
    };
    assert_eq!(lab.status("node1").pod_mtu, mtu, "pod MTU = underlay 1500 - the mode's overhead");
    assert_eq!(lab.status("node1").mode, mode);
    for (from, to) in [("pod1-1", "pod2-2"), ("pod2-1", "pod3-2"), ("pod3-2", "pod1-1")] {
        assert!(ping(&lab, from, &lab.pod_ip(to)), "ping {from} -> {to}");
    }
    tcp_echo(&lab, "pod1-1", "pod3-2");
    udp_echo(&lab, "pod2-1", "pod3-1");
    // A pod whose MTU is too large for the path: its DF packet is refused
    // with ICMP fragmentation-needed carrying the path MTU.
    lab.ok("pod3-1", &["ip", "link", "set", "eth0", "mtu", &(mtu + 100).to_string()]);
    let size = (mtu - 28 + 1).to_string();
    let out =
        lab.exec("pod3-1", &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", &size, &lab.pod_ip("pod1-2")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("Frag needed and DF set (mtu = {mtu})")), "{text}");
    let fits = (mtu - 28).to_string();
    assert!(
        lab.exec("pod3-1", &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", &fits, &lab.pod_ip("pod1-2")])
            .status
            .success()
    );
    // Node -> remote pod and pod -> remote node.
    assert!(ping(&lab, "node1", &lab.pod_ip("pod3-1")), "node1 -> pod3-1");
    assert!(ping(&lab, "pod3-1", "198.18.0.12"), "pod3-1 -> node2");

    let web = lab
        .endpoints("node1")
        .into_iter()
        .find(|e| e.labels.contains(&"k8s:app=web".into()))
        .unwrap()
        .identity;
    let client = lab
        .endpoints("node2")
        .into_iter()
        .find(|e| e.labels.contains(&"k8s:app=client".into()))
        .unwrap()
        .identity;
    assert_ne!(web, client);
    let (a, b) = (lab.pod_ip("pod1-1"), lab.pod_ip("pod2-2"));
    let filter: &[&str] = match mode {
        "vxlan" => &["udp", "port", "8472"],
        "ipip" => &["ip", "proto", "4"],
        _ => &["icmp"],
    };
    let mut args = vec!["-i", "eth0", "-c", "2"];
    args.extend_from_slice(filter);
    let dump = lab.tcpdump("node2", &args);
    assert!(ping(&lab, "pod1-1", &b));
    let out = dump.finish(T);
    match mode {
        // VXLAN on UDP 8472; the request carries the web pod's identity as
        // VNI, the reply the client pod's.
        "vxlan" => {
            assert!(out.contains("198.18.0.11.") && out.contains("> 198.18.0.12.8472"), "{out}");
            assert!(out.contains(&format!("instance {web}")), "request VNI = {web}: {out}");
            assert!(out.contains(&format!("instance {client}")), "reply VNI = {client}: {out}");
        }
        // Calico's IP-in-IP: outer header between the nodes, protocol 4.
        "ipip" => {
            assert!(
                out.contains(&format!("IP 198.18.0.11 > 198.18.0.12: IP {a} > {b}: ICMP echo request")),
                "{out}"
            );
            assert!(
                out.contains(&format!("IP 198.18.0.12 > 198.18.0.11: IP {b} > {a}: ICMP echo reply")),
                "{out}"
            );
        }
        // Native: the pods' own addresses on the wire.
        _ => {
            assert!(out.contains(&format!("IP {a} > {b}: ICMP echo request")), "{out}");
            assert!(out.contains(&format!("IP {b} > {a}: ICMP echo reply")), "{out}");
        }
    }

    // The sending node says where it sent the packet, as in seed 001.
    let mon = lab.monitor("node1", &["-v"]);
    assert!(ping(&lab, "pod1-1", &b));
    let expected = match mode {
        "native" => "Routing to node 198.18.0.12 from seclabel".to_string(),
        _ => "Encapsulating to node 3323068428 (0xc612000c) from seclabel".to_string(),
    };
    let ev = mon
        .wait_for(T, |v| v["message"].as_str().is_some_and(|m| m.starts_with(&expected)))
        .unwrap_or_else(|| panic!("no debug event {expected:?}: {:?}", mon.events()));
    assert!(ev["message"].as_str().unwrap().ends_with(&format!("seclabel {web}")));
    let point = if mode == "vxlan" { "to-overlay" } else { "to-network" };
    assert!(mon.wait_for(T, |v| v["observationPoint"] == point).is_some(), "{point} trace");
    let mon2 = lab.monitor("node2", &[]);
    assert!(ping(&lab, "pod1-1", &b));
    let point = if mode == "vxlan" { "from-overlay" } else { "from-network" };
    let ev = mon2
        .wait_for(T, |v| v["observationPoint"] == point)
        .unwrap_or_else(|| panic!("{point} trace on node2"));
    assert_eq!(ev["srcLabel"], web, "the receiver knows the sender's identity");
    // A remote host reaches a pod as the remote-node identity (6).
    let target = format!("-> {} ", lab.pod_ip("pod2-1"));
    assert!(ping(&lab, "node1", &lab.pod_ip("pod2-1")));
    let ev = mon2
        .wait_for(T, |v| {
            v["observationPoint"] == "to-endpoint" && v["summary"].as_str().unwrap().contains(&target)
        })
        .expect("to-endpoint for the node's ping");
    assert_eq!(ev["srcLabel"], 6, "{ev}");
}

#[test]
fn vxlan_pods_and_nodes_talk_across_nodes_with_identity_in_the_vni() {
    pods_and_nodes_talk_across_nodes("vxlan");
}

#[test]
fn ipip_pods_and_nodes_talk_across_nodes_as_calico_puts_it_on_the_wire() {
    pods_and_nodes_talk_across_nodes("ipip");
}

#[test]
fn native_pods_and_nodes_talk_across_nodes_unencapsulated() {
    pods_and_nodes_talk_across_nodes("native");
}

#[test]
fn a_node_that_stops_renewing_is_removed_and_comes_back() {
    let mut lab = TestLab::up("lease", 3, 1);
    let node3_ip = "198.18.0.13/32";
    lab.eventually(T, "node1 knows node3", || lab.ipcache("node1").iter().any(|e| e.prefix == node3_ip));
    assert!(ping(&lab, "pod1-1", &lab.pod_ip("pod3-1")));
    weft_lab::lifecycle::kill_and_wait(lab.lab.node("node3").unwrap().pid);
    // Lease 5 s + one sync: gone from every other node's datapath.
    lab.eventually(Duration::from_secs(12), "node3 gone from node1 and node2", || {
        ["node1", "node2"].iter().all(|n| !lab.ipcache(n).iter().any(|e| e.prefix == node3_ip))
    });
    let nodes: Vec<String> = lab
        .client("node1")
        .call_as::<Vec<weft_api::NodeView>>(&weft_api::Request::NodeList)
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(nodes, ["node1", "node2"]);
    let pid = weft_lab::lifecycle::restart_agent(&lab.lab, "node3").unwrap();
    lab.lab.nodes[2].pid = pid;
    lab.eventually(T, "node3 re-admitted", || lab.ipcache("node1").iter().any(|e| e.prefix == node3_ip));
    assert!(ping(&lab, "pod1-1", &lab.pod_ip("pod3-1")), "traffic flows again");
    assert_eq!(
        lab.status("node3").pod_cidr,
        lab.lab.node("node3").unwrap().pod_cidr,
        "same CIDR after restart"
    );
}

#[test]
fn etcd_restart_under_a_running_lab_loses_nothing() {
    let mut lab = TestLab::up("etcdrs", 2, 1);
    // Converged: node2 knows node1's pod (its own pod and addresses are
    // written before the agent answers).
    let remote = format!("{}/32", lab.pod_ip("pod1-1"));
    lab.eventually(T, "the ipcache has converged", || {
        lab.ipcache("node2").iter().any(|e| e.prefix == remote)
    });
    let before = (
        lab.client("node1").call_as::<Vec<weft_api::NodeView>>(&weft_api::Request::NodeList).unwrap(),
        lab.client("node1").call_as::<Vec<weft_api::IdentityView>>(&weft_api::Request::IdentityList).unwrap(),
        lab.ipcache("node2"),
    );
    let pid = weft_lab::lifecycle::restart_etcd(&lab.lab).unwrap();
    lab.lab.etcd_pid = Some(pid);
    let after = (
        lab.client("node1").call_as::<Vec<weft_api::NodeView>>(&weft_api::Request::NodeList).unwrap(),
        lab.client("node1").call_as::<Vec<weft_api::IdentityView>>(&weft_api::Request::IdentityList).unwrap(),
        lab.ipcache("node2"),
    );
    assert_eq!(before, after);
    assert!(ping(&lab, "pod1-1", &lab.pod_ip("pod2-1")));
    // A new pod after the restart is known cluster-wide.
    let ns = weft_e2e::TempNetns::new(&format!("weft-{}-late", lab.name()));
    let out = lab.cni("node2", "ADD", "late", &ns.path(), "1.0.0");
    assert!(out.success, "{} {}", out.stdout, out.stderr);
    let ip = out.json().unwrap()["ips"][0]["address"].as_str().unwrap().to_string();
    lab.eventually(T, "node1 learns the new pod", || lab.ipcache("node1").iter().any(|e| e.prefix == ip));
}

#[test]
fn link_local_gateway_style_as_calico() {
    let lab = TestLab::up_with("llgw", 2, 2, |o| o.gateway = Some("link-local".into()));
    let routes = lab.ok("pod1-1", &["ip", "-4", "route", "show"]);
    assert!(routes.contains("default via 169.254.1.1 dev eth0"), "{routes}");
    assert!(routes.contains("169.254.1.1 dev eth0 scope link"), "{routes}");
    assert!(ping(&lab, "pod1-1", "169.254.1.1"), "the gateway answers");
    for pod in ["pod1-1", "pod1-2"] {
        lab.ok(pod, &["ping", "-c", "1", "-W", "2", "169.254.1.1"]);
        let neigh = lab.ok(pod, &["ip", "neigh", "show", "169.254.1.1"]);
        assert!(neigh.contains("lladdr ee:ee:ee:ee:ee:ee"), "{pod}: {neigh}");
    }
    lab.eventually(T, "node1 knows node2's pods", || {
        lab.ipcache("node1").iter().any(|e| e.prefix == format!("{}/32", lab.pod_ip("pod2-2")))
    });
    assert!(ping(&lab, "pod1-1", &lab.pod_ip("pod1-2")), "same node");
    assert!(ping(&lab, "pod1-1", &lab.pod_ip("pod2-2")), "across nodes");
    assert!(ping(&lab, "node2", &lab.pod_ip("pod1-1")), "remote node -> pod");
}
