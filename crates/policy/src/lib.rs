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

#![forbid(unsafe_code)]

pub mod calico;
pub mod k8s;

pub use calico::{ParseError, Selector};
pub use k8s::{Invalid, LabelSelector, Operator, Requirement};

/// The labels of an object (pod, namespace, ...): key to value, ordered so
/// that anything derived from them is deterministic.
pub type Labels = std::collections::BTreeMap<String, String>;
