//! The CNI_* environment of one invocation.

use crate::error::{CniError, code};
use weft_api::validate;

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
    let env = Env {
        command,
        container_id: var("CNI_CONTAINERID").unwrap_or_default(),
        netns: var("CNI_NETNS").unwrap_or_default(),
        ifname: var("CNI_IFNAME").unwrap_or_default(),
        // Only ADD uses the pod's namespace and name.
        args: if command == Command::Add {
            parse_args(&var("CNI_ARGS").unwrap_or_default())?
        } else {
            PodArgs::default()
        },
    };
    env.validate()?;
    Ok(env)
}

impl Env {
    /// Checks the values of the variables the command uses (lengths,
    /// characters) before any work: one error (code 4) naming every
    /// invalid variable.
    fn validate(&self) -> Result<(), CniError> {
        if !matches!(self.command, Command::Add | Command::Check | Command::Del) {
            return Ok(());
        }
        let mut bad: Vec<(&str, validate::Invalid)> = Vec::new();
        if let Err(e) = validate::container_id(&self.container_id) {
            bad.push(("CNI_CONTAINERID", e));
        }
        // DEL may come without a namespace (it is gone).
        if (self.command != Command::Del || !self.netns.is_empty())
            && let Err(e) = validate::netns_path(&self.netns)
        {
            bad.push(("CNI_NETNS", e));
        }
        if let Err(e) = validate::ifname(&self.ifname) {
            bad.push(("CNI_IFNAME", e));
        }
        if bad.is_empty() {
            return Ok(());
        }
        Err(CniError::new(
            code::INVALID_ENV,
            format!(
                "invalid environment variables: {}",
                bad.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            ),
            bad.iter().map(|(k, e)| format!("{k}: {e}")).collect::<Vec<_>>().join("; "),
        ))
    }
}

/// CNI_ARGS is "K=V;K=V"; weft reads the pod's namespace and name, which
/// must be Kubernetes names (lowercase DNS-1123, at most 253 bytes).
///
/// A runtime other than Kubernetes may pass its container's name as
/// K8S_POD_NAME without K8S_POD_NAMESPACE (podman does, e.g.
/// "eager_turing"): such a name that is not a Kubernetes name is not a pod's
/// and is dropped. With K8S_POD_NAMESPACE present, a bad name is an error.
pub fn parse_args(s: &str) -> Result<PodArgs, CniError> {
    let bad =
        |detail: String| CniError::new(code::INVALID_ENV, "invalid environment variables: CNI_ARGS", detail);
    let mut a = PodArgs::default();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("{} is not KEY=VALUE", validate::excerpt(pair))))?;
        match k {
            "K8S_POD_NAMESPACE" => a.namespace = Some(v.to_string()),
            "K8S_POD_NAME" => a.name = Some(v.to_string()),
            _ => {}
        }
    }
    if let Some(ns) = &a.namespace {
        validate::pod_namespace(ns).map_err(|e| bad(format!("K8S_POD_NAMESPACE: {e}")))?;
    }
    if let Some(name) = &a.name
        && let Err(e) = validate::pod_name(name)
    {
        if a.namespace.is_some() {
            return Err(bad(format!("K8S_POD_NAME: {e}")));
        }
        a.name = None;
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

    #[test]
    fn cni_args_are_kubernetes_names() {
        let e = parse_args("K8S_POD_NAMESPACE=Prod;K8S_POD_NAME=web").unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.details.contains("K8S_POD_NAMESPACE: pod namespace \"Prod\" is invalid"), "{e:?}");
        let e = parse_args("K8S_POD_NAMESPACE=prod;K8S_POD_NAME=Web_1").unwrap_err();
        assert!(e.details.starts_with("K8S_POD_NAME: pod name \"Web_1\""), "{e:?}");
        let long = format!("K8S_POD_NAMESPACE=prod;K8S_POD_NAME={}", "a".repeat(300));
        assert!(parse_args(&long).unwrap_err().details.contains("300 bytes long; at most 253"));
        // podman's container name, without a namespace: not a pod name, dropped.
        assert_eq!(parse_args("IgnoreUnknown=1;K8S_POD_NAME=eager_turing").unwrap(), PodArgs::default());
        let huge = format!("{};K8S_POD_NAME=x", "y".repeat(1 << 20));
        assert!(parse_args(&huge).unwrap_err().details.len() < 200);
    }

    fn add_env(id: &str, netns: &str, ifname: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", "ADD".into()),
            ("CNI_CONTAINERID", id.into()),
            ("CNI_NETNS", netns.into()),
            ("CNI_IFNAME", ifname.into()),
            ("CNI_PATH", "/opt/cni/bin".into()),
        ]
    }

    fn env_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn values_are_validated_and_every_bad_variable_named() {
        assert!(parse(env_of(add_env("c1", "/run/netns/p", "eth0"))).is_ok());
        let e = parse(env_of(add_env(&"c".repeat(10 << 20), "/run/netns/p", "eth0"))).unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(e.msg, "invalid environment variables: CNI_CONTAINERID");
        assert!(e.details.contains("10485760 bytes long; at most 256"), "{}", e.details);
        assert!(e.details.len() < 300, "the value is not copied: {} bytes", e.details.len());
        let e = parse(env_of(add_env("-c", "run/netns/p", "e/1"))).unwrap_err();
        assert_eq!(e.msg, "invalid environment variables: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME");
        assert!(
            e.details
                .contains("CNI_NETNS: netns path \"run/netns/p\" is invalid: it must be an absolute path")
        );
        let e = parse(env_of(add_env("c1", "/run/netns/p", "0123456789abcdef"))).unwrap_err();
        assert_eq!(e.msg, "invalid environment variables: CNI_IFNAME");
        // DEL without a namespace is fine, with a bad one not.
        let del = |netns: &str| {
            env_of(vec![
                ("CNI_COMMAND", "DEL".into()),
                ("CNI_CONTAINERID", "c1".into()),
                ("CNI_IFNAME", "eth0".into()),
                ("CNI_NETNS", netns.into()),
            ])
        };
        assert!(parse(del("")).is_ok());
        assert_eq!(parse(del("x")).unwrap_err().msg, "invalid environment variables: CNI_NETNS");
        // CNI_ARGS only matters to ADD.
        let mut v = add_env("c1", "/run/netns/p", "eth0");
        v[0].1 = "CHECK".into();
        v.push(("CNI_ARGS", "K8S_POD_NAMESPACE=BAD".into()));
        assert!(parse(env_of(v)).is_ok());
    }
}
