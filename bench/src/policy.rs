//! Policy figures (issue #9): the policy compiler on a synthetic cluster,
//! and what conntrack plus an ingress policy cost the datapath, beside the
//! Calico-style routed node enforcing the same policy with iptables.
//!
//! The policy allows the benchmark's client into the server through N
//! rules, the matching one last: N-1 rules each allowing a /32 that never
//! sends (172.31.x.y), then the client's /32. weft gets it as a Kubernetes
//! NetworkPolicy through its agent's API; the routed node as the chain
//! Calico would write: `ESTABLISHED,RELATED -j ACCEPT` first in FORWARD,
//! then a per-workload chain of N `-s <peer>/32 -j ACCEPT` and a DROP.

use crate::{
    Samples, control,
    tools::{self, BpfCounters},
    topo::{self, Enforce, Topo},
};
use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};
use weft_policy::{EndpointPolicy, scenario::BenchScenario};

/// Rule counts of the policy.
pub const RULES: [usize; 3] = [10, 100, 1000];

/// The policy's name in namespace `default` (weft) and the chain's prefix
/// (iptables).
const NAME: &str = "weft-bench-ingress";

/// Full and incremental compiles of `BenchScenario` (1,000 endpoints, 200
/// policies, 2,000 identities), `rounds` times.
pub fn compile(rounds: usize, s: &mut Samples) {
    use weft_policy::scenario::{ENDPOINTS, IDENTITIES, POLICIES};
    println!("# policy compile");
    let g = format!(
        "control plane — policy compile ({ENDPOINTS} endpoints, {POLICIES} policies, {IDENTITIES} identities)"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for _ in 0..rounds {
        let t = Instant::now();
        let mut sc = BenchScenario::new(42);
        let built = t.elapsed();
        let t = Instant::now();
        let maps = sc.compile_all();
        let compiled = t.elapsed();
        let entries: usize = maps.iter().map(EndpointPolicy::len).sum();
        let largest = maps.iter().map(EndpointPolicy::len).max().unwrap_or(0);
        let t = Instant::now();
        sc.label_change(7);
        let changed = t.elapsed();
        let t = Instant::now();
        let again = sc.compile_all();
        let recompiled = t.elapsed();
        let differ = maps.iter().zip(&again).filter(|(a, b)| a != b).count();
        let w = "weft";
        s.add(&g, "full: load namespaces, identities and policies", "ms", false, w, false, ms(built));
        s.add(&g, "full: compile every endpoint", "ms", false, w, false, ms(compiled));
        s.add(&g, "full: total", "ms", false, w, false, ms(built + compiled));
        s.add(&g, "full: map entries, all endpoints", "entries", false, w, false, entries as f64);
        s.add(&g, "full: map entries, largest endpoint", "entries", false, w, false, largest as f64);
        s.add(&g, "incremental: one label change (model update)", "ms", false, w, false, ms(changed));
        let what = "incremental: label change + recompile every endpoint (what the agent does)";
        s.add(&g, what, "ms", false, w, false, ms(changed + recompiled));
        let what = "incremental: endpoints whose entries changed";
        s.add(&g, what, "endpoints", false, w, false, differ as f64);
    }
}

/// What a topology enforces.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Setting {
    None,
    /// N rules, the last one the client's.
    Rules(usize),
    /// One rule that does not match the client (checks enforcement).
    DenyClient,
}

/// The peers of the rules, in order.
fn peers(setting: Setting, client: Ipv4Addr) -> Vec<Ipv4Addr> {
    let other = |i: usize| Ipv4Addr::new(172, 31, (i / 250) as u8, (i % 250) as u8 + 1);
    match setting {
        Setting::None => vec![],
        Setting::DenyClient => vec![other(0)],
        Setting::Rules(n) => (0..n - 1).map(other).chain([client]).collect(),
    }
}

fn apply(t: &Topo, setting: Setting) -> Result<(), String> {
    match t.enforce.as_ref().ok_or_else(|| format!("{} enforces no policy", t.name))? {
        Enforce::Iptables { node, dev, client_ip } => {
            iptables(node, dev, &peers(setting, *client_ip), setting)
        }
        Enforce::Weft { socket, endpoint, client_ip } => {
            weft(socket, *endpoint, &peers(setting, *client_ip), setting)
        }
    }
}

