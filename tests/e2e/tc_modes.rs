//! The two ways weft's programs hang on devices, each forced on every
//! device with WEFT_TC_MODE (the default, `auto`, mixes them: tcx on node
//! devices, legacy on pod devices — `TestLab::assert_consistent` checks
//! pods attach the way the agent reports in every other test):
//! - legacy (clsact qdisc + cls_bpf direct-action filter), as on kernels
//!   without tcx (Debian 12's 6.1, Ubuntu 22.04's 5.15);
//! - tcx links on pod devices too.
//!
//! The foundation checks must hold across nodes, and an agent restart
//! leaves exactly one attachment per device.

use weft_e2e::{TestLab, checks};

const LEGACY: (&str, &str) = ("WEFT_TC_MODE", "legacy");
const TCX: (&str, &str) = ("WEFT_TC_MODE", "tcx");

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

/// Every attach point holds a pinned tcx link and no tc filter of weft's.
fn assert_links_and_no_filters(lab: &TestLab, node: &str) {
    let bpffs = &lab.lab.node(node).unwrap().bpffs;
    let links = weft_datapath::loader::pin_dir(bpffs).join("links");
    for (dev, hook, _) in attach_points(lab, node) {
        assert!(links.join(format!("{dev}_{hook}")).exists(), "{node} {dev} {hook}: no pinned link");
        let f = filters(lab, node, &dev, hook);
        assert!(f.is_empty(), "{node} {dev} {hook}: tcx mode adds no tc filter: {f:#?}");
    }
}

#[test]
fn pods_on_tcx_pass_the_foundation_checks_and_survive_a_restart() {
    let mut lab = TestLab::up_with("tcx", 2, 2, |o| {
        o.agent_env = vec![(TCX.0.into(), TCX.1.into())];
    });
    for node in ["node1", "node2"] {
        let log = agent_log(&lab, node);
        assert!(
            log.contains("datapath attach: tcx links (pinned in bpffs) (forced by --tc-mode tcx)"),
            "{node} says which attach it uses:\n{log}"
        );
        let st = lab.status(node);
        assert_eq!((st.attach_node.as_str(), st.attach_pods.as_str()), ("tcx", "tcx"));
        assert_links_and_no_filters(&lab, node);
        lab.assert_consistent(node);
    }
    checks::ping(&lab, "pod1-1", &lab.pod_ip("pod1-2"), 2);
    checks::ping(&lab, "pod1-1", &lab.pod_ip("pod2-1"), 2);
    checks::spoofed_source_dropped(&lab, "node1", "pod1-1", "pod1-2");

    lab.restart_agent_env("node1", &[TCX]);
    let log = agent_log(&lab, "node1");
    assert!(log.contains("2 endpoints adopted from pinned state, 0 repaired"), "{log}");
    assert_links_and_no_filters(&lab, "node1");
    lab.assert_consistent("node1");
    checks::ping(&lab, "pod1-2", &lab.pod_ip("pod2-2"), 2);
}

/// The default: tcx on the node's devices, a filter on each pod device,
/// and the agent says so.
#[test]
fn auto_uses_tcx_for_node_devices_and_legacy_tc_for_pods() {
    let lab = TestLab::up("auto", 1, 1);
    let log = agent_log(&lab, "node1");
    assert!(
        log.contains("datapath attach: node devices: tcx links (pinned in bpffs); pod devices: legacy tc (clsact qdisc, cls_bpf direct-action filter) (the kernel has tcx; pod devices use legacy tc"),
        "{log}"
    );
    let st = lab.status("node1");
    assert_eq!((st.attach_node.as_str(), st.attach_pods.as_str()), ("tcx", "legacy"));
    let links = weft_datapath::loader::pin_dir(&lab.lab.node("node1").unwrap().bpffs).join("links");
    assert!(links.join("weft_host_egress").exists(), "weft_host has its tcx link");
    let lxc = &lab.endpoints("node1")[0].ifname;
    assert_eq!(filters(&lab, "node1", lxc, "ingress").len(), 1);
    assert!(!links.join(format!("{lxc}_ingress")).exists(), "the pod device has no tcx link");
    lab.assert_consistent("node1");
}
