//! Calico's `projectcalico.org/v3` policies: the namespaced `NetworkPolicy`
//! and the cluster-wide `GlobalNetworkPolicy`, with Calico's defaulting and
//! the validation its API server does on the parts weft enforces.
//!
//! Unlike Kubernetes policies, Calico's are ordered and have deny rules:
//! within a tier, policies are evaluated by ascending `order` and, in each,
//! rules in list order; the first rule that matches decides (`Allow`,
//! `Deny`, `Pass` to the next tier, or `Log` and go on).
//!
//! Fields of the Calico API that weft does not enforce (`doNotTrack`,
//! `serviceAccounts`, `http`, `icmp`, ...) are refused as unknown, not
//! ignored: a policy enforced without them would allow or deny other
//! traffic than the one written.

use crate::{
    Invalid, ObjectMeta, Selector,
    netpol::{Ipv4Cidr, PolicyType},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Visitor};
use std::fmt;
use weft_k8s::{
    from_value,
    kinds::expect,
    names::{self, quoted},
    ports::port_out_of_range,
};

/// The `apiVersion` of both Calico policy kinds.
pub const API_VERSION: &str = "projectcalico.org/v3";
/// The `kind` of a namespaced Calico policy.
pub const KIND: &str = "NetworkPolicy";
/// The `kind` of a cluster-wide Calico policy.
pub const GLOBAL_KIND: &str = "GlobalNetworkPolicy";
/// The tier of a policy that does not name one.
pub const DEFAULT_TIER: &str = "default";

/// A namespaced Calico policy: applies to endpoints of its namespace
/// (`default` when absent) that `spec.selector` selects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CalicoNetworkPolicy {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    pub metadata: ObjectMeta,
    /// `spec.namespaceSelector` is refused here: the namespace is the
    /// policy's own.
    pub spec: CalicoPolicySpec,
}

/// A cluster-wide Calico policy: applies to endpoints of every namespace
/// (narrowed by `spec.namespaceSelector`) that `spec.selector` selects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkPolicy {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`GLOBAL_KIND`].
    pub kind: String,
    /// `metadata.namespace` is refused: the policy has none.
    pub metadata: ObjectMeta,
    pub spec: CalicoPolicySpec,
}

/// The spec both kinds share.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CalicoPolicySpec {
    /// The tier the policy is evaluated in; tiers go in their own order,
    /// and a `Pass` moves on to the next one. Absent: [`DEFAULT_TIER`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Precedence within the tier: lower goes first. Absent: after every
    /// policy that has an order (ties broken by name, as Calico does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    /// The endpoints the policy applies to. Absent or empty: `all()`.
    #[serde(default)]
    pub selector: Selector,
    /// The directions the policy applies to, as written; empty when absent
    /// (Calico treats `[]` as absent). Use [`CalicoPolicySpec::effective_types`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    /// Rules for incoming traffic, first match decides. Absent and empty
    /// are the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    /// Rules for outgoing traffic, first match decides. Absent and empty
    /// are the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    /// GlobalNetworkPolicy only: the namespaces whose endpoints the policy
    /// applies to (ANDed with `selector`). Absent: no restriction by
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Selector>,
}

/// One rule: if the traffic matches `protocol`, `source` and `destination`,
/// `action` decides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub action: Action,
    /// Absent: any protocol (unlike Kubernetes, where it means TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<CalicoProtocol>,
    /// Where the traffic comes from. Absent: anywhere.
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub source: EntityRule,
    /// Where the traffic goes. Absent: anywhere.
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub destination: EntityRule,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Accept the traffic; no further rule or policy is looked at.
    Allow,
    /// Drop the traffic; no further rule or policy is looked at.
    Deny,
    /// Record the traffic and go on to the next rule.
    Log,
    /// Skip the rest of this tier: the next tier decides (or, after the
    /// last tier, the profiles).
    Pass,
}

/// A rule's protocol. Protocol numbers that have a name here are read as
/// that name (`6` is [`CalicoProtocol::Tcp`]), so each protocol has one
/// representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CalicoProtocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    /// Any other IP protocol number, 1 to 255.
    Number(u8),
}

/// One side of a rule. Every field that is set must match (AND); inside a
/// list, any entry may match (OR). The empty entity matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntityRule {
    /// The address is in one of these networks. Absent or empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<Ipv4Cidr>,
    /// The address is in none of these networks. Absent or empty: no
    /// exclusion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<Ipv4Cidr>,
    /// The traffic is from or to an endpoint this selects. Absent: no
    /// condition at all; `all()`: some endpoint Calico knows (so not an
    /// outside address) — the two differ.
    #[serde(default, deserialize_with = "empty_as_none", skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// The traffic is not from or to an endpoint this selects.
    #[serde(default, deserialize_with = "empty_as_none", skip_serializing_if = "Option::is_none")]
    pub not_selector: Option<Selector>,
    /// The endpoint is in a namespace this selects. Absent, with a
    /// selector: the policy's own namespace for a namespaced policy, any
    /// namespace for a global one.
    #[serde(default, deserialize_with = "empty_as_none", skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<Selector>,
    /// The port is one of these. Needs a TCP, UDP or SCTP rule. Absent or
    /// empty: any port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<CalicoPort>,
    /// The port is none of these. Needs a TCP, UDP or SCTP rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<CalicoPort>,
}

