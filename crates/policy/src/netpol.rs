//! The Kubernetes `networking.k8s.io/v1` NetworkPolicy, as users write it,
//! with the API server's defaulting and validation.
//!
//! Where Kubernetes gives an absent field and an empty one the same meaning
//! (`from`, `to`, `ports`, `except`, `ingress`, `egress`, `policyTypes`),
//! the field is a `Vec` here, empty for both, so that nothing downstream can
//! tell them apart by accident. Where the meanings differ (a peer's
//! `namespaceSelector`, a port's `port`), it is an `Option`.
//!
//! The rule that most often surprises: `ingress: []` (or no `ingress`)
//! allows no traffic in, while `ingress: [{}]` (one rule, no peers, no
//! ports) allows all of it.

use crate::{Invalid, LabelSelector, ObjectMeta};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Visitor};
use std::{fmt, net::Ipv4Addr, str::FromStr};
use weft_k8s::{from_value, kinds::expect, names, ports::port_number};

/// A port's protocol and a port by number or name: `core/v1`'s, shared
/// with Services.
pub use weft_k8s::{PortRef, Protocol};

/// The `apiVersion` of a Kubernetes NetworkPolicy.
pub const API_VERSION: &str = "networking.k8s.io/v1";
/// The `kind` of a Kubernetes NetworkPolicy.
pub const KIND: &str = "NetworkPolicy";

/// A Kubernetes NetworkPolicy: which pods of one namespace it isolates, and
/// the traffic it then allows to and from them. Policies only ever add
/// allowed traffic; a pod selected by none is not isolated at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Always [`API_VERSION`] ([`NetworkPolicy::validate`] checks).
    pub api_version: String,
    /// Always [`KIND`] ([`NetworkPolicy::validate`] checks).
    pub kind: String,
    /// The policy applies to pods of `metadata.namespace` only (`default`
    /// when absent), and its peers' selectors without a
    /// `namespaceSelector` pick pods of that namespace too.
    pub metadata: ObjectMeta,
    pub spec: NetworkPolicySpec,
}

/// What the policy selects and allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// The pods of the policy's namespace that the policy isolates (for
    /// the directions in [`NetworkPolicySpec::effective_policy_types`]).
    /// Empty, absent or null: every pod of the namespace.
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// The directions the policy isolates, as written; empty when absent
    /// (Kubernetes treats `[]` as absent too). A direction listed here with
    /// no rules for it denies all traffic that way. Use
    /// [`NetworkPolicySpec::effective_policy_types`] for the defaulted value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_types: Vec<PolicyType>,
    /// Allowed incoming traffic: a connection is allowed if any rule
    /// matches it. Absent and empty are the same: nothing is allowed in
    /// (if the policy isolates ingress).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    /// Allowed outgoing traffic, as for `ingress`. Absent and empty are the
    /// same here too, including for the defaulting of `policyTypes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

/// A direction of traffic a policy can isolate. Calico's policies use the
/// same two names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// One rule for incoming traffic: a connection matches if it comes from
/// one of `from` AND goes to one of `ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    /// The allowed sources, ORed. Absent or empty: any source at all
    /// (pods, nodes, outside addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Peer>,
    /// The allowed destination ports on the selected pods, ORed. Absent or
    /// empty: every port of every protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

/// One rule for outgoing traffic: a connection matches if it goes to one
/// of `to` AND to one of `ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// The allowed destinations, ORed. Absent or empty: anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Peer>,
    /// The allowed destination ports, ORed. Absent or empty: every port of
    /// every protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
}

/// A source or destination: either pods (by selectors) or addresses (an
/// `ipBlock`), never both. Setting both selectors in one peer means pods
/// matching `podSelector` in namespaces matching `namespaceSelector` (AND);
/// two peers with one selector each mean either (OR).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    /// The pods, among those of the namespaces below. Absent: all of them
    /// (only meaningful with `namespaceSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// The namespaces the pods are taken from. Absent: the policy's own
    /// namespace only; `{}`: every namespace. This is the one place where
    /// an absent selector and an empty one differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Addresses, for traffic from or to outside the cluster. Pod addresses
    /// may or may not match it depending on NAT; policies should use
    /// selectors for pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

/// A range of IPv4 addresses, with holes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpBlock {
    /// The addresses matched.
    pub cidr: Ipv4Cidr,
    /// Addresses inside `cidr` that are not matched. Absent or empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<Ipv4Cidr>,
}

/// A destination port (or range of ports) of one protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPort {
    /// The protocol the port belongs to. Absent or null: TCP, as the API
    /// server defaults it (so a rule for DNS must say UDP explicitly).
    #[serde(default)]
    pub protocol: Protocol,
    /// The port, by number or by the name of a container port (resolved
    /// per destination pod: the same name can be different numbers on
    /// different pods). Absent: every port of `protocol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    /// With a numeric `port`, the last port of the range `port..=endPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i32>,
}

/// An IPv4 network: an address and a prefix length, with no bit set past
/// the prefix. weft's datapath is IPv4-only, so IPv6 is refused rather than
/// carried along unenforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

