//! Socket load balancing (`bpf/sock.c`): the cgroup programs that turn a
//! service address into a backend at connect()/sendmsg() and back at
//! recvmsg()/getpeername(). Attached to a cgroup (the cgroup2 root for a
//! node; the machine this runs on mounts it at /sys/fs/cgroup/unified)
//! with pinned links, so they keep working while no agent runs.

use crate::{Error, loader::pin_dir, maps::MAP_LB_SERVICES};
use aya::{
    Ebpf, EbpfLoader,
    programs::{CgroupAttachMode, CgroupSockAddr, links::FdLink},
};
use std::{fs, path::Path};

/// The clang-built object, embedded at build time.
pub const SOCK_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock.o"));

/// The programs and the names their link pins get.
pub const PROGRAMS: [&str; 4] = ["sock_connect4", "sock_sendmsg4", "sock_recvmsg4", "sock_getpeername4"];

/// Where the cgroup links are pinned (the devices' tc links have `links`).
pub fn links_dir(base: &Path) -> std::path::PathBuf {
    pin_dir(base).join("cgroup_links")
}

pub struct SocketLb {
    bpf: Ebpf,
}

fn err<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> Error {
    move |e| Error(format!("{what}: {e}"))
}

impl SocketLb {
    /// Loads the programs over the node's pinned maps (a loaded
    /// [`crate::Datapath`] under `base` pinned them).
    pub fn load(base: &Path) -> Result<Self, Error> {
        let dir = pin_dir(base);
        if !dir.join(MAP_LB_SERVICES).exists() {
            return Err(Error(format!("{MAP_LB_SERVICES} is not pinned under {}", dir.display())));
        }
        let mut bpf = EbpfLoader::new()
            .default_map_pin_directory(&dir)
            .load(SOCK_OBJ)
            .map_err(|e| crate::kernel::explain(format!("loading sock.o: {e}")))?;
        for name in PROGRAMS {
            let prog: &mut CgroupSockAddr = bpf
                .program_mut(name)
                .ok_or_else(|| Error(format!("{name} missing")))?
                .try_into()
                .map_err(err(name))?;
            prog.load().map_err(|e| crate::kernel::explain(format!("verifier rejected {name}: {e}")))?;
        }
        Ok(Self { bpf })
    }

    /// Attaches every program to `cgroup` and pins its link under
    /// `<pins>/cgroup_links` (apart from the devices' tc links). A link
    /// pinned before (an agent restart) is replaced without a gap: the new
    /// one is attached (several may run: the second sees a backend address,
    /// not a service, and leaves it) and takes the old one's pin name,
    /// which ends the old link.
    pub fn attach(&mut self, cgroup: &Path, base: &Path) -> Result<(), Error> {
        let links = links_dir(base);
        fs::create_dir_all(&links).map_err(err(format!("creating {}", links.display())))?;
        let cg = fs::File::open(cgroup).map_err(err(format!("opening cgroup {}", cgroup.display())))?;
        for name in PROGRAMS {
            let prog: &mut CgroupSockAddr = self
                .bpf
                .program_mut(name)
                .ok_or_else(|| Error(format!("{name} missing")))?
                .try_into()
                .map_err(err(name))?;
            let id = prog
                // Mode flags must be 0 for links; cgroup links always
                // allow several programs.
                .attach(&cg, CgroupAttachMode::Single)
                .map_err(err(format!("attaching {name} to {}", cgroup.display())))?;
            let link: FdLink = prog.take_link(id).map_err(err("take_link"))?.try_into().map_err(err(name))?;
            let pin = links.join(name);
            let fresh = links.join(format!("{name}_new")); // bpffs refuses dots
            let _ = fs::remove_file(&fresh);
            link.pin(&fresh).map_err(err(format!("pinning {}", fresh.display())))?;
            fs::rename(&fresh, &pin).map_err(err(format!(
                "renaming {} to {}",
                fresh.display(),
                pin.display()
            )))?;
        }
        Ok(())
    }

    /// Whether every socket LB link is pinned (it runs without an agent).
    pub fn is_attached(base: &Path) -> bool {
        let links = links_dir(base);
        PROGRAMS.iter().all(|p| links.join(p).exists())
    }

    /// Removes the links (the programs stop running).
    pub fn detach(base: &Path) {
        let links = links_dir(base);
        for p in PROGRAMS {
            let _ = fs::remove_file(links.join(p));
        }
    }
}
