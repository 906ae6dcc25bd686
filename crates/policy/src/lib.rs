//! weft's network policy, as pure computation: the selector languages that
//! pick endpoints, the rules that allow traffic between them, and (to come)
//! their compilation into the entries of each endpoint's policy map.
//!
//! Nothing here does I/O, blocks or spawns: the agent feeds in objects and
//! labels and gets values back, so every decision can be unit-tested and
//! replayed without a cluster.
//!
//! Two selector languages exist today:
//! - [`k8s::LabelSelector`], the `podSelector` / `namespaceSelector` of a
//!   Kubernetes `networking.k8s.io/v1` NetworkPolicy;
//! - [`calico::Selector`], the expression language of Calico's
//!   `projectcalico.org/v3` policies (`selector`, `namespaceSelector`).
//!
//! And the policy objects that hold them, read from JSON and validated:
//! - [`netpol::NetworkPolicy`], Kubernetes' `networking.k8s.io/v1` policy;
//! - [`calico_policy::CalicoNetworkPolicy`] and
//!   [`calico_policy::GlobalNetworkPolicy`], Calico's `projectcalico.org/v3`
//!   policies;
//! - [`PolicyDocument`], any of the three, dispatched on `apiVersion` and
//!   `kind`, with [`PolicyDocument::parse_many`] for a text of several.

#![forbid(unsafe_code)]

pub mod calico;
pub mod calico_policy;
mod de;
mod document;
pub mod k8s;
pub mod meta;
mod names;
pub mod netpol;

pub use calico::{ParseError, Selector};
pub use calico_policy::{CalicoNetworkPolicy, GlobalNetworkPolicy};
pub use document::PolicyDocument;
pub use k8s::{Invalid, LabelSelector, Operator, Requirement};
pub use meta::ObjectMeta;
pub use netpol::{Ipv4Cidr, NetworkPolicy, PolicyType};

/// The labels of an object (pod, namespace, ...): key to value, ordered so
/// that anything derived from them is deterministic.
pub type Labels = std::collections::BTreeMap<String, String>;
