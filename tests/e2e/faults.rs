//! The node's state under faults and hostile input: crashes at every step
//! of ADD and DEL, ADD racing DEL, exhausted id spaces, namespaces that are
//! not a pod's, identities on failure paths, odd interface names, churn.
//! Each ends with the full consistency check (`assert_consistent`).

use std::{
    collections::HashSet,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};
use weft_api::{AddRequest, Request};
use weft_e2e::{TempNetns, TestLab};

fn allocated(lab: &TestLab) -> usize {
    lab.status("node1").ipam_allocated
}

fn threads_and_fds(pid: u32) -> (usize, usize) {
    let count = |d: String| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
    (count(format!("/proc/{pid}/task")), count(format!("/proc/{pid}/fd")))
}

fn dir_size(p: &Path) -> (usize, u64) {
    let (mut n, mut bytes) = (0, 0);
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            n += 1;
            let m = e.metadata().unwrap();
            if m.is_dir() {
                let (a, b) = dir_size(&e.path());
                n += a;
                bytes += b;
            } else {
                bytes += m.len();
            }
        }
    }
    (n, bytes)
}

/// Defect 1: a pod CIDR larger than a node can hold endpoints for is
/// refused at start with the reason (the id space itself is unit-tested:
/// exhaustion is an immediate error, crates/agent/src/ids.rs).
#[test]
fn a_pod_cidr_larger_than_the_endpoint_id_space_is_refused_at_start() {
    let ns = TempNetns::new(&format!("weft-big{}", std::process::id() % 100000));
    let dir = std::env::temp_dir().join(format!("weft-bigcidr-{}", std::process::id()));
    let (bin, d) = (weft_e2e::weft_bin(), dir.clone());
    let out = weft_net::netns::run_in(Path::new(&ns.path()), move || {
        Ok(std::process::Command::new(bin)
            .args(["agent", "--node", "big", "--pod-cidr", "10.0.0.0/15"])
            .arg("--state-dir")
            .arg(&d)
            .arg("--socket")
            .arg(d.join("agent.sock"))
            .arg("--bpffs")
            .arg("/sys/fs/bpf/weft-bigcidr-test")
            .output()
            .unwrap())
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/weft-bigcidr-test");
    let err = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("10.0.0.0/15") && err.contains("/17 or smaller"), "{err}");
}

/// Defect 2: a DEL arriving while its ADD is in flight. Whatever the order,
/// the node ends with the pod fully there or fully gone — never an
/// endpoint whose address IPAM considers free.
#[test]
fn add_racing_del_of_the_same_container_leaves_consistent_state() {
    let lab = Arc::new(TestLab::up("race", 1, 0));
    let nss: Vec<TempNetns> = (0..12).map(|i| TempNetns::new(&format!("weft-{}-r{i}", lab.name()))).collect();
    for (i, ns) in nss.iter().enumerate() {
        let (l, path, cid) = (lab.clone(), ns.path(), ns.name.clone());
        let add = std::thread::spawn(move || l.cni("node1", "ADD", &cid, &path, "1.1.0"));
        std::thread::sleep(Duration::from_millis((i as u64 * 3) % 25));
        let del = lab.cni("node1", "DEL", &ns.name, &ns.path(), "1.1.0");
        assert!(del.success, "DEL: {} {}", del.stdout, del.stderr);
        let add = add.join().unwrap();
        assert!(add.success, "ADD: {} {}", add.stdout, add.stderr);
        lab.assert_consistent("node1");
    }
    // Whatever survived goes with a second DEL; then nothing is left.
    for ns in &nss {
        assert!(lab.cni("node1", "DEL", &ns.name, &ns.path(), "1.1.0").success);
    }
    lab.assert_consistent("node1");
    assert_eq!(allocated(&lab), 0);
}

/// Defect 3 and the crash-point test: the agent is SIGKILLed at every step
/// of ADD and DEL; after a restart the node is consistent, nothing is held
/// twice, a device without its program is gone, and new pods work.
#[test]
fn a_crash_at_any_step_of_add_or_del_is_finished_or_undone_on_restart() {
    let mut lab = TestLab::up("crash", 1, 1);
    let peer = lab.pod_ip("pod1-1");
    let mut taken: HashSet<String> = HashSet::new();
    let mut keep = Vec::new();
    for (i, step) in weft_agent::faults::STEPS.iter().enumerate() {
        let ns = TempNetns::new(&format!("weft-{}-k{i}", lab.name()));
        let cid = format!("crash-{}", step.replace(':', "-"));
        if step.starts_with("del:") {
            assert!(lab.cni("node1", "ADD", &cid, &ns.path(), "1.1.0").success, "{step}: ADD");
        }
        lab.restart_agent_env("node1", &[("WEFT_CRASH_AT", step)]);
        let cmd = if step.starts_with("add:") { "ADD" } else { "DEL" };
        let out = lab.cni("node1", cmd, &cid, &ns.path(), "1.1.0");
        if weft_agent::faults::AFTER_DEL_ANSWERED.contains(step) {
            // The DEL answered before the repair thread reached the step;
            // the answer may or may not have left before the agent died.
            if !out.success {
                assert_eq!(out.json().unwrap()["code"], 11, "{step}: {}", out.stdout);
            }
        } else {
            assert!(!out.success, "{step}: the agent died, so {cmd} cannot have succeeded: {}", out.stdout);
            assert_eq!(
                out.json().unwrap()["code"],
                11,
                "{step}: the runtime is told to try again: {}",
                out.stdout
            );
        }
        lab.wait_agent_dead("node1");
        lab.restart_agent_env("node1", &[]);
        lab.assert_consistent("node1");
        let eps = lab.endpoints("node1");
        // Journaled ready means done (the runtime, told it failed, will DEL
        // it); anything earlier is undone, and a started DEL is finished.
        let kept = *step == "add:after-ready";
        assert_eq!(
            eps.iter().any(|e| e.container_id == cid),
            kept,
            "{step}: endpoint after the restart: {eps:?}"
        );
        // The runtime retries: ADD works and the address is nobody else's.
        let again = lab.cni("node1", "ADD", &cid, &ns.path(), "1.1.0");
        assert!(again.success, "{step}: ADD after restart: {} {}", again.stdout, again.stderr);
        let ip = again.json().unwrap()["ips"][0]["address"].as_str().unwrap().to_string();
        assert!(taken.insert(ip.clone()), "{step}: {ip} handed out twice");
        let out =
            weft_net::netns::run_in(Path::new(&ns.path()), move || weft_net::ip::output(&["route", "show"]))
                .unwrap();
        assert_eq!(out.lines().count(), 2, "{step}: the pod has exactly its two routes: {out}");
        let p = peer.clone();
        let ping = weft_e2e::spawn_in_ns(&ns.path(), move || {
            std::process::Command::new("ping").args(["-c", "1", "-W", "2", &p]).output().unwrap()
        })
        .join()
        .unwrap();
        assert!(ping.status.success(), "{step}: the re-added pod reaches pod1-1");
        lab.assert_consistent("node1");
        keep.push(ns);
    }
    let log = std::fs::read_to_string(lab.lab.node("node1").unwrap().state_dir.join("agent.log")).unwrap();
    assert!(log.contains("its ADD was cut short"), "restarts undid interrupted ADDs");
    assert!(log.contains("its DEL was not finished"), "restarts finished interrupted DELs");
}

/// Defect 3 (the spoofing part): an lxc device weft finds without a record
/// has no program, so it would carry spoofed sources; it is removed.
#[test]
fn an_lxc_device_without_a_record_is_removed_on_restart() {
    let mut lab = TestLab::up("orphan", 1, 1);
    lab.ok("node1", &["ip", "link", "add", "lxc0123456789ab", "type", "veth", "peer", "name", "weftorph1"]);
    lab.ok("node1", &["ip", "link", "set", "lxc0123456789ab", "up"]);
    lab.restart_agent_env("node1", &[]);
    let links = lab.ok("node1", &["ip", "-br", "link", "show"]);
    assert!(!links.contains("lxc0123456789ab"), "{links}");
    lab.assert_consistent("node1");
}

/// An upgrade from an agent that kept IPAM in its own file: an address it
/// holds without a journal entry (its ADD died between the two) is undone
/// on start, the file is retired, and the journal alone says who holds
/// what from then on (the pods it lists keep their addresses).
#[test]
fn an_earlier_agents_ipam_file_is_adopted_and_retired() {
    let mut lab = TestLab::up("ipamup", 1, 1);
    let pod = lab.pod_ip("pod1-1");
    let st = lab.status("node1");
    let cidr: weft_ipam::Cidr = st.pod_cidr.parse().unwrap();
    let orphan = cidr.host(200).unwrap().to_string();
    let file = lab.lab.node("node1").unwrap().state_dir.join("ipam.json");
    let legacy = serde_json::json!({
        "cidr": st.pod_cidr,
        "allocations": {
            orphan.clone(): {"container_id": "legacy-cut-short", "ifname": "eth0", "netns": "/run/netns/gone"}
        }
    });
    std::fs::write(&file, legacy.to_string()).unwrap();
    lab.restart_agent_env("node1", &[]);
    assert!(!file.exists(), "the IPAM file is retired after the restart");
    lab.assert_consistent("node1");
    let eps = lab.endpoints("node1");
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0].ipv4.to_string(), pod, "the journaled pod keeps its address");
    let log = std::fs::read_to_string(lab.lab.node("node1").unwrap().state_dir.join("agent.log")).unwrap();
    assert!(log.contains(&format!("legacy-cut-short {orphan}): its ADD was cut short")), "{log}");
}

