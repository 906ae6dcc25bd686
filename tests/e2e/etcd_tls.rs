//! A lab whose etcd speaks TLS and checks client certificates
//! (`weft lab up --etcd-tls`): pods talk across nodes, an agent given the
//! wrong CA refuses to start and says why, and a client without a
//! certificate is refused by etcd.
//!
//! Ignored until the etcd-client store backend (TLS) is merged: the JSON
//! gateway backend on this branch refuses TLS with a clear error.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use weft_e2e::{TestLab, checks};
use weft_lab::pki;

fn tls_lab(tag: &str) -> TestLab {
    TestLab::up_with(tag, 2, 1, |o| o.etcd_tls = true)
}

#[test]
fn lab_on_tls_etcd_pings_across_nodes_and_warns_about_nothing() {
    let lab = tls_lab("tls");
    let url = lab.lab.etcd_url.clone().unwrap();
    assert!(url.starts_with("https://"), "{url}");
    checks::ping(&lab, "pod1-1", &lab.pod_ip("pod2-1"), 3);
    checks::ping(&lab, "pod2-1", &lab.pod_ip("pod1-1"), 3);
    let log = std::fs::read_to_string(lab.lab.node("node1").unwrap().state_dir.join("agent.log")).unwrap();
    assert!(!log.contains("without TLS"), "{log}");
    let key = lab.lab.pki().unwrap().client_key;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o077, 0, "{}", key.display());
}

#[test]
fn agent_with_a_wrong_ca_refuses_to_start_and_names_the_certificate() {
    let mut lab = tls_lab("tlsca");
    let other = pki::create(
        &std::env::temp_dir().join(format!("weft-otherca-{}", std::process::id())),
        "other",
        &[weft_lab::layout::ETCD_IP.parse().unwrap()],
    )
    .unwrap();
    let node = lab.lab.node("node2").unwrap().clone();
    weft_lab::lifecycle::kill_and_wait(node.pid);
    let real = lab.lab.pki().unwrap();
    let mut cmd = Command::new(weft_e2e::weft_bin());
    cmd.args(["agent", "--node", "node2", "--store", "etcd", "--etcd", lab.lab.etcd_url.as_deref().unwrap()])
        .arg("--socket")
        .arg(&node.socket)
        .arg("--state-dir")
        .arg(&node.state_dir)
        .arg("--bpffs")
        .arg(&node.bpffs)
        .arg("--etcd-ca")
        .arg(&other.ca)
        .arg("--etcd-cert")
        .arg(&real.client_cert)
        .arg("--etcd-key")
        .arg(&real.client_key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = weft_e2e::spawn_in_ns(&format!("/run/netns/{}", node.netns), move || cmd.spawn().unwrap())
        .join()
        .unwrap();
    let out = wait_exit(child, Duration::from_secs(45));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an agent that cannot verify etcd must not run: {err}");
    assert!(err.to_lowercase().contains("certificate"), "the error names the certificate problem: {err}");
    let _ = std::fs::remove_dir_all(other.ca.parent().unwrap());

    // With the right CA the node comes back.
    lab.restart_agent_env("node2", &[]);
    checks::ping(&lab, "pod1-1", &lab.pod_ip("pod2-1"), 2);
}

#[test]
fn etcd_refuses_a_client_without_a_certificate() {
    let lab = tls_lab("tlscl");
    let pki = lab.lab.pki().unwrap();
    let url = lab.lab.etcd_url.clone().unwrap();
    let range = format!("{url}/v3/kv/range");
    let curl = |extra: &[&Path]| {
        let mut args: Vec<String> = vec!["curl".into(), "-sS".into(), "--max-time".into(), "3".into()];
        args.extend(["--cacert".into(), pki.ca.display().to_string()]);
        for (flag, f) in ["--cert", "--key"].iter().zip(extra) {
            args.extend([flag.to_string(), f.display().to_string()]);
        }
        args.extend(["-X".into(), "POST".into(), "-d".into(), r#"{"key":"Zm9v"}"#.into(), range.clone()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.exec("net", &args)
    };
    assert!(curl(&[&pki.client_cert, &pki.client_key]).status.success(), "the agents' certificate is served");
    let out = curl(&[]);
    assert!(!out.status.success(), "no certificate: {}", String::from_utf8_lossy(&out.stdout));

    // weft's own client without a certificate: refused, and it says so.
    let tls = weft_store::TlsFiles { ca: pki.ca.clone(), cert: None, key: None };
    let e = weft_e2e::spawn_in_ns(&lab.netns_path("net"), move || {
        weft_store::EtcdStore::new(&[url], "/weft/", Some(&tls))
            .and_then(|s| s.check())
            .err()
            .map(|e| e.to_string())
    })
    .join()
    .unwrap();
    let e = e.expect("etcd must refuse a client without a certificate");
    assert!(e.to_lowercase().contains("certificate") || e.contains("handshake"), "{e}");
}

fn wait_exit(mut child: std::process::Child, timeout: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}
