//! Connectivity truth tables in the style of the upstream Kubernetes
//! netpol e2e suite and cyclonus: namespaces x, y, z × pods a, b, c (and
//! an outside address w), probed on TCP 80, TCP 81 and UDP 80.
//!
//! Each grid is written out: rows are the client, columns the server;
//! `.` the connection is allowed (egress at the client and ingress at the
//! server), `X` it is not, `-` not probed (a pod to itself bypasses policy
//! in the datapath; w to w is not in the cluster). Every probe is checked
//! with `decide` and with `lookup` over the compiled maps, which must also
//! agree on the exact verdict (rule, log flag).

mod common;

use common::{NAMES, cnp, gnp, knp, lab};
use serde_json::{Value, json};
use weft_policy::{Direction, RuleRef};

const TCP80: (u8, u16) = (6, 80);
const TCP81: (u8, u16) = (6, 81);
const UDP80: (u8, u16) = (17, 80);
const ALL: &[(u8, u16)] = &[TCP80, TCP81, UDP80];

/// Checks the grid for each of `ports`.
fn check(case: &str, policies: &[Value], tiers: &[(&str, f64)], grids: &[(&[(u8, u16)], &str)]) {
    let lab = lab(policies, tiers);
    for (ports, grid) in grids {
        let expected = parse(grid);
        for &(proto, port) in *ports {
            let mut got = String::new();
            let mut wrong = false;
            for (from, row) in expected.iter().enumerate() {
                for (to, want) in row.iter().enumerate() {
                    let cell = if from == to {
                        '-'
                    } else if lab.allowed(from, to, proto, port) {
                        '.'
                    } else {
                        'X'
                    };
                    wrong |= cell != *want;
                    got.push(cell);
                }
                got.push('\n');
            }
            assert!(!wrong, "{case}, {proto}/{port}: expected\n{grid}\ngot (rows {NAMES:?})\n{got}");
        }
    }
}

fn parse(grid: &str) -> Vec<Vec<char>> {
    let mut lines = grid.lines().map(str::trim).filter(|l| !l.is_empty());
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, NAMES);
    let rows: Vec<Vec<char>> = lines
        .enumerate()
        .map(|(i, l)| {
            let mut t = l.split_whitespace();
            assert_eq!(t.next(), Some(NAMES[i]));
            t.map(|c| c.chars().next().unwrap()).collect()
        })
        .collect();
    assert!(rows.len() == 10 && rows.iter().all(|r| r.len() == 10));
    rows
}

const ALL_ALLOWED: &str = "
        xa xb xc ya yb yc za zb zc w
    xa  -  .  .  .  .  .  .  .  .  .
    xb  .  -  .  .  .  .  .  .  .  .
    xc  .  .  -  .  .  .  .  .  .  .
    ya  .  .  .  -  .  .  .  .  .  .
    yb  .  .  .  .  -  .  .  .  .  .
    yc  .  .  .  .  .  -  .  .  .  .
    za  .  .  .  .  .  .  -  .  .  .
    zb  .  .  .  .  .  .  .  -  .  .
    zc  .  .  .  .  .  .  .  .  -  .
    w   .  .  .  .  .  .  .  .  .  -";

/// Nothing gets into namespace x.
const NOTHING_INTO_X: &str = "
        xa xb xc ya yb yc za zb zc w
    xa  -  X  X  .  .  .  .  .  .  .
    xb  X  -  X  .  .  .  .  .  .  .
    xc  X  X  -  .  .  .  .  .  .  .
    ya  X  X  X  -  .  .  .  .  .  .
    yb  X  X  X  .  -  .  .  .  .  .
    yc  X  X  X  .  .  -  .  .  .  .
    za  X  X  X  .  .  .  -  .  .  .
    zb  X  X  X  .  .  .  .  -  .  .
    zc  X  X  X  .  .  .  .  .  -  .
    w   X  X  X  .  .  .  .  .  .  -";

#[test]
fn no_policy_allows_everything() {
    check("no policy", &[], &[], &[(ALL, ALL_ALLOWED)]);
}

#[test]
fn default_deny_ingress() {
    let p = knp("x", "deny-in", json!({"podSelector": {}, "policyTypes": ["Ingress"]}));
    check("default deny ingress", &[p], &[], &[(ALL, NOTHING_INTO_X)]);
}