/// A Calico port: a number (`80` or `"80"`), a range (`"8000:8080"`,
/// both ends included), or the name of a container port (`"http"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CalicoPort {
    Number(u16),
    Range { first: u16, last: u16 },
    Named(String),
}

/// An entity rule's selector written as `""` is not set, as in Calico
/// (where `all()` would mean "some endpoint Calico knows").
fn empty_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Selector>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => Selector::parse(t).map(Some).map_err(|e| {
            serde::de::Error::custom(format_args!(
                "invalid selector {t:?} at offset {}: {}",
                e.offset, e.reason
            ))
        }),
    }
}

impl CalicoNetworkPolicy {
    /// Reads a namespaced Calico policy from JSON and validates it.
    pub fn from_json(value: &serde_json::Value) -> Result<CalicoNetworkPolicy, Invalid> {
        let policy: CalicoNetworkPolicy = from_value(value)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks the policy as Calico would; stops at the first error.
    pub fn validate(&self) -> Result<(), Invalid> {
        expect("apiVersion", &self.api_version, API_VERSION)?;
        expect("kind", &self.kind, KIND)?;
        self.metadata.validate(names::dns1123_subdomain).map_err(|e| e.within("metadata"))?;
        if self.spec.namespace_selector.is_some() {
            return Err(Invalid::new(
                "spec.namespaceSelector",
                "only a GlobalNetworkPolicy selects namespaces; a NetworkPolicy applies to its own namespace",
            ));
        }
        self.spec.validate().map_err(|e| e.within("spec"))
    }
}

impl GlobalNetworkPolicy {
    /// Reads a cluster-wide Calico policy from JSON and validates it.
    pub fn from_json(value: &serde_json::Value) -> Result<GlobalNetworkPolicy, Invalid> {
        let policy: GlobalNetworkPolicy = from_value(value)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks the policy as Calico would; stops at the first error.
    pub fn validate(&self) -> Result<(), Invalid> {
        expect("apiVersion", &self.api_version, API_VERSION)?;
        expect("kind", &self.kind, GLOBAL_KIND)?;
        if self.metadata.namespace.is_some() {
            return Err(Invalid::new(
                "metadata.namespace",
                "a GlobalNetworkPolicy is cluster-wide and has no namespace (use spec.namespaceSelector)",
            ));
        }
        self.metadata.validate(names::dns1123_subdomain).map_err(|e| e.within("metadata"))?;
        self.spec.validate().map_err(|e| e.within("spec"))
    }
}

impl CalicoPolicySpec {
    /// The tier, defaulted.
    pub fn tier_or_default(&self) -> &str {
        self.tier.as_deref().unwrap_or(DEFAULT_TIER)
    }

    /// The directions the policy applies to, defaulted as Calico does when
    /// `types` is absent or empty: from which rule lists have rules —
    /// egress rules only: Egress; both: Ingress and Egress; otherwise
    /// (ingress rules only, or no rules at all): Ingress.
    pub fn effective_types(&self) -> Vec<PolicyType> {
        if !self.types.is_empty() {
            return self.types.clone();
        }
        match (self.ingress.is_empty(), self.egress.is_empty()) {
            (_, true) => vec![PolicyType::Ingress],
            (true, false) => vec![PolicyType::Egress],
            (false, false) => vec![PolicyType::Ingress, PolicyType::Egress],
        }
    }

    /// Paths are relative to the spec (`tier`, `ingress[0].destination`).
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(tier) = &self.tier {
            // Calico names a tiered policy `<tier>.<name>`: a dot in the
            // tier's name would make that ambiguous.
            names::dns1123_label(tier).map_err(|reason| Invalid::new("tier", reason))?;
        }
        if self.order.is_some_and(|order| !order.is_finite()) {
            return Err(Invalid::new("order", "must be a finite number"));
        }
        self.validate_types()?;
        for (i, rule) in self.ingress.iter().enumerate() {
            rule.validate().map_err(|e| e.within(&format!("ingress[{i}]")))?;
        }
        for (i, rule) in self.egress.iter().enumerate() {
            rule.validate().map_err(|e| e.within(&format!("egress[{i}]")))?;
        }
        Ok(())
    }