/// Journal records are written without fsync: a machine crash ends every
/// pod anyway. After a reboot (simulated: the journal's boot mark is of
/// another boot) every record is stale — even one whose namespace path
/// exists again — and one a power loss left torn is dropped, not fatal.
/// The node comes back empty and consistent, the store forgets the pods.
#[test]
fn after_a_reboot_every_pod_of_the_earlier_boot_is_removed_and_torn_records_dropped() {
    let mut lab = TestLab::up("reboot", 1, 1);
    let dir = lab.lab.node("node1").unwrap().state_dir.join("endpoints");
    std::fs::write(dir.join("boot_id"), "an-earlier-boot").unwrap();
    std::fs::write(dir.join("10.244.1.250.json"), b"").unwrap();
    lab.restart_agent_env("node1", &[]);
    lab.assert_consistent("node1");
    assert!(lab.endpoints("node1").is_empty(), "{:?}", lab.endpoints("node1"));
    assert!(!dir.join("10.244.1.250.json").exists());
    let log = std::fs::read_to_string(lab.lab.node("node1").unwrap().state_dir.join("agent.log")).unwrap();
    assert!(log.contains("the machine restarted since it was added"), "{log}");
    assert!(log.contains("10.244.1.250.json from before the machine restarted is unreadable"), "{log}");
    // The journal notes this boot: an agent restart now keeps pods.
    let ns = TempNetns::new(&format!("weft-{}-after", lab.name()));
    assert!(lab.cni("node1", "ADD", "after-reboot", &ns.path(), "1.1.0").success);
    lab.restart_agent_env("node1", &[]);
    assert_eq!(lab.endpoints("node1").len(), 1);
    lab.assert_consistent("node1");
}