#[test]
fn default_deny_egress() {
    let p = knp("x", "deny-out", json!({"podSelector": {}, "policyTypes": ["Egress"]}));
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  X  X  X  X  X  X  X  X  X
        xb  X  -  X  X  X  X  X  X  X  X
        xc  X  X  -  X  X  X  X  X  X  X
        ya  .  .  .  -  .  .  .  .  .  .
        yb  .  .  .  .  -  .  .  .  .  .
        yc  .  .  .  .  .  -  .  .  .  .
        za  .  .  .  .  .  .  -  .  .  .
        zb  .  .  .  .  .  .  .  -  .  .
        zc  .  .  .  .  .  .  .  .  -  .
        w   .  .  .  .  .  .  .  .  .  -";
    check("default deny egress", &[p], &[], &[(ALL, grid)]);
}

#[test]
fn allow_all_beside_deny_all() {
    let deny = knp("x", "deny-in", json!({"podSelector": {}, "policyTypes": ["Ingress"]}));
    let allow = knp("x", "allow-in", json!({"podSelector": {}, "ingress": [{}]}));
    check("allow all + deny all", &[deny, allow], &[], &[(ALL, ALL_ALLOWED)]);
}

#[test]
fn allow_from_same_namespace() {
    let p = knp("x", "same-ns", json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}));
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  .  -  .  .  .  .  .  .  .  .
        xc  .  .  -  .  .  .  .  .  .  .
        ya  X  X  X  -  .  .  .  .  .  .
        yb  X  X  X  .  -  .  .  .  .  .
        yc  X  X  X  .  .  -  .  .  .  .
        za  X  X  X  .  .  .  -  .  .  .
        zb  X  X  X  .  .  .  .  -  .  .
        zc  X  X  X  .  .  .  .  .  -  .
        w   X  X  X  .  .  .  .  .  .  -";
    check("same namespace", &[p], &[], &[(ALL, grid)]);
}

