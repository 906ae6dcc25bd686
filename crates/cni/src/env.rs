//! The CNI_* environment of one invocation.

use crate::error::{CniError, code};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    /// Variables the spec requires for the command.
    fn required(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Gc => &["CNI_PATH"],
            Command::Version | Command::Status => &[],
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodArgs {
    pub namespace: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: PodArgs,
}

/// Reads the environment through `get` (std::env::var in the binary).
pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
    let var = |k: &str| get(k).filter(|v| !v.is_empty());
    let raw = var("CNI_COMMAND").ok_or_else(|| {
        CniError::new(
            code::INVALID_ENV,
            "missing environment variables: CNI_COMMAND",
            "set CNI_COMMAND to ADD, DEL, CHECK, VERSION, STATUS or GC",
        )
    })?;
    let command = Command::parse(&raw).ok_or_else(|| {
        CniError::new(
            code::INVALID_ENV,
            format!("invalid environment variables: CNI_COMMAND={raw}"),
            "CNI_COMMAND must be ADD, DEL, CHECK, VERSION, STATUS or GC",
        )
    })?;
    let missing: Vec<&str> = command.required().iter().copied().filter(|k| var(k).is_none()).collect();
    if !missing.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("missing environment variables: {}", missing.join(", ")),
            format!("CNI_COMMAND={raw} needs {}", command.required().join(", ")),
        ));
    }
    Ok(Env {
        command,
        container_id: var("CNI_CONTAINERID").unwrap_or_default(),
        netns: var("CNI_NETNS").unwrap_or_default(),
        ifname: var("CNI_IFNAME").unwrap_or_default(),
        args: parse_args(&var("CNI_ARGS").unwrap_or_default())?,
    })
}

/// CNI_ARGS is "K=V;K=V"; weft reads the pod's namespace and name.
pub fn parse_args(s: &str) -> Result<PodArgs, CniError> {
    let mut a = PodArgs::default();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                "invalid environment variables: CNI_ARGS",
                format!("{pair:?} is not KEY=VALUE"),
            )
        })?;
        match k {
            "K8S_POD_NAMESPACE" => a.namespace = Some(v.to_string()),
            "K8S_POD_NAME" => a.name = Some(v.to_string()),
            _ => {}
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn names_every_missing_variable() {
        let e = parse(env(&[("CNI_COMMAND", "ADD"), ("CNI_NETNS", "/x")])).unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(e.msg, "missing environment variables: CNI_CONTAINERID, CNI_IFNAME, CNI_PATH");
        let e = parse(env(&[])).unwrap_err();
        assert!(e.msg.contains("CNI_COMMAND"));
        let e = parse(env(&[("CNI_COMMAND", "FROB")])).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_COMMAND=FROB"));
    }

    #[test]
    fn del_needs_no_netns_and_version_needs_nothing() {
        let e =
            parse(env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")])).unwrap();
        assert_eq!(e.command, Command::Del);
        assert_eq!(e.netns, "");
        assert_eq!(parse(env(&[("CNI_COMMAND", "VERSION")])).unwrap().command, Command::Version);
    }

    #[test]
    fn cni_args() {
        let a = parse_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-1").unwrap();
        assert_eq!(a, PodArgs { namespace: Some("prod".into()), name: Some("web-1".into()) });
        assert_eq!(parse_args("").unwrap(), PodArgs::default());
        assert!(parse_args("K8S_POD_NAME").unwrap_err().msg.contains("CNI_ARGS"));
    }
}
