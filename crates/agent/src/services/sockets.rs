//! UDP sockets that socket load balancing connected to a backend that has
//! since left its service. A connected UDP socket never passes sendmsg4
//! again, so it would keep sending to the departed backend; the agent ends
//! it instead (sock_diag SOCK_DESTROY, crates/net/src/sockdiag.rs) in every
//! local pod's namespace and the node's own, and the application connects
//! again — to a backend that exists. Only sockets socket LB translated
//! (their cookie and backend are in weft_lb_sock_revnat) are touched: a
//! socket connected to the pod's address directly is the application's
//! business.

use crate::state::Agent;
use std::{collections::BTreeSet, net::Ipv4Addr, path::PathBuf};
use weft_datapath::lb::ServiceMaps;
use weft_net::sockdiag;

/// Ends, on a thread of its own, the translated UDP sockets connected to
/// any of `departed` (address, port).
pub fn end_connected_to(agent: &Agent, departed: BTreeSet<(Ipv4Addr, u16)>) {
    let mut namespaces: Vec<Option<PathBuf>> = vec![None];
    namespaces.extend(agent.pods().endpoints.values().map(|r| Some(PathBuf::from(&r.netns))));
    let bpffs = agent.cfg.bpffs.clone();
    let spawned = std::thread::Builder::new().name("weft-sock-end".into()).spawn(move || {
        let maps = match ServiceMaps::open(&bpffs) {
            Ok(m) => m,
            Err(e) => return log::warn!("services: cannot end UDP sockets of departed backends: {e}"),
        };
        let mut ended = 0;
        for ns in namespaces {
            match in_namespace(ns.clone(), &maps, &departed) {
                Ok(n) => ended += n,
                Err(e) => log::warn!("services: UDP sockets in {}: {e}", shown(&ns)),
            }
        }
        if ended > 0 {
            log::info!("services: ended {ended} UDP sockets connected to departed backends {departed:?}");
        }
    });
    if let Err(e) = spawned {
        log::warn!("services: cannot start the thread that ends UDP sockets: {e}");
    }
}

fn shown(ns: &Option<PathBuf>) -> String {
    ns.as_ref().map_or("the node's namespace".into(), |p| p.display().to_string())
}

/// The translated sockets to `departed` in one namespace (None: the
/// node's), ended; how many.
fn in_namespace(
    ns: Option<PathBuf>,
    maps: &ServiceMaps,
    departed: &BTreeSet<(Ipv4Addr, u16)>,
) -> Result<usize, String> {
    let sockets = match &ns {
        Some(p) => weft_net::netns::run_in(p, sockdiag::connected_udp),
        None => sockdiag::connected_udp(),
    }
    .map_err(|e| e.to_string())?;
    let doomed: Vec<sockdiag::UdpSocket> = sockets
        .into_iter()
        .filter(|s| departed.contains(&s.peer))
        .filter(|s| maps.sock_translated(s.cookie, s.peer.0, s.peer.1).unwrap_or(false))
        .collect();
    let n = doomed.len();
    if n == 0 {
        return Ok(0);
    }
    let end = move || doomed.iter().try_for_each(sockdiag::destroy_udp);
    match ns {
        Some(p) => weft_net::netns::run_in(&p, end),
        None => end(),
    }
    .map_err(|e| e.to_string())?;
    Ok(n)
}
