//! The Kubernetes `discovery.k8s.io/v1` EndpointSlice: the pods (or other
//! addresses) behind a Service, with their readiness, node and ports.
//!
//! The EndpointSlice controller writes one or more slices per service.
//! Each slice's `ports` carry the *service port's name* and the *target
//! port's number*, resolved for the pods of that slice: when a named
//! `targetPort` resolves to different numbers on different pods, those
//! pods land in different slices. So a consumer never resolves
//! `targetPort` itself; it matches service port names with slice port
//! names (see [`crate::frontends`]).

use crate::{
    Ignored, Invalid, ObjectMeta,
    service::{Protocol, ServiceKey},
};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use weft_k8s::{
    from_value,
    invalid::map_key,
    kinds::expect,
    names::{self, quoted},
    ports::port_number,
};

pub const API_VERSION: &str = "discovery.k8s.io/v1";
pub const KIND: &str = "EndpointSlice";
/// The label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The API server's limits on one slice.
const MAX_ENDPOINTS: usize = 1000;
const MAX_PORTS: usize = 100;
const MAX_ADDRESSES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSlice {
    pub api_version: String,
    pub kind: String,
    /// `labels` must hold [`SERVICE_NAME_LABEL`].
    pub metadata: ObjectMeta,
    pub address_type: AddressType,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

/// Only IPv4 is served; the other two are refused by validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AddressType {
    IPv4,
    IPv6,
    #[serde(rename = "FQDN")]
    Fqdn,
}

/// One endpoint (normally one pod).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// 1 to 100 addresses, all "fungible" per the API; like kube-proxy,
    /// weft uses the first one only.
    pub addresses: Vec<Ipv4Addr>,
    #[serde(default)]
    pub conditions: Conditions,
    /// The node hosting the endpoint: what makes it local to a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Kept, not used (no topology-aware routing yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing)]
    pub hostname: Option<Ignored>,
    #[serde(default, skip_serializing)]
    pub target_ref: Option<Ignored>,
    #[serde(default, skip_serializing)]
    pub hints: Option<Ignored>,
    #[serde(default, skip_serializing)]
    pub deprecated_topology: Option<Ignored>,
}

/// The three conditions, as written (`None` = unknown). The API's rules
/// for unknown values are in the accessor methods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<bool>,
}

/// A port of every endpoint in the slice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    /// The service port's name; absent is `""` (the API server's default),
    /// which matches an unnamed service port.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// The number the pods listen on. Absent means "all ports" in the API,
    /// which a service cannot forward to: such a port is ignored, as
    /// kube-proxy ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

impl Conditions {
    /// `ready` unknown means ready: "consumers should interpret this
    /// unknown state as ready" (API reference).
    pub fn is_ready(&self) -> bool {
        self.ready.unwrap_or(true)
    }

    /// `serving` unknown defers to `ready`, as the API says.
    pub fn is_serving(&self) -> bool {
        self.serving.unwrap_or_else(|| self.is_ready())
    }

    /// `terminating` unknown means not terminating.
    pub fn is_terminating(&self) -> bool {
        self.terminating.unwrap_or(false)
    }
}

impl EndpointSlice {
    /// Reads a slice from JSON and validates it; errors name the field.
    pub fn from_json(value: &serde_json::Value) -> Result<EndpointSlice, Invalid> {
        let slice: EndpointSlice = from_value(value)?;
        slice.validate()?;
        Ok(slice)
    }

    /// The service this slice belongs to (valid after validation).
    pub fn service_key(&self) -> ServiceKey {
        let name = self.metadata.labels.get(SERVICE_NAME_LABEL).cloned().unwrap_or_default();
        ServiceKey::new(self.metadata.namespace_or_default(), name)
    }

