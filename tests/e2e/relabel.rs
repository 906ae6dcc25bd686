//! A running pod's labels change (`weft pod label`): its identity follows in
//! the endpoint table, the lxc-side endpoint map and every other node's
//! ipcache, traffic keeps flowing, and an identity nobody uses any more is
//! released.

use std::time::{Duration, Instant};
use weft_e2e::TestLab;

fn ping(lab: &TestLab, from: &str, to: &str) -> bool {
    lab.exec(from, &["ping", "-c", "1", "-W", "2", to]).status.success()
}

fn identity_on(lab: &TestLab, node: &str, ip: &str) -> Option<u32> {
    lab.ipcache(node).into_iter().find(|e| e.prefix == format!("{ip}/32")).map(|e| e.identity)
}

#[test]
fn relabelling_a_running_pod_moves_it_to_a_new_identity_everywhere() {
    let lab = TestLab::up("relabel", 2, 1);
    let ip = lab.pod_ip("pod1-1");
    let before = lab.endpoints("node1").into_iter().find(|e| e.ipv4.to_string() == ip).unwrap();
    assert!(ping(&lab, "pod2-1", &ip), "cross-node ping before the relabel");
    lab.eventually(Duration::from_secs(5), "node2 knows the pod's identity", || {
        identity_on(&lab, "node2", &ip) == Some(before.identity)
    });

    let t0 = Instant::now();
    let out = lab.weft("node1", &["pod", "label", "default/pod1-1", "app=relabelled", "tier=x"]);
    assert!(out.status.success(), "weft pod label: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("app=relabelled") && stdout.contains("1 endpoint"), "{stdout}");

    // This node: at once, in the endpoint table and the endpoint map.
    let after = lab.endpoints("node1").into_iter().find(|e| e.ipv4.to_string() == ip).unwrap();
    assert_ne!(after.identity, before.identity, "a new label set is a new identity");
    assert!(after.labels.iter().any(|l| l.contains("app=relabelled")), "{:?}", after.labels);
    let bpf = lab.weft("node1", &["bpf", "endpoint", "list", "-o", "json"]);
    let bpf: serde_json::Value = serde_json::from_slice(&bpf.stdout).unwrap();
    let entry = bpf.as_array().unwrap().iter().find(|e| e["ip"] == ip.as_str()).expect("endpoint map entry");
    assert_eq!(entry["identity"], after.identity, "weft_endpoints carries the new identity");

    // The other node: within a second.
    lab.eventually(Duration::from_secs(1), "node2's ipcache has the new identity", || {
        identity_on(&lab, "node2", &ip) == Some(after.identity)
    });
    let took = t0.elapsed();
    eprintln!("relabel reached node2's ipcache in {took:?}");
    lab.eventually(Duration::from_secs(2), "node1's own ipcache entry follows", || {
        identity_on(&lab, "node1", &ip) == Some(after.identity)
    });
    assert!(ping(&lab, "pod2-1", &ip), "cross-node ping after the relabel");

    // Back to the first label set (k- removes): the pod shares identity
    // again with pod2-1 (same labels), and the identity only it used is
    // released.
    let out = lab.weft("node1", &["pod", "label", "default/pod1-1", "tier-", "app=web"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = lab.endpoints("node1").into_iter().find(|e| e.ipv4.to_string() == ip).unwrap();
    assert_eq!(again.labels, before.labels, "back to the original labels");
    assert_eq!(again.identity, before.identity, "the same labels are the same identity");
    let ids = lab.weft("node1", &["identity", "list", "-o", "json"]);
    let ids: serde_json::Value = serde_json::from_slice(&ids.stdout).unwrap();
    assert!(
        !ids.as_array().unwrap().iter().any(|i| i["id"] == after.identity),
        "identity {} had no other user and is released: {ids}",
        after.identity
    );
    lab.eventually(Duration::from_secs(2), "node2 follows back", || {
        identity_on(&lab, "node2", &ip) == Some(before.identity)
    });
    lab.assert_consistent("node1");
}