/// Replaces the node's filter table: Calico's order, with the policy
/// chain for traffic towards `dev` when there is a policy.
fn iptables(node: &str, dev: &str, peers: &[Ipv4Addr], setting: Setting) -> Result<(), String> {
    let chain = format!("{NAME}-{dev}");
    let mut rules =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    if setting != Setting::None {
        rules += &format!(":{chain} - [0:0]\n");
    }
    rules += "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";
    if setting != Setting::None {
        rules += &format!("-A FORWARD -o {dev} -j {chain}\n");
        for p in peers {
            rules += &format!("-A {chain} -s {p}/32 -j ACCEPT\n");
        }
        rules += &format!("-A {chain} -j DROP\n");
    }
    rules += "-A FORWARD -m conntrack --ctstate NEW -j ACCEPT\nCOMMIT\n";
    weft_net::netns::run_in(Path::new(&format!("/run/netns/{node}")), move || {
        use std::io::Write;
        let err = |e: std::io::Error| weft_net::Error(format!("iptables-restore: {e}"));
        let mut c = std::process::Command::new("iptables-restore")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(err)?;
        c.stdin.take().expect("piped").write_all(rules.as_bytes()).map_err(err)?;
        let out = c.wait_with_output().map_err(err)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(weft_net::Error(format!("iptables-restore: {}", String::from_utf8_lossy(&out.stderr))))
        }
    })
    .map_err(|e| format!("{node}: {e}"))
}

