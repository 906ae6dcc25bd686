//! The real binary, exec'd as a runtime would, with bad input: every failure
//! is the spec's error object on stdout with the right code.

use serde_json::{Value, json};
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::{UnixListener, UnixStream},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

/// Runs the binary: (success, stdout as JSON, bytes written to stdout and stderr).
fn run_full(env: &[(&str, &str)], stdin: &[u8]) -> (bool, Value, usize) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft-cni"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    // The plugin may stop reading early (too much input): a broken pipe is fine.
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), v, out.stdout.len() + out.stderr.len())
}

fn run(env: &[(&str, &str)], stdin: &str) -> (bool, Value) {
    let (ok, v, _) = run_full(env, stdin.as_bytes());
    (ok, v)
}

/// An agent socket that records every request and answers it.
struct FakeAgent {
    path: PathBuf,
    seen: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAgent {
    fn start(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("weft-cni-test-{}-{tag}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut line = String::new();
                BufReader::new(&conn).read_line(&mut line).unwrap();
                let req: Value = serde_json::from_str(&line).unwrap();
                let answer = match req["op"].as_str() {
                    Some("add") => json!({"ok": {
                        "endpoint_id": 1, "ip": "10.244.1.5", "gateway": "10.244.1.1",
                        "host_ifname": "lxc1", "host_mac": "0e:00:00:00:00:01", "ifname": "eth0",
                        "pod_mac": "0a:00:00:00:00:01", "netns": "/run/netns/x", "mtu": 1500}}),
                    Some("gc") => json!({"ok": {"released": []}}),
                    _ => json!({"ok": null}),
                };
                s.lock().unwrap().push(req);
                let _ = writeln!(conn, "{answer}");
            }
        });
        Self { path, seen, stop, thread: Some(thread) }
    }

    fn socket(&self) -> String {
        self.path.display().to_string()
    }

    fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn conf_with(version: &str, socket: &str, extra: &str) -> String {
    format!(r#"{{"cniVersion":"{version}","name":"weft","type":"weft-cni","agentSocket":"{socket}"{extra}}}"#)
}

const GC_ENV: [(&str, &str); 2] = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")];

#[test]
fn gc_without_valid_attachments_releases_nothing() {
    let agent = FakeAgent::start("gc-missing");
    let (ok, v) = run(&GC_ENV, &conf_with("1.1.0", &agent.socket(), ""));
    assert!(!ok);
    assert_eq!(v["code"], 7, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("cni.dev/valid-attachments"), "{v}");
    assert!(agent.requests().is_empty(), "the agent was asked: {:?}", agent.requests());
    // An empty list is an answer: GC of the named network, nothing kept.
    let (ok, v) = run(&GC_ENV, &conf_with("1.1.0", &agent.socket(), r#","cni.dev/valid-attachments":[]"#));
    assert!(ok, "{v}");
    let kept = r#","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]"#;
    let (ok, _) = run(&GC_ENV, &conf_with("1.1.0", &agent.socket(), kept));
    assert!(ok);
    assert_eq!(
        agent.requests(),
        vec![
            json!({"op": "gc", "network": "weft", "valid": []}),
            json!({"op": "gc", "network": "weft", "valid": [{"container_id": "c1", "ifname": "eth0"}]}),
        ]
    );
}

#[test]
fn gc_is_refused_for_cni_1_0_0() {
    let agent = FakeAgent::start("gc-100");
    let (ok, v) = run(&GC_ENV, &conf_with("1.0.0", &agent.socket(), r#","cni.dev/valid-attachments":[]"#));
    assert!(!ok);
    assert_eq!((v["code"].clone(), v["cniVersion"].clone()), (json!(7), json!("1.0.0")), "{v}");
    assert!(v["details"].as_str().unwrap().contains("GC exists from CNI 1.1.0"), "{v}");
    assert!(agent.requests().is_empty(), "the agent was asked: {:?}", agent.requests());
}

#[test]
fn inputs_are_validated_before_the_agent_is_asked() {
    let agent = FakeAgent::start("validate");
    let conf = conf_with("1.1.0", &agent.socket(), "");
    let mut env = ADD_ENV;
    // As long as one variable may be (execve limits a string to 128 KiB).
    let long = "c".repeat(100_000);
    env[1] = ("CNI_CONTAINERID", &long);
    let (ok, v, written) = run_full(&env, conf.as_bytes());
    assert!(!ok);
    assert_eq!(v["code"], 4, "{v}");
    assert_eq!(v["msg"], "invalid environment variables: CNI_CONTAINERID");
    assert!(v["details"].as_str().unwrap().contains("100000 bytes long; at most 256"), "{v}");
    assert!(written < 2000, "{written} bytes of output for one bad id");
    for (i, k, bad) in [
        (1, "CNI_CONTAINERID", "c/1"),
        (3, "CNI_IFNAME", "e/1"),
        (3, "CNI_IFNAME", "e:1"),
        (2, "CNI_NETNS", "netns"),
    ] {
        let mut env = ADD_ENV;
        env[i] = (k, bad);
        let (ok, v) = run(&env, &conf);
        assert!(!ok);
        assert_eq!(v["code"], 4, "{k}={bad}: {v}");
        assert!(v["msg"].as_str().unwrap().ends_with(k), "{v}");
    }
    let mut env = ADD_ENV.to_vec();
    env.push(("CNI_ARGS", "K8S_POD_NAMESPACE=Prod;K8S_POD_NAME=web"));
    let (_, v) = run(&env, &conf);
    assert_eq!(v["code"], 4, "{v}");
    let (_, v) = run(&ADD_ENV, &conf.replace(r#""name":"weft""#, r#""name":"we ft""#));
    assert_eq!(v["code"], 7, "{v}");
    assert!(agent.requests().is_empty(), "the agent was asked: {:?}", agent.requests());
    // A good ADD does reach it.
    let (ok, v) = run(&ADD_ENV, &conf);
    assert!(ok, "{v}");
    assert_eq!(agent.requests().len(), 1);
}

#[test]
fn oversized_stdin_is_refused() {
    let agent = FakeAgent::start("big");
    let mut conf = conf_with("1.1.0", &agent.socket(), "").into_bytes();
    conf.extend(std::iter::repeat_n(b' ', 2 << 20));
    let (ok, v, _) = run_full(&ADD_ENV, &conf);
    assert!(!ok);
    assert_eq!(v["code"], 7, "{v}");
    assert!(v["details"].as_str().unwrap().contains("larger than 1048576 bytes"), "{v}");
    assert!(agent.requests().is_empty());
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
