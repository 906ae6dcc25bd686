//! weft-cni: the CNI plugin. It reads the CNI environment and the network
//! configuration, asks the node's agent to do the work over its unix socket,
//! and prints the result or the spec's error object. It stays small and
//! synchronous: it runs once per container operation.

pub mod config;
pub mod env;
pub mod error;
pub mod result;

use env::Command;
use error::{CniError, code};
use serde_json::{Value, json};
use weft_api::{
    AddRequest, AddResult, Attachment, CheckRequest, Client, ClientError, DelRequest, GcRequest, Request,
};

/// Used when the input's own version cannot be read.
pub const DEFAULT_VERSION: &str = "1.1.0";

/// Runs one invocation: returns what to print on stdout (if anything).
pub fn run(get_env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let version = config::peek_version(stdin).unwrap_or_else(|| DEFAULT_VERSION.to_string());
    let fail = |e: CniError| e.with_version(&version);
    let env = env::parse(&get_env).map_err(fail)?;
    if env.command == Command::Version {
        let v = if config::SUPPORTED_VERSIONS.contains(&version.as_str()) {
            version.clone()
        } else {
            DEFAULT_VERSION.into()
        };
        return Ok(Some(json!({ "cniVersion": v, "supportedVersions": config::SUPPORTED_VERSIONS })));
    }
    let conf = config::parse(stdin).map_err(fail)?;
    let client = Client::new(&conf.agent_socket);
    execute(&env, &conf, &client).map_err(|e| e.with_version(&conf.cni_version))
}

fn execute(env: &env::Env, conf: &config::NetConf, client: &Client) -> Result<Option<Value>, CniError> {
    match env.command {
        Command::Add => {
            let req = Request::Add(AddRequest {
                container_id: env.container_id.clone(),
                netns: env.netns.clone(),
                ifname: env.ifname.clone(),
                network: conf.name.clone(),
                pod_namespace: env.args.namespace.clone(),
                pod_name: env.args.name.clone(),
                mtu: conf.mtu,
            });
            let r: AddResult = client.call_as(&req).map_err(agent_error)?;
            Ok(Some(result::add_result(&r, &conf.cni_version)))
        }
        Command::Del => {
            let netns = (!env.netns.is_empty()).then(|| env.netns.clone());
            let req = Request::Del(DelRequest {
                container_id: env.container_id.clone(),
                ifname: env.ifname.clone(),
                netns,
            });
            client.call(&req).map_err(agent_error).map(|_| None)
        }
        Command::Check => {
            let prev = conf.prev_result.as_ref().ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "invalid network configuration: prevResult",
                    "CHECK needs the cached result in prevResult",
                )
            })?;
            let req = Request::Check(CheckRequest {
                container_id: env.container_id.clone(),
                ifname: env.ifname.clone(),
                netns: env.netns.clone(),
                ip: result::prev_ip(prev),
            });
            client.call(&req).map_err(agent_error).map(|_| None)
        }
        Command::Status => client.call(&Request::Status).map(|_| None).map_err(|e| {
            let inner = agent_error(e);
            CniError::new(
                code::NOT_AVAILABLE,
                "weft cannot serve ADD on this node",
                format!("{}: {}", inner.msg, inner.details),
            )
        }),
        Command::Gc => {
            let valid = gc_attachments(conf)?
                .iter()
                .map(|(c, i)| Attachment { container_id: c.clone(), ifname: i.clone() })
                .collect();
            let req = Request::Gc(GcRequest { network: conf.name.clone(), valid });
            client.call(&req).map_err(agent_error).map(|_| None)
        }
        Command::Version => unreachable!("answered before the config is parsed"),
    }
}

