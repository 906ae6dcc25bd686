//! The name formats the API server enforces on the names inside objects.
//! An object weft accepts under a name the API server would refuse could
//! never have been meant, and a name that cannot exist (a port name no
//! container port can carry) would silently match nothing.
//!
//! Every rule returns the whole message, `"Web" is not a valid DNS-1035
//! label: it contains 'W'; ...`: the value (quoted, cut short when long),
//! the rule's name and what breaks it. The caller adds the field path.

/// How many characters of a bad value a message shows: names are input
/// too, and a huge one must not flood a log.
const SHOWN_CHARS: usize = 64;
/// A DNS-1123 (or 1035) label; also a label value and a label key's name.
const MAX_LABEL: usize = 63;
/// A DNS-1123 subdomain: most object names, a label key's prefix.
const MAX_SUBDOMAIN: usize = 253;
/// An IANA service name: a container port name.
const MAX_PORT_NAME: usize = 15;

/// A value for a message: quoted, escaped, and cut to 64 characters (with
/// its length in bytes) so that a huge value cannot flood a log.
pub fn quoted(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
        None => format!("{s:?}"),
    }
}

/// A DNS-1123 label (1 to 63 lowercase letters, digits and '-', starting
/// and ending alphanumeric; no dots): a namespace, a tier, a port name of
/// a Service or EndpointSlice.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    refuse(s, "DNS-1123 label", label_problem(s))
}

/// A DNS-1035 label: a DNS-1123 label that starts with a letter. A
/// Service's name (it becomes a DNS name and environment variables).
pub fn dns1035_label(s: &str) -> Result<(), String> {
    let problem = label_problem(s).or_else(|| {
        (!s.starts_with(|c: char| c.is_ascii_lowercase()))
            .then(|| "must start with a lowercase letter".into())
    });
    refuse(s, "DNS-1035 label", problem)
}

/// A DNS-1123 subdomain (dot-separated DNS-1123 labels, at most 253 bytes
/// in all): most object names, a node name.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    refuse(s, "DNS-1123 subdomain", subdomain_problem(s))
}

/// A port name as Kubernetes checks a container port's (IANA_SVC_NAME):
/// 1 to 15 lowercase letters, digits and single inner '-', with at least
/// one letter. A named port (a policy's, a Service's `targetPort`) is
/// resolved against container port names, so it must be one.
pub fn port_name(s: &str) -> Result<(), String> {
    refuse(s, "port name", port_name_problem(s))
}

/// A label key: `[prefix/]name`, the prefix a DNS-1123 subdomain, the
/// name 1 to 63 bytes of `[A-Za-z0-9_.-]` starting and ending alphanumeric.
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let problem = prefix
        .and_then(subdomain_problem)
        .map(|p| format!("its prefix {p}"))
        .or_else(|| label_name_problem(name).map(|p| format!("its name {p}")));
    match problem {
        Some(p) => Err(format!("{} is not a valid label key: {p}", quoted(key))),
        None => Ok(()),
    }
}

/// A label value: empty, or what the name part of a label key may be.
pub fn label_value(value: &str) -> Result<(), String> {
    let problem = if value.is_empty() { None } else { label_name_problem(value) };
    refuse(value, "label value", problem)
}

fn refuse(s: &str, rule: &str, problem: Option<String>) -> Result<(), String> {
    match problem {
        Some(p) => Err(format!("{} is not a valid {rule}: it {p}", quoted(s))),
        None => Ok(()),
    }
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn too_long(s: &str, max: usize) -> Option<String> {
    (s.len() > max).then(|| format!("is {} bytes long; at most {max} are allowed", s.len()))
}

/// What a DNS label and a port name have in common: 1 to `max` lowercase
/// letters, digits and '-'.
fn lowercase_name_problem(s: &str, max: usize) -> Option<String> {
    if s.is_empty() {
        return Some("is empty".into());
    }
    too_long(s, max).or_else(|| {
        let c = s.chars().find(|&c| !lower_alnum(c) && c != '-')?;
        Some(format!("contains {c:?}; only lowercase letters, digits and '-' are allowed"))
    })
}

fn label_problem(s: &str) -> Option<String> {
    lowercase_name_problem(s, MAX_LABEL).or_else(|| {
        (s.starts_with('-') || s.ends_with('-'))
            .then(|| "must start and end with a lowercase letter or a digit".into())
    })
}

fn subdomain_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("is empty".into());
    }
    if let Some(long) = too_long(s, MAX_SUBDOMAIN) {
        return Some(long);
    }
    if let Some(c) = s.chars().find(|&c| !lower_alnum(c) && c != '-' && c != '.') {
        return Some(format!("contains {c:?}; only lowercase letters, digits, '-' and '.' are allowed"));
    }
    s.split('.').find_map(|part| {
        if part.is_empty() {
            Some("has an empty part between dots".into())
        } else if !part.starts_with(lower_alnum) || !part.ends_with(lower_alnum) {
            Some(format!(
                "has a part {} that must start and end with a lowercase letter or a digit",
                quoted(part)
            ))
        } else {
            None
        }
    })
}