#[test]
fn allow_from_namespace_by_label() {
    let p = knp(
        "x",
        "from-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  X  -  .  .  .  .  .  .  .  .
        xc  X  .  -  .  .  .  .  .  .  .
        ya  .  .  .  -  .  .  .  .  .  .
        yb  .  .  .  .  -  .  .  .  .  .
        yc  .  .  .  .  .  -  .  .  .  .
        za  X  .  .  .  .  .  -  .  .  .
        zb  X  .  .  .  .  .  .  -  .  .
        zc  X  .  .  .  .  .  .  .  -  .
        w   X  .  .  .  .  .  .  .  .  -";
    check("from namespace y", &[p], &[], &[(ALL, grid)]);
}

#[test]
fn pod_and_namespace_selector_in_one_peer_is_and() {
    let p = knp(
        "x",
        "and",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                      "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  X  -  .  .  .  .  .  .  .  .
        xc  X  .  -  .  .  .  .  .  .  .
        ya  X  .  .  -  .  .  .  .  .  .
        yb  .  .  .  .  -  .  .  .  .  .
        yc  X  .  .  .  .  -  .  .  .  .
        za  X  .  .  .  .  .  -  .  .  .
        zb  X  .  .  .  .  .  .  -  .  .
        zc  X  .  .  .  .  .  .  .  -  .
        w   X  .  .  .  .  .  .  .  .  -";
    check("AND", &[p], &[], &[(ALL, grid)]);
}

#[test]
fn pod_and_namespace_selector_in_two_peers_is_or() {
    let p = knp(
        "x",
        "or",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                                     {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  .  -  .  .  .  .  .  .  .  .
        xc  X  .  -  .  .  .  .  .  .  .
        ya  .  .  .  -  .  .  .  .  .  .
        yb  .  .  .  .  -  .  .  .  .  .
        yc  .  .  .  .  .  -  .  .  .  .
        za  X  .  .  .  .  .  -  .  .  .
        zb  X  .  .  .  .  .  .  -  .  .
        zc  X  .  .  .  .  .  .  .  -  .
        w   X  .  .  .  .  .  .  .  .  -";
    check("OR", &[p], &[], &[(ALL, grid)]);
}

#[test]
fn ip_block_with_except_covers_pod_addresses() {
    // Pods are 10.244.<ns id>.<n>: x is 10.244.1/24, y 10.244.2/24.
    let p = knp(
        "x",
        "cidr",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/24"]}}]}]}),
    );
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  .  -  .  .  .  .  .  .  .  .
        xc  .  .  -  .  .  .  .  .  .  .
        ya  X  .  .  -  .  .  .  .  .  .
        yb  X  .  .  .  -  .  .  .  .  .
        yc  X  .  .  .  .  -  .  .  .  .
        za  .  .  .  .  .  .  -  .  .  .
        zb  .  .  .  .  .  .  .  -  .  .
        zc  .  .  .  .  .  .  .  .  -  .
        w   X  .  .  .  .  .  .  .  .  -";
    check("ipBlock except", &[p], &[], &[(ALL, grid)]);
}

/// Only x/a's ingress is restricted: nothing but what the ports allow.
const NOTHING_INTO_XA: &str = "
        xa xb xc ya yb yc za zb zc w
    xa  -  .  .  .  .  .  .  .  .  .
    xb  X  -  .  .  .  .  .  .  .  .
    xc  X  .  -  .  .  .  .  .  .  .
    ya  X  .  .  -  .  .  .  .  .  .
    yb  X  .  .  .  -  .  .  .  .  .
    yc  X  .  .  .  .  -  .  .  .  .
    za  X  .  .  .  .  .  -  .  .  .
    zb  X  .  .  .  .  .  .  -  .  .
    zc  X  .  .  .  .  .  .  .  -  .
    w   X  .  .  .  .  .  .  .  .  -";

#[test]
fn named_port_on_ingress() {
    let p = knp(
        "x",
        "named",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
    );
    check("named ingress", &[p], &[], &[(&[TCP81], ALL_ALLOWED), (&[TCP80, UDP80], NOTHING_INTO_XA)]);
}

#[test]
fn named_port_on_egress_resolves_on_the_peer() {
    let p = knp(
        "x",
        "named-out",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"protocol": "UDP", "port": "serve-80-udp"}]}]}),
    );
    // The outside address has no named ports: nothing to w.
    let udp = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  .  -  .  .  .  .  .  .  .  X
        xc  .  .  -  .  .  .  .  .  .  .
        ya  .  .  .  -  .  .  .  .  .  .
        yb  .  .  .  .  -  .  .  .  .  .
        yc  .  .  .  .  .  -  .  .  .  .
        za  .  .  .  .  .  .  -  .  .  .
        zb  .  .  .  .  .  .  .  -  .  .
        zc  .  .  .  .  .  .  .  .  -  .
        w   .  .  .  .  .  .  .  .  .  -";
    let tcp = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  X  -  X  X  X  X  X  X  X  X
        xc  .  .  -  .  .  .  .  .  .  .
        ya  .  .  .  -  .  .  .  .  .  .
        yb  .  .  .  .  -  .  .  .  .  .
        yc  .  .  .  .  .  -  .  .  .  .
        za  .  .  .  .  .  .  -  .  .  .
        zb  .  .  .  .  .  .  .  -  .  .
        zc  .  .  .  .  .  .  .  .  -  .
        w   .  .  .  .  .  .  .  .  .  -";
    check("named egress", &[p], &[], &[(&[UDP80], udp), (&[TCP80, TCP81], tcp)]);
}

#[test]
fn end_port_range() {
    let p = knp(
        "x",
        "range",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80, "endPort": 81}]}]}),
    );
    check("endPort", &[p], &[], &[(&[TCP80, TCP81], ALL_ALLOWED), (&[UDP80], NOTHING_INTO_XA)]);
}

