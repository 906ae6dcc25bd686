#!/usr/bin/env bash
# Installs what weft needs on a fresh Debian 12 machine (as root) and mounts
# bpffs. Safe to run again: it only installs what is missing.
set -euo pipefail

PKGS=(clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config
      protobuf-compiler iproute2 iputils-ping tcpdump iperf3 podman runc
      containernetworking-plugins busybox-static nftables etcd-server sockperf iptables fonts-dejavu-core)

if [ "$(id -u)" != 0 ]; then
  echo "weft: run as root (the datapath loads BPF programs and creates namespaces)" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "weft: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  echo "weft: cargo is in ~/.cargo/bin; add it to PATH" >&2
fi
command -v cargo >/dev/null 2>&1 || { echo "weft: cargo (Rust 1.95) is required" >&2; exit 1; }

if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ]; then
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf
fi