    /// The slice's own (namespace, name).
    pub fn slice_key(&self) -> (String, String) {
        (self.metadata.namespace_or_default().to_string(), self.metadata.name.clone())
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        expect("apiVersion", &self.api_version, API_VERSION)?;
        expect("kind", &self.kind, KIND)?;
        self.metadata.validate(names::dns1123_subdomain).map_err(|e| e.within("metadata"))?;
        match self.metadata.labels.get(SERVICE_NAME_LABEL) {
            None => {
                return Err(Invalid::new(
                    "metadata.labels",
                    format!("missing {SERVICE_NAME_LABEL:?}: the label that names the slice's Service"),
                ));
            }
            Some(name) => names::dns1035_label(name).map_err(|reason| {
                Invalid::new(map_key(SERVICE_NAME_LABEL), reason).within("metadata.labels")
            })?,
        }
        if self.address_type != AddressType::IPv4 {
            return Err(Invalid::new(
                "addressType",
                format!(
                    "{:?} is not supported; weft's datapath serves IPv4 endpoints only",
                    self.address_type
                ),
            ));
        }
        if self.endpoints.len() > MAX_ENDPOINTS {
            return Err(Invalid::new(
                "endpoints",
                format!("{} endpoints; at most {MAX_ENDPOINTS}", self.endpoints.len()),
            ));
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            endpoint.validate().map_err(|e| e.within(&format!("endpoints[{i}]")))?;
        }
        if self.ports.len() > MAX_PORTS {
            return Err(Invalid::new("ports", format!("{} ports; at most {MAX_PORTS}", self.ports.len())));
        }
        for (i, port) in self.ports.iter().enumerate() {
            let within = |e: Invalid| e.within(&format!("ports[{i}]"));
            port.validate().map_err(within)?;
            if let Some(j) = self.ports[..i].iter().position(|p| p.name == port.name) {
                return Err(within(Invalid::new(
                    "name",
                    format!("duplicate name {} (also ports[{j}])", quoted(&port.name)),
                )));
            }
        }
        Ok(())
    }
}

impl Endpoint {
    /// The address the datapath forwards to: the first (see `addresses`).
    pub fn address(&self) -> Ipv4Addr {
        self.addresses.first().copied().unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    fn validate(&self) -> Result<(), Invalid> {
        if self.addresses.is_empty() || self.addresses.len() > MAX_ADDRESSES {
            let reason = format!("{} addresses; an endpoint has 1 to {MAX_ADDRESSES}", self.addresses.len());
            return Err(Invalid::new("addresses", reason));
        }
        if let Some(node) = &self.node_name {
            names::dns1123_subdomain(node).map_err(|reason| Invalid::new("nodeName", reason))?;
        }
        Ok(())
    }
}

impl EndpointPort {
    /// The port number, if the slice gives one.
    pub fn number(&self) -> Option<u16> {
        self.port.and_then(|p| u16::try_from(p).ok())
    }

    fn validate(&self) -> Result<(), Invalid> {
        if !self.name.is_empty() {
            names::dns1123_label(&self.name).map_err(|reason| Invalid::new("name", reason))?;
        }
        if let Some(n) = self.port {
            port_number(n).map_err(|reason| Invalid::new("port", reason))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn slice(endpoints: Value, ports: Value) -> Value {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "web-abc12", "namespace": "shop",
                            "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4", "endpoints": endpoints, "ports": ports})
    }

    fn refused(v: Value) -> Invalid {
        EndpointSlice::from_json(&v).expect_err("should be refused")
    }

    #[test]
    fn condition_defaults_follow_the_api() {
        let c = |v: Value| -> Conditions { from_value(&v).expect("parses") };
        let all = |c: Conditions| (c.is_ready(), c.is_serving(), c.is_terminating());
        assert_eq!(all(c(json!({}))), (true, true, false));
        assert_eq!(all(c(json!({"ready": false}))), (false, false, false));
        assert_eq!(
            all(c(json!({"ready": false, "serving": true, "terminating": true}))),
            (false, true, true)
        );
        assert_eq!(all(c(json!({"ready": true, "serving": null}))), (true, true, false));
    }

