//! etcd over TLS with client certificates: certificates made by the test
//! (rcgen), etcd started with --client-cert-auth on https.

mod common;

use common::Etcd;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::Path;
use weft_store::{Store, TlsFiles};

const HTTPS: &str = "https://127.0.0.1:2379";

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf certificate signed by `ca`, written as NAME.pem and NAME-key.pem.
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    dir: &Path,
    name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
}

#[test]
fn tls_verifies_the_server_and_presents_the_client_certificate() {
    let dir = std::env::temp_dir().join(format!("weft-st-tls-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let good = ca("weft test CA");
    let other = ca("some other CA");
    std::fs::write(dir.join("ca.pem"), good.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
    leaf(&good, &dir, "server", &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    leaf(&good, &dir, "client", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let f = |n: &str| dir.join(n).display().to_string();

    let flags = ["--cert-file", &f("server.pem"), "--key-file", &f("server-key.pem")];
    let mut extra: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    extra.extend(["--client-cert-auth".into(), "--trusted-ca-file".into(), f("ca.pem")]);
    let mut etcd = Etcd::prepare("tls", extra);
    etcd.launch(&[HTTPS]);

    let right = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: Some(dir.join("client.pem")),
        key: Some(dir.join("client-key.pem")),
    };
    etcd.wait_ready(HTTPS, Some(&right));
    let s = etcd.etcd_store(HTTPS, Some(&right));
    s.put("nodes/a", b"1").unwrap();
    assert_eq!(s.get("nodes/a").unwrap().unwrap(), b"1");
    assert_eq!(s.describe(), format!("etcd:{HTTPS}"));

    let wrong_ca = TlsFiles { ca: dir.join("other-ca.pem"), ..right.clone() };
    let e = etcd.etcd_store(HTTPS, Some(&wrong_ca)).get("nodes/a").unwrap_err().to_string();
    assert!(e.contains("certificate") && e.contains("does not verify against the given CA"), "{e}");
    println!("with another CA: {e}");

    let no_client_cert = TlsFiles { ca: dir.join("ca.pem"), cert: None, key: None };
    let e = etcd.etcd_store(HTTPS, Some(&no_client_cert)).get("nodes/a").unwrap_err().to_string();
    assert!(e.contains("unavailable") && e.contains("this client has no certificate"), "{e}");

    // Setup errors name the problem before any connection.
    let missing = TlsFiles { ca: dir.join("nope.pem"), ..right.clone() };
    let e = etcd.try_store(HTTPS, Some(&missing)).err().unwrap().to_string();
    assert!(e.contains("cannot read the etcd CA certificate") && e.contains("nope.pem"), "{e}");
    let half = TlsFiles { key: None, ..right.clone() };
    let e = etcd.try_store(HTTPS, Some(&half)).err().unwrap().to_string();
    assert!(e.contains("both the client certificate and its key"), "{e}");
    let e = etcd.try_store("http://127.0.0.1:2379", Some(&right)).err().unwrap().to_string();
    assert!(e.contains("plain http"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
