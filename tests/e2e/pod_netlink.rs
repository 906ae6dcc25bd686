//! The agent's netlink: CHECK looks inside the pod's namespace, a pod
//! device deleted behind the agent's back is noticed at once, and the cost
//! of ADD/DEL without exec'ing iproute2.

use serde_json::Value;
use std::time::{Duration, Instant};
use weft_api::{BpfEndpointView, Request};
use weft_e2e::{TempNetns, TestLab};

/// A pod added through the plugin: its namespace and ADD result.
struct Pod {
    ns: TempNetns,
    cid: String,
    result: Value,
}

impl Pod {
    fn add(lab: &TestLab, tag: &str) -> Pod {
        let ns = TempNetns::new(&format!("weft-{}-{tag}", lab.name()));
        let out = lab.cni("node1", "ADD", tag, &ns.path(), "1.1.0");
        assert!(out.success, "ADD: {} {}", out.stdout, out.stderr);
        Pod { ns, cid: tag.into(), result: out.json().unwrap() }
    }

    fn ip(&self) -> String {
        let a = self.result["ips"][0]["address"].as_str().unwrap();
        a.trim_end_matches("/32").to_string()
    }

    /// CHECK with the runtime's cached result: Ok, or the plugin's output.
    fn check(&self, lab: &TestLab) -> Result<(), String> {
        let mut conf = weft_lab::cni::plugin_config(&lab.lab.node("node1").unwrap().socket, "1.1.0");
        conf["prevResult"] = self.result.clone();
        let out = lab.cni_with("node1", "CHECK", &self.cid, &self.ns.path(), &conf);
        if out.success { Ok(()) } else { Err(format!("{} {}", out.stdout, out.stderr)) }
    }

