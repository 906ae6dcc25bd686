//! What one node's datapath needs for the services: each service port's
//! frontends, each with the backends it may pick, flags, and stable ids.
//!
//! [`ServiceTable`] holds the services and slices a node has seen, plus
//! the id allocators, and answers [`ServiceTable::frontends_of`] for one
//! service at a time: when an EndpointSlice changes, only the frontends of
//! that slice's service are recomputed (the update methods say which
//! services changed).
//!
//! Backends are joined to service ports **by port name and protocol**:
//! the EndpointSlice controller writes each slice port with the service
//! port's name and the *resolved* target port number (a named `targetPort`
//! can resolve to different numbers on different pods; those pods are put
//! in different slices). So the backend's port comes from the slice, never
//! from the Service's `targetPort`.
//!
//! # Datapath representation (recommended)
//!
//! As Cilium's `lb4_services`/`lb4_backends`: a service map keyed by
//! (frontend address, port, protocol, slot). Slot 0 is the frontend
//! itself: backend count, rev-NAT id ([`ServiceFrontend::id`]), flags
//! (action, affinity, SNAT); slots `1..=count` each hold one backend id
//! ([`ServiceFrontend::backend_slots`]), and a random pick for a new flow
//! is slot `1 + hash % count`. The backend map is keyed by backend id
//! (address, port, protocol, flags). Stable ids mean a change to one
//! backend rewrites one backend entry and the slot arrays, never the
//! other backends; with Maglev ([`crate::maglev`]) the slot array is
//! replaced by a per-frontend table of M backend ids.

use crate::{
    ids::{Ids, IdsExhausted},
    maglev::{self, MaglevBackend, MaglevError},
    select::{self, Action, EndpointState},
    service::{ClusterIp, Protocol, Service, ServiceKey, ServicePort, ServiceType, TrafficPolicy},
    slice::EndpointSlice,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

/// Where a service is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Frontend {
    /// The virtual address, from pods (and the node itself).
    ClusterIp { ip: Ipv4Addr, port: u16, protocol: Protocol },
    /// Any address of the node, on this port: from outside the cluster.
    NodePort { port: u16, protocol: Protocol },
}

/// A backend's identity: what its id is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

/// One backend a frontend may pick, with its conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backend {
    pub id: u32,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node (the slice's `nodeName` is this node's name).
    pub local: bool,
}

/// A frontend with everything the datapath needs for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFrontend {
    pub service: ServiceKey,
    /// The service port's name (`""` for a single unnamed port).
    pub port_name: String,
    pub frontend: Frontend,
    /// The rev-NAT id: stable while the frontend exists.
    pub id: u16,
    /// The policy that chose the backends: `internalTrafficPolicy` for a
    /// ClusterIP frontend, `externalTrafficPolicy` for a NodePort one.
    pub traffic_policy: TrafficPolicy,
    /// Sorted by (address, port). Empty when `action` is not Forward.
    pub backends: Vec<Backend>,
    /// The backends are serving-terminating ones (no ready one in scope).
    pub terminating_fallback: bool,
    pub action: Action,
    /// ClientIP session affinity timeout in seconds, if any.
    pub affinity_timeout: Option<u32>,
    /// Never SNAT: the backend sees the client's own address (ClusterIP
    /// frontends, and NodePort with `externalTrafficPolicy: Local`).
    pub keep_client_address: bool,
    /// NodePort with `externalTrafficPolicy: Cluster`: a connection sent
    /// to a backend on another node is SNATed to this node, so the reply
    /// comes back through it to be reverse-translated.
    pub snat_remote_backends: bool,
}

impl ServiceFrontend {
    /// The backend ids in slot order (slot 1 first): the slot array of
    /// the recommended map layout.
    pub fn backend_slots(&self) -> Vec<u32> {
        self.backends.iter().map(|b| b.id).collect()
    }

    /// The Maglev lookup table of this frontend's backends.
    pub fn maglev_table(&self, size: u32) -> Result<Vec<u32>, MaglevError> {
        let backends: Vec<MaglevBackend> =
            self.backends.iter().map(|b| MaglevBackend { id: b.id, ip: b.ip, port: b.port }).collect();
        maglev::table(&backends, size)
    }
}

/// The first and last backend id; 0 means "none" to the datapath.
pub const BACKEND_IDS: (u32, u32) = (1, u32::MAX);
/// The first and last rev-NAT id (`u16`, as Cilium's `rev_nat_index`).
pub const FRONTEND_IDS: (u16, u16) = (1, u16::MAX);