/// Applies (or deletes) the NetworkPolicy through the agent's API and waits
/// until the server's endpoint has exactly the rules' CIDRs in its policy
/// map (or enforces nothing).
fn weft(socket: &Path, endpoint: u16, peers: &[Ipv4Addr], setting: Setting) -> Result<(), String> {
    use weft_api::{BpfPolicyGet, BpfPolicyView, Client, PolicyApply, PolicyName, Request};
    let client = Client::new(socket);
    if setting == Setting::None {
        // Absent already is fine: the wait below tells.
        let _ = client.call(&Request::PolicyDelete(PolicyName {
            kind: Some("k8s".into()),
            namespace: Some("default".into()),
            name: NAME.into(),
        }));
    } else {
        let ingress: Vec<_> = peers
            .iter()
            .map(|p| serde_json::json!({"from": [{"ipBlock": {"cidr": format!("{p}/32")}}]}))
            .collect();
        let doc = serde_json::json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": NAME, "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"], "ingress": ingress},
        });
        client
            .call(&Request::PolicyApply(PolicyApply { documents: vec![doc] }))
            .map_err(|e| format!("policy apply: {e}"))?;
    }
    let want: std::collections::BTreeSet<String> = peers.iter().map(|p| format!("{p}/32")).collect();
    let start = Instant::now();
    loop {
        let v: BpfPolicyView = client
            .call_as(&Request::BpfPolicyGet(BpfPolicyGet { endpoint }))
            .map_err(|e| format!("bpf policy get: {e}"))?;
        let have: std::collections::BTreeSet<String> =
            v.entries.iter().filter_map(|e| e.cidr.clone()).collect();
        let done =
            if setting == Setting::None { !v.ingress_enforced } else { v.ingress_enforced && have == want };
        if done {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "endpoint {endpoint}: policy not in the map after 30 s (enforced {}, {} entries, {} of {} CIDRs)",
                v.ingress_enforced,
                v.entries.len(),
                have.intersection(&want).count(),
                want.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a SYN from the client gets through to the server: a closed
/// port answers with a reset, a dropped SYN times out.
fn reaches(t: &Topo) -> Result<bool, String> {
    let to = SocketAddr::from((t.server_ip, 7301));
    weft_net::netns::run_in(Path::new(&t.client), move || {
        Ok(match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        })
    })
    .map_err(|e| e.to_string())
}

/// Applies a setting and checks the client gets through (or, for
/// `DenyClient`, does not).
fn set(t: &Topo, setting: Setting) -> Result<(), String> {
    apply(t, setting)?;
    let want = setting != Setting::DenyClient;
    if reaches(t)? != want {
        return Err(format!(
            "{} with {setting:?}: the client {} the server",
            t.name,
            if want { "does not reach" } else { "still reaches" }
        ));
    }
    Ok(())
}

fn subject(t: &Topo, setting: Setting) -> String {
    let weft = matches!(t.enforce, Some(Enforce::Weft { .. }));
    match (weft, setting) {
        (true, Setting::Rules(n)) => format!("{}, conntrack + policy of {n} rules", t.name),
        (true, _) => format!("{}, conntrack, no policy", t.name),
        (false, Setting::Rules(n)) => format!("routed + iptables policy of {n} rules"),
        (false, _) => format!("{}, no policy", t.name),
    }
}

/// ns per packet of each weft program between two readings.
fn bpf_ns(before: &BpfCounters, after: &BpfCounters) -> Vec<(String, f64)> {
    after
        .iter()
        .filter_map(|(prog, (ns1, n1))| {
            let (ns0, n0) = before.get(prog).copied().unwrap_or((0, 0));
            (*n1 > n0).then(|| (prog.clone(), (ns1 - ns0) as f64 / (n1 - n0) as f64))
        })
        .collect()
}

/// One measurement of a topology as it is set: throughput, latency and
/// connection rate, and for weft the programs' ns per packet under each.
fn measure_one(s: &mut Samples, t: &Topo, subject: &str, setting: Setting, secs: u64) -> Result<(), String> {
    let g = format!("{} — conntrack and policy", t.kind);
    let base = t.enforce.is_none();
    let bpf_g = "datapath — conntrack and policy";
    let rules = match setting {
        Setting::Rules(n) => format!("{n} rules"),
        _ => "no policy".into(),
    };
    let b0 = tools::bpf_counters(&t.programs);
    let gbps = tools::iperf3(t, 1, secs)?;
    let b1 = tools::bpf_counters(&t.programs);
    s.add(&g, "TCP throughput, 1 stream", "Gbit/s", true, subject, base, gbps);
    for (prog, ns) in bpf_ns(&b0, &b1) {
        let sub = format!("{}, {}, {rules}: {prog}", t.kind, t.name);
        s.add(bpf_g, "ns per packet, 1 TCP stream (BPF stats)", "ns", false, &sub, false, ns);
    }
    let l = tools::sockperf(t, secs)?;
    s.add(&g, "TCP request/response latency, p50", "µs", false, subject, base, l.p50);
    s.add(&g, "TCP request/response latency, p99", "µs", false, subject, base, l.p99);
    let b0 = tools::bpf_counters(&t.programs);
    let cps = tools::crr(t, secs)?;
    let b1 = tools::bpf_counters(&t.programs);
    s.add(&g, "TCP connections (connect, 1 B each way, close)", "conn/s", true, subject, base, cps);
    for (prog, ns) in bpf_ns(&b0, &b1) {
        let sub = format!("{}, {}, {rules}: {prog}", t.kind, t.name);
        s.add(bpf_g, "ns per packet, TCP connections (BPF stats)", "ns", false, &sub, false, ns);
    }
    Ok(())
}

/// The datapath with conntrack and a policy of N rules, same node and
/// across nodes (weft native routing beside the routed Calico-style
/// node), with the physical limit of each as the baseline. Needs BPF
/// statistics on (see `main`).
pub fn datapath(rounds: usize, secs: u64, s: &mut Samples) -> Result<(), String> {
    println!("# policy: building topologies");
    let topos = vec![
        topo::limit_same()?,
        topo::routed_same()?,
        topo::weft_policy("bpols", 1, None)?,
        topo::limit_cross()?,
        topo::routed_cross()?,
        topo::weft_policy("bpolx", 2, Some("native"))?,
    ];
    // Every enforcer enforces: a rule that does not match the client
    // keeps it out.
    for t in topos.iter().filter(|t| t.enforce.is_some()) {
        set(t, Setting::DenyClient)?;
        set(t, Setting::None)?;
    }
    let mut settings: Vec<Setting> =
        [Setting::None].into_iter().chain(RULES.iter().map(|n| Setting::Rules(*n))).collect();
    for round in 0..rounds {
        println!("# policy: round {}/{rounds}", round + 1);
        // Each round starts with another setting, so none always follows
        // the same one.
        settings.rotate_left(usize::from(round > 0));
        for &setting in &settings {
            control::quiesce();
            for t in &topos {
                if t.enforce.is_none() && setting != Setting::None {
                    continue;
                }
                if t.enforce.is_some() {
                    set(t, setting)?;
                }
                let name = if t.enforce.is_some() { subject(t, setting) } else { t.name.clone() };
                measure_one(s, t, &name, setting, secs)?;
            }
        }
    }
    for t in topos.iter().filter(|t| t.enforce.is_some()) {
        let _ = apply(t, Setting::None);
    }
    Ok(())
}

/// The figures the policy section adds to the chart.
pub const PANELS: [(&str, &str); 2] = [
    ("same node — conntrack and policy", "TCP connections (connect, 1 B each way, close)"),
    ("cross node — conntrack and policy", "TCP connections (connect, 1 B each way, close)"),
];
