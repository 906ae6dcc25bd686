//! Kubernetes services for weft's kube-proxy replacement, as pure
//! computation: the objects, the allocation of their addresses and ports,
//! and what each node's datapath must hold for them.
//!
//! Nothing here does I/O: the agent feeds objects in and programs the BPF
//! maps with what comes out, so every decision is unit-tested here.
//!
//! - [`Service`] (`v1`) and [`EndpointSlice`] (`discovery.k8s.io/v1`),
//!   read from JSON with the API server's defaulting and validation;
//!   [`ServiceDocument`] dispatches on `apiVersion`/`kind` and reads a
//!   `List`. Errors are [`Invalid`], naming the field path. Reading them
//!   is the Kubernetes plumbing shared with `weft-policy`, in `weft-k8s`.
//! - [`alloc`]: cluster IPs and node ports, chosen from what is in use.
//! - [`ServiceTable`]: one node's view; [`ServiceTable::frontends_of`]
//!   gives a service's frontends (ClusterIP and NodePort) with their
//!   backends chosen by the traffic policies ([`select`]), flags and
//!   stable ids ([`Ids`]).
//! - [`maglev`]: consistent-hashing lookup tables, the same on every node.

#![forbid(unsafe_code)]

pub mod alloc;
mod document;
pub mod frontends;
pub mod ids;
pub mod maglev;
pub mod select;
pub mod service;
pub mod slice;

pub use alloc::{AllocError, ClusterIpRange, Ipv4Cidr, NodePortRange, assign};
pub use document::ServiceDocument;
pub use frontends::{Backend, BackendKey, Frontend, ServiceFrontend, ServiceTable};
pub use ids::{Ids, IdsExhausted};
pub use maglev::{MAGLEV_DEFAULT, MAGLEV_MEDIUM, MAGLEV_SMALL, MaglevBackend, MaglevError};
pub use select::Action;
pub use service::{ClusterIp, PortRef, Protocol, Service, ServiceKey, ServiceType, TrafficPolicy};
pub use slice::{Conditions, EndpointSlice};
pub use weft_k8s::{Ignored, Invalid, Labels, ObjectMeta};