/// The name part of a label key, and a non-empty label value.
fn label_name_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("is empty".into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    too_long(s, MAX_LABEL)
        .or_else(|| {
            let c = s.chars().find(|&c| !allowed(c))?;
            Some(format!("contains {c:?}; only letters, digits, '-', '_' and '.' are allowed"))
        })
        .or_else(|| {
            let alnum = |c: char| c.is_ascii_alphanumeric();
            (!s.starts_with(alnum) || !s.ends_with(alnum))
                .then(|| "must start and end with a letter or a digit".into())
        })
}

fn port_name_problem(s: &str) -> Option<String> {
    lowercase_name_problem(s, MAX_PORT_NAME)
        .or_else(|| {
            (!s.chars().any(|c| c.is_ascii_lowercase())).then(|| {
                "has no letter; a name must have one (a port by number is written as a number, not a string)"
                    .into()
            })
        })
        .or_else(|| (s.starts_with('-') || s.ends_with('-')).then(|| "must not start or end with '-'".into()))
        .or_else(|| s.contains("--").then(|| "must not contain \"--\"".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["default", "kube-system", "a", "0a", &"x".repeat(63)] {
            assert_eq!(dns1123_label(ok), Ok(()), "{ok}");
        }
        assert_eq!(dns1123_label(""), Err("\"\" is not a valid DNS-1123 label: it is empty".into()));
        assert_eq!(
            dns1123_label("a.b"),
            Err("\"a.b\" is not a valid DNS-1123 label: it contains '.'; only lowercase letters, digits and '-' are allowed".into())
        );
        assert!(dns1123_label("Prod").unwrap_err().contains("contains 'P'"));
        assert!(
            dns1123_label("-a")
                .unwrap_err()
                .ends_with("it must start and end with a lowercase letter or a digit")
        );
        assert!(dns1123_label("a-").unwrap_err().contains("must start and end"));
        assert!(
            dns1123_label(&"x".repeat(64))
                .unwrap_err()
                .ends_with("it is 64 bytes long; at most 63 are allowed")
        );
    }

    #[test]
    fn dns1035_labels_start_with_a_letter() {
        assert_eq!(dns1035_label("web"), Ok(()));
        assert_eq!(
            dns1035_label("1web"),
            Err("\"1web\" is not a valid DNS-1035 label: it must start with a lowercase letter".into())
        );
        // The DNS-1123 rules come first.
        assert!(
            dns1035_label("Web")
                .unwrap_err()
                .ends_with("it contains 'W'; only lowercase letters, digits and '-' are allowed")
        );
    }

    #[test]
    fn subdomains() {
        for ok in ["a", "allow-dns", "web.frontend", "0", "a-1.b-2", "web-7xk2p.x", &"a".repeat(253)] {
            assert_eq!(dns1123_subdomain(ok), Ok(()), "{ok}");
        }
        assert_eq!(dns1123_subdomain(""), Err("\"\" is not a valid DNS-1123 subdomain: it is empty".into()));
        assert_eq!(
            dns1123_subdomain("Allow_All"),
            Err("\"Allow_All\" is not a valid DNS-1123 subdomain: it contains 'A'; only lowercase letters, digits, '-' and '.' are allowed".into())
        );
        assert!(dns1123_subdomain("a..b").unwrap_err().ends_with(": it has an empty part between dots"));
        assert!(dns1123_subdomain(".a").unwrap_err().ends_with(": it has an empty part between dots"));
        assert!(
            dns1123_subdomain("a.-b").unwrap_err().ends_with(
                ": it has a part \"-b\" that must start and end with a lowercase letter or a digit"
            )
        );
        assert!(
            dns1123_subdomain(&"a".repeat(254)).unwrap_err().contains("it is 254 bytes long; at most 253")
        );
    }

    #[test]
    fn port_names() {
        for ok in ["http", "http-alt", "h2c", "dns-tcp", "a", "9p", "x1-2-3", "abcdefghijklmno"] {
            assert_eq!(port_name(ok), Ok(()), "{ok}");
        }
        let problem = |s: &str| port_name(s).unwrap_err();
        assert_eq!(
            problem("HTTP"),
            "\"HTTP\" is not a valid port name: it contains 'H'; only lowercase letters, digits and '-' are allowed"
        );
        assert!(problem("").ends_with("it is empty"));
        assert!(problem("abcdefghijklmnop").contains("16 bytes long; at most 15"));
        assert_eq!(
            problem("8080"),
            "\"8080\" is not a valid port name: it has no letter; a name must have one \
             (a port by number is written as a number, not a string)"
        );
        assert!(problem("80-90").contains("has no letter"));
        assert!(problem("-http").ends_with("it must not start or end with '-'"));
        assert!(problem("http-").ends_with("it must not start or end with '-'"));
        assert!(problem("http--alt").ends_with("it must not contain \"--\""));
        assert!(problem("http_alt").contains("contains '_'"));
        assert!(problem("web.http").contains("contains '.'"));
    }

    #[test]
    fn label_keys() {
        for ok in ["app", "app.kubernetes.io/name", "K_8.s-9", "a.b-c.d/e", "example.com/team"] {
            assert_eq!(label_key(ok), Ok(()), "{ok}");
        }
        assert_eq!(label_key(&format!("{}/{}", "a".repeat(253), "b".repeat(63))), Ok(()));
        let problem = |k: &str| label_key(k).unwrap_err();
        assert_eq!(problem(""), "\"\" is not a valid label key: its name is empty");
        assert!(
            problem("a b")
                .ends_with("its name contains ' '; only letters, digits, '-', '_' and '.' are allowed")
        );
        assert!(problem("-a").ends_with("its name must start and end with a letter or a digit"));
        assert!(problem(&"k".repeat(64)).ends_with("its name is 64 bytes long; at most 63 are allowed"));
        assert!(problem("example.com/").ends_with("its name is empty"));
        assert!(problem("/name").ends_with("its prefix is empty"));
        assert!(problem("a/b/c").contains("its name contains '/'"));
        assert!(problem("Example.com/x").contains("its prefix contains 'E'"));
        assert!(problem("example_com/x").contains("its prefix contains '_'"));
        assert!(problem("example..com/x").ends_with("its prefix has an empty part between dots"));
        assert!(problem("example.-com/x").contains("its prefix has a part \"-com\" that must start and end"));
        let long_prefix = format!("{}/x", "a".repeat(254));
        assert!(problem(&long_prefix).contains("its prefix is 254 bytes long; at most 253"));
    }

    #[test]
    fn label_values() {
        for ok in ["", "web", "a.b-c_d", "Y9", &"v".repeat(63)] {
            assert_eq!(label_value(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            label_value("-bad"),
            Err("\"-bad\" is not a valid label value: it must start and end with a letter or a digit".into())
        );
        for bad in ["a.", "_a", "é", "a/b", "a:b", "a b"] {
            assert!(label_value(bad).is_err(), "{bad}");
        }
        assert!(label_value(&"v".repeat(64)).unwrap_err().contains("64 bytes long; at most 63"));
    }

    #[test]
    fn huge_values_are_shown_cut() {
        assert_eq!(quoted(&"a".repeat(100)), format!("{:?}… (100 bytes)", "a".repeat(64)));
        let e = label_value(&"x".repeat(1 << 20)).unwrap_err();
        assert!(e.len() < 200, "{} bytes", e.len());
        assert!(e.contains("(1048576 bytes)"), "{e}");
    }
}
