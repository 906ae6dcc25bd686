//! The network configuration on stdin: what libcni hands the plugin.

use crate::error::{CniError, code};
use serde::Deserialize;
use serde_json::Value;
use std::io::Read;

pub const SUPPORTED_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];

/// The most the plugin reads from stdin; a network configuration is a few
/// hundred bytes, a GC one a line per attachment.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Reads the configuration from `r`, refusing more than [`MAX_CONFIG_BYTES`]
/// (code 7) without reading further.
pub fn read(r: impl Read) -> Result<Vec<u8>, CniError> {
    let mut input = Vec::new();
    r.take(MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut input).map_err(|e| {
        CniError::new(code::IO, "cannot read the network configuration from stdin", e.to_string())
    })?;
    if input.len() > MAX_CONFIG_BYTES {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration: too large",
            format!(
                "the configuration on stdin is larger than {MAX_CONFIG_BYTES} bytes (1 MiB); weft-cni reads no more"
            ),
        ));
    }
    Ok(input)
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub agent_socket: String,
    pub mtu: Option<u32>,
    /// The runtime's cached result (CHECK, chained plugins).
    pub prev_result: Option<Value>,
    /// GC: attachments still valid, as (container id, ifname). `None` when
    /// the config has no `cni.dev/valid-attachments` (or it is null), which
    /// is not the same as an empty list (every attachment is stale).
    pub valid_attachments: Option<Vec<(String, String)>>,
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
    valid: Option<Vec<Attachment>>,
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
    weft_api::validate::network_name(&name).map_err(|e| invalid("name", e.to_string()))?;
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
        valid_attachments: raw.valid.map(|v| v.into_iter().map(|a| (a.container_id, a.ifname)).collect()),
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
        assert_eq!(c.valid_attachments, Some(vec![("a".to_string(), "eth0".to_string())]));
        let c =
            parse(br#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":[]}"#).unwrap();
        assert_eq!(c.valid_attachments, Some(vec![]));
        let c = parse(br#"{"cniVersion":"1.1.0","name":"n","type":"t"}"#).unwrap();
        assert_eq!(c.valid_attachments, None, "missing is not an empty list");
        let c = parse(br#"{"cniVersion":"1.1.0","name":"n","type":"t","cni.dev/valid-attachments":null}"#)
            .unwrap();
        assert_eq!(c.valid_attachments, None);
    }

    #[test]
    fn network_name_is_validated() {
        let e = parse(br#"{"cniVersion":"1.1.0","name":"my net","type":"t"}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("name"), "{e:?}");
        assert!(e.details.contains("network name \"my net\" is invalid"), "{e:?}");
        let long = format!(r#"{{"cniVersion":"1.1.0","name":"{}","type":"t"}}"#, "n".repeat(300));
        let e = parse(long.as_bytes()).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.details.contains("300 bytes long"), "{e:?}");
        assert!(e.details.len() < 250, "{e:?}");
    }

    #[test]
    fn stdin_is_bounded() {
        let ok = vec![b' '; MAX_CONFIG_BYTES];
        assert_eq!(read(&ok[..]).unwrap().len(), MAX_CONFIG_BYTES);
        let big = vec![b' '; 8 * MAX_CONFIG_BYTES];
        let e = read(&big[..]).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.details.contains("larger than 1048576 bytes"), "{e:?}");
    }
}
