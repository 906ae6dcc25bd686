//! The lab's PKI with a real etcd started with the lab's TLS flags, in a
//! throwaway namespace: a client with the agents' certificate is served,
//! one without a certificate or with another lab's certificate is refused,
//! and a client trusting another CA does not trust this etcd. Needs root
//! and /usr/bin/etcd; curl is the reference client.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};
use weft_lab::{layout::ETCD_IP, pki};

struct Etcd {
    ns: String,
    child: Child,
    dir: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = weft_net::netns::delete(&self.ns);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Etcd {
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.ns))
    }

    /// curl against etcd's v3 range endpoint with TLS arguments.
    fn curl(&self, tls: &[(&str, &Path)]) -> Output {
        let mut args: Vec<OsString> = Vec::new();
        for (flag, file) in tls {
            args.push(flag.into());
            args.push(file.into());
        }
        weft_net::netns::run_in(&self.path(), move || {
            Ok(Command::new("curl")
                .args(["-sS", "--max-time", "3", "-X", "POST", "-d", r#"{"key":"Zm9v"}"#])
                .args(&args)
                .arg(format!("https://{ETCD_IP}:2379/v3/kv/range"))
                .output()
                .unwrap())
        })
        .unwrap()
    }
}

fn start(pki: &pki::Pki, dir: &Path) -> Etcd {
    let ns = format!("weft-t-{}-etcdtls", std::process::id());
    let _ = weft_net::netns::delete(&ns);
    weft_net::netns::add(&ns).unwrap();
    let path = PathBuf::from(format!("/run/netns/{ns}"));
    weft_net::netns::run_in(&path, || {
        weft_net::ip::batch(&["link set lo up".into(), format!("addr add {ETCD_IP}/32 dev lo")])
    })
    .unwrap();
    let url = format!("https://{ETCD_IP}:2379");
    let (data, tls) = (dir.join("data"), pki.etcd_args());
    let child = weft_net::netns::run_in(&path, move || {
        Command::new("etcd")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &format!("http://{ETCD_IP}:2380")])
            .args(tls)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| weft_net::Error(format!("etcd (apt-get install etcd-server): {e}")))
    })
    .unwrap();
    Etcd { ns, child, dir: dir.to_path_buf() }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn lab_etcd_serves_the_agents_certificate_and_refuses_others() {
    let dir = std::env::temp_dir().join(format!("weft-etcdtls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ip = ETCD_IP.parse().unwrap();
    let lab = pki::create(&dir.join("pki"), "t", &[ip]).unwrap();
    let other = pki::create(&dir.join("other"), "other", &[ip]).unwrap();
    let etcd = start(&lab, &dir);

    let agent = [("--cacert", lab.ca.as_path()), ("--cert", &lab.client_cert), ("--key", &lab.client_key)];
    let t = Instant::now();
    let served = loop {
        let out = etcd.curl(&agent);
        if out.status.success() || t.elapsed() > Duration::from_secs(20) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(served.status.success() && text(&served).contains("\"header\""), "{}", text(&served));

    // No client certificate: the TLS handshake is refused.
    let out = etcd.curl(&[("--cacert", &lab.ca)]);
    assert!(!out.status.success(), "etcd served a client without a certificate: {}", text(&out));
    // A certificate of another CA: refused too.
    let out =
        etcd.curl(&[("--cacert", &lab.ca), ("--cert", &other.client_cert), ("--key", &other.client_key)]);
    assert!(!out.status.success(), "etcd served another CA's client: {}", text(&out));
    // A client trusting another CA does not trust this etcd.
    let out = etcd.curl(&[("--cacert", &other.ca), ("--cert", &lab.client_cert), ("--key", &lab.client_key)]);
    assert!(!out.status.success() && text(&out).contains("certificate"), "{}", text(&out));
}
