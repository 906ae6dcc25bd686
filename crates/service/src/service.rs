//! The Kubernetes `v1` Service, as far as a kube-proxy replacement reads
//! it, with the API server's defaulting and validation.
//!
//! weft serves `ClusterIP` and `NodePort` services. `LoadBalancer` and
//! `ExternalName` are refused with the reason rather than accepted and
//! half-served: a service the datapath ignores would time out silently.
//! Defaults the API server fills in are applied by accessor methods
//! (`target_port()`, `internal_traffic_policy()`, ...), so the object keeps
//! what was written and serializes back to it.

use crate::{Ignored, Invalid, Labels, ObjectMeta};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Visitor};
use std::{fmt, net::Ipv4Addr};
use weft_k8s::{
    from_value,
    kinds::expect,
    names::{self, quoted},
    ports::port_number,
};

/// A port's protocol and a port by number or name: `core/v1`'s, shared
/// with NetworkPolicies.
pub use weft_k8s::{PortRef, Protocol};

pub const API_VERSION: &str = "v1";
pub const KIND: &str = "Service";
/// The ClientIP affinity timeout when none is written (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// The longest ClientIP affinity timeout the API server accepts (1 day).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86_400;

/// A `v1` Service: a stable address (and, for `NodePort`, a port on every
/// node) in front of the pods listed in its EndpointSlices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
    /// Written by the API server (load-balancer ingress, conditions).
    #[serde(default, skip_serializing)]
    pub status: Option<Ignored>,
}

/// What the service is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// The virtual address; [`ServiceSpec::cluster_ip`] merges it with
    /// `clusterIPs`.
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: ClusterIp,
    /// The dual-stack form of `clusterIP` (its first entry is `clusterIP`).
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<ClusterIp>,
    #[serde(default)]
    pub ip_families: Vec<IpFamily>,
    #[serde(default)]
    pub ip_family_policy: Option<IpFamilyPolicy>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// The pods the EndpointSlice controller lists. Kept; weft itself reads
    /// the EndpointSlices, so a service without selector works too.
    #[serde(default)]
    pub selector: Labels,
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    #[serde(default)]
    pub session_affinity_config: Option<SessionAffinityConfig>,
    /// For traffic from inside the cluster to the cluster IP; see
    /// [`ServiceSpec::internal_traffic_policy`].
    #[serde(default)]
    pub internal_traffic_policy: Option<TrafficPolicy>,
    /// For traffic from outside to a node port; see
    /// [`ServiceSpec::external_traffic_policy`].
    #[serde(default)]
    pub external_traffic_policy: Option<TrafficPolicy>,
    /// Read by the EndpointSlice controller (it marks unready pods ready);
    /// weft honours it by trusting `ready` on terminating endpoints.
    #[serde(default)]
    pub publish_not_ready_addresses: bool,
    /// Refused when not empty: weft does not serve external IPs yet.
    #[serde(default, rename = "externalIPs")]
    pub external_ips: Vec<String>,
}

/// `spec.type`, all four spellings so that the refusal can say why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

