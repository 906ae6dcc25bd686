//! The lab's etcd PKI: a CA made for one lab, a server certificate for the
//! lab's etcd and one client certificate the agents share. Keys are written
//! 0600; the CA's key is not written at all (nothing signs after `up`).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::{
    io::Write,
    net::IpAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// Where the files of a lab's PKI are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// The paths under `dir` (whether or not they exist yet).
    pub fn at(dir: &Path) -> Pki {
        Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("etcd.pem"),
            server_key: dir.join("etcd-key.pem"),
            client_cert: dir.join("agent.pem"),
            client_key: dir.join("agent-key.pem"),
        }
    }

    /// etcd's TLS flags: its certificate, and client certificates of this
    /// CA required (the client URLs must be https).
    pub fn etcd_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--cert-file".into(),
            self.server_cert.clone().into(),
            "--key-file".into(),
            self.server_key.clone().into(),
            "--client-cert-auth".into(),
            "--trusted-ca-file".into(),
            self.ca.clone().into(),
        ]
    }

    /// The agents' view: CA, client certificate and key.
    pub fn client_files(&self) -> weft_store::TlsFiles {
        weft_store::TlsFiles {
            ca: self.ca.clone(),
            cert: Some(self.client_cert.clone()),
            key: Some(self.client_key.clone()),
        }
    }
}

fn e(what: &str) -> impl FnOnce(rcgen::Error) -> String + '_ {
    move |err| format!("making the {what}: {err}")
}

/// Makes a CA named after the lab, a server certificate for `server_ips`
/// (the addresses etcd listens on) and a client certificate, under `dir`.
pub fn create(dir: &Path, lab: &str, server_ips: &[IpAddr]) -> Result<Pki, String> {
    std::fs::create_dir_all(dir).map_err(|err| format!("creating {}: {err}", dir.display()))?;
    let pki = Pki::at(dir);

    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, format!("weft lab {lab} CA"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(e("CA key"))?).map_err(e("CA"))?;
    write(&pki.ca, ca.pem().as_bytes(), 0o644)?;

    // etcd's certificate also authenticates etcd to itself: its gRPC
    // gateway dials the server with it when clients are checked.
    let mut server = leaf(&format!("weft lab {lab} etcd"));
    server.subject_alt_names = server_ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    server.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().map_err(e("etcd key"))?;
    let cert = server.signed_by(&key, &ca).map_err(e("etcd certificate"))?;
    write(&pki.server_cert, cert.pem().as_bytes(), 0o644)?;
    write(&pki.server_key, key.serialize_pem().as_bytes(), 0o600)?;

    let mut client = leaf(&format!("weft lab {lab} agent"));
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().map_err(e("agent key"))?;
    let cert = client.signed_by(&key, &ca).map_err(e("agent certificate"))?;
    write(&pki.client_cert, cert.pem().as_bytes(), 0o644)?;
    write(&pki.client_key, key.serialize_pem().as_bytes(), 0o600)?;
    Ok(pki)
}

fn leaf(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p
}

/// Writes a file created with `mode` (a key is never readable by others,
/// not even for a moment).
fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|err| format!("writing {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_pem_and_keys_are_private() {
        let dir = std::env::temp_dir().join(format!("weft-pki-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = create(&dir, "t", &["198.18.0.2".parse().unwrap()]).unwrap();
        for (f, mode) in [
            (&pki.ca, 0o644),
            (&pki.server_cert, 0o644),
            (&pki.client_cert, 0o644),
            (&pki.server_key, 0o600),
            (&pki.client_key, 0o600),
        ] {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{}: {text}", f.display());
            let m = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, mode & !umask(), "{}", f.display());
        }
        assert!(!dir.join("ca-key.pem").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn umask() -> u32 {
        // SAFETY: umask(2) cannot fail; set back right away.
        unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        }
    }

    /// openssl (the reference) accepts the chain and the server's address.
    #[test]
    fn openssl_verifies_both_certificates_against_the_ca() {
        let dir = std::env::temp_dir().join(format!("weft-pki-verify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = create(&dir, "t", &["198.18.0.2".parse().unwrap()]).unwrap();
        let verify = |cert: &Path, extra: &[&str]| {
            std::process::Command::new("openssl")
                .arg("verify")
                .args(extra)
                .arg("-CAfile")
                .arg(&pki.ca)
                .arg(cert)
                .output()
                .unwrap()
        };
        let ok = |o: std::process::Output| {
            assert!(
                o.status.success(),
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        ok(verify(&pki.server_cert, &["-purpose", "sslserver", "-verify_ip", "198.18.0.2"]));
        ok(verify(&pki.client_cert, &["-purpose", "sslclient"]));
        let wrong_ip = verify(&pki.server_cert, &["-verify_ip", "198.18.0.3"]);
        assert!(!wrong_ip.status.success(), "the server certificate is for the etcd address only");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
