//! The node's pod-address allocator, in memory. The agent's endpoint
//! journal is the durable record of who holds an address: an ADD takes an
//! address here, then journals its intent before it builds anything on it,
//! and on start the agent reserves every journaled address again. So an
//! allocation costs no disk write, and a crash before the journal entry
//! loses only an address nothing used. An exclusive lock file keeps a
//! second agent of the same state directory away.
//!
//! Agents before the journal carried IPAM kept their own state file
//! (`ipam.json`): it is read once at start so the agent can undo ADDs that
//! such an agent left between the two files, and retired afterwards.

mod cidr;
pub mod lock;

pub use cidr::Cidr;

use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt, fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

/// Who holds an address: a CNI attachment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
}

#[derive(Debug)]
pub enum IpamError {
    Io { path: PathBuf, source: std::io::Error },
    Corrupt { path: PathBuf, error: String },
    CidrMismatch { path: PathBuf, stored: Cidr, wanted: Cidr },
    Exhausted { cidr: Cidr, in_use: usize },
    Conflict { ip: Ipv4Addr, holder: String },
    OutOfRange { ip: Ipv4Addr, cidr: Cidr },
    Locked { path: PathBuf },
}

impl fmt::Display for IpamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpamError::Io { path, source } => write!(f, "IPAM state {}: {source}", path.display()),
            IpamError::Corrupt { path, error } => write!(
                f,
                "IPAM state {} is corrupt ({error}); fix or move it away — weft will not guess which addresses are in use",
                path.display()
            ),
            IpamError::CidrMismatch { path, stored, wanted } => write!(
                f,
                "IPAM state {} belongs to pod CIDR {stored}, but this node is configured with {wanted}; fix --pod-cidr or remove the state once no pod uses it",
                path.display()
            ),
            IpamError::Exhausted { cidr, in_use } => {
                write!(
                    f,
                    "all addresses of {cidr} are in use ({in_use} pods); delete pods or give the node a larger CIDR"
                )
            }
            IpamError::Conflict { ip, holder } => write!(f, "{ip} is already held by {holder}"),
            IpamError::OutOfRange { ip, cidr } => write!(f, "{ip} is not in the node's pod CIDR {cidr}"),
            IpamError::Locked { path } => write!(
                f,
                "IPAM state {} is locked by another process (is another agent running for this node?)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for IpamError {}

/// The layout of the retired state file.
#[derive(Serialize, Deserialize)]
struct LegacyState {
    cidr: Cidr,
    allocations: BTreeMap<Ipv4Addr, Owner>,
}

type AttachmentKey = (String, String);

pub struct Ipam {
    legacy_file: PathBuf,
    cidr: Cidr,
    allocations: BTreeMap<Ipv4Addr, Owner>,
    /// (container id, ifname) → address: an attachment's address without
    /// a scan of every allocation.
    by_owner: HashMap<AttachmentKey, Ipv4Addr>,
    /// Offsets of the free pod addresses: the lowest is handed out next.
    free: BTreeSet<u32>,
    _lock: fs::File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IpamError + '_ {
    move |source| IpamError::Io { path: path.to_path_buf(), source }
}

impl Ipam {
    /// The allocator of `cidr` for the state file `state_file` (its lock
    /// sits beside it; an earlier agent's allocations in it are adopted).
    pub fn open(state_file: &Path, cidr: Cidr) -> Result<Self, IpamError> {
        if let Some(dir) = state_file.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let lock_path = state_file.with_extension("lock");
        let lock = lock::exclusive(&lock_path)
            .map_err(io(&lock_path))?
            .ok_or_else(|| IpamError::Locked { path: state_file.to_path_buf() })?;
        let mut ipam = Self {
            legacy_file: state_file.to_path_buf(),
            cidr,
            allocations: BTreeMap::new(),
            by_owner: HashMap::new(),
            free: (2..cidr.size().saturating_sub(1)).map(|n| n as u32).collect(),
            _lock: lock,
        };
        match fs::read(state_file) {
            Ok(b) => {
                let s: LegacyState = serde_json::from_slice(&b).map_err(|e| IpamError::Corrupt {
                    path: state_file.to_path_buf(),
                    error: e.to_string(),
                })?;
                if s.cidr != cidr {
                    return Err(IpamError::CidrMismatch {
                        path: state_file.to_path_buf(),
                        stored: s.cidr,
                        wanted: cidr,
                    });
                }
                for (ip, owner) in s.allocations {
                    ipam.reserve(ip, &owner)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(IpamError::Io { path: state_file.to_path_buf(), source: e }),
        }
        Ok(ipam)
    }

    /// Removes an earlier agent's state file, once everything it held is
    /// either journaled or undone.
    pub fn retire_legacy_file(&self) -> Result<(), IpamError> {
        match fs::remove_file(&self.legacy_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&self.legacy_file)(e)),
            _ => Ok(()),
        }
    }

    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    /// The first host address: the pods' gateway, never handed out.
    pub fn gateway(&self) -> Ipv4Addr {
        self.cidr.host(1).expect("prefix <= 30 has a first host")
    }

    pub fn capacity(&self) -> usize {
        Self::capacity_of(self.cidr)
    }

    /// Pod addresses of a CIDR: all but the network, broadcast and gateway.
    pub fn capacity_of(cidr: Cidr) -> usize {
        cidr.size().saturating_sub(3) as usize
    }

    pub fn in_use(&self) -> usize {
        self.allocations.len()
    }

    pub fn lookup(&self, container_id: &str, ifname: &str) -> Option<(Ipv4Addr, Owner)> {
        let ip = *self.by_owner.get(&(container_id.to_string(), ifname.to_string()))?;
        Some((ip, self.allocations[&ip].clone()))
    }

    /// The address of this attachment: the one it holds, or the lowest free.
    pub fn allocate(&mut self, owner: &Owner) -> Result<Ipv4Addr, IpamError> {
        if let Some((ip, _)) = self.lookup(&owner.container_id, &owner.ifname) {
            return Ok(ip);
        }
        let n =
            self.free.pop_first().ok_or(IpamError::Exhausted { cidr: self.cidr, in_use: self.in_use() })?;
        let ip = self.cidr.host(n as u64).expect("free offsets lie inside the CIDR");
        self.insert(ip, owner);
        Ok(ip)
    }

    fn insert(&mut self, ip: Ipv4Addr, owner: &Owner) {
        self.by_owner.insert((owner.container_id.clone(), owner.ifname.clone()), ip);
        self.allocations.insert(ip, owner.clone());
    }

    /// Marks `ip` as held by `owner` (re-adopting state found elsewhere).
    pub fn reserve(&mut self, ip: Ipv4Addr, owner: &Owner) -> Result<(), IpamError> {
        let offset = self.cidr.offset(ip).map(|n| n as u32);
        if !offset.is_some_and(|n| n >= 2 && (n as u64) < self.cidr.size() - 1) {
            return Err(IpamError::OutOfRange { ip, cidr: self.cidr });
        }
        match self.allocations.get(&ip) {
            Some(o) if o.container_id == owner.container_id && o.ifname == owner.ifname => Ok(()),
            Some(o) => Err(IpamError::Conflict { ip, holder: format!("{} {}", o.container_id, o.ifname) }),
            None => {
                if let Some((held, _)) = self.lookup(&owner.container_id, &owner.ifname) {
                    return Err(IpamError::Conflict {
                        ip,
                        holder: format!("{} {} (which holds {held})", owner.container_id, owner.ifname),
                    });
                }
                self.free.remove(&offset.expect("checked above"));
                self.insert(ip, owner);
                Ok(())
            }
        }
    }

    pub fn release(&mut self, container_id: &str, ifname: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let Some(ip) = self.by_owner.remove(&(container_id.to_string(), ifname.to_string())) else {
            return Ok(None);
        };
        self.allocations.remove(&ip);
        self.free.insert(self.cidr.offset(ip).expect("allocated inside the CIDR") as u32);
        Ok(Some(ip))
    }

    pub fn allocations(&self) -> Vec<(Ipv4Addr, Owner)> {
        self.allocations.iter().map(|(ip, o)| (*ip, o.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-ipam-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d.join("ipam.json")
    }

    fn owner(c: &str) -> Owner {
        Owner { container_id: c.into(), ifname: "eth0".into(), netns: format!("/run/netns/{c}") }
    }

    #[test]
    fn allocates_lowest_free_skipping_gateway() {
        let p = tmp("order");
        let mut ipam = Ipam::open(&p, "10.244.1.0/24".parse().unwrap()).unwrap();
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(ipam.allocate(&owner("a")).unwrap(), Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(ipam.allocate(&owner("b")).unwrap(), Ipv4Addr::new(10, 244, 1, 3));
        assert_eq!(ipam.allocate(&owner("a")).unwrap(), Ipv4Addr::new(10, 244, 1, 2), "idempotent");
        assert_eq!(ipam.release("a", "eth0").unwrap(), Some(Ipv4Addr::new(10, 244, 1, 2)));
        assert_eq!(ipam.release("a", "eth0").unwrap(), None);
        assert_eq!(ipam.allocate(&owner("c")).unwrap(), Ipv4Addr::new(10, 244, 1, 2), "reused");
        assert_eq!(ipam.capacity(), 253);
        fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }

    #[test]
    fn exhaustion_is_an_error() {
        let p = tmp("full");
        let mut ipam = Ipam::open(&p, "10.0.0.0/29".parse().unwrap()).unwrap();
        for i in 0..5 {
            ipam.allocate(&owner(&format!("p{i}"))).unwrap();
        }
        let e = ipam.allocate(&owner("x")).unwrap_err();
        assert!(matches!(e, IpamError::Exhausted { in_use: 5, .. }), "{e}");
        fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }

    #[test]
    fn an_earlier_agents_state_file_is_adopted_then_retired() {
        let p = tmp("legacy");
        let cidr: Cidr = "10.244.2.0/24".parse().unwrap();
        let legacy = LegacyState {
            cidr,
            allocations: [
                (Ipv4Addr::new(10, 244, 2, 3), owner("b")),
                (Ipv4Addr::new(10, 244, 2, 2), owner("a")),
            ]
            .into(),
        };
        fs::write(&p, serde_json::to_vec(&legacy).unwrap()).unwrap();
        let mut ipam = Ipam::open(&p, cidr).unwrap();
        assert_eq!(ipam.in_use(), 2);
        assert_eq!(ipam.lookup("b", "eth0").unwrap().0, Ipv4Addr::new(10, 244, 2, 3));
        assert_eq!(ipam.allocate(&owner("c")).unwrap(), Ipv4Addr::new(10, 244, 2, 4), "held ones skipped");
        ipam.retire_legacy_file().unwrap();
        assert!(!p.exists());
        drop(ipam);
        assert_eq!(Ipam::open(&p, cidr).unwrap().in_use(), 0, "memory only: the journal re-reserves");
        fs::write(&p, serde_json::to_vec(&legacy).unwrap()).unwrap();
        let e = Ipam::open(&p, "10.244.3.0/24".parse().unwrap()).err().unwrap();
        assert!(matches!(e, IpamError::CidrMismatch { .. }), "{e}");
        fs::write(&p, b"{not json").unwrap();
        let e = Ipam::open(&p, cidr).err().unwrap();
        assert!(e.to_string().contains("corrupt"), "{e}");
        fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }

    #[test]
    fn second_open_is_locked_out() {
        let p = tmp("lock");
        let cidr: Cidr = "10.244.4.0/24".parse().unwrap();
        let _a = Ipam::open(&p, cidr).unwrap();
        assert!(matches!(Ipam::open(&p, cidr), Err(IpamError::Locked { .. })));
        fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }

    #[test]
    fn reserve_checks_range_and_holder() {
        let p = tmp("reserve");
        let mut ipam = Ipam::open(&p, "10.244.5.0/24".parse().unwrap()).unwrap();
        ipam.reserve(Ipv4Addr::new(10, 244, 5, 9), &owner("a")).unwrap();
        ipam.reserve(Ipv4Addr::new(10, 244, 5, 9), &owner("a")).unwrap();
        assert!(matches!(
            ipam.reserve(Ipv4Addr::new(10, 244, 5, 9), &owner("b")),
            Err(IpamError::Conflict { .. })
        ));
        assert!(matches!(
            ipam.reserve(Ipv4Addr::new(10, 244, 5, 1), &owner("b")),
            Err(IpamError::OutOfRange { .. })
        ));
        assert!(
            matches!(
                ipam.reserve(Ipv4Addr::new(10, 244, 5, 10), &owner("a")),
                Err(IpamError::Conflict { .. })
            ),
            "one address per attachment"
        );
        assert_eq!(ipam.allocate(&owner("b")).unwrap(), Ipv4Addr::new(10, 244, 5, 2));
        assert_eq!(ipam.release("a", "eth0").unwrap(), Some(Ipv4Addr::new(10, 244, 5, 9)));
        ipam.reserve(Ipv4Addr::new(10, 244, 5, 9), &owner("b2")).unwrap();
        fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }

    #[test]
    fn fifty_concurrent_allocations_are_distinct() {
        let p = tmp("conc");
        let cidr: Cidr = "10.244.6.0/24".parse().unwrap();
        let ipam = Arc::new(Mutex::new(Ipam::open(&p, cidr).unwrap()));
        let hs: Vec<_> = (0..50)
            .map(|i| {
                let ipam = ipam.clone();
                std::thread::spawn(move || ipam.lock().unwrap().allocate(&owner(&format!("c{i}"))).unwrap())
            })
            .collect();
        let ips: std::collections::HashSet<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(ips.len(), 50);
        assert_eq!(ipam.lock().unwrap().in_use(), 50);
        fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }
}
