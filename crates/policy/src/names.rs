//! The name formats the API servers enforce on the names inside policy
//! objects. An object weft accepts under a name the API server would refuse
//! could never have been meant; and a named port that no container port
//! can carry would silently match nothing.

use crate::k8s::{dns_subdomain, quoted};

/// The longest DNS-1123 label (a namespace name, a tier name).
const MAX_LABEL: usize = 63;
/// The longest IANA service name (a container port name).
const MAX_SERVICE_NAME: usize = 15;

/// An object name: a DNS-1123 subdomain (dot-separated lowercase labels,
/// at most 253 bytes).
pub(crate) fn subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    dns_subdomain(s).map_err(|rule| format!("{} is not a valid DNS-1123 subdomain: {rule}", quoted(s)))
}

/// A namespace or tier name: a DNS-1123 label (1 to 63 lowercase letters,
/// digits and '-', starting and ending alphanumeric; no dots).
pub(crate) fn label(s: &str) -> Result<(), String> {
    match label_problem(s) {
        Some(problem) => Err(format!("{} is not a valid DNS-1123 label: it {problem}", quoted(s))),
        None => Ok(()),
    }
}

fn label_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("is empty".into());
    }
    if s.len() > MAX_LABEL {
        return Some(format!("is {} bytes long; at most {MAX_LABEL} are allowed", s.len()));
    }
    if let Some(c) = s.chars().find(|&c| !is_lower_alnum(c) && c != '-') {
        return Some(format!("contains {c:?}; only lowercase letters, digits and '-' are allowed"));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must start and end with a lowercase letter or a digit".into());
    }
    None
}

/// A named port: what Kubernetes allows as a container port name
/// (IANA_SVC_NAME), since a named port is resolved against those.
pub(crate) fn service_name(s: &str) -> Result<(), String> {
    match service_name_problem(s) {
        Some(problem) => Err(format!("{} is not a valid port name: it {problem}", quoted(s))),
        None => Ok(()),
    }
}

fn service_name_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("is empty".into());
    }
    if s.len() > MAX_SERVICE_NAME {
        return Some(format!("is {} bytes long; at most {MAX_SERVICE_NAME} are allowed", s.len()));
    }
    if let Some(c) = s.chars().find(|&c| !is_lower_alnum(c) && c != '-') {
        return Some(format!("contains {c:?}; only lowercase letters, digits and '-' are allowed"));
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        return Some("has no letter; a name must have one (digits alone are a port number)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must not start or end with '-'".into());
    }
    if s.contains("--") {
        return Some("must not contain \"--\"".into());
    }
    None
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        for ok in ["a", "allow-dns", "web.frontend", "0", "a-1.b-2", &"a".repeat(253)] {
            assert_eq!(subdomain(ok), Ok(()), "{ok}");
        }
        assert_eq!(subdomain(""), Err("must not be empty".into()));
        let e = subdomain("Allow_All").unwrap_err();
        assert_eq!(
            e,
            "\"Allow_All\" is not a valid DNS-1123 subdomain: contains 'A'; only lowercase letters, digits, '-' and '.' are allowed"
        );
        assert!(subdomain("a..b").unwrap_err().ends_with(": has an empty part between dots"));
        assert!(subdomain("a.-b").unwrap_err().contains(": part \"-b\" must start and end"));
        assert!(subdomain(&"a".repeat(254)).unwrap_err().contains("254 bytes long; at most 253"));
    }

    #[test]
    fn labels() {
        for ok in ["default", "kube-system", "a", "0a", &"x".repeat(63)] {
            assert_eq!(label(ok), Ok(()), "{ok}");
        }
        assert_eq!(label(""), Err("\"\" is not a valid DNS-1123 label: it is empty".into()));
        assert!(label("a.b").unwrap_err().contains("contains '.'"));
        assert!(label("Prod").unwrap_err().contains("contains 'P'"));
        assert!(label("-a").unwrap_err().contains("must start and end"));
        assert!(label("a-").unwrap_err().contains("must start and end"));
        assert!(label(&"x".repeat(64)).unwrap_err().contains("64 bytes long; at most 63"));
    }

    #[test]
    fn service_names() {
        for ok in ["http", "http-alt", "h2c", "dns-tcp", "a", "9p", "x1-2-3", "abcdefghijklmno"] {
            assert_eq!(service_name(ok), Ok(()), "{ok}");
        }
        let problem = |s: &str| service_name(s).unwrap_err();
        assert_eq!(
            problem("HTTP"),
            "\"HTTP\" is not a valid port name: it contains 'H'; only lowercase letters, digits and '-' are allowed"
        );
        assert!(problem("").ends_with("it is empty"));
        assert!(problem("abcdefghijklmnop").contains("16 bytes long; at most 15"));
        assert!(problem("8080").contains("has no letter"));
        assert!(problem("80-90").contains("has no letter"));
        assert!(problem("-http").contains("must not start or end with '-'"));
        assert!(problem("http-").contains("must not start or end with '-'"));
        assert!(problem("http--alt").contains("must not contain \"--\""));
        assert!(problem("http_alt").contains("contains '_'"));
        assert!(problem("web.http").contains("contains '.'"));
    }
}
