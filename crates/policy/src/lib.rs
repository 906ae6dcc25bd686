//! weft's network policy, as pure computation: the selector languages that
//! pick endpoints, the rules that allow traffic between them, and their
//! compilation into the entries of each endpoint's policy map.
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
//!
//! Reading them (field paths in errors, `null` as absent, metadata, name
//! rules, Lists, YAML) is the Kubernetes plumbing shared with
//! `weft-service`, in `weft-k8s`.
//!
//! And their enforcement:
//! - [`model`]: the cluster as the compiler sees it (namespaces with their
//!   datapath ids, pod identities, tiers, policies);
//! - [`decide`]: the reference evaluator, one packet at a time;
//! - [`Compiler`]: the per-endpoint policy map entries ([`map`]), kept
//!   equal to [`decide`] for every packet, with [`lookup`] simulating the
//!   datapath over them; [`cidr_class`] holds the address classes.

#![forbid(unsafe_code)]

pub mod calico;
pub mod calico_policy;
mod cells;
pub mod cidr_class;
mod compile;
mod document;
mod emit;
mod eval;
pub mod k8s;
pub mod l4;
pub mod map;
pub mod model;
pub mod netpol;
mod norm;
pub mod scenario;
pub mod selectors;

pub use calico::{ParseError, Selector};
pub use calico_policy::{CalicoNetworkPolicy, GlobalNetworkPolicy};
pub use document::PolicyDocument;
pub use k8s::{LabelSelector, Operator, Requirement};
pub use netpol::{Ipv4Cidr, NetworkPolicy, PolicyType};
pub use weft_k8s::{Invalid, Labels, ObjectMeta};

pub use cidr_class::ClassTable;
pub use compile::{Compiler, DEFAULT_ENTRY_BUDGET};
pub use eval::{Packet, decide, selects};
pub use l4::{L4, port_prefixes};
pub use map::{DirectionPolicy, EndpointPolicy, Entry, Key, Outcome, Peer, Probe, RuleRef, Verdict, lookup};
pub use model::{
    Cluster, CompileError, Direction, Endpoint, Identity, NamedPorts, Namespace, PolicyKind, PolicyRef,
    UpdateError,
};
