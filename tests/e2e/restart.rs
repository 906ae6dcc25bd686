//! The agent is not on the packet path: kill it with SIGKILL during a ping
//! and restart it — not one reply is lost, and the new agent adopts the
//! pinned state. Also: on start it returns addresses whose netns is gone.

use std::time::Duration;
use weft_e2e::{TempNetns, TestLab};

fn kill_agent(lab: &TestLab, node: &str) {
    let pid = lab.lab.node(node).unwrap().pid;
    // SAFETY: plain kill(2) of the agent we started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    std::thread::sleep(Duration::from_millis(200));
}

fn restart_agent(lab: &mut TestLab, node: &str) {
    let pid = weft_lab::lifecycle::restart_agent(&lab.lab, node).unwrap();
    lab.lab.nodes.iter_mut().find(|n| n.name == node).unwrap().pid = pid;
}

#[test]
fn sigkill_of_the_agent_loses_no_ping_reply() {
    let mut lab = TestLab::up("kill", 1, 2);
    let ids_before: Vec<u16> = lab.endpoints("node1").iter().map(|e| e.id).collect();
    let b = lab.pod_ip("pod1-2");
    let netns = lab.netns_path("pod1-1");
    // 10 pings per second for 5 seconds while the agent dies and comes back.
    let ping = weft_e2e::spawn_in_ns(&netns, move || {
        std::process::Command::new("ping").args(["-c", "50", "-i", "0.1", "-W", "2", &b]).output().unwrap()
    });
    std::thread::sleep(Duration::from_millis(1000));
    kill_agent(&lab, "node1");
    assert!(lab.client("node1").call(&weft_api::Request::AgentStatus).is_err(), "agent is down");
    std::thread::sleep(Duration::from_millis(1500));
    restart_agent(&mut lab, "node1");
    let out = ping.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("50 packets transmitted, 50 received"), "{text}");

    let st = lab.status("node1");
    assert!(st.adopted_pins, "the restarted agent found the pinned maps");
    assert!(st.datapath_attached);
    let ids_after: Vec<u16> = lab.endpoints("node1").iter().map(|e| e.id).collect();
    assert_eq!(ids_before, ids_after);
    let log = std::fs::read_to_string(lab.lab.node("node1").unwrap().state_dir.join("agent.log")).unwrap();
    assert!(log.contains("2 endpoints adopted from pinned state, 0 repaired"), "{log}");
    // New pods still work after the restart.
    let out = lab.ok("pod1-2", &["ping", "-c", "1", "-W", "2", &lab.pod_ip("pod1-1")]);
    assert!(out.contains("1 received"));
}

#[test]
fn restart_returns_addresses_whose_netns_is_gone() {
    let mut lab = TestLab::up("recon", 1, 1);
    let ns = TempNetns::new(&format!("weft-{}-gone", lab.name()));
    assert!(lab.cni("node1", "ADD", "gone", &ns.path(), "1.0.0").success);
    assert_eq!(lab.status("node1").ipam_allocated, 2);
    kill_agent(&lab, "node1");
    drop(ns);
    restart_agent(&mut lab, "node1");
    let st = lab.status("node1");
    assert_eq!(st.ipam_allocated, 1, "the vanished pod's address is free again");
    let eps = lab.endpoints("node1");
    assert_eq!(eps.len(), 1);
    assert!(eps[0].container_id.ends_with("pod1-1"));
    let out = lab.ok("node1", &["ping", "-c", "1", "-W", "2", &lab.pod_ip("pod1-1")]);
    assert!(out.contains("1 received"));
}
