//! `weft agent`: one per node. It is the single writer of the node's state —
//! devices, pod addresses, identities in use and the datapath maps — and
//! serves the CNI plugin and the CLI on a unix socket.
//!
//! Walk it in this order: `node` (the node's own devices), `endpoint`
//! (ADD/DEL/CHECK of a pod, journaled in `journal`, one operation per
//! attachment at a time by `attach_lock`), `reconcile` (what happens on
//! start, and the repair loop), `linkwatch` (devices and addresses that
//! change behind the agent's back), `cluster` (registration), `ipcache`
//! (the other nodes' pods, followed from the store), `routes` (native
//! mode's routes), `relabel` (labels change), `monitor` (events to
//! `weft monitor`), `server` (the socket) and `requests` (what each request
//! does). Devices, addresses and routes are made through netlink
//! (`weft_net::netlink`); the agent execs no `ip`.

pub mod attach_lock;
pub mod cluster;
pub mod config;
pub mod conntrack;
pub mod endpoint;
pub mod faults;
pub mod ids;
pub mod ipcache;
pub mod journal;
pub mod linkwatch;
pub mod logger;
pub mod monitor;
pub mod names;
pub mod nat;
pub mod node;
pub mod policy;
pub mod reconcile;
pub mod relabel;
pub mod removal;
pub mod requests;
pub mod routes;
pub mod server;
pub mod services;
pub mod state;
pub mod timing;

pub use config::AgentConfig;
pub use state::Agent;

/// Starts the agent and serves until the process is killed. Everything the
/// datapath needs lives in bpffs, so being killed at any moment is safe.
pub fn run(cfg: AgentConfig) -> Result<(), String> {
    // The node's state (journal, IPAM, local store) is the agent's alone,
    // whatever umask it was started with. Set before any thread exists.
    // SAFETY: umask(2) has no failure mode.
    unsafe { libc::umask(0o077) };
    logger::init();
    let agent = state::Agent::start(cfg)?;
    server::serve(agent)
}
