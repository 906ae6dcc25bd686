//! Exec'ing the real CNI plugin, as a container runtime does: CNI_* in the
//! environment, the network config on stdin, the result on stdout.

use serde_json::{Value, json};
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The network name and plugin type the lab uses.
pub const NETWORK: &str = "weft";

/// The conflist a runtime would find in its CNI config directory.
pub fn conflist(socket: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": NETWORK,
        "plugins": [{ "type": "weft-cni", "agentSocket": socket }]
    })
}

/// What libcni hands the first plugin of a conflist: the plugin's own
/// config plus the list's name and cniVersion.
pub fn plugin_config(socket: &Path, version: &str) -> Value {
    json!({ "cniVersion": version, "name": NETWORK, "type": "weft-cni", "agentSocket": socket })
}

pub struct Invocation<'a> {
    pub plugin: &'a Path,
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
    pub config: &'a Value,
}

pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.stdout).ok()
    }
}

/// Runs the plugin once (in the caller's network namespace).
pub fn exec(inv: &Invocation) -> std::io::Result<Outcome> {
    let dir: PathBuf = inv.plugin.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut child = Command::new(inv.plugin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(inv.config.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(Outcome {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
