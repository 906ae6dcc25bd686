//! Native mode: a route per remote node's pod CIDR via its underlay
//! address, for the host's own traffic (pods' traffic is routed in BPF).
//! Made through netlink; the routes carry weft's protocol number, so the
//! agent finds (and removes) them again without keeping state.

use crate::{cluster::NodeRecord, state::Agent};
use std::{collections::BTreeMap, net::Ipv4Addr};
use weft_net::netlink::{Netlink, Route};

/// Routes of weft's own making carry this protocol number.
pub const ROUTE_PROTO: u8 = 201;

/// A remote pod CIDR (address, prefix length) and the node it is on.
type Want = BTreeMap<(Ipv4Addr, u8), Ipv4Addr>;

/// Makes the node's weft routes those of `nodes` (this node's own left out).
pub fn sync(agent: &Agent, nodes: &[NodeRecord]) -> Result<(), String> {
    let want: Want = nodes
        .iter()
        .filter(|n| n.name != agent.cfg.node_name)
        .map(|n| ((n.pod_cidr.addr, n.pod_cidr.prefix), n.ip))
        .collect();
    let mut nl = Netlink::open().map_err(|e| e.to_string())?;
    let have = nl.routes_by_proto(ROUTE_PROTO).map_err(|e| e.to_string())?;
    let (stale, missing) = diff(&have, &want);
    for r in stale {
        nl.route_delete(&r).map_err(|e| e.to_string())?;
    }
    for ((dst, len), gw) in missing {
        let r = Route::to(dst, len).via(gw).dev(&agent.underlay_dev).proto(ROUTE_PROTO);
        nl.route_replace(&r).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The routes to remove (ours, not wanted, or via another gateway) and the
/// destinations to route (wanted, not there as wanted).
fn diff(have: &[Route], want: &Want) -> (Vec<Route>, Want) {
    let stale =
        have.iter().filter(|r| want.get(&(r.dst, r.dst_len)) != r.gateway.as_ref()).cloned().collect();
    let missing = want
        .iter()
        .filter(|(k, gw)| !have.iter().any(|r| (r.dst, r.dst_len) == **k && r.gateway == Some(**gw)))
        .map(|(k, gw)| (*k, *gw))
        .collect();
    (stale, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(dst: [u8; 4], gw: [u8; 4]) -> Route {
        Route::to(dst.into(), 24).via(gw.into()).dev("eth0").proto(ROUTE_PROTO)
    }

    #[test]
    fn only_what_differs_changes() {
        let have = vec![ours([10, 244, 1, 0], [198, 18, 0, 3]), ours([10, 244, 2, 0], [198, 18, 0, 4])];
        let want = BTreeMap::from([
            (([10, 244, 1, 0].into(), 24), [198, 18, 0, 3].into()),
            (([10, 244, 2, 0].into(), 24), [198, 18, 0, 9].into()),
            (([10, 244, 3, 0].into(), 24), [198, 18, 0, 5].into()),
        ]);
        let (stale, missing) = diff(&have, &want);
        assert_eq!(stale, vec![have[1].clone()], "the node that moved");
        let want_missing = Want::from([
            (([10, 244, 2, 0].into(), 24), [198, 18, 0, 9].into()),
            (([10, 244, 3, 0].into(), 24), [198, 18, 0, 5].into()),
        ]);
        assert_eq!(missing, want_missing);
        let (stale, missing) = diff(&have, &BTreeMap::new());
        assert_eq!((stale.len(), missing.len()), (2, 0), "a node that left loses its route");
    }
}