    #[test]
    fn reads_a_controller_slice() {
        let v = slice(
            json!([{"addresses": ["10.244.1.5"], "conditions": {"ready": true, "serving": true, "terminating": false},
                    "nodeName": "node1", "zone": "a", "targetRef": {"kind": "Pod", "name": "web-1"},
                    "hints": {"forZones": [{"name": "a"}]}},
                   {"addresses": ["10.244.2.7"], "nodeName": "node2"}]),
            json!([{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}, {"port": 9090}]),
        );
        let s = EndpointSlice::from_json(&v).expect("parses");
        assert_eq!(s.service_key(), ServiceKey::new("shop", "web"));
        assert_eq!(s.slice_key(), ("shop".to_string(), "web-abc12".to_string()));
        assert_eq!(s.endpoints[1].address(), Ipv4Addr::new(10, 244, 2, 7));
        assert!(s.endpoints[1].conditions.is_ready());
        assert_eq!(
            (s.ports[1].name.as_str(), s.ports[1].protocol, s.ports[1].number()),
            ("", Protocol::Tcp, Some(9090))
        );
        let empty = slice(Value::Null, Value::Null);
        assert!(EndpointSlice::from_json(&empty).expect("parses").endpoints.is_empty());
    }

    #[test]
    fn refusals_name_the_field() {
        let mut v = slice(json!([]), json!([]));
        v["addressType"] = json!("IPv6");
        let e = refused(v);
        assert_eq!(e.field, "addressType");
        assert!(e.reason.contains("IPv4 endpoints only"), "{e}");
        let mut v = slice(json!([]), json!([]));
        v["metadata"]["labels"] = json!({"app": "web"});
        let e = refused(v);
        assert_eq!(e.field, "metadata.labels");
        assert!(e.reason.contains("kubernetes.io/service-name"), "{e}");
        let e = refused(slice(json!([{"addresses": ["10.244.1.5", "fd00::1"]}]), json!([])));
        assert_eq!(e.field, "endpoints[0].addresses[1]");
        let e = refused(slice(json!([{"addresses": []}]), json!([])));
        assert_eq!(e.field, "endpoints[0].addresses");
        let e =
            refused(slice(json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}]), json!([])));
        assert_eq!(e.field, "endpoints[0].conditions.ready");
        let e = refused(slice(json!([{"addresses": ["10.0.0.1"], "nodename": "n"}]), json!([])));
        assert_eq!(e.field, "endpoints[0]");
        assert!(e.reason.starts_with("unknown field `nodename`"), "{e}");
        let e = refused(slice(json!([]), json!([{"name": "a", "port": 1}, {"name": "a", "port": 2}])));
        assert_eq!(e.field, "ports[1].name");
        let e = refused(slice(json!([]), json!([{"port": 65536}])));
        assert_eq!(e.field, "ports[0].port");
        let mut v = slice(json!([]), json!([]));
        v["metadata"]["labels"]["kubernetes.io/service-name"] = json!("Web");
        assert_eq!(refused(v).field, "metadata.labels[\"kubernetes.io/service-name\"]");
        // The same path when reading refuses the value.
        let mut v = slice(json!([]), json!([]));
        v["metadata"]["labels"]["kubernetes.io/service-name"] = json!(5);
        let e = refused(v);
        assert_eq!(
            e.to_string(),
            "metadata.labels[\"kubernetes.io/service-name\"]: invalid type: integer `5`, expected a string"
        );
        // A required field set to null is missing, as when left out.
        let mut v = slice(json!([]), json!([]));
        v["addressType"] = Value::Null;
        assert_eq!(refused(v).to_string(), "missing field `addressType`");
        let e = refused(slice(json!([{"addresses": null}]), json!([])));
        assert_eq!(e.to_string(), "endpoints[0]: missing field `addresses`");
    }
}