    /// `ip ARGS` inside the pod's namespace.
    fn ip_cmd(&self, args: &[&str]) {
        let out = std::process::Command::new("ip").args(["-n", &self.ns.name]).args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn mtu(&self) -> u64 {
        let out = std::process::Command::new("ip")
            .args(["-n", &self.ns.name, "-j", "link", "show", "eth0"])
            .output();
        let v: Value = serde_json::from_slice(&out.unwrap().stdout).unwrap();
        v[0]["mtu"].as_u64().unwrap()
    }

    fn gateway(&self) -> String {
        let out = std::process::Command::new("ip")
            .args(["-n", &self.ns.name, "-j", "route", "show", "default"])
            .output();
        let v: Value = serde_json::from_slice(&out.unwrap().stdout).unwrap();
        v[0]["gateway"].as_str().unwrap().to_string()
    }
}

fn check_fails_with(lab: &TestLab, pod: &Pod, want: &str) {
    let e = pod.check(lab).expect_err("CHECK must fail");
    assert!(e.contains(want), "CHECK should say {want:?}; it said: {e}");
}

#[test]
fn check_looks_inside_the_pod() {
    let lab = TestLab::up("chkin", 1, 0);
    let pod = Pod::add(&lab, "k1");
    pod.check(&lab).expect("a healthy pod passes CHECK");
    // The device settings ADD makes (IPv4 ones through netlink).
    let host_dev = pod.result["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(host_dev.starts_with("lxc"), "{host_dev}");
    let conf = |ns: &str, family: &'static str, dev: String, key: &'static str| {
        weft_net::netns::run_in(std::path::Path::new(ns), move || {
            weft_net::sysctl::get_conf(family, &dev, key)
        })
        .unwrap()
    };
    let node_ns = lab.netns_path("node1");
    assert_eq!(conf(&node_ns, "ipv4", host_dev.clone(), "rp_filter"), "0");
    assert_eq!(conf(&node_ns, "ipv4", host_dev.clone(), "forwarding"), "1");
    // Neither end has an IPv6 address (none is generated).
    for (ns, dev) in [(node_ns.as_str(), host_dev.as_str()), (pod.ns.path().as_str(), "eth0")] {
        let ns_name = ns.rsplit('/').next().unwrap();
        let out =
            std::process::Command::new("ip").args(["-n", ns_name, "-6", "addr", "show", "dev", dev]).output();
        let text = String::from_utf8_lossy(&out.unwrap().stdout).to_string();
        assert!(!text.contains("inet6"), "{dev} in {ns}: {text}");
    }
    let (ns, ip, gw) = (pod.ns.path(), pod.ip(), pod.gateway());

    // A route deleted inside the pod, then put back.
    pod.ip_cmd(&["route", "del", "default"]);
    check_fails_with(&lab, &pod, &format!("route default via {gw} dev eth0 missing in {ns}"));
    pod.ip_cmd(&["route", "add", "default", "via", &gw, "dev", "eth0"]);
    pod.check(&lab).expect("healthy again");
    pod.ip_cmd(&["route", "del", &gw, "dev", "eth0"]);
    check_fails_with(&lab, &pod, &format!("route {gw} dev eth0 scope link missing in {ns}"));
    pod.ip_cmd(&["route", "add", &gw, "dev", "eth0", "scope", "link"]);
    pod.check(&lab).expect("healthy again");

    // Another MTU, then the right one again.
    let mtu = pod.mtu();
    pod.ip_cmd(&["link", "set", "eth0", "mtu", "1300"]);
    check_fails_with(&lab, &pod, &format!("eth0 in {ns} has MTU 1300, expected {mtu}"));
    pod.ip_cmd(&["link", "set", "eth0", "mtu", &mtu.to_string()]);
    pod.check(&lab).expect("healthy again");

    // The address changed: another one added, the pod's removed.
    let other = "10.244.0.250";
    pod.ip_cmd(&["addr", "add", &format!("{other}/32"), "dev", "eth0"]);
    pod.ip_cmd(&["addr", "del", &format!("{ip}/32"), "dev", "eth0"]);
    check_fails_with(&lab, &pod, &format!("eth0 in {ns} has {other}/32, expected exactly {ip}/32"));

    let out = lab.cni("node1", "DEL", &pod.cid, &ns, "1.1.0");
    assert!(out.success, "DEL: {} {}", out.stdout, out.stderr);
    lab.assert_consistent("node1");
}

#[test]
fn a_deleted_pod_device_is_noticed_at_once() {
    let lab = TestLab::up("lxcdel", 1, 0);
    let (gone, kept) = (Pod::add(&lab, "g1"), Pod::add(&lab, "g2"));
    let dev = lab.endpoints("node1").into_iter().find(|e| e.container_id == gone.cid).unwrap().ifname;
    let in_map = |ip: &str| {
        let bpf: Vec<BpfEndpointView> = lab.client("node1").call_as(&Request::BpfEndpointList).unwrap();
        bpf.iter().any(|b| !b.host && b.ip.to_string() == ip)
    };
    let lxc_entries = || lab.status("node1").maps.iter().find(|m| m.name == "weft_lxc").unwrap().entries;
    assert!(in_map(&gone.ip()) && lxc_entries() == 2);

    lab.ok("node1", &["ip", "link", "del", &dev]);
    lab.eventually(Duration::from_secs(1), "the deleted device's map entries to go", || {
        !in_map(&gone.ip()) && lxc_entries() == 1
    });
    assert!(in_map(&kept.ip()), "the other pod keeps its entry");
    check_fails_with(&lab, &gone, &format!("host device {dev} is missing"));
    kept.check(&lab).expect("the other pod is healthy");

    let log = std::fs::read_to_string(lab.lab.node("node1").unwrap().state_dir.join("agent.log")).unwrap();
    assert!(
        log.contains(&format!("pod default/extra (container {}, endpoint", gone.cid))
            && log.contains(&format!("lost its host device {dev}")),
        "{log}"
    );

    let out = lab.cni("node1", "DEL", &gone.cid, &gone.ns.path(), "1.1.0");
    assert!(out.success, "DEL: {} {}", out.stdout, out.stderr);
    lab.assert_consistent("node1");
    assert_eq!(lab.endpoints("node1").len(), 1);
}

#[test]
fn the_node_address_leaving_its_device_is_a_warning() {
    let lab = TestLab::up("nodeip", 1, 0);
    let n = lab.lab.node("node1").unwrap();
    let (ip, log) = (n.underlay_ip.to_string(), n.state_dir.join("agent.log"));
    let logged = |s: &str| std::fs::read_to_string(&log).unwrap_or_default().contains(s);
    let with_prefix = format!("{ip}/24");
    lab.ok("node1", &["ip", "addr", "del", &with_prefix, "dev", "eth0"]);
    let warning = format!("the node's address {ip} was removed from eth0 (eth0 has no IPv4 address now)");
    lab.eventually(Duration::from_secs(1), &warning, || logged(&warning));
    lab.ok("node1", &["ip", "addr", "add", &with_prefix, "dev", "eth0"]);
    let back = format!("the node's address {ip} is back on eth0");
    lab.eventually(Duration::from_secs(1), &back, || logged(&back));
}

/// 40 sequential ADDs then 40 DELs through the real plugin, 3 rounds:
/// median and mean per operation. Not a pass/fail test; run with
/// `--ignored --nocapture` to measure. WEFT_MEASURE_AGENT=PATH runs
/// another build's `weft` as the agent (to compare two builds);
/// WEFT_TC_MODE=legacy|tcx is passed to the agent.
#[test]
#[ignore]
fn measure_sequential_add_del() {
    let lab = TestLab::up_with("meas", 1, 0, |o| {
        if let Ok(bin) = std::env::var("WEFT_MEASURE_AGENT") {
            o.weft_bin = bin.into();
        }
        if let Ok(mode) = std::env::var("WEFT_TC_MODE") {
            o.agent_env.push(("WEFT_TC_MODE".into(), mode));
        }
    });
    let mut adds = Vec::new();
    let mut dels = Vec::new();
    // The floor: plugin exec and a round trip to the agent, no pod work.
    let mut floor = Vec::new();
    let spare = TempNetns::new(&format!("weft-{}-mfloor", lab.name()));
    for i in 0..40 {
        let t = Instant::now();
        let out = lab.cni("node1", "DEL", &format!("never-added{i}"), &spare.path(), "1.0.0");
        floor.push(t.elapsed());
        assert!(out.success, "DEL: {} {}", out.stdout, out.stderr);
    }
    for round in 0..3 {
        let nss: Vec<TempNetns> =
            (0..40).map(|i| TempNetns::new(&format!("weft-{}-m{round}x{i}", lab.name()))).collect();
        for ns in &nss {
            let t = Instant::now();
            let out = lab.cni("node1", "ADD", &ns.name, &ns.path(), "1.0.0");
            adds.push(t.elapsed());
            assert!(out.success, "ADD: {} {}", out.stdout, out.stderr);
        }
        for ns in &nss {
            let t = Instant::now();
            let out = lab.cni("node1", "DEL", &ns.name, &ns.path(), "1.0.0");
            dels.push(t.elapsed());
            assert!(out.success, "DEL: {} {}", out.stdout, out.stderr);
        }
    }
    lab.assert_consistent("node1");
    print_phases(&lab);
    for (what, v) in [("ADD", &mut adds), ("DEL", &mut dels), ("DEL of an unknown pod (floor)", &mut floor)] {
        v.sort();
        let mean = v.iter().sum::<Duration>() / v.len() as u32;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{what}: n={} median {:.2} ms, mean {:.2} ms, p90 {:.2} ms",
            v.len(),
            ms(v[v.len() / 2]),
            ms(mean),
            ms(v[v.len() * 9 / 10])
        );
    }
}

/// 200 ADDs from 8 concurrent runtimes, then 200 DELs: pods per second.
/// Not a pass/fail test (`--ignored --nocapture`); WEFT_MEASURE_AGENT and
/// WEFT_TC_MODE as for `measure_sequential_add_del`.
#[test]
#[ignore]
fn measure_concurrent_adds() {
    let lab = std::sync::Arc::new(TestLab::up_with("meac", 1, 0, |o| {
        if let Ok(bin) = std::env::var("WEFT_MEASURE_AGENT") {
            o.weft_bin = bin.into();
        }
        for kv in std::env::var("WEFT_MEASURE_ENV").unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap();
            o.agent_env.push((k.into(), v.into()));
        }
        if let Ok(mode) = std::env::var("WEFT_TC_MODE") {
            o.agent_env.push(("WEFT_TC_MODE".into(), mode));
        }
    }));
    let nss: Vec<TempNetns> =
        (0..200).map(|i| TempNetns::new(&format!("weft-{}-c{i}", lab.name()))).collect();
    if std::env::var("WEFT_MEASURE_PAUSE").is_ok() {
        println!("GO");
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    for cmd in ["ADD", "DEL"] {
        let queue = std::sync::Arc::new(std::sync::Mutex::new(
            nss.iter().map(|n| (n.name.clone(), n.path())).collect::<Vec<_>>(),
        ));
        let t = Instant::now();
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (q, lab) = (queue.clone(), lab.clone());
                std::thread::spawn(move || {
                    while let Some((cid, path)) = q.lock().unwrap().pop() {
                        let out = lab.cni("node1", cmd, &cid, &path, "1.0.0");
                        assert!(out.success, "{cmd}: {} {}", out.stdout, out.stderr);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        println!("{cmd}: {:.0} pods/s", nss.len() as f64 / t.elapsed().as_secs_f64());
    }
    lab.assert_consistent("node1");
}

/// The median of each step the agent's log lines report ("… in 5.2 ms
/// (wait 0.01, labels 0.4, …)"), per operation.
fn print_phases(lab: &TestLab) {
    let log = std::fs::read_to_string(lab.lab.node("node1").unwrap().state_dir.join("agent.log")).unwrap();
    for op in ["added", "deleted"] {
        let mut steps: Vec<(String, Vec<f64>)> = Vec::new();
        for line in log.lines().filter(|l| l.contains(&format!(" {op}: "))) {
            let Some(parts) = line.rsplit_once(" ms (").map(|(_, p)| p.trim_end_matches(')')) else {
                continue;
            };
            for (i, part) in parts.split(", ").enumerate() {
                let Some((name, v)) = part.rsplit_once(' ') else { continue };
                if steps.len() <= i {
                    steps.push((name.to_string(), Vec::new()));
                }
                steps[i].1.push(v.parse().unwrap_or(0.0));
            }
        }
        let medians: Vec<String> = steps
            .iter_mut()
            .map(|(name, v)| {
                v.sort_by(f64::total_cmp);
                format!("{name} {:.2}", v[v.len() / 2])
            })
            .collect();
        println!("{op}, median per step (ms): {}", medians.join(", "));
    }
}
