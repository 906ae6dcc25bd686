//! Socket load balancing on real sockets: the cgroup programs of bpf/sock.c
//! attached to a throwaway cgroup this test process joins, services written
//! with `ServiceMaps`, servers and clients in a throwaway network namespace.
//! Needs root, cgroup2 at /sys/fs/cgroup/unified (or WEFT_CGROUP2).

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};
use weft_datapath::{
    Datapath,
    lb::{Backend, Frontend, FrontendInfo, ServiceMaps},
    sock::SocketLb,
};

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Everything the test made, removed on drop (also when it panics).
struct Env {
    base: PathBuf,
    cgroup: PathBuf,
    root_cgroup: PathBuf,
    netns: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::write(self.root_cgroup.join("cgroup.procs"), std::process::id().to_string());
        SocketLb::detach(&self.base);
        let _ = std::fs::remove_dir(&self.cgroup);
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.netns]).status();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {}", args.join(" "));
}

/// Runs `f` on a thread inside the test's network namespace.
fn in_ns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this dedicated thread only.
        assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        f()
    })
}

#[test]
fn services_are_translated_at_connect_and_replies_read_as_the_service() {
    let pid = std::process::id();
    let root_cgroup = PathBuf::from(std::env::var("WEFT_CGROUP2").unwrap_or("/sys/fs/cgroup/unified".into()));
    let env = Env {
        base: PathBuf::from(format!("/sys/fs/bpf/weft-sock-{pid}")),
        cgroup: root_cgroup.join(format!("weft-sock-{pid}")),
        root_cgroup,
        netns: format!("weft-sock-{pid}"),
    };
    let mut dp = Datapath::load(&env.base).expect("load datapath (root?)");
    let mut lb = SocketLb::load(&env.base).unwrap();
    std::fs::create_dir_all(&env.cgroup).unwrap();
    lb.attach(&env.cgroup, &env.base).unwrap();
    assert!(SocketLb::is_attached(&env.base));
    ip(&["netns", "add", &env.netns]);
    ip(&["-n", &env.netns, "link", "set", "lo", "up"]);
    for a in ["10.200.0.2/32", "10.200.0.3/32"] {
        ip(&["-n", &env.netns, "addr", "add", a, "dev", "lo"]);
    }
    // This process joins the cgroup: its sockets meet the programs.
    std::fs::write(env.cgroup.join("cgroup.procs"), pid.to_string()).unwrap();

    // Backends: each answers with its own address.
    let b = [Ipv4Addr::new(10, 200, 0, 2), Ipv4Addr::new(10, 200, 0, 3)];
    let (ready, listening) = std::sync::mpsc::channel();
    for addr in b {
        let ready = ready.clone();
        in_ns(&env.netns, move || {
            let l = TcpListener::bind((addr, 8080)).unwrap();
            ready.send(()).unwrap();
            for c in l.incoming().flatten() {
                let mut c = c;
                let _ = c.write_all(addr.to_string().as_bytes());
            }
        });
    }
    {
        let ready = ready.clone();
        in_ns(&env.netns, move || {
            let s = UdpSocket::bind((b[0], 5353)).unwrap();
            ready.send(()).unwrap();
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        });
    }
    for _ in 0..3 {
        listening.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    let maps = ServiceMaps::open(&env.base).unwrap();
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let backends: Vec<Backend> = b
        .iter()
        .enumerate()
        .map(|(i, a)| Backend { id: i as u32 + 1, address: *a, port: 8080, proto: TCP })
        .collect();
    let info = FrontendInfo { rev_nat_id: 1, ..Default::default() };
    maps.put(Frontend { address: vip, port: 80, proto: TCP }, info, &backends).unwrap();
    let empty = Frontend { address: Ipv4Addr::new(10, 96, 0, 11), port: 80, proto: TCP };
    maps.put(empty, FrontendInfo { rev_nat_id: 2, ..Default::default() }, &[]).unwrap();
    let sticky = Frontend { address: Ipv4Addr::new(10, 96, 0, 13), port: 80, proto: TCP };
    let aff =
        FrontendInfo { rev_nat_id: 4, flags: weft_datapath::maps::LB_F_AFFINITY, affinity_timeout: 10800 };
    maps.put(sticky, aff, &backends).unwrap();
    let dns = Frontend { address: Ipv4Addr::new(10, 96, 0, 12), port: 53, proto: UDP };
    let udp_backend = Backend { id: 3, address: b[0], port: 5353, proto: UDP };
    maps.put(dns, FrontendInfo { rev_nat_id: 3, ..Default::default() }, &[udp_backend]).unwrap();
    // A NodePort, programmed (as the agent does) under this node's address
    // only; another node's address on its port reaches it too.
    let (node, other_node) = (Ipv4Addr::new(198, 18, 0, 11), Ipv4Addr::new(198, 18, 0, 12));
    let mut c = dp.config().unwrap();
    c.node_ip4 = weft_datapath::maps::ip_to_be(node);
    (c.nodeport_min, c.nodeport_max) = (30000, 32767);
    dp.set_config(c).unwrap();
    let as_node = weft_datapath::maps::IpcacheInfo {
        sec_identity: 6,
        tunnel_endpoint: weft_datapath::maps::ip_to_be(other_node),
        flags: weft_datapath::maps::IPCACHE_F_NODE,
        pad: 0,
    };
    dp.put_ipcache(other_node, 32, as_node).unwrap();
    let np = Frontend { address: node, port: 30080, proto: TCP };
    let np_info =
        FrontendInfo { rev_nat_id: 5, flags: weft_datapath::maps::LB_F_NODEPORT, affinity_timeout: 0 };
    maps.put(np, np_info, &backends[1..]).unwrap();

    let results = in_ns(&env.netns, move || {
        // TCP to the ClusterIP: some backend answers, the socket's peer
        // reads as the service.
        let mut seen = std::collections::BTreeSet::new();
        let mut peers = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::from((vip, 80)), Duration::from_secs(1)).unwrap();
            peers.insert(s.peer_addr().unwrap());
            let mut who = String::new();
            s.read_to_string(&mut who).unwrap();
            seen.insert(who);
        }
        // Session affinity: one backend for every connection of this client.
        let mut sticky_seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::from(([10, 96, 0, 13], 80)), Duration::from_secs(1))
                    .unwrap();
            let mut who = String::new();
            s.read_to_string(&mut who).unwrap();
            sticky_seen.insert(who);
        }
        assert_eq!(sticky_seen.len(), 1, "affinity: {sticky_seen:?}");
        // No usable backend: refused at once, not a timeout.
        let t = Instant::now();
        let refused =
            TcpStream::connect_timeout(&SocketAddr::from(([10, 96, 0, 11], 80)), Duration::from_secs(2));
        let refused_after = t.elapsed();
        // UDP: sent to the service, answered by the backend, read as the
        // service.
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        u.send_to(b"q", SocketAddr::from(([10, 96, 0, 12], 53))).unwrap();
        let mut buf = [0u8; 8];
        let (_, from) = u.recv_from(&mut buf).unwrap();
        // Not a service: untouched.
        let mut direct = TcpStream::connect((b[1], 8080)).unwrap();
        let mut who = String::new();
        direct.read_to_string(&mut who).unwrap();
        // Another node's address on a NodePort: its backend, read as that node.
        let mut np =
            TcpStream::connect_timeout(&SocketAddr::from((other_node, 30080)), Duration::from_secs(1))
                .expect("another node's NodePort is served");
        let mut np_who = String::new();
        np.read_to_string(&mut np_who).unwrap();
        let np_seen = (np_who, np.peer_addr().unwrap());
        (seen, peers, refused.is_err(), refused_after, from, who, direct.peer_addr().unwrap(), np_seen)
    })
    .join()
    .unwrap();
    let (seen, peers, refused, refused_after, udp_from, direct_who, direct_peer, np_seen) = results;
    assert_eq!(
        np_seen,
        ("10.200.0.3".to_string(), SocketAddr::from((other_node, 30080))),
        "another node's address on a NodePort: the backend answers, the peer reads as that node"
    );
    let want: std::collections::BTreeSet<String> = b.iter().map(|a| a.to_string()).collect();
    assert_eq!(seen, want, "40 connections reach both backends");
    assert_eq!(
        peers.into_iter().collect::<Vec<_>>(),
        vec![SocketAddr::from((vip, 80))],
        "getpeername reads the service"
    );
    assert!(refused && refused_after < Duration::from_millis(200), "refused after {refused_after:?}");
    assert_eq!(udp_from, SocketAddr::from(([10, 96, 0, 12], 53)), "the UDP answer reads as from the service");
    assert_eq!((direct_who.as_str(), direct_peer), ("10.200.0.3", SocketAddr::from((b[1], 8080))));
    drop(env);
}