/// The services and slices one node has seen, and the ids given out.
#[derive(Debug, Clone)]
pub struct ServiceTable {
    node: String,
    services: BTreeMap<ServiceKey, Service>,
    /// Slices by the service they name, then by slice name.
    slices: BTreeMap<ServiceKey, BTreeMap<String, EndpointSlice>>,
    /// (namespace, slice name) → the service it was filed under.
    slice_owner: BTreeMap<(String, String), ServiceKey>,
    backend_ids: Ids<BackendKey>,
    frontend_ids: Ids<(ServiceKey, Frontend)>,
    /// Every backend listed by a service's slices (whatever its state).
    backends_of: BTreeMap<ServiceKey, BTreeSet<BackendKey>>,
    /// How many services list a backend; its id goes at zero.
    backend_users: BTreeMap<BackendKey, usize>,
    frontends_held: BTreeMap<ServiceKey, BTreeSet<Frontend>>,
}

impl ServiceTable {
    /// An empty table for the node named `node` (as in slices' `nodeName`).
    pub fn new(node: impl Into<String>) -> Self {
        Self::with_id_ranges(node, BACKEND_IDS, FRONTEND_IDS)
    }

    /// As [`ServiceTable::new`], with smaller id ranges (tests, or a
    /// datapath with smaller maps).
    pub fn with_id_ranges(node: impl Into<String>, backends: (u32, u32), frontends: (u16, u16)) -> Self {
        ServiceTable {
            node: node.into(),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slice_owner: BTreeMap::new(),
            backend_ids: Ids::new(backends.0, backends.1),
            frontend_ids: Ids::new(u32::from(frontends.0), u32::from(frontends.1)),
            backends_of: BTreeMap::new(),
            backend_users: BTreeMap::new(),
            frontends_held: BTreeMap::new(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.services.get(key)
    }

    pub fn service_keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    /// The id of a backend, while some slice lists it.
    pub fn backend_id(&self, key: &BackendKey) -> Option<u32> {
        self.backend_ids.get(key)
    }

    /// Adds or replaces a (validated) service; returns its key, the one
    /// service whose frontends changed. Frontend ids are given to new
    /// frontends and released for gone ones. On error nothing changes.
    pub fn upsert_service(&mut self, service: Service) -> Result<ServiceKey, IdsExhausted> {
        let key = service.key();
        let wanted = frontends_of_spec(&service);
        self.hold_frontends(&key, wanted)?;
        self.services.insert(key.clone(), service);
        Ok(key)
    }

    /// Forgets a service and releases its frontend ids. Its slices are
    /// kept (they are deleted on their own, and may arrive first).
    pub fn remove_service(&mut self, key: &ServiceKey) -> bool {
        let removed = self.services.remove(key).is_some();
        // Releasing never needs new ids.
        let _ = self.hold_frontends(key, BTreeSet::new());
        removed
    }

    /// Adds or replaces a (validated) slice; returns the services whose
    /// frontends changed: its own, and the one it was filed under before
    /// if its service label changed. On error nothing changes.
    pub fn upsert_slice(&mut self, slice: EndpointSlice) -> Result<Vec<ServiceKey>, IdsExhausted> {
        let slice_key = slice.slice_key();
        let key = slice.service_key();
        let before = self.slice_owner.get(&slice_key).cloned();
        let mut affected = vec![key.clone()];
        if let Some(old) = before.clone().filter(|old| *old != key) {
            affected.push(old);
        }
        // Work on the would-be slice sets, then check the ids suffice.
        let mut new_sets: BTreeMap<ServiceKey, BTreeSet<BackendKey>> = BTreeMap::new();
        for service in &affected {
            let mut slices = self.slices.get(service).cloned().unwrap_or_default();
            slices.remove(&slice_key.1);
            if *service == key {
                slices.insert(slice_key.1.clone(), slice.clone());
            }
            new_sets.insert(service.clone(), backend_keys(slices.values()));
        }
        self.check_backend_ids(&new_sets)?;
        if let Some(old) = &before {
            self.file_slice(old, &slice_key.1, None);
        }
        self.file_slice(&key, &slice_key.1, Some(slice));
        self.slice_owner.insert(slice_key, key);
        for (service, set) in new_sets {
            self.set_backends(&service, set);
        }
        Ok(affected)
    }

    /// Forgets a slice; returns the service whose frontends changed.
    pub fn remove_slice(&mut self, namespace: &str, name: &str) -> Option<ServiceKey> {
        let key = self.slice_owner.remove(&(namespace.to_string(), name.to_string()))?;
        self.file_slice(&key, name, None);
        let set = backend_keys(self.slices.get(&key).into_iter().flat_map(|s| s.values()));
        self.set_backends(&key, set);
        Some(key)
    }

    /// The frontends of one service as this node's datapath needs them,
    /// in port order (ClusterIP before NodePort). Empty for an unknown or
    /// headless service, or one whose address is not allocated yet.
    pub fn frontends_of(&self, key: &ServiceKey) -> Vec<ServiceFrontend> {
        let Some(service) = self.services.get(key) else { return Vec::new() };
        let spec = &service.spec;
        let slices: Vec<&EndpointSlice> =
            self.slices.get(key).map(|s| s.values().collect()).unwrap_or_default();
        let mut out = Vec::new();
        for port in &spec.ports {
            let candidates = self.candidates(&slices, port);
            let states: Vec<EndpointState> = candidates.iter().map(|(_, s)| *s).collect();
            for frontend in port_frontends(service, port) {
                let Some(id) = self.frontend_ids.get(&(key.clone(), frontend)) else { continue };
                let (policy, external) = match frontend {
                    Frontend::ClusterIp { .. } => (spec.internal_traffic_policy(), false),
                    Frontend::NodePort { .. } => (spec.external_traffic_policy(), true),
                };
                let selection = select::select(&states, policy, spec.publish_not_ready_addresses);
                let backends = selection
                    .chosen
                    .iter()
                    .filter_map(|&i| {
                        let (k, s) = candidates[i];
                        let id = self.backend_ids.get(&k);
                        debug_assert!(id.is_some(), "backend {k:?} of {key} has no id");
                        Some(Backend {
                            id: id?,
                            ip: k.ip,
                            port: k.port,
                            protocol: k.protocol,
                            ready: s.ready,
                            serving: s.serving,
                            terminating: s.terminating,
                            local: s.local,
                        })
                    })
                    .collect();
                out.push(ServiceFrontend {
                    service: key.clone(),
                    port_name: port.name.clone(),
                    frontend,
                    id: u16::try_from(id).unwrap_or(0),
                    traffic_policy: policy,
                    backends,
                    terminating_fallback: selection.terminating_fallback,
                    action: selection.action,
                    affinity_timeout: spec.affinity_timeout(),
                    keep_client_address: !external || policy == TrafficPolicy::Local,
                    snat_remote_backends: external && policy == TrafficPolicy::Cluster,
                });
            }
        }
        out
    }

    /// Every endpoint of `slices` that serves `port` (a slice port of the
    /// same name and protocol, with a number), one per backend, sorted.
    /// An address listed twice (a pod moving between slices) keeps its
    /// most usable state.
    fn candidates(&self, slices: &[&EndpointSlice], port: &ServicePort) -> Vec<(BackendKey, EndpointState)> {
        let mut found: BTreeMap<BackendKey, EndpointState> = BTreeMap::new();
        for slice in slices {
            let Some(number) = slice
                .ports
                .iter()
                .find(|p| p.name == port.name && p.protocol == port.protocol)
                .and_then(|p| p.number())
            else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let key = BackendKey { ip: endpoint.address(), port: number, protocol: port.protocol };
                let c = &endpoint.conditions;
                let state = EndpointState {
                    ready: c.is_ready(),
                    serving: c.is_serving(),
                    terminating: c.is_terminating(),
                    local: endpoint.node_name.as_deref() == Some(self.node.as_str()),
                };
                let rank = |s: &EndpointState| (s.ready && !s.terminating, s.serving, s.local);
                found
                    .entry(key)
                    .and_modify(|old| {
                        if rank(&state) > rank(old) {
                            *old = state
                        }
                    })
                    .or_insert(state);
            }
        }
        found.into_iter().collect()
    }

    /// Makes `wanted` the frontends held by `key`, or changes nothing.
    fn hold_frontends(&mut self, key: &ServiceKey, wanted: BTreeSet<Frontend>) -> Result<(), IdsExhausted> {
        let held = self.frontends_held.get(key).cloned().unwrap_or_default();
        let gone: Vec<Frontend> = held.difference(&wanted).copied().collect();
        let new = wanted.difference(&held).count();
        if new > self.frontend_ids.available() + gone.len() {
            return Err(self.frontend_ids.exhausted());
        }
        for f in gone {
            self.frontend_ids.release(&(key.clone(), f));
        }
        for f in &wanted {
            self.frontend_ids.assign(&(key.clone(), *f))?;
        }
        if wanted.is_empty() {
            self.frontends_held.remove(key);
        } else {
            self.frontends_held.insert(key.clone(), wanted);
        }
        Ok(())
    }

    /// Whether the backend ids suffice for these new per-service sets.
    /// Only the backends these sets add or drop are counted again (a
    /// backend no set touches keeps its use count, and with it its id or
    /// its lack of one): the work is the size of the change, not of the
    /// table, so applying many slices one by one stays linear.
    fn check_backend_ids(
        &self,
        new_sets: &BTreeMap<ServiceKey, BTreeSet<BackendKey>>,
    ) -> Result<(), IdsExhausted> {
        // The use counts of the touched backends, as they would become.
        let mut users: BTreeMap<BackendKey, Option<usize>> = BTreeMap::new();
        let now = |k: &BackendKey| self.backend_users.get(k).copied();
        let none = BTreeSet::new();
        for (service, set) in new_sets {
            let old = self.backends_of.get(service).unwrap_or(&none);
            for k in old.difference(set) {
                if let Some(n) = users.entry(*k).or_insert_with(|| now(k)) {
                    *n -= 1;
                }
            }
            for k in set.difference(old) {
                *users.entry(*k).or_insert_with(|| now(k)).get_or_insert(0) += 1;
            }
        }
        let users = users.into_iter().filter_map(|(k, n)| Some((k, n?)));
        let (mut new, mut freed) = (0, 0);
        for (k, n) in users {
            match (n > 0, self.backend_ids.get(&k).is_some()) {
                (true, false) => new += 1,
                (false, true) => freed += 1,
                _ => {}
            }
        }
        if new > self.backend_ids.available() + freed {
            return Err(self.backend_ids.exhausted());
        }
        Ok(())
    }

    /// Makes `set` the backends of `key`, keeping ids and use counts (the
    /// ids were checked to suffice).
    fn set_backends(&mut self, key: &ServiceKey, set: BTreeSet<BackendKey>) {
        let old = self.backends_of.remove(key).unwrap_or_default();
        for k in old.difference(&set) {
            let n = self.backend_users.entry(*k).or_default();
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.backend_users.remove(k);
                self.backend_ids.release(k);
            }
        }
        for k in set.difference(&old) {
            *self.backend_users.entry(*k).or_default() += 1;
            // Checked by check_backend_ids.
            let _ = self.backend_ids.assign(k);
        }
        if !set.is_empty() {
            self.backends_of.insert(key.clone(), set);
        }
    }