/// Why a CIDR does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError {
    pub reason: String,
}

impl NetworkPolicy {
    /// Reads a NetworkPolicy from JSON and validates it; errors name the
    /// field (`spec.ingress[0].ports[1].port`).
    pub fn from_json(value: &serde_json::Value) -> Result<NetworkPolicy, Invalid> {
        let policy: NetworkPolicy = from_value(value)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks the policy as the API server would (plus: host bits in
    /// CIDRs, and IPv4 only). Stops at the first error.
    pub fn validate(&self) -> Result<(), Invalid> {
        expect("apiVersion", &self.api_version, API_VERSION)?;
        expect("kind", &self.kind, KIND)?;
        self.metadata.validate(names::dns1123_subdomain).map_err(|e| e.within("metadata"))?;
        self.spec.validate().map_err(|e| e.within("spec"))
    }
}

impl NetworkPolicySpec {
    /// The directions this policy isolates, defaulted as the API server
    /// does when `policyTypes` is absent or empty: Ingress always, plus
    /// Egress when there is at least one egress rule. So a policy meant to
    /// deny all egress must list Egress explicitly.
    pub fn effective_policy_types(&self) -> Vec<PolicyType> {
        if !self.policy_types.is_empty() {
            return self.policy_types.clone();
        }
        let mut types = vec![PolicyType::Ingress];
        if !self.egress.is_empty() {
            types.push(PolicyType::Egress);
        }
        types
    }

    /// Paths are relative to the spec (`podSelector`, `ingress[0]`).
    pub fn validate(&self) -> Result<(), Invalid> {
        self.pod_selector.validate().map_err(|e| e.within("podSelector"))?;
        if self.policy_types.len() > 2 {
            let reason =
                format!("lists {} types; at most two (Ingress, Egress) are allowed", self.policy_types.len());
            return Err(Invalid::new("policyTypes", reason));
        }
        for (i, rule) in self.ingress.iter().enumerate() {
            validate_rule(&rule.from, "from", &rule.ports).map_err(|e| e.within(&format!("ingress[{i}]")))?;
        }
        for (i, rule) in self.egress.iter().enumerate() {
            validate_rule(&rule.to, "to", &rule.ports).map_err(|e| e.within(&format!("egress[{i}]")))?;
        }
        Ok(())
    }
}

/// An ingress or egress rule: its peers (under `peers_field`), then ports.
fn validate_rule(peers: &[Peer], peers_field: &str, ports: &[NetworkPolicyPort]) -> Result<(), Invalid> {
    for (i, peer) in peers.iter().enumerate() {
        peer.validate().map_err(|e| e.within(&format!("{peers_field}[{i}]")))?;
    }
    for (i, port) in ports.iter().enumerate() {
        port.validate().map_err(|e| e.within(&format!("ports[{i}]")))?;
    }
    Ok(())
}

impl Peer {
    /// A peer names pods or addresses: at least one of the three fields,
    /// and `ipBlock` alone. Errors about the combination have the peer's
    /// own (empty) path.
    pub fn validate(&self) -> Result<(), Invalid> {
        let selectors =
            usize::from(self.pod_selector.is_some()) + usize::from(self.namespace_selector.is_some());
        match (&self.ip_block, selectors) {
            (None, 0) => {
                return Err(Invalid::new("", "a peer must set podSelector, namespaceSelector or ipBlock"));
            }
            (Some(_), 1..) => {
                return Err(Invalid::new(
                    "",
                    "ipBlock cannot be combined with podSelector or namespaceSelector in one peer",
                ));
            }
            _ => {}
        }
        if let Some(selector) = &self.pod_selector {
            selector.validate().map_err(|e| e.within("podSelector"))?;
        }
        if let Some(selector) = &self.namespace_selector {
            selector.validate().map_err(|e| e.within("namespaceSelector"))?;
        }
        if let Some(block) = &self.ip_block {
            block.validate().map_err(|e| e.within("ipBlock"))?;
        }
        Ok(())
    }
}

impl IpBlock {
    /// Each `except` must be a strict part of `cidr`: one outside it would
    /// exclude nothing (a sign of a typo), and one covering all of it
    /// would leave the block empty.
    pub fn validate(&self) -> Result<(), Invalid> {
        for (i, hole) in self.except.iter().enumerate() {
            let field = || format!("except[{i}]");
            if !self.cidr.contains_net(hole) {
                return Err(Invalid::new(field(), format!("{hole} is not inside cidr {}", self.cidr)));
            }
            if hole.prefix_len() == self.cidr.prefix_len() {
                let reason =
                    format!("{hole} is all of cidr {}; an except must be strictly smaller", self.cidr);
                return Err(Invalid::new(field(), reason));
            }
        }
        Ok(())
    }
}

impl NetworkPolicyPort {
    /// Ports 1 to 65535; names as container ports are named; `endPort`
    /// only after a numeric `port`, and not below it.
    pub fn validate(&self) -> Result<(), Invalid> {
        match (&self.port, self.end_port) {
            (None, Some(_)) => {
                Err(Invalid::new("endPort", "endPort needs a numeric port to start the range"))
            }
            (Some(PortRef::Name(name)), end) => {
                names::port_name(name).map_err(|reason| Invalid::new("port", reason))?;
                match end {
                    Some(_) => Err(Invalid::new(
                        "endPort",
                        format!("endPort needs a numeric port; the named port {name:?} cannot start a range"),
                    )),
                    None => Ok(()),
                }
            }
            (Some(PortRef::Number(first)), end) => {
                port_number(*first).map_err(|reason| Invalid::new("port", reason))?;
                match end {
                    Some(last) => {
                        port_range_end(*first, last).map_err(|reason| Invalid::new("endPort", reason))
                    }
                    None => Ok(()),
                }
            }
            (None, None) => Ok(()),
        }
    }
}

fn port_range_end(first: i32, last: i32) -> Result<(), String> {
    port_number(last)?;
    if last < first {
        return Err(format!("endPort {last} is below port {first}"));
    }
    Ok(())
}

impl Ipv4Cidr {
    /// A network from its address and prefix length; refused if the
    /// prefix is longer than 32 or the address has bits set past it.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Ipv4Cidr, CidrError> {
        if prefix_len > 32 {
            return Err(CidrError { reason: format!("prefix length /{prefix_len} is longer than 32") });
        }
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix_len));
        if network != addr {
            let host = Ipv4Addr::from(u32::from(addr) & !mask(prefix_len));
            return Err(CidrError {
                reason: format!(
                    "{addr}/{prefix_len} has host bits set ({host} past the /{prefix_len} prefix); \
                     the network is {network}/{prefix_len}"
                ),
            });
        }
        Ok(Ipv4Cidr { addr, prefix_len })
    }

    /// The first address of the network.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The netmask as a number (`/24` is `0xffff_ff00`).
    pub fn mask(&self) -> u32 {
        mask(self.prefix_len)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether every address of `other` is in this network (true for the
    /// network itself).
    pub fn contains_net(&self, other: &Ipv4Cidr) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(other.addr)
    }
}