/// Defect 7: CNI_NETNS naming the node's own namespace, the underlay's
/// (another host), or a file that is not a network namespace is refused,
/// and the node gets no pod address or route.
#[test]
fn only_a_fresh_network_namespace_can_hold_a_pod() {
    let lab = TestLab::up("netns", 1, 0);
    let node_ns = lab.netns_path("node1");
    let underlay = format!("/run/netns/{}", weft_lab::layout::underlay_ns(lab.name()));
    let routes_before = lab.ok("node1", &["ip", "route", "show"]);
    for (netns, why) in [
        (node_ns.as_str(), "own network namespace"),
        ("/proc/self/ns/net", "own network namespace"),
        (underlay.as_str(), "already has IPv4 address"),
        ("/proc/self/ns/mnt", "not a network namespace"),
    ] {
        let out = lab.cni("node1", "ADD", "intruder", netns, "1.1.0");
        assert!(!out.success, "{netns}: {}", out.stdout);
        let err = out.json().unwrap();
        assert!(err["details"].as_str().unwrap_or("").contains(why), "{netns}: {err}");
    }
    assert_eq!(allocated(&lab), 0);
    assert_eq!(lab.ok("node1", &["ip", "route", "show"]), routes_before, "no route was added to the node");
    lab.assert_consistent("node1");
}