    fn validate_types(&self) -> Result<(), Invalid> {
        for (i, t) in self.types.iter().enumerate() {
            if self.types[..i].contains(t) {
                return Err(Invalid::new(format!("types[{i}]"), format!("{t:?} is listed twice")));
            }
        }
        Ok(())
    }
}

impl Rule {
    /// Ports need a protocol that has them; paths are relative to the
    /// rule (`destination.ports[1]`).
    pub fn validate(&self) -> Result<(), Invalid> {
        self.source.validate(self.protocol).map_err(|e| e.within("source"))?;
        self.destination.validate(self.protocol).map_err(|e| e.within("destination"))
    }
}

impl CalicoProtocol {
    /// Whether the protocol has ports (TCP, UDP, SCTP).
    pub fn has_ports(self) -> bool {
        matches!(self, CalicoProtocol::Tcp | CalicoProtocol::Udp | CalicoProtocol::Sctp)
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            CalicoProtocol::Icmp => 1,
            CalicoProtocol::Tcp => 6,
            CalicoProtocol::Udp => 17,
            CalicoProtocol::Sctp => 132,
            CalicoProtocol::Number(n) => n,
        }
    }

    /// The protocol with this number, by name when it has one; 0 is not a
    /// protocol a rule can match.
    pub fn from_number(n: u8) -> Option<CalicoProtocol> {
        Some(match n {
            0 => return None,
            1 => CalicoProtocol::Icmp,
            6 => CalicoProtocol::Tcp,
            17 => CalicoProtocol::Udp,
            132 => CalicoProtocol::Sctp,
            n => CalicoProtocol::Number(n),
        })
    }

    fn from_name(name: &str) -> Option<CalicoProtocol> {
        Some(match name {
            "TCP" => CalicoProtocol::Tcp,
            "UDP" => CalicoProtocol::Udp,
            "SCTP" => CalicoProtocol::Sctp,
            "ICMP" => CalicoProtocol::Icmp,
            _ => return None,
        })
    }
}

impl EntityRule {
    /// True when the entity sets nothing (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self == &EntityRule::default()
    }

    /// `protocol` is the rule's: ports are only meaningful for TCP, UDP and
    /// SCTP, and Calico refuses them otherwise (including with no protocol).
    fn validate(&self, protocol: Option<CalicoProtocol>) -> Result<(), Invalid> {
        for (field, ports) in [("ports", &self.ports), ("notPorts", &self.not_ports)] {
            if ports.is_empty() {
                continue;
            }
            match protocol {
                Some(p) if p.has_ports() => {}
                Some(p) => {
                    let reason =
                        format!("{field} need protocol TCP, UDP or SCTP; the rule's protocol is {p}");
                    return Err(Invalid::new(field, reason));
                }
                None => {
                    let reason = format!("{field} need protocol TCP, UDP or SCTP; the rule sets no protocol");
                    return Err(Invalid::new(field, reason));
                }
            }
            for (i, port) in ports.iter().enumerate() {
                port.validate().map_err(|reason| Invalid::new(format!("{field}[{i}]"), reason))?;
            }
        }
        Ok(())
    }
}

impl CalicoPort {
    /// Port numbers 1 to 65535, ranges not reversed, names as container
    /// ports are named.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            CalicoPort::Number(0) => Err(port_out_of_range(0)),
            CalicoPort::Range { first: 0, last } => {
                Err(format!("range 0:{last} starts at port 0; ports are 1 to 65535"))
            }
            CalicoPort::Range { first, last } if first > last => {
                Err(format!("range {first}:{last} is reversed: its first port is above its last"))
            }
            CalicoPort::Named(name) => names::port_name(name),
            _ => Ok(()),
        }
    }

    /// Reads the string form: digits are a number, `first:last` a range,
    /// anything else a name (checked by [`CalicoPort::validate`]).
    fn from_string(s: &str) -> Result<CalicoPort, String> {
        if is_digits(s) {
            return port_u16(s).map(CalicoPort::Number);
        }
        match s.split_once(':') {
            Some((first, last)) if is_digits(first) && is_digits(last) => {
                Ok(CalicoPort::Range { first: port_u16(first)?, last: port_u16(last)? })
            }
            Some(_) => {
                Err(format!("{} is not a port range; a range is \"first:last\" with port numbers", quoted(s)))
            }
            None => Ok(CalicoPort::Named(s.to_string())),
        }
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn port_u16(digits: &str) -> Result<u16, String> {
    digits.parse().map_err(|_| port_out_of_range(quoted(digits)))
}

impl fmt::Display for CalicoProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalicoProtocol::Tcp => f.write_str("TCP"),
            CalicoProtocol::Udp => f.write_str("UDP"),
            CalicoProtocol::Sctp => f.write_str("SCTP"),
            CalicoProtocol::Icmp => f.write_str("ICMP"),
            CalicoProtocol::Number(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for CalicoProtocol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            CalicoProtocol::Number(n) => serializer.serialize_u8(*n),
            named => serializer.collect_str(named),
        }
    }
}