#[test]
fn multiple_policies_union() {
    let sel = json!({"matchLabels": {"pod": "a"}});
    let from_y_80 = knp(
        "x",
        "y-80",
        json!({"podSelector": sel, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                                                "ports": [{"port": 80}]}]}),
    );
    let from_z = knp(
        "x",
        "z-all",
        json!({"podSelector": sel, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}),
    );
    let tcp80 = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  X  -  .  .  .  .  .  .  .  .
        xc  X  .  -  .  .  .  .  .  .  .
        ya  .  .  .  -  .  .  .  .  .  .
        yb  .  .  .  .  -  .  .  .  .  .
        yc  .  .  .  .  .  -  .  .  .  .
        za  .  .  .  .  .  .  -  .  .  .
        zb  .  .  .  .  .  .  .  -  .  .
        zc  .  .  .  .  .  .  .  .  -  .
        w   X  .  .  .  .  .  .  .  .  -";
    let other = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  X  -  .  .  .  .  .  .  .  .
        xc  X  .  -  .  .  .  .  .  .  .
        ya  X  .  .  -  .  .  .  .  .  .
        yb  X  .  .  .  -  .  .  .  .  .
        yc  X  .  .  .  .  -  .  .  .  .
        za  .  .  .  .  .  .  -  .  .  .
        zb  .  .  .  .  .  .  .  -  .  .
        zc  .  .  .  .  .  .  .  .  -  .
        w   X  .  .  .  .  .  .  .  .  -";
    check("union", &[from_y_80, from_z], &[], &[(&[TCP80], tcp80), (&[TCP81, UDP80], other)]);
}

#[test]
fn egress_only_to_namespace_x() {
    let p = knp(
        "y",
        "to-x",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}]}),
    );
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  .  -  .  .  .  .  .  .  .  .
        xc  .  .  -  .  .  .  .  .  .  .
        ya  .  .  .  -  X  X  X  X  X  X
        yb  .  .  .  X  -  X  X  X  X  X
        yc  .  .  .  X  X  -  X  X  X  X
        za  .  .  .  .  .  .  -  .  .  .
        zb  .  .  .  .  .  .  .  -  .  .
        zc  .  .  .  .  .  .  .  .  -  .
        w   .  .  .  .  .  .  .  .  .  -";
    check("egress to x", &[p], &[], &[(ALL, grid)]);
}

#[test]
fn policy_types_without_rules_isolate() {
    let p = knp("z", "isolate", json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}));
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  X  X  X  .
        xb  .  -  .  .  .  .  X  X  X  .
        xc  .  .  -  .  .  .  X  X  X  .
        ya  .  .  .  -  .  .  X  X  X  .
        yb  .  .  .  .  -  .  X  X  X  .
        yc  .  .  .  .  .  -  X  X  X  .
        za  X  X  X  X  X  X  -  X  X  X
        zb  X  X  X  X  X  X  X  -  X  X
        zc  X  X  X  X  X  X  X  X  -  X
        w   .  .  .  .  .  .  X  X  X  -";
    check("policyTypes, no rules", &[p], &[], &[(ALL, grid)]);
}

// ---- Calico ----

#[test]
fn calico_deny_before_allow() {
    let deny = cnp(
        "x",
        "deny-ya",
        json!({"order": 10, "ingress": [{"action": "Deny",
                                         "source": {"selector": "pod == 'a'", "namespaceSelector": "ns == 'y'"}}]}),
    );
    let allow = cnp("x", "allow-all", json!({"order": 20, "ingress": [{"action": "Allow"}]}));
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  .  -  .  .  .  .  .  .  .  .
        xc  .  .  -  .  .  .  .  .  .  .
        ya  X  X  X  -  .  .  .  .  .  .
        yb  .  .  .  .  -  .  .  .  .  .
        yc  .  .  .  .  .  -  .  .  .  .
        za  .  .  .  .  .  .  -  .  .  .
        zb  .  .  .  .  .  .  .  -  .  .
        zc  .  .  .  .  .  .  .  .  -  .
        w   .  .  .  .  .  .  .  .  .  -";
    check("Deny before Allow", &[deny, allow], &[], &[(ALL, grid)]);
}

#[test]
fn calico_allow_before_deny_by_order() {
    // Listed deny first: order, not position, decides.
    let deny = cnp("x", "a-deny-all", json!({"order": 20, "ingress": [{"action": "Deny"}]}));
    let allow = cnp(
        "x",
        "b-allow-yb",
        json!({"order": 10, "ingress": [{"action": "Allow",
                                         "source": {"selector": "pod == 'b'", "namespaceSelector": "ns == 'y'"}}]}),
    );
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  X  X  .  .  .  .  .  .  .
        xb  X  -  X  .  .  .  .  .  .  .
        xc  X  X  -  .  .  .  .  .  .  .
        ya  X  X  X  -  .  .  .  .  .  .
        yb  .  .  .  .  -  .  .  .  .  .
        yc  X  X  X  .  .  -  .  .  .  .
        za  X  X  X  .  .  .  -  .  .  .
        zb  X  X  X  .  .  .  .  -  .  .
        zc  X  X  X  .  .  .  .  .  -  .
        w   X  X  X  .  .  .  .  .  .  -";
    check("Allow before Deny", &[deny, allow], &[], &[(ALL, grid)]);
}

