//! Which endpoints a frontend may send new connections to, by its traffic
//! policy and the endpoints' conditions: kube-proxy's rules
//! (`CategorizeEndpoints`), which the Kubernetes conformance and e2e
//! tests check, and which a kube-proxy replacement must therefore meet.
//!
//! - **Cluster**: the ready endpoints of the whole cluster. If there is
//!   none, the serving *and* terminating ones (pods being shut down that
//!   still answer), so a rolling restart does not drop connections.
//! - **Local**: the ready endpoints on this node; if none, this node's
//!   serving and terminating ones (Cilium missed this fallback for
//!   `externalTrafficPolicy: Local`, cilium/cilium#37613).
//! - Nothing usable: a service with no usable endpoint anywhere is
//!   *rejected* (TCP RST / ICMP port unreachable, so clients fail fast);
//!   a Local policy with usable endpoints elsewhere but none here is
//!   *dropped* (for an external load balancer, the node is simply not a
//!   place to send this service's traffic; kube-proxy drops too).

use crate::service::TrafficPolicy;

/// What a frontend does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Pick one of the backends.
    Forward,
    /// No backend anywhere: answer TCP RST / ICMP port unreachable.
    Reject,
    /// Local policy, no backend on this node (there are some elsewhere).
    Drop,
}

/// An endpoint's state, as selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointState {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node.
    pub local: bool,
}

/// The outcome: indices into the candidates, in their order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub chosen: Vec<usize>,
    /// The chosen ones are serving-terminating endpoints (no ready one).
    pub terminating_fallback: bool,
    pub action: Action,
}

impl EndpointState {
    /// Takes new connections normally. A terminating endpoint does not,
    /// even if marked ready — unless `publish_not_ready` (the service's
    /// `publishNotReadyAddresses`) says readiness is to be ignored, in
    /// which case the controller's `ready` is taken as it stands.
    fn usable(&self, publish_not_ready: bool) -> bool {
        self.ready && (publish_not_ready || !self.terminating)
    }

    fn draining(&self) -> bool {
        self.serving && self.terminating
    }
}

/// Chooses among `candidates` for a frontend with `policy`.
pub fn select(candidates: &[EndpointState], policy: TrafficPolicy, publish_not_ready: bool) -> Selection {
    let pick = |keep: &dyn Fn(&EndpointState) -> bool| -> Vec<usize> {
        candidates.iter().enumerate().filter(|(_, c)| keep(c)).map(|(i, _)| i).collect()
    };
    let in_scope = |c: &EndpointState| policy == TrafficPolicy::Cluster || c.local;
    let ready = pick(&|c| in_scope(c) && c.usable(publish_not_ready));
    let (chosen, terminating_fallback) = if ready.is_empty() {
        let draining = pick(&|c| in_scope(c) && c.draining());
        let fallback = !draining.is_empty();
        (draining, fallback)
    } else {
        (ready, false)
    };
    let action = if !chosen.is_empty() {
        Action::Forward
    } else if candidates.iter().any(|c| c.usable(publish_not_ready) || c.draining()) {
        Action::Drop
    } else {
        Action::Reject
    };
    Selection { chosen, terminating_fallback, action }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TrafficPolicy::{Cluster, Local};

    const READY: EndpointState =
        EndpointState { ready: true, serving: true, terminating: false, local: false };
    const DRAINING: EndpointState =
        EndpointState { ready: false, serving: true, terminating: true, local: false };
    const GONE: EndpointState =
        EndpointState { ready: false, serving: false, terminating: true, local: false };
    const UNREADY: EndpointState =
        EndpointState { ready: false, serving: false, terminating: false, local: false };

    fn local(s: EndpointState) -> EndpointState {
        EndpointState { local: true, ..s }
    }

    fn sel(c: &[EndpointState], p: TrafficPolicy) -> (Vec<usize>, bool, Action) {
        let s = select(c, p, false);
        (s.chosen, s.terminating_fallback, s.action)
    }

    #[test]
    fn cluster_takes_ready_endpoints_everywhere() {
        let c = [READY, local(READY), DRAINING, UNREADY, GONE];
        assert_eq!(sel(&c, Cluster), (vec![0, 1], false, Action::Forward));
        // No ready one anywhere: the serving terminating ones.
        assert_eq!(sel(&[DRAINING, GONE, local(DRAINING)], Cluster), (vec![0, 2], true, Action::Forward));
        assert_eq!(sel(&[UNREADY, GONE], Cluster), (vec![], false, Action::Reject));
        assert_eq!(sel(&[], Cluster), (vec![], false, Action::Reject));
    }

    #[test]
    fn ready_but_terminating_is_excluded_unless_published() {
        let odd = EndpointState { ready: true, serving: true, terminating: true, local: false };
        assert_eq!(sel(&[odd, READY], Cluster), (vec![1], false, Action::Forward));
        assert_eq!(select(&[odd, READY], Cluster, true).chosen, vec![0, 1]);
    }

    #[test]
    fn local_takes_this_nodes_endpoints() {
        let c = [READY, local(READY), local(DRAINING), local(UNREADY)];
        assert_eq!(sel(&c, Local), (vec![1], false, Action::Forward));
    }

    #[test]
    fn local_falls_back_to_local_serving_terminating() {
        // The remote ready endpoint is not used: Local never leaves the node.
        let c = [READY, local(DRAINING), local(GONE), DRAINING];
        assert_eq!(sel(&c, Local), (vec![1], true, Action::Forward));
    }

    #[test]
    fn local_without_local_endpoints_drops_or_rejects() {
        assert_eq!(sel(&[READY, local(UNREADY)], Local), (vec![], false, Action::Drop));
        assert_eq!(sel(&[DRAINING], Local), (vec![], false, Action::Drop));
        assert_eq!(sel(&[local(UNREADY), GONE], Local), (vec![], false, Action::Reject));
    }
}