/// `spec.clusterIP` as written: `""`/absent (not allocated yet), `"None"`
/// (headless: DNS only, no virtual address) or an IPv4 address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ClusterIp {
    #[default]
    Unassigned,
    Headless,
    Addr(Ipv4Addr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpFamilyPolicy {
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// One port of the service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Required (and unique) when the service has more than one port. The
    /// EndpointSlice ports carry the same name: it is what joins them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    pub port: i32,
    /// See [`ServicePort::target_port`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<PortRef>,
    /// `0` or absent: not allocated (yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionAffinity {
    #[default]
    None,
    ClientIP,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionAffinityConfig {
    #[serde(default, rename = "clientIP")]
    pub client_ip: Option<ClientIpConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientIpConfig {
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
}

/// Which endpoints a traffic policy allows: all of the cluster's, or only
/// those on the node the traffic arrived at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// A service's identity: namespace and name. EndpointSlices find their
/// service by it (their namespace and `kubernetes.io/service-name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl Service {
    /// Reads a Service from JSON and validates it; errors name the field.
    pub fn from_json(value: &serde_json::Value) -> Result<Service, Invalid> {
        let service: Service = from_value(value)?;
        service.validate()?;
        Ok(service)
    }

    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(self.metadata.namespace_or_default(), &self.metadata.name)
    }

    /// Checks the service as the API server would, plus weft's limits
    /// (IPv4 only; no LoadBalancer, ExternalName or external IPs).
    pub fn validate(&self) -> Result<(), Invalid> {
        expect("apiVersion", &self.api_version, API_VERSION)?;
        expect("kind", &self.kind, KIND)?;
        self.metadata.validate(names::dns1035_label).map_err(|e| e.within("metadata"))?;
        self.spec.validate().map_err(|e| e.within("spec"))
    }
}

impl ServiceSpec {
    /// The service's address: `clusterIP`, else the first of `clusterIPs`
    /// (the API server copies one into the other).
    pub fn cluster_ip(&self) -> ClusterIp {
        match (self.cluster_ip, self.cluster_ips.first()) {
            (ClusterIp::Unassigned, Some(first)) => *first,
            (written, _) => written,
        }
    }

    pub fn is_headless(&self) -> bool {
        self.cluster_ip() == ClusterIp::Headless
    }

    /// Defaulted to `Cluster`, as the API server does.
    pub fn internal_traffic_policy(&self) -> TrafficPolicy {
        self.internal_traffic_policy.unwrap_or_default()
    }

    /// Defaulted to `Cluster`; only a NodePort service has one.
    pub fn external_traffic_policy(&self) -> TrafficPolicy {
        self.external_traffic_policy.unwrap_or_default()
    }

    /// The ClientIP affinity timeout in seconds, or `None` without
    /// affinity. Defaulted to [`DEFAULT_AFFINITY_TIMEOUT`].
    pub fn affinity_timeout(&self) -> Option<u32> {
        if self.session_affinity != SessionAffinity::ClientIP {
            return None;
        }
        let written =
            self.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()?.timeout_seconds);
        Some(written.and_then(|t| u32::try_from(t).ok()).unwrap_or(DEFAULT_AFFINITY_TIMEOUT))
    }

    /// Paths are relative to the spec. Stops at the first error.
    pub fn validate(&self) -> Result<(), Invalid> {
        match self.type_ {
            ServiceType::ClusterIP | ServiceType::NodePort => {}
            ServiceType::LoadBalancer => {
                return Err(Invalid::new(
                    "type",
                    "LoadBalancer is not supported: weft has no load-balancer controller to give it an \
                     external address; use NodePort (a LoadBalancer service is a NodePort service plus that address)",
                ));
            }
            ServiceType::ExternalName => {
                return Err(Invalid::new(
                    "type",
                    "ExternalName is not supported: it is a DNS alias (a CNAME served by cluster DNS), \
                     with nothing for the datapath to forward",
                ));
            }
        }
        self.validate_addresses()?;
        self.validate_ports()?;
        self.validate_affinity()?;
        if self.external_traffic_policy.is_some() && self.type_ != ServiceType::NodePort {
            return Err(Invalid::new(
                "externalTrafficPolicy",
                "may only be set when type is NodePort: it governs traffic arriving from outside the cluster, \
                 which a ClusterIP service does not receive",
            ));
        }
        if !self.external_ips.is_empty() {
            return Err(Invalid::new("externalIPs", "external IPs are not supported by weft"));
        }
        Ok(())
    }

    fn validate_addresses(&self) -> Result<(), Invalid> {
        if self.cluster_ips.len() > 1 {
            return Err(Invalid::new(
                "clusterIPs",
                "lists more than one address; weft's datapath is IPv4-only (single stack)",
            ));
        }
        if let Some(first) = self.cluster_ips.first()
            && self.cluster_ip != ClusterIp::Unassigned
            && *first != self.cluster_ip
        {
            return Err(Invalid::new(
                "clusterIPs[0]",
                format!("{first} must be the same as clusterIP {}", self.cluster_ip),
            ));
        }
        if let Some(i) = self.ip_families.iter().position(|f| *f != IpFamily::IPv4) {
            return Err(Invalid::new(format!("ipFamilies[{i}]"), "only IPv4 is supported"));
        }
        if self.ip_family_policy == Some(IpFamilyPolicy::RequireDualStack) {
            return Err(Invalid::new("ipFamilyPolicy", "RequireDualStack cannot be met: weft is IPv4-only"));
        }
        if self.is_headless() && self.type_ == ServiceType::NodePort {
            return Err(Invalid::new("clusterIP", "may not be \"None\" (headless) for a NodePort service"));
        }
        Ok(())
    }

    fn validate_ports(&self) -> Result<(), Invalid> {
        if self.ports.is_empty() && !self.is_headless() {
            return Err(Invalid::new(
                "ports",
                "a service needs at least one port (only a headless one may have none)",
            ));
        }
        let named = self.ports.len() > 1;
        for (i, port) in self.ports.iter().enumerate() {
            let within = |e: Invalid| e.within(&format!("ports[{i}]"));
            port.validate(named, self.type_).map_err(within)?;
            let earlier = &self.ports[..i];
            if let Some(j) = earlier.iter().position(|p| !p.name.is_empty() && p.name == port.name) {
                return Err(within(Invalid::new(
                    "name",
                    format!("duplicate name {:?} (also ports[{j}])", port.name),
                )));
            }
            if let Some(j) = earlier.iter().position(|p| (p.port, p.protocol) == (port.port, port.protocol)) {
                let reason = format!("duplicate port {}/{} (also ports[{j}])", port.port, port.protocol);
                return Err(within(Invalid::new("port", reason)));
            }
            if let Some(node_port) = port.node_port()
                && let Some(j) = earlier
                    .iter()
                    .position(|p| (p.node_port(), p.protocol) == (Some(node_port), port.protocol))
            {
                let reason = format!("duplicate nodePort {node_port}/{} (also ports[{j}])", port.protocol);
                return Err(within(Invalid::new("nodePort", reason)));
            }
        }
        Ok(())
    }

    fn validate_affinity(&self) -> Result<(), Invalid> {
        let Some(config) = &self.session_affinity_config else { return Ok(()) };
        if self.session_affinity != SessionAffinity::ClientIP {
            return Err(Invalid::new(
                "sessionAffinityConfig",
                "may only be set when sessionAffinity is ClientIP",
            ));
        }
        if let Some(t) = config.client_ip.as_ref().and_then(|c| c.timeout_seconds)
            && !(1..=i64::from(MAX_AFFINITY_TIMEOUT)).contains(&t)
        {
            return Err(Invalid::new(
                "sessionAffinityConfig.clientIP.timeoutSeconds",
                format!("{t} is out of range; the timeout is 1 to {MAX_AFFINITY_TIMEOUT} seconds"),
            ));
        }
        Ok(())
    }
}

