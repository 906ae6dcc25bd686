//! The Kubernetes object plumbing that weft's object crates share:
//! `weft-policy` (NetworkPolicy, Calico policies) and `weft-service`
//! (Service, EndpointSlice) read different objects the same way, and
//! an operator should get the same answer from both for the same mistake.
//! Keeping one copy here is what keeps them from drifting apart.
//!
//! Nothing here does I/O. One module per concern:
//! - [`invalid`]: [`Invalid`], the one error type, naming the field path
//!   (`spec.ingress[0].from[1].podSelector.matchLabels["app.kubernetes.io/name"]`);
//! - [`de`]: [`from_value`], serde over a JSON value with that path in
//!   every error, and `null` read as an absent field, as the API server
//!   reads it;
//! - [`names`]: the name rules the API server enforces (DNS-1123 labels
//!   and subdomains, DNS-1035 labels, port names, label keys and values);
//! - [`meta`]: [`ObjectMeta`], an object's `metadata`;
//! - [`ports`]: [`Protocol`] and [`PortRef`], the port vocabulary of
//!   `core/v1` that Services and NetworkPolicies share;
//! - [`kinds`]: reading an object of one of several kinds, chosen by its
//!   `apiVersion` and `kind`;
//! - [`list`]: the objects of an array or a Kubernetes `List`;
//! - [`text`]: the objects of a YAML or JSON text, as people write files.

#![forbid(unsafe_code)]

pub mod de;
pub mod invalid;
pub mod kinds;
pub mod list;
pub mod meta;
pub mod names;
pub mod ports;
pub mod text;

pub use de::{Ignored, from_value};
pub use invalid::Invalid;
pub use kinds::{Kind, Kinds};
pub use meta::{DEFAULT_NAMESPACE, ObjectMeta};
pub use ports::{PortRef, Protocol};

/// The labels of an object (pod, namespace, service, ...): key to value,
/// ordered so that anything derived from them is deterministic.
pub type Labels = std::collections::BTreeMap<String, String>;
