//! End to end on a one-node lab: pods talk to each other and to the node,
//! ARP is answered by BPF, spoofing is dropped and visible in `weft monitor`.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::Duration,
};
use weft_e2e::{TestLab, checks, spawn_in_ns};

const T: Duration = Duration::from_secs(5);

#[test]
fn pod_to_pod_ping_and_tcp_on_one_node() {
    let lab = TestLab::up("pods", 1, 2);
    let b = lab.pod_ip("pod1-2");
    let out = lab.ok("pod1-1", &["ping", "-c", "3", "-i", "0.2", "-W", "2", &b]);
    assert!(out.contains("3 received"), "{out}");

    // TCP: a listener in pod1-2, a client in pod1-1, 1 MiB each way.
    let listen_ip = b.clone();
    let server = spawn_in_ns(&lab.netns_path("pod1-2"), move || {
        let l = TcpListener::bind((listen_ip.as_str(), 7000)).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        peer.ip().to_string()
    });
    std::thread::sleep(Duration::from_millis(200));
    let dst = b.clone();
    let client = spawn_in_ns(&lab.netns_path("pod1-1"), move || {
        let mut s = TcpStream::connect((dst.as_str(), 7000)).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        s.write_all(&data).unwrap();
        let mut back = vec![0u8; 1 << 20];
        s.read_exact(&mut back).unwrap();
        back == data
    });
    assert!(client.join().unwrap(), "the echoed megabyte differs");
    assert_eq!(server.join().unwrap(), lab.pod_ip("pod1-1"), "the server sees the pod's own address");
}

#[test]
fn node_reaches_pods_and_pods_reach_node() {
    let lab = TestLab::up("host", 1, 2);
    let a = lab.pod_ip("pod1-1");
    checks::node_and_pod_reach_each_other(&lab, "node1", "pod1-1");
    checks::ping(&lab, "node1", &lab.pod_ip("pod1-2"), 1);

    // The from-host path is taken (observation point from-host, identity 1).
    let mon = lab.monitor("node1", &[]);
    lab.ok("node1", &["ping", "-c", "1", "-W", "2", &a]);
    let ev = mon.wait_for(T, |v| v["observationPoint"] == "from-host").expect("a from-host trace");
    assert_eq!(ev["srcLabel"], 1);
    assert!(mon.wait_for(T, |v| v["observationPoint"] == "to-endpoint" && v["srcLabel"] == 1).is_some());
}

#[test]
fn pod_routes_and_arp_table_hold_the_gateway_with_its_own_lxc_mac() {
    let lab = TestLab::up("arp", 1, 2);
    let gw = lab.status("node1").gateway.to_string();
    let routes = lab.ok("pod1-1", &["ip", "-4", "route", "show"]);
    let routes: Vec<&str> = routes.lines().map(str::trim).collect();
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert!(routes.contains(&format!("default via {gw} dev eth0").as_str()), "{routes:?}");
    assert!(routes.contains(&format!("{gw} dev eth0 scope link").as_str()), "{routes:?}");
    let addr = lab.ok("pod1-1", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("{}/32", lab.pod_ip("pod1-1"))), "{addr}");

    let bpf: Vec<weft_api::BpfEndpointView> =
        lab.client("node1").call_as(&weft_api::Request::BpfEndpointList).unwrap();
    let mut gw_macs = Vec::new();
    for pod in ["pod1-1", "pod1-2"] {
        lab.ok(pod, &["ping", "-c", "1", "-W", "2", &gw]);
        let neigh = lab.ok(pod, &["ip", "neigh", "show", &gw]);
        let ip = lab.pod_ip(pod);
        let lxc_mac = &bpf.iter().find(|e| e.ip.to_string() == ip).unwrap().node_mac;
        assert!(neigh.contains(&format!("lladdr {lxc_mac}")), "{pod}: {neigh} (expected {lxc_mac})");
        gw_macs.push(lxc_mac.clone());
    }
    assert_ne!(gw_macs[0], gw_macs[1], "two pods see two different MACs for one gateway");
}

#[test]
fn spoofed_source_is_dropped_and_shown_by_monitor() {
    let lab = TestLab::up("spoof", 1, 2);
    checks::spoofed_source_dropped(&lab, "node1", "pod1-1", "pod1-2");
}

#[test]
fn monitor_related_to_shows_from_and_to_endpoint_for_a_ping() {
    let lab = TestLab::up("mon", 1, 2);
    let ep = lab.endpoint_id("pod1-2");
    let mon = lab.monitor("node1", &["--related-to", &ep.to_string()]);
    lab.ok("pod1-1", &["ping", "-c", "1", "-W", "2", &lab.pod_ip("pod1-2")]);
    let to = mon
        .wait_for(T, |v| v["observationPoint"] == "to-endpoint" && v["dstID"] == ep)
        .expect("-> endpoint for the request");
    assert!(to["summary"].as_str().unwrap().ends_with("EchoRequest"), "{to}");
    let from = mon
        .wait_for(T, |v| {
            v["observationPoint"] == "from-endpoint"
                && v["source"] == ep
                && v["summary"].as_str().unwrap().ends_with("EchoReply")
        })
        .expect("<- endpoint for the reply");
    assert_eq!(
        from["srcLabel"], to["dstLabel"],
        "the reply leaves with the identity the request arrived for"
    );
    // Nothing unrelated slipped through.
    for v in mon.events() {
        assert!(v["source"] == ep || v["dstID"] == ep, "unrelated event {v}");
    }
    // The text form reads like cilium monitor.
    let out = lab.weft("node1", &["endpoint", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("k8s:app=client") && text.contains("ready"), "{text}");
}

#[test]
fn pcap_file_is_readable_by_tcpdump() {
    let lab = TestLab::up("pcap", 1, 2);
    let pcap = std::env::temp_dir().join(format!("weft-e2e-{}.pcap", std::process::id()));
    let mut child = std::process::Command::new(weft_e2e::weft_bin())
        .env("WEFT_SOCKET", &lab.lab.node("node1").unwrap().socket)
        .args(["monitor", "--count", "4", "--pcap"])
        .arg(&pcap)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while lab.status("node1").monitors == 0 && start.elapsed() < T {
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.ok("pod1-1", &["ping", "-c", "2", "-i", "0.2", "-W", "2", &lab.pod_ip("pod1-2")]);
    assert!(child.wait().unwrap().success());
    let out = std::process::Command::new("tcpdump").args(["-nr"]).arg(&pcap).output().unwrap();
    let _ = std::fs::remove_file(&pcap);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ICMP echo request"), "{text}");
    assert_eq!(text.lines().count(), 4, "{text}");
}