impl<'de> Deserialize<'de> for CalicoProtocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ProtocolVisitor)
    }
}

struct ProtocolVisitor;

const PROTOCOLS: &str = "TCP, UDP, SCTP, ICMP or a protocol number from 1 to 255";

impl Visitor<'_> for ProtocolVisitor {
    type Value = CalicoProtocol;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PROTOCOLS}")
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<CalicoProtocol, E> {
        u8::try_from(n)
            .ok()
            .and_then(CalicoProtocol::from_number)
            .ok_or_else(|| E::custom(format!("protocol {n} is not {PROTOCOLS}")))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<CalicoProtocol, E> {
        Err(E::custom(format!("protocol {n} is not {PROTOCOLS}")))
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<CalicoProtocol, E> {
        CalicoProtocol::from_name(name)
            .ok_or_else(|| E::custom(format!("protocol {} is not {PROTOCOLS}", quoted(name))))
    }
}

impl Serialize for CalicoPort {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            CalicoPort::Number(n) => serializer.serialize_u16(*n),
            CalicoPort::Range { first, last } => serializer.collect_str(&format_args!("{first}:{last}")),
            CalicoPort::Named(name) => serializer.serialize_str(name),
        }
    }
}

impl<'de> Deserialize<'de> for CalicoPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PortVisitor)
    }
}

struct PortVisitor;

