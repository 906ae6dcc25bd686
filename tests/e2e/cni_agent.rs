//! The CNI plugin against a live agent: concurrency, idempotent DEL,
//! repeated ADD, failed ADD leaving nothing, CHECK, GC, STATUS.

use std::collections::HashSet;
use weft_e2e::{TempNetns, TestLab};

fn allocated(lab: &TestLab) -> usize {
    lab.status("node1").ipam_allocated
}

fn host_links(lab: &TestLab) -> String {
    lab.ok("node1", &["ip", "-br", "link", "show"])
}

#[test]
fn fifty_concurrent_adds_get_distinct_addresses_and_dels_free_them() {
    let lab = TestLab::up("conc", 1, 0);
    let nss: Vec<TempNetns> = (0..50).map(|i| TempNetns::new(&format!("weft-{}-c{i}", lab.name()))).collect();
    let before = allocated(&lab);
    let lab = std::sync::Arc::new(lab);
    let adds: Vec<_> = nss
        .iter()
        .map(|ns| {
            let (lab, path, cid) = (lab.clone(), ns.path(), ns.name.clone());
            std::thread::spawn(move || lab.cni("node1", "ADD", &cid, &path, "1.0.0"))
        })
        .collect();
    let mut ips = HashSet::new();
    for h in adds {
        let out = h.join().unwrap();
        assert!(out.success, "ADD failed: {} {}", out.stdout, out.stderr);
        let ip = out.json().unwrap()["ips"][0]["address"].as_str().unwrap().to_string();
        assert!(ip.ends_with("/32"), "{ip}");
        ips.insert(ip);
    }
    assert_eq!(ips.len(), 50, "every pod has its own address");
    assert_eq!(allocated(&lab), before + 50);
    assert_eq!(lab.endpoints("node1").len(), 50);

    let dels: Vec<_> = nss
        .iter()
        .map(|ns| {
            let (lab, path, cid) = (lab.clone(), ns.path(), ns.name.clone());
            std::thread::spawn(move || lab.cni("node1", "DEL", &cid, &path, "1.0.0"))
        })
        .collect();
    for h in dels {
        let out = h.join().unwrap();
        assert!(out.success, "DEL failed: {} {}", out.stdout, out.stderr);
    }
    lab.settled("node1");
    assert_eq!(allocated(&lab), before, "all 50 addresses are free again");
    assert!(lab.endpoints("node1").is_empty());
    assert!(!host_links(&lab).contains("lxc"), "no lxc device left");
    drop(nss);
}

#[test]
fn del_is_idempotent_and_add_twice_returns_the_same_attachment() {
    let lab = TestLab::up("idem", 1, 0);
    let ns = TempNetns::new(&format!("weft-{}-x", lab.name()));
    // DEL of a container that was never added.
    let out = lab.cni("node1", "DEL", "never-added", &ns.path(), "1.1.0");
    assert!(out.success, "{} {}", out.stdout, out.stderr);

    let first = lab.cni("node1", "ADD", "c1", &ns.path(), "1.1.0");
    assert!(first.success, "{} {}", first.stdout, first.stderr);
    let r = first.json().unwrap();
    assert_eq!(r["cniVersion"], "1.1.0", "answers in the version it was asked for");
    let second = lab.cni("node1", "ADD", "c1", &ns.path(), "1.1.0");
    assert!(second.success, "{} {}", second.stdout, second.stderr);
    assert_eq!(second.json().unwrap()["ips"], r["ips"], "ADD twice: same address");
    assert_eq!(allocated(&lab), 1);

    // CHECK with the runtime's cached result.
    let mut conf = weft_lab::cni::plugin_config(&lab.lab.node("node1").unwrap().socket, "1.1.0");
    conf["prevResult"] = r.clone();
    let out = lab.cni_with("node1", "CHECK", "c1", &ns.path(), &conf);
    assert!(out.success, "CHECK: {} {}", out.stdout, out.stderr);
    // A CHECK that expects another address fails.
    conf["prevResult"]["ips"][0]["address"] = "10.244.1.77/32".into();
    let out = lab.cni_with("node1", "CHECK", "c1", &ns.path(), &conf);
    assert!(!out.success);

    for _ in 0..2 {
        let out = lab.cni("node1", "DEL", "c1", &ns.path(), "1.1.0");
        assert!(out.success, "DEL (repeated): {} {}", out.stdout, out.stderr);
    }
    lab.settled("node1");
    assert_eq!(allocated(&lab), 0);

    // DEL after the netns is gone.
    let ns2 = TempNetns::new(&format!("weft-{}-y", lab.name()));
    assert!(lab.cni("node1", "ADD", "c2", &ns2.path(), "1.0.0").success);
    let path = ns2.path();
    drop(ns2);
    let out = lab.cni("node1", "DEL", "c2", &path, "1.0.0");
    assert!(out.success, "DEL with vanished netns: {} {}", out.stdout, out.stderr);
    lab.settled("node1");
    assert_eq!(allocated(&lab), 0);
}

