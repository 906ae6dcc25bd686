//! A real CNI client: podman 4.3 (CNI backend) starts a container on the
//! weft network inside a lab node; it gets an address from the node's pod
//! CIDR, reaches a lab pod and the node, and `--rm` releases the address.

use std::{path::PathBuf, process::Command};
use weft_e2e::{TestLab, bin_dir};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A root filesystem of busybox and its applet links.
fn busybox_rootfs(dir: &std::path::Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is needed (make deps)");
    // Relative links, so they resolve inside the container.
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    for d in ["proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    root
}

#[test]
fn podman_container_gets_a_weft_address_and_reaches_pod_and_node() {
    let lab = TestLab::up("podman", 1, 1);
    let scratch = Scratch(std::env::temp_dir().join(format!("weft-e2e-podman-{}", std::process::id())));
    let rootfs = busybox_rootfs(&scratch.0);
    // The machine cannot raise RLIMIT_NOFILE and crun/systemd cgroups do not
    // fit its hybrid cgroup layout: a containers.conf of our own says so.
    let conf = scratch.0.join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\n[network]\ncni_plugin_dirs = [\"{}\"]\n",
            bin_dir().display()
        ),
    )
    .unwrap();
    let node = lab.lab.node("node1").unwrap();
    let before = lab.status("node1").ipam_allocated;
    let script = format!(
        "ip -4 addr show eth0; ping -c 2 -W 2 {}; ping -c 2 -W 2 {}",
        lab.pod_ip("pod1-1"),
        node.underlay_ip
    );
    let out = Command::new(weft_e2e::weft_bin())
        .env("CONTAINERS_CONF", &conf)
        .args([
            "lab",
            "exec",
            lab.name(),
            "node1",
            "--",
            "podman",
            "--network-backend",
            "cni",
            "--runtime",
            "runc",
        ])
        .arg("--cni-config-dir")
        .arg(&node.cni_dir)
        .args(["run", "--rm", "--network", "weft", "--cap-add", "NET_RAW", "--rootfs"])
        .arg(&rootfs)
        .args(["/bin/sh", "-c", &script])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "podman run failed:\n{text}");
    assert!(text.contains("inet 10.244.1."), "address from the node's pod CIDR:\n{text}");
    assert_eq!(text.matches("2 packets received").count(), 2, "pod and node reachable:\n{text}");
    lab.settled("node1");
    assert_eq!(lab.status("node1").ipam_allocated, before, "--rm released the address");
    assert_eq!(lab.endpoints("node1").len(), 1);
}