impl Visitor<'_> for PortVisitor {
    type Value = CalicoPort;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port number, a \"first:last\" range or a port name")
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<CalicoPort, E> {
        u16::try_from(n).map(CalicoPort::Number).map_err(|_| E::custom(port_out_of_range(n)))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<CalicoPort, E> {
        Err(E::custom(port_out_of_range(n)))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<CalicoPort, E> {
        CalicoPort::from_string(s).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn namespaced(spec: Value) -> Value {
        json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "NetworkPolicy",
            "metadata": {"name": "shop.allow-web", "namespace": "shop"},
            "spec": spec
        })
    }

    fn global(spec: Value) -> Value {
        json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "security.deny-untrusted"},
            "spec": spec
        })
    }

    fn parse(value: Value) -> CalicoNetworkPolicy {
        match CalicoNetworkPolicy::from_json(&value) {
            Ok(p) => p,
            Err(e) => panic!("{value} should be accepted: {e}"),
        }
    }

    fn parse_spec(spec: Value) -> CalicoPolicySpec {
        parse(namespaced(spec)).spec
    }

    fn parse_global(value: Value) -> GlobalNetworkPolicy {
        match GlobalNetworkPolicy::from_json(&value) {
            Ok(p) => p,
            Err(e) => panic!("{value} should be accepted: {e}"),
        }
    }

    fn refused(value: Value) -> (String, String) {
        let result = if value["kind"] == json!(GLOBAL_KIND) {
            GlobalNetworkPolicy::from_json(&value).map(|_| ())
        } else {
            CalicoNetworkPolicy::from_json(&value).map(|_| ())
        };
        match result {
            Ok(()) => panic!("{value} should be refused"),
            Err(e) => (e.field, e.reason),
        }
    }

    fn spec_error(spec: Value) -> (String, String) {
        refused(namespaced(spec))
    }

    fn selector(s: &str) -> Selector {
        match Selector::parse(s) {
            Ok(sel) => sel,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        match s.parse() {
            Ok(c) => c,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    use PolicyType::{Egress, Ingress};

    // ---- Realistic documents ----

    #[test]
    fn ordered_deny_before_allow() {
        let s = parse_spec(json!({
            "order": 100,
            "selector": "app == 'web'",
            "ingress": [
                {"action": "Deny", "source": {"selector": "quarantine == 'true'"}},
                {"action": "Allow", "protocol": "TCP",
                 "source": {"selector": "role == 'frontend'"}, "destination": {"ports": [80, 443]}}
            ]
        }));
        assert_eq!(s.order, Some(100.0));
        assert_eq!(s.selector, selector("app == 'web'"));
        // Rules keep their order: the deny is looked at first.
        let actions: Vec<Action> = s.ingress.iter().map(|r| r.action).collect();
        assert_eq!(actions, vec![Action::Deny, Action::Allow]);
        assert_eq!(s.ingress[0].protocol, None);
        assert_eq!(s.ingress[0].source.selector, Some(selector("quarantine == 'true'")));
        assert_eq!(s.ingress[1].destination.ports, vec![CalicoPort::Number(80), CalicoPort::Number(443)]);
        assert_eq!((s.tier_or_default(), s.effective_types()), ("default", vec![Ingress]));
    }

    #[test]
    fn order_is_a_float_and_optional() {
        assert_eq!(parse_spec(json!({"order": 10.5})).order, Some(10.5));
        // Absent: evaluated after every ordered policy.
        assert_eq!(parse_spec(json!({})).order, None);
        assert_eq!(parse_spec(json!({"order": null})).order, None);
    }

    #[test]
    fn pass_to_the_next_tier() {
        let s = parse_spec(json!({
            "tier": "security",
            "order": 1,
            "selector": "all()",
            "ingress": [{"action": "Pass", "source": {"namespaceSelector": "trust == 'high'"}},
                        {"action": "Log"},
                        {"action": "Deny"}],
            "egress": [{"action": "Pass"}]
        }));
        assert_eq!(s.tier_or_default(), "security");
        assert_eq!(s.ingress[0].action, Action::Pass);
        assert_eq!(s.ingress[0].source.namespace_selector, Some(selector("trust == 'high'")));
        assert_eq!(s.effective_types(), vec![Ingress, Egress]);
    }

    #[test]
    fn global_policy_with_namespace_selector() {
        let p = parse_global(global(json!({
            "tier": "security",
            "order": 0,
            "namespaceSelector": "environment == 'prod'",
            "selector": "has(app)",
            "types": ["Ingress", "Egress"],
            "ingress": [{"action": "Deny", "source": {"namespaceSelector": "environment != 'prod'"}}],
            "egress": [{"action": "Allow", "protocol": "UDP",
                        "destination": {"selector": "k8s-app == 'kube-dns'",
                                        "namespaceSelector": "projectcalico.org/name == 'kube-system'",
                                        "ports": [53]}}]
        })));
        assert_eq!(p.metadata.namespace, None);
        assert_eq!(p.spec.namespace_selector, Some(selector("environment == 'prod'")));
        assert_eq!(p.spec.effective_types(), vec![Ingress, Egress]);
        assert_eq!(p.spec.egress[0].protocol, Some(CalicoProtocol::Udp));
    }

    #[test]
    fn nets_and_not_nets() {
        let s = parse_spec(json!({
            "types": ["Egress"],
            "egress": [
                {"action": "Deny", "destination": {"nets": ["169.254.169.254/32"]}},
                {"action": "Allow", "destination": {"nets": ["0.0.0.0/0"],
                                                    "notNets": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}
            ]
        }));
        assert_eq!(s.egress[0].destination.nets, vec![cidr("169.254.169.254/32")]);
        assert_eq!(s.egress[1].destination.not_nets.len(), 3);
        assert_eq!(s.egress[1].destination.not_nets[1], cidr("172.16.0.0/12"));
        assert!(s.egress[1].source.is_empty());
        assert_eq!(s.effective_types(), vec![Egress]);
    }

    #[test]
    fn port_numbers_ranges_and_names() {
        let s = parse_spec(json!({
            "ingress": [{"action": "Allow", "protocol": "TCP",
                         "destination": {"ports": [22, "80", "8000:8080", "9000:9000", "http-alt"],
                                         "notPorts": ["8081:8089"]}}]
        }));
        let d = &s.ingress[0].destination;
        assert_eq!(
            d.ports,
            vec![
                CalicoPort::Number(22),
                CalicoPort::Number(80),
                CalicoPort::Range { first: 8000, last: 8080 },
                CalicoPort::Range { first: 9000, last: 9000 },
                CalicoPort::Named("http-alt".into()),
            ]
        );
        assert_eq!(d.not_ports, vec![CalicoPort::Range { first: 8081, last: 8089 }]);
        let back = serde_json::to_value(d).expect("serializes");
        assert_eq!(back["ports"], json!([22, 80, "8000:8080", "9000:9000", "http-alt"]));
    }

    #[test]
    fn protocols_by_name_and_number() {
        let protocol = |p: Value| {
            parse_spec(json!({"ingress": [{"action": "Allow", "protocol": p}]})).ingress[0].protocol
        };
        assert_eq!(protocol(json!("TCP")), Some(CalicoProtocol::Tcp));
        assert_eq!(protocol(json!("SCTP")), Some(CalicoProtocol::Sctp));
        assert_eq!(protocol(json!("ICMP")), Some(CalicoProtocol::Icmp));
        // Numbers with a name are read as the name.
        assert_eq!(protocol(json!(6)), Some(CalicoProtocol::Tcp));
        assert_eq!(protocol(json!(17)), Some(CalicoProtocol::Udp));
        assert_eq!(protocol(json!(1)), Some(CalicoProtocol::Icmp));
        assert_eq!(protocol(json!(47)), Some(CalicoProtocol::Number(47)));
        assert_eq!(protocol(json!(255)), Some(CalicoProtocol::Number(255)));
        assert_eq!(CalicoProtocol::Number(47).number(), 47);
        assert_eq!(CalicoProtocol::Sctp.number(), 132);
        // So a numbered TCP rule may have ports.
        let s = parse_spec(
            json!({"ingress": [{"action": "Allow", "protocol": 6, "destination": {"ports": [80]}}]}),
        );
        assert_eq!(serde_json::to_value(&s.ingress[0]).expect("serializes")["protocol"], json!("TCP"));
    }

    // ---- Defaulting and absent versus empty ----

    #[test]
    fn types_default_like_calico() {
        let allow = json!([{"action": "Allow"}]);
        let cases = [
            (json!({}), vec![Ingress]),
            (json!({"ingress": allow}), vec![Ingress]),
            (json!({"egress": allow}), vec![Egress]),
            (json!({"ingress": allow, "egress": allow}), vec![Ingress, Egress]),
            // Empty lists are no rules, as absent ones.
            (json!({"ingress": [], "egress": []}), vec![Ingress]),
            (json!({"ingress": [], "egress": allow}), vec![Egress]),
            (json!({"ingress": allow, "egress": []}), vec![Ingress]),
            // An empty types list is defaulted like an absent one.
            (json!({"types": [], "egress": allow}), vec![Egress]),
            // Explicit types are kept, rules or not.
            (json!({"types": ["Egress"]}), vec![Egress]),
            (json!({"types": ["Ingress", "Egress"], "ingress": allow}), vec![Ingress, Egress]),
        ];
        for (spec, expected) in cases {
            assert_eq!(parse_spec(spec.clone()).effective_types(), expected, "{spec}");
        }
    }

    #[test]
    fn selector_defaults_to_all() {
        for spec in
            [json!({}), json!({"selector": ""}), json!({"selector": null}), json!({"selector": "all()"})]
        {
            assert_eq!(parse_spec(spec.clone()).selector, Selector::All, "{spec}");
        }
        let s = parse_spec(json!({}));
        assert_eq!((s.tier.as_deref(), s.tier_or_default()), (None, "default"));
        assert_eq!(serde_json::to_value(&s).expect("serializes"), json!({"selector": "all()"}));
    }

    #[test]
    fn an_empty_entity_selector_is_not_set() {
        let p = CalicoNetworkPolicy::from_json(&serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "e"},
            "spec": {"ingress": [{"action": "Allow", "source": {"selector": "", "notSelector": " "}}]}
        }))
        .unwrap();
        assert_eq!(p.spec.ingress[0].source.selector, None);
        assert_eq!(p.spec.ingress[0].source.not_selector, None);
        let bad = CalicoNetworkPolicy::from_json(&serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "e"},
            "spec": {"ingress": [{"action": "Allow", "source": {"selector": "a =="}}]}
        }))
        .unwrap_err();
        assert!(bad.to_string().contains("invalid selector"), "{bad}");
    }

    #[test]
    fn absent_and_all_entity_selectors_differ() {
        let source = |src: Value| {
            parse_spec(json!({"ingress": [{"action": "Allow", "source": src}]})).ingress[0].source.clone()
        };
        // No selector: any source, endpoints or not.
        let anywhere = source(json!({}));
        assert_eq!(anywhere.selector, None);
        assert!(anywhere.is_empty());
        // all(): any endpoint Calico knows, so not outside addresses.
        let endpoints = source(json!({"selector": "all()"}));
        assert_eq!(endpoints.selector, Some(Selector::All));
        assert!(!endpoints.is_empty());
        assert_ne!(anywhere, endpoints);
        // An absent source, a null one and {} are all "anywhere".
        let absent = parse_spec(json!({"ingress": [{"action": "Allow"}]})).ingress[0].source.clone();
        assert_eq!(absent, anywhere);
        assert_eq!(source(Value::Null), anywhere);
        // Empty lists are no condition, like absent ones.
        assert_eq!(source(json!({"nets": [], "notNets": null})), anywhere);
    }

    #[test]
    fn namespace_defaults_and_global_has_none() {
        let p = parse(json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                             "metadata": {"name": "a"}, "spec": {}}));
        assert_eq!(p.metadata.namespace_or_default(), "default");
        let g = parse_global(global(json!({})));
        assert_eq!(g.metadata.namespace, None);
    }

    #[test]
    fn round_trips_through_json() {
        let original = parse_global(global(json!({
            "tier": "security", "order": 2.5, "selector": "app in {'a', 'b'}",
            "namespaceSelector": "has(team)", "types": ["Egress"],
            "egress": [{"action": "Deny", "protocol": 132,
                        "source": {"notSelector": "role == 'admin'"},
                        "destination": {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"],
                                        "ports": [1, "2:3", "sctp-port"], "notPorts": [4]}}]
        })));
        let value = serde_json::to_value(&original).expect("serializes");
        assert_eq!(value["spec"]["selector"], json!("app in {\"a\", \"b\"}"));
        assert_eq!(value["spec"]["egress"][0]["protocol"], json!("SCTP"));
        assert_eq!(parse_global(value), original);
    }

    // ---- Validation: one test per rule, each naming the exact path ----

    #[test]
    fn ports_need_a_protocol_with_ports() {
        let (field, reason) = spec_error(json!({"ingress": [
            {"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}},
            {"action": "Allow", "protocol": "ICMP", "destination": {"ports": [80]}}
        ]}));
        assert_eq!(field, "spec.ingress[1].destination.ports");
        assert_eq!(reason, "ports need protocol TCP, UDP or SCTP; the rule's protocol is ICMP");
        let (field, reason) =
            spec_error(json!({"egress": [{"action": "Allow", "source": {"notPorts": [22]}}]}));
        assert_eq!(field, "spec.egress[0].source.notPorts");
        assert_eq!(reason, "notPorts need protocol TCP, UDP or SCTP; the rule sets no protocol");
        let (field, reason) = spec_error(
            json!({"egress": [{"action": "Allow", "protocol": 47, "destination": {"ports": ["http"]}}]}),
        );
        assert_eq!(field, "spec.egress[0].destination.ports");
        assert!(reason.ends_with("the rule's protocol is 47"), "{reason}");
    }

    #[test]
    fn port_ranges_are_ordered_and_in_range() {
        let rule = |ports: Value| json!({"ingress": [{"action": "Allow", "protocol": "UDP", "destination": {"ports": ports}}]});
        let (field, reason) = spec_error(rule(json!([53, "9000:8000"])));
        assert_eq!(field, "spec.ingress[0].destination.ports[1]");
        assert_eq!(reason, "range 9000:8000 is reversed: its first port is above its last");
        let (field, reason) = spec_error(rule(json!(["0:10"])));
        assert_eq!(field, "spec.ingress[0].destination.ports[0]");
        assert_eq!(reason, "range 0:10 starts at port 0; ports are 1 to 65535");
        let (field, reason) = spec_error(rule(json!([0])));
        assert_eq!(field, "spec.ingress[0].destination.ports[0]");
        assert_eq!(reason, "port 0 is out of range; ports are 1 to 65535");
        let (field, reason) = spec_error(rule(json!(["1:65536"])));
        assert_eq!(field, "spec.ingress[0].destination.ports[0]");
        assert_eq!(reason, "port \"65536\" is out of range; ports are 1 to 65535");
        let (field, reason) = spec_error(rule(json!([65536])));
        assert_eq!(field, "spec.ingress[0].destination.ports[0]");
        assert_eq!(reason, "port 65536 is out of range; ports are 1 to 65535");
        let (_, reason) = spec_error(rule(json!([-1])));
        assert_eq!(reason, "port -1 is out of range; ports are 1 to 65535");
        let (field, reason) = spec_error(rule(json!(["80:"])));
        assert_eq!(field, "spec.ingress[0].destination.ports[0]");
        assert_eq!(reason, "\"80:\" is not a port range; a range is \"first:last\" with port numbers");
        let (field, reason) = spec_error(rule(json!([true])));
        assert_eq!(field, "spec.ingress[0].destination.ports[0]");
        assert!(reason.contains("expected a port number, a \"first:last\" range or a port name"), "{reason}");
        let (field, _) = spec_error(
            json!({"ingress": [{"action": "Allow", "protocol": "TCP", "source": {"notPorts": ["2:1"]}}]}),
        );
        assert_eq!(field, "spec.ingress[0].source.notPorts[0]");
    }

    #[test]
    fn named_ports_are_service_names() {
        let (field, reason) = spec_error(json!({"egress": [
            {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http", "Metrics"]}}
        ]}));
        assert_eq!(field, "spec.egress[0].destination.ports[1]");
        assert!(reason.starts_with("\"Metrics\" is not a valid port name"), "{reason}");
    }

    #[test]
    fn nets_must_be_cidrs() {
        let (field, reason) = spec_error(json!({"ingress": [
            {"action": "Deny", "source": {"nets": ["10.0.0.0/8", "10.0.0.300/32"]}}
        ]}));
        assert_eq!(field, "spec.ingress[0].source.nets[1]");
        assert!(reason.ends_with("the address is not four decimal octets"), "{reason}");
        let (field, reason) = spec_error(json!({"egress": [
            {"action": "Deny", "destination": {"notNets": ["192.168.1.1/24"]}}
        ]}));
        assert_eq!(field, "spec.egress[0].destination.notNets[0]");
        assert!(reason.contains("host bits set (0.0.0.1 past the /24 prefix)"), "{reason}");
    }

    #[test]
    fn selectors_must_parse() {
        let (field, reason) = spec_error(json!({"selector": "app = 'web'"}));
        assert_eq!(field, "spec.selector");
        assert_eq!(reason, "invalid selector 'app = 'web'' at offset 4: expected '==', found a single '='");
        let (field, reason) =
            spec_error(json!({"ingress": [{"action": "Allow", "source": {"notSelector": "has(a"}}]}));
        assert_eq!(field, "spec.ingress[0].source.notSelector");
        assert!(reason.contains("at offset 5: expected ')' after the key in has(...)"), "{reason}");
        let (field, _) =
            spec_error(json!({"egress": [{"action": "Allow", "destination": {"namespaceSelector": 7}}]}));
        assert_eq!(field, "spec.egress[0].destination.namespaceSelector");
    }

    #[test]
    fn names_are_checked() {
        let (field, _) = refused(json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                                        "metadata": {"name": "Allow Web"}, "spec": {}}));
        assert_eq!(field, "metadata.name");
        let (field, _) = refused(json!({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
                                        "metadata": {"name": "a", "namespace": "Shop"}, "spec": {}}));
        assert_eq!(field, "metadata.namespace");
        let (field, _) = refused(json!({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                                        "metadata": {"name": "-a"}, "spec": {}}));
        assert_eq!(field, "metadata.name");
    }

    #[test]
    fn global_policies_have_no_namespace() {
        let mut doc = global(json!({}));
        doc["metadata"]["namespace"] = json!("default");
        let (field, reason) = refused(doc);
        assert_eq!(field, "metadata.namespace");
        assert_eq!(
            reason,
            "a GlobalNetworkPolicy is cluster-wide and has no namespace (use spec.namespaceSelector)"
        );
    }

    #[test]
    fn namespaced_policies_have_no_namespace_selector() {
        let (field, reason) = spec_error(json!({"namespaceSelector": "all()"}));
        assert_eq!(field, "spec.namespaceSelector");
        assert!(reason.starts_with("only a GlobalNetworkPolicy selects namespaces"), "{reason}");
        // The one in a rule's entity is fine.
        parse_spec(json!({"ingress": [{"action": "Allow", "source": {"namespaceSelector": "all()"}}]}));
    }

    #[test]
    fn tier_must_be_a_dns_label() {
        for bad in ["Security", "sec.urity", "", "-x"] {
            let (field, _) = spec_error(json!({"tier": bad}));
            assert_eq!(field, "spec.tier", "{bad}");
        }
        let (_, reason) = spec_error(json!({"tier": "sec.urity"}));
        assert!(reason.contains("contains '.'"), "{reason}");
    }

    #[test]
    fn actions_and_protocols_are_spelled_exactly() {
        let (field, reason) = spec_error(json!({"ingress": [{"action": "allow"}]}));
        assert_eq!(field, "spec.ingress[0].action");
        assert!(
            reason.starts_with("unknown variant `allow`, expected one of `Allow`, `Deny`, `Log`, `Pass`"),
            "{reason}"
        );
        let (field, reason) = spec_error(json!({"ingress": [{"protocol": "TCP"}]}));
        assert_eq!((field.as_str(), reason.as_str()), ("spec.ingress[0]", "missing field `action`"));
        for (bad, shown) in [
            (json!("tcp"), "\"tcp\""),
            (json!("ICMPv6"), "\"ICMPv6\""),
            (json!(0), "0"),
            (json!(256), "256"),
            (json!(-6), "-6"),
        ] {
            let (field, reason) = spec_error(json!({"egress": [{"action": "Allow", "protocol": bad}]}));
            assert_eq!(field, "spec.egress[0].protocol");
            assert_eq!(
                reason,
                format!("protocol {shown} is not TCP, UDP, SCTP, ICMP or a protocol number from 1 to 255")
            );
        }
    }

    #[test]
    fn types_are_not_repeated() {
        let (field, reason) = spec_error(json!({"types": ["Egress", "Egress"]}));
        assert_eq!(field, "spec.types[1]");
        assert_eq!(reason, "Egress is listed twice");
    }

    #[test]
    fn unsupported_fields_are_refused() {
        let (field, reason) = refused(global(json!({"doNotTrack": true})));
        assert_eq!(field, "spec");
        assert!(reason.starts_with("unknown field `doNotTrack`"), "{reason}");
        let (field, reason) =
            spec_error(json!({"ingress": [{"action": "Allow", "source": {"serviceAccounts": {}}}]}));
        assert_eq!(field, "spec.ingress[0].source");
        assert!(reason.starts_with("unknown field `serviceAccounts`"), "{reason}");
        let (field, reason) = spec_error(json!({"ingress": [{"action": "Allow", "icmp": {"type": 8}}]}));
        assert_eq!(field, "spec.ingress[0]");
        assert!(reason.starts_with("unknown field `icmp`"), "{reason}");
    }

    #[test]
    fn order_must_be_finite_when_built_in_code() {
        let mut p = parse(namespaced(json!({})));
        p.spec.order = Some(f64::NAN);
        assert_eq!(p.validate().unwrap_err().to_string(), "spec.order: must be a finite number");
        p.spec.order = Some(-1.0);
        assert_eq!(p.validate(), Ok(()));
        p.kind = GLOBAL_KIND.into();
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "kind: \"GlobalNetworkPolicy\" must be \"NetworkPolicy\""
        );
    }
}
