//! The network configuration on stdin: what libcni hands the plugin.

use crate::error::{CniError, code};
use serde::Deserialize;
use serde_json::Value;

pub const SUPPORTED_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];

#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub agent_socket: String,
    pub mtu: Option<u32>,
    /// The runtime's cached result (CHECK, chained plugins).
    pub prev_result: Option<Value>,
    /// GC: attachments still valid, as (container id, ifname).
    pub valid_attachments: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "agentSocket")]
    agent_socket: Option<String>,
    mtu: Option<u32>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid: Vec<Attachment>,
}

#[derive(Deserialize)]
struct Attachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

/// The cniVersion of the input, if it can be read at all (so even errors
/// about other fields answer in the caller's version).
pub fn peek_version(input: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(input).ok()?.get("cniVersion")?.as_str().map(str::to_string)
}

pub fn parse(input: &[u8]) -> Result<NetConf, CniError> {
    let v: Value = serde_json::from_slice(input)
        .map_err(|e| CniError::new(code::DECODE, "cannot decode the network configuration", e.to_string()))?;
    let raw: Raw = serde_json::from_value(v)
        .map_err(|e| CniError::new(code::INVALID_CONFIG, "invalid network configuration", e.to_string()))?;
    let invalid = |field: &str, why: String| {
        CniError::new(code::INVALID_CONFIG, format!("invalid network configuration: {field}"), why)
    };
    let version = raw
        .cni_version
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("cniVersion", "cniVersion is required".into()))?;
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("incompatible CNI version {version}"),
            format!("weft-cni supports {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    let name = raw
        .name
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("name", "the network needs a name".into()))?;
    raw.kind
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("type", "the plugin type is required".into()))?;
    if let Some(m) = raw.mtu
        && !(576..=65535).contains(&m)
    {
        return Err(invalid("mtu", format!("{m} is outside 576..=65535")));
    }
    Ok(NetConf {
        cni_version: version,
        name,
        agent_socket: raw.agent_socket.unwrap_or_else(|| weft_api::DEFAULT_SOCKET.to_string()),
        mtu: raw.mtu,
        prev_result: raw.prev_result,
        valid_attachments: raw.valid.into_iter().map(|a| (a.container_id, a.ifname)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_config() {
        let c = parse(
            br#"{"cniVersion":"1.0.0","name":"weft","type":"weft-cni","mtu":1450,"agentSocket":"/x.sock"}"#,
        )
        .unwrap();
        assert_eq!(
            (c.cni_version.as_str(), c.name.as_str(), c.mtu, c.agent_socket.as_str()),
            ("1.0.0", "weft", Some(1450), "/x.sock")
        );
        let c = parse(br#"{"cniVersion":"1.1.0","name":"n","type":"weft-cni"}"#).unwrap();
        assert_eq!(c.agent_socket, weft_api::DEFAULT_SOCKET);
    }

    #[test]
    fn errors_have_the_right_codes() {
        assert_eq!(parse(b"{not json").unwrap_err().code, 6);
        assert_eq!(parse(br#"{"cniVersion":"1.0.0","type":"weft-cni"}"#).unwrap_err().code, 7);
        let e = parse(br#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","mtu":10}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("mtu"));
        assert_eq!(
            parse(br#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","mtu":"big"}"#).unwrap_err().code,
            7
        );
        let e = parse(br#"{"cniVersion":"0.9.9","name":"n","type":"weft-cni"}"#).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.details.contains("1.0.0, 1.1.0"));
    }

    #[test]
    fn gc_attachments() {
        let c = parse(br#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#).unwrap();
        assert_eq!(c.valid_attachments, vec![("a".to_string(), "eth0".to_string())]);
    }
}
