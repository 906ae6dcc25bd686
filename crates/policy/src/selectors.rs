//! Which identities each selector of the stored policies matches
//! (`weft policy selectors`): the question an operator asks first when a
//! policy does not do what they meant.

use crate::{
    PolicyDocument,
    eval::{Side, applies, entity_matches, k8s_peer_matches},
    model::{Cluster, PolicyRef},
};
use std::net::Ipv4Addr;

/// One selector of one policy and the identities it matches now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorMatch {
    pub policy: PolicyRef,
    /// Where in the policy: `spec.podSelector`, `spec.ingress[0].from[1]`.
    pub place: String,
    /// The selector as written (JSON for Kubernetes, Calico's syntax).
    pub selector: String,
    pub identities: Vec<u32>,
}

/// Every pod identity `f` matches, as the selector sees it (addresses do
/// not count here: this is about labels).
fn matching(cluster: &Cluster, f: impl Fn(&Side) -> bool) -> Vec<u32> {
    cluster
        .identities()
        .iter()
        .filter(|(_, i)| {
            let Some(ns) = cluster.namespace(&i.namespace) else { return false };
            f(&Side {
                pod: Some((&i.namespace, &ns.labels, &i.labels)),
                addr: Ipv4Addr::UNSPECIFIED,
                named_ports: None,
            })
        })
        .map(|(id, _)| *id)
        .collect()
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Every selector of every stored policy.
pub fn selector_matches(cluster: &Cluster) -> Vec<SelectorMatch> {
    let mut out = Vec::new();
    for (r, doc) in cluster.policies() {
        let mut add = |place: String, selector: String, identities: Vec<u32>| {
            out.push(SelectorMatch { policy: r.clone(), place, selector, identities });
        };
        let selects = |side: &Side| applies(doc, side);
        match doc {
            PolicyDocument::K8s(p) => {
                let ns = p.metadata.namespace_or_default();
                add("spec.podSelector".into(), json(&p.spec.pod_selector), matching(cluster, selects));
                let ingress = p.spec.ingress.iter().map(|r| &r.from);
                let egress = p.spec.egress.iter().map(|r| &r.to);
                for (dir, rules) in [("ingress", ingress.collect::<Vec<_>>()), ("egress", egress.collect())] {
                    for (i, peers) in rules.iter().enumerate() {
                        for (j, peer) in peers.iter().enumerate().filter(|(_, p)| p.ip_block.is_none()) {
                            let field = if dir == "ingress" { "from" } else { "to" };
                            add(
                                format!("spec.{dir}[{i}].{field}[{j}]"),
                                json(peer),
                                matching(cluster, |s| k8s_peer_matches(peer, ns, s)),
                            );
                        }
                    }
                }
            }
            PolicyDocument::Calico(_) | PolicyDocument::CalicoGlobal(_) => {
                let (spec, ns) = match doc {
                    PolicyDocument::Calico(p) => (&p.spec, Some(p.metadata.namespace_or_default())),
                    PolicyDocument::CalicoGlobal(p) => (&p.spec, None),
                    PolicyDocument::K8s(_) => unreachable!(),
                };
                add("spec.selector".into(), spec.selector.to_string(), matching(cluster, selects));
                for (dir, rules) in [("ingress", &spec.ingress), ("egress", &spec.egress)] {
                    for (i, rule) in rules.iter().enumerate() {
                        for (side, e) in [("source", &rule.source), ("destination", &rule.destination)] {
                            if e.selector.is_none()
                                && e.not_selector.is_none()
                                && e.namespace_selector.is_none()
                            {
                                continue;
                            }
                            // Labels only: nets are about addresses.
                            let labels_only = crate::calico_policy::EntityRule {
                                nets: vec![],
                                not_nets: vec![],
                                ports: vec![],
                                not_ports: vec![],
                                ..e.clone()
                            };
                            let text = [
                                ("selector", &e.selector),
                                ("notSelector", &e.not_selector),
                                ("namespaceSelector", &e.namespace_selector),
                            ]
                            .iter()
                            .filter_map(|(k, v)| v.as_ref().map(|s| format!("{k}: {s}")))
                            .collect::<Vec<_>>()
                            .join(", ");
                            add(
                                format!("spec.{dir}[{i}].{side}"),
                                text,
                                matching(cluster, |s| entity_matches(&labels_only, ns, s)),
                            );
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Identity, Labels};

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn each_selector_lists_the_identities_it_matches() {
        let mut c = Cluster::new();
        c.upsert_namespace("x", 1, labels(&[("ns", "x")])).unwrap();
        c.upsert_namespace("y", 2, labels(&[("ns", "y")])).unwrap();
        for (id, ns, pod) in [(300, "x", "a"), (301, "x", "b"), (302, "y", "a")] {
            c.upsert_identity(
                id,
                Identity { namespace: ns.into(), labels: labels(&[("pod", pod)]), ..Default::default() },
            )
            .unwrap();
        }
        let doc = PolicyDocument::from_json(&serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
                     "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}},
                                           {"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}
        }))
        .unwrap();
        c.upsert_policy(doc);
        let g = PolicyDocument::from_json(&serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "g"},
            "spec": {"selector": "pod == 'b'", "ingress": [{"action": "Deny", "source": {"namespaceSelector": "ns == 'y'"}}]}
        }))
        .unwrap();
        c.upsert_policy(g);
        let m = selector_matches(&c);
        let find =
            |place: &str, name: &str| m.iter().find(|s| s.place == place && s.policy.name == name).unwrap();
        assert_eq!(find("spec.podSelector", "p").identities, vec![300], "pod=a of x only");
        assert_eq!(find("spec.ingress[0].from[0]", "p").identities, vec![300, 302], "pod=a anywhere");
        assert!(
            m.iter().all(|s| s.place != "spec.ingress[0].from[1]"),
            "ipBlocks select addresses, not identities"
        );
        assert_eq!(find("spec.selector", "g").identities, vec![301]);
        let src = find("spec.ingress[0].source", "g");
        assert_eq!(
            (src.selector.as_str(), src.identities.clone()),
            ("namespaceSelector: ns == \"y\"", vec![302])
        );
    }
}
