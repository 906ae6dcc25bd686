//! The node's pod-address allocator. The agent, the node's single writer,
//! holds one `Ipam` behind its lock; every change is written to disk (temp
//! file, fsync, rename) before it is acknowledged, so a crash at any moment
//! loses no allocation and hands out none twice. An exclusive lock on the
//! state file keeps a second agent away from it.

mod cidr;
pub mod lock;

pub use cidr::Cidr;

use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fmt,
    fs::{self, File},
    io::Write,
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

#[derive(Serialize, Deserialize)]
struct State {
    cidr: Cidr,
    allocations: BTreeMap<Ipv4Addr, Owner>,
}

pub struct Ipam {
    path: PathBuf,
    state: State,
    _lock: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IpamError + '_ {
    move |source| IpamError::Io { path: path.to_path_buf(), source }
}

impl Ipam {
    pub fn open(state_file: &Path, cidr: Cidr) -> Result<Self, IpamError> {
        if let Some(dir) = state_file.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let lock_path = state_file.with_extension("lock");
        let lock = lock::exclusive(&lock_path)
            .map_err(io(&lock_path))?
            .ok_or_else(|| IpamError::Locked { path: state_file.to_path_buf() })?;
        let state = match fs::read(state_file) {
            Ok(b) => {
                let s: State = serde_json::from_slice(&b).map_err(|e| IpamError::Corrupt {
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
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                State { cidr, allocations: BTreeMap::new() }
            }
            Err(e) => return Err(IpamError::Io { path: state_file.to_path_buf(), source: e }),
        };
        Ok(Self { path: state_file.to_path_buf(), state, _lock: lock })
    }

    pub fn cidr(&self) -> Cidr {
        self.state.cidr
    }

    /// The first host address: the pods' gateway, never handed out.
    pub fn gateway(&self) -> Ipv4Addr {
        self.state.cidr.host(1).expect("prefix <= 30 has a first host")
    }

    fn allocatable(&self, ip: Ipv4Addr) -> bool {
        let c = self.state.cidr;
        c.contains(ip) && ip != c.network() && ip != c.broadcast() && ip != self.gateway()
    }

    pub fn capacity(&self) -> usize {
        Self::capacity_of(self.state.cidr)
    }

    /// Pod addresses of a CIDR: all but the network, broadcast and gateway.
    pub fn capacity_of(cidr: Cidr) -> usize {
        cidr.size().saturating_sub(3) as usize
    }

    pub fn in_use(&self) -> usize {
        self.state.allocations.len()
    }

    pub fn lookup(&self, container_id: &str, ifname: &str) -> Option<(Ipv4Addr, Owner)> {
        self.state
            .allocations
            .iter()
            .find(|(_, o)| o.container_id == container_id && o.ifname == ifname)
            .map(|(ip, o)| (*ip, o.clone()))
    }

    /// The address of this attachment: the one it holds, or the lowest free.
    pub fn allocate(&mut self, owner: &Owner) -> Result<Ipv4Addr, IpamError> {
        if let Some((ip, _)) = self.lookup(&owner.container_id, &owner.ifname) {
            return Ok(ip);
        }
        let c = self.state.cidr;
        let ip = (2..c.size() - 1)
            .filter_map(|n| c.host(n))
            .find(|ip| self.allocatable(*ip) && !self.state.allocations.contains_key(ip))
            .ok_or(IpamError::Exhausted { cidr: c, in_use: self.in_use() })?;
        self.state.allocations.insert(ip, owner.clone());
        if let Err(e) = self.persist() {
            self.state.allocations.remove(&ip);
            return Err(e);
        }
        Ok(ip)
    }

    /// Marks `ip` as held by `owner` (re-adopting state found elsewhere).
    pub fn reserve(&mut self, ip: Ipv4Addr, owner: &Owner) -> Result<(), IpamError> {
        if !self.allocatable(ip) {
            return Err(IpamError::OutOfRange { ip, cidr: self.state.cidr });
        }
        match self.state.allocations.get(&ip) {
            Some(o) if o.container_id == owner.container_id && o.ifname == owner.ifname => Ok(()),
            Some(o) => Err(IpamError::Conflict { ip, holder: format!("{} {}", o.container_id, o.ifname) }),
            None => {
                self.state.allocations.insert(ip, owner.clone());
                self.persist()
            }
        }
    }

    pub fn release(&mut self, container_id: &str, ifname: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let Some((ip, owner)) = self.lookup(container_id, ifname) else { return Ok(None) };
        self.state.allocations.remove(&ip);
        if let Err(e) = self.persist() {
            self.state.allocations.insert(ip, owner);
            return Err(e);
        }
        Ok(Some(ip))
    }

    pub fn allocations(&self) -> Vec<(Ipv4Addr, Owner)> {
        self.state.allocations.iter().map(|(ip, o)| (*ip, o.clone())).collect()
    }

    /// Temp file, fsync, rename, fsync of the directory: after this returns
    /// the state survives a crash or power loss.
    fn persist(&self) -> Result<(), IpamError> {
        let tmp = self.path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(&self.state).expect("state serializes");
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&data).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        }
        Ok(())
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
    fn survives_reopen_and_refuses_other_cidr_and_corruption() {
        let p = tmp("persist");
        let cidr: Cidr = "10.244.2.0/24".parse().unwrap();
        {
            let mut ipam = Ipam::open(&p, cidr).unwrap();
            ipam.allocate(&owner("a")).unwrap();
            ipam.allocate(&owner("b")).unwrap();
        }
        let ipam = Ipam::open(&p, cidr).unwrap();
        assert_eq!(ipam.in_use(), 2);
        assert_eq!(ipam.lookup("b", "eth0").unwrap().0, Ipv4Addr::new(10, 244, 2, 3));
        drop(ipam);
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
        fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }

    #[test]
    fn fifty_concurrent_allocations_are_distinct_and_persisted() {
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
        drop(ipam);
        assert_eq!(Ipam::open(&p, cidr).unwrap().in_use(), 50);
        fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }
}
