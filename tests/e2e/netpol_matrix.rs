//! The policy truth table on real traffic: namespaces x, y, z with pods a,
//! b, c each (pod labels pod=a.., namespace labels ns=x..), spread over two
//! nodes, every pod serving TCP 80, TCP 81 and UDP 80 (named serve-80-tcp,
//! serve-81-tcp, serve-80-udp). For each policy shape, every pod probes
//! every pod on every port (in parallel, short timeouts) and the result
//! must equal the shape's truth table, written here independently of the
//! compiler. Shapes follow the upstream Kubernetes netpol e2e suite and
//! cyclonus, plus Calico's ordered model. Run in VXLAN and in IP-in-IP.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};
use weft_e2e::{TestLab, spawn_in_ns};

const NS: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Port {
    Tcp80,
    Tcp81,
    Udp80,
}

const PORTS: [Port; 3] = [Port::Tcp80, Port::Tcp81, Port::Udp80];

/// A pod: (namespace, name).
type P = (&'static str, &'static str);

fn all_pods() -> Vec<P> {
    NS.iter().flat_map(|n| PODS.iter().map(move |p| (*n, *p))).collect()
}

fn lab_file() -> String {
    let mut t = String::from("nodes: 2\nnamespaces:\n");
    for n in NS {
        t += &format!("  {n}: {{labels: {{ns: {n}}}}}\n");
    }
    t += "pods:\n";
    for (n, p) in all_pods() {
        let node = if p == "b" { 2 } else { 1 };
        t += &format!(
            "- {{name: {p}, namespace: {n}, node: {node}, labels: {{pod: {p}}}, serve: [tcp/80, tcp/81, udp/80], \
             ports: [{{name: serve-80-tcp, port: 80, protocol: TCP}}, {{name: serve-81-tcp, port: 81, protocol: TCP}}, \
             {{name: serve-80-udp, port: 80, protocol: UDP}}]}}\n"
        );
    }
    t
}

fn lab_pod(p: P) -> String {
    format!("{}-{}", p.0, p.1)
}

/// One probe: connected and echoed within the timeout.
fn probe(dst: SocketAddr, port: Port) -> bool {
    let t = Duration::from_millis(500);
    match port {
        Port::Tcp80 | Port::Tcp81 => {
            let Ok(mut s) = TcpStream::connect_timeout(&dst, t) else { return false };
            let _ = s.set_read_timeout(Some(t));
            let mut b = [0u8; 1];
            s.write_all(b"p").is_ok() && s.read_exact(&mut b).is_ok()
        }
        Port::Udp80 => {
            let Ok(s) = UdpSocket::bind("0.0.0.0:0") else { return false };
            let _ = s.set_read_timeout(Some(t));
            let mut b = [0u8; 8];
            s.send_to(b"p", dst).is_ok() && s.recv_from(&mut b).is_ok()
        }
    }
}

type Matrix = BTreeMap<(P, P, Port), bool>;

