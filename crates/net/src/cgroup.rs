//! Where the cgroup2 hierarchy is mounted (socket load balancing attaches
//! there), and joining a cgroup. Machines with the hybrid layout mount it
//! at /sys/fs/cgroup/unified, unified ones at /sys/fs/cgroup.

use std::path::{Path, PathBuf};

/// The mount point of cgroup2, from /proc/self/mounts.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    cgroup2_in(&mounts)
}

fn cgroup2_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(dir))
    })
}

/// Moves the calling process (all its threads) into `cgroup`.
pub fn join(cgroup: &Path) -> std::io::Result<()> {
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cgroup2_mount_is_found_in_either_layout() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(super::cgroup2_in(hybrid).unwrap().to_str(), Some("/sys/fs/cgroup/unified"));
        assert_eq!(
            super::cgroup2_in("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n").unwrap().to_str(),
            Some("/sys/fs/cgroup")
        );
        assert_eq!(super::cgroup2_in("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"), None);
    }
}
