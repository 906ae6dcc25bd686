//! iproute2, exec'd in the calling thread's network namespace.

use crate::{Error, Result};
use std::{
    io::Write,
    process::{Command, Stdio},
};

fn ip_bin() -> String {
    std::env::var("WEFT_IP").unwrap_or_else(|_| "ip".into())
}

fn describe(out: &std::process::Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if s.is_empty() {
        s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    s
}

/// Runs `ip ARGS...`.
pub fn run(args: &[&str]) -> Result<()> {
    output(args).map(|_| ())
}

/// Runs `ip ARGS...` and returns its stdout.
pub fn output(args: &[&str]) -> Result<String> {
    let out = Command::new(ip_bin())
        .args(args)
        .output()
        .map_err(|e| Error(format!("cannot run ip (install iproute2): {e}")))?;
    if !out.status.success() {
        return Err(Error(format!("ip {}: {}", args.join(" "), describe(&out))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs several commands in one `ip -batch -`. iproute2 stops at the first
/// failing line and names it.
pub fn batch(cmds: &[String]) -> Result<()> {
    if cmds.is_empty() {
        return Ok(());
    }
    let mut child = Command::new(ip_bin())
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error(format!("cannot run ip (install iproute2): {e}")))?;
    let input = cmds.join("\n") + "\n";
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .map_err(|e| Error(format!("ip -batch: {e}")))?;
    let out = child.wait_with_output().map_err(|e| Error(format!("ip -batch: {e}")))?;
    if !out.status.success() {
        return Err(Error(format!("ip -batch [{}]: {}", cmds.join("; "), describe(&out))));
    }
    Ok(())
}

/// Whether a device exists in the calling thread's namespace.
pub fn link_exists(name: &str) -> bool {
    crate::ifindex(name).is_some()
}

/// Deletes a device if it exists (deleting one end of a veth deletes both).
pub fn link_delete(name: &str) -> Result<()> {
    if !link_exists(name) {
        return Ok(());
    }
    match run(&["link", "delete", name]) {
        // It can vanish under us: a veth goes with its peer's namespace,
        // which the kernel tears down asynchronously.
        Err(_) if !link_exists(name) => Ok(()),
        r => r,
    }
}

/// IPv4 addresses configured in the calling thread's namespace, except
/// loopback ones: (device, address).
pub fn ipv4_addresses() -> Result<Vec<(String, std::net::Ipv4Addr)>> {
    let out = output(&["-j", "-4", "addr", "show"])?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| Error(format!("ip -j addr: {e}")))?;
    let mut addrs = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        let dev = link["ifname"].as_str().unwrap_or_default().to_string();
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let ip = a["local"].as_str().and_then(|s| s.parse::<std::net::Ipv4Addr>().ok());
            if let Some(ip) = ip.filter(|ip| !ip.is_loopback()) {
                addrs.push((dev.clone(), ip));
            }
        }
    }
    Ok(addrs)
}

/// MTU of a device in the calling thread's namespace.
pub fn link_mtu(dev: &str) -> Option<u32> {
    let out = output(&["-j", "link", "show", "dev", dev]).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v[0]["mtu"].as_u64().map(|m| m as u32)
}