    fn file_slice(&mut self, key: &ServiceKey, name: &str, slice: Option<EndpointSlice>) {
        let slices = self.slices.entry(key.clone()).or_default();
        match slice {
            Some(s) => {
                slices.insert(name.to_string(), s);
            }
            None => {
                slices.remove(name);
            }
        }
        if slices.is_empty() {
            self.slices.remove(key);
        }
    }
}

/// The frontends of one port of a service, from the Service alone.
fn port_frontends(service: &Service, port: &ServicePort) -> Vec<Frontend> {
    let mut out = Vec::new();
    if let ClusterIp::Addr(ip) = service.spec.cluster_ip() {
        out.push(Frontend::ClusterIp { ip, port: port.port(), protocol: port.protocol });
        if service.spec.type_ == ServiceType::NodePort
            && let Some(node_port) = port.node_port()
        {
            out.push(Frontend::NodePort { port: node_port, protocol: port.protocol });
        }
    }
    out
}

fn frontends_of_spec(service: &Service) -> BTreeSet<Frontend> {
    service.spec.ports.iter().flat_map(|p| port_frontends(service, p)).collect()
}

/// Every (address, port, protocol) the slices list, for any port.
fn backend_keys<'a>(slices: impl Iterator<Item = &'a EndpointSlice>) -> BTreeSet<BackendKey> {
    let mut out = BTreeSet::new();
    for slice in slices {
        for port in &slice.ports {
            let Some(number) = port.number() else { continue };
            for endpoint in &slice.endpoints {
                out.insert(BackendKey { ip: endpoint.address(), port: number, protocol: port.protocol });
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "frontends_tests.rs"]
mod tests;