/// Every pod to every pod on every port, all at once (one thread each):
/// a round takes one probe timeout however many are denied.
fn probe_all(lab: &TestLab) -> Matrix {
    let mut handles = Vec::new();
    for from in all_pods() {
        let netns = lab.netns_path(&lab_pod(from));
        for to in all_pods() {
            for port in PORTS {
                let n = if port == Port::Tcp81 { 81 } else { 80 };
                let dst: SocketAddr = format!("{}:{n}", lab.pod_ip(&lab_pod(to))).parse().unwrap();
                handles.push(spawn_in_ns(&netns, move || ((from, to, port), probe(dst, port))));
            }
        }
    }
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn expected(truth: &dyn Fn(P, P, Port) -> bool) -> Matrix {
    let mut m = Matrix::new();
    for from in all_pods() {
        for to in all_pods() {
            for port in PORTS {
                // A pod always reaches itself.
                m.insert((from, to, port), from == to || truth(from, to, port));
            }
        }
    }
    m
}

/// The differences, as lines a person can read.
fn diff(want: &Matrix, got: &Matrix) -> Vec<String> {
    want.iter()
        .filter(|(k, v)| got.get(k) != Some(v))
        .map(|((f, t, p), v)| {
            format!("{}/{} -> {}/{} {p:?}: want {}", f.0, f.1, t.0, t.1, if *v { "allow" } else { "deny" })
        })
        .collect()
}

fn apply(lab: &TestLab, yaml: &str) {
    let path = std::env::temp_dir().join(format!("weft-matrix-{}-{}.yaml", lab.name(), std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    // Through node 1: the store is the cluster's, node 2 follows it.
    let out = lab.weft("node1", &["policy", "apply", "-f", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&path);
}

/// Deletes every policy and tier (from the store, through node 1).
fn clear(lab: &TestLab) {
    let list: Vec<weft_api::PolicyView> =
        lab.client("node1").call_as(&weft_api::Request::PolicyList).unwrap();
    for p in list.iter().filter(|p| p.kind != "tier").chain(list.iter().filter(|p| p.kind == "tier")) {
        let name = weft_api::PolicyName {
            kind: Some(p.kind.clone()),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
        };
        let _: () = lab.client("node1").call_as(&weft_api::Request::PolicyDelete(name)).unwrap();
    }
}

/// Applies a shape and waits (up to 5 s) for the matrix to match.
fn check(lab: &TestLab, shape: &str, yaml: &str, truth: &dyn Fn(P, P, Port) -> bool) {
    clear(lab);
    if !yaml.is_empty() {
        apply(lab, yaml);
    }
    let want = expected(truth);
    let start = Instant::now();
    loop {
        let got = probe_all(lab);
        let d = diff(&want, &got);
        if d.is_empty() {
            eprintln!("{shape}: matrix as written after {:?}", start.elapsed());
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "shape {shape}: {} probes differ:\n{}",
            d.len(),
            d.join("\n")
        );
        if std::env::var("WEFT_MATRIX_DEBUG").is_ok() {
            eprintln!(
                "{shape}: {:?}: {} differ: {}",
                start.elapsed(),
                d.len(),
                d.iter().take(6).cloned().collect::<Vec<_>>().join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ip(lab: &TestLab, p: P) -> String {
    lab.pod_ip(&lab_pod(p))
}

fn shapes(lab: &TestLab) {
    check(lab, "no policy", "", &|_, _, _| true);

    check(
        lab,
        "default deny ingress in x",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n",
        &|_, to, _| to.0 != "x",
    );

    check(
        lab,
        "AND: y/b only, in one peer",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: and, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n      namespaceSelector: {matchLabels: {ns: y}}\n",
        &|from, to, _| to != ("x", "a") || from == ("y", "b"),
    );

    check(
        lab,
        "OR: pod b of x, or any pod of y",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: or, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n    - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [y]}]}\n",
        &|from, to, _| to != ("x", "a") || from == ("x", "b") || from.0 == "y",
    );

    check(
        lab,
        "named port serve-81-tcp",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: named, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: serve-81-tcp}]\n",
        &|_, to, port| to != ("x", "a") || port == Port::Tcp81,
    );

    check(
        lab,
        "endPort 80-81 TCP",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: range, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{protocol: TCP, port: 80, endPort: 81}]\n",
        &|_, to, port| to != ("x", "a") || port != Port::Udp80,
    );

    let yb = ip(lab, ("y", "b"));
    check(
        lab,
        "ipBlock on pod addresses with except",
        &format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: block, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from: [{{ipBlock: {{cidr: 10.244.0.0/16, except: [{yb}/32]}}}}]\n"
        ),
        &|from, to, _| to != ("x", "a") || from != ("y", "b"),
    );

    check(
        lab,
        "egress deny on y/b beats ingress allow on x/a",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-all-in, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: no-egress, namespace: y}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Egress]\n",
        &|from, _, _| from != ("y", "b"),
    );

    check(
        lab,
        "Calico: ordered Deny before Allow",
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: deny-y, namespace: x}\nspec:\n  order: 10\n  selector: pod == 'a'\n  ingress:\n  - action: Deny\n    source: {namespaceSelector: ns == 'y'}\n---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: allow-rest, namespace: x}\nspec:\n  order: 20\n  selector: pod == 'a'\n  ingress:\n  - action: Allow\n",
        &|from, to, _| to != ("x", "a") || from.0 != "y",
    );

    check(
        lab,
        "Calico: Pass to the next tier",
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: security.gate}\nspec:\n  tier: security\n  selector: projectcalico.org/namespace == 'x' && pod == 'a'\n  ingress:\n  - action: Pass\n    source: {namespaceSelector: ns == 'z'}\n  - action: Deny\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-c, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: c}}}]\n",
        &|from, to, _| to != ("x", "a") || from == ("z", "c"),
    );

    check(
        lab,
        "Calico: a global policy over namespace z",
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: z-guard}\nspec:\n  order: 5\n  namespaceSelector: ns == 'z'\n  selector: all()\n  ingress:\n  - action: Deny\n    source: {selector: pod == 'a'}\n  - action: Allow\n",
        &|from, to, _| to.0 != "z" || from.1 != "a",
    );

    check(lab, "all removed", "", &|_, _, _| true);
}

#[test]
fn the_truth_table_holds_on_two_nodes_in_vxlan() {
    let lab = TestLab::from_file("npvx", &lab_file(), |o| o.mode = Some("vxlan".into()));
    shapes(&lab);
}

#[test]
fn the_truth_table_holds_on_two_nodes_in_ipip() {
    let lab = TestLab::from_file("npip", &lab_file(), |o| o.mode = Some("ipip".into()));
    shapes(&lab);
}
