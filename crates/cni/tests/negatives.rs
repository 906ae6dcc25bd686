//! The real binary, exec'd as a runtime would, with bad input: every failure
//! is the spec's error object on stdout with the right code.

use serde_json::Value;
use std::{
    io::Write,
    process::{Command, Stdio},
};

fn run(env: &[(&str, &str)], stdin: &str) -> (bool, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft-cni"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), v)
}

const ADD_ENV: [(&str, &str); 5] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c1"),
    ("CNI_NETNS", "/run/netns/weft-none"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/opt/cni/bin"),
];

fn conf(version: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"weft","type":"weft-cni","agentSocket":"/run/weft-nonexistent/agent.sock"}}"#
    )
}

#[test]
fn malformed_json_is_code_6() {
    let (ok, v) = run(&ADD_ENV, "{not json");
    assert!(!ok);
    assert_eq!(v["code"], 6);
}

#[test]
fn missing_env_vars_are_code_4_and_named() {
    let (ok, v) = run(&[("CNI_COMMAND", "ADD"), ("CNI_PATH", "/x")], &conf("1.0.0"));
    assert!(!ok);
    assert_eq!(v["code"], 4);
    assert_eq!(v["msg"], "missing environment variables: CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME");
    assert_eq!(v["cniVersion"], "1.0.0");
    let (_, v) = run(&[("CNI_COMMAND", "MAKE")], &conf("1.0.0"));
    assert_eq!(v["code"], 4);
}

#[test]
fn unknown_cni_version_is_code_1() {
    let (ok, v) = run(&ADD_ENV, &conf("0.9.9"));
    assert!(!ok);
    assert_eq!(v["code"], 1);
}

#[test]
fn agent_down_is_try_again_and_status_not_available() {
    let (ok, v) = run(&ADD_ENV, &conf("1.1.0"));
    assert!(!ok);
    assert_eq!(v["code"], 11);
    assert!(v["details"].as_str().unwrap().contains("/run/weft-nonexistent/agent.sock"));
    let (ok, v) = run(&[("CNI_COMMAND", "STATUS")], &conf("1.1.0"));
    assert!(!ok);
    assert_eq!(v["code"], 50);
    let (ok, v) =
        run(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")], &conf("1.0.0"));
    assert!(!ok, "DEL cannot succeed without the agent: the runtime retries");
    assert_eq!(v["code"], 11);
}

#[test]
fn version_lists_both_versions() {
    let (ok, v) = run(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert!(ok);
    assert_eq!(v["supportedVersions"], serde_json::json!(["1.0.0", "1.1.0"]));
}
