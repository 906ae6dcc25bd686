//! A whole cluster described in one file (`weft lab up -f lab.yaml`):
//! nodes and mode, namespaces with labels, pods with their namespace,
//! node, labels, named container ports and the servers they run.
//!
//! ```yaml
//! nodes: 2
//! mode: vxlan
//! namespaces:
//!   x: {labels: {ns: x}}
//! pods:
//! - {name: a, namespace: x, node: 1, labels: {pod: a},
//!    ports: [{name: serve-80-tcp, port: 80, protocol: TCP}],
//!    serve: [tcp/80, tcp/81, udp/80]}
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabFile {
    #[serde(default = "one")]
    pub nodes: usize,
    /// vxlan, ipip or native.
    #[serde(default)]
    pub mode: Option<String>,
    /// local or etcd (default: etcd with more than one node).
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceSpec>,
    #[serde(default)]
    pub pods: Vec<PodSpec>,
}

fn one() -> usize {
    1
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    pub name: String,
    #[serde(default = "default_ns")]
    pub namespace: String,
    /// 1-based node index.
    #[serde(default = "one")]
    pub node: usize,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<weft_api::ContainerPort>,
    /// Echo servers to run: `tcp/80`, `udp/53`.
    #[serde(default)]
    pub serve: Vec<String>,
}

fn default_ns() -> String {
    "default".into()
}

/// A server a pod runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    Tcp(u16),
    Udp(u16),
}

impl Serve {
    pub fn parse(s: &str) -> Result<Serve, String> {
        let (proto, port) = s.split_once('/').ok_or_else(|| format!("{s:?}: write tcp/PORT or udp/PORT"))?;
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| format!("{s:?}: bad port"))?;
        match proto {
            "tcp" => Ok(Serve::Tcp(port)),
            "udp" => Ok(Serve::Udp(port)),
            _ => Err(format!("{s:?}: protocol must be tcp or udp")),
        }
    }

    pub fn arg(self) -> String {
        match self {
            Serve::Tcp(p) => format!("tcp/{p}"),
            Serve::Udp(p) => format!("udp/{p}"),
        }
    }
}

impl PodSpec {
    /// The pod's name in the lab (and in `weft lab exec`): `<ns>-<name>`.
    pub fn lab_name(&self) -> String {
        format!("{}-{}", self.namespace, self.name)
    }
}

impl LabFile {
    /// Reads a YAML or JSON lab file and checks it.
    pub fn parse(text: &str) -> Result<LabFile, String> {
        let mut docs = weft_k8s::text::objects(text)?;
        if docs.len() != 1 {
            return Err(format!("a lab file holds one document, not {}", docs.len()));
        }
        let f: LabFile = serde_json::from_value(docs.remove(0)).map_err(|e| e.to_string())?;
        f.validate()?;
        Ok(f)
    }

    fn validate(&self) -> Result<(), String> {
        use weft_api::validate as v;
        if self.nodes == 0 || self.nodes > 200 {
            return Err("nodes: must be 1..=200".into());
        }
        for (ns, spec) in &self.namespaces {
            v::pod_namespace(ns).map_err(|e| format!("namespaces.{ns}: {e}"))?;
            for (k, val) in &spec.labels {
                v::label(k, val).map_err(|e| format!("namespaces.{ns}.labels: {e}"))?;
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.pods.iter().enumerate() {
            let at = |e: String| format!("pods[{i}] ({}): {e}", p.name);
            v::pod_name(&p.name).map_err(|e| at(e.to_string()))?;
            v::pod_namespace(&p.namespace).map_err(|e| at(e.to_string()))?;
            if !seen.insert(p.lab_name()) {
                return Err(at(format!("a second pod {} in namespace {}", p.name, p.namespace)));
            }
            if p.node == 0 || p.node > self.nodes {
                return Err(at(format!("node {} is not one of 1..={}", p.node, self.nodes)));
            }
            for (k, val) in &p.labels {
                v::label(k, val).map_err(|e| at(e.to_string()))?;
            }
            for port in &p.ports {
                weft_k8s::names::port_name(&port.name).map_err(at)?;
                if port.proto_number().is_none() {
                    return Err(at(format!("port {}: protocol must be TCP, UDP or SCTP", port.name)));
                }
            }
            for s in &p.serve {
                Serve::parse(s).map_err(at)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_file_reads_and_mistakes_are_named() {
        let f = LabFile::parse(
            "nodes: 2\nmode: ipip\nnamespaces:\n  x: {labels: {ns: x}}\npods:\n- {name: a, namespace: x, node: 2, labels: {pod: a}, ports: [{name: http, port: 80, protocol: TCP}], serve: [tcp/80, udp/80]}\n",
        )
        .unwrap();
        assert_eq!(f.nodes, 2);
        assert_eq!(f.pods[0].lab_name(), "x-a");
        assert_eq!(Serve::parse(&f.pods[0].serve[1]).unwrap(), Serve::Udp(80));
        let bad = |t: &str| LabFile::parse(t).unwrap_err();
        assert!(bad("nodes: 1\npods: [{name: a, node: 2}]\n").contains("pods[0] (a): node 2"));
        assert!(bad("pods: [{name: a, serve: [icmp/1]}]\n").contains("protocol must be tcp or udp"));
        assert!(bad("pods: [{name: a}, {name: a}]\n").contains("a second pod a"));
        assert!(bad("podz: []\n").contains("unknown field"));
    }
}
