//! The ipcache follows the store's watch: a node whose watch missed events
//! and then found its revision compacted re-lists, and ends with exactly
//! the entries a fresh listing gives (nothing lost, nothing stale); pods
//! added while it was away are reachable.

use std::{collections::BTreeSet, path::Path, time::Duration};
use weft_e2e::{TempNetns, TestLab};
use weft_store::Store;

const T: Duration = Duration::from_secs(10);

/// Pod /32s in a node's ipcache.
fn pod_entries(lab: &TestLab, node: &str) -> BTreeSet<String> {
    lab.ipcache(node).into_iter().filter(|e| !e.node && e.prefix.ends_with("/32")).map(|e| e.prefix).collect()
}

/// Pod addresses a node's agent has.
fn endpoints_of(lab: &TestLab, node: &str) -> BTreeSet<String> {
    lab.endpoints(node).into_iter().map(|e| format!("{}/32", e.ipv4)).collect()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test's lab started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill({pid}, {sig})");
}

/// Compacts the lab's etcd at its current revision (from the underlay
/// namespace, where etcd listens).
fn compact_etcd(lab: &TestLab) {
    let url = lab.lab.etcd_url.clone().unwrap();
    let ns = format!("/run/netns/{}", weft_lab::layout::underlay_ns(lab.name()));
    weft_net::netns::run_in(Path::new(&ns), move || {
        let s =
            weft_store::EtcdStore::new(&[url], "/weft/", None).map_err(|e| weft_net::Error(e.to_string()))?;
        let (_, rev) = s.list_at("nodes/").map_err(|e| weft_net::Error(e.to_string()))?;
        s.compact(rev).map_err(|e| weft_net::Error(e.to_string()))
    })
    .unwrap();
}

#[test]
fn a_watch_that_missed_a_compaction_relists_and_loses_nothing() {
    let mut lab = TestLab::up_with("watchcmp", 2, 1, |o| o.lease_ttl = 20);
    let want = |lab: &TestLab| &endpoints_of(lab, "node1") | &endpoints_of(lab, "node2");
    lab.eventually(T, "node2's ipcache has every pod", || pod_entries(&lab, "node2") == want(&lab));

    let nss: Vec<TempNetns> = (0..3).map(|i| TempNetns::new(&format!("weft-{}-w{i}", lab.name()))).collect();
    let add = |lab: &TestLab, i: usize| {
        let out = lab.cni("node1", "ADD", &format!("late{i}"), &nss[i].path(), "1.0.0");
        assert!(out.success, "ADD late{i}: {} {}", out.stdout, out.stderr);
    };
    add(&lab, 0);
    lab.eventually(T, "node2 knows late0", || pod_entries(&lab, "node2") == want(&lab));

    // node2's agent is frozen and etcd restarts under it (its watch is
    // gone, and no event reaches it) while node1 removes late0, adds late1
    // and late2, and the history is compacted: node2 must resume from a
    // revision that no longer exists, and forget late0.
    let node2 = lab.lab.node("node2").unwrap().pid;
    signal(node2, libc::SIGSTOP);
    let pid = weft_lab::lifecycle::restart_etcd(&lab.lab).unwrap();
    lab.lab.etcd_pid = Some(pid);
    // (Added first, so late0's address is not handed out again.)
    add(&lab, 1);
    add(&lab, 2);
    let out = lab.cni("node1", "DEL", "late0", &nss[0].path(), "1.0.0");
    assert!(out.success, "DEL late0: {} {}", out.stdout, out.stderr);
    compact_etcd(&lab);
    signal(node2, libc::SIGCONT);

    lab.eventually(T, "node2's ipcache equals a fresh listing", || pod_entries(&lab, "node2") == want(&lab));
    assert_eq!(pod_entries(&lab, "node2").len(), 4, "2 lab pods + late1 + late2 (late0 is gone)");
    let log = std::fs::read_to_string(lab.lab.node("node2").unwrap().state_dir.join("agent.log")).unwrap();
    assert!(
        log.contains("follow endpoints: re-listed after compaction"),
        "node2 says it re-listed after the compaction:\n{log}"
    );
    // A pod added while node2 was away is reachable from node2's pod.
    let late2 = lab.endpoints("node1").into_iter().find(|e| e.container_id == "late2").unwrap().ipv4;
    let ping = lab.exec("pod2-1", &["ping", "-c", "1", "-W", "2", &late2.to_string()]);
    assert!(ping.status.success(), "pod2-1 -> late2 ({late2})");
    for (i, ns) in nss.iter().enumerate() {
        let _ = lab.cni("node1", "DEL", &format!("late{i}"), &ns.path(), "1.0.0");
    }
}