#[test]
fn calico_pass_to_the_next_tier() {
    // Tier security (first): y passes on, the rest is denied. In the
    // default tier only x has a policy (from y/a); pods of y and z have
    // none there, so what passed is allowed.
    let security = gnp(
        "gate",
        json!({"tier": "security", "selector": "all()",
               "ingress": [{"action": "Pass", "source": {"namespaceSelector": "ns == 'y'"}},
                           {"action": "Deny"}]}),
    );
    let x = knp(
        "x",
        "from-ya",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                                         "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
    );
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  X  X  X  X  X  X  X  X  .
        xb  X  -  X  X  X  X  X  X  X  .
        xc  X  X  -  X  X  X  X  X  X  .
        ya  .  .  .  -  .  .  .  .  .  .
        yb  X  X  X  .  -  .  .  .  .  .
        yc  X  X  X  .  .  -  .  .  .  .
        za  X  X  X  X  X  X  -  X  X  .
        zb  X  X  X  X  X  X  X  -  X  .
        zc  X  X  X  X  X  X  X  X  -  .
        w   X  X  X  X  X  X  X  X  X  -";
    check("Pass", &[security, x], &[("security", 100.0)], &[(ALL, grid)]);
}

#[test]
fn calico_log_then_allow() {
    let p = cnp(
        "x",
        "log-y",
        json!({"ingress": [{"action": "Log", "source": {"namespaceSelector": "ns == 'y'"}},
                           {"action": "Allow", "protocol": "TCP"}]}),
    );
    let lab = common::lab(std::slice::from_ref(&p), &[]);
    let (from_y, _) = lab.verdicts(0, Direction::Ingress, 3, 6, 80);
    let (from_z, _) = lab.verdicts(0, Direction::Ingress, 6, 6, 80);
    let (udp_from_y, _) = lab.verdicts(0, Direction::Ingress, 3, 17, 80);
    assert!(from_y.allowed() && from_y.log);
    assert!(from_z.allowed() && !from_z.log);
    assert!(!udp_from_y.allowed() && udp_from_y.log, "logged, then denied at the end of the tier");
    assert!(matches!(udp_from_y.rule, RuleRef::EndOfTier { .. }));
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  .  -  .  .  .  .  .  .  .  .
        xc  .  .  -  .  .  .  .  .  .  .
        ya  .  .  .  -  .  .  .  .  .  .
        yb  .  .  .  .  -  .  .  .  .  .
        yc  .  .  .  .  .  -  .  .  .  .
        za  .  .  .  .  .  .  -  .  .  .
        zb  .  .  .  .  .  .  .  -  .  .
        zc  .  .  .  .  .  .  .  .  -  .
        w   .  .  .  .  .  .  .  .  .  -";
    check("Log then Allow", &[p], &[], &[(&[TCP80, TCP81], grid), (&[UDP80], NOTHING_INTO_X)]);
}

#[test]
fn calico_global_policy_with_namespace_selector() {
    let p = gnp(
        "z-not-to-x",
        json!({"namespaceSelector": "ns == 'z'",
               "egress": [{"action": "Deny", "destination": {"namespaceSelector": "ns == 'x'"}},
                          {"action": "Allow"}]}),
    );
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  .  -  .  .  .  .  .  .  .  .
        xc  .  .  -  .  .  .  .  .  .  .
        ya  .  .  .  -  .  .  .  .  .  .
        yb  .  .  .  .  -  .  .  .  .  .
        yc  .  .  .  .  .  -  .  .  .  .
        za  X  X  X  .  .  .  -  .  .  .
        zb  X  X  X  .  .  .  .  -  .  .
        zc  X  X  X  .  .  .  .  .  -  .
        w   .  .  .  .  .  .  .  .  .  -";
    check("global namespaceSelector", &[p], &[], &[(ALL, grid)]);
}

