//! The port vocabulary of `core/v1` that a Service's ports and a
//! NetworkPolicy's ports share: the protocol, a port by number or by name
//! (Kubernetes' IntOrString), and the range a port number must be in.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Visitor};
use std::{fmt, ops::RangeInclusive};

/// The port numbers an object may name.
pub const PORTS: RangeInclusive<i32> = 1..=65535;

/// An L4 protocol, spelled as Kubernetes spells it (upper case only).
/// Absent means TCP, as the API server defaults it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// A port by number or by a container port's name (Kubernetes'
/// IntOrString). A string is always a name, even `"8080"` (which
/// [`crate::names::port_name`] then refuses: a name needs a letter), as
/// Kubernetes reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

/// Checks a port number: 1 to 65535.
pub fn port_number(n: i32) -> Result<(), String> {
    if PORTS.contains(&n) { Ok(()) } else { Err(port_out_of_range(n)) }
}

/// What is said of a port outside 1–65535 (`n` as written).
pub fn port_out_of_range(n: impl fmt::Display) -> String {
    format!("port {n} is out of range; ports are 1 to 65535")
}

impl Serialize for PortRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PortRef::Number(n) => serializer.serialize_i32(*n),
            PortRef::Name(name) => serializer.serialize_str(name),
        }
    }
}

impl<'de> Deserialize<'de> for PortRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PortRefVisitor)
    }
}

struct PortRefVisitor;

impl Visitor<'_> for PortRefVisitor {
    type Value = PortRef;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port number or a port name")
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<PortRef, E> {
        i32::try_from(n).map(PortRef::Number).map_err(|_| E::custom(port_out_of_range(n)))
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<PortRef, E> {
        i32::try_from(n).map(PortRef::Number).map_err(|_| E::custom(port_out_of_range(n)))
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<PortRef, E> {
        Ok(PortRef::Name(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_value;
    use serde_json::json;

    #[test]
    fn port_refs_read_as_kubernetes_writes_them() {
        assert_eq!(from_value::<PortRef>(&json!(80)), Ok(PortRef::Number(80)));
        assert_eq!(from_value::<PortRef>(&json!("http")), Ok(PortRef::Name("http".into())));
        // A string is a name, even of digits; validation refuses it.
        assert_eq!(from_value::<PortRef>(&json!("8080")), Ok(PortRef::Name("8080".into())));
        // Out of i32: refused when read; in i32 but not a port: by port_number.
        let e = from_value::<PortRef>(&json!(4_294_967_296_u64)).unwrap_err();
        assert_eq!(e.reason, "port 4294967296 is out of range; ports are 1 to 65535");
        assert_eq!(port_number(0), Err("port 0 is out of range; ports are 1 to 65535".into()));
        assert_eq!((port_number(1), port_number(65535)), (Ok(()), Ok(())));
        assert!(port_number(65536).is_err());
        let e = from_value::<PortRef>(&json!(1.5)).unwrap_err();
        assert_eq!(e.reason, "invalid type: floating point `1.5`, expected a port number or a port name");
        for p in [PortRef::Number(53), PortRef::Name("dns".into())] {
            assert_eq!(from_value::<PortRef>(&serde_json::to_value(&p).expect("serializes")), Ok(p));
        }
    }

    #[test]
    fn protocols_are_upper_case() {
        assert_eq!(from_value::<Protocol>(&json!("UDP")), Ok(Protocol::Udp));
        let e = from_value::<Protocol>(&json!("tcp")).unwrap_err();
        assert_eq!(e.reason, "unknown variant `tcp`, expected one of `TCP`, `UDP`, `SCTP`");
        assert_eq!(Protocol::default(), Protocol::Tcp);
        assert_eq!(Protocol::Sctp.to_string(), "SCTP");
        assert_eq!(serde_json::to_value(Protocol::Sctp).expect("serializes"), json!("SCTP"));
    }
}
