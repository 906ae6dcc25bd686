//! End to end: network policy on real traffic. A one-node lab with pods
//! labelled app=web (pod1-1, pod1-3) and app=client (pod1-2), TCP servers
//! on ports 80 and 81 in every pod, connections with short timeouts; then
//! policies applied through `weft policy apply` and their effect on new
//! and established connections, and across an agent restart.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};
use weft_e2e::{TestLab, spawn_in_ns};

const PORTS: [u16; 2] = [80, 81];

/// Echo servers on every port in every pod (threads in the pods' netns);
/// returns once all of them listen.
fn serve(lab: &TestLab, pods: &[&str]) {
    let (bound, listening) = std::sync::mpsc::channel();
    let mut n = 0;
    for pod in pods {
        for port in PORTS {
            let ip = lab.pod_ip(pod);
            let bound = bound.clone();
            n += 1;
            spawn_in_ns(&lab.netns_path(pod), move || {
                let l = TcpListener::bind((ip.as_str(), port)).unwrap();
                bound.send(()).unwrap();
                for s in l.incoming() {
                    let Ok(mut s) = s else { continue };
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 256];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        }
    }
    for _ in 0..n {
        listening.recv_timeout(Duration::from_secs(5)).expect("a server did not start");
    }
}

/// A UDP echo server in a pod, listening when this returns.
fn udp_echo(lab: &TestLab, pod: &str, port: u16) {
    let ip = lab.pod_ip(pod);
    let (bound, listening) = std::sync::mpsc::channel();
    spawn_in_ns(&lab.netns_path(pod), move || {
        let s = std::net::UdpSocket::bind((ip.as_str(), port)).unwrap();
        bound.send(()).unwrap();
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    listening.recv_timeout(Duration::from_secs(5)).unwrap();
}

/// Whether a datagram of `size` bytes comes back whole.
fn udp_roundtrip(lab: &TestLab, from: &str, to: &str, port: u16, size: usize) -> bool {
    let dst: SocketAddr = format!("{}:{port}", lab.pod_ip(to)).parse().unwrap();
    spawn_in_ns(&lab.netns_path(from), move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut buf = vec![0u8; 65536];
        s.send_to(&data, dst).is_ok() && s.recv_from(&mut buf).is_ok_and(|(n, _)| buf[..n] == data[..])
    })
    .join()
    .unwrap()
}

/// Whether a TCP connection from `from` to `to:port` opens and echoes
/// within 700 ms.
fn connects(lab: &TestLab, from: &str, to: &str, port: u16) -> bool {
    let dst: SocketAddr = format!("{}:{port}", lab.pod_ip(to)).parse().unwrap();
    spawn_in_ns(&lab.netns_path(from), move || {
        let Ok(mut s) = TcpStream::connect_timeout(&dst, Duration::from_millis(700)) else { return false };
        s.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
        let mut b = [0u8; 1];
        s.write_all(b"x").is_ok() && s.read_exact(&mut b).is_ok()
    })
    .join()
    .unwrap()
}

/// Waits (up to 3 s) until the connection result is `want`; returns how
/// long the change took to show.
fn becomes(lab: &TestLab, from: &str, to: &str, port: u16, want: bool) -> Duration {
    let start = Instant::now();
    loop {
        if connects(lab, from, to, port) == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(3), "{from} -> {to}:{port} never became {want}");
    }
}

fn apply(lab: &TestLab, yaml: &str) {
    let path = std::env::temp_dir().join(format!("weft-policy-{}-{}.yaml", lab.name(), std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    let out = lab.weft("node1", &["policy", "apply", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

const DENY_WEB: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-deny, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
";

const ALLOW_CLIENT_80: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-allow-client, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 80}]
";

/// A long-lived connection that echoes a byte on demand.
struct Stream {
    tx: std::sync::mpsc::Sender<()>,
    rx: std::sync::mpsc::Receiver<bool>,
}

impl Stream {
    fn open(lab: &TestLab, from: &str, to: &str, port: u16) -> Stream {
        let dst: SocketAddr = format!("{}:{port}", lab.pod_ip(to)).parse().unwrap();
        let (tx, go) = std::sync::mpsc::channel::<()>();
        let (done, rx) = std::sync::mpsc::channel::<bool>();
        spawn_in_ns(&lab.netns_path(from), move || {
            let mut s = match TcpStream::connect_timeout(&dst, Duration::from_secs(1)) {
                Ok(s) => s,
                Err(_) => return done.send(false).unwrap_or(()),
            };
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            done.send(true).unwrap();
            while go.recv().is_ok() {
                let mut b = [0u8; 1];
                let ok = s.write_all(b"y").is_ok() && s.read_exact(&mut b).is_ok();
                if done.send(ok).is_err() {
                    return;
                }
            }
        });
        // Opened before this returns: what follows sees the flow.
        assert!(
            rx.recv_timeout(Duration::from_secs(3)).unwrap_or(false),
            "{from} -> {to}:{port} did not connect"
        );
        Stream { tx, rx }
    }

    fn echoes(&self) -> bool {
        self.tx.send(()).unwrap();
        self.rx.recv_timeout(Duration::from_secs(3)).unwrap_or(false)
    }
}

#[test]
fn policies_decide_new_connections_and_never_cut_established_ones() {
    let lab = TestLab::up("pol", 1, 3);
    serve(&lab, &["pod1-1", "pod1-2", "pod1-3"]);
    assert!(connects(&lab, "pod1-2", "pod1-1", 80), "no policy: everything connects");
    let early = Stream::open(&lab, "pod1-2", "pod1-1", 81);
    assert!(early.echoes());

    // Default deny for app=web: the client loses web, web still reaches
    // the client (not selected), and the connection opened before goes on.
    apply(&lab, DENY_WEB);
    let took = becomes(&lab, "pod1-2", "pod1-1", 80, false);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(!connects(&lab, "pod1-3", "pod1-1", 80), "web to web: denied too");
    assert!(connects(&lab, "pod1-1", "pod1-2", 80), "the client is not isolated");
    // The node itself (kubelet probes) is always let in, as in Cilium.
    lab.ok("node1", &["ping", "-c", "1", "-W", "2", &lab.pod_ip("pod1-1")]);
    assert!(early.echoes(), "an established connection is not cut by a new policy");

    // A new pod the policy selects is protected from its first packet: the
    // ADD answers only once its policy is programmed. (No server runs in
    // it: a SYN let through is refused at once, a denied one times out.)
    let labels = [("app".to_string(), "web".to_string())].into_iter().collect();
    let _: weft_api::PodLabelsResult = lab
        .client("node1")
        .call_as(&weft_api::Request::PodLabels(weft_api::PodLabels {
            namespace: "default".into(),
            name: "extra".into(),
            labels,
            remove: vec![],
        }))
        .unwrap();
    let ns = weft_e2e::TempNetns::new(&format!("weft-{}-new", lab.name()));
    let out = lab.cni("node1", "ADD", "newweb", &ns.path(), "1.0.0");
    assert!(out.success, "{} {}", out.stdout, out.stderr);
    let ip =
        out.json().unwrap()["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    let dst: SocketAddr = format!("{ip}:80").parse().unwrap();
    let outcome = spawn_in_ns(&lab.netns_path("pod1-2"), move || {
        TcpStream::connect_timeout(&dst, Duration::from_millis(700)).err().map(|e| e.kind())
    })
    .join()
    .unwrap();
    assert_eq!(outcome, Some(std::io::ErrorKind::TimedOut), "the new web pod must be isolated at once");

    // Allow app=client on port 80 only.
    apply(&lab, ALLOW_CLIENT_80);
    becomes(&lab, "pod1-2", "pod1-1", 80, true);
    assert!(!connects(&lab, "pod1-2", "pod1-1", 81), "port 81 is still denied");
    assert!(!connects(&lab, "pod1-3", "pod1-1", 80), "web is not a client");

    // A datagram larger than the MTU travels in fragments: the later ones
    // carry no ports, yet belong to the allowed flow (and its reply).
    udp_echo(&lab, "pod1-1", 9000);
    udp_echo(&lab, "pod1-1", 9001);
    apply(
        &lab,
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-udp, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{protocol: UDP, port: 9000}]
",
    );
    let start = Instant::now();
    while !udp_roundtrip(&lab, "pod1-2", "pod1-1", 9000, 3000) {
        assert!(start.elapsed() < Duration::from_secs(3), "a 3000-byte datagram to an allowed port");
    }
    assert!(!udp_roundtrip(&lab, "pod1-2", "pod1-1", 9001, 3000), "nor to a port that is not allowed");

    // What an operator sees.
    let web = lab.endpoint_id("pod1-1");
    let eps = lab.endpoints("node1");
    let e = eps.iter().find(|e| e.id == web).unwrap();
    assert_eq!((e.policy_ingress.as_str(), e.policy_egress.as_str()), ("Enabled", "Disabled"));
    let out = lab.weft("node1", &["bpf", "policy", "get", &web.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ingress enforced, egress not enforced"), "{text}");
    assert!(text.contains("web-allow-client ingress[0]"), "{text}");
    let list = String::from_utf8_lossy(&lab.weft("node1", &["policy", "list"]).stdout).to_string();
    assert!(list.contains("web-deny") && list.contains("web-allow-client"), "{list}");

    // Every decision is visible: a verdict per new flow, a drop with its
    // reason and the header line that decided.
    let mon = lab.monitor("node1", &[]);
    assert!(connects(&lab, "pod1-2", "pod1-1", 80));
    assert!(!connects(&lab, "pod1-2", "pod1-1", 81));
    let t = Duration::from_secs(3);
    let allow = mon
        .wait_for(t, |v| v["type"] == "policy-verdict" && v["policy"]["action"] == "allow")
        .expect("an allow verdict");
    assert_eq!(
        (allow["source"].as_u64(), allow["policy"]["direction"].as_str()),
        (Some(web as u64), Some("ingress"))
    );
    assert_eq!(allow["policy"]["match"], "L3-L4");
    let dropped = mon.wait_for(t, |v| v["type"] == "drop").expect("a drop");
    assert_eq!(
        (dropped["reasonText"].as_str(), dropped["file"].as_str()),
        (Some("Policy denied"), Some("policy.h"))
    );
    assert!(mon.wait_for(t, |v| v["type"] == "policy-verdict" && v["policy"]["action"] == "deny").is_some());
    drop(mon);

    // Which identities each selector matches.
    let sel = String::from_utf8_lossy(&lab.weft("node1", &["policy", "selectors"]).stdout).to_string();
    let client_id =
        lab.endpoints("node1").iter().find(|e| e.id == lab.endpoint_id("pod1-2")).unwrap().identity;
    let line =
        sel.lines().find(|l| l.contains("web-allow-client: spec.ingress[0].from[0]")).unwrap_or_default();
    assert!(line.ends_with(&client_id.to_string()), "{sel}");

    // A label change moves a pod in or out of a selector within a second.
    let out = lab.weft("node1", &["pod", "label", "default/pod1-3", "app=client"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let took = becomes(&lab, "pod1-3", "pod1-1", 80, true);
    assert!(took < Duration::from_secs(2), "relabel took {took:?}");
    // And so does a namespace label (namespaceSelector).
    apply(
        &lab,
        "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-blue, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: blue}}}]
    ports: [{port: 81}]
",
    );
    assert!(!connects(&lab, "pod1-2", "pod1-1", 81));
    let out = lab.weft("node1", &["namespace", "label", "default", "team=blue"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let took = becomes(&lab, "pod1-2", "pod1-1", 81, true);
    assert!(took < Duration::from_secs(2), "namespace relabel took {took:?}");

    // Calico's ordered model: a global Deny at order 10 beats the
    // Kubernetes allow (order 1000 in the default tier).
    apply(
        &lab,
        "
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: no-clients}
spec:
  order: 10
  selector: app == 'web'
  ingress:
  - action: Deny
    source: {selector: app == 'client'}
",
    );
    becomes(&lab, "pod1-2", "pod1-1", 80, false);
    assert!(!connects(&lab, "pod1-3", "pod1-1", 80), "pod1-3 is a client now");
    let out = lab.weft("node1", &["policy", "delete", "no-clients"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    becomes(&lab, "pod1-2", "pod1-1", 80, true);

    // A bad file changes nothing and says why.
    let path = std::env::temp_dir().join(format!("weft-bad-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: ok-one}\nspec: {podSelector: {}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad}\nspec: {podSelector: {}, ingress: [{ports: [{port: 70000}]}]}\n",
    )
    .unwrap();
    let out = lab.weft("node1", &["policy", "apply", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("document 2") && err.contains("spec.ingress[0].ports[0].port"), "{err}");
    let list = String::from_utf8_lossy(&lab.weft("node1", &["policy", "list"]).stdout).to_string();
    assert!(!list.contains("ok-one"), "nothing half-applied: {list}");
}

#[test]
fn an_endpoint_whose_policy_does_not_fit_keeps_its_last_good_one_and_says_so() {
    let lab = TestLab::up_with("polfit", 1, 2, |o| {
        o.agent_env.push(("WEFT_POLICY_MAX_ENTRIES".into(), "2".into()));
    });
    serve(&lab, &["pod1-1", "pod1-2"]);
    apply(&lab, DENY_WEB);
    becomes(&lab, "pod1-2", "pod1-1", 80, false);
    // The deny takes 2 entries (host allowed, the rest denied); the allow
    // needs a third: refused for this endpoint.
    apply(&lab, ALLOW_CLIENT_80);
    let web = lab.endpoint_id("pod1-1");
    lab.eventually(Duration::from_secs(3), "the endpoint reports the failure", || {
        let eps = lab.endpoints("node1");
        let e = eps.iter().find(|e| e.id == web).unwrap();
        e.policy_ingress.starts_with("Enabled (last good;") && e.policy_ingress.contains("its budget is 2")
    });
    assert!(!connects(&lab, "pod1-2", "pod1-1", 80), "the last good policy (deny) still holds");
    // Back within budget: the failure clears.
    let out = lab.weft("node1", &["policy", "delete", "web-allow-client"]);
    assert!(out.status.success());
    lab.eventually(Duration::from_secs(3), "the failure clears", || {
        lab.endpoints("node1").iter().find(|e| e.id == web).unwrap().policy_ingress == "Enabled"
    });
}

#[test]
fn an_established_stream_across_policy_survives_sigkill_and_restart_of_the_agent() {
    let mut lab = TestLab::up("polkill", 1, 2);
    serve(&lab, &["pod1-1", "pod1-2"]);
    apply(&lab, DENY_WEB);
    apply(&lab, ALLOW_CLIENT_80);
    becomes(&lab, "pod1-2", "pod1-1", 80, true);
    let stream = Stream::open(&lab, "pod1-2", "pod1-1", 80);
    assert!(stream.echoes());

    // Kill the agent mid-stream: the datapath, its conntrack and policy
    // maps stay; every echo in the meantime works.
    let pid = lab.lab.node("node1").unwrap().pid;
    weft_lab::lifecycle::kill_and_wait(pid);
    for _ in 0..5 {
        assert!(stream.echoes(), "the stream broke while the agent was dead");
    }
    assert!(!connects(&lab, "pod1-2", "pod1-1", 81), "policy still holds without an agent");
    let pid = weft_lab::lifecycle::restart_agent(&lab.lab, "node1").unwrap();
    lab.lab.nodes[0].pid = pid;
    lab.eventually(Duration::from_secs(10), "the agent answers", || {
        lab.client("node1").call(&weft_api::Request::AgentStatus).is_ok()
    });
    for _ in 0..5 {
        assert!(stream.echoes(), "the stream broke across the restart");
    }
    assert!(connects(&lab, "pod1-2", "pod1-1", 80), "allowed after the restart");
    assert!(!connects(&lab, "pod1-2", "pod1-1", 81), "denied after the restart");
    let ct = String::from_utf8_lossy(&lab.weft("node1", &["bpf", "ct", "list"]).stdout).to_string();
    assert!(ct.contains(&format!("{}:80", lab.pod_ip("pod1-1"))) && ct.contains("established"), "{ct}");
}

#[test]
fn a_full_conntrack_table_refuses_new_flows_keeps_established_ones_and_status_warns() {
    // 16 TCP entries, 14 admitted: seven same-node connections (each is
    // tracked at both ends).
    let lab = TestLab::up_with("ctfull", 1, 2, |o| {
        o.agent_env.push(("WEFT_CT_TCP_MAX".into(), "16".into()));
    });
    serve(&lab, &["pod1-1"]);
    let streams: Vec<Stream> = (0..7).map(|_| Stream::open(&lab, "pod1-2", "pod1-1", 80)).collect();
    assert!(!connects(&lab, "pod1-2", "pod1-1", 80), "the eighth connection is refused");
    for s in &streams {
        assert!(s.echoes(), "established connections keep working");
    }
    let status = lab.status("node1");
    assert!(
        status.warnings.iter().any(|w| w.contains("conntrack is full") && w.contains("new flows refused")),
        "{:?}",
        status.warnings
    );
    assert!(
        status.drops.iter().any(|(r, n)| r.starts_with("CT: Map insertion failed") && *n > 0),
        "{:?}",
        status.drops
    );
    let text = String::from_utf8_lossy(&lab.weft("node1", &["status"]).stdout).to_string();
    assert!(text.contains("Warning:       conntrack is full"), "{text}");
}