fn mask(prefix_len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0)
}

/// `a.b.c.d/n`, strictly: four decimal octets without leading zeros (as
/// Rust's address parser reads them), a prefix length 0 to 32 without a
/// sign or leading zero.
impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown = names::quoted(s);
        let fail = |why: &str| CidrError { reason: format!("{shown} is not an IPv4 CIDR: {why}") };
        let Some((addr, len)) = s.split_once('/') else {
            return Err(fail("it has no /prefix-length (write a single address as a.b.c.d/32)"));
        };
        if addr.contains(':') {
            return Err(fail("it is IPv6; weft's datapath is IPv4-only"));
        }
        let addr: Ipv4Addr = addr.parse().map_err(|_| fail("the address is not four decimal octets"))?;
        let canonical = matches!(len.as_bytes(), [b'0'..=b'9'] | [b'1'..=b'9', b'0'..=b'9']);
        let len: u8 = match len.parse() {
            Ok(len) if canonical && len <= 32 => len,
            _ => return Err(fail("the prefix length is not a number from 0 to 32")),
        };
        Ipv4Cidr::new(addr, len)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for CidrError {}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(CidrVisitor)
    }
}

struct CidrVisitor;

impl Visitor<'_> for CidrVisitor {
    type Value = Ipv4Cidr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an IPv4 CIDR string such as \"10.0.0.0/8\"")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Ipv4Cidr, E> {
        s.parse().map_err(|e: CidrError| E::custom(e.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Operator, Requirement};
    use serde_json::{Value, json};

    fn policy(spec: Value) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "test-policy", "namespace": "shop"},
            "spec": spec
        })
    }

    fn parse(value: Value) -> NetworkPolicy {
        match NetworkPolicy::from_json(&value) {
            Ok(p) => p,
            Err(e) => panic!("{value} should be accepted: {e}"),
        }
    }

    fn parse_spec(spec: Value) -> NetworkPolicySpec {
        parse(policy(spec)).spec
    }

    fn refused(value: Value) -> Invalid {
        match NetworkPolicy::from_json(&value) {
            Ok(p) => panic!("{value} should be refused, got {p:?}"),
            Err(e) => e,
        }
    }

    /// The path and reason of the error for this spec.
    fn spec_error(spec: Value) -> (String, String) {
        let e = refused(policy(spec));
        (e.field, e.reason)
    }

    fn labels(pairs: &[(&str, &str)]) -> crate::Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector { match_labels: labels(pairs), match_expressions: vec![] }
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        match s.parse() {
            Ok(c) => c,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    use PolicyType::{Egress, Ingress};

    // ---- Documents shaped like the upstream e2e tests ----

    #[test]
    fn default_deny_ingress() {
        let p = parse(policy(json!({"podSelector": {}, "policyTypes": ["Ingress"]})));
        assert_eq!(p.metadata.name, "test-policy");
        assert_eq!(p.metadata.namespace_or_default(), "shop");
        assert!(p.spec.pod_selector.is_empty());
        assert!(p.spec.ingress.is_empty());
        assert_eq!(p.spec.effective_policy_types(), vec![Ingress]);
        // The same without policyTypes: Ingress is always implied.
        let s = parse_spec(json!({"podSelector": {}}));
        assert_eq!(s.effective_policy_types(), vec![Ingress]);
        assert!(s.ingress.is_empty());
    }

    #[test]
    fn allow_from_namespace_by_label() {
        let s = parse_spec(json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}]}]
        }));
        assert_eq!(s.pod_selector, match_labels(&[("app", "web")]));
        let peer = &s.ingress[0].from[0];
        assert_eq!(peer.namespace_selector, Some(match_labels(&[("team", "ops")])));
        // No podSelector: every pod of the selected namespaces.
        assert_eq!(peer.pod_selector, None);
        assert_eq!(peer.ip_block, None);
        assert!(s.ingress[0].ports.is_empty());
    }

    #[test]
    fn and_versus_or_peers() {
        // One peer with both selectors: pods labelled app=client IN
        // namespaces labelled team=ops.
        let and = parse_spec(json!({
            "podSelector": {},
            "ingress": [{"from": [{
                "namespaceSelector": {"matchLabels": {"team": "ops"}},
                "podSelector": {"matchLabels": {"app": "client"}}
            }]}]
        }));
        assert_eq!(and.ingress[0].from.len(), 1);
        let peer = &and.ingress[0].from[0];
        assert_eq!(peer.namespace_selector, Some(match_labels(&[("team", "ops")])));
        assert_eq!(peer.pod_selector, Some(match_labels(&[("app", "client")])));
        // Two peers: any pod of a team=ops namespace, OR app=client pods of
        // the policy's own namespace.
        let or = parse_spec(json!({
            "podSelector": {},
            "ingress": [{"from": [
                {"namespaceSelector": {"matchLabels": {"team": "ops"}}},
                {"podSelector": {"matchLabels": {"app": "client"}}}
            ]}]
        }));
        let from = &or.ingress[0].from;
        assert_eq!(from.len(), 2);
        assert_eq!((from[0].pod_selector.is_none(), from[1].namespace_selector.is_none()), (true, true));
        assert_ne!(and, or);
    }

    #[test]
    fn ip_block_with_except() {
        let s = parse_spec(json!({
            "podSelector": {"matchLabels": {"app": "api"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.64.0.0/16", "except": ["10.64.3.0/24", "10.64.7.128/25"]}}]}]
        }));
        let block = s.ingress[0].from[0].ip_block.as_ref().expect("an ipBlock");
        assert_eq!(block.cidr, cidr("10.64.0.0/16"));
        assert_eq!(block.except, vec![cidr("10.64.3.0/24"), cidr("10.64.7.128/25")]);
        assert!(block.cidr.contains("10.64.200.1".parse().expect("ip")));
        assert!(!block.cidr.contains("10.65.0.1".parse().expect("ip")));
    }

    #[test]
    fn named_and_numbered_ports() {
        let s = parse_spec(json!({
            "podSelector": {},
            "ingress": [{"ports": [
                {"port": "serve-80"},
                {"protocol": "TCP", "port": 443},
                {"protocol": "UDP", "port": "dns"},
                {"protocol": "SCTP"},
                {"protocol": null, "port": 8080}
            ]}]
        }));
        let ports = &s.ingress[0].ports;
        let port = |protocol, port: Option<PortRef>| NetworkPolicyPort { protocol, port, end_port: None };
        assert_eq!(
            ports,
            &vec![
                port(Protocol::Tcp, Some(PortRef::Name("serve-80".into()))),
                port(Protocol::Tcp, Some(PortRef::Number(443))),
                port(Protocol::Udp, Some(PortRef::Name("dns".into()))),
                port(Protocol::Sctp, None),
                port(Protocol::Tcp, Some(PortRef::Number(8080))),
            ]
        );
        // No peers: any source, on those ports.
        assert!(s.ingress[0].from.is_empty());
    }

    #[test]
    fn port_ranges_with_end_port() {
        let s = parse_spec(json!({
            "podSelector": {},
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                        "ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768},
                                  {"port": 9000, "endPort": 9000}]}]
        }));
        let ports = &s.egress[0].ports;
        assert_eq!((ports[0].port.clone(), ports[0].end_port), (Some(PortRef::Number(32000)), Some(32768)));
        assert_eq!(ports[1].end_port, Some(9000));
    }

    #[test]
    fn egress_only() {
        let s = parse_spec(json!({
            "podSelector": {"matchLabels": {"app": "batch"}},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
            }]
        }));
        // Ingress is not isolated: only the listed type counts.
        assert_eq!(s.effective_policy_types(), vec![Egress]);
        assert_eq!(s.egress[0].ports[0].protocol, Protocol::Udp);
    }

    #[test]
    fn both_policy_types() {
        let s = parse_spec(json!({
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "cache"]}]},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": 5432}]}]
        }));
        // Egress listed with no egress rules: all egress denied.
        assert_eq!(s.effective_policy_types(), vec![Ingress, Egress]);
        assert!(s.egress.is_empty());
        let expr = &s.pod_selector.match_expressions[0];
        assert_eq!(
            expr,
            &Requirement {
                key: "app".into(),
                operator: Operator::In,
                values: vec!["db".into(), "cache".into()]
            }
        );
    }

    // ---- Defaulting and absent versus empty ----

    #[test]
    fn policy_types_default_as_the_api_server_does() {
        let cases = [
            (json!({}), vec![Ingress]),
            (json!({"ingress": [{}]}), vec![Ingress]),
            // An empty egress list is no egress rules: Kubernetes checks
            // len(egress) != 0, so this does NOT isolate egress.
            (json!({"egress": []}), vec![Ingress]),
            (json!({"egress": null}), vec![Ingress]),
            (json!({"egress": [{}]}), vec![Ingress, Egress]),
            (json!({"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}), vec![Ingress, Egress]),
            // An empty policyTypes is defaulted like an absent one.
            (json!({"policyTypes": [], "egress": [{}]}), vec![Ingress, Egress]),
            (json!({"policyTypes": null}), vec![Ingress]),
            // Explicit types are kept as written, rules or not.
            (json!({"policyTypes": ["Egress"], "ingress": [{}]}), vec![Egress]),
            (json!({"policyTypes": ["Egress", "Ingress"]}), vec![Egress, Ingress]),
            (json!({"policyTypes": ["Ingress"], "egress": [{}]}), vec![Ingress]),
        ];
        for (spec, expected) in cases {
            assert_eq!(parse_spec(spec.clone()).effective_policy_types(), expected, "{spec}");
        }
    }

    #[test]
    fn no_rules_versus_one_empty_rule() {
        // `ingress: []` has no rule: nothing is allowed in.
        let deny = parse_spec(json!({"podSelector": {}, "ingress": []}));
        assert!(deny.ingress.is_empty());
        // `ingress: [{}]` has one rule matching every source and port.
        let allow = parse_spec(json!({"podSelector": {}, "ingress": [{}]}));
        assert_eq!(allow.ingress, vec![IngressRule::default()]);
        assert!(allow.ingress[0].from.is_empty() && allow.ingress[0].ports.is_empty());
        assert_ne!(deny, allow);
        // An absent list is the same as an empty one.
        assert_eq!(parse_spec(json!({"podSelector": {}})), deny);
    }

    #[test]
    fn absent_empty_and_null_peer_and_port_lists_are_the_same() {
        let expected = parse_spec(json!({"ingress": [{}], "egress": [{}]}));
        for spec in [
            json!({"ingress": [{"from": [], "ports": []}], "egress": [{"to": [], "ports": []}]}),
            json!({"ingress": [{"from": null, "ports": null}], "egress": [{"to": null, "ports": null}]}),
        ] {
            assert_eq!(parse_spec(spec.clone()), expected, "{spec}");
        }
        let with_except = |except: Value| {
            let s = parse_spec(
                json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": except}}]}]}),
            );
            s.ingress[0].from[0].ip_block.clone()
        };
        assert_eq!(with_except(json!([])), with_except(Value::Null));
    }

    #[test]
    fn absent_and_empty_namespace_selectors_differ() {
        let peer = |p: Value| parse_spec(json!({"ingress": [{"from": [p]}]})).ingress[0].from[0].clone();
        // Pods of the policy's own namespace.
        let own = peer(json!({"podSelector": {}}));
        assert_eq!(
            (own.pod_selector.clone(), own.namespace_selector.clone()),
            (Some(LabelSelector::default()), None)
        );
        // Pods of every namespace.
        let every = peer(json!({"podSelector": {}, "namespaceSelector": {}}));
        assert_eq!(every.namespace_selector, Some(LabelSelector::default()));
        assert_ne!(own, every);
        // Every pod of every namespace, written without a podSelector.
        let all_ns = peer(json!({"namespaceSelector": {}}));
        assert_eq!((all_ns.pod_selector, all_ns.namespace_selector), (None, Some(LabelSelector::default())));
        // null is absent.
        assert_eq!(peer(json!({"podSelector": {}, "namespaceSelector": null})), own);
    }

    #[test]
    fn defaults_of_optional_fields() {
        let p = parse(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all"},
            "spec": {"podSelector": null}
        }));
        assert_eq!(p.metadata.namespace, None);
        assert_eq!(p.metadata.namespace_or_default(), "default");
        assert!(p.spec.pod_selector.is_empty());
        // A missing podSelector is the empty one too (Go's zero value).
        assert_eq!(parse_spec(json!({})).pod_selector, LabelSelector::default());
        // And the default protocol is TCP.
        assert_eq!(NetworkPolicyPort::default().protocol, Protocol::Tcp);
    }

    #[test]
    fn round_trips_through_json() {
        let original = parse(policy(json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}},
                                  {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "lb"}}}],
                         "ports": [{"port": "http"}, {"protocol": "UDP", "port": 5000, "endPort": 5010}]}],
            "egress": [{}]
        })));
        let json = serde_json::to_value(&original).expect("serializes");
        assert_eq!(json["spec"]["ingress"][0]["ports"][0], json!({"protocol": "TCP", "port": "http"}));
        assert_eq!(json["spec"]["ingress"][0]["from"][0]["ipBlock"]["except"], json!(["192.168.1.0/24"]));
        assert_eq!(json["spec"]["egress"], json!([{}]));
        assert_eq!(parse(json), original);
    }

    // ---- Validation: one test per rule, each naming the exact path ----

    #[test]
    fn name_must_be_a_dns_subdomain() {
        let e = refused(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "Allow_All"}, "spec": {}
        }));
        assert_eq!(e.field, "metadata.name");
        assert!(e.reason.starts_with("\"Allow_All\" is not a valid DNS-1123 subdomain"), "{e}");
    }

    #[test]
    fn namespace_must_be_a_dns_label() {
        let e = refused(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "a", "namespace": "team.a"}, "spec": {}
        }));
        assert_eq!(e.field, "metadata.namespace");
    }

    #[test]
    fn api_version_and_kind_are_checked() {
        let mut p = parse(policy(json!({})));
        p.kind = "NetworkPolicies".into();
        let e = p.validate().unwrap_err();
        assert_eq!(e.to_string(), "kind: \"NetworkPolicies\" must be \"NetworkPolicy\"");
        p.kind = KIND.into();
        p.api_version = "extensions/v1beta1".into();
        assert_eq!(p.validate().unwrap_err().field, "apiVersion");
    }

    #[test]
    fn a_peer_must_name_something() {
        let (field, reason) = spec_error(json!({"ingress": [{"from": [{"podSelector": {}}, {}]}]}));
        assert_eq!(field, "spec.ingress[0].from[1]");
        assert_eq!(reason, "a peer must set podSelector, namespaceSelector or ipBlock");
        let (field, _) = spec_error(json!({"egress": [{}, {"to": [{"namespaceSelector": null}]}]}));
        assert_eq!(field, "spec.egress[1].to[0]");
    }

    #[test]
    fn ip_block_stands_alone() {
        let (field, reason) = spec_error(json!({"egress": [{"to": [
            {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}
        ]}]}));
        assert_eq!(field, "spec.egress[0].to[0]");
        assert_eq!(reason, "ipBlock cannot be combined with podSelector or namespaceSelector in one peer");
        let (field, _) = spec_error(json!({"ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}
        ]}]}));
        assert_eq!(field, "spec.ingress[0].from[0]");
    }

    #[test]
    fn cidr_must_parse() {
        let (field, reason) = spec_error(json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0/8"}}]}]}));
        assert_eq!(field, "spec.ingress[0].from[0].ipBlock.cidr");
        assert_eq!(reason, "\"10.0.0/8\" is not an IPv4 CIDR: the address is not four decimal octets");
        let (field, reason) = spec_error(json!({"ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/8"}}]}]}));
        assert_eq!(field, "spec.ingress[0].from[0].ipBlock.cidr");
        assert!(reason.contains("IPv6; weft's datapath is IPv4-only"), "{reason}");
    }

    #[test]
    fn cidr_host_bits_must_be_zero() {
        let (field, reason) =
            spec_error(json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.1.2.3/16"}}]}]}));
        assert_eq!(field, "spec.ingress[0].from[0].ipBlock.cidr");
        assert_eq!(
            reason,
            "10.1.2.3/16 has host bits set (0.0.2.3 past the /16 prefix); the network is 10.1.0.0/16"
        );
    }

    #[test]
    fn except_must_parse() {
        let (field, reason) = spec_error(json!({"ingress": [{"from": [
            {"podSelector": {}},
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.1/16"]}}
        ]}]}));
        assert_eq!(field, "spec.ingress[0].from[1].ipBlock.except[1]");
        assert!(reason.contains("host bits set (0.0.0.1 past the /16 prefix)"), "{reason}");
    }

    #[test]
    fn except_must_be_inside_cidr() {
        let (field, reason) = spec_error(json!({"ingress": [{"from": [
            {"podSelector": {}},
            {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}
        ]}]}));
        assert_eq!(field, "spec.ingress[0].from[1].ipBlock.except[0]");
        assert_eq!(reason, "10.1.0.0/24 is not inside cidr 10.0.0.0/16");
        // A larger network that contains the cidr is not inside it either.
        let (field, _) = spec_error(json!({"egress": [{"to": [
            {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24", "10.0.0.0/8"]}}
        ]}]}));
        assert_eq!(field, "spec.egress[0].to[0].ipBlock.except[1]");
    }

    #[test]
    fn except_must_be_strictly_smaller() {
        let (field, reason) = spec_error(json!({"ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}
        ]}]}));
        assert_eq!(field, "spec.ingress[0].from[0].ipBlock.except[0]");
        assert_eq!(reason, "10.0.0.0/16 is all of cidr 10.0.0.0/16; an except must be strictly smaller");
    }

    #[test]
    fn ports_are_1_to_65535() {
        for (port, shown) in [(json!(0), "0"), (json!(65536), "65536"), (json!(-80), "-80")] {
            let (field, reason) = spec_error(json!({"ingress": [{"ports": [{"port": 80}, {"port": port}]}]}));
            assert_eq!(field, "spec.ingress[0].ports[1].port");
            assert_eq!(reason, format!("port {shown} is out of range; ports are 1 to 65535"));
        }
        // Beyond int32 the value cannot even be read, and says the same.
        let (field, reason) = spec_error(json!({"egress": [{"ports": [{"port": 4_294_967_296_u64}]}]}));
        assert_eq!(field, "spec.egress[0].ports[0].port");
        assert_eq!(reason, "port 4294967296 is out of range; ports are 1 to 65535");
        let (field, reason) = spec_error(json!({"egress": [{"ports": [{"port": 80.5}]}]}));
        assert_eq!(field, "spec.egress[0].ports[0].port");
        assert!(reason.starts_with("invalid type: floating point `80.5`"), "{reason}");
        for ok in [1, 65535] {
            parse_spec(json!({"ingress": [{"ports": [{"port": ok}]}]}));
        }
    }

    #[test]
    fn named_ports_are_iana_service_names() {
        for bad in ["HTTP", "8080", "-http", "http-", "web--api", "a-very-long-name", "", "http_alt"] {
            let (field, reason) = spec_error(json!({"ingress": [{"ports": [{"port": bad}]}]}));
            assert_eq!(field, "spec.ingress[0].ports[0].port", "{bad}");
            assert!(reason.contains("is not a valid port name"), "{bad}: {reason}");
        }
        let (_, reason) = spec_error(json!({"ingress": [{"ports": [{"port": "8080"}]}]}));
        assert!(reason.contains("has no letter"), "{reason}");
    }

    #[test]
    fn end_port_needs_a_numeric_port() {
        let (field, reason) = spec_error(json!({"ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}));
        assert_eq!(field, "spec.ingress[0].ports[0].endPort");
        assert_eq!(reason, "endPort needs a numeric port; the named port \"http\" cannot start a range");
        let (field, reason) =
            spec_error(json!({"egress": [{"ports": [{"protocol": "UDP", "endPort": 90}]}]}));
        assert_eq!(field, "spec.egress[0].ports[0].endPort");
        assert_eq!(reason, "endPort needs a numeric port to start the range");
    }

    #[test]
    fn end_port_must_not_be_below_port() {
        let (field, reason) = spec_error(json!({"ingress": [{"ports": [{"port": 8080, "endPort": 8000}]}]}));
        assert_eq!(field, "spec.ingress[0].ports[0].endPort");
        assert_eq!(reason, "endPort 8000 is below port 8080");
        let (field, reason) = spec_error(json!({"ingress": [{"ports": [{"port": 8080, "endPort": 70000}]}]}));
        assert_eq!(field, "spec.ingress[0].ports[0].endPort");
        assert_eq!(reason, "port 70000 is out of range; ports are 1 to 65535");
    }

    #[test]
    fn protocol_is_tcp_udp_or_sctp() {
        for bad in ["ICMP", "tcp", ""] {
            let (field, reason) = spec_error(json!({"ingress": [{"ports": [{"protocol": bad, "port": 1}]}]}));
            assert_eq!(field, "spec.ingress[0].ports[0].protocol", "{bad}");
            assert!(reason.contains("expected one of `TCP`, `UDP`, `SCTP`"), "{reason}");
        }
    }

    #[test]
    fn pod_selector_is_validated() {
        let (field, reason) =
            spec_error(json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}));
        assert_eq!(field, "spec.podSelector.matchExpressions[0].values");
        assert_eq!(reason, "operator In needs at least one value");
        // A map key is quoted in the path, whether reading or validation
        // refused its value.
        let (field, reason) = spec_error(json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}},
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "-x"}}}]}]}));
        assert_eq!(field, "spec.ingress[0].from[1].podSelector.matchLabels[\"app.kubernetes.io/name\"]");
        assert_eq!(
            reason,
            "\"-x\" is not a valid label value: it must start and end with a letter or a digit"
        );
        let (field, reason) = spec_error(json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}},
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": 5}}}]}]}));
        assert_eq!(field, "spec.ingress[0].from[1].podSelector.matchLabels[\"app.kubernetes.io/name\"]");
        assert_eq!(reason, "invalid type: integer `5`, expected a string");
    }

    #[test]
    fn namespace_selector_is_validated() {
        let (field, _) = spec_error(json!({"egress": [{"to": [
            {"namespaceSelector": {"matchLabels": {"team": "ops"}}, "podSelector": {}},
            {"namespaceSelector": {"matchLabels": {"team": "bad value"}}}
        ]}]}));
        assert_eq!(field, "spec.egress[0].to[1].namespaceSelector.matchLabels[\"team\"]");
    }

    #[test]
    fn at_most_two_policy_types() {
        let (field, reason) = spec_error(json!({"policyTypes": ["Ingress", "Egress", "Ingress"]}));
        assert_eq!(field, "spec.policyTypes");
        assert_eq!(reason, "lists 3 types; at most two (Ingress, Egress) are allowed");
        let (field, reason) = spec_error(json!({"policyTypes": ["Ingress", "egress"]}));
        assert_eq!(field, "spec.policyTypes[1]");
        assert!(reason.starts_with("unknown variant `egress`"), "{reason}");
    }

    #[test]
    fn unknown_and_missing_fields_are_refused() {
        let (field, reason) = spec_error(json!({"ingress": [{"form": [{"podSelector": {}}]}]}));
        assert_eq!(field, "spec.ingress[0]");
        assert_eq!(reason, "unknown field `form`, expected `from` or `ports`");
        let (field, reason) = spec_error(json!({"ingress": [{"from": [{"ipBlock": {"except": []}}]}]}));
        assert_eq!(field, "spec.ingress[0].from[0].ipBlock");
        assert_eq!(reason, "missing field `cidr`");
        let (field, reason) = spec_error(json!({"podSelecter": {}}));
        assert_eq!(field, "spec");
        assert!(reason.starts_with("unknown field `podSelecter`"), "{reason}");
        let e = refused(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "a"}}),
        );
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("", "missing field `spec`"));
        // null is left out: a required field is missing all the same.
        let e = refused(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                               "metadata": {"name": "a"}, "spec": null}));
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("", "missing field `spec`"));
        let e = refused(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                               "metadata": {"name": "a"}, "spec": {}, "status": {}}));
        assert!(e.reason.starts_with("unknown field `status`"), "{e}");
    }

    #[test]
    fn errors_stop_at_the_first_in_document_order() {
        let (field, _) = spec_error(json!({
            "podSelector": {"matchLabels": {"a": "-"}},
            "ingress": [{"from": [{}]}]
        }));
        assert_eq!(field, "spec.podSelector.matchLabels[\"a\"]");
        let (field, _) = spec_error(json!({"ingress": [{"from": [{}], "ports": [{"port": 0}]}]}));
        assert_eq!(field, "spec.ingress[0].from[0]");
    }

    // ---- Ipv4Cidr ----

    #[test]
    fn cidrs_parse_and_print() {
        for s in ["0.0.0.0/0", "10.0.0.0/8", "192.168.1.128/25", "203.0.113.7/32", "128.0.0.0/1"] {
            assert_eq!(cidr(s).to_string(), s);
        }
        let c = cidr("172.16.0.0/12");
        assert_eq!((c.addr(), c.prefix_len(), c.mask()), (Ipv4Addr::new(172, 16, 0, 0), 12, 0xfff0_0000));
        assert_eq!(cidr("0.0.0.0/0").mask(), 0);
        assert_eq!(cidr("1.2.3.4/32").mask(), u32::MAX);
        assert_eq!(serde_json::to_value(c).expect("serializes"), json!("172.16.0.0/12"));
    }

    #[test]
    fn cidr_containment() {
        let net = cidr("10.0.0.0/16");
        assert!(net.contains(Ipv4Addr::new(10, 0, 255, 255)));
        assert!(!net.contains(Ipv4Addr::new(10, 1, 0, 0)));
        assert!(net.contains_net(&cidr("10.0.4.0/22")));
        assert!(net.contains_net(&net));
        assert!(!net.contains_net(&cidr("10.0.0.0/8")));
        assert!(!net.contains_net(&cidr("10.1.0.0/24")));
        assert!(cidr("0.0.0.0/0").contains_net(&cidr("255.255.255.255/32")));
    }

    #[test]
    fn bad_cidrs_say_why() {
        let why = |s: &str| match s.parse::<Ipv4Cidr>() {
            Ok(c) => panic!("{s} should not parse, got {c}"),
            Err(e) => e.reason,
        };
        assert_eq!(
            why("10.0.0.0"),
            "\"10.0.0.0\" is not an IPv4 CIDR: it has no /prefix-length (write a single address as a.b.c.d/32)"
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/08",
            "10.0.0.0/ 8",
            "10.0.0.0/100",
            "10.0.0.0/-1",
        ] {
            assert!(
                why(bad).ends_with("the prefix length is not a number from 0 to 32"),
                "{bad}: {}",
                why(bad)
            );
        }
        for bad in ["010.0.0.0/8", "10.0.0/8", "10.0.0.256/32", "a.b.c.d/8", "/8", " 10.0.0.0/8"] {
            assert!(why(bad).ends_with("the address is not four decimal octets"), "{bad}: {}", why(bad));
        }
        assert!(why("::1/128").ends_with("it is IPv6; weft's datapath is IPv4-only"));
        assert!(
            why("10.0.0.1/31")
                .contains("has host bits set (0.0.0.1 past the /31 prefix); the network is 10.0.0.0/31")
        );
        assert!(Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 33).is_err());
        assert_eq!(Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8), Ok(cidr("10.0.0.0/8")));
    }
}