impl ServicePort {
    /// The port number (valid after validation).
    pub fn port(&self) -> u16 {
        u16::try_from(self.port).unwrap_or(0)
    }

    /// Where the pods listen, defaulted as the API server does: absent,
    /// `0` or `""` means the service's own `port`.
    pub fn target_port(&self) -> PortRef {
        match &self.target_port {
            None | Some(PortRef::Number(0)) => PortRef::Number(self.port),
            Some(PortRef::Name(name)) if name.is_empty() => PortRef::Number(self.port),
            Some(written) => written.clone(),
        }
    }

    /// The node port, if allocated (`0` is Go's "unset").
    pub fn node_port(&self) -> Option<u16> {
        self.node_port.filter(|&p| p != 0).and_then(|p| u16::try_from(p).ok())
    }

    /// `named`: the service has several ports, so each needs a name.
    fn validate(&self, named: bool, type_: ServiceType) -> Result<(), Invalid> {
        if self.name.is_empty() {
            if named {
                return Err(Invalid::new("name", "required when a service has more than one port"));
            }
        } else {
            names::dns1123_label(&self.name).map_err(|reason| Invalid::new("name", reason))?;
        }
        port_number(self.port).map_err(|reason| Invalid::new("port", reason))?;
        match self.target_port() {
            PortRef::Number(n) => port_number(n).map_err(|reason| Invalid::new("targetPort", reason))?,
            PortRef::Name(name) => {
                names::port_name(&name).map_err(|reason| Invalid::new("targetPort", reason))?
            }
        }
        if let Some(n) = self.node_port.filter(|&p| p != 0) {
            if type_ != ServiceType::NodePort {
                return Err(Invalid::new("nodePort", "may only be set when type is NodePort"));
            }
            port_number(n).map_err(|reason| Invalid::new("nodePort", reason))?;
        }
        Ok(())
    }
}

impl fmt::Display for ClusterIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterIp::Unassigned => f.write_str("\"\""),
            ClusterIp::Headless => f.write_str("None"),
            ClusterIp::Addr(ip) => write!(f, "{ip}"),
        }
    }
}

impl Serialize for ClusterIp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ClusterIp::Unassigned => serializer.serialize_str(""),
            ClusterIp::Headless => serializer.serialize_str("None"),
            ClusterIp::Addr(ip) => serializer.collect_str(ip),
        }
    }
}