/// The attachments GC must keep. GC is refused (code 7, nothing released)
/// when the config speaks CNI 1.0.0, which has no GC, or when it lacks
/// `cni.dev/valid-attachments`: a missing list is not an empty one, and
/// reading it as empty would release every pod of the network.
fn gc_attachments(conf: &config::NetConf) -> Result<&[(String, String)], CniError> {
    if conf.cni_version == "1.0.0" {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration: GC needs cniVersion 1.1.0",
            format!(
                "GC exists from CNI 1.1.0 but network {:?} has cniVersion 1.0.0; set \"cniVersion\": \"1.1.0\" \
                 in its configuration to use GC; nothing was released",
                conf.name
            ),
        ));
    }
    conf.valid_attachments.as_deref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration: cni.dev/valid-attachments is missing",
            format!(
                "GC needs the list of attachments of network {:?} still in use in \"cni.dev/valid-attachments\" \
                 (an empty list releases them all); without it nothing was released",
                conf.name
            ),
        )
    })
}

fn agent_error(e: ClientError) -> CniError {
    match e {
        ClientError::Unreachable { socket, cause } => CniError::new(
            code::TRY_AGAIN,
            "the weft agent is not reachable; try again later",
            format!(
                "no agent answers at {} ({cause}): start it with `weft agent` or fix agentSocket in the network config",
                socket.display()
            ),
        ),
        ClientError::Api(a) => CniError::new(a.code, a.msg, a.details),
        ClientError::Protocol(m) => CniError::new(code::INTERNAL, "unexpected answer from the weft agent", m),
        ClientError::Interrupted(m) => CniError::new(
            code::TRY_AGAIN,
            "the weft agent stopped before answering; try again",
            format!("{m}: a restarted agent finishes or undoes what was half done"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_answers_in_the_asked_version() {
        let out = run(|k| (k == "CNI_COMMAND").then(|| "VERSION".into()), br#"{"cniVersion":"1.0.0"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(out["cniVersion"], "1.0.0");
        assert_eq!(out["supportedVersions"], json!(["1.0.0", "1.1.0"]));
    }

    #[test]
    fn errors_carry_the_callers_version() {
        let e = run(
            |k| (k == "CNI_COMMAND").then(|| "ADD".into()),
            br#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#,
        )
        .unwrap_err();
        assert_eq!((e.code, e.cni_version.as_str()), (4, "1.0.0"));
    }

    fn gc_env(k: &str) -> Option<String> {
        match k {
            "CNI_COMMAND" => Some("GC".into()),
            "CNI_PATH" => Some("/opt/cni/bin".into()),
            _ => None,
        }
    }

    // The socket does not exist: an accepted GC fails with 11 (agent
    // unreachable), a refused one with 7 before the agent is asked.
    const NO_AGENT: &str = r#""agentSocket":"/run/weft-nonexistent/agent.sock""#;

    #[test]
    fn gc_without_valid_attachments_is_refused() {
        let conf = format!(r#"{{"cniVersion":"1.1.0","name":"weft","type":"weft-cni",{NO_AGENT}}}"#);
        let e = run(gc_env, conf.as_bytes()).unwrap_err();
        assert_eq!(e.code, 7, "{e:?}");
        assert!(e.msg.contains("cni.dev/valid-attachments"), "{e:?}");
        assert!(e.details.contains("nothing was released"), "{e:?}");
        let conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"weft","type":"weft-cni",{NO_AGENT},"cni.dev/valid-attachments":null}}"#
        );
        assert_eq!(run(gc_env, conf.as_bytes()).unwrap_err().code, 7);
        // An empty list is a real answer: it goes to the agent.
        let conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"weft","type":"weft-cni",{NO_AGENT},"cni.dev/valid-attachments":[]}}"#
        );
        assert_eq!(run(gc_env, conf.as_bytes()).unwrap_err().code, 11);
    }

    #[test]
    fn gc_is_refused_for_cni_1_0_0() {
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","name":"weft","type":"weft-cni",{NO_AGENT},"cni.dev/valid-attachments":[]}}"#
        );
        let e = run(gc_env, conf.as_bytes()).unwrap_err();
        assert_eq!((e.code, e.cni_version.as_str()), (7, "1.0.0"), "{e:?}");
        assert!(e.msg.contains("1.1.0"), "{e:?}");
        assert!(e.details.contains("cniVersion 1.0.0"), "{e:?}");
    }
}
