//! etcd outages: a stopped etcd (longer than the lease TTL) costs no
//! cross-node packet, and a DEL while etcd is dead is finished when it
//! comes back — no stale record, no address reused under the dead pod's
//! identity.

use std::time::{Duration, Instant};
use weft_api::{PodLabels, Request};
use weft_e2e::{TempNetns, TestLab};

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) of the etcd this lab started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

fn has_prefix(lab: &TestLab, node: &str, ip: &str) -> Option<u32> {
    lab.ipcache(node).into_iter().find(|e| e.prefix == format!("{ip}/32")).map(|e| e.identity)
}

#[test]
fn etcd_stopped_longer_than_the_lease_costs_no_cross_node_reply() {
    let lab = TestLab::up("stop", 2, 1);
    let ttl = lab.lab.lease_ttl;
    let target = lab.pod_ip("pod2-1");
    lab.eventually(Duration::from_secs(10), "node1 to know pod2-1", || {
        has_prefix(&lab, "node1", &target).is_some()
    });
    lab.ok("pod1-1", &["ping", "-c", "1", "-W", "2", &target]);
    let ping = weft_e2e::spawn_in_ns(&lab.netns_path("pod1-1"), {
        let t = target.clone();
        move || {
            std::process::Command::new("ping")
                .args(["-c", "200", "-i", "0.1", "-W", "1", &t])
                .output()
                .unwrap()
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let etcd = lab.lab.etcd_pid.unwrap();
    signal(etcd, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(ttl + 3));
    signal(etcd, libc::SIGCONT);
    // While the leases expire and the nodes re-register, neither node may
    // lose the other's pods (or its own) from its ipcache.
    let resumed = Instant::now();
    let mine = lab.pod_ip("pod1-1");
    while resumed.elapsed() < Duration::from_secs(8) {
        assert!(has_prefix(&lab, "node1", &target).is_some(), "node1 lost pod2-1 after etcd resumed");
        assert!(has_prefix(&lab, "node2", &mine).is_some(), "node2 lost pod1-1 after etcd resumed");
        assert!(has_prefix(&lab, "node1", &mine).is_some(), "node1 lost its own pod");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = ping.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("200 packets transmitted, 200 received"), "{text}");
    // Both nodes are registered again.
    let nodes: Vec<weft_api::NodeView> = lab.client("node1").call_as(&Request::NodeList).unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
}

#[test]
fn del_while_etcd_is_dead_is_finished_when_it_returns() {
    let mut lab = TestLab::up("etcdel", 2, 1);
    let client = lab.client("node1");
    let label = |name: &str, app: &str| {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("app".to_string(), app.to_string());
        client
            .call(&Request::PodLabels(PodLabels {
                namespace: "default".into(),
                name: name.into(),
                labels,
                remove: vec![],
            }))
            .unwrap();
    };
    label("extra", "doomed");
    let ns = TempNetns::new(&format!("weft-{}-x", lab.name()));
    let out = lab.cni("node1", "ADD", "doomed", &ns.path(), "1.1.0");
    assert!(out.success, "{} {}", out.stdout, out.stderr);
    let ip = out.json().unwrap()["ips"][0]["address"].as_str().unwrap().trim_end_matches("/32").to_string();
    let doomed_id = lab.endpoints("node1").iter().find(|e| e.container_id == "doomed").unwrap().identity;
    lab.eventually(Duration::from_secs(5), "node2 learns the pod", || {
        has_prefix(&lab, "node2", &ip).is_some()
    });

    weft_lab::lifecycle::kill_and_wait(lab.lab.etcd_pid.unwrap());
    let out = lab.cni("node1", "DEL", "doomed", &ns.path(), "1.1.0");
    assert!(out.success, "DEL is done on the node and owes the store: {} {}", out.stdout, out.stderr);
    assert!(lab.endpoints("node1").iter().any(|e| e.container_id == "doomed" && e.state == "deleting"));
    let st = lab.status("node1");
    assert_eq!(st.ipam_allocated, 2, "the address stays reserved while the store owes it");
    assert_eq!(st.owed_removals, 1, "weft status says what is owed");
    let links = lab.ok("node1", &["ip", "-br", "link", "show"]);
    let lxc = links.lines().filter(|l| l.starts_with("lxc")).count();
    assert_eq!(lxc, 1, "only pod1-1's device is left: {links}");
    // An ADD cannot complete without the store: it says so, and holds nothing.
    let ns2 = TempNetns::new(&format!("weft-{}-y", lab.name()));
    let out = lab.cni("node1", "ADD", "newpod", &ns2.path(), "1.1.0");
    assert!(!out.success);
    assert_eq!(out.json().unwrap()["code"], 11, "try again later: {}", out.stdout);

    let pid = weft_lab::lifecycle::restart_etcd(&lab.lab).unwrap();
    lab.lab.etcd_pid = Some(pid);
    lab.eventually(Duration::from_secs(15), "the owed removal to finish", || {
        lab.endpoints("node1").iter().all(|e| e.container_id != "doomed")
    });
    assert_eq!(lab.status("node1").ipam_allocated, 1);
    assert_eq!(lab.status("node1").owed_removals, 0);
    lab.eventually(Duration::from_secs(5), "node2 to forget the dead pod", || {
        has_prefix(&lab, "node2", &ip).is_none()
    });

    // A new pod (another label set) may get the address now, and every
    // node gives it its own identity, never the dead pod's.
    label("extra", "newborn");
    let out = lab.cni("node1", "ADD", "newpod", &ns2.path(), "1.1.0");
    assert!(out.success, "{} {}", out.stdout, out.stderr);
    let new_ip =
        out.json().unwrap()["ips"][0]["address"].as_str().unwrap().trim_end_matches("/32").to_string();
    let new_id = lab.endpoints("node1").iter().find(|e| e.container_id == "newpod").unwrap().identity;
    let labels_of = |id: u32| {
        let idents: Vec<weft_api::IdentityView> =
            lab.client("node2").call_as(&Request::IdentityList).unwrap();
        idents.into_iter().find(|i| i.id == id).map(|i| i.labels).unwrap_or_default()
    };
    // The number may be reused (it was released), but only for the new set.
    assert!(
        labels_of(new_id).iter().any(|l| l.contains("newborn")),
        "{:?} (dead pod had {doomed_id})",
        labels_of(new_id)
    );
    lab.eventually(Duration::from_secs(5), "node2 to know the new pod", || {
        has_prefix(&lab, "node2", &new_ip) == Some(new_id)
    });
    let idents: Vec<weft_api::IdentityView> = client.call_as(&Request::IdentityList).unwrap();
    assert!(
        idents.iter().all(|i| !i.labels.iter().any(|l| l.contains("doomed"))),
        "the dead pod's identity is released: {idents:?}"
    );
}