impl<'de> Deserialize<'de> for ClusterIp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ClusterIp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IPv4 address, \"None\" or \"\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ClusterIp, E> {
                match s {
                    "" => Ok(ClusterIp::Unassigned),
                    "None" => Ok(ClusterIp::Headless),
                    _ => s.parse().map(ClusterIp::Addr).map_err(|_| {
                        E::custom(format!(
                            "{} is not an IPv4 address (nor \"None\" for a headless service); weft is IPv4-only",
                            quoted(s)
                        ))
                    }),
                }
            }
        }
        deserializer.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"}, "spec": spec})
    }

    fn parse(spec: Value) -> Service {
        Service::from_json(&svc(spec)).unwrap_or_else(|e| panic!("should parse: {e}"))
    }

    fn refused(spec: Value) -> Invalid {
        Service::from_json(&svc(spec)).expect_err("should be refused")
    }

    #[test]
    fn defaults() {
        let s = parse(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
        assert_eq!(s.key(), ServiceKey::new("shop", "web"));
        assert_eq!(s.spec.type_, ServiceType::ClusterIP);
        assert_eq!(s.spec.cluster_ip(), ClusterIp::Addr(Ipv4Addr::new(10, 96, 0, 10)));
        let p = &s.spec.ports[0];
        assert_eq!((p.protocol, p.target_port(), p.node_port()), (Protocol::Tcp, PortRef::Number(80), None));
        assert_eq!(s.spec.internal_traffic_policy(), TrafficPolicy::Cluster);
        assert_eq!(s.spec.external_traffic_policy(), TrafficPolicy::Cluster);
        assert_eq!(s.spec.affinity_timeout(), None);
        // Go's zero values mean "default" too.
        let s = parse(json!({"ports": [{"port": 53, "protocol": "UDP", "targetPort": 0}]}));
        assert_eq!(s.spec.ports[0].target_port(), PortRef::Number(53));
        assert_eq!(s.spec.cluster_ip(), ClusterIp::Unassigned);
        let s = parse(json!({"ports": [{"port": 53, "targetPort": ""}], "clusterIPs": ["10.96.0.3"]}));
        assert_eq!(s.spec.ports[0].target_port(), PortRef::Number(53));
        assert_eq!(s.spec.cluster_ip(), ClusterIp::Addr(Ipv4Addr::new(10, 96, 0, 3)));
        let s = Service::from_json(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
            "spec": {"ports": [{"port": 1}]}}))
        .expect("parses");
        assert_eq!(s.key(), ServiceKey::new("default", "a"));
    }

    #[test]
    fn affinity_defaults_and_limits() {
        let s = parse(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP"}));
        assert_eq!(s.spec.affinity_timeout(), Some(DEFAULT_AFFINITY_TIMEOUT));
        let s = parse(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}));
        assert_eq!(s.spec.affinity_timeout(), Some(60));
        let s = parse(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {}}}));
        assert_eq!(s.spec.affinity_timeout(), Some(10_800));
        let e = refused(json!({"ports": [{"port": 80}], "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 86401}}}));
        assert_eq!(e.field, "spec.sessionAffinityConfig.clientIP.timeoutSeconds");
        assert!(e.reason.contains("1 to 86400"), "{e}");
        let e = refused(
            json!({"ports": [{"port": 80}], "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}),
        );
        assert_eq!(e.field, "spec.sessionAffinityConfig");
        let e = refused(json!({"ports": [{"port": 80}], "sessionAffinity": "Cookie"}));
        assert_eq!(e.field, "spec.sessionAffinity");
    }

    #[test]
    fn unsupported_types_say_why() {
        let e = refused(json!({"type": "LoadBalancer", "ports": [{"port": 80}]}));
        assert_eq!(e.field, "spec.type");
        assert!(
            e.reason.starts_with("LoadBalancer is not supported") && e.reason.contains("NodePort"),
            "{e}"
        );
        let e = refused(json!({"type": "ExternalName", "ports": [{"port": 80}]}));
        assert!(e.reason.contains("CNAME"), "{e}");
        assert_eq!(refused(json!({"type": "Bogus"})).field, "spec.type");
    }

    #[test]
    fn ports_are_checked() {
        let e = refused(json!({"ports": [{"port": 80}, {"port": 81, "name": "b"}]}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("spec.ports[0].name", "required when a service has more than one port")
        );
        let e = refused(json!({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("spec.ports[1].name", "duplicate name \"a\" (also ports[0])")
        );
        let e = refused(json!({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}));
        assert_eq!(e.field, "spec.ports[1].port");
        // The same number for two protocols is fine (DNS).
        parse(json!({"ports": [{"port": 53, "name": "a"}, {"port": 53, "name": "b", "protocol": "UDP"}]}));
        let e = refused(json!({"ports": [{"port": 0}]}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("spec.ports[0].port", "port 0 is out of range; ports are 1 to 65535")
        );
        let e = refused(json!({"ports": [{"port": 80, "name": "Web"}]}));
        assert_eq!(e.field, "spec.ports[0].name");
        let e = refused(json!({"ports": [{"port": 80, "targetPort": 70000}]}));
        assert_eq!(e.field, "spec.ports[0].targetPort");
        let e = refused(json!({"ports": [{"port": 80, "targetPort": "8080"}]}));
        assert!(e.reason.contains("has no letter"), "{e}");
        let e = refused(json!({"ports": [{"port": 80, "protocol": "ICMP"}]}));
        assert_eq!(e.field, "spec.ports[0].protocol");
        let e = refused(json!({"ports": [{"port": 80, "prot": "TCP"}]}));
        assert_eq!(e.field, "spec.ports[0]");
        assert!(e.reason.starts_with("unknown field `prot`"), "{e}");
        let e = refused(json!({"ports": []}));
        assert_eq!(e.field, "spec.ports");
        let s = parse(json!({"ports": [{"port": 80, "name": "http", "targetPort": "web"}]}));
        assert_eq!(s.spec.ports[0].target_port(), PortRef::Name("web".into()));
    }

    #[test]
    fn node_ports_only_on_node_port_services() {
        let s = parse(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}));
        assert_eq!(s.spec.ports[0].node_port(), Some(30080));
        let e = refused(json!({"ports": [{"port": 80, "nodePort": 30080}]}));
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("spec.ports[0].nodePort", "may only be set when type is NodePort")
        );
        let e = refused(json!({"type": "NodePort", "ports": [{"port": 80, "name": "a", "nodePort": 30080},
            {"port": 81, "name": "b", "nodePort": 30080}]}));
        assert_eq!(e.field, "spec.ports[1].nodePort");
        let e = refused(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}));
        assert_eq!(e.field, "spec.clusterIP");
    }

    #[test]
    fn traffic_policies() {
        let s = parse(json!({"type": "NodePort", "ports": [{"port": 80}], "externalTrafficPolicy": "Local",
            "internalTrafficPolicy": "Local"}));
        assert_eq!(s.spec.external_traffic_policy(), TrafficPolicy::Local);
        assert_eq!(s.spec.internal_traffic_policy(), TrafficPolicy::Local);
        let e = refused(json!({"ports": [{"port": 80}], "externalTrafficPolicy": "Cluster"}));
        assert_eq!(e.field, "spec.externalTrafficPolicy");
        assert!(e.reason.starts_with("may only be set when type is NodePort"), "{e}");
        assert_eq!(
            refused(json!({"ports": [{"port": 80}], "internalTrafficPolicy": "Node"})).field,
            "spec.internalTrafficPolicy"
        );
    }

    #[test]
    fn addresses() {
        let s = parse(json!({"clusterIP": "None"}));
        assert!(s.spec.is_headless());
        let e = refused(json!({"clusterIP": "10.96.0", "ports": [{"port": 80}]}));
        assert_eq!(e.field, "spec.clusterIP");
        assert!(e.reason.contains("not an IPv4 address"), "{e}");
        let e =
            refused(json!({"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.2"], "ports": [{"port": 80}]}));
        assert_eq!(e.field, "spec.clusterIPs[0]");
        let e = refused(json!({"ipFamilies": ["IPv4", "IPv6"], "ports": [{"port": 80}]}));
        assert_eq!(e.field, "spec.ipFamilies[1]");
        let e = refused(json!({"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}));
        assert_eq!(e.field, "spec.ipFamilyPolicy");
        let e = refused(json!({"externalIPs": ["1.2.3.4"], "ports": [{"port": 80}]}));
        assert_eq!(e.field, "spec.externalIPs");
    }

    #[test]
    fn kubectl_output_reads_back() {
        let v = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "7",
                         "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"app": "web"}},
            "spec": {"clusterIP": "10.96.4.2", "clusterIPs": ["10.96.4.2"], "internalTrafficPolicy": "Cluster",
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}],
                     "selector": {"app": "web"}, "sessionAffinity": "None", "type": "ClusterIP"},
            "status": {"loadBalancer": {}}
        });
        let s = Service::from_json(&v).expect("parses");
        assert_eq!(s.metadata.labels["app"], "web");
        let back = serde_json::to_value(&s).expect("serializes");
        assert!(back.get("status").is_none());
        assert_eq!(Service::from_json(&back).expect("reads back"), Service { status: None, ..s });
        let e = Service::from_json(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}))
            .unwrap_err();
        assert_eq!(e.field, "kind");
        let e =
            Service::from_json(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1a"}}))
                .unwrap_err();
        assert_eq!(e.field, "metadata.name");
    }
}
