//! The lab: a whole weft cluster on one machine. Nodes and pods are network
//! namespaces joined by veth; each node runs a real `weft agent`; pods get
//! their network by exec'ing the real `weft-cni` with the CNI environment,
//! exactly as a container runtime does.
//!
//! Address plan (all inside the lab's namespaces): underlay 198.18.0.0/24
//! (node i is 198.18.0.(10+i)), pod CIDR of node i is 10.244.i.0/24.
//! Everything the lab creates carries `weft-<lab>` in its name, so
//! `weft lab down` finds leftovers even after a crash.

pub mod cli;
pub mod cni;
pub mod file;
pub mod layout;
pub mod lifecycle;
pub mod pki;
pub mod serve;

pub use layout::{Lab, LabNode, LabPod};
pub use lifecycle::{Options, down, up};
