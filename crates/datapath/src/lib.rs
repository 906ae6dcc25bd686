//! weft's eBPF datapath as seen from user space: the objects built from
//! `bpf/*.c`, the Rust mirrors of their maps, the loader that attaches and
//! pins them, and the decoder for their events.

pub mod conntrack;
pub mod dissect;
pub mod events;
pub mod kernel;
pub mod lb;
pub mod loader;
pub mod maps;
pub mod nat;
pub mod pktgen;
pub mod policy;
pub mod sock;
pub mod tc;
pub mod tcx;

pub use loader::{Datapath, Error, Hook, ensure_bpffs};
pub use tc::{Attach, AttachPlan, TcMode};