#[test]
fn failed_add_leaves_nothing_behind() {
    let lab = TestLab::up("fail", 1, 0);
    let links_before = host_links(&lab);
    // Not a network namespace.
    let out = lab.cni("node1", "ADD", "bad1", "/tmp", "1.0.0");
    assert!(!out.success);
    let err = out.json().unwrap();
    assert_eq!(err["code"], 102, "{err}");
    assert!(err["details"].as_str().unwrap().contains("/tmp"), "{err}");
    // An eth0 already exists in the pod: veth creation fails half-way.
    let ns = TempNetns::new(&format!("weft-{}-z", lab.name()));
    weft_net::netns::run_in(std::path::Path::new(&ns.path()), || {
        weft_net::ip::run(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
    })
    .unwrap();
    let out = lab.cni("node1", "ADD", "bad2", &ns.path(), "1.0.0");
    assert!(!out.success, "{}", out.stdout);
    assert_eq!(out.json().unwrap()["code"], 103);
    assert_eq!(allocated(&lab), 0, "no address held");
    assert!(lab.endpoints("node1").is_empty());
    assert_eq!(host_links(&lab), links_before, "no device left on the node");
}

#[test]
fn gc_releases_attachments_the_runtime_no_longer_knows() {
    let lab = TestLab::up("gc", 1, 0);
    let a = TempNetns::new(&format!("weft-{}-a", lab.name()));
    let b = TempNetns::new(&format!("weft-{}-b", lab.name()));
    assert!(lab.cni("node1", "ADD", "keep", &a.path(), "1.1.0").success);
    assert!(lab.cni("node1", "ADD", "drop", &b.path(), "1.1.0").success);
    let mut conf = weft_lab::cni::plugin_config(&lab.lab.node("node1").unwrap().socket, "1.1.0");
    conf["cni.dev/valid-attachments"] = serde_json::json!([{ "containerID": "keep", "ifname": "eth0" }]);
    let out = lab.cni_with("node1", "GC", "", "", &conf);
    assert!(out.success, "GC: {} {}", out.stdout, out.stderr);
    lab.settled("node1");
    let eps = lab.endpoints("node1");
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].container_id, "keep");
    assert_eq!(allocated(&lab), 1);
    // STATUS: the node can serve ADD.
    let out = lab.cni("node1", "STATUS", "", "", "1.1.0");
    assert!(out.success, "STATUS: {} {}", out.stdout, out.stderr);
}

#[test]
fn mtu_from_the_network_config_reaches_both_ends() {
    let lab = TestLab::up("mtu", 1, 0);
    let ns = TempNetns::new(&format!("weft-{}-m", lab.name()));
    let mut conf = weft_lab::cni::plugin_config(&lab.lab.node("node1").unwrap().socket, "1.1.0");
    conf["mtu"] = 1400.into();
    let out = lab.cni_with("node1", "ADD", "m1", &ns.path(), &conf);
    assert!(out.success, "{} {}", out.stdout, out.stderr);
    let r = out.json().unwrap();
    assert_eq!(r["interfaces"][1]["mtu"], 1400);
    let host_dev = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    let pod = weft_net::netns::run_in(std::path::Path::new(&ns.path()), || {
        weft_net::ip::output(&["link", "show", "eth0"])
    })
    .unwrap();
    assert!(pod.contains("mtu 1400"), "{pod}");
    let host = lab.ok("node1", &["ip", "link", "show", &host_dev]);
    assert!(host.contains("mtu 1400"), "{host}");
    // An MTU no link can have is refused before anything is created.
    conf["mtu"] = 100.into();
    let out = lab.cni_with("node1", "ADD", "m2", &ns.path(), &conf);
    assert_eq!(out.json().unwrap()["code"], 7);
}