/// Defect 8: identities are taken last and given back on every failure.
/// Defect 10: a huge container id is refused before any work, in a log
/// line of bounded length. Defect 11: an ifname with a dot works and gets no
/// IPv6 address.
#[test]
fn failed_adds_keep_no_identity_and_names_are_checked_first() {
    let lab = TestLab::up("ident", 1, 0);
    let client = lab.client("node1");
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("app".to_string(), "leaky".to_string());
    client
        .call(&Request::PodLabels(weft_api::PodLabels {
            namespace: "default".into(),
            name: "leaky".into(),
            labels,
            remove: vec![],
        }))
        .unwrap();
    // The veth cannot be made: the pod already has the interface name.
    let ns = TempNetns::new(&format!("weft-{}-l", lab.name()));
    weft_net::netns::run_in(Path::new(&ns.path()), || {
        weft_net::ip::run(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
    })
    .unwrap();
    let req = |cid: &str, ifname: &str, netns: &str| {
        Request::Add(AddRequest {
            container_id: cid.into(),
            netns: netns.into(),
            ifname: ifname.into(),
            network: "weft".into(),
            pod_namespace: Some("default".into()),
            pod_name: Some("leaky".into()),
            mtu: None,
        })
    };
    let e = client.call(&req("leaky1", "eth0", &ns.path())).unwrap_err();
    assert!(e.to_string().contains("eth0"), "{e}");
    let idents: Vec<weft_api::IdentityView> = client.call_as(&Request::IdentityList).unwrap();
    assert!(
        idents.iter().all(|i| !i.labels.iter().any(|l| l.contains("leaky"))),
        "the failed ADD's identity was released: {idents:?}"
    );
    lab.assert_consistent("node1");

    let log_path = lab.lab.node("node1").unwrap().state_dir.join("agent.log");
    let before = std::fs::metadata(&log_path).unwrap().len();
    let huge = "c".repeat(500_000);
    let start = Instant::now();
    let e = client.call(&req(&huge, "eth0", &ns.path())).unwrap_err();
    assert!(e.to_string().contains("container id"), "{}", &e.to_string()[..200.min(e.to_string().len())]);
    assert!(e.to_string().len() < 1000, "the error quotes the id shortened");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(std::fs::metadata(&log_path).unwrap().len() - before < 10_000, "the log stays small");

    let dotted = TempNetns::new(&format!("weft-{}-d", lab.name()));
    client.call(&req("dotted", "e.1", &dotted.path())).unwrap();
    let v6 = std::process::Command::new("ip")
        .args(["-n", &dotted.name, "-6", "addr", "show", "dev", "e.1"])
        .output();
    let v6 = String::from_utf8_lossy(&v6.unwrap().stdout).to_string();
    assert!(!v6.contains("inet6"), "no IPv6 address on e.1: {v6}");
    lab.assert_consistent("node1");
}

/// 300+ ADD/DEL cycles: 10-way concurrent rounds, sequential ones, and
/// ones whose netns is deleted before DEL. Afterwards the node is
/// consistent and the agent's threads, descriptors and store are back to
/// where they started.
#[test]
fn churn_returns_the_node_to_rest() {
    let lab = Arc::new(TestLab::up("churn", 1, 1));
    let pid = lab.lab.node("node1").unwrap().pid;
    let store = lab.lab.node("node1").unwrap().state_dir.join("store");
    // One warm-up cycle: lazily created state (identity of the label set).
    let warm = TempNetns::new(&format!("weft-{}-w", lab.name()));
    assert!(lab.cni("node1", "ADD", "warm", &warm.path(), "1.1.0").success);
    assert!(lab.cni("node1", "DEL", "warm", &warm.path(), "1.1.0").success);
    let rest = threads_and_fds(pid);
    let store_rest = dir_size(&store);
    let mut cycles = 0;
    for round in 0..10 {
        let nss: Vec<TempNetns> =
            (0..10).map(|i| TempNetns::new(&format!("weft-{}-{round}x{i}", lab.name()))).collect();
        let run = |cmd: &'static str| {
            let hs: Vec<_> = nss
                .iter()
                .map(|ns| {
                    let (l, p, c) = (lab.clone(), ns.path(), ns.name.clone());
                    std::thread::spawn(move || l.cni("node1", cmd, &c, &p, "1.1.0"))
                })
                .collect();
            for h in hs {
                let o = h.join().unwrap();
                assert!(o.success, "{cmd}: {} {}", o.stdout, o.stderr);
            }
        };
        run("ADD");
        run("DEL");
        cycles += 10;
    }
    let ns = TempNetns::new(&format!("weft-{}-seq", lab.name()));
    for i in 0..150 {
        let cid = format!("seq{i}");
        let add = lab.cni("node1", "ADD", &cid, &ns.path(), "1.1.0");
        assert!(add.success, "ADD {i}: {} {}", add.stdout, add.stderr);
        assert!(lab.cni("node1", "DEL", &cid, &ns.path(), "1.1.0").success, "DEL {i}");
        cycles += 1;
    }
    for i in 0..50 {
        let gone = TempNetns::new(&format!("weft-{}-g{i}", lab.name()));
        let cid = format!("gone{i}");
        assert!(lab.cni("node1", "ADD", &cid, &gone.path(), "1.1.0").success);
        let path = gone.path();
        drop(gone);
        let out = lab.cni("node1", "DEL", &cid, &path, "1.1.0");
        assert!(out.success, "DEL after the netns went: {} {}", out.stdout, out.stderr);
        cycles += 1;
    }
    assert!(cycles >= 300);
    lab.assert_consistent("node1");
    assert_eq!(lab.endpoints("node1").len(), 1, "only the lab's own pod is left");
    // No growth: the sample at rest may itself have caught a descriptor in
    // flight (a connection or netlink socket of the warm-up's last request).
    let grown = |now: (usize, usize)| now.0 > rest.0 || now.1 > rest.1;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while grown(threads_and_fds(pid)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let now = threads_and_fds(pid);
    if grown(now) {
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|r| r.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()))
            .into_iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect();
        let names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|r| r.flatten().filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok()))
            .into_iter()
            .flatten()
            .map(|s| s.trim().to_string())
            .collect();
        panic!("(threads, fds) at rest {rest:?}, after churn {now:?}; threads {names:?}; fds {fds:?}");
    }
    assert_eq!(dir_size(&store), store_rest, "the store is back to its size at rest");
}