#[test]
fn calico_not_selector_in_a_namespaced_policy() {
    // As Calico converts it: pods of the policy's namespace, except pod=a.
    let p =
        cnp("x", "not-a", json!({"ingress": [{"action": "Allow", "source": {"notSelector": "pod == 'a'"}}]}));
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  X  X  .  .  .  .  .  .  .
        xb  .  -  .  .  .  .  .  .  .  .
        xc  .  .  -  .  .  .  .  .  .  .
        ya  X  X  X  -  .  .  .  .  .  .
        yb  X  X  X  .  -  .  .  .  .  .
        yc  X  X  X  .  .  -  .  .  .  .
        za  X  X  X  .  .  .  -  .  .  .
        zb  X  X  X  .  .  .  .  -  .  .
        zc  X  X  X  .  .  .  .  .  -  .
        w   X  X  X  .  .  .  .  .  .  -";
    check("notSelector, namespaced", &[p], &[], &[(ALL, grid)]);
}

#[test]
fn calico_not_selector_in_a_global_policy() {
    // No namespace restriction: everything but pods labelled pod=a,
    // outside addresses included.
    let p = gnp(
        "not-a",
        json!({"selector": "pod == 'c'", "ingress": [{"action": "Allow", "source": {"notSelector": "pod == 'a'"}}]}),
    );
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  X  .  .  X  .  .  X  .
        xb  .  -  .  .  .  .  .  .  .  .
        xc  .  .  -  .  .  .  .  .  .  .
        ya  .  .  X  -  .  X  .  .  X  .
        yb  .  .  .  .  -  .  .  .  .  .
        yc  .  .  .  .  .  -  .  .  .  .
        za  .  .  X  .  .  X  -  .  X  .
        zb  .  .  .  .  .  .  .  -  .  .
        zc  .  .  .  .  .  .  .  .  -  .
        w   .  .  .  .  .  .  .  .  .  -";
    check("notSelector, global", &[p], &[], &[(ALL, grid)]);
}

#[test]
fn calico_not_nets() {
    let p = gnp(
        "not-y-addresses",
        json!({"namespaceSelector": "ns == 'x'",
               "ingress": [{"action": "Allow", "source": {"notNets": ["10.244.2.0/24"]}}]}),
    );
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  .  .  .  .  .  .  .  .  .
        xb  .  -  .  .  .  .  .  .  .  .
        xc  .  .  -  .  .  .  .  .  .  .
        ya  X  X  X  -  .  .  .  .  .  .
        yb  X  X  X  .  -  .  .  .  .  .
        yc  X  X  X  .  .  -  .  .  .  .
        za  .  .  .  .  .  .  -  .  .  .
        zb  .  .  .  .  .  .  .  -  .  .
        zc  .  .  .  .  .  .  .  .  -  .
        w   .  .  .  .  .  .  .  .  .  -";
    check("notNets", &[p], &[], &[(ALL, grid)]);
}

#[test]
fn calico_not_ports() {
    let p = cnp(
        "x",
        "not-81",
        json!({"ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"notPorts": [81]}}]}),
    );
    check("notPorts", &[p], &[], &[(&[TCP80], ALL_ALLOWED), (&[TCP81, UDP80], NOTHING_INTO_X)]);
}

#[test]
fn calico_protocol_absent_is_any_protocol() {
    let p =
        cnp("x", "from-b", json!({"ingress": [{"action": "Allow", "source": {"selector": "pod == 'b'"}}]}));
    let grid = "
            xa xb xc ya yb yc za zb zc w
        xa  -  X  X  .  .  .  .  .  .  .
        xb  .  -  .  .  .  .  .  .  .  .
        xc  X  X  -  .  .  .  .  .  .  .
        ya  X  X  X  -  .  .  .  .  .  .
        yb  X  X  X  .  -  .  .  .  .  .
        yc  X  X  X  .  .  -  .  .  .  .
        za  X  X  X  .  .  .  -  .  .  .
        zb  X  X  X  .  .  .  .  -  .  .
        zc  X  X  X  .  .  .  .  .  -  .
        w   X  X  X  .  .  .  .  .  .  -";
    check("protocol absent", &[p], &[], &[(ALL, grid)]);
}
