//! The datapath attached the legacy way (clsact qdisc + cls_bpf
//! direct-action filter), as on kernels without tcx (Debian 12's 6.1,
//! Ubuntu 22.04's 5.15): the agents are forced to it with WEFT_TC_MODE and
//! the foundation checks must hold, across nodes too; an agent restart
//! leaves exactly one filter per device.

use weft_e2e::{TestLab, checks};

const LEGACY: (&str, &str) = ("WEFT_TC_MODE", "legacy");

/// Lines of `tc filter show dev DEV HOOK` in a node that are filters (the
/// per-priority header line has no handle).
fn filters(lab: &TestLab, node: &str, dev: &str, hook: &str) -> Vec<String> {
    lab.ok(node, &["tc", "filter", "show", "dev", dev, hook])
        .lines()
        .filter(|l| l.contains(" handle "))
        .map(str::to_string)
        .collect()
}

/// Every device weft attaches to on a node, with its hook and program:
/// from-container on each pod's lxc ingress, from-host on weft_host egress,
/// from-overlay on weft_vxlan ingress.
fn attach_points(lab: &TestLab, node: &str) -> Vec<(String, &'static str, &'static str)> {
    let mut v: Vec<_> =
        lab.endpoints(node).into_iter().map(|e| (e.ifname, "ingress", "from_container")).collect();
    v.push(("weft_host".into(), "egress", "from_host"));
    v.push(("weft_vxlan".into(), "ingress", "from_overlay"));
    v
}

/// Exactly one direct-action filter of weft's program on every attach
/// point, and no tcx link pinned anywhere.
fn assert_one_filter_each_and_no_pins(lab: &TestLab, node: &str) {
    for (dev, hook, prog) in attach_points(lab, node) {
        let f = filters(lab, node, &dev, hook);
        assert_eq!(f.len(), 1, "{node} {dev} {hook}: exactly one filter, got {f:#?}");
        assert!(f[0].contains(prog) && f[0].contains("direct-action"), "{node} {dev} {hook}: {f:?}");
    }
    let bpffs = &lab.lab.node(node).unwrap().bpffs;
    let pins: Vec<_> = std::fs::read_dir(weft_datapath::loader::pin_dir(bpffs).join("links"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(pins.is_empty(), "{node}: legacy mode pins no tcx link: {pins:?}");
}

fn agent_log(lab: &TestLab, node: &str) -> String {
    std::fs::read_to_string(lab.lab.node(node).unwrap().state_dir.join("agent.log")).unwrap()
}

#[test]
fn two_nodes_on_legacy_tc_pass_the_foundation_checks_and_survive_a_restart() {
    let mut lab = TestLab::up_with("legacy", 2, 2, |o| {
        o.agent_env = vec![(LEGACY.0.into(), LEGACY.1.into())];
    });
    for node in ["node1", "node2"] {
        let log = agent_log(&lab, node);
        assert!(
            log.contains("datapath attach: legacy tc (clsact qdisc, cls_bpf direct-action filter) (forced by --tc-mode legacy)"),
            "{node} says which attach it uses:\n{log}"
        );
        // (The lab's etcd speaks plain http here: the agent says what that means.)
        assert!(
            log.contains("etcd at http://198.18.0.2:2379 without TLS: anyone on the network can read and change the cluster state; use --etcd-ca/--etcd-cert/--etcd-key"),
            "{log}"
        );
        assert_one_filter_each_and_no_pins(&lab, node);
    }
    let lxc = &lab.endpoints("node1")[0].ifname;
    let shown = lab.ok("node1", &["tc", "filter", "show", "dev", lxc, "ingress"]);
    assert!(shown.contains("from_container direct-action"), "{shown}");

    // The foundation checks.
    checks::ping(&lab, "pod1-1", &lab.pod_ip("pod1-2"), 3);
    checks::ping(&lab, "pod1-1", &lab.pod_ip("pod2-1"), 3);
    checks::ping(&lab, "pod2-2", &lab.pod_ip("pod1-2"), 3);
    checks::node_and_pod_reach_each_other(&lab, "node1", "pod1-1");
    checks::spoofed_source_dropped(&lab, "node1", "pod1-1", "pod1-2");

    // A restarted agent finds its filters through netlink and swaps its
    // programs into them: nothing doubles, nothing is lost.
    lab.restart_agent_env("node1", &[LEGACY]);
    let log = agent_log(&lab, "node1");
    assert!(log.contains("2 endpoints adopted from pinned state, 0 repaired"), "{log}");
    assert!(lab.status("node1").datapath_attached);
    assert_one_filter_each_and_no_pins(&lab, "node1");
    checks::ping(&lab, "pod1-2", &lab.pod_ip("pod1-1"), 2);
    checks::ping(&lab, "pod1-2", &lab.pod_ip("pod2-2"), 2);
    checks::ping(&lab, "node1", &lab.pod_ip("pod1-1"), 1);
}
